//! Portal links: what a SaaS product hands its own customer so they manage their hooks in
//! the console without any other login. A link is single-use and short-lived; redeeming
//! it opens a console session with the same grant. Only hashes of the link codes and
//! session ids are stored, so a copy of the store opens nothing.

use chrono::{DateTime, Duration, Utc};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::ids::TenantId;

/// How long a link may wait to be opened, unless the request says less.
pub const LINK_VALID_FOR: Duration = Duration::minutes(10);
/// The longest a link may be made to wait.
pub const LINK_VALID_AT_MOST: Duration = Duration::hours(1);
/// How long the session a link opens lasts.
pub const SESSION_LASTS: Duration = Duration::hours(8);

/// What a portal link (and the session it opens) allows.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PortalGrant {
    /// The one tenant it shows.
    pub tenant: TenantId,
    /// When not empty, only hooks scoped to these sites (and new hooks must be).
    #[serde(default)]
    pub sites: Vec<String>,
    /// Whether it may only read.
    #[serde(default)]
    pub read_only: bool,
    /// When the link, or the session, stops working.
    pub expires_at: DateTime<Utc>,
}

/// The stored key of a link code or session id: its SHA-256, hex.
pub fn hashed(secret: &str) -> String {
    hex::encode(Sha256::digest(secret.as_bytes()))
}

/// A fresh unguessable code (256 random bits, URL-safe).
pub fn fresh_code() -> String {
    use base64::Engine as _;
    let mut bytes = [0u8; 32];
    rand::fill(&mut bytes);
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_are_fresh_and_only_their_hash_is_kept() {
        let (a, b) = (fresh_code(), fresh_code());
        assert_ne!(a, b);
        assert_eq!(a.len(), 43);
        assert_eq!(hashed(&a).len(), 64);
        assert_ne!(hashed(&a), a);
        assert_eq!(hashed(&a), hashed(&a));
    }
}
