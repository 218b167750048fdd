//! Bearer JWTs (HS256): who calls, for which tenant, with which scopes.

use std::fmt;

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use hookbridge_core::ids::TenantId;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};

use crate::Api;
use crate::error::ApiError;

/// Clock skew tolerated on `exp`.
const LEEWAY_SECS: u64 = 30;

/// The HS256 key. Its `Debug` never shows it.
#[derive(Clone)]
pub struct JwtKey(Vec<u8>);

impl JwtKey {
    /// A key from its text (`HOOKBRIDGE_JWT_SECRET`).
    pub fn new(secret: impl AsRef<[u8]>) -> Self {
        Self(secret.as_ref().to_vec())
    }
}

impl fmt::Debug for JwtKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("JwtKey([redacted])")
    }
}

/// The claims a token carries.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claims {
    /// Who is calling; recorded as `created_by` (`unknown` when the token names no one).
    #[serde(default = "unknown_subject")]
    pub sub: String,
    /// Whose data it may see.
    pub tenant: String,
    /// Space-separated scopes.
    #[serde(default)]
    pub scope: String,
    /// Expiry, unix seconds; honoured when present.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exp: Option<u64>,
}

fn unknown_subject() -> String {
    "unknown".to_owned()
}

/// A permission a call needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    /// Read hooks and deliveries.
    HooksRead,
    /// Change hooks, retry and replay.
    HooksWrite,
    /// Publish events.
    EventsPublish,
}

impl Scope {
    /// The scope's name in tokens.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::HooksRead => "hooks:read",
            Self::HooksWrite => "hooks:write",
            Self::EventsPublish => "events:publish",
        }
    }
}

/// Signs a token (for `hookbridge token` and tests).
pub fn mint_token(key: &JwtKey, claims: &Claims) -> Result<String, jsonwebtoken::errors::Error> {
    jsonwebtoken::encode(&Header::new(Algorithm::HS256), claims, &EncodingKey::from_secret(&key.0))
}

/// The authenticated caller of a request.
#[derive(Debug, Clone)]
pub struct Caller {
    /// The tenant every read and write is scoped to.
    pub tenant: TenantId,
    /// The subject, for `created_by`.
    pub sub: String,
    scopes: Vec<String>,
}

impl Caller {
    /// `403` unless the token has `scope`.
    pub fn require(&self, scope: Scope) -> Result<(), ApiError> {
        if self.scopes.iter().any(|s| s == scope.as_str()) { Ok(()) } else { Err(ApiError::Forbidden(scope.as_str())) }
    }
}

/// Checks a bearer token: signature, algorithm and expiry.
pub fn verify_token(key: &JwtKey, token: &str) -> Result<Claims, ApiError> {
    let mut v = Validation::new(Algorithm::HS256);
    v.required_spec_claims.clear();
    v.leeway = LEEWAY_SECS;
    v.validate_aud = false;
    jsonwebtoken::decode::<Claims>(token, &DecodingKey::from_secret(&key.0), &v).map(|d| d.claims).map_err(|e| match e
        .kind()
    {
        jsonwebtoken::errors::ErrorKind::ExpiredSignature => ApiError::Unauthorized("the token has expired"),
        _ => ApiError::Unauthorized("the token is not valid"),
    })
}

impl FromRequestParts<Api> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, api: &Api) -> Result<Self, Self::Rejection> {
        let header = parts
            .headers
            .get(axum::http::header::AUTHORIZATION)
            .ok_or(ApiError::Unauthorized("missing Authorization: Bearer <token>"))?;
        let token = header
            .to_str()
            .ok()
            .and_then(|h| h.strip_prefix("Bearer ").or_else(|| h.strip_prefix("bearer ")))
            .ok_or(ApiError::Unauthorized("the Authorization header must be Bearer <token>"))?;
        let claims = verify_token(&api.settings().jwt, token.trim())?;
        let tenant = claims
            .tenant
            .parse()
            .map_err(|_| ApiError::Unauthorized("the token's tenant claim is not a valid tenant"))?;
        Ok(Self { tenant, sub: claims.sub, scopes: claims.scope.split_whitespace().map(str::to_owned).collect() })
    }
}

/// Extractors that authenticate and check one scope, before the body is read: a caller
/// without the scope gets `403` whatever the body holds.
macro_rules! scoped {
    ($(#[$doc:meta])* $name:ident, $scope:expr) => {
        $(#[$doc])*
        #[derive(Debug, Clone)]
        pub struct $name(pub Caller);

        impl FromRequestParts<Api> for $name {
            type Rejection = ApiError;

            async fn from_request_parts(parts: &mut Parts, api: &Api) -> Result<Self, Self::Rejection> {
                let caller = Caller::from_request_parts(parts, api).await?;
                caller.require($scope)?;
                Ok(Self(caller))
            }
        }
    };
}

scoped!(
    /// A caller with `hooks:read`.
    Reader,
    Scope::HooksRead
);
scoped!(
    /// A caller with `hooks:write`.
    Writer,
    Scope::HooksWrite
);
scoped!(
    /// A caller with `events:publish`.
    Publisher,
    Scope::EventsPublish
);

#[cfg(test)]
mod tests {
    use super::*;

    fn claims(exp: Option<u64>) -> Claims {
        Claims { sub: "u".into(), tenant: "acme".into(), scope: "hooks:read".into(), exp }
    }

    #[test]
    fn round_trip_and_rejections() {
        let key = JwtKey::new("k1");
        let now = chrono::Utc::now().timestamp() as u64;
        let good = mint_token(&key, &claims(Some(now + 60))).unwrap();
        assert_eq!(verify_token(&key, &good).unwrap().tenant, "acme");
        let no_exp = mint_token(&key, &claims(None)).unwrap();
        assert!(verify_token(&key, &no_exp).is_ok());
        let expired = mint_token(&key, &claims(Some(now - 3600))).unwrap();
        assert!(matches!(verify_token(&key, &expired), Err(ApiError::Unauthorized("the token has expired"))));
        let wrong_key = mint_token(&JwtKey::new("k2"), &claims(None)).unwrap();
        assert!(verify_token(&key, &wrong_key).is_err());
        let mut forged = good.clone();
        forged.replace_range(forged.len() - 4.., "AAAA");
        assert!(verify_token(&key, &forged).is_err());
        assert!(verify_token(&key, "not.a.jwt").is_err());
    }
}
