//! An OpenID Connect issuer's signing keys: found through its discovery document (or a
//! configured JWKS URL), fetched through the same guarded client as deliveries, cached, and
//! fetched again when a token names a key not seen yet (a rotation) — at most once every
//! [`REFRESH_AT_MOST_EVERY`], so a stream of tokens with made-up key ids cannot make the
//! API hammer the issuer.

use std::collections::HashMap;
use std::time::Duration;

use hookbridge_outbound::Outbound;
use jsonwebtoken::jwk::{Jwk, KeyAlgorithm, KeyOperations, PublicKeyUse};
use jsonwebtoken::{Algorithm, DecodingKey};
use tokio::sync::{Mutex, RwLock};
use tokio::time::Instant;

/// The shortest time between two fetches of the keys.
pub const REFRESH_AT_MOST_EVERY: Duration = Duration::from_secs(10);
/// Keys are fetched again this long after the last fetch even if every token's key is
/// known, so a key the issuer withdrew stops being accepted.
pub const KEYS_KEPT_FOR: Duration = Duration::from_secs(60 * 60);

#[derive(Default)]
struct Cache {
    /// Keys by `kid`: more than one when the set gives a `kid` to several (a signing key
    /// and an encryption key, which RFC 7517 allows), the one fit for a token then chosen.
    keys: HashMap<String, Vec<Jwk>>,
    /// Keys without a `kid`, tried in turn.
    unnamed: Vec<Jwk>,
    jwks_url: Option<String>,
    fetched_at: Option<Instant>,
}

/// One issuer's keys.
pub(super) struct Issuer {
    pub(super) issuer: String,
    pub(super) audience: Option<String>,
    jwks_url: Option<String>,
    outbound: Outbound,
    cache: RwLock<Cache>,
    /// When the keys were last fetched or tried, and why that try failed, if it did; held
    /// while they are, so only one fetch runs.
    fetching: Mutex<Option<(Instant, Option<String>)>>,
    /// The sign-in endpoints as last read from the discovery document, or why they could
    /// not be, and until when that stands; held while they are read, so only one read runs.
    login: Mutex<Option<(Instant, LoginRead)>>,
}

/// A read of the sign-in endpoints (authorization, token), or why it failed.
type LoginRead = Result<(String, String), String>;

impl std::fmt::Debug for Issuer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Issuer").field("issuer", &self.issuer).finish_non_exhaustive()
    }
}

/// Why no key could be had for a token.
#[derive(Debug, thiserror::Error)]
pub(super) enum KeyMissing {
    /// The issuer does not (or no longer) publish it.
    #[error("no key {0:?} in the issuer's JWKS")]
    Unknown(String),
    /// The issuer's documents could not be read.
    #[error(transparent)]
    Fetch(#[from] hookbridge_outbound::FetchError),
    /// They were read but are not what OpenID Connect says.
    #[error("{0}")]
    Malformed(String),
    /// A failure to read them a moment ago, which stands for a while.
    #[error("{0}")]
    Remembered(String),
    /// The key a token names could not be looked for: the issuer's keys could not be read
    /// (now, or a moment ago). Not the token's fault.
    #[error("the issuer's keys cannot be read now: {0}")]
    Unreachable(String),
}

impl Issuer {
    pub(super) fn new(issuer: String, jwks_url: Option<String>, audience: Option<String>, outbound: Outbound) -> Self {
        Self {
            issuer,
            audience,
            jwks_url,
            outbound,
            cache: RwLock::default(),
            fetching: Mutex::new(None),
            login: Mutex::new(None),
        }
    }

