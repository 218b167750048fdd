//! One delivery attempt: build the request (auth, headers, signatures over the exact
//! body), send it, and report the outcome.

use std::time::Instant;

use chrono::{DateTime, Utc};
use hookbridge_core::delivery::{Attempt, ErrorClass, RESPONSE_EXCERPT_BYTES, excerpt};
use hookbridge_core::hook::{AuthConfig, Hook, HookSecrets, SignatureFormat};
use hookbridge_core::ids::DeliveryId;
use hookbridge_core::outcome::{Sent, error_class};
use hookbridge_core::retry::parse_retry_after;
use hookbridge_core::secret::Secret;
use hookbridge_core::signing;

use crate::Outbound;
use crate::auth::static_auth_header;
use crate::classify::{self, describe};

/// What to send.
#[derive(Debug, Clone, Copy)]
pub struct DeliveryRequest<'a> {
    /// The hook (its config decides method, URL, auth, headers and signatures).
    pub hook: &'a Hook,
    /// Its opened secrets.
    pub secrets: &'a HookSecrets,
    /// The delivery, which is also the `webhook-id`.
    pub delivery_id: DeliveryId,
    /// The envelope, exactly as it will be signed and sent.
    pub body: &'a str,
}

/// What happened.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AttemptReport {
    /// The result, for the core's decision.
    pub sent: Sent,
    /// The attempt to record (its number is assigned by the store).
    pub attempt: Attempt,
}

impl AttemptReport {
    fn new(sent: Sent, at: DateTime<Utc>, started: Instant, excerpt_text: Option<String>) -> Self {
        let status_code = match sent {
            Sent::Response { status, .. } => Some(status),
            Sent::NoResponse(_) => None,
        };
        Self {
            sent,
            attempt: Attempt {
                attempt: 0,
                at,
                duration_ms: started.elapsed().as_millis() as u64,
                status_code,
                error_class: error_class(sent),
                response_excerpt: excerpt_text,
            },
        }
    }

    fn failed(class: ErrorClass, at: DateTime<Utc>, started: Instant, why: String) -> Self {
        Self::new(Sent::NoResponse(class), at, started, Some(excerpt(&why)))
    }
}

enum AuthHeader {
    None,
    Static(String, String),
    Bearer(Secret),
}

impl Outbound {
    /// Sends one attempt within `budget`, everything included: the token fetch, the
    /// request, a refresh after a 401 and the request again. What is not done by then is a
    /// `timeout`, so a delivery never takes longer than its lane allows.
    pub async fn deliver_within(&self, req: DeliveryRequest<'_>, budget: std::time::Duration) -> AttemptReport {
        let at = Utc::now();
        let started = Instant::now();
        match tokio::time::timeout(budget, self.deliver(req)).await {
            Ok(report) => report,
            Err(_) => AttemptReport::failed(
                ErrorClass::Timeout,
                at,
                started,
                format!("no answer within {} ms", budget.as_millis()),
            ),
        }
    }

