//! Queue message bodies and the platform's own (operational) events.
//!
//! Bodies are tagged, versioned enums so a new format can roll out beside the old: a
//! worker that meets a tag it does not know fails the record, which then reaches the DLQ
//! instead of being acknowledged unread.

use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use crate::delivery::DeliveryKey;
use crate::ids::{DeliveryId, HookId, TenantId};

/// The tag of the current delivery task format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub enum TaskFormat {
    /// The current format.
    #[default]
    #[serde(rename = "delivery.v2")]
    V2,
}

/// A message on a delivery lane: one delivery on its way, everything the worker needs so
/// the hot path reads no event from the table. `{"type": "delivery.v2", …}`.
///
/// A plain struct with its tag as a field rather than a tagged enum: serde reads tagged
/// enums through a buffer, which cannot carry the envelope as raw JSON.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Task {
    /// The format tag; a worker that meets a tag it does not know fails the message, which
    /// then reaches the DLQ instead of being acknowledged unread.
    #[serde(rename = "type")]
    pub format: TaskFormat,
    /// Which delivery.
    pub delivery: DeliveryKey,
    /// How many times the delivery was sent again by request (retry, replay); the
    /// delivery's record keeps only the newest round's status.
    #[serde(default)]
    pub round: u32,
    /// Attempts made in this round. The message carries it, so a redelivery, a deferral
    /// or a throttle is never mistaken for an attempt.
    #[serde(default)]
    pub attempt: u32,
    /// Not to be sent before this time (a retry's delay, an open circuit, a rate-limit
    /// slot). A message that arrives earlier is handed back with the rest of the wait.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub not_before: Option<DateTime<Utc>>,
    /// `not_before` is a slot reserved under the hook's rate limit: at that time the
    /// delivery goes without reserving again.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub slot: bool,
    /// The schedule the slot was reserved in ([`crate::rate::schedule_of`]). A slot of
    /// another schedule than the hook's now (its limit changed or removed since) no longer
    /// holds: a limit raised to drain a backlog would otherwise do nothing until the old
    /// pace reached it. Absent from older versions' tasks: theirs is the schedule of the
    /// limit a hook was created with (0), the one key every limit shared then.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub slot_schedule: Option<i64>,
    /// The envelope, exactly the bytes to send and sign; left out when larger than
    /// [`INLINE_BODY_MAX`], in which case the worker reads it from the event store (one
    /// read per event, not per hook, when one event fans out widely).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub envelope: Option<Box<RawValue>>,
    /// Set while nothing is recorded of the delivery: ingest queues a delivery without
    /// writing it down, and the worker's first record of it makes it (decision 0021).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unrecorded: Option<Unrecorded>,
    /// Set when ingest could not read the hook (its document written by a newer version
    /// during a deploy) and so could not tell whether it wants the event: the worker, once
    /// it can read the hook, sends the delivery only if it does, and otherwise drops the
    /// task with nothing recorded (decision 0026).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unrouted: Option<Unrouted>,
    /// Set when the event was routed to the hook (by ingest, or again by a retry or a
    /// replay): the event's site. The hook may change while its delivery waits (a retry's
    /// delay, a rate limit, an open circuit): the worker sends it only if the hook still
    /// wants the event, so a hook moved to other sites (another customer's, perhaps at a
    /// new URL) is not sent the events of the sites it had. Absent from a test event's
    /// task, which goes whatever the hook subscribes to, and from older versions' tasks.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub routed: Option<Routed>,
    /// What opened this round (`replayed by …`, a retry's request), as the request's own
    /// `PENDING` record says it. The worker's records carry it too: that record may land
    /// after them, or not at all (a replay page failing between its send and its record),
    /// and a replay finds what it re-sent by this note.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
    /// Fields a newer release wrote, kept as they were (decision 0044).
    #[serde(flatten)]
    pub newer: crate::newer::NewerFields,
}

/// What the worker needs to check a routed task against the hook as it is now
/// ([`Task::routed`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Routed {
    /// The event's site.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub site: Option<String>,
}

/// What the worker needs to route a task ingest could not ([`Task::unrouted`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Unrouted {
    /// The event's site, for a hook held to some sites.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub site: Option<String>,
}

