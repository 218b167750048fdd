//! Hooks: what a tenant asked to receive, where, and how; and the state the platform
//! keeps about it.

mod draft;
mod model;
mod network;
mod state;

pub use draft::{AuthDraft, HeaderDraft, HookDraft, ParamDraft, ValidationContext, VerificationDraft};
pub use model::{
    AuthConfig, AuthType, HeaderConfig, Hook, HookConfig, HookSecrets, HttpMethod, MAX_EVENT_TYPES, MAX_HEADERS,
    MAX_URL_LEN, OAuthConfig, ParamConfig, RetiringSecret, SealedSecrets, SignatureFormat, TokenMethod,
    VerificationConfig,
};
pub use network::{AddressVerdict, Network, NetworkPolicy};
pub use state::{
    ConnectionState, DestinationState, Health, HookState, Undeliverable, VerificationState, VerificationStatus,
};
