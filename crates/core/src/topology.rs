//! The resources the platform runs on, named and configured once: `hookbridge init`
//! creates them on either backend, and a test holds `template.yaml` to the same names and
//! settings.

use std::time::Duration;

use crate::message::{PLATFORM_SOURCE, event_type};
use crate::ports::{Rule, RulePattern, SourceMatch};

/// A queue and its dead-letter queue.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueueSpec {
    /// The queue's name.
    pub name: String,
    /// The dead-letter queue's name.
    pub dlq: String,
    /// How long a received message stays invisible before it is handed out again.
    pub visibility_timeout: Duration,
    /// Receives after which the next receive moves the message to the DLQ.
    pub max_receive_count: u32,
}

/// How long queues and DLQs keep messages: the SQS maximum, so nothing expires unread
/// while someone investigates a DLQ.
pub const QUEUE_RETENTION: Duration = Duration::from_secs(14 * 24 * 60 * 60);

/// Every named resource.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Topology {
    /// The prefix every name starts with: the stack's name in metrics and tags.
    pub prefix: String,
    /// The DynamoDB table.
    pub table: String,
    /// The event bus.
    pub bus: String,
    /// Product events from the bus.
    pub ingest: QueueSpec,
    /// Deliveries: the fast lane.
    pub delivery: QueueSpec,
    /// Deliveries to endpoints that were slow or down lately: the slow lane.
    pub delivery_slow: QueueSpec,
    /// Lifecycle events for the verifier.
    pub verify: QueueSpec,
    /// Where the bus's rules put an event they could not hand to their queue after
    /// [`RULE_RETRY_ATTEMPTS`] tries over [`RULE_EVENT_AGE`] (a missing permission, a
    /// deleted queue), rather than drop it.
    pub rules_dlq: String,
}

/// How many times a rule tries again to hand an event to its queue (EventBridge's most).
pub const RULE_RETRY_ATTEMPTS: i32 = 185;
/// How long a rule tries to hand an event to its queue (EventBridge's most, 24 hours).
pub const RULE_EVENT_AGE: Duration = Duration::from_secs(86_400);

/// How many times an ingest message is received before it goes to the dead-letter queue.
pub const INGEST_RECEIVES: u32 = 5;

/// How many times a delivery lane's message is received before it goes to the dead-letter
/// queue. Tasks count their own attempts, so a message is received about once; twelve
/// still covers `delivery.v1` messages, which counted attempts by receives. On the last,
/// a delivery that could not be handled is recorded `FAILED` rather than left to go.
pub const LANE_RECEIVES: u32 = 12;

/// How many times the verify queue hands a check out before its dead-letter queue takes it.
pub const VERIFY_RECEIVES: u32 = 5;

impl Topology {
    /// The resources of a stack whose names start with `prefix` (default `hookbridge`).
    pub fn named(prefix: &str) -> Self {
        let q = |role: &str, visibility_secs: u64, max_receive_count: u32| QueueSpec {
            name: format!("{prefix}-{role}"),
            dlq: format!("{prefix}-{role}-dlq"),
            visibility_timeout: Duration::from_secs(visibility_secs),
            max_receive_count,
        };
        Self {
            prefix: prefix.to_owned(),
            table: format!("{prefix}-table"),
            bus: format!("{prefix}-bus"),
            // Six times the function timeouts (AWS's advice for SQS event sources), so a
            // slow batch is never handed to a second invocation while the first still runs.
            ingest: q("ingest", 180, INGEST_RECEIVES),
            delivery: q("delivery", 180, LANE_RECEIVES),
            delivery_slow: q("delivery-slow", 180, LANE_RECEIVES),
            // The verifier's timeout is 60 s: a challenge and then a token fetch.
            verify: q("verify", 360, VERIFY_RECEIVES),
            rules_dlq: format!("{prefix}-rules-dlq"),
        }
    }

    /// The bus rules: product events to the ingest queue, lifecycle events to the verify queue.
    pub fn rules(&self) -> Vec<Rule> {
        vec![
            Rule {
                name: format!("{}-product-events", self.bus),
                pattern: RulePattern {
                    source: SourceMatch::AnythingBut(PLATFORM_SOURCE.to_owned()),
                    detail_types: Vec::new(),
                },
                target_queue: self.ingest.name.clone(),
            },
            Rule {
                name: format!("{}-hook-lifecycle", self.bus),
                pattern: RulePattern {
                    source: SourceMatch::Exactly(PLATFORM_SOURCE.to_owned()),
                    detail_types: event_type::VERIFIER_TRIGGERS.iter().map(|s| (*s).to_owned()).collect(),
                },
                target_queue: self.verify.name.clone(),
            },
        ]
    }

    /// The four queues.
    pub fn queues(&self) -> [&QueueSpec; 4] {
        [&self.ingest, &self.delivery, &self.delivery_slow, &self.verify]
    }
}

impl Default for Topology {
    fn default() -> Self {
        Self::named("hookbridge")
    }
}