/// What the first record of a delivery ingest did not write down needs from its task.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Unrecorded {
    /// When ingest queued it.
    pub created_at: DateTime<Utc>,
    /// The envelope is kept nowhere else (the event went to this hook alone), so the first
    /// record keeps it with the delivery for Read, retry and replay.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub keep_envelope: bool,
}

/// The first format, `{"type": "delivery.v1", "delivery": …, "body": "<envelope>"}`: the
/// envelope as a string, attempts counted by receives. Still read, so messages queued
/// before an upgrade are delivered after it.
#[derive(Deserialize)]
struct TaskV1 {
    #[serde(rename = "type")]
    _format: V1,
    delivery: DeliveryKey,
    #[serde(default)]
    body: Option<String>,
}

#[derive(Deserialize)]
enum V1 {
    #[serde(rename = "delivery.v1")]
    V1,
}

/// How much before its rate-limit slot a delivery waiting for it may come back (and wait
/// out the rest in the worker): a queue that counts delays in whole seconds then rounds
/// into this second rather than past the slot.
pub const SLOT_EARLY: Duration = Duration::from_secs(1);

/// Envelopes up to this size ride inside the delivery message. Larger ones would make a
/// fan-out to thousands of hooks copy the event thousands of times through the queue.
pub const INLINE_BODY_MAX: usize = 16 * 1024;

impl Task {
    /// A task that has made no attempt in `round`, carrying `body` when it is small.
    pub fn new(delivery: DeliveryKey, round: u32, body: &str) -> Self {
        let envelope = if body.len() <= INLINE_BODY_MAX { RawValue::from_string(body.to_owned()).ok() } else { None };
        Self { envelope, ..Self::by_reference(delivery, round) }
    }

    /// A task that has made no attempt in `round`, whose envelope the worker reads from the
    /// event store (it is larger than [`INLINE_BODY_MAX`]).
    pub fn by_reference(delivery: DeliveryKey, round: u32) -> Self {
        Self {
            newer: Default::default(),
            format: TaskFormat::V2,
            delivery,
            round,
            attempt: 0,
            not_before: None,
            slot: false,
            slot_schedule: None,
            envelope: None,
            unrecorded: None,
            unrouted: None,
            routed: None,
            note: None,
        }
    }

    /// The same task, queued at `created_at` with nothing recorded of its delivery; the
    /// envelope is to be kept with the delivery when `keep_envelope` (and it rides here).
    pub fn unrecorded(mut self, created_at: DateTime<Utc>, keep_envelope: bool) -> Self {
        let keep_envelope = keep_envelope && self.envelope.is_some();
        self.unrecorded = Some(Unrecorded { created_at, keep_envelope });
        self
    }

    /// The same task, for a hook ingest could not read: the worker routes it.
    pub fn unrouted(mut self, site: Option<String>) -> Self {
        self.unrouted = Some(Unrouted { site });
        self
    }

    /// The same task, routed to its hook for an event of `site`.
    pub fn routed(mut self, site: Option<String>) -> Self {
        self.routed = Some(Routed { site });
        self
    }

    /// What this task's next record carries to make the delivery, if nothing is recorded
    /// of it yet.
    pub fn opening(&self) -> Option<crate::delivery::Opening> {
        self.unrecorded.map(|u| crate::delivery::Opening {
            created_at: u.created_at,
            envelope: if u.keep_envelope { self.envelope.as_ref().map(|e| e.get().to_owned()) } else { None },
        })
    }

    /// Reads a message body: `None` when it is not a delivery task. A `delivery.v1`
    /// message counts its attempts by receives, as that format did.
    pub fn parse(body: &str, receive_count: u32) -> Option<Self> {
        if let Ok(t) = serde_json::from_str::<Task>(body) {
            return Some(t);
        }
        let v1: TaskV1 = serde_json::from_str(body).ok()?;
        Some(Self {
            newer: Default::default(),
            format: TaskFormat::V2,
            delivery: v1.delivery,
            round: 0,
            attempt: receive_count.saturating_sub(1),
            not_before: None,
            slot: false,
            slot_schedule: None,
            envelope: v1.body.and_then(|b| RawValue::from_string(b).ok()),
            unrecorded: None,
            unrouted: None,
            routed: None,
            note: None,
        })
    }

