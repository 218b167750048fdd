//! Checking a bearer token, whichever way it was signed, and reading the caller from it.
//!
//! Both kinds must carry `exp` (a token without one is refused) and are refused before
//! `nbf`, each with 30 s of leeway for clocks. An issuer's tokens must also name it in
//! `iss`, and the configured audience (required with an issuer) in `aud` (or, with no `aud`, in
//! `client_id`, as API Gateway allows), and must not say it is another kind of token than an
//! access token (an ID token, by Cognito's `token_use` or Keycloak's `typ`). The tenant comes from
//! the configured claim (`tenant` by default), the scopes from `scope` or else `scp`, each
//! either space-separated text (as RFC 8693 and Entra ID write them) or a list (as Okta and
//! some others do).
//!
//! A token once checked is taken again without checking it for up to
//! [`CHECKED_KEPT_FOR`], never past its own `exp`.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

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

/// How long a token, once checked, is taken again without checking its signature and
/// claims. A producer publishes call after call with one token, and each check (decoding,
/// the signature, the claims as JSON) was about 1 % of the embedded server's CPU at
/// saturation. Either key source already lets a token signed with a key just rotated out
/// through for longer than this: the HS256 key is read again every 5 minutes, an issuer's
/// keys are kept for an hour.
pub const CHECKED_KEPT_FOR: Duration = Duration::from_secs(60);

/// The most bytes of tokens kept checked (a token is often 300 bytes to 2 KiB, and a
/// deployment's producers and console users each hold one or a few at a time), so that
/// many large tokens cannot take much memory. One evicted is checked afresh on its next
/// call.
const CHECKED_BYTES_AT_MOST: u64 = 1024 * 1024;

/// What the API checks tokens with.
#[derive(Clone, Debug)]
pub struct Tokens {
    hs256: Option<Arc<dyn KeySource>>,
    issuer: Option<Arc<Issuer>>,
    tenant_claim: Arc<str>,
    checked: Checked,
}

/// Tokens lately checked, and until when each is taken unchecked: [`CHECKED_KEPT_FOR`]
/// after its check, or its `exp` if sooner. Only a token accepted is kept.
#[derive(Clone)]
struct Checked {
    callers: moka::sync::Cache<Box<str>, (Caller, SystemTime)>,
    kept_for: Duration,
}

impl Checked {
    fn new(kept_for: Duration) -> Self {
        let callers = moka::sync::Cache::<Box<str>, (Caller, SystemTime)>::builder()
            .weigher(|token, _| u32::try_from(token.len()).unwrap_or(u32::MAX))
            .max_capacity(CHECKED_BYTES_AT_MOST)
            .time_to_live(kept_for)
            .build();
        Self { callers, kept_for }
    }

    /// The caller `token` was checked for, if it is still taken unchecked.
    fn get(&self, token: &str) -> Option<Caller> {
        let (caller, until) = self.callers.get(token)?;
        (SystemTime::now() < until).then_some(caller)
    }

    /// Keeps `token`, checked now for `caller`, until `kept_for` from now or `exp` (seconds
    /// since the epoch, from the token), whichever is sooner.
    fn keep(&self, token: &str, caller: &Caller, exp: Option<f64>) {
        let now = SystemTime::now();
        let Ok(since_epoch) = now.duration_since(SystemTime::UNIX_EPOCH) else { return };
        // What is left of the token's life, as far as `kept_for`: an `exp` too far ahead
        // for a `SystemTime` (as a `hookbridge token` for good may be) is kept for
        // `kept_for`, one with none (which the check refuses) or past not at all.
        let left = match exp {
            Some(e) if e.is_finite() => e - since_epoch.as_secs_f64(),
            _ => return,
        };
        if left <= 0.0 {
            return;
        }
        let kept = Duration::try_from_secs_f64(left).map_or(self.kept_for, |left| left.min(self.kept_for));
        self.callers.insert(token.into(), (caller.clone(), now + kept));
    }
}

/// Never the tokens: they are bearer credentials.
impl std::fmt::Debug for Checked {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Checked").field("kept_for", &self.kept_for).finish_non_exhaustive()
    }
}

/// Why the API cannot check tokens as configured.
#[derive(Debug, thiserror::Error)]
pub enum TokensError {
    /// Nothing to check them with.
    #[error(
        "the API has no way to check tokens: set {JWT_SECRET} (an HS256 key of at least 32 bytes), {JWT_SECRET_NAME} (a Secrets Manager secret holding one) or {JWT_ISSUER} (an OpenID Connect issuer, with {JWT_AUDIENCE})"
    )]
    Unconfigured,
    /// An issuer with no audience: every client's tokens would be taken.
    #[error(
        "{JWT_ISSUER} is set without {JWT_AUDIENCE}: a token the issuer signs for any of its clients would be accepted"
    )]
    NoAudience,
}

