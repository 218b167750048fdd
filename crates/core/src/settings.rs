//! Deployment settings, read from environment variables by a lookup function the caller
//! passes in (so this stays pure and testable). Every variable is documented once, here
//! and in the README's configuration table; a bad value fails at start-up, naming the
//! variable.

use std::str::FromStr;
use std::time::Duration;

use crate::health::DisableRule;
use crate::hook::{Network, NetworkPolicy};
use crate::retry::{RetrySchedule, parse_duration};
use crate::secret::Secret;
use crate::topology::Topology;

/// `HOOKBRIDGE_JWT_SECRET`: the HS256 key API tokens are signed with (at least 32 bytes).
pub const JWT_SECRET: &str = "HOOKBRIDGE_JWT_SECRET";
/// `HOOKBRIDGE_JWT_SECRET_NAME`: the Secrets Manager secret holding that key, read by the
/// API at cold start (and again every few minutes) instead of from its environment.
pub const JWT_SECRET_NAME: &str = "HOOKBRIDGE_JWT_SECRET_NAME";
/// `HOOKBRIDGE_JWT_ISSUER`: the OpenID Connect issuer whose RS256/ES256/EdDSA tokens the API
/// accepts (the token's `iss`; its discovery document names the JWKS).
pub const JWT_ISSUER: &str = "HOOKBRIDGE_JWT_ISSUER";
/// `HOOKBRIDGE_JWKS_URL`: the issuer's JWKS, when it is not to be discovered.
pub const JWKS_URL: &str = "HOOKBRIDGE_JWKS_URL";
/// `HOOKBRIDGE_JWT_AUDIENCE`: the `aud` an issuer's tokens must carry (required with
/// [`JWT_ISSUER`]).
pub const JWT_AUDIENCE: &str = "HOOKBRIDGE_JWT_AUDIENCE";
/// `HOOKBRIDGE_TENANT_CLAIM`: the claim naming the caller's tenant (default `tenant`).
pub const TENANT_CLAIM: &str = "HOOKBRIDGE_TENANT_CLAIM";
/// `HOOKBRIDGE_CONSOLE_CLIENT_ID`: the OpenID Connect client the console signs people in
/// with (authorization code with PKCE), when an issuer is configured.
pub const CONSOLE_CLIENT_ID: &str = "HOOKBRIDGE_CONSOLE_CLIENT_ID";
/// `HOOKBRIDGE_CONSOLE_SCOPES`: the scopes the console asks the identity provider for,
/// space-separated (default `openid`). Providers such as Auth0, Okta and Cognito put in
/// the access token only the scopes asked for, so a console whose users need
/// `hooks:write` names it here.
pub const CONSOLE_SCOPES: &str = "HOOKBRIDGE_CONSOLE_SCOPES";
/// `HOOKBRIDGE_PUBLIC_URL`: the API's public base URL (for portal links and the console's
/// sign-in redirect), when the request's own `Host` is not it (behind a proxy).
pub const PUBLIC_URL: &str = "HOOKBRIDGE_PUBLIC_URL";

/// `HOOKBRIDGE_PUBLISH_TO`: where `POST /v1/events` puts events — `queue` (default: straight
/// onto the ingest queue) or `bus` (through the event bus, where the deployment's own rules
/// see them too, for one more bus event each).
pub const PUBLISH_TO: &str = "HOOKBRIDGE_PUBLISH_TO";

/// Where events published through the API go.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum PublishTo {
    /// Straight onto the ingest queue, as the bus's rule would put them; events larger
    /// than [`crate::envelope::DIRECT_MAX_BYTES`] still go through the bus.
    #[default]
    Queue,
    /// Through the bus.
    Bus,
}

/// The shortest HS256 key accepted: RFC 7518 asks for a key at least as long as the hash.
pub const MIN_HS256_KEY_BYTES: usize = 32;

