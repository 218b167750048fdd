//! Checking a bearer token, whichever way it was signed, and reading the caller from it.
//!
//! Both kinds must carry `exp` (a token without one is refused) and are refused before
//! `nbf`, each with 30 s of leeway for clocks. An issuer's tokens must also name it in
//! `iss`, and the configured audience, when there is one, in `aud` (or, with no `aud`, in
//! `client_id`, as API Gateway allows), and must not say it is another kind of token than an
//! access token (an ID token, by Cognito's `token_use` or Keycloak's `typ`). The tenant comes from
//! the configured claim (`tenant` by default), the scopes from `scope` (space-separated)
//! or `scp` (a list, as Entra ID and Okta write it).

use std::collections::HashSet;
use std::sync::Arc;

use hookbridge_core::ports::KeySource;
use hookbridge_core::secret::Secret;
use hookbridge_core::settings::{
    DEFAULT_TENANT_CLAIM, JWT_AUDIENCE, JWT_ISSUER, JWT_SECRET, JWT_SECRET_NAME, TokenSettings,
};
use hookbridge_outbound::Outbound;
use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde_json::{Map, Value};

use super::Caller;
use super::hs256::JwtKey;
use super::jwks::Issuer;
use crate::error::ApiError;

/// Clock skew tolerated on `exp` and `nbf`.
const LEEWAY_SECS: u64 = 30;

/// What the API checks tokens with.
#[derive(Clone, Debug)]
pub struct Tokens {
    hs256: Option<Arc<dyn KeySource>>,
    issuer: Option<Arc<Issuer>>,
    tenant_claim: Arc<str>,
}

/// Why the API cannot check tokens as configured.
#[derive(Debug, thiserror::Error)]
pub enum TokensError {
    /// Nothing to check them with.
    #[error(
        "the API has no way to check tokens: set {JWT_SECRET} (an HS256 key of at least 32 bytes), {JWT_SECRET_NAME} (a Secrets Manager secret holding one) or {JWT_ISSUER} (an OpenID Connect issuer)"
    )]
    Unconfigured,
}

impl Tokens {
    /// HS256 tokens signed with `key`, the tenant in `tenant` (local runs and tests).
    pub fn hs256(key: JwtKey) -> Self {
        let key = Secret::new(String::from_utf8_lossy(key.bytes()).into_owned());
        Self { hs256: Some(Arc::new(key)), issuer: None, tenant_claim: DEFAULT_TENANT_CLAIM.into() }
    }

    /// As the deployment says: the HS256 key given, or from `key_source` (Secrets Manager,
    /// when `HOOKBRIDGE_JWT_SECRET_NAME` is set), and the issuer's keys fetched through
    /// `outbound`.
    pub fn from_settings(
        t: &TokenSettings,
        key_source: Option<Arc<dyn KeySource>>,
        outbound: &Outbound,
    ) -> Result<Self, TokensError> {
        let hs256 = key_source.or_else(|| t.hs256.clone().map(|k| Arc::new(k) as Arc<dyn KeySource>));
        let issuer = t
            .issuer
            .as_ref()
            .map(|i| Arc::new(Issuer::new(i.clone(), t.jwks_url.clone(), t.audience.clone(), outbound.clone())));
        if hs256.is_none() && issuer.is_none() {
            return Err(TokensError::Unconfigured);
        }
        if let (Some(issuer), None) = (&issuer, &t.audience) {
            // Said at every start: any application the issuer signs tokens for (another
            // client of the same Keycloak realm or Cognito pool) gets in with them.
            tracing::warn!(
                issuer = %issuer.issuer,
                "{JWT_ISSUER} is set without {JWT_AUDIENCE}: tokens the issuer signs for any of its clients are accepted; set {JWT_AUDIENCE} to this API's audience"
            );
        }
        Ok(Self { hs256, issuer, tenant_claim: t.tenant_claim.as_str().into() })
    }

    /// Whether tokens may come from an issuer.
    pub fn has_issuer(&self) -> bool {
        self.issuer.is_some()
    }