impl Tokens {
    /// HS256 tokens signed with `key`, the tenant in `tenant` (local runs and tests).
    pub fn hs256(key: JwtKey) -> Self {
        let key = Secret::new(String::from_utf8_lossy(key.bytes()).into_owned());
        Self {
            hs256: Some(Arc::new(key)),
            issuer: None,
            tenant_claim: DEFAULT_TENANT_CLAIM.into(),
            checked: Checked::new(CHECKED_KEPT_FOR),
        }
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
        if issuer.is_some() && t.audience.is_none() {
            return Err(TokensError::NoAudience);
        }
        Ok(Self {
            hs256,
            issuer,
            tenant_claim: t.tenant_claim.as_str().into(),
            checked: Checked::new(CHECKED_KEPT_FOR),
        })
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

    /// Checks a token and says who calls: at once for a token accepted lately
    /// ([`CHECKED_KEPT_FOR`]).
    pub async fn check(&self, token: &str) -> Result<Caller, ApiError> {
        if let Some(caller) = self.checked.get(token) {
            return Ok(caller);
        }
        let (caller, exp) = self.check_afresh(token).await?;
        self.checked.keep(token, &caller, exp);
        Ok(caller)
    }

    /// Checks a token's signature and claims: the caller, and the token's `exp`.
    async fn check_afresh(&self, token: &str) -> Result<(Caller, Option<f64>), ApiError> {
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
                return Ok((self.caller(&claims, Some(DEFAULT_TENANT_CLAIM))?, expiry(&claims)));
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
        Ok((self.caller(&claims, None)?, expiry(&claims)))
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
        let scopes = ["scope", "scp"].into_iter().find_map(|c| claims.get(c).and_then(scopes_in)).unwrap_or_default();
        Ok(Caller { tenant, sub, scopes, realm_roles: realm_roles(claims), sites: Vec::new() })
    }
}

/// The roles of Keycloak's `realm-management` client the claims grant, where Keycloak puts
/// a client's roles (`resource_access.realm-management.roles`).
fn realm_roles(claims: &Map<String, Value>) -> Vec<String> {
    claims
        .get("resource_access")
        .and_then(|r| r.get("realm-management"))
        .and_then(|c| c.get("roles"))
        .and_then(Value::as_array)
        .map(|roles| roles.iter().filter_map(Value::as_str).map(str::to_owned).collect())
        .unwrap_or_default()
}

/// The scopes a `scope` or `scp` claim grants, when it is text or a list of them.
fn scopes_in(claim: &Value) -> Option<Vec<String>> {
    match claim {
        Value::String(s) => Some(s.split_whitespace().map(str::to_owned).collect()),
        Value::Array(list) => {
            Some(list.iter().filter_map(Value::as_str).flat_map(str::split_whitespace).map(str::to_owned).collect())
        }
        _ => None,
    }
}

/// A checked token's `exp`, in seconds since the epoch.
fn expiry(claims: &Map<String, Value>) -> Option<f64> {
    claims.get("exp").and_then(Value::as_f64)
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

    /// The HS256 key of a deployment that rotates it: a real key source, as Secrets
    /// Manager's is, that hands out whichever key is current.
    #[derive(Debug)]
    struct Rotating(std::sync::Mutex<Secret>);

    #[async_trait::async_trait]
    impl KeySource for Rotating {
        async fn key(&self) -> hookbridge_core::Result<Secret> {
            Ok(self.0.lock().unwrap().clone())
        }
    }

    /// HS256 tokens from a rotating key, each checked token taken unchecked for `kept_for`.
    fn rotating(key: &JwtKey, kept_for: Duration) -> (Tokens, Arc<Rotating>) {
        let source =
            Arc::new(Rotating(std::sync::Mutex::new(Secret::new(String::from_utf8_lossy(key.bytes()).into_owned()))));
        let tokens = Tokens {
            hs256: Some(source.clone()),
            issuer: None,
            tenant_claim: DEFAULT_TENANT_CLAIM.into(),
            checked: Checked::new(kept_for),
        };
        (tokens, source)
    }

    /// Tokens of an issuer with no audience are not made, whatever the settings were read
    /// from: every client of the issuer would get in with its own.
    #[test]
    fn an_issuer_without_an_audience_is_refused() {
        let outbound = Outbound::new(hookbridge_outbound::OutboundSettings::default()).unwrap();
        let issuer = TokenSettings { issuer: Some("https://idp.example.com".into()), ..TokenSettings::default() };
        assert!(matches!(Tokens::from_settings(&issuer, None, &outbound), Err(TokensError::NoAudience)));
        let named = TokenSettings { audience: Some("hookbridge".into()), ..issuer };
        assert!(Tokens::from_settings(&named, None, &outbound).is_ok());
    }

    fn rotate(source: &Rotating, to: &str) {
        *source.0.lock().unwrap() = Secret::new(to.to_owned());
    }

    /// Tokens keeping what they check for `kept_for`, and a token of theirs expiring at
    /// `exp` (seconds since the epoch) that they checked, then took again without a check
    /// once its key was rotated out.
    async fn taken_after_rotation(kept_for: Duration, exp: u64) -> (Tokens, String) {
        let key = JwtKey::new("k1-0123456789abcdef0123456789abcdef");
        let (tokens, source) = rotating(&key, kept_for);
        let token = mint_token(&key, &claims(exp)).unwrap();
        assert_eq!(tokens.check(&token).await.unwrap().sub, "u");
        rotate(&source, "k2-0123456789abcdef0123456789abcdef");
        assert_eq!(tokens.check(&token).await.unwrap().sub, "u", "checked moments ago");
        (tokens, token)
    }

    /// Whether `tokens` refuse `token` as signed by no key of theirs: checked afresh,
    /// against the key now in use.
    async fn refused_as_unsigned(tokens: &Tokens, token: &str) -> bool {
        matches!(tokens.check(token).await, Err(ApiError::Unauthorized(UNSIGNED)))
    }

    /// A token accepted is taken again without a check only for a while: after its key is
    /// rotated out it still passes at once (it was checked moments ago), and is refused
    /// once that while is over.
    #[tokio::test]
    async fn a_checked_token_is_taken_unchecked_only_for_a_while() {
        let now = chrono::Utc::now().timestamp() as u64;
        let (tokens, token) = taken_after_rotation(Duration::from_secs(1), now + 3600).await;
        let forged = format!("{}AAAA", &token[..token.len() - 4]);
        assert!(tokens.check(&forged).await.is_err(), "only the very token checked is taken");
        tokio::time::sleep(Duration::from_millis(1500)).await;
        assert!(refused_as_unsigned(&tokens, &token).await);
    }

    /// Never past the token's own `exp`, however long checked tokens are kept.
    #[tokio::test]
    async fn a_checked_token_is_not_taken_unchecked_past_its_expiry() {
        let now = chrono::Utc::now().timestamp() as u64;
        // Two to three seconds left (`now` is whole seconds).
        let (tokens, token) = taken_after_rotation(Duration::from_secs(3600), now + 3).await;
        tokio::time::sleep(Duration::from_millis(3100)).await;
        // Within the leeway, so only the key rotated out refuses it.
        assert!(refused_as_unsigned(&tokens, &token).await);
    }

    /// A token that expires too far ahead to be a time (a `hookbridge token` for good) is
    /// kept too, for the while any other is.
    #[tokio::test]
    async fn a_token_that_expires_far_ahead_is_kept_for_the_usual_while() {
        // 2^64 seconds as a float: more than any `Duration` holds.
        let (tokens, token) = taken_after_rotation(Duration::from_secs(1), u64::MAX).await;
        tokio::time::sleep(Duration::from_millis(1500)).await;
        assert!(refused_as_unsigned(&tokens, &token).await);
    }

    /// The tokens kept are bearer credentials: never in what `Tokens` prints.
    #[tokio::test]
    async fn the_tokens_kept_are_not_printed() {
        let key = JwtKey::new("k1-0123456789abcdef0123456789abcdef");
        let tokens = Tokens::hs256(key.clone());
        let token = mint_token(&key, &claims(chrono::Utc::now().timestamp() as u64 + 60)).unwrap();
        tokens.check(&token).await.unwrap();
        let printed = format!("{tokens:?}");
        let signature = token.rsplit('.').next().unwrap();
        assert!(!printed.contains(signature), "{printed}");
    }

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

    #[tokio::test]
    async fn scopes_are_read_as_text_or_as_a_list_in_either_claim() {
        let key = JwtKey::new("k1-0123456789abcdef0123456789abcdef");
        let tokens = Tokens::hs256(key.clone());
        let exp = chrono::Utc::now().timestamp() + 600;
        let scopes = |claims: Value| {
            let mut claims = claims;
            claims["tenant"] = "acme".into();
            claims["exp"] = exp.into();
            let token = jsonwebtoken::encode(
                &jsonwebtoken::Header::new(Algorithm::HS256),
                &claims,
                &jsonwebtoken::EncodingKey::from_secret(key.bytes()),
            )
            .unwrap();
            let tokens = tokens.clone();
            async move { tokens.check(&token).await.unwrap().scopes }
        };
        let both = ["hooks:read", "hooks:write"];
        assert_eq!(scopes(serde_json::json!({"scope": ["hooks:read", "hooks:write"]})).await, both);
        assert_eq!(scopes(serde_json::json!({"scp": "hooks:read hooks:write"})).await, both);
        assert_eq!(scopes(serde_json::json!({"scope": "hooks:read", "scp": ["hooks:write"]})).await, ["hooks:read"]);
        assert_eq!(scopes(serde_json::json!({"scope": 7, "scp": ["hooks:read", "hooks:write"]})).await, both);
        assert!(scopes(serde_json::json!({})).await.is_empty());
    }
}