/// The key `make run` signs its tokens with when none is set: on a loopback address only;
/// `hookbridge serve` on any other address refuses to start with it.
pub const LOCAL_DEV_SECRET: &str = "hookbridge-local-development-key-not-for-production";
/// `HOOKBRIDGE_PREFIX`: the prefix of every resource name (default `hookbridge`).
pub const PREFIX: &str = "HOOKBRIDGE_PREFIX";
/// `HOOKBRIDGE_ACCOUNT`: the `account` written into envelopes that lack one.
pub const ACCOUNT: &str = "HOOKBRIDGE_ACCOUNT";
/// `AWS_REGION`: the `region` written into envelopes that lack one.
pub const REGION: &str = "AWS_REGION";
/// `HOOKBRIDGE_ALLOWED_NETWORKS`: comma-separated CIDRs hooks may reach although private.
pub const ALLOWED_NETWORKS: &str = "HOOKBRIDGE_ALLOWED_NETWORKS";
/// `HOOKBRIDGE_ALLOW_HTTP`: `true` to accept plain-http hook URLs.
pub const ALLOW_HTTP: &str = "HOOKBRIDGE_ALLOW_HTTP";
/// `HOOKBRIDGE_REQUEST_TIMEOUT`: outbound request timeout (default `10s`).
pub const REQUEST_TIMEOUT: &str = "HOOKBRIDGE_REQUEST_TIMEOUT";
/// `HOOKBRIDGE_RETRY_SCHEDULE`: delays between attempts (default `5s,5m,30m,2h,5h,10h,10h`).
pub const RETRY_SCHEDULE: &str = "HOOKBRIDGE_RETRY_SCHEDULE";
/// `HOOKBRIDGE_DISABLE_AFTER`: how long a hook must fail continuously before it is disabled (default `24h`).
pub const DISABLE_AFTER: &str = "HOOKBRIDGE_DISABLE_AFTER";
/// `HOOKBRIDGE_DISABLE_MIN_FAILURES`: and at least this many failed attempts in a row (default `10`).
pub const DISABLE_MIN_FAILURES: &str = "HOOKBRIDGE_DISABLE_MIN_FAILURES";
/// `HOOKBRIDGE_EVENT_RETENTION`: how long envelopes are kept for replay (default `14d`).
pub const EVENT_RETENTION: &str = "HOOKBRIDGE_EVENT_RETENTION";
/// `HOOKBRIDGE_FAST_LANE_PATIENCE`: how long a fast-lane request may wait for an answer
/// before its hook moves to the slow lane (default `2s`).
pub const FAST_LANE_PATIENCE: &str = "HOOKBRIDGE_FAST_LANE_PATIENCE";
/// `HOOKBRIDGE_MAX_HOOKS_PER_TENANT`: the most hooks one tenant may have (default `1000`).
pub const MAX_HOOKS_PER_TENANT: &str = "HOOKBRIDGE_MAX_HOOKS_PER_TENANT";
/// `HOOKBRIDGE_MAX_HOOK_MIB_PER_TENANT`: the most one tenant's hooks may take stored
/// together, in MiB (default `16`).
pub const MAX_HOOK_MIB_PER_TENANT: &str = "HOOKBRIDGE_MAX_HOOK_MIB_PER_TENANT";
/// `HOOKBRIDGE_TENANT_PUBLISH_RATE`: events a second one tenant may publish through the
/// API (default `1000`).
pub const TENANT_PUBLISH_RATE: &str = "HOOKBRIDGE_TENANT_PUBLISH_RATE";
/// `HOOKBRIDGE_TENANT_PUBLISH_BURST`: events a tenant may publish at once above that rate
/// (default `5000`).
pub const TENANT_PUBLISH_BURST: &str = "HOOKBRIDGE_TENANT_PUBLISH_BURST";
/// `HOOKBRIDGE_VISIBILITY_TIMEOUT`: override of every queue's visibility timeout (tests use short ones).
pub const VISIBILITY_TIMEOUT: &str = "HOOKBRIDGE_VISIBILITY_TIMEOUT";

/// A setting that could not be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{variable}: {message}")]
pub struct SettingsError {
    /// The variable.
    pub variable: &'static str,
    /// What is wrong and what would be accepted.
    pub message: String,
}

/// Defaults that differ between the local runner and a cloud deployment.
#[derive(Debug, Clone)]
pub struct Defaults {
    /// Used when no token key or issuer is set; `None` leaves the API without one (the
    /// API then refuses to start, naming the variables; the other stages need none).
    pub jwt_secret: Option<&'static str>,
    /// The outbound policy when neither network variable is set.
    pub network: NetworkPolicy,
}

impl Defaults {
    /// The local runner: [`LOCAL_DEV_SECRET`], plain http and loopback allowed.
    pub fn local() -> Self {
        Self { jwt_secret: Some(LOCAL_DEV_SECRET), network: NetworkPolicy::local() }
    }

    /// A cloud deployment: no token key unless configured, and nothing private reachable.
    pub fn cloud() -> Self {
        Self { jwt_secret: None, network: NetworkPolicy::default() }
    }
}

/// The claim naming the caller's tenant unless [`TENANT_CLAIM`] says otherwise.
pub const DEFAULT_TENANT_CLAIM: &str = "tenant";

/// How the API checks tokens.
#[derive(Debug, Clone)]
pub struct TokenSettings {
    /// The HS256 key, given directly.
    pub hs256: Option<Secret>,
    /// The Secrets Manager secret holding the HS256 key.
    pub hs256_secret_name: Option<String>,
    /// The OpenID Connect issuer.
    pub issuer: Option<String>,
    /// The issuer's JWKS, when not discovered.
    pub jwks_url: Option<String>,
    /// The audience an issuer's tokens must name.
    pub audience: Option<String>,
    /// The claim naming the tenant.
    pub tenant_claim: String,
    /// The HS256 key is the local default, not one the deployment chose.
    pub default_key: bool,
}

impl Default for TokenSettings {
    fn default() -> Self {
        Self {
            hs256: None,
            hs256_secret_name: None,
            issuer: None,
            jwks_url: None,
            audience: None,
            tenant_claim: DEFAULT_TENANT_CLAIM.to_owned(),
            default_key: false,
        }
    }
}

impl TokenSettings {
    /// Whether any way of checking a token is configured.
    pub fn any(&self) -> bool {
        self.hs256.is_some() || self.hs256_secret_name.is_some() || self.issuer.is_some()
    }
}