    /// The issuer's authorization and token endpoints (for the console's sign-in).
    pub async fn login_endpoints(&self) -> Result<(String, String), String> {
        let issuer = self.issuer.as_ref().ok_or("no issuer is configured")?;
        issuer.login_endpoints().await.map_err(|e| e.to_string())
    }

    /// Exchanges an authorization code at `token_endpoint` for the issuer's access token.
    pub async fn exchange_code(&self, token_endpoint: &str, form: &[(&str, &str)]) -> Result<String, String> {
        let issuer = self.issuer.as_ref().ok_or("no issuer is configured")?;
        issuer.exchange(token_endpoint, form).await.map_err(|e| e.to_string())
    }

    /// Checks a token and says who calls.
    pub async fn check(&self, token: &str) -> Result<Caller, ApiError> {
        let header =
            jsonwebtoken::decode_header(token).map_err(|_| ApiError::Unauthorized("the token is not valid"))?;
        let claims = match header.alg {
            Algorithm::HS256 => {
                let source = self.hs256.as_ref().ok_or(ApiError::Unauthorized("HS256 tokens are not accepted here"))?;
                let unreadable = |e: hookbridge_core::Error| {
                    // Not the caller's fault: a 401 would tell a client to get a new token.
                    tracing::error!(error = %e, "the HS256 key could not be read");
                    ApiError::Unavailable("the token cannot be checked now; nothing was done, retry later")
                };
                let key = source.key().await.map_err(unreadable)?;
                let mut v = validation(Algorithm::HS256);
                v.validate_aud = false;
                let claims = match decode(token, &[DecodingKey::from_secret(key.expose().as_bytes())], &v) {
                    // Perhaps signed with a key rotated in since this one was read.
                    Err(refused) if is_unsigned(&refused) => {
                        let again = source.key_after_refusal().await.map_err(unreadable)?;
                        if again == key {
                            return Err(refused);
                        }
                        decode(token, &[DecodingKey::from_secret(again.expose().as_bytes())], &v)?
                    }
                    checked => checked?,
                };
                // The deployment's own tokens (`hookbridge token`) name the tenant `tenant`
                // whatever claim the issuer's tokens use: read there when the configured
                // claim is absent. Only for these: an issuer's token could carry a
                // `tenant` its user may set.
                return self.caller(&claims, Some(DEFAULT_TENANT_CLAIM));
            }
            Algorithm::RS256
            | Algorithm::RS384
            | Algorithm::RS512
            | Algorithm::PS256
            | Algorithm::PS384
            | Algorithm::PS512
            | Algorithm::ES256
            | Algorithm::ES384
            | Algorithm::EdDSA => {
                let issuer = self
                    .issuer
                    .as_ref()
                    .ok_or(ApiError::Unauthorized("tokens from an issuer are not accepted here"))?;
                let keys = issuer.key(header.kid.as_deref(), header.alg).await.map_err(|e| {
                    tracing::warn!(issuer = %issuer.issuer, error = %e, "no key for a token");
                    match e {
                        // Not the caller's fault: a 401 would tell a client to get a new
                        // token, which would be refused the same way.
                        super::jwks::KeyMissing::Unreachable(_) => {
                            ApiError::Unavailable("the token cannot be checked now; nothing was done, retry later")
                        }
                        _ => ApiError::Unauthorized(UNSIGNED),
                    }
                })?;
                let mut v = validation(header.alg);
                // The identifier is kept without its trailing `/` (the discovery document's
                // address is built on it), but an issuer whose identifier has one (Auth0's)
                // puts it in `iss`, and API Gateway's JWT check compares as configured.
                v.set_issuer(&[issuer.issuer.clone(), format!("{}/", issuer.issuer)]);
                v.required_spec_claims.insert("iss".to_owned());
                // The audience is checked below: API Gateway's rule, which Cognito's access
                // tokens (no `aud`, a `client_id`) need.
                v.validate_aud = false;
                let claims = decode(token, &keys, &v)?;
                if let Some(aud) = &issuer.audience {
                    for_audience(&claims, aud)?;
                }
                an_access_token(&claims)?;
                claims
            }
            _ => return Err(ApiError::Unauthorized("the token's algorithm is not accepted")),
        };
        self.caller(&claims, None)
    }

