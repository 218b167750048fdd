//! Small JSON documents the platform itself reads from the network (an identity
//! provider's discovery document and JWKS), through the same guarded client as deliveries:
//! no private address unless the deployment allows it, no redirect, a timeout, a size cap.

use crate::Outbound;
use crate::classify::describe;

/// Why a document could not be had.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FetchError {
    /// The URL is not one the deployment lets us reach.
    #[error("{url} may not be reached: {why}")]
    Refused {
        /// The URL.
        url: String,
        /// Why.
        why: String,
    },
    /// No answer, a non-2xx answer, or not JSON.
    #[error("{url}: {why}")]
    Failed {
        /// The URL.
        url: String,
        /// What went wrong.
        why: String,
    },
}

/// The most of a document read.
const MAX_DOCUMENT: usize = 256 * 1024;

/// The longest one document may take (a `GET`, or the console's code exchange), whatever
/// the delivery timeout. An API request reads at most four in a row (the console's sign-in
/// callback on a fresh process: the discovery document for the token endpoint, the code
/// exchange, then the discovery document and the key set to check the token it got) and
/// must still answer within the API function's timeout (10 s); at the delivery timeout
/// each (10 s by default, up to 25 s), a slow issuer ran such requests into Lambda's
/// timeout, which also discards the keys the process knew.
pub const DOCUMENT_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(2);

impl Outbound {
    /// `GET`s `url` and parses its body as JSON.
    pub async fn get_json(&self, url: &str) -> Result<serde_json::Value, FetchError> {
        self.fetch_json(url, None).await
    }

    /// `POST`s `form` (URL-encoded) to `url` and parses the answer as JSON (an OAuth token
    /// endpoint exchanging an authorization code).
    pub async fn post_form_json(&self, url: &str, form: &[(&str, &str)]) -> Result<serde_json::Value, FetchError> {
        self.fetch_json(url, Some(form)).await
    }

    async fn fetch_json(&self, url: &str, form: Option<&[(&str, &str)]>) -> Result<serde_json::Value, FetchError> {
        let refused = |why: String| FetchError::Refused { url: url.to_owned(), why };
        let failed = |why: String| FetchError::Failed { url: url.to_owned(), why };
        let parsed = url::Url::parse(url).map_err(|e| refused(e.to_string()))?;
        crate::resolver::check_target(&self.settings.network, &parsed).map_err(|r| refused(r.to_string()))?;
        // Counted against the pool until the answer is read, at the end of this function.
        let (client, mut in_use) = self.client_for(&parsed);
        let req = match form {
            None => client.get(parsed),
            Some(f) => {
                let body: String = url::form_urlencoded::Serializer::new(String::new()).extend_pairs(f).finish();
                client.post(parsed).header(http::header::CONTENT_TYPE, "application/x-www-form-urlencoded").body(body)
            }
        };
        let resp = req
            .header(http::header::ACCEPT, "application/json")
            .timeout(DOCUMENT_TIMEOUT.min(self.settings.timeout))
            .send()
            .await
            .map_err(|e| failed(describe(&e)))?;
        in_use.iter_mut().for_each(|u| u.answered(resp.version()));
        let status = resp.status().as_u16();
        if !(200..300).contains(&status) {
            return Err(failed(format!("answered {status}")));
        }
        let body = crate::deliver::read_capped(resp, MAX_DOCUMENT).await.map_err(|e| failed(describe(&e)))?;
        serde_json::from_str(&body).map_err(|e| failed(format!("not JSON: {e}")))
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)] // Tests fail loudly on purpose.

    use std::time::Duration;

    use hookbridge_core::hook::NetworkPolicy;
    use hookbridge_testkit::{Receiver, Reply};

    use super::*;
    use crate::OutboundSettings;

    /// A document slower than [`DOCUMENT_TIMEOUT`] is given up on, though deliveries may
    /// wait longer: the request that needed it answers instead of outliving its function.
    #[tokio::test]
    async fn a_document_slower_than_its_own_bound_is_given_up_on() {
        let issuer = Receiver::start().await;
        issuer.always(Reply::body(200, "{}").after(DOCUMENT_TIMEOUT + Duration::from_secs(2)));
        let settings = OutboundSettings { timeout: Duration::from_secs(20), network: NetworkPolicy::local() };
        let outbound = Outbound::new(settings).unwrap();
        let got = outbound.get_json(&issuer.url("/jwks")).await;
        assert!(
            matches!(&got, Err(FetchError::Failed { why, .. }) if why.contains("timed out") || why.contains("timeout")),
            "{got:?}"
        );
        issuer.always(Reply::body(200, r#"{"keys":[]}"#));
        assert_eq!(outbound.get_json(&issuer.url("/jwks")).await.unwrap(), serde_json::json!({"keys": []}));
    }
}
