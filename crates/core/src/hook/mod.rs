//! Hooks: what a tenant asked to receive, where, and how; and the state the platform
//! keeps about it.

mod draft;
mod model;
mod network;
mod state;
mod update;

pub use draft::{
    AuthDraft, HeaderDraft, HookDraft, MAX_PARAMS, MAX_RATE_LIMIT, MAX_SITES, ParamDraft, RateLimitDraft, SITE_RULE,
    ValidationContext, VerificationDraft, is_site,
};
#[cfg(test)]
pub(crate) use model::test_hook;
pub use model::{
    AuthConfig, AuthType, HeaderConfig, Hook, HookConfig, HookSecrets, HttpMethod, MAX_EVENT_TYPES, MAX_HEADERS,
    MAX_RETIRING_SECRETS, MAX_STORED_HOOK_BYTES, MAX_URL_LEN, NEWEST_SEALED_FORMAT, OAuthConfig, ParamConfig,
    PayloadFormat, RateLimit, RetiringSecret, SealedSecrets, SecretsOwner, SignatureFormat, TokenBody, TokenMethod,
    VerificationConfig,
};
pub use network::{AddressVerdict, Network, NetworkPolicy};
pub use state::{
    ConnectionState, DestinationState, Health, HookState, Lane, Routing, Undeliverable, VerificationState,
    VerificationStatus,
};
pub use update::{Modified, UPDATE_ROUNDS, modify};