    /// Who the checked `claims` stand for: the tenant from the configured claim, or else
    /// from `or_claim`.
    fn caller(&self, claims: &Map<String, Value>, or_claim: Option<&str>) -> Result<Caller, ApiError> {
        let tenant = claims
            .get(&*self.tenant_claim)
            .or_else(|| or_claim.and_then(|c| claims.get(c)))
            .and_then(Value::as_str)
            .and_then(|t| t.parse().ok())
            .ok_or(ApiError::Unauthorized("the token's tenant claim is missing or not a valid tenant"))?;
        let sub = claims.get("sub").and_then(Value::as_str).unwrap_or("unknown").to_owned();
        let scopes = match (claims.get("scope"), claims.get("scp")) {
            (Some(Value::String(s)), _) | (None, Some(Value::String(s))) => {
                s.split_whitespace().map(str::to_owned).collect()
            }
            (None, Some(Value::Array(list))) => list.iter().filter_map(Value::as_str).map(str::to_owned).collect(),
            _ => Vec::new(),
        };
        Ok(Caller { tenant, sub, scopes, sites: Vec::new() })
    }
}

fn validation(alg: Algorithm) -> Validation {
    let mut v = Validation::new(alg);
    v.leeway = LEEWAY_SECS;
    v.validate_nbf = true;
    v.required_spec_claims = HashSet::from(["exp".to_owned()]);
    v
}

/// Whether an issuer's token is for `audience`, as API Gateway's JWT check decides: its
/// `aud` (one or a list) names it, or, in a token with no `aud`, its `client_id` is it.
fn for_audience(claims: &Map<String, Value>, audience: &str) -> Result<(), ApiError> {
    let named = match claims.get("aud") {
        Some(Value::String(a)) => a == audience,
        Some(Value::Array(all)) => all.iter().any(|a| a.as_str() == Some(audience)),
        Some(_) => false,
        None => match claims.get("client_id") {
            Some(c) => c.as_str() == Some(audience),
            None => return Err(ApiError::Unauthorized("the token names no audience (aud)")),
        },
    };
    if named { Ok(()) } else { Err(ApiError::Unauthorized("the token is for another audience")) }
}

/// Refuses an issuer's token that says it is not an access token. An ID token is the
/// client's proof of who signed in, not a grant to call an API, and it is signed by the same
/// keys and often for the same audience (Cognito's names the app client, as its access
/// tokens' `client_id` does), so without this an ID token leaked from a browser app would
/// work as an access token. Providers that mark neither kind are unaffected.
fn an_access_token(claims: &Map<String, Value>) -> Result<(), ApiError> {
    const NOT_ACCESS: ApiError =
        ApiError::Unauthorized("the token is not an access token (an ID token?); send the access token");
    // Cognito: `access` or `id`.
    if let Some(used) = claims.get("token_use")
        && used.as_str() != Some("access")
    {
        return Err(NOT_ACCESS);
    }
    // Keycloak: `Bearer` for access tokens; `ID`, `Refresh`, `Offline` and `Logout` for the
    // others. Only those are refused: another issuer's `typ` may mean something else.
    if let Some(kind) = claims.get("typ").and_then(Value::as_str)
        && ["id", "refresh", "offline", "logout"].iter().any(|other| kind.eq_ignore_ascii_case(other))
    {
        return Err(NOT_ACCESS);
    }
    Ok(())
}

/// Why a token none of the keys verifies is refused.
const UNSIGNED: &str = "the token is not signed by a key of the issuer";

/// Whether `e` refused a token because no key verified its signature.
fn is_unsigned(e: &ApiError) -> bool {
    matches!(e, ApiError::Unauthorized(why) if *why == UNSIGNED)
}