    /// The key for `kid` (or the issuer's only keys, when the token names none), fit to
    /// verify a token signed with `alg`.
    pub(super) async fn key(&self, kid: Option<&str>, alg: Algorithm) -> Result<Vec<DecodingKey>, KeyMissing> {
        let known = {
            let cache = self.cache.read().await;
            let fresh = cache.fetched_at.is_some_and(|t| t.elapsed() < KEYS_KEPT_FOR);
            match lookup(&cache, kid, alg) {
                Some(found) if fresh => return found,
                found => found.is_some(),
            }
        };
        {
            // One fetch at a time; the cache stays readable meanwhile, so tokens under known
            // keys are not held up by an issuer that is slow to answer. A key known from
            // the last fetch, due to be read again, is used while another request reads it.
            let mut last_try = match self.fetching.try_lock() {
                Ok(held) => held,
                Err(_) if known => return self.cached(kid, alg).await,
                Err(_) => self.fetching.lock().await,
            };
            // Another request may have fetched (or tried to) while this one waited; a
            // failed try counts too, or an issuer that is down would be asked on every
            // token.
            let recent = last_try.as_ref().is_some_and(|(t, _)| t.elapsed() < REFRESH_AT_MOST_EVERY);
            if !recent {
                // Marked before the fetch: one cut off half way (its request dropped) counts
                // as a try too, or each dropped request would let the next fetch at once.
                *last_try = Some((Instant::now(), Some("a fetch of the issuer's keys did not finish".to_owned())));
                let jwks_url = self.cache.read().await.jwks_url.clone();
                let fetched = self.fetch(jwks_url).await;
                *last_try = Some((Instant::now(), fetched.as_ref().err().map(ToString::to_string)));
                match fetched {
                    Ok(fetched) => *self.cache.write().await = fetched,
                    // An issuer that cannot be reached does not make its known keys bad:
                    // they stay in use until a fetch succeeds (and drops a withdrawn one).
                    Err(e) if known => {
                        tracing::warn!(issuer = %self.issuer, error = %e, "the issuer's keys could not be read again; the known ones stay in use");
                    }
                    Err(e) => return Err(KeyMissing::Unreachable(e.to_string())),
                }
            } else if let Some((_, Some(failed))) = last_try.as_ref()
                && !known
            {
                // The last try failed a moment ago: whether the key exists cannot be told.
                return Err(KeyMissing::Unreachable(failed.clone()));
            }
        }
        self.cached(kid, alg).await
    }

    /// The cached keys for `kid`, as they are.
    async fn cached(&self, kid: Option<&str>, alg: Algorithm) -> Result<Vec<DecodingKey>, KeyMissing> {
        let cache = self.cache.read().await;
        lookup(&cache, kid, alg).unwrap_or_else(|| Err(KeyMissing::Unknown(kid.unwrap_or_default().to_owned())))
    }

    /// The issuer's authorization and token endpoints, from its discovery document, read
    /// once for [`KEYS_KEPT_FOR`] (a failure stands for [`REFRESH_AT_MOST_EVERY`]): anyone
    /// can open the console's sign-in, and each read was a request to the issuer, so a
    /// stream of them made the API hammer it.
    pub(super) async fn login_endpoints(&self) -> Result<(String, String), KeyMissing> {
        let mut login = self.login.lock().await;
        if let Some((until, known)) = login.as_ref()
            && Instant::now() < *until
        {
            return known.clone().map_err(KeyMissing::Remembered);
        }
        let read = self.read_login_endpoints().await;
        let kept_for = if read.is_ok() { KEYS_KEPT_FOR } else { REFRESH_AT_MOST_EVERY };
        *login = Some((Instant::now() + kept_for, read.as_ref().map_err(ToString::to_string).cloned()));
        read
    }

    async fn read_login_endpoints(&self) -> Result<(String, String), KeyMissing> {
        let doc = self.outbound.get_json(&format!("{}/.well-known/openid-configuration", self.issuer)).await?;
        let field = |name: &str| {
            doc[name]
                .as_str()
                .map(str::to_owned)
                .ok_or_else(|| KeyMissing::Malformed(format!("the discovery document has no {name}")))
        };
        Ok((field("authorization_endpoint")?, field("token_endpoint")?))
    }

    /// Exchanges an authorization code at the token endpoint; the access token.
    pub(super) async fn exchange(&self, token_endpoint: &str, form: &[(&str, &str)]) -> Result<String, KeyMissing> {
        let doc = self.outbound.post_form_json(token_endpoint, form).await?;
        doc["access_token"]
            .as_str()
            .map(str::to_owned)
            .ok_or_else(|| KeyMissing::Malformed("the token endpoint returned no access_token".to_owned()))
    }

