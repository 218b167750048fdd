//! Publishing safely more than once, two ways, both remembered for 24 hours per tenant:
//! an `Idempotency-Key` covers a whole request (its first answer is replayed), a
//! producer's event `id` covers one event (it is published once; a repeat gets the id the
//! first publish got). Both are claims in the one idempotency store, told apart by kind.

use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, Duration, Utc};
use hookbridge_core::ids::TenantId;
use hookbridge_core::ports::{Claim, IdempotencyStore, StoredResponse};
use sha2::{Digest, Sha256};

use super::input::printable;
use crate::error::ApiError;

/// How long an idempotency key (or a producer's event id) is remembered.
pub const IDEMPOTENCY_WINDOW: Duration = Duration::hours(24);
/// How long a claim holds its key before it is answered: a request that crashed after
/// claiming (and never completed or released) blocks the key this long, not a whole day.
pub const CLAIM_PENDING_FOR: Duration = Duration::minutes(5);
const MAX_KEY_LEN: usize = 255;

/// What a claim covers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Once {
    /// A whole request, by its `Idempotency-Key` header.
    Request(String),
    /// One event, by the producer's `id`.
    Event(String),
}

impl Once {
    /// The key in the store: the kind first, so a request key can never collide with an
    /// event id.
    fn key(&self) -> String {
        match self {
            Self::Request(k) => format!("key:{k}"),
            Self::Event(id) => format!("event:{id}"),
        }
    }

    /// The `Idempotency-Key` header, if the request has one.
    pub(crate) fn of_request(headers: &HeaderMap) -> Result<Option<Self>, ApiError> {
        match headers.get("idempotency-key") {
            None => Ok(None),
            // UTF-8, not only ASCII (`to_str`): the contract is bytes without control
            // characters, and a key in a customer's language is one.
            Some(v) => match std::str::from_utf8(v.as_bytes()) {
                Ok(k) if printable(k, MAX_KEY_LEN) => Ok(Some(Self::Request(k.to_owned()))),
                _ => Err(ApiError::field(
                    "Idempotency-Key",
                    format!("must be 1-{MAX_KEY_LEN} bytes of UTF-8 without control characters"),
                )),
            },
        }
    }

    /// Claims it for `fingerprint` (the request's bytes, or the event id itself).
    pub(crate) async fn claim(
        &self,
        store: &dyn IdempotencyStore,
        tenant: &TenantId,
        fingerprint: &str,
        now: DateTime<Utc>,
    ) -> Result<Claim, ApiError> {
        Ok(store.claim(tenant, &self.key(), fingerprint, now, now + CLAIM_PENDING_FOR).await?)
    }

    /// Stores the answer the claim's holder gave; a failure is logged (the claim then
    /// expires unanswered, and a repeat publishes again: at least once).
    pub(crate) async fn complete(&self, store: &dyn IdempotencyStore, tenant: &TenantId, answer: StoredResponse) {
        let until = Utc::now() + IDEMPOTENCY_WINDOW;
        if let Err(e) = store.complete(tenant, &self.key(), &answer, until).await {
            tracing::error!(error = %e, kind = ?self.kind(), "could not store the answer to an idempotency claim");
        }
    }

    /// Gives the claim up after a failure, so a retry can proceed.
    pub(crate) async fn release(&self, store: &dyn IdempotencyStore, tenant: &TenantId) {
        if let Err(e) = store.release(tenant, &self.key()).await {
            tracing::error!(error = %e, kind = ?self.kind(), "could not release an idempotency claim");
        }
    }

    fn kind(&self) -> &'static str {
        match self {
            Self::Request(_) => "request",
            Self::Event(_) => "event",
        }
    }
}

/// The request's fingerprint: a hash of its exact bytes.
pub(crate) fn fingerprint(body: &[u8]) -> String {
    hex::encode(Sha256::digest(body))
}

/// What an `Idempotency-Key` claim says to do: go on (`None`), or give the first answer
/// again ([`replayed`]).
pub(crate) fn settle_request_claim(claim: Claim, fingerprint: &str) -> Result<Option<StoredResponse>, ApiError> {
    match claim {
        Claim::Claimed => Ok(None),
        Claim::Existing { fingerprint: fp, response: Some(r) } if fp == fingerprint => Ok(Some(r)),
        Claim::Existing { response: Some(_), .. } => Err(ApiError::Conflict(
            "this Idempotency-Key was used for a different request in the last 24 hours".to_owned(),
        )),
        Claim::Existing { response: None, .. } => {
            Err(ApiError::Conflict("a request with this Idempotency-Key is still in progress".to_owned()))
        }
    }
}

/// The first answer to a request, given again to its repeat.
pub(crate) fn replayed(r: StoredResponse) -> Response {
    let status = StatusCode::from_u16(r.status).unwrap_or(StatusCode::ACCEPTED);
    let mut resp = (status, r.body).into_response();
    resp.headers_mut().insert(axum::http::header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    resp.headers_mut().insert("idempotent-replayed", HeaderValue::from_static("true"));
    resp
}

/// The stored key of an `Idempotency-Key` header's claim (for tests that plant one, as a
/// request that crashed would have left it).
pub fn request_claim_key(header: &str) -> String {
    Once::Request(header.to_owned()).key()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)] // Tests fail loudly on purpose.

    use super::*;

    fn key(bytes: &[u8]) -> Result<Option<Once>, ApiError> {
        let mut headers = HeaderMap::new();
        headers.insert("idempotency-key", HeaderValue::from_bytes(bytes).unwrap());
        Once::of_request(&headers)
    }

    /// Any UTF-8 key of 1-255 bytes without control characters, as the contract says; HTTP
    /// carries a header's bytes as they are, and a key in a customer's language is one.
    #[test]
    fn an_idempotency_key_is_utf8_without_control_characters() {
        assert_eq!(key(b"order-42").unwrap(), Some(Once::Request("order-42".into())));
        assert_eq!(key("commande-é".as_bytes()).unwrap(), Some(Once::Request("commande-é".into())));
        assert!(key(&[b'a'; 255]).unwrap().is_some());
        assert_eq!(Once::of_request(&HeaderMap::new()).unwrap(), None);
        for refused in [&[b'a'; 256][..], b"a\tb", b"\xff\xfe"] {
            match key(refused) {
                Err(ApiError::Invalid { errors, .. }) => assert_eq!(errors[0].field, "Idempotency-Key"),
                other => panic!("{refused:?}: {other:?}"),
            }
        }
    }
}
