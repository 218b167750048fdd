//! The ownership challenge: a `GET` with a fresh value in a header; the endpoint proves it
//! is the hook owner's by echoing the value as `{"verification": "<value>"}`.

use hookbridge_core::delivery::excerpt;

use crate::Outbound;
use crate::classify::{describe, error_class};

/// Why a challenge failed, said so an operator can fix it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ChallengeError {
    /// No response (timeout, refused, blocked address ...).
    #[error("no response ({class}): {detail}")]
    NoResponse {
        /// The error class name.
        class: &'static str,
        /// The innermost cause.
        detail: String,
    },
    /// A non-2xx status.
    #[error("status {0}, expected 2xx")]
    Status(u16),
    /// The body is not JSON.
    #[error("response is not JSON: {0}")]
    NotJson(String),
    /// JSON, but not `{"verification": "<value>"}` with the value sent.
    #[error("wrong answer: expected {{\"verification\": \"<the challenge value>\"}}, got {0}")]
    WrongValue(String),
}

/// The most of a challenge answer read.
const MAX_CHALLENGE_ANSWER: usize = 16 * 1024;

impl Outbound {
    /// Runs the challenge against `url`, sending `value` in `header`.
    pub async fn challenge(&self, url: &str, header: &str, value: &str) -> Result<(), ChallengeError> {
        let parsed =
            url::Url::parse(url).map_err(|e| ChallengeError::NoResponse { class: "connect", detail: e.to_string() })?;
        crate::resolver::check_target(&self.settings.network, &parsed)
            .map_err(|r| ChallengeError::NoResponse { class: "ssrf_blocked", detail: r.to_string() })?;
        let resp = self
            .client
            .get(parsed)
            .header(header, value)
            .header(http::header::ACCEPT, "application/json")
            .send()
            .await
            .map_err(|e| ChallengeError::NoResponse { class: error_class(&e).as_str(), detail: describe(&e) })?;
        let status = resp.status().as_u16();
        if !(200..300).contains(&status) {
            return Err(ChallengeError::Status(status));
        }
        // The answer is a short JSON object; nothing longer is read.
        let body = crate::deliver::read_capped(resp, MAX_CHALLENGE_ANSWER)
            .await
            .map_err(|e| ChallengeError::NoResponse { class: error_class(&e).as_str(), detail: describe(&e) })?;
        let json: serde_json::Value = serde_json::from_str(&body)
            .map_err(|_| ChallengeError::NotJson(excerpt(&body).chars().take(200).collect()))?;
        let exact = json
            .as_object()
            .is_some_and(|o| o.len() == 1 && o.get("verification").and_then(|v| v.as_str()) == Some(value));
        if exact {
            Ok(())
        } else {
            Err(ChallengeError::WrongValue(excerpt(&json.to_string()).chars().take(200).collect()))
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)] // Tests fail loudly on purpose.

    use super::*;

    /// A challenge to a stored `http` URL is not sent where the deployment allows only
    /// `https`.
    #[tokio::test]
    async fn a_stored_http_url_is_not_challenged_where_http_is_not_allowed() {
        let outbound = Outbound::new(crate::OutboundSettings::default()).unwrap();
        let err = outbound.challenge("http://receiver.example/hook", "x-challenge", "v").await.unwrap_err();
        assert!(
            matches!(&err, ChallengeError::NoResponse { class: "ssrf_blocked", detail } if detail.contains("plain http")),
            "{err:?}"
        );
    }
}