    /// Sends one attempt. Never fails: every failure is an outcome to record.
    pub async fn deliver(&self, req: DeliveryRequest<'_>) -> AttemptReport {
        let at = Utc::now();
        let started = Instant::now();
        let cfg = &req.hook.config;
        let url = match url::Url::parse(&cfg.url) {
            Ok(u) => u,
            Err(e) => {
                return AttemptReport::failed(ErrorClass::Connect, at, started, format!("invalid url: {e}"));
            }
        };
        if let Err(refused) = crate::resolver::check_target(&self.settings.network, &url) {
            return AttemptReport::failed(ErrorClass::SsrfBlocked, at, started, refused.to_string());
        }

        let oauth = match &cfg.auth {
            AuthConfig::OauthClientCredentials(o) => Some(o),
            _ => None,
        };
        let mut auth = match (oauth, static_auth_header(&cfg.auth, req.secrets)) {
            (Some(o), _) => match self.oauth_token(req.hook.id, o, req.secrets, false).await {
                Ok(t) => AuthHeader::Bearer(t),
                Err(e) => {
                    return AttemptReport::failed(ErrorClass::Auth, at, started, e.to_string());
                }
            },
            (None, Some((k, v))) => AuthHeader::Static(k, v),
            (None, None) => AuthHeader::None,
        };

        let mut renewed = false;
        loop {
            let resp = match self.send_once(&req, &url, &auth).await {
                Ok(r) => r,
                Err(e) => {
                    return AttemptReport::failed(classify::error_class(&e), at, started, describe(&e));
                }
            };
            let status = resp.status().as_u16();
            // A 401 to a cached token: the token may have been revoked early. Fetch a new
            // one once and try again at once, within this attempt.
            if status == 401
                && !renewed
                && let Some(o) = oauth
            {
                renewed = true;
                match self.oauth_token(req.hook.id, o, req.secrets, true).await {
                    Ok(t) => {
                        auth = AuthHeader::Bearer(t);
                        continue;
                    }
                    Err(e) => {
                        return AttemptReport::failed(ErrorClass::Auth, at, started, e.to_string());
                    }
                }
            }
            let retry_after = resp
                .headers()
                .get(http::header::RETRY_AFTER)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| parse_retry_after(v, Utc::now()));
            let text = read_excerpt(resp).await;
            return AttemptReport::new(Sent::Response { status, retry_after }, at, started, Some(text));
        }
    }

    async fn send_once(
        &self,
        req: &DeliveryRequest<'_>,
        url: &url::Url,
        auth: &AuthHeader,
    ) -> reqwest::Result<reqwest::Response> {
        let cfg = &req.hook.config;
        let method = reqwest::Method::from_bytes(cfg.method.as_str().as_bytes()).unwrap_or(reqwest::Method::POST);
        let id = req.delivery_id.to_string();
        // Signed at send time, so a retry carries a fresh timestamp within the receiver's tolerance.
        let now = Utc::now();
        let body = req.body.as_bytes();
        let mut r = self
            .client
            .request(method, url.clone())
            .header(http::header::CONTENT_TYPE, "application/json")
            .header(signing::HEADER_ID, &id)
            .header(signing::HEADER_TIMESTAMP, now.timestamp())
            .header(
                signing::HEADER_SIGNATURE,
                signing::standard_signature_header(req.secrets.signing_at(now), &id, now.timestamp(), body),
            );
        if cfg.signature_formats.contains(&SignatureFormat::Keycloak) {
            r = r.header(signing::HEADER_KEYCLOAK, signing::keycloak_signature(&req.secrets.signing, body));
        }
        for h in &cfg.headers {
            let value = match &h.value {
                Some(v) => v.as_str(),
                None => match req.secrets.headers.get(&h.name.to_ascii_lowercase()) {
                    Some(s) => s.expose(),
                    None => continue,
                },
            };
            r = r.header(h.name.as_str(), value);
        }
        r = match auth {
            AuthHeader::None => r,
            AuthHeader::Static(k, v) => r.header(k.as_str(), v.as_str()),
            AuthHeader::Bearer(t) => r.header(http::header::AUTHORIZATION, format!("Bearer {}", t.expose())),
        };
        r.body(req.body.to_owned()).send().await
    }
}

/// Reads at most `max` bytes of a body as text and drops the rest unread, so an endpoint
/// answering with megabytes costs us nothing.
pub(crate) async fn read_capped(mut resp: reqwest::Response, max: usize) -> reqwest::Result<String> {
    let mut buf: Vec<u8> = Vec::new();
    while buf.len() < max {
        match resp.chunk().await? {
            Some(chunk) => buf.extend_from_slice(&chunk),
            None => break,
        }
    }
    buf.truncate(max);
    Ok(String::from_utf8_lossy(&buf).into_owned())
}

/// The start of a response body for the attempt record (a body cut short by an error is
/// recorded as far as it came, or not at all).
async fn read_excerpt(resp: reqwest::Response) -> String {
    excerpt(&read_capped(resp, RESPONSE_EXCERPT_BYTES).await.unwrap_or_default())
}
