//! Request authentication, and OAuth client-credentials tokens cached until shortly
//! before they expire.

use std::collections::HashMap;
use std::hash::{DefaultHasher, Hash, Hasher};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use hookbridge_core::delivery::{ErrorClass, excerpt};
use hookbridge_core::hook::{AuthConfig, HookSecrets, OAuthConfig, ParamConfig, TokenBody, TokenMethod};
use hookbridge_core::ids::HookId;
use hookbridge_core::secret::Secret;
use serde::Deserialize;
use tokio::time::Instant;

use crate::Outbound;
use crate::classify::{describe, error_class};

/// How long a token without `expires_in` is kept.
const DEFAULT_TOKEN_LIFETIME: Duration = Duration::from_secs(300);
/// The longest a token is kept, whatever `expires_in` says: an endpoint's mistake (or
/// hostility) cannot pin a token for years.
const MAX_TOKEN_LIFETIME: Duration = Duration::from_secs(24 * 60 * 60);
/// The most of a token response read.
const MAX_TOKEN_RESPONSE: usize = 64 * 1024;
/// Tokens are renewed this long before they expire (or at 90 % of a shorter lifetime),
/// so a request never leaves with a token that dies in flight.
const REFRESH_MARGIN: Duration = Duration::from_secs(30);
/// How long a failed token fetch is remembered: deliveries to the hook in the meantime
/// fail at once with the same error instead of each waiting on the token endpoint.
pub const FAILURE_MEMORY: Duration = Duration::from_secs(10);
/// The longest one token fetch may take, waiting for another delivery's fetch included.
pub const FETCH_TIMEOUT: Duration = Duration::from_secs(10);

/// Why a token could not be had.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    /// The token request got no response.
    #[error("token request failed ({}): {detail}", class.as_str())]
    Request {
        /// Why.
        class: ErrorClass,
        /// The innermost cause.
        detail: String,
    },
    /// The token endpoint answered, but not with a token.
    #[error("token endpoint answered {status}: {body}")]
    Rejected {
        /// Its status.
        status: u16,
        /// The start of its body.
        body: String,
    },
}

fn timed_out(what: &str, budget: Duration) -> TokenError {
    TokenError::Request {
        class: ErrorClass::Timeout,
        detail: format!("{what} took longer than {} ms", budget.as_millis()),
    }
}

/// What a hook's slot holds.
#[derive(Clone)]
enum Cached {
    /// A token, good until `renew_at`; `renewed_after_401` when it was fetched because a
    /// receiver answered `401` to the one before.
    Token { value: Secret, renew_at: Instant, renewed_after_401: Option<Instant> },
    /// The last fetch failed; its error stands until `until`.
    Failed { error: TokenError, until: Instant },
}

impl Cached {
    /// Whether it is still of use at `now`: a token before its renewal, a failure while it
    /// is remembered.
    fn live(&self, now: Instant) -> bool {
        match self {
            Self::Token { renew_at, .. } => now < *renew_at,
            Self::Failed { until, .. } => now < *until,
        }
    }
}

type Slot = Arc<tokio::sync::Mutex<Option<Cached>>>;

/// OAuth tokens per hook and credentials, shared by every delivery of the process. One
/// fetch at a time per hook: a batch of deliveries to one hook waits for one token, never
/// longer than [`FETCH_TIMEOUT`], and a failure is remembered for [`FAILURE_MEMORY`]. Each
/// hook has its own lock, so a hanging token endpoint holds up only its own hook.
#[derive(Clone, Default)]
pub struct TokenCache {
    slots: Arc<Mutex<HashMap<u64, Slot>>>,
    fetches: Arc<AtomicU64>,
}

impl std::fmt::Debug for TokenCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenCache").field("fetches", &self.fetches()).finish_non_exhaustive()
    }
}

impl TokenCache {
    /// How many tokens were fetched from token endpoints so far.
    pub fn fetches(&self) -> u64 {
        self.fetches.load(Ordering::Relaxed)
    }

