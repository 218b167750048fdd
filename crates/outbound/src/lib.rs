//! The outbound HTTP side of Hookbridge: one shared client that never reaches an address
//! the deployment forbids, never follows a redirect, authenticates as each hook says,
//! signs every request over the exact bytes it sends, and reports what happened in the
//! core's terms.

mod auth;
mod challenge;
mod classify;
mod deliver;
mod fetch;
mod pool;
mod resolver;

use std::sync::Arc;
use std::time::Duration;

use hookbridge_core::hook::NetworkPolicy;

pub use auth::{TokenCache, TokenError, TokenWanted};
pub use challenge::{ChallengeError, challenge_needs_secrets};
pub use deliver::{AttemptReport, BODY_READ_AT_MOST, DeliveryRequest};
pub use fetch::{DOCUMENT_TIMEOUT, FetchError};
pub use pool::KEPT_CONNECTIONS_MOST;

/// The default request timeout: long enough for a slow receiver, short enough that one
/// dead endpoint does not hold a worker batch for long.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);
/// The `User-Agent` every request carries unless the hook's own headers set one.
pub const USER_AGENT: &str = concat!("Hookbridge/", env!("CARGO_PKG_VERSION"));

/// Settings of the outbound client.
#[derive(Debug, Clone)]
pub struct OutboundSettings {
    /// Whole-request timeout (connect, send, response head; the excerpt is read only in what is left).
    pub timeout: Duration,
    /// Which addresses may be reached.
    pub network: NetworkPolicy,
}

impl Default for OutboundSettings {
    fn default() -> Self {
        Self { timeout: DEFAULT_TIMEOUT, network: NetworkPolicy::default() }
    }
}

impl OutboundSettings {
    /// The outbound part of the deployment settings.
    pub fn from_settings(s: &hookbridge_core::settings::Settings) -> Self {
        Self { timeout: s.request_timeout, network: s.network.clone() }
    }

    /// How long an OAuth token fetch may take: within the slow lane's attempt (the request
    /// timeout), which began a little earlier, so that a fetch that fails does so while its
    /// attempt still waits, and the attempt records why. A fetch may first wait as long
    /// for another's fetch of the same token.
    pub fn token_budget(&self) -> Duration {
        auth::FETCH_TIMEOUT.min(self.timeout.saturating_sub(self.timeout / 10))
    }
}

/// Why the client could not be built.
#[derive(Debug, thiserror::Error)]
#[error("cannot build the HTTP client: {0}")]
pub struct BuildError(#[source] reqwest::Error);

/// The shared outbound client. Cheap to clone; connections are pooled and reused across
/// deliveries (and, on Lambda, across invocations of a warm function).
#[derive(Clone)]
pub struct Outbound {
    client: reqwest::Client,
    /// The same client, keeping no connection open after its request: for requests past
    /// the connections the pool may keep ([`pool`]).
    unpooled: Arc<std::sync::OnceLock<reqwest::Client>>,
    resolver: Arc<resolver::GuardedResolver>,
    kept: Arc<pool::KeptConnections>,
    settings: Arc<OutboundSettings>,
    tokens: TokenCache,
}

impl std::fmt::Debug for Outbound {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Outbound").field("settings", &self.settings).finish_non_exhaustive()
    }
}

impl Outbound {
    /// Builds the client.
    pub fn new(settings: OutboundSettings) -> Result<Self, BuildError> {
        Self::keeping(settings, KEPT_CONNECTIONS_MOST)
    }

    /// Builds the client, keeping at most `most` connections open between requests.
    fn keeping(settings: OutboundSettings, most: usize) -> Result<Self, BuildError> {
        let resolver = Arc::new(resolver::GuardedResolver::new(settings.network.clone()));
        let client = build_client(&settings, &resolver, usize::MAX)?;
        let kept = pool::KeptConnections::new(most);
        Ok(Self {
            client,
            unpooled: Arc::new(std::sync::OnceLock::new()),
            resolver,
            kept,
            settings: Arc::new(settings),
            tokens: TokenCache::default(),
        })
    }

    /// The client for a request to `url`, and the request counted against the pool until
    /// dropped (keep it until the answer is read): the pooled client while the request's
    /// connection may be kept open, else one that closes its connection after the request
    /// (built when first needed: most deployments never keep that many, and a Lambda's
    /// cold start would load the TLS roots twice).
    pub(crate) fn client_for(&self, url: &url::Url) -> (&reqwest::Client, Option<pool::InUse>) {
        if let Some(in_use) = self.kept.begin(url) {
            return (&self.client, Some(in_use));
        }
        if let Some(c) = self.unpooled.get() {
            return (c, None);
        }
        match build_client(&self.settings, &self.resolver, 0) {
            Ok(c) => (self.unpooled.get_or_init(|| c), None),
            Err(e) => {
                // It was built once with the same settings; should it fail now, kept open.
                tracing::error!(error = %e, "cannot build the client that keeps no connection open");
                (&self.client, None)
            }
        }
    }

    /// The settings it was built with.
    pub fn settings(&self) -> &OutboundSettings {
        &self.settings
    }

    /// The OAuth token cache.
    pub fn tokens(&self) -> &TokenCache {
        &self.tokens
    }
}

/// The outbound client as [`Outbound`] builds it, keeping at most `kept_idle` idle
/// connections to each receiver.
fn build_client(
    settings: &OutboundSettings,
    resolver: &Arc<resolver::GuardedResolver>,
    kept_idle: usize,
) -> Result<reqwest::Client, BuildError> {
    reqwest::Client::builder()
        .dns_resolver(resolver.clone())
        .redirect(reqwest::redirect::Policy::none())
        .no_proxy()
        .timeout(settings.timeout)
        .connect_timeout(settings.timeout)
        .pool_idle_timeout(pool::POOL_IDLE)
        .pool_max_idle_per_host(kept_idle)
        .user_agent(USER_AGENT)
        .build()
        .map_err(BuildError)
}