/// Decodes with the first of `keys` that verifies the signature.
fn decode(token: &str, keys: &[DecodingKey], v: &Validation) -> Result<Map<String, Value>, ApiError> {
    let mut last = ApiError::Unauthorized(UNSIGNED);
    for key in keys {
        match jsonwebtoken::decode::<Map<String, Value>>(token, key, v) {
            Ok(d) => return Ok(d.claims),
            Err(e) => {
                last = match e.kind() {
                    // Not this key (or not a key of the token's kind: a token naming no
                    // key is tried against each of the issuer's, RSA, EC and Ed25519).
                    ErrorKind::InvalidSignature | ErrorKind::InvalidAlgorithm | ErrorKind::InvalidKeyFormat => {
                        continue;
                    }
                    ErrorKind::ExpiredSignature => ApiError::Unauthorized("the token has expired"),
                    ErrorKind::ImmatureSignature => ApiError::Unauthorized("the token is not valid yet (nbf)"),
                    ErrorKind::MissingRequiredClaim(c) => match c.as_str() {
                        "exp" => ApiError::Unauthorized("the token has no expiry (exp); tokens must expire"),
                        "aud" => ApiError::Unauthorized("the token names no audience (aud)"),
                        "iss" => ApiError::Unauthorized("the token names no issuer (iss)"),
                        _ => ApiError::Unauthorized("the token lacks a required claim"),
                    },
                    ErrorKind::InvalidIssuer => ApiError::Unauthorized("the token is from another issuer"),
                    ErrorKind::InvalidAudience => ApiError::Unauthorized("the token is for another audience"),
                    _ => ApiError::Unauthorized("the token is not valid"),
                };
                break;
            }
        }
    }
    Err(last)
}

#[cfg(test)]
mod tests {
    use super::super::hs256::{Claims, mint_token};
    use super::*;

    fn claims(exp: u64) -> Claims {
        Claims { sub: "u".into(), tenant: "acme".into(), scope: "hooks:read".into(), exp }
    }

    #[tokio::test]
    async fn hs256_round_trip_and_rejections() {
        let key = JwtKey::new("k1-0123456789abcdef0123456789abcdef");
        let tokens = Tokens::hs256(key.clone());
        let now = chrono::Utc::now().timestamp() as u64;
        let good = mint_token(&key, &claims(now + 60)).unwrap();
        let caller = tokens.check(&good).await.unwrap();
        assert_eq!((caller.tenant.as_str(), caller.sub.as_str()), ("acme", "u"));
        assert_eq!(caller.scopes, ["hooks:read"]);
        let expired = mint_token(&key, &claims(now - 3600)).unwrap();
        assert!(matches!(tokens.check(&expired).await, Err(ApiError::Unauthorized("the token has expired"))));
        let wrong_key = mint_token(&JwtKey::new("k2-0123456789abcdef0123456789abcdef"), &claims(now + 60)).unwrap();
        assert!(tokens.check(&wrong_key).await.is_err());
        let mut forged = good.clone();
        forged.replace_range(forged.len() - 4.., "AAAA");
        assert!(tokens.check(&forged).await.is_err());
        assert!(tokens.check("not.a.jwt").await.is_err());
    }

    #[tokio::test]
    async fn a_token_must_expire_and_may_not_be_used_before_nbf() {
        let key = JwtKey::new("k1-0123456789abcdef0123456789abcdef");
        let tokens = Tokens::hs256(key.clone());
        let sign = |claims: Value| {
            jsonwebtoken::encode(
                &jsonwebtoken::Header::new(Algorithm::HS256),
                &claims,
                &jsonwebtoken::EncodingKey::from_secret(key.bytes()),
            )
            .unwrap()
        };
        let now = chrono::Utc::now().timestamp();
        let no_exp = sign(serde_json::json!({"tenant": "acme", "scope": "hooks:read"}));
        assert!(matches!(tokens.check(&no_exp).await, Err(ApiError::Unauthorized(m)) if m.contains("no expiry")));
        let later = sign(serde_json::json!({"tenant": "acme", "exp": now + 600, "nbf": now + 300}));
        assert!(matches!(tokens.check(&later).await, Err(ApiError::Unauthorized(m)) if m.contains("nbf")));
        let scp = sign(serde_json::json!({"tenant": "acme", "exp": now + 600, "scp": ["hooks:read", "hooks:write"]}));
        assert_eq!(tokens.check(&scp).await.unwrap().scopes, ["hooks:read", "hooks:write"]);
    }
}