    fn slot(&self, key: u64) -> Slot {
        let mut slots = self.slots.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(slot) = slots.get(&key) {
            return slot.clone();
        }
        // A new hook or new credentials: the moment to forget the slots of no more use (a
        // deleted hook's, old credentials', any past its token or its failure), so that
        // the cache holds what is live, not every key the process ever saw. A slot in use
        // (held, or locked by a fetch) stays.
        let now = Instant::now();
        slots.retain(|_, s| {
            Arc::strong_count(s) > 1 || s.try_lock().map_or(true, |c| c.as_ref().is_some_and(|c| c.live(now)))
        });
        slots.entry(key).or_default().clone()
    }
}

/// A token is cached per hook and per credentials: changing the client secret or the
/// token URL starts afresh. The hash never leaves the process.
fn cache_key(hook: HookId, oauth: &OAuthConfig, secrets: &HookSecrets) -> u64 {
    let mut h = DefaultHasher::new();
    hook.hash(&mut h);
    oauth.token_url.hash(&mut h);
    oauth.client_id.hash(&mut h);
    secrets.auth.as_ref().map(Secret::expose).hash(&mut h);
    for (k, v) in &secrets.params {
        (k, v.expose()).hash(&mut h);
    }
    for p in oauth.header_params.iter().chain(&oauth.query_params).chain(&oauth.body_params) {
        (&p.key, &p.value).hash(&mut h);
    }
    h.finish()
}

#[derive(Deserialize)]
struct TokenResponse {
    access_token: String,
    #[serde(default)]
    expires_in: Option<ExpiresIn>,
}

/// `expires_in` as a number (some identity providers write `3600.0`), or as a string
/// others send.
#[derive(Deserialize)]
#[serde(untagged)]
enum ExpiresIn {
    Seconds(u64),
    Fractional(f64),
    Text(String),
}

impl ExpiresIn {
    fn seconds(&self) -> Option<u64> {
        let whole = |f: f64| (f.is_finite() && f >= 0.0).then_some(f as u64);
        match self {
            Self::Seconds(s) => Some(*s),
            Self::Fractional(f) => whole(*f),
            Self::Text(t) => t.trim().parse().ok().or_else(|| t.trim().parse().ok().and_then(whole)),
        }
    }
}

fn param_values<'a>(
    group: &'a str,
    params: &'a [ParamConfig],
    secrets: &'a HookSecrets,
) -> impl Iterator<Item = (&'a str, &'a str)> + 'a {
    params.iter().filter_map(move |p| {
        let value = match &p.value {
            Some(v) => v.as_str(),
            None => secrets.params.get(&format!("{group}.{}", p.key))?.expose(),
        };
        Some((p.key.as_str(), value))
    })
}

/// Whether the hook's token requests carry the header parameter `name`.
fn has_header(oauth: &OAuthConfig, name: &str) -> bool {
    oauth.header_params.iter().any(|p| p.key.eq_ignore_ascii_case(name))
}

/// The body of a `POST` token request: its fields as a form, or as a JSON object of
/// strings, gzip-compressed if asked.
fn token_body(fields: &[(&str, &str)], body: TokenBody) -> Result<Vec<u8>, TokenError> {
    let written = if body.json {
        let object: serde_json::Map<String, serde_json::Value> =
            fields.iter().map(|(k, v)| ((*k).to_owned(), serde_json::Value::from(*v))).collect();
        serde_json::Value::Object(object).to_string().into_bytes()
    } else {
        url::form_urlencoded::Serializer::new(String::new()).extend_pairs(fields).finish().into_bytes()
    };
    if !body.gzip {
        return Ok(written);
    }
    use std::io::Write as _;
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    encoder.write_all(&written).and_then(|()| encoder.finish()).map_err(|e| TokenError::Request {
        class: ErrorClass::Auth,
        detail: format!("cannot compress the token request: {e}"),
    })
}

/// How long a token fetched because a receiver refused the one before is not fetched anew
/// when refused in turn: a receiver refusing every token costs one fetch a minute, not one
/// per delivery.
const REFUSAL_MEMORY: Duration = Duration::from_secs(60);

