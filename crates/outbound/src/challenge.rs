//! The ownership challenge: a `GET` with a fresh value in a header; the endpoint proves it
//! is the hook owner's by echoing the value as `{"verification": "<value>"}`.

use hookbridge_core::delivery::excerpt;
use hookbridge_core::hook::{AuthConfig, HookConfig, HookSecrets};

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

/// Whether the hook's challenge carries a secret value (a static credential, a secret
/// header), so its secrets must be opened for it.
pub fn challenge_needs_secrets(cfg: &HookConfig) -> bool {
    matches!(cfg.auth, AuthConfig::Basic { .. } | AuthConfig::ApiKey { .. } | AuthConfig::Header { .. })
        || cfg.headers.iter().any(|h| h.value.is_none())
}

/// The most of a challenge answer read.
const MAX_CHALLENGE_ANSWER: usize = 16 * 1024;

impl Outbound {
    /// Runs the hook's challenge against its URL, sending `value` in its challenge header.
    /// The request carries the hook's own headers and static credential (`secrets`, opened,
    /// when it has any that are secret), as its deliveries do: UniFi's auth header secures
    /// the channel to the receiver, which may refuse every request without it. Not an OAuth
    /// token, which is fetched only once the hook is authorized.
    pub async fn challenge(
        &self,
        cfg: &HookConfig,
        secrets: Option<&HookSecrets>,
        value: &str,
    ) -> Result<(), ChallengeError> {
        let parsed = url::Url::parse(&cfg.url)
            .map_err(|e| ChallengeError::NoResponse { class: "connect", detail: e.to_string() })?;
        crate::resolver::check_target(&self.settings.network, &parsed)
            .map_err(|r| ChallengeError::NoResponse { class: "ssrf_blocked", detail: r.to_string() })?;
        let header = cfg.verification.header.as_str();
        // Counted against the pool until the answer is read, at the end of this function.
        let (client, mut in_use) = self.client_for(&parsed);
        let mut req = client.get(parsed).header(header, value);
        let mut accept = true;
        for (name, v) in crate::deliver::custom_headers(cfg, secrets) {
            if !name.eq_ignore_ascii_case(header) {
                // The hook's own `Accept` is sent instead of ours, not beside it.
                accept &= !name.eq_ignore_ascii_case("accept");
                req = req.header(name, v);
            }
        }
        if accept {
            req = req.header(http::header::ACCEPT, "application/json");
        }
        if let Some((name, v)) = secrets.and_then(|s| crate::auth::static_auth_header(&cfg.auth, s)) {
            req = req.header(name, v);
        }
        let resp = req
            .send()
            .await
            .map_err(|e| ChallengeError::NoResponse { class: error_class(&e).as_str(), detail: describe(&e) })?;
        in_use.iter_mut().for_each(|u| u.answered(resp.version()));
        let status = resp.status().as_u16();
        if !(200..300).contains(&status) {
            return Err(ChallengeError::Status(status));
        }
        // The answer is a short JSON object; nothing longer is read.
        let body = crate::deliver::read_capped(resp, MAX_CHALLENGE_ANSWER)
            .await
            .map_err(|e| ChallengeError::NoResponse { class: error_class(&e).as_str(), detail: describe(&e) })?;
        // What is kept of a wrong answer is shown to the hook's readers: without the
        // credentials an endpoint that echoes its request would show them.
        let shown = |text: &str| -> String {
            let text: String = excerpt(text).chars().take(200).collect();
            match secrets {
                Some(s) => crate::deliver::without_secrets(&text, cfg, s, None),
                None => text,
            }
        };
        let json: serde_json::Value = serde_json::from_str(&body).map_err(|_| ChallengeError::NotJson(shown(&body)))?;
        // Other keys beside it are the endpoint's own business: the value alone proves it.
        let echoed = json.as_object().is_some_and(|o| o.get("verification").and_then(|v| v.as_str()) == Some(value));
        if echoed { Ok(()) } else { Err(ChallengeError::WrongValue(shown(&json.to_string()))) }
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
        let (hook, _) = hookbridge_testkit::contract::unsealed_hook(
            "acme",
            hookbridge_core::ids::HookId::generate(),
            serde_json::json!({"name": "h", "url": "https://receiver.example/hook"}),
        );
        let cfg = HookConfig { url: "http://receiver.example/hook".into(), ..hook.config };
        let err = outbound.challenge(&cfg, None, "v").await.unwrap_err();
        assert!(
            matches!(&err, ChallengeError::NoResponse { class: "ssrf_blocked", detail } if detail.contains("plain http")),
            "{err:?}"
        );
    }

    /// A wrong answer is kept (and shown to the hook's readers) without the credentials an
    /// endpoint that echoes its request would show.
    #[tokio::test]
    async fn an_echoed_challenge_keeps_no_credential_in_its_error() {
        let (url, receiver) = crate::deliver::tests::echoes(200).await;
        let outbound = crate::deliver::tests::local_outbound();
        let (hook, secrets) = hookbridge_testkit::contract::unsealed_hook(
            "acme",
            hookbridge_core::ids::HookId::generate(),
            serde_json::json!({"name": "h", "url": url,
                "headers": [{"name": "X-Token", "value": "header-secret-456", "secret": true}]}),
        );
        let err = outbound.challenge(&hook.config, Some(&secrets), "v").await.unwrap_err();
        let ChallengeError::NotJson(text) = &err else { panic!("{err:?}") };
        assert!(text.contains("x-token: [redacted]"), "the request was echoed: {text}");
        assert!(!text.contains("header-secret"), "{text}");
        receiver.abort();
    }

    /// A hook's own `Accept` header is sent instead of the challenge's, not beside it: a
    /// receiver reading the first of two values might not get the one it asked for.
    #[tokio::test]
    async fn a_hooks_own_accept_header_is_sent_once() {
        let receiver = hookbridge_testkit::Receiver::start().await;
        let outbound = crate::deliver::tests::local_outbound();
        let (hook, secrets) = hookbridge_testkit::contract::unsealed_hook(
            "acme",
            hookbridge_core::ids::HookId::generate(),
            serde_json::json!({"name": "h", "url": receiver.url("/"), "headers": [{"name": "Accept", "value": "application/vnd.acme+json"}]}),
        );
        let _ = outbound.challenge(&hook.config, Some(&secrets), "v").await;
        let got = receiver.received();
        let accepts: Vec<_> = got[0].headers.get_all("accept").iter().collect();
        assert_eq!(accepts, ["application/vnd.acme+json"]);
    }
}