    /// The issuer's keys, read afresh (its discovery document too, the first time, when no
    /// JWKS URL is configured).
    async fn fetch(&self, known_url: Option<String>) -> Result<Cache, KeyMissing> {
        let url = match (&self.jwks_url, known_url) {
            (Some(u), _) => u.clone(),
            (None, Some(u)) => u,
            (None, None) => {
                let doc = self.outbound.get_json(&format!("{}/.well-known/openid-configuration", self.issuer)).await?;
                doc["jwks_uri"]
                    .as_str()
                    .ok_or_else(|| KeyMissing::Malformed("the discovery document has no jwks_uri".to_owned()))?
                    .to_owned()
            }
        };
        let doc = self.outbound.get_json(&url).await?;
        let Some(listed) = doc["keys"].as_array() else {
            return Err(KeyMissing::Malformed("the JWKS has no list of keys".to_owned()));
        };
        // Key by key: a set parsed whole failed on one key of a kind this library does not
        // read (an Ed448 or X25519 key, an encryption key of another type), and then no
        // token of the issuer's was accepted, though it signs with another of its keys.
        let mut usable = Vec::with_capacity(listed.len());
        for key in listed {
            match serde_json::from_value::<Jwk>(key.clone()) {
                Ok(k) => usable.push(k),
                Err(e) => tracing::warn!(issuer = %self.issuer, kid = ?key["kid"].as_str(), error = %e,
                    "a key in the issuer's JWKS is of a kind that cannot be read; passed over"),
            }
        }
        let mut cache = Cache { jwks_url: Some(url), ..Cache::default() };
        for k in usable {
            match k.common.key_id.clone() {
                Some(kid) => cache.keys.entry(kid).or_default().push(k),
                None => cache.unnamed.push(k),
            }
        }
        cache.fetched_at = Some(Instant::now());
        tracing::info!(issuer = %self.issuer, keys = cache.keys.values().map(Vec::len).sum::<usize>() + cache.unnamed.len(), "issuer keys fetched");
        Ok(cache)
    }
}

/// `jwk` as a key to verify a token signed with `alg`, if the issuer published it for that
/// (RFC 7517 §4.2-4.4): not for encryption (`use`), for verifying among its `key_ops`, and
/// for `alg` when it names one. Unchecked, an RS256 key also took PS256 tokens, and a key
/// the issuer set aside for encrypting verified tokens.
fn decoding(jwk: &Jwk, alg: Algorithm) -> Result<DecodingKey, KeyMissing> {
    let unfit = |why: String| KeyMissing::Malformed(format!("the issuer's key {:?} {why}", jwk.common.key_id));
    match &jwk.common.public_key_use {
        None | Some(PublicKeyUse::Signature) => {}
        Some(other) => return Err(unfit(format!("is for {other:?}, not for signatures"))),
    }
    if let Some(ops) = &jwk.common.key_operations
        && !ops.contains(&KeyOperations::Verify)
    {
        return Err(unfit("is not for verifying (key_ops)".to_owned()));
    }
    if let Some(for_alg) = jwk.common.key_algorithm
        && for_alg != key_algorithm(alg)
    {
        return Err(unfit(format!("is for {for_alg}, not for the token's {alg:?}")));
    }
    DecodingKey::from_jwk(jwk).map_err(|e| KeyMissing::Malformed(format!("a JWKS key cannot be used: {e}")))
}

/// How a key set names `alg`.
fn key_algorithm(alg: Algorithm) -> KeyAlgorithm {
    match alg {
        Algorithm::RS256 => KeyAlgorithm::RS256,
        Algorithm::RS384 => KeyAlgorithm::RS384,
        Algorithm::RS512 => KeyAlgorithm::RS512,
        Algorithm::PS256 => KeyAlgorithm::PS256,
        Algorithm::PS384 => KeyAlgorithm::PS384,
        Algorithm::PS512 => KeyAlgorithm::PS512,
        Algorithm::ES256 => KeyAlgorithm::ES256,
        Algorithm::ES384 => KeyAlgorithm::ES384,
        Algorithm::EdDSA => KeyAlgorithm::EdDSA,
        Algorithm::HS256 => KeyAlgorithm::HS256,
        Algorithm::HS384 => KeyAlgorithm::HS384,
        Algorithm::HS512 => KeyAlgorithm::HS512,
    }
}

/// The keys the cache holds for `kid`, fit for `alg`; `None` when it holds none (fetch and
/// look again).
fn lookup(cache: &Cache, kid: Option<&str>, alg: Algorithm) -> Option<Result<Vec<DecodingKey>, KeyMissing>> {
    match kid {
        Some(k) => cache.keys.get(k).map(|named| {
            // Every fit key (two of different kinds may share a kid, each tried); when none
            // is, why the first is not.
            let mut why = None;
            let fit: Vec<DecodingKey> =
                named.iter().filter_map(|jwk| decoding(jwk, alg).map_err(|e| why.get_or_insert(e)).ok()).collect();
            match why {
                Some(why) if fit.is_empty() => Err(why),
                _ if fit.is_empty() => Err(KeyMissing::Unknown(k.to_owned())),
                _ => Ok(fit),
            }
        }),
        None if cache.unnamed.is_empty() && cache.keys.is_empty() => None,
        // Keys this library cannot use are passed over, so one odd key in the set does
        // not stop every token naming no key.
        None => {
            let usable: Vec<DecodingKey> = cache
                .unnamed
                .iter()
                .chain(cache.keys.values().flatten())
                .filter_map(|k| decoding(k, alg).ok())
                .collect();
            Some(if usable.is_empty() {
                Err(KeyMissing::Malformed(format!("no key in the issuer's JWKS can verify a {alg:?} token")))
            } else {
                Ok(usable)
            })
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)] // Tests fail loudly on purpose.

    use hookbridge_core::hook::NetworkPolicy;
    use hookbridge_outbound::OutboundSettings;
    use hookbridge_testkit::oidc::IdentityProvider;

    use super::*;

    #[tokio::test]
    async fn known_keys_stay_in_use_while_the_issuer_cannot_be_read_again() {
        let idp = IdentityProvider::start().await;
        let outbound =
            Outbound::new(OutboundSettings { timeout: Duration::from_secs(5), network: NetworkPolicy::local() })
                .unwrap();
        let issuer = Issuer::new(idp.issuer().to_owned(), None, None, outbound);
        assert!(issuer.key(Some("rsa-1"), Algorithm::RS256).await.is_ok());
        let fetched = idp.jwks_fetches();

        // As after KEYS_KEPT_FOR: the keys are due to be read again, and the issuer fails.
        issuer.cache.write().await.fetched_at = None;
        *issuer.fetching.lock().await = None;
        idp.fail_keys(true);
        assert!(
            issuer.key(Some("rsa-1"), Algorithm::RS256).await.is_ok(),
            "a known key is not refused for the issuer's outage"
        );
        assert_eq!(idp.jwks_fetches(), fetched + 1, "it was read again");
        // An unknown one cannot be told from a new key the issuer has: not refused as bad.
        assert!(
            matches!(issuer.key(Some("rsa-9"), Algorithm::RS256).await, Err(KeyMissing::Unreachable(_))),
            "not known, not told"
        );

        // Back, and the key withdrawn: the next read drops it.
        idp.fail_keys(false);
        idp.withdraw_key("rsa-1");
        *issuer.fetching.lock().await = None;
        assert!(matches!(issuer.key(Some("rsa-1"), Algorithm::RS256).await, Err(KeyMissing::Unknown(_))));
    }

    /// The console's sign-in endpoints are read from the discovery document once, not on
    /// every visit to the sign-in (which anyone can make): twenty sign-ins started, one read.
    #[tokio::test]
    async fn the_sign_in_endpoints_are_read_once_not_on_every_sign_in() {
        let idp = IdentityProvider::start().await;
        let outbound =
            Outbound::new(OutboundSettings { timeout: Duration::from_secs(5), network: NetworkPolicy::local() })
                .unwrap();
        let issuer = Issuer::new(idp.issuer().to_owned(), Some(format!("{}/jwks", idp.issuer())), None, outbound);
        let reads = futures::future::join_all((0..20).map(|_| issuer.login_endpoints())).await;
        for read in reads {
            assert_eq!(read.unwrap(), (format!("{}/authorize", idp.issuer()), format!("{}/token", idp.issuer())));
        }
        assert_eq!(idp.discovery_fetches(), 1);
    }
}