/// Which token [`Outbound::oauth_token`] may give.
#[derive(Debug, Clone, Copy)]
pub enum TokenWanted<'a> {
    /// The cached one while it is fresh.
    Cached,
    /// Any but this one, which a receiver just answered `401` to: a cached one that is
    /// the same is fetched anew, and one that another delivery fetched since is given as
    /// it is (many deliveries refused one revoked token at once cost one fetch, not one
    /// per delivery). The same one comes back when it was itself fetched in the last
    /// minute after a refusal ([`REFUSAL_MEMORY`]): there is no newer one to try.
    Not(&'a Secret),
    /// A new one, whatever is cached (the verifier's check of the credentials).
    Fresh,
}

impl Outbound {
    /// A token for the hook, from the cache or fetched now, as `wanted` says.
    pub async fn oauth_token(
        &self,
        hook: HookId,
        oauth: &OAuthConfig,
        secrets: &HookSecrets,
        wanted: TokenWanted<'_>,
    ) -> Result<Secret, TokenError> {
        // The failure is remembered for the hook's next attempts.
        let budget = self.settings.token_budget();
        let slot = self.tokens.slot(cache_key(hook, oauth, secrets));
        let mut cached = tokio::time::timeout(budget, slot.lock_owned())
            .await
            .map_err(|_| timed_out("another delivery's token fetch", budget))?;
        let now = Instant::now();
        match cached.as_ref() {
            Some(Cached::Token { value, renew_at, renewed_after_401 }) if now < *renew_at => match wanted {
                TokenWanted::Cached => return Ok(value.clone()),
                TokenWanted::Not(refused) if refused.expose() != value.expose() => return Ok(value.clone()),
                // Itself fetched lately because the one before was refused, and refused too:
                // the receiver refuses tokens for its own reasons (an audience it does not
                // take, say), and a new one each delivery would only spend the identity
                // provider's rate and quota. The same one is given back: no newer to try.
                TokenWanted::Not(_) if renewed_after_401.is_some_and(|at| now < at + REFUSAL_MEMORY) => {
                    return Ok(value.clone());
                }
                TokenWanted::Not(_) | TokenWanted::Fresh => {}
            },
            // The verifier's check asks the endpoint itself: a failure remembered for the
            // deliveries' sake would answer for an endpoint put right since.
            Some(Cached::Failed { error, until }) if now < *until && !matches!(wanted, TokenWanted::Fresh) => {
                return Err(error.clone());
            }
            _ => {}
        }
        // The fetch runs on a task of its own, holding the slot: an attempt that gives up
        // waiting (the fast lane's budget is shorter than a fetch's) leaves what the fetch
        // brings cached for the next one, rather than throwing a slow provider's token
        // away and fetching again every time. A failure is remembered only while someone
        // still waits for it: one that outlived every asker (a Lambda frozen and thawed
        // mid-fetch, say) would fail the next deliveries for what may be the freeze's doing.
        // An attempt waiting for the slot's lock when it fails asks for it as much as the
        // one that began it.
        let (this, oauth, secrets) = (self.clone(), oauth.clone(), secrets.clone());
        // The verifier's check failing says nothing against a live token the deliveries
        // hold (it was not refused): they keep it rather than fail on the check's error.
        let checking = matches!(wanted, TokenWanted::Fresh);
        let after_401 = matches!(wanted, TokenWanted::Not(_));
        let waiting = Arc::new(());
        let asker = Arc::downgrade(&waiting);
        let fetch = tokio::spawn(async move {
            let fetched = tokio::time::timeout(budget, this.fetch_token(&oauth, &secrets))
                .await
                .unwrap_or_else(|_| Err(timed_out("the token fetch", budget)));
            this.tokens.fetches.fetch_add(1, Ordering::Relaxed);
            match fetched {
                Ok((value, lifetime)) => {
                    let margin = REFRESH_MARGIN.min(lifetime / 10);
                    let renew_at = Instant::now() + lifetime.saturating_sub(margin);
                    let renewed_after_401 = after_401.then(Instant::now);
                    *cached = Some(Cached::Token { value: value.clone(), renew_at, renewed_after_401 });
                    Ok(value)
                }
                Err(error) => {
                    // Besides the cache's own and this guard's, each reference to the slot
                    // is an attempt waiting for it: the slow lane's, say, after the fast
                    // lane's attempt that began this fetch gave up on it. It asks too.
                    let waited_for = Arc::strong_count(tokio::sync::OwnedMutexGuard::mutex(&cached)) > 2;
                    let live =
                        matches!(cached.as_ref(), Some(Cached::Token { renew_at, .. }) if Instant::now() < *renew_at);
                    if (asker.upgrade().is_some() || waited_for) && !(checking && live) {
                        *cached = Some(Cached::Failed { error: error.clone(), until: Instant::now() + FAILURE_MEMORY });
                    }
                    Err(error)
                }
            }
        });
        let fetched = fetch.await;
        drop(waiting);
        fetched.unwrap_or_else(|e| {
            Err(TokenError::Request { class: ErrorClass::Auth, detail: format!("the token fetch stopped: {e}") })
        })
    }

