//! The outbound HTTP side of Hookbridge: one shared client that never reaches an address
//! the deployment forbids, never follows a redirect, authenticates as each hook says,
//! signs every request over the exact bytes it sends, and reports what happened in the
//! core's terms.

mod auth;
mod challenge;
mod classify;
mod deliver;
mod fetch;
mod resolver;

use std::sync::Arc;
use std::time::Duration;

use hookbridge_core::hook::NetworkPolicy;

pub use auth::{TokenCache, TokenError, TokenWanted};
pub use challenge::{ChallengeError, challenge_needs_secrets};
pub use deliver::{AttemptReport, DeliveryRequest};
pub use fetch::{DOCUMENT_TIMEOUT, FetchError};

/// The default request timeout: long enough for a slow receiver, short enough that one
/// dead endpoint does not hold a worker batch for long.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);

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
        let resolver = Arc::new(resolver::GuardedResolver::new(settings.network.clone()));
        let client = reqwest::Client::builder()
            .dns_resolver(resolver)
            .redirect(reqwest::redirect::Policy::none())
            .no_proxy()
            .timeout(settings.timeout)
            .connect_timeout(settings.timeout)
            .pool_idle_timeout(Duration::from_secs(90))
            .user_agent(concat!("Hookbridge/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(BuildError)?;
        Ok(Self { client, settings: Arc::new(settings), tokens: TokenCache::default() })
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
