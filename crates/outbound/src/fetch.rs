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
        let req = match form {
            None => self.client.get(parsed),
            Some(f) => {
                let body: String = url::form_urlencoded::Serializer::new(String::new()).extend_pairs(f).finish();
                self.client
                    .post(parsed)
                    .header(http::header::CONTENT_TYPE, "application/x-www-form-urlencoded")
                    .body(body)
            }
        };
        let resp =
            req.header(http::header::ACCEPT, "application/json").send().await.map_err(|e| failed(describe(&e)))?;
        let status = resp.status().as_u16();
        if !(200..300).contains(&status) {
            return Err(failed(format!("answered {status}")));
        }
        let body = crate::deliver::read_capped(resp, MAX_DOCUMENT).await.map_err(|e| failed(describe(&e)))?;
        serde_json::from_str(&body).map_err(|e| failed(format!("not JSON: {e}")))
    }
}