    async fn fetch_token(&self, oauth: &OAuthConfig, secrets: &HookSecrets) -> Result<(Secret, Duration), TokenError> {
        let mut url = url::Url::parse(&oauth.token_url)
            .map_err(|e| TokenError::Request { class: ErrorClass::Connect, detail: e.to_string() })?;
        crate::resolver::check_target(&self.settings.network, &url)
            .map_err(|r| TokenError::Request { class: ErrorClass::SsrfBlocked, detail: r.to_string() })?;
        // The default `grant_type` gives way to one the hook sends itself, in the body or
        // the query: sent twice, it is a parameter repeated, which RFC 6749 refuses.
        let mut form: Vec<(&str, &str)> = vec![("grant_type", "client_credentials")];
        form.retain(|(k, _)| !oauth.body_params.iter().chain(&oauth.query_params).any(|p| p.key == *k));
        form.extend(param_values("body_params", &oauth.body_params, secrets));
        {
            let mut q = url.query_pairs_mut();
            for (k, v) in param_values("query_params", &oauth.query_params, secrets) {
                q.append_pair(k, v);
            }
            if oauth.http_method == TokenMethod::Get {
                for (k, v) in &form {
                    q.append_pair(k, v);
                }
            }
        }
        if url.query() == Some("") {
            url.set_query(None);
        }
        let client_secret = secrets.auth.as_ref().map(Secret::expose).unwrap_or_default();
        let (basic, encoded_secret) = client_basic(&oauth.client_id, client_secret);
        // Counted against the pool until the answer is read, at the end of this function.
        let (client, mut in_use) = self.client_for(&url);
        let mut req = match oauth.http_method {
            TokenMethod::Post => client.post(url).body(token_body(&form, TokenBody::of(oauth))?),
            TokenMethod::Get => client.get(url),
        }
        .header(http::header::AUTHORIZATION, format!("Basic {basic}"))
        .header(http::header::ACCEPT, "application/json");
        if oauth.http_method == TokenMethod::Post && !has_header(oauth, "content-type") {
            req = req.header(http::header::CONTENT_TYPE, "application/x-www-form-urlencoded");
        }
        for (k, v) in param_values("header_params", &oauth.header_params, secrets) {
            // A GET has no body to describe.
            if oauth.http_method == TokenMethod::Get && TokenBody::values_of(k).is_some() {
                continue;
            }
            req = req.header(k, crate::deliver::field_value(v));
        }
        let resp =
            req.send().await.map_err(|e| TokenError::Request { class: error_class(&e), detail: describe(&e) })?;
        in_use.iter_mut().for_each(|u| u.answered(resp.version()));
        let status = resp.status().as_u16();
        let body = crate::deliver::read_capped(resp, MAX_TOKEN_RESPONSE)
            .await
            .map_err(|e| TokenError::Request { class: error_class(&e), detail: describe(&e) })?;
        if !(200..300).contains(&status) {
            // Kept and shown as the hook's connection error: without the credentials an
            // endpoint that echoes its request would show (the client secret as sent, or
            // encoded in Basic).
            let mut values = secrets.all_values();
            values.extend([basic.as_str(), encoded_secret.as_str()]);
            let body = hookbridge_core::secret::redact(&excerpt(&body), &values);
            return Err(TokenError::Rejected { status, body: excerpt(&body) });
        }
        let parsed: TokenResponse = serde_json::from_str(&body)
            .map_err(|_| TokenError::Rejected { status, body: "response has no access_token".to_owned() })?;
        // Sent as `Authorization: Bearer <token>`: one that cannot be a header value
        // (a line break, a control character) is the token endpoint's fault, not the
        // receiver's. Left to the request, it failed as if the receiver could not be
        // reached, and counted toward opening the receiver's circuit.
        if http::HeaderValue::from_str(&parsed.access_token).is_err() {
            return Err(TokenError::Rejected {
                status,
                body: "access_token holds characters a header cannot carry".to_owned(),
            });
        }
        let lifetime = parsed
            .expires_in
            .and_then(|e| e.seconds())
            .map_or(DEFAULT_TOKEN_LIFETIME, Duration::from_secs)
            .min(MAX_TOKEN_LIFETIME);
        Ok((Secret::new(parsed.access_token), lifetime))
    }
}

