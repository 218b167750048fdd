//! The ports: what the stages need from storage, queues, the bus and the key, each with
//! exactly two real implementations (`hookbridge-aws`, `hookbridge-embedded`) proven
//! alike by one contract suite.

mod bus;
mod key;
mod limiter;
mod queue;
mod sealer;
mod settlement;
mod store;

pub use bus::{Bus, PartlyPublished, Rule, RulePattern, SourceMatch};
pub use key::KeySource;
pub use limiter::{Admission, RateLimiter, Step};
pub use queue::{
    BatchOutcome, MAX_BATCH, MAX_MESSAGE_BYTES, MAX_SEND_DELAY, OutgoingMessage, Queue, QueueDepth, QueueRole, Receipt,
    ReceivedMessage, Unsent,
};
pub use sealer::Sealer;
pub use settlement::{CarriedOn, Settled, Settlement};
pub use store::{
    Claim, DeliveryStore, EventStore, EventTypeStore, HookAccess, HookStore, IdempotencyStore, Order, Page,
    PortalStore, ROUTING_LIST_STALE_AT_MOST, ReplayStore, RoutingList, StoredResponse, Window, distinct_keys,
    routing_too_large,
};

use std::sync::Arc;

/// A deployed resource a stage's ports reach. Each stage lists its own, next to its ports,
/// and a test holds each function's permissions in `template.yaml` to that list.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Resource {
    /// The table: hooks, deliveries, events, idempotency keys, rate state.
    Table,
    /// The event bus.
    Bus,
    /// The ingest queue.
    IngestQueue,
    /// The fast delivery lane.
    DeliveryQueue,
    /// The slow delivery lane.
    SlowQueue,
    /// The verify queue.
    VerifyQueue,
    /// The key that seals hook secrets.
    Key,
    /// The secret holding the HS256 key API tokens are signed with.
    TokenKey,
}

/// Every port of one backend, wired together.
#[derive(Clone)]
pub struct Backend {
    /// Hooks.
    pub hooks: Arc<dyn HookStore>,
    /// Deliveries and attempts.
    pub deliveries: Arc<dyn DeliveryStore>,
    /// Envelopes kept for replay.
    pub events: Arc<dyn EventStore>,
    /// Publish de-duplication.
    pub idempotency: Arc<dyn IdempotencyStore>,
    /// Declared and seen event types.
    pub event_types: Arc<dyn EventTypeStore>,
    /// Portal links and console sessions.
    pub portal: Arc<dyn PortalStore>,
    /// Replay jobs.
    pub replays: Arc<dyn ReplayStore>,
    /// The bus products publish to.
    pub bus: Arc<dyn Bus>,
    /// Product events matched to hooks.
    pub ingest_queue: Arc<dyn Queue>,
    /// Deliveries to send: the fast lane.
    pub delivery_queue: Arc<dyn Queue>,
    /// Deliveries to endpoints that were slow or down lately: the slow lane.
    pub slow_queue: Arc<dyn Queue>,
    /// Lifecycle events for the verifier.
    pub verify_queue: Arc<dyn Queue>,
    /// Encrypts hook secrets at rest.
    pub sealer: Arc<dyn Sealer>,
    /// Delivery pace and publish rates.
    pub limiter: Arc<dyn RateLimiter>,
    /// A group's records, sends and deletions in one transaction, where the backend can.
    pub settlement: Option<Arc<dyn Settlement>>,
}

impl Backend {
    /// The queue of a delivery lane.
    pub fn lane(&self, lane: crate::hook::Lane) -> &Arc<dyn Queue> {
        match lane {
            crate::hook::Lane::Fast => &self.delivery_queue,
            crate::hook::Lane::Slow => &self.slow_queue,
        }
    }

    /// The two delivery lanes.
    pub fn lanes(&self) -> Lanes {
        Lanes { fast: self.delivery_queue.clone(), slow: self.slow_queue.clone() }
    }
}

/// The two delivery lanes' queues, for the stages that send deliveries.
#[derive(Clone)]
pub struct Lanes {
    /// The fast lane.
    pub fast: Arc<dyn Queue>,
    /// The slow lane.
    pub slow: Arc<dyn Queue>,
}

impl Lanes {
    /// A lane's queue.
    pub fn get(&self, lane: crate::hook::Lane) -> &Arc<dyn Queue> {
        match lane {
            crate::hook::Lane::Fast => &self.fast,
            crate::hook::Lane::Slow => &self.slow,
        }
    }
}

impl std::fmt::Debug for Lanes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Lanes").field("fast", &self.fast.name()).field("slow", &self.slow.name()).finish()
    }
}

impl std::fmt::Debug for Backend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Backend").finish_non_exhaustive()
    }
}
