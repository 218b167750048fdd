//! API shapes, named by direction and kept apart from storage: what a client reads.

use chrono::{DateTime, Utc};
use hookbridge_core::circuit::CircuitState;
use hookbridge_core::delivery::{Attempt, Delivery, DeliveryStatus, ErrorClass};
use hookbridge_core::hook::{
    AuthConfig, ConnectionState, DestinationState, HeaderConfig, Health, Hook, HttpMethod, Lane, PayloadFormat,
    RateLimit, SignatureFormat, VerificationStatus,
};
use hookbridge_core::ids::{DeliveryId, EventId, HookId};
use hookbridge_core::pattern::EventTypePattern;
use serde::{Deserialize, Serialize};

/// `verification` as read.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VerificationOut {
    /// Whether deliveries wait for the challenge.
    pub required: bool,
    /// The challenge header.
    pub header: String,
    /// Where the challenge stands.
    pub status: VerificationStatus,
    /// When it last passed.
    pub verified_at: Option<DateTime<Utc>>,
    /// Why it last failed.
    pub last_error: Option<String>,
}

impl From<&Hook> for VerificationOut {
    fn from(h: &Hook) -> Self {
        Self {
            required: h.config.verification.required,
            header: h.config.verification.header.clone(),
            status: h.state.verification.status,
            verified_at: h.state.verification.verified_at,
            last_error: h.state.verification.last_error.clone(),
        }
    }
}

/// A hook as read. Secret values are absent; `secret` is present only in the create
/// response.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HookOut {
    /// The hook's id, in its URL.
    pub id: HookId,
    /// Unique in the tenant, and never changes.
    pub name: String,
    /// Free text.
    pub description: Option<String>,
    /// Where requests go.
    pub url: String,
    /// The method requests use (the envelope is the body for every one).
    pub method: HttpMethod,
    /// The glob patterns event types are matched against.
    pub event_types: Vec<EventTypePattern>,
    /// The sites whose events it wants; empty for the whole workspace.
    pub sites: Vec<String>,
    /// Whether the tenant wants deliveries.
    pub enabled: bool,
    /// Auth without secret values.
    pub auth: AuthConfig,
    /// Extra headers; secret values absent.
    pub headers: Vec<HeaderConfig>,
    /// Signature formats.
    pub signature_formats: Vec<SignatureFormat>,
    /// Verification settings and state.
    pub verification: VerificationOut,
    /// The most deliveries a second the receiver gets, if limited.
    pub rate_limit: Option<RateLimit>,
    /// What a delivery's body is.
    pub payload: PayloadFormat,
    /// Whether every non-2xx answer is tried again (Keycloak's rule).
    pub retry_non_2xx: bool,
    /// HYPR's connection state.
    pub connection_state: ConnectionState,
    /// HYPR's destination state.
    pub destination_state: DestinationState,
    /// Why the destination is inactive.
    pub disabled_reason: Option<String>,
    /// Why the connection is `DEAUTHORIZED` (the token endpoint's answer).
    pub connection_error: Option<String>,
    /// Delivery health.
    pub health: HealthOut,
    /// Who created it.
    pub created_by: String,
    /// When it was created.
    pub created_at: DateTime<Utc>,
    /// When it last changed, by the tenant or the platform.
    pub updated_at: DateTime<Utc>,
    /// Changes when the tenant changes it; sent back (or as `If-Match`) to lock a replace.
    pub version: u64,
    /// The signing secret: in the create response only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret: Option<ShownOnce>,
}

/// A secret an answer shows once (a created hook's signing secret): serialized as its
/// text, but never in what `Debug` prints, so a log line of the answer does not carry it.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct ShownOnce(pub String);

impl std::fmt::Debug for ShownOnce {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(hookbridge_core::secret::REDACTED)
    }
}

/// `health` as read.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HealthOut {
    /// Failed attempts in the current run: since the last success, or since a failure that
    /// came longer than the disable span (at least 16 h) after the one before.
    pub consecutive_failures: u32,
    /// When the current failures began.
    pub failing_since: Option<DateTime<Utc>>,
    /// When a delivery last succeeded.
    pub last_success_at: Option<DateTime<Utc>>,
    /// The circuit breaker.
    pub circuit: CircuitOut,
    /// Which delivery lane its deliveries take now.
    pub lane: Lane,
}

