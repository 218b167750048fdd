//! HS256 tokens with the deployment's key: minted by `hookbridge token`, checked by the API.
//! The key comes from a [`hookbridge_core::ports::KeySource`]: given directly, or (on AWS)
//! read from Secrets Manager so it never sits in a function's environment.

use std::fmt;

use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde::{Deserialize, Serialize};

/// The HS256 key. Its `Debug` never shows it.
#[derive(Clone)]
pub struct JwtKey(Vec<u8>);

impl JwtKey {
    /// A key from its text (`HOOKBRIDGE_JWT_SECRET`).
    pub fn new(secret: impl AsRef<[u8]>) -> Self {
        Self(secret.as_ref().to_vec())
    }

    pub(super) fn bytes(&self) -> &[u8] {
        &self.0
    }
}

impl fmt::Debug for JwtKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("JwtKey([redacted])")
    }
}

/// The claims `hookbridge token` writes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claims {
    /// Who is calling; recorded as `created_by`.
    pub sub: String,
    /// Whose data it may see.
    pub tenant: String,
    /// Space-separated scopes.
    pub scope: String,
    /// Expiry, unix seconds; a token without one is refused.
    pub exp: u64,
}

/// Signs a token (for `hookbridge token` and tests).
pub fn mint_token(key: &JwtKey, claims: &Claims) -> Result<String, jsonwebtoken::errors::Error> {
    jsonwebtoken::encode(&Header::new(Algorithm::HS256), claims, &EncodingKey::from_secret(&key.0))
}
