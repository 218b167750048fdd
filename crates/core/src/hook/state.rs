//! What the platform knows about a hook, in HYPR's words: connection state (can it
//! authenticate and has it proven ownership) and destination state (are deliveries sent).

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::model::HookConfig;

/// The hook's ability to authenticate and prove ownership.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum ConnectionState {
    /// Just created; the verifier has not looked at it yet.
    Creating,
    /// Fetching a token or running the challenge.
    Authorizing,
    /// Credentials work and ownership (when required) is proven.
    Authorized,
    /// The token endpoint refused, or the challenge failed.
    Deauthorized,
    /// Changed; the verifier has not looked at the change yet.
    Updating,
    /// Credentials being withdrawn.
    Deauthorizing,
    /// Being deleted.
    Deleting,
}

/// Whether deliveries are being sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum DestinationState {
    /// Deliveries are sent.
    Active,
    /// Deliveries are not sent (disabled by the tenant or by the failure rule).
    Inactive,
}

/// The ownership challenge's progress.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum VerificationStatus {
    /// Never challenged.
    Unverified,
    /// A challenge is queued or running.
    Pending,
    /// The endpoint answered the challenge.
    Verified,
    /// The endpoint did not answer it right; `last_error` says why.
    Failed,
}

/// The ownership challenge's outcome so far.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VerificationState {
    /// Where it stands.
    pub status: VerificationStatus,
    /// When it last passed.
    #[serde(default)]
    pub verified_at: Option<DateTime<Utc>>,
    /// Why it last failed.
    #[serde(default)]
    pub last_error: Option<String>,
    /// When the challenge whose outcome this is was sent. Two checks may run at once (a
    /// change's, then one asked for); the outcome of a challenge sent before this one's is
    /// stale, and is not written over it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub challenged_at: Option<DateTime<Utc>>,
    /// Fields a newer release wrote, kept as they were (decision 0044).
    #[serde(flatten)]
    pub newer: crate::newer::NewerFields,
}

impl VerificationState {
    /// Whether the endpoint's ownership stands proven. A verified endpoint stays proven
    /// while a re-check it did not ask for runs (`POST /verify`); a new URL clears
    /// `verified_at`, so it waits for its own proof. One whose last check failed keeps that
    /// failure (`last_error`) until a check passes, so asking for another check does not
    /// restart its deliveries.
    pub fn proven(&self) -> bool {
        self.status == VerificationStatus::Verified
            || (self.status == VerificationStatus::Pending && self.verified_at.is_some() && self.last_error.is_none())
    }
}

/// Delivery health, kept so a persistently failing hook can be disabled.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct Health {
    /// Failed attempts in the current run: since the last success, or since a failure that
    /// came longer than the disable span (at least 16 h) after the one before.
    pub consecutive_failures: u32,
    /// When the current run of failures began.
    #[serde(default)]
    pub failing_since: Option<DateTime<Utc>>,
    /// When an attempt last failed (see [`crate::health::DisableRule::after_failure`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_failed_at: Option<DateTime<Utc>>,
    /// When a delivery last succeeded.
    #[serde(default)]
    pub last_success_at: Option<DateTime<Utc>>,
    /// Whether the `hook.failing` warning went out for the current run of failures.
    #[serde(default)]
    pub warned: bool,
    /// The circuit breaker.
    #[serde(default)]
    pub circuit: crate::circuit::Circuit,
    /// Until when its deliveries take the slow lane (it kept a request waiting longer than
    /// the fast lane's patience).
    #[serde(default)]
    pub slow_until: Option<DateTime<Utc>>,
    /// When this account of the endpoint began, if it was started over (the hook
    /// re-enabled, or given a new URL). The results of attempts begun before it were about
    /// the endpoint as it was, and count for nothing: a 410 from before a re-enable, recorded
    /// late, disabled the hook again.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub since: Option<DateTime<Utc>>,
    /// Fields a newer release wrote, kept as they were (decision 0044).
    #[serde(flatten)]
    pub newer: crate::newer::NewerFields,
}

/// The two delivery lanes: the fast one for endpoints that answer promptly, the slow one
/// for endpoints that recently did not, so a slow or dead endpoint never holds up anyone
/// else's deliveries.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Lane {
    /// Endpoints that answer within the fast lane's patience.
    Fast,
    /// Endpoints that were slow lately, or whose circuit is not closed.
    Slow,
}

impl Health {
    /// The lane its deliveries take at `now`.
    pub fn lane(&self, now: DateTime<Utc>) -> Lane {
        if !self.circuit.is_closed() || self.slow_until.is_some_and(|t| t > now) { Lane::Slow } else { Lane::Fast }
    }
}