/// `health.circuit` as read.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CircuitOut {
    /// `closed`, `open` or `half_open`.
    pub state: CircuitState,
    /// When it opened, while not closed.
    pub opened_at: Option<DateTime<Utc>>,
    /// When the next probe may go (open) or went (half-open).
    pub next_probe_at: Option<DateTime<Utc>>,
}

impl From<&Health> for HealthOut {
    fn from(h: &Health) -> Self {
        let c = &h.circuit;
        Self {
            consecutive_failures: h.consecutive_failures,
            failing_since: h.failing_since,
            last_success_at: h.last_success_at,
            circuit: CircuitOut { state: c.state, opened_at: c.opened_at, next_probe_at: c.next_probe_at },
            lane: h.lane(Utc::now()),
        }
    }
}

/// The auth settings as answered: without the fields a newer release kept in them
/// (decision 0044), which this release's drafts refuse, so that a hook as read can still
/// be sent back as written.
fn answered_auth(auth: &AuthConfig) -> AuthConfig {
    let mut auth = auth.clone();
    if let AuthConfig::OauthClientCredentials(oauth) = &mut auth {
        oauth.newer = Default::default();
    }
    auth
}

impl From<&Hook> for HookOut {
    fn from(h: &Hook) -> Self {
        let c = &h.config;
        Self {
            id: h.id,
            name: c.name.to_string(),
            description: c.description.clone(),
            url: c.url.clone(),
            method: c.method,
            event_types: c.event_types.clone(),
            sites: c.sites.clone(),
            enabled: c.enabled,
            auth: answered_auth(&c.auth),
            headers: c.headers.clone(),
            signature_formats: c.signature_formats.clone(),
            verification: VerificationOut::from(h),
            rate_limit: c.rate_limit,
            payload: c.payload,
            retry_non_2xx: c.retry_non_2xx,
            connection_state: h.state.connection_state,
            destination_state: h.state.destination_state,
            disabled_reason: h.state.disabled_reason.clone(),
            connection_error: h.state.connection_error.clone(),
            health: (&h.state.health).into(),
            created_by: h.created_by.clone(),
            created_at: h.created_at,
            updated_at: h.updated_at,
            version: h.version,
            secret: None,
        }
    }
}

/// A delivery as listed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeliveryOut {
    /// The id (also `webhook-id`).
    pub delivery_id: DeliveryId,
    /// The event.
    pub event_id: EventId,
    /// The event type.
    pub event_type: String,
    /// Where it stands.
    pub status: DeliveryStatus,
    /// How many attempts were made.
    pub attempts: u32,
    /// The last response status.
    pub last_status_code: Option<u16>,
    /// The last error class.
    pub last_error_class: Option<ErrorClass>,
    /// When the next attempt is due.
    pub next_attempt_at: Option<DateTime<Utc>>,
    /// Why it was cancelled or failed without an attempt.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// When it was created.
    pub created_at: DateTime<Utc>,
    /// When it last changed.
    pub updated_at: DateTime<Utc>,
}

impl From<&Delivery> for DeliveryOut {
    fn from(d: &Delivery) -> Self {
        let last = d.last_attempt();
        Self {
            delivery_id: d.id,
            event_id: d.event_id.clone(),
            event_type: d.event_type.clone(),
            status: d.status,
            attempts: d.attempts_made(),
            last_status_code: last.and_then(|a| a.status_code),
            last_error_class: last.and_then(|a| a.error_class),
            next_attempt_at: d.next_attempt_at,
            reason: d.note.clone(),
            created_at: d.created_at,
            updated_at: d.updated_at,
        }
    }
}

/// A delivery with its envelope and every attempt.
#[derive(Debug, Clone, Serialize)]
pub struct DeliveryDetailOut {
    /// The summary.
    #[serde(flatten)]
    pub delivery: DeliveryOut,
    /// The envelope as sent (byte for byte), while it is kept.
    pub envelope: Option<Box<serde_json::value::RawValue>>,
    /// Every attempt, oldest first.
    pub attempt_log: Vec<Attempt>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_secret_shown_once_is_in_the_answer_and_never_in_debug() {
        let secret = ShownOnce("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw".to_owned());
        assert_eq!(serde_json::to_value(&secret).unwrap(), serde_json::json!(secret.0));
        assert!(!format!("{:?}", Some(&secret)).contains("MfKQ9r8"));
    }
}