    /// The message body.
    pub fn to_json(&self) -> String {
        // Ids, numbers, a timestamp and raw JSON always serialise.
        serde_json::to_string(self).unwrap_or_default()
    }

    /// The message that sends this task, delayed until `not_before` (at most
    /// [`crate::ports::MAX_SEND_DELAY`]: a longer wait takes more than one hop).
    pub fn message(&self, now: DateTime<Utc>) -> crate::ports::OutgoingMessage {
        let wait = self.not_before.and_then(|t| (t - now).to_std().ok()).unwrap_or_default();
        crate::ports::OutgoingMessage {
            body: self.to_json(),
            delay: wait.min(crate::ports::MAX_SEND_DELAY),
            // A delivery waiting for its rate-limit slot may come back in the second before
            // it and wait in the worker; later than a second after it, the slot is lost.
            early: if self.slot && !wait.is_zero() { SLOT_EARLY } else { Duration::ZERO },
            // Per hook: a hook with a backlog does not hold back other hooks' deliveries.
            group: Some(self.delivery.hook_id.to_string()),
        }
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
    /// A hook's circuit opened: its endpoint is down and deliveries wait for a probe.
    pub const HOOK_CIRCUIT_OPENED: &str = "hook.circuit.opened";
    /// A hook's circuit closed: its endpoint answered again.
    pub const HOOK_CIRCUIT_CLOSED: &str = "hook.circuit.closed";
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

#[cfg(test)]
mod tests {
    use super::*;

    fn key() -> DeliveryKey {
        DeliveryKey {
            tenant: "acme".parse().unwrap(),
            hook_id: HookId::generate(),
            delivery_id: DeliveryId::generate(),
            event_id: "e-1".parse().unwrap(),
            event_type: "user.login".into(),
        }
    }

    #[test]
    fn the_envelope_rides_as_json_byte_for_byte() {
        let body = r#"{"version":"0","id":"e-1","detail":{"b":1, "a":"x"}}"#;
        let mut t = Task::new(key(), 2, body);
        t.attempt = 3;
        let json = t.to_json();
        assert!(json.starts_with(r#"{"type":"delivery.v2","#), "{json}");
        assert!(json.contains(body), "the envelope is embedded as JSON, not as a string: {json}");
        let back = Task::parse(&json, 7).unwrap();
        assert_eq!(back.envelope.unwrap().get(), body);
        assert_eq!((back.round, back.attempt), (2, 3), "attempts come from the task, not the receive count");
    }

    #[test]
    fn a_v1_message_is_still_read_and_counts_attempts_by_receives() {
        let k = key();
        let v1 = serde_json::json!({"type": "delivery.v1", "delivery": k, "body": "{\"id\":\"e-1\"}"}).to_string();
        let t = Task::parse(&v1, 3).unwrap();
        assert_eq!(t.attempt, 2);
        assert_eq!(t.envelope.unwrap().get(), r#"{"id":"e-1"}"#);
        assert!(Task::parse(r#"{"type":"delivery.v9","delivery":{}}"#, 1).is_none());
        assert!(Task::parse("not json", 1).is_none());
    }

    #[test]
    fn a_long_wait_is_sent_as_one_hop_of_at_most_fifteen_minutes() {
        let now = Utc::now();
        let mut t = Task::new(key(), 0, "{}");
        t.not_before = Some(now + chrono::Duration::hours(5));
        assert_eq!(t.message(now).delay, crate::ports::MAX_SEND_DELAY);
        t.not_before = Some(now - chrono::Duration::seconds(5));
        assert_eq!(t.message(now).delay, std::time::Duration::ZERO);
    }

    #[test]
    fn only_a_delivery_waiting_for_its_rate_limit_slot_may_come_early() {
        let now = Utc::now();
        let mut t = Task::new(key(), 0, "{}");
        t.not_before = Some(now + chrono::Duration::milliseconds(2_300));
        assert_eq!(t.message(now).early, Duration::ZERO, "a retry is never early");
        t.slot = true;
        let m = t.message(now);
        assert_eq!((m.delay, m.early), (Duration::from_millis(2_300), SLOT_EARLY));
        t.not_before = Some(now);
        assert_eq!(t.message(now).early, Duration::ZERO, "due now: nothing to round");
    }
}