/// Everything configurable about a deployment.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Names of the resources.
    pub topology: Topology,
    /// How the API checks tokens.
    pub tokens: TokenSettings,
    /// The console's OpenID Connect client, if it signs people in through the issuer.
    pub console_client_id: Option<String>,
    /// The scopes the console asks the identity provider for, space-separated.
    pub console_scopes: String,
    /// The API's public base URL, if set.
    pub public_url: Option<String>,
    /// The allow-list of private networks is the default one (loopback, locally), not one
    /// the deployment chose.
    pub default_network: bool,
    /// `account` for envelopes.
    pub account: String,
    /// `region` for envelopes.
    pub region: String,
    /// Outbound rules.
    pub network: NetworkPolicy,
    /// Outbound request timeout.
    pub request_timeout: Duration,
    /// Delays between attempts.
    pub schedule: RetrySchedule,
    /// The auto-disable rule.
    pub disable_rule: DisableRule,
    /// How long envelopes are kept.
    pub event_retention: Duration,
    /// How long a fast-lane request may wait before its hook moves to the slow lane.
    pub fast_lane_patience: Duration,
    /// Tenant limits.
    pub quotas: Quotas,
    /// Where events published through the API go.
    pub publish_to: PublishTo,
}

/// What one tenant may use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Quotas {
    /// Hooks per tenant.
    pub max_hooks: u32,
    /// Bytes a tenant's hooks may take stored together (their documents, secrets sealed).
    /// Ingest holds all of a tenant's hooks in memory to route its events, so this bounds
    /// what one tenant's configuration costs a batch that carries other tenants' events too.
    pub max_hook_bytes: usize,
    /// Events a second through `POST /v1/events`.
    pub publish_rate: crate::rate::Rate,
    /// Events above the rate a tenant may publish at once.
    pub publish_burst: u32,
}

impl Default for Quotas {
    /// A thousand hooks (far above what any seed product's customers configure) taking
    /// 16 MiB together (16 KiB each on average, where a typical hook takes 1-2 KiB), and a
    /// thousand events a second with a burst of five thousand: generous for any one
    /// tenant, and well inside what one ingest consumer handles, so no tenant can queue
    /// up work that delays the others.
    fn default() -> Self {
        Self {
            max_hooks: 1000,
            max_hook_bytes: 16 * MIB,
            publish_rate: crate::rate::Rate::per_second(1000),
            publish_burst: 5000,
        }
    }
}

const MIB: usize = 1024 * 1024;

/// The most `HOOKBRIDGE_MAX_HOOK_MIB_PER_TENANT` may be, the default: ingest reads up to
/// twice it for each of four tenants at once ([`Quotas::routing_most_bytes`]), 128 MiB,
/// beside the lists it keeps (32 MiB), in a function of 256 MB.
pub const MAX_HOOK_MIB_PER_TENANT_MOST: u32 = 16;

impl Quotas {
    /// The most a tenant's hooks may take when ingest reads them to route its events:
    /// twice the quota. The quota is checked before each write, so two writes at once can
    /// both pass it, and a rotation (which the quota does not count, as a hook's own limit
    /// does not) adds a little; a tenant past this (the quota lowered under it, or many
    /// racing writes) has its events fail and come back rather than take the memory of a
    /// batch that other tenants' events share.
    pub fn routing_most_bytes(&self) -> usize {
        self.max_hook_bytes.saturating_mul(2)
    }
}

fn whole(var: &'static str, text: &str, min: u32) -> Result<u32, SettingsError> {
    text.trim().parse::<u32>().ok().filter(|n| *n >= min).ok_or_else(|| SettingsError {
        variable: var,
        message: format!("{text:?} is not a whole number of at least {min}"),
    })
}

/// The longest request timeout (and fast-lane patience). A delivery's handling (a wait for
/// a place, then the request) must end well within its queue's visibility timeout (180 s),
/// and a verification (a challenge, then a token fetch) within the verify queue's (360 s):
/// a request still running when its message became visible again was received a second
/// time and sent again, its retries then going on in two chains. (On AWS the template holds
/// it to 25 s, to fit one worker invocation.)
pub const MAX_REQUEST_TIMEOUT: Duration = Duration::from_secs(120);

/// The longest an event's envelope may be kept. Longer ones overflowed the time an
/// envelope expires at (a panic in ingest, which stopped it for good) or were quietly
/// replaced by the default; a delivery that outlives its envelope cannot be replayed.
pub const MAX_EVENT_RETENTION: Duration = Duration::from_secs(365 * 86_400);

/// A duration of at most `max`.
fn duration_at_most(var: &'static str, text: &str, max: Duration) -> Result<Duration, SettingsError> {
    let d = duration(var, text)?;
    if d <= max {
        return Ok(d);
    }
    Err(SettingsError { variable: var, message: format!("{text:?} is longer than {}s", max.as_secs()) })
}

/// A duration above zero and of at most `max`: a timeout of `0` (often meant as "none")
/// made every request time out at once.
fn timeout_at_most(var: &'static str, text: &str, max: Duration) -> Result<Duration, SettingsError> {
    let d = duration_at_most(var, text, max)?;
    if d.is_zero() {
        return Err(SettingsError { variable: var, message: format!("{text:?} is no time at all: at least 1ms") });
    }
    Ok(d)
}

/// The longest a delivery's attempts can span under `schedule`: every delay at its most, a
/// receiver's `Retry-After` having doubled it and the spread a fifth more, within what a
/// queue can delay ([`RetrySchedule::delay_after`]). Counting the spread alone, a
/// retention the check allowed was outlasted by a receiver asking for more time.
fn schedule_span(schedule: &RetrySchedule) -> Duration {
    let longest = |d: &Duration| d.saturating_mul(2).mul_f64(1.2).min(crate::retry::MAX_QUEUE_DELAY);
    schedule.delays().iter().map(longest).sum()
}