/// The client's Basic credentials for its token endpoint, and its secret as encoded in them.
/// RFC 6749 (2.3.1) form-encodes the client id and secret before joining them: a secret
/// holding `%`, `+` or `:` was sent as it was, and an identity provider that decodes, as
/// the RFC asks, read another secret and refused the client. (Go's and Rust's `oauth2`
/// clients encode too.) Unreserved characters are unchanged, so most secrets are sent as
/// before.
fn client_basic(client_id: &str, secret: &str) -> (String, String) {
    let encode = |s: &str| url::form_urlencoded::byte_serialize(s.as_bytes()).collect::<String>();
    let encoded_secret = encode(secret);
    (STANDARD.encode(format!("{}:{encoded_secret}", encode(client_id))), encoded_secret)
}

/// The `Authorization` (or custom) header for the non-OAuth auth types.
pub(crate) fn static_auth_header(auth: &AuthConfig, secrets: &HookSecrets) -> Option<(String, String)> {
    let secret = secrets.auth.as_ref().map(Secret::expose).unwrap_or_default();
    match auth {
        AuthConfig::None | AuthConfig::OauthClientCredentials(_) => None,
        AuthConfig::Basic { username } => {
            Some(("authorization".to_owned(), format!("Basic {}", STANDARD.encode(format!("{username}:{secret}")))))
        }
        AuthConfig::ApiKey { .. } => {
            Some(("authorization".to_owned(), format!("Bearer {}", crate::deliver::field_value(secret))))
        }
        AuthConfig::Header { name } => Some((name.clone(), crate::deliver::field_value(secret).to_owned())),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)] // Tests fail loudly on purpose.

    use super::*;

    /// A client allowed to reach loopback, and client credentials for `token_url`.
    fn client_credentials(token_url: &str) -> (Outbound, OAuthConfig, HookSecrets) {
        let outbound = Outbound::new(crate::OutboundSettings {
            timeout: Duration::from_secs(10),
            network: hookbridge_core::hook::NetworkPolicy::local(),
        })
        .unwrap();
        let oauth = OAuthConfig {
            newer: Default::default(),
            token_url: token_url.to_owned(),
            client_id: "c".into(),
            http_method: TokenMethod::Post,
            header_params: vec![],
            query_params: vec![],
            body_params: vec![],
        };
        let secrets = HookSecrets {
            signing: hookbridge_core::secret::SigningSecret::generate(),
            retiring: vec![],
            auth: Some(Secret::new("client-secret")),
            params: Default::default(),
            headers: Default::default(),
        };
        (outbound, oauth, secrets)
    }

    /// The client id and secret are form-encoded before they are joined (RFC 6749, 2.3.1).
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_client_credentials_are_form_encoded_in_basic() {
        let idp = hookbridge_testkit::Receiver::start().await;
        idp.always(hookbridge_testkit::Reply::body(200, r#"{"access_token": "t", "expires_in": 3600}"#));
        let (outbound, mut oauth, mut secrets) = client_credentials(&idp.url("/token"));
        oauth.client_id = "my client".into();
        secrets.auth = Some(Secret::new("p@ss:w+rd%é"));
        outbound.oauth_token(HookId::generate(), &oauth, &secrets, TokenWanted::Cached).await.unwrap();
        let sent = idp.received()[0].header("authorization").unwrap().to_owned();
        let decoded = String::from_utf8(STANDARD.decode(sent.strip_prefix("Basic ").unwrap()).unwrap()).unwrap();
        assert_eq!(decoded, "my+client:p%40ss%3Aw%2Brd%25%C3%A9");
        let plain = (STANDARD.encode("c:plain-Secret_1.0*"), client_basic("c", "plain-Secret_1.0*").0);
        assert_eq!(plain.0, plain.1, "unreserved characters are sent as they are");
    }

    fn keys(cache: &TokenCache) -> Vec<u64> {
        let mut k: Vec<u64> = cache.slots.lock().unwrap().keys().copied().collect();
        k.sort_unstable();
        k
    }

    /// HYPR's example token request: `Content-Type: application/json` and `Content-Encoding:
    /// gzip` among the header parameters, `grant_type` among the query's. The body is written
    /// as those headers say (they are sent once, not beside a form's own), and `grant_type`
    /// is sent once: the default gives way to the hook's own, as it does to a body field.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_token_body_is_written_as_its_header_parameters_say() {
        use std::io::Read as _;
        let idp = hookbridge_testkit::Receiver::start().await;
        idp.always(hookbridge_testkit::Reply::body(200, r#"{"access_token": "t", "expires_in": 3600}"#));
        let (outbound, mut oauth, secrets) = client_credentials(&idp.url("/token"));
        let param = |key: &str, value: &str| ParamConfig { key: key.into(), value: Some(value.into()), secret: false };
        oauth.header_params = vec![param("Content-Type", "application/json"), param("Content-Encoding", "gzip")];
        oauth.query_params = vec![param("scope", "api://x/.default"), param("grant_type", "client_credentials")];
        oauth.body_params = vec![param("audience", "events")];
        outbound.oauth_token(HookId::generate(), &oauth, &secrets, TokenWanted::Fresh).await.unwrap();

        let got = &idp.received()[0];
        let one =
            |name: &str| got.headers.get_all(name).iter().map(|v| v.to_str().unwrap().to_owned()).collect::<Vec<_>>();
        assert_eq!(one("content-type"), ["application/json"]);
        assert_eq!(one("content-encoding"), ["gzip"]);
        assert_eq!(got.uri.query(), Some("scope=api%3A%2F%2Fx%2F.default&grant_type=client_credentials"));
        let mut body = String::new();
        flate2::read::GzDecoder::new(&got.body[..]).read_to_string(&mut body).unwrap();
        assert_eq!(
            serde_json::from_str::<serde_json::Value>(&body).unwrap(),
            serde_json::json!({"audience": "events"})
        );

        // With none of them, a form, as before.
        let (outbound, oauth, secrets) = client_credentials(&idp.url("/token"));
        outbound.oauth_token(HookId::generate(), &oauth, &secrets, TokenWanted::Fresh).await.unwrap();
        let got = &idp.received()[1];
        let types: Vec<_> = got.headers.get_all("content-type").iter().collect();
        assert_eq!(types, ["application/x-www-form-urlencoded"]);
        assert_eq!(&got.body[..], b"grant_type=client_credentials");
    }

    /// A token URL stored as `http` is not fetched once the deployment allows only `https`
    /// (the client secret would cross the network in the clear); nothing is sent.
    #[tokio::test]
    async fn a_stored_http_token_url_is_refused_where_http_is_not_allowed() {
        let (_, oauth, secrets) = client_credentials("http://idp.example/token");
        let outbound = Outbound::new(crate::OutboundSettings::default()).unwrap();
        let err = outbound.oauth_token(HookId::generate(), &oauth, &secrets, TokenWanted::Cached).await.unwrap_err();
        assert!(
            matches!(&err, TokenError::Request { class: ErrorClass::SsrfBlocked, detail } if detail.contains("plain http")),
            "{err:?}"
        );
        assert_eq!(outbound.tokens.fetches(), 1, "the refusal is the fetch's outcome");
    }

    /// Many deliveries refused the same token at once (a revoked token), or a receiver
    /// refusing every token: each asks for any token but the refused one, and only the
    /// first fetches; the others are given what it fetched. Every 401 fetched a new token,
    /// one token request per delivery, each waiting behind the last.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn deliveries_refused_the_same_token_share_one_new_one() {
        let idp = hookbridge_testkit::Receiver::start().await;
        idp.script((1..=10).map(|n| {
            hookbridge_testkit::Reply::body(200, format!(r#"{{"access_token": "t{n}", "expires_in": 3600}}"#))
        }));
        let (outbound, oauth, secrets) = client_credentials(&idp.url("/token"));
        let hook = HookId::generate();
        let first = outbound.oauth_token(hook, &oauth, &secrets, TokenWanted::Cached).await.unwrap();
        assert_eq!(first.expose(), "t1");
        let again = || outbound.oauth_token(hook, &oauth, &secrets, TokenWanted::Not(&first));
        let (a, b, c, d, e) = tokio::join!(again(), again(), again(), again(), again());
        for t in [a, b, c, d, e] {
            assert_eq!(t.unwrap().expose(), "t2");
        }
        assert_eq!(outbound.tokens.fetches(), 2, "one fetch for the five refused");
        let fresh = outbound.oauth_token(hook, &oauth, &secrets, TokenWanted::Fresh).await.unwrap();
        assert_eq!((fresh.expose(), outbound.tokens.fetches()), ("t3", 3));
    }

    /// A failed fetch is remembered for deliveries (they fail at once with its error), but
    /// the verifier's check (`Fresh`) asks the endpoint again: it answered with that
    /// failure for an endpoint put right since, for ten seconds after each check.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_fresh_token_is_asked_for_even_after_a_remembered_failure() {
        let idp = hookbridge_testkit::Receiver::start().await;
        idp.script([hookbridge_testkit::Reply::body(500, "down")]);
        idp.always(hookbridge_testkit::Reply::body(200, r#"{"access_token": "t", "expires_in": 3600}"#));
        let (outbound, oauth, secrets) = client_credentials(&idp.url("/token"));
        let hook = HookId::generate();
        assert!(outbound.oauth_token(hook, &oauth, &secrets, TokenWanted::Cached).await.is_err());
        assert!(outbound.oauth_token(hook, &oauth, &secrets, TokenWanted::Cached).await.is_err(), "remembered");
        assert_eq!(outbound.tokens.fetches(), 1);
        let fresh = outbound.oauth_token(hook, &oauth, &secrets, TokenWanted::Fresh).await.unwrap();
        assert_eq!((fresh.expose(), outbound.tokens.fetches()), ("t", 2));
    }

    /// The verifier's check (`Fresh`) failing does not take the deliveries' live token
    /// from them: under `hookbridge serve` the worker and the verifier share one cache, and
    /// for ten seconds after a check that met a blip every delivery failed `auth`.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_failed_check_leaves_the_live_token_to_the_deliveries() {
        let idp = hookbridge_testkit::Receiver::start().await;
        idp.script([
            hookbridge_testkit::Reply::body(200, r#"{"access_token": "t1", "expires_in": 3600}"#),
            hookbridge_testkit::Reply::body(503, "blip"),
        ]);
        idp.always(hookbridge_testkit::Reply::body(200, r#"{"access_token": "t2", "expires_in": 3600}"#));
        let (outbound, oauth, secrets) = client_credentials(&idp.url("/token"));
        let hook = HookId::generate();
        assert_eq!(outbound.oauth_token(hook, &oauth, &secrets, TokenWanted::Cached).await.unwrap().expose(), "t1");
        assert!(outbound.oauth_token(hook, &oauth, &secrets, TokenWanted::Fresh).await.is_err());
        let after = outbound.oauth_token(hook, &oauth, &secrets, TokenWanted::Cached).await;
        assert_eq!(after.map(|t| t.expose().to_owned()).ok().as_deref(), Some("t1"));
        assert_eq!(outbound.tokens.fetches(), 2, "the live token was given, not fetched again");
    }

    /// A token endpoint that refuses by echoing the request: its answer, kept as the hook's
    /// connection error, shows neither the client secret nor its Basic form.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_refusal_echoing_the_request_keeps_no_credential() {
        let (url, idp) = crate::deliver::tests::echoes(401).await;
        let (outbound, oauth, secrets) = client_credentials(&url);
        let err = outbound.oauth_token(HookId::generate(), &oauth, &secrets, TokenWanted::Cached).await.unwrap_err();
        let TokenError::Rejected { status: 401, body } = &err else { panic!("{err:?}") };
        assert!(body.contains("authorization: Basic [redacted]"), "the request was echoed: {body}");
        assert!(!body.contains("client-secret") && !body.contains(&STANDARD.encode("c:client-secret")), "{body}");
        idp.abort();
    }

    /// A token endpoint answering with a token no header can carry (a line break in it):
    /// the fetch is refused as the endpoint's answer (`auth`), never sent to the receiver,
    /// whose circuit it counted toward as a connection failure.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_token_no_header_can_carry_is_the_token_endpoints_fault() {
        let idp = hookbridge_testkit::Receiver::start().await;
        idp.always(hookbridge_testkit::Reply::body(
            200,
            r#"{"access_token": "abc\r\nX-Injected: 1", "expires_in": 60}"#,
        ));
        let (outbound, oauth, secrets) = client_credentials(&idp.url("/token"));
        let err = outbound.oauth_token(HookId::generate(), &oauth, &secrets, TokenWanted::Cached).await.unwrap_err();
        assert!(matches!(&err, TokenError::Rejected { status: 200, body } if body.contains("header")), "{err:?}");
        assert!(!err.to_string().contains("X-Injected"), "the token is not repeated: {err}");
    }

    /// `expires_in` written as a float (`3600.0`) is a lifetime, as the docs say a number
    /// is; the whole answer was refused ("no access_token") and every delivery failed.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_fractional_lifetime_is_a_lifetime() {
        let idp = hookbridge_testkit::Receiver::start().await;
        idp.always(hookbridge_testkit::Reply::body(200, r#"{"access_token": "t", "expires_in": 3600.0}"#));
        let (outbound, oauth, secrets) = client_credentials(&idp.url("/token"));
        let hook = HookId::generate();
        for _ in 0..2 {
            let token = outbound.oauth_token(hook, &oauth, &secrets, TokenWanted::Cached).await.unwrap();
            assert_eq!(token.expose(), "t");
        }
        assert_eq!(outbound.tokens.fetches(), 1, "cached for its lifetime");
        assert_eq!(ExpiresIn::Text("60.5".into()).seconds(), Some(60));
        assert_eq!(ExpiresIn::Fractional(-1.0).seconds(), None);
    }

    /// Slots of hooks that stopped sending (deleted, or their credentials changed) do not
    /// pile up: a new key clears those whose token or failure is past, and keeps the rest.
    #[tokio::test]
    async fn a_new_key_clears_the_slots_of_no_more_use() {
        let cache = TokenCache::default();
        let token = |renew_at| Cached::Token { value: Secret::new("t"), renew_at, renewed_after_401: None };
        let failed = |until| Cached::Failed { error: TokenError::Rejected { status: 500, body: String::new() }, until };
        let hour = Duration::from_secs(3600);
        *cache.slot(1).lock().await = Some(token(Instant::now() + hour));
        *cache.slot(2).lock().await = Some(token(Instant::now() + hour));
        *cache.slot(3).lock().await = Some(failed(Instant::now() + FAILURE_MEMORY));
        let held = cache.slot(4); // a fetch in progress: nothing cached yet
        drop(cache.slot(5)); // a fetch given up before it cached anything
        assert_eq!(keys(&cache), [1, 2, 3, 4, 5], "a live slot was cleared");

        *cache.slot(1).lock().await = Some(token(Instant::now())); // due for renewal
        drop(cache.slot(6));
        assert_eq!(keys(&cache), [2, 3, 4, 6], "the expired token or the empty slot was kept");

        *cache.slot(3).lock().await = Some(failed(Instant::now()));
        drop(held);
        drop(cache.slot(7));
        assert_eq!(keys(&cache), [2, 7], "a failure past its memory or an empty slot was kept");
    }
}
