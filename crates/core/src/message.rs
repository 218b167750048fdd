//! Queue message bodies and the platform's own (operational) events.
//!
//! Bodies are tagged, versioned enums so a new format can roll out beside the old: a
//! worker that meets a tag it does not know fails the record, which then reaches the DLQ
//! instead of being acknowledged unread.

use serde::{Deserialize, Serialize};

use crate::delivery::DeliveryKey;
use crate::ids::{DeliveryId, HookId, TenantId};

/// A message on the delivery queue: everything the worker needs, so the hot path reads
/// no event from the table.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type")]
pub enum DeliveryTask {
    /// The first format.
    #[serde(rename = "delivery.v1")]
    V1 {
        /// Which delivery.
        delivery: DeliveryKey,
        /// The envelope, exactly the bytes to send and sign; left out when larger than
        /// [`INLINE_BODY_MAX`], in which case the worker reads it from the event store
        /// (one read per event, not per hook, when one event fans out widely).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        body: Option<String>,
    },
}

/// Envelopes up to this size ride inside the delivery message. Larger ones would make a
/// fan-out to thousands of hooks copy the event thousands of times through the queue.
pub const INLINE_BODY_MAX: usize = 16 * 1024;

impl DeliveryTask {
    /// The body text for the queue.
    pub fn to_json(&self) -> String {
        // A struct of strings always serialises.
        serde_json::to_string(self).unwrap_or_default()
    }
}

/// The `source` of every event the platform itself puts on the bus.
pub const PLATFORM_SOURCE: &str = "hookbridge";

/// The platform's own event types, for customers' EventBridge rules and for the verifier.
pub mod event_type {
    /// A hook was created.
    pub const HOOK_CREATED: &str = "hook.created";
    /// A hook was replaced.
    pub const HOOK_UPDATED: &str = "hook.updated";
    /// A hook was deleted.
    pub const HOOK_DELETED: &str = "hook.deleted";
    /// An operator asked for the ownership challenge.
    pub const HOOK_VERIFICATION_REQUESTED: &str = "hook.verification.requested";
    /// The endpoint answered the challenge.
    pub const HOOK_VERIFIED: &str = "hook.verified";
    /// The endpoint failed the challenge.
    pub const HOOK_VERIFICATION_FAILED: &str = "hook.verification.failed";
    /// Credentials work.
    pub const HOOK_AUTHORIZED: &str = "hook.authorized";
    /// Credentials were refused.
    pub const HOOK_DEAUTHORIZED: &str = "hook.deauthorized";
    /// A hook has been failing for a while and will be disabled if it goes on.
    pub const HOOK_FAILING: &str = "hook.failing";
    /// A hook was disabled by the failure rule or by a 410.
    pub const HOOK_DISABLED: &str = "hook.disabled";
    /// A delivery ran out of attempts.
    pub const DELIVERY_EXHAUSTED: &str = "delivery.exhausted";
    /// The test event sent by `POST /v1/hooks/{id}/test`.
    pub const HOOK_TEST: &str = "hook.test";

    /// The lifecycle events the verifier acts on (the verify queue's rule).
    pub const VERIFIER_TRIGGERS: &[&str] = &[HOOK_CREATED, HOOK_UPDATED, HOOK_VERIFICATION_REQUESTED];
}

impl PlatformDetail {
    /// The bus entry for an event of `kind` with this detail (source `hookbridge`).
    pub fn bus_entry(&self, kind: &str) -> crate::envelope::BusEntry {
        crate::envelope::BusEntry {
            detail_type: kind.to_owned(),
            source: PLATFORM_SOURCE.to_owned(),
            time: None,
            resources: Vec::new(),
            // Ids, a number and strings always serialise.
            detail: serde_json::value::to_raw_value(self).unwrap_or_else(|_| unreachable!("ids and strings serialise")),
        }
    }

    /// The detail of an event about `hook`.
    pub fn about(hook: &crate::hook::Hook, delivery_id: Option<DeliveryId>, reason: Option<String>) -> Self {
        Self { tenant: hook.tenant.clone(), hook_id: hook.id, hook_version: Some(hook.version), delivery_id, reason }
    }
}

/// The `detail` of the platform's own events.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PlatformDetail {
    /// The hook's tenant (also what customers' rules route on).
    pub tenant: TenantId,
    /// The hook.
    pub hook_id: HookId,
    /// The hook's version when the event was emitted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hook_version: Option<u64>,
    /// The delivery, for delivery events.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delivery_id: Option<DeliveryId>,
    /// A human-readable reason, for failures and disables.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}