/// The API's public base URL, without a trailing `/`: portal links and the console's
/// sign-in are made from it, so one without a scheme or host made links that lead nowhere.
fn public_url(text: &str) -> Result<String, SettingsError> {
    let refused = || SettingsError {
        variable: PUBLIC_URL,
        message: format!("{text:?} is not an http(s) URL like https://hooks.example.com"),
    };
    let url = url::Url::parse(text.trim()).map_err(|_| refused())?;
    if !matches!(url.scheme(), "http" | "https") || url.host_str().is_none_or(str::is_empty) {
        return Err(refused());
    }
    Ok(text.trim().trim_end_matches('/').to_owned())
}

/// Whether a (checked) public URL reaches only this machine: `localhost` or a loopback
/// address.
fn names_this_machine(public_url: &str) -> bool {
    match url::Url::parse(public_url).ok().and_then(|u| u.host().map(|h| h.to_owned())) {
        Some(url::Host::Domain(d)) => {
            let d = d.trim_end_matches('.').to_ascii_lowercase();
            d == "localhost" || d.ends_with(".localhost")
        }
        Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
        Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
        None => false,
    }
}

/// Scopes as an authorization request sends them: printable ASCII, one space between.
fn scopes(text: &str) -> Result<String, SettingsError> {
    let words: Vec<&str> = text.split_whitespace().collect();
    if words.iter().all(|w| w.chars().all(|c| c.is_ascii_graphic() && c != '"' && c != '\\')) {
        Ok(words.join(" "))
    } else {
        Err(SettingsError {
            variable: CONSOLE_SCOPES,
            message: format!("{text:?} is not a list of scopes like \"openid hooks:read hooks:write\""),
        })
    }
}

/// The most failed attempts in a row the disable rule may ask for (the template's bound).
pub const MAX_DISABLE_MIN_FAILURES: u32 = 100_000;

fn duration(var: &'static str, text: &str) -> Result<Duration, SettingsError> {
    parse_duration(text).ok_or_else(|| SettingsError {
        variable: var,
        message: format!("{text:?} is not a duration like 500ms, 10s, 5m, 2h or 14d"),
    })
}

impl Settings {
    /// Refuses what is fine on a developer's machine but open to anyone on a network: the
    /// built-in token key (anyone who reads the README can mint a token for any tenant) and
    /// the default loopback allow-list (a hook to `http://127.0.0.1:…` reaches the host).
    /// A server on a loopback address is on a network too when its public URL names
    /// another host: a reverse proxy on the same machine brings the network to it.
    /// `Err` names the variable to set.
    pub fn check_exposure(&self, listen: std::net::SocketAddr) -> Result<(), SettingsError> {
        let served = if !listen.ip().is_loopback() {
            format!("serve on {listen}")
        } else if let Some(url) = self.public_url.as_deref().filter(|u| !names_this_machine(u)) {
            format!("serve as {url} ({PUBLIC_URL})")
        } else {
            return Ok(());
        };
        if self.tokens.default_key {
            return Err(SettingsError {
                variable: JWT_SECRET,
                message: format!(
                    "must be set to {served}: the built-in development key would let anyone mint tokens for any tenant; set it to 32+ random bytes (or set {JWT_ISSUER} and {JWT_AUDIENCE})"
                ),
            });
        }
        if self.default_network {
            return Err(SettingsError {
                variable: ALLOWED_NETWORKS,
                message: format!(
                    "must be set to {served}: the default allows hooks to reach this host's loopback addresses; set it to the private networks hooks may reach (empty for none)"
                ),
            });
        }
        Ok(())
    }