/// The platform's view of a hook.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HookState {
    /// Authentication and ownership.
    pub connection_state: ConnectionState,
    /// Whether deliveries are sent.
    pub destination_state: DestinationState,
    /// Why the destination is inactive.
    #[serde(default)]
    pub disabled_reason: Option<String>,
    /// Why the connection is `DEAUTHORIZED` (the token endpoint's answer).
    #[serde(default)]
    pub connection_error: Option<String>,
    /// The ownership challenge.
    pub verification: VerificationState,
    /// Delivery health.
    #[serde(default)]
    pub health: Health,
    /// When its `sites` last changed: the deliveries before were for the sites it had
    /// then, which a caller held to its present sites (a portal session) must not read or
    /// replay.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sites_since: Option<DateTime<Utc>>,
    /// While a check runs (`AUTHORIZING`): the state the hook was in before it, which a
    /// check's outcome is news against, also for a second check begun meanwhile.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub checked_from: Option<ConnectionState>,
    /// When its `rate_limit` was last set or changed (absent: as created). Each setting of
    /// the limit paces the hook in a schedule of its own ([`crate::rate::hook_key`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub paced_since: Option<DateTime<Utc>>,
    /// Fields a newer release wrote, kept as they were (decision 0044).
    #[serde(flatten)]
    pub newer: crate::newer::NewerFields,
}

impl HookState {
    /// The state of a hook just created with `config`.
    pub fn new_for(config: &HookConfig) -> Self {
        Self {
            newer: Default::default(),
            connection_state: ConnectionState::Creating,
            destination_state: if config.enabled { DestinationState::Active } else { DestinationState::Inactive },
            disabled_reason: (!config.enabled).then(|| "disabled by the tenant".to_owned()),
            connection_error: None,
            verification: VerificationState {
                newer: Default::default(),
                status: if config.verification.required {
                    VerificationStatus::Pending
                } else {
                    VerificationStatus::Unverified
                },
                verified_at: None,
                last_error: None,
                challenged_at: None,
            },
            health: Health::default(),
            sites_since: None,
            checked_from: None,
            paced_since: None,
        }
    }
}

/// Why a delivery to a hook is not sent; recorded on the delivery as `CANCELLED`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Undeliverable {
    /// The hook was deleted.
    #[error("hook deleted")]
    Deleted,
    /// The tenant disabled it.
    #[error("hook disabled")]
    Disabled,
    /// Disabled by the failure rule, or otherwise inactive.
    #[error("hook inactive")]
    Inactive,
    /// It requires verification and has not passed it.
    #[error("hook not verified")]
    NotVerified,
}

/// What ingest reads of a hook: which events it wants, and whether and on which lane it
/// gets them. A change to nothing but the rest (failure counts, times of success) need not
/// reach a list of hooks ingest keeps.
#[derive(Debug, PartialEq, Eq)]
pub struct Routing<'a> {
    config: &'a HookConfig,
    connection_state: ConnectionState,
    destination_state: DestinationState,
    verification: &'a VerificationState,
    circuit_closed: bool,
    slow_until: Option<DateTime<Utc>>,
}

impl super::model::Hook {
    /// What ingest reads of it.
    pub fn routing(&self) -> Routing<'_> {
        Routing {
            config: &self.config,
            connection_state: self.state.connection_state,
            destination_state: self.state.destination_state,
            verification: &self.state.verification,
            circuit_closed: self.state.health.circuit.is_closed(),
            slow_until: self.state.health.slow_until,
        }
    }

    /// Whether a delivery may be sent to this hook now, and why not.
    pub fn deliverable(&self) -> Result<(), Undeliverable> {
        if self.state.connection_state == ConnectionState::Deleting {
            return Err(Undeliverable::Deleted);
        }
        if !self.config.enabled {
            return Err(Undeliverable::Disabled);
        }
        if self.state.destination_state == DestinationState::Inactive {
            return Err(Undeliverable::Inactive);
        }
        if self.config.verification.required && !self.state.verification.proven() {
            return Err(Undeliverable::NotVerified);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn required_hook() -> super::super::model::Hook {
        let draft = r#"{"name":"v","url":"https://r.example/","verification":{"required":true}}"#;
        super::super::model::test_hook(draft, super::super::model::SealedSecrets(vec![]))
    }

    #[test]
    fn an_unproven_endpoint_gets_nothing_and_a_recheck_of_a_proven_one_does_not_stop_it() {
        let mut h = required_hook();
        assert_eq!(h.deliverable(), Err(Undeliverable::NotVerified));
        h.state.verification.status = VerificationStatus::Verified;
        h.state.verification.verified_at = Some(chrono::Utc::now());
        assert_eq!(h.deliverable(), Ok(()));
        // POST /verify on a verified hook: still deliverable while the check runs.
        h.state.verification.status = VerificationStatus::Pending;
        assert_eq!(h.deliverable(), Ok(()));
        // The check failed: stopped.
        h.state.verification.status = VerificationStatus::Failed;
        h.state.verification.last_error = Some("wrong answer".to_owned());
        assert_eq!(h.deliverable(), Err(Undeliverable::NotVerified));
        // POST /verify after the failure: still stopped while that check runs.
        h.state.verification.status = VerificationStatus::Pending;
        assert_eq!(h.deliverable(), Err(Undeliverable::NotVerified));
        // A new URL clears the proof.
        h.state.verification.status = VerificationStatus::Pending;
        h.state.verification.verified_at = None;
        assert_eq!(h.deliverable(), Err(Undeliverable::NotVerified));
    }
}