    /// Reads settings through `get` (normally `std::env::var`).
    pub fn from_lookup(get: impl Fn(&str) -> Option<String>, defaults: &Defaults) -> Result<Self, SettingsError> {
        let var = |name: &str| get(name).filter(|v| !v.trim().is_empty());
        // Set, but to nothing: most often a command substitution that failed. Taken as
        // unset, it was the development key, whose text is in this repository.
        if get(JWT_SECRET).is_some_and(|v| v.trim().is_empty()) {
            return Err(SettingsError {
                variable: JWT_SECRET,
                message: "is set but empty: give it a key of at least 32 bytes, or unset it".to_owned(),
            });
        }
        let mut tokens = TokenSettings {
            hs256: var(JWT_SECRET).map(Secret::new),
            hs256_secret_name: var(JWT_SECRET_NAME),
            issuer: var(JWT_ISSUER).map(|i| i.trim().trim_end_matches('/').to_owned()),
            jwks_url: var(JWKS_URL),
            audience: var(JWT_AUDIENCE),
            tenant_claim: var(TENANT_CLAIM).unwrap_or_else(|| DEFAULT_TENANT_CLAIM.to_owned()),
            default_key: false,
        };
        if let Some(k) = &tokens.hs256
            && k.expose().len() < MIN_HS256_KEY_BYTES
        {
            return Err(SettingsError {
                variable: JWT_SECRET,
                message: format!(
                    "is {} bytes; an HS256 key must be at least {MIN_HS256_KEY_BYTES} (e.g. `openssl rand -base64 48`)",
                    k.expose().len()
                ),
            });
        }
        for (variable, value) in [(JWT_ISSUER, &tokens.issuer), (JWKS_URL, &tokens.jwks_url)] {
            if let Some(v) = value
                && url::Url::parse(v).ok().is_none_or(|u| !matches!(u.scheme(), "https" | "http"))
            {
                return Err(SettingsError { variable, message: format!("{v:?} is not an http(s) URL") });
            }
        }
        // Any application the issuer signs tokens for (another client of the same Keycloak
        // realm, Auth0 tenant or Cognito pool) would get in with its own: it was a warning
        // at each start, which a deployment's logs kept to themselves.
        if tokens.issuer.is_some() && tokens.audience.is_none() {
            return Err(SettingsError {
                variable: JWT_AUDIENCE,
                message: format!(
                    "is required with {JWT_ISSUER}: without it, a token the issuer signs for any of its \
                     clients is accepted; set it to the `aud` (or, for Cognito's access tokens, the \
                     `client_id`) of the tokens meant for this API"
                ),
            });
        }
        if tokens.jwks_url.is_some() && tokens.issuer.is_none() {
            return Err(SettingsError {
                variable: JWT_ISSUER,
                message: format!("is required with {JWKS_URL}: tokens are checked against their issuer"),
            });
        }
        if !tokens.any()
            && let Some(d) = defaults.jwt_secret
        {
            tokens.hs256 = Some(Secret::new(d));
            tokens.default_key = true;
        }
        let mut topology = Topology::named(var(PREFIX).as_deref().unwrap_or("hookbridge"));
        if let Some(v) = var(VISIBILITY_TIMEOUT) {
            let d = duration(VISIBILITY_TIMEOUT, &v)?;
            if d < Duration::from_secs(1) {
                return Err(SettingsError { variable: VISIBILITY_TIMEOUT, message: "must be at least 1s".to_owned() });
            }
            // SQS refuses more; on SQLite a longer one outlived the queue's retention, so a
            // message hidden by a crash was swept away unhandled (or wrapped negative).
            if d > crate::retry::MAX_QUEUE_DELAY {
                return Err(SettingsError {
                    variable: VISIBILITY_TIMEOUT,
                    message: format!("must be at most {}s, as on SQS", crate::retry::MAX_QUEUE_DELAY.as_secs()),
                });
            }
            topology.ingest.visibility_timeout = d;
            topology.delivery.visibility_timeout = d;
            topology.delivery_slow.visibility_timeout = d;
            topology.verify.visibility_timeout = d;
        }
        let mut network = defaults.network.clone();
        if let Some(v) = var(ALLOW_HTTP) {
            network.allow_http = match v.trim() {
                "true" | "1" => true,
                "false" | "0" => false,
                other => {
                    return Err(SettingsError {
                        variable: ALLOW_HTTP,
                        message: format!("{other:?} is not true or false"),
                    });
                }
            };
        }
        let default_network = get(ALLOWED_NETWORKS).is_none();
        if let Some(v) = get(ALLOWED_NETWORKS) {
            network.allowed_networks = v
                .split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(|s| {
                    Network::from_str(s).map_err(|_| SettingsError {
                        variable: ALLOWED_NETWORKS,
                        message: format!("{s:?} is not a CIDR block like 10.0.0.0/8"),
                    })
                })
                .collect::<Result<_, _>>()?;
        }
        let schedule = match var(RETRY_SCHEDULE) {
            Some(v) => RetrySchedule::parse(&v)
                .map_err(|e| SettingsError { variable: RETRY_SCHEDULE, message: e.to_string() })?,
            None => RetrySchedule::default(),
        };
        let mut disable_rule = DisableRule::default();
        if let Some(v) = var(DISABLE_AFTER) {
            // With its unit, and not zero, as the template's parameter takes it: `24` was
            // 24 seconds (meant as hours) and `0` (meant as never) disabled at once, so any
            // ten failures in a row, a receiver restarting, disabled the hook.
            let d = duration(DISABLE_AFTER, &v)?;
            if d.is_zero() || v.trim().bytes().all(|b| b.is_ascii_digit()) {
                return Err(SettingsError {
                    variable: DISABLE_AFTER,
                    message: format!("{v:?} must be a duration with its unit, longer than zero, like 24h or 3d"),
                });
            }
            disable_rule.failing_for = d;
        }
        if let Some(v) = var(DISABLE_MIN_FAILURES) {
            disable_rule.min_failures =
                v.trim().parse().ok().filter(|n| (1..=MAX_DISABLE_MIN_FAILURES).contains(n)).ok_or_else(|| {
                    SettingsError {
                        variable: DISABLE_MIN_FAILURES,
                        message: format!("{v:?} is not a whole number from 1 to {MAX_DISABLE_MIN_FAILURES}"),
                    }
                })?;
        }
        let request_timeout = match var(REQUEST_TIMEOUT) {
            Some(v) => timeout_at_most(REQUEST_TIMEOUT, &v, MAX_REQUEST_TIMEOUT)?,
            None => Duration::from_secs(10),
        };
        // Each queue's message must stay hidden while a request for it runs: one that
        // became visible mid-request was received a second time and sent again, its
        // retries then going on in two chains.
        if let Some(v) = var(VISIBILITY_TIMEOUT)
            && topology.delivery.visibility_timeout <= request_timeout
        {
            return Err(SettingsError {
                variable: VISIBILITY_TIMEOUT,
                message: format!(
                    "{v:?} is not longer than the request timeout ({}ms, {REQUEST_TIMEOUT})",
                    request_timeout.as_millis()
                ),
            });
        }
        let event_retention = match var(EVENT_RETENTION) {
            Some(v) => {
                let kept = duration_at_most(EVENT_RETENTION, &v, MAX_EVENT_RETENTION)?;
                // A large event's attempts read it from the event store, each time: kept for
                // less than they can span, its last attempts found it gone and were cancelled.
                let span = schedule_span(&schedule);
                if kept < span {
                    return Err(SettingsError {
                        variable: EVENT_RETENTION,
                        message: format!(
                            "{v:?} is shorter than the retry schedule's span ({}s, {RETRY_SCHEDULE}): a large event's later attempts would find it gone",
                            span.as_secs()
                        ),
                    });
                }
                kept
            }
            None => Duration::from_secs(14 * 86_400),
        };
        let fast_lane_patience = match var(FAST_LANE_PATIENCE) {
            Some(v) => timeout_at_most(FAST_LANE_PATIENCE, &v, MAX_REQUEST_TIMEOUT)?,
            None => Duration::from_secs(2),
        };
        let mut quotas = Quotas::default();
        if let Some(v) = var(MAX_HOOKS_PER_TENANT) {
            quotas.max_hooks = whole(MAX_HOOKS_PER_TENANT, &v, 1)?;
        }
        if let Some(v) = var(MAX_HOOK_MIB_PER_TENANT) {
            let mib = whole(MAX_HOOK_MIB_PER_TENANT, &v, 1)?;
            if mib > MAX_HOOK_MIB_PER_TENANT_MOST {
                return Err(SettingsError {
                    variable: MAX_HOOK_MIB_PER_TENANT,
                    message: format!(
                        "{mib} is more than {MAX_HOOK_MIB_PER_TENANT_MOST}: ingest holds a tenant's hooks in memory"
                    ),
                });
            }
            quotas.max_hook_bytes = mib as usize * MIB;
        }
        if let Some(v) = var(TENANT_PUBLISH_RATE) {
            let rate = whole(TENANT_PUBLISH_RATE, &v, 1)?;
            if rate > crate::rate::MAX_PER_SECOND {
                return Err(SettingsError {
                    variable: TENANT_PUBLISH_RATE,
                    message: format!("{rate} is more than {} a second", crate::rate::MAX_PER_SECOND),
                });
            }
            quotas.publish_rate = crate::rate::Rate::per_second(rate);
        }
        if let Some(v) = var(TENANT_PUBLISH_BURST) {
            quotas.publish_burst = whole(TENANT_PUBLISH_BURST, &v, 1)?;
        }
        let console_client_id = var(CONSOLE_CLIENT_ID);
        // The console signs in through the issuer: without one, it offered only the token
        // form, and nothing said the client id was set for nothing.
        if console_client_id.is_some() && tokens.issuer.is_none() {
            return Err(SettingsError {
                variable: CONSOLE_CLIENT_ID,
                message: format!("is used only with {JWT_ISSUER}: the console signs in through the issuer it names"),
            });
        }
        let publish_to = match var(PUBLISH_TO).as_deref().map(str::trim) {
            None | Some("queue") => PublishTo::Queue,
            Some("bus") => PublishTo::Bus,
            Some(other) => {
                return Err(SettingsError { variable: PUBLISH_TO, message: format!("{other:?} is not queue or bus") });
            }
        };
        Ok(Self {
            topology,
            tokens,
            publish_to,
            console_client_id,
            console_scopes: var(CONSOLE_SCOPES).map_or_else(|| Ok("openid".to_owned()), |v| scopes(&v))?,
            public_url: var(PUBLIC_URL).map(|u| public_url(&u)).transpose()?,
            default_network,
            account: var(ACCOUNT).unwrap_or_else(|| "000000000000".to_owned()),
            region: var(REGION).unwrap_or_else(|| "local".to_owned()),
            network,
            request_timeout,
            schedule,
            disable_rule,
            event_retention,
            fast_lane_patience,
            quotas,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn lookup(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let m: HashMap<String, String> = pairs.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect();
        move |k| m.get(k).cloned()
    }

    const KEY: &str = "0123456789abcdef0123456789abcdef";

    #[test]
    fn events_go_straight_to_the_ingest_queue_unless_the_bus_is_asked_for() {
        let s = Settings::from_lookup(lookup(&[]), &Defaults::cloud()).unwrap();
        assert_eq!(s.publish_to, PublishTo::Queue);
        let s = Settings::from_lookup(lookup(&[(PUBLISH_TO, "bus")]), &Defaults::cloud()).unwrap();
        assert_eq!(s.publish_to, PublishTo::Bus);
        let e = Settings::from_lookup(lookup(&[(PUBLISH_TO, "sqs")]), &Defaults::cloud()).unwrap_err();
        assert_eq!(e.variable, PUBLISH_TO);
    }

    #[test]
    fn cloud_has_no_key_unless_one_is_given_and_a_short_key_is_refused() {
        let s = Settings::from_lookup(lookup(&[]), &Defaults::cloud()).unwrap();
        assert!(!s.tokens.any(), "the stages other than the API need no key");
        let s = Settings::from_lookup(lookup(&[(JWT_SECRET, KEY)]), &Defaults::cloud()).unwrap();
        assert!(s.tokens.hs256.is_some() && !s.tokens.default_key);
        let e = Settings::from_lookup(lookup(&[(JWT_SECRET, "too-short")]), &Defaults::cloud()).unwrap_err();
        assert_eq!(e.variable, JWT_SECRET);
        assert!(e.message.contains("at least 32"), "{}", e.message);
    }

    #[test]
    fn oidc_settings_are_read_and_checked() {
        let s = Settings::from_lookup(
            lookup(&[
                (JWT_ISSUER, "https://idp.example/realms/acme/"),
                (JWT_AUDIENCE, "hookbridge"),
                (TENANT_CLAIM, "org"),
            ]),
            &Defaults::local(),
        )
        .unwrap();
        assert_eq!(s.tokens.issuer.as_deref(), Some("https://idp.example/realms/acme"));
        assert_eq!(s.tokens.tenant_claim, "org");
        assert!(s.tokens.hs256.is_none(), "no default key once an issuer is configured");
        assert_eq!(
            Settings::from_lookup(lookup(&[(JWT_ISSUER, "idp")]), &Defaults::local()).unwrap_err().variable,
            JWT_ISSUER
        );
        assert_eq!(
            Settings::from_lookup(lookup(&[(JWKS_URL, "https://idp.example/jwks")]), &Defaults::local())
                .unwrap_err()
                .variable,
            JWT_ISSUER
        );
    }

    #[test]
    fn local_defaults_allow_loopback_and_http_and_say_they_are_defaults() {
        let s = Settings::from_lookup(lookup(&[]), &Defaults::local()).unwrap();
        assert!(s.network.allow_http);
        assert_eq!(s.tokens.hs256.as_ref().map(|k| k.expose()), Some(LOCAL_DEV_SECRET));
        assert!(s.tokens.default_key && s.default_network);
        assert!(LOCAL_DEV_SECRET.len() >= MIN_HS256_KEY_BYTES);
        assert_eq!(s.schedule, RetrySchedule::default());
        let s = Settings::from_lookup(lookup(&[(ALLOWED_NETWORKS, "")]), &Defaults::local()).unwrap();
        assert!(!s.default_network, "an empty allow-list is a choice too");
    }

    #[test]
    fn serving_beyond_loopback_needs_a_real_key_and_an_explicit_allow_list() {
        let public: std::net::SocketAddr = "0.0.0.0:3000".parse().unwrap();
        let local = Settings::from_lookup(lookup(&[]), &Defaults::local()).unwrap();
        assert!(local.check_exposure("127.0.0.1:3000".parse().unwrap()).is_ok(), "make run needs nothing set");
        assert_eq!(local.check_exposure(public).unwrap_err().variable, JWT_SECRET);
        let keyed = Settings::from_lookup(lookup(&[(JWT_SECRET, KEY)]), &Defaults::local()).unwrap();
        assert_eq!(keyed.check_exposure(public).unwrap_err().variable, ALLOWED_NETWORKS);
        let ready =
            Settings::from_lookup(lookup(&[(JWT_SECRET, KEY), (ALLOWED_NETWORKS, "")]), &Defaults::local()).unwrap();
        assert!(ready.check_exposure(public).is_ok());
        let oidc = Settings::from_lookup(
            lookup(&[
                (JWT_ISSUER, "https://idp.example"),
                (JWT_AUDIENCE, "hookbridge"),
                (ALLOWED_NETWORKS, "10.0.0.0/8"),
            ]),
            &Defaults::local(),
        )
        .unwrap();
        assert!(oidc.check_exposure(public).is_ok());
    }

    #[test]
    fn a_loopback_server_behind_a_public_url_needs_a_real_key_and_an_explicit_allow_list() {
        let loopback: std::net::SocketAddr = "127.0.0.1:3000".parse().unwrap();
        let proxied = |more: &[(&str, &str)]| {
            let mut vars = vec![(PUBLIC_URL, "https://hooks.example.com")];
            vars.extend_from_slice(more);
            Settings::from_lookup(lookup(&vars), &Defaults::local()).unwrap()
        };
        let e = proxied(&[]).check_exposure(loopback).unwrap_err();
        assert_eq!(e.variable, JWT_SECRET);
        assert!(e.message.contains("https://hooks.example.com"), "{}", e.message);
        assert_eq!(proxied(&[(JWT_SECRET, KEY)]).check_exposure(loopback).unwrap_err().variable, ALLOWED_NETWORKS);
        assert!(proxied(&[(JWT_SECRET, KEY), (ALLOWED_NETWORKS, "")]).check_exposure(loopback).is_ok());
        for this_machine in
            ["http://localhost:3000", "http://127.0.0.2:8080", "http://[::1]:3000", "http://api.localhost"]
        {
            let s = Settings::from_lookup(lookup(&[(PUBLIC_URL, this_machine)]), &Defaults::local()).unwrap();
            assert!(s.check_exposure(loopback).is_ok(), "{this_machine}");
        }
    }

    #[test]
    fn bad_values_name_their_variable() {
        for (var, value) in [
            (REQUEST_TIMEOUT, "soon"),
            (RETRY_SCHEDULE, "5x"),
            (ALLOWED_NETWORKS, "10.0.0.0/99"),
            (ALLOW_HTTP, "maybe"),
            (DISABLE_MIN_FAILURES, "-1"),
            // Zero is not "never", and a bare number is not hours: both disabled hooks at
            // the first ten failures in a row.
            (DISABLE_AFTER, "0"),
            (DISABLE_AFTER, "0h"),
            (DISABLE_AFTER, "24"),
            (DISABLE_MIN_FAILURES, "0"),
            (DISABLE_MIN_FAILURES, "100001"),
            (RETRY_SCHEDULE, "1s,1s,1s,1s,1s,1s,1s,1s,1s,1s,1s"),
            (REQUEST_TIMEOUT, "1000000000d"),
            // Longer than a delivery message stays hidden while it is handled.
            (REQUEST_TIMEOUT, "5m"),
            (REQUEST_TIMEOUT, "121s"),
            (FAST_LANE_PATIENCE, "16m"),
            (FAST_LANE_PATIENCE, "quick"),
            (MAX_HOOKS_PER_TENANT, "0"),
            (MAX_HOOK_MIB_PER_TENANT, "0"),
            (MAX_HOOK_MIB_PER_TENANT, "17"),
            (TENANT_PUBLISH_RATE, "lots"),
            (REQUEST_TIMEOUT, "0"),
            (FAST_LANE_PATIENCE, "0s"),
            (JWT_SECRET, " "),
            // RFC 6749's scope tokens leave out `"` and `\`.
            (CONSOLE_SCOPES, "openid \"all\""),
            // Shorter than the default schedule's 28 hours and more.
            (EVENT_RETENTION, "1d"),
            // Not longer than the default request timeout (10 s).
            (VISIBILITY_TIMEOUT, "10s"),
            // Past SQS's 12 hours; the second wrapped negative on SQLite.
            (VISIBILITY_TIMEOUT, "43201s"),
            (VISIBILITY_TIMEOUT, "200000000000d"),
        ] {
            let e = Settings::from_lookup(lookup(&[(var, value)]), &Defaults::local()).unwrap_err();
            assert_eq!(e.variable, var, "{value}");
        }
        // An issuer without an audience: its tokens for every client it has would be taken.
        let issuer = (JWT_ISSUER, "https://idp.example.com/realms/acme");
        let e = Settings::from_lookup(lookup(&[issuer]), &Defaults::local()).unwrap_err();
        assert_eq!(e.variable, JWT_AUDIENCE);
        assert!(Settings::from_lookup(lookup(&[issuer, (JWT_AUDIENCE, "hookbridge")]), &Defaults::local()).is_ok());
        // A console client without the issuer it signs in through.
        let client = (CONSOLE_CLIENT_ID, "hookbridge-console");
        let e = Settings::from_lookup(lookup(&[client]), &Defaults::local()).unwrap_err();
        assert_eq!(e.variable, CONSOLE_CLIENT_ID);
        let with_issuer = [issuer, (JWT_AUDIENCE, "hookbridge"), client];
        assert!(Settings::from_lookup(lookup(&with_issuer), &Defaults::local()).is_ok());
        // Judged against the schedule and the timeout they come with.
        let short =
            [(RETRY_SCHEDULE, "1s,1s"), (EVENT_RETENTION, "5s"), (REQUEST_TIMEOUT, "1s"), (VISIBILITY_TIMEOUT, "2s")];
        assert!(Settings::from_lookup(lookup(&short), &Defaults::local()).is_ok());
        // Two 1 s delays a receiver's `Retry-After` doubles, then spread: 4.8 s.
        let e =
            Settings::from_lookup(lookup(&[(RETRY_SCHEDULE, "1s,1s"), (EVENT_RETENTION, "4s")]), &Defaults::local());
        assert_eq!(e.unwrap_err().variable, EVENT_RETENTION);
        // Whatever settings are accepted, no run of delays outlasts the retention.
        for (schedule, retention) in [("1m,1m,1m", "8m"), ("5s,5m,30m,2h,5h,10h,10h", "2d")] {
            let s = Settings::from_lookup(
                lookup(&[(RETRY_SCHEDULE, schedule), (EVENT_RETENTION, retention)]),
                &Defaults::local(),
            )
            .unwrap_or_else(|e| panic!("{schedule} {retention}: {e:?}"));
            let longest: Duration = (1..s.schedule.max_attempts())
                .filter_map(|n| s.schedule.delay_after(n, 1.0, Some(Duration::MAX)))
                .sum();
            assert!(longest <= s.event_retention, "{schedule}: {longest:?} past {retention}");
        }
    }

    #[test]
    fn values_are_read() {
        let s = Settings::from_lookup(
            lookup(&[
                (RETRY_SCHEDULE, "1s,2s"),
                (ALLOWED_NETWORKS, "10.0.0.0/8"),
                (REQUEST_TIMEOUT, "500ms"),
                (EVENT_RETENTION, "7d"),
                (PREFIX, "hb-test"),
            ]),
            &Defaults::cloud().clone_with_secret(),
        )
        .unwrap();
        assert_eq!(s.schedule.max_attempts(), 3);
        assert_eq!(s.network.allowed_networks.len(), 1);
        assert_eq!(s.request_timeout, Duration::from_millis(500));
        assert_eq!(s.event_retention, Duration::from_secs(7 * 86_400));
        assert_eq!(s.topology.table, "hb-test-table");
    }

    impl Defaults {
        fn clone_with_secret(&self) -> Self {
            Self { jwt_secret: Some(KEY), ..self.clone() }
        }
    }
}
