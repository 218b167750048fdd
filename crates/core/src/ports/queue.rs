//! A durable queue with SQS's semantics: batches, delay, visibility timeout, receive
//! count, and a dead-letter queue after too many receives.

use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};

use crate::Result;

/// The most messages one send, receive or delete call handles (SQS's batch limit).
pub const MAX_BATCH: usize = 10;

/// The largest message body a queue takes, as an SQS queue by default (256 KiB).
pub const MAX_MESSAGE_BYTES: usize = 256 * 1024;

/// The three queues the stages consume.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum QueueRole {
    /// Product events from the bus, for matching.
    Ingest,
    /// Deliveries to send.
    Delivery,
    /// Lifecycle events for the verifier.
    Verify,
}

/// A message to send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutgoingMessage {
    /// The body.
    pub body: String,
    /// How long before it may be received (at most 15 minutes, as on SQS).
    pub delay: Duration,
    /// How much sooner than `delay` it may be received, its receiver waiting out the rest.
    /// A queue that counts delays in whole seconds (SQS) rounds into this allowance rather
    /// than past the delay; one that keeps exact delays has no use for it.
    pub early: Duration,
    /// Whose message it is (a hook, a tenant), for fairness: a group with a backlog does
    /// not hold back other groups' messages (SQS fair queues' `MessageGroupId`).
    pub group: Option<String>,
}

impl OutgoingMessage {
    /// A message receivable at once, in no group.
    pub fn now(body: String) -> Self {
        Self { body, delay: Duration::ZERO, early: Duration::ZERO, group: None }
    }

    /// The message, in `group`.
    pub fn in_group(mut self, group: impl Into<String>) -> Self {
        self.group = Some(group.into());
        self
    }
}

/// The handle that acknowledges or postpones one receipt of a message.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Receipt(pub String);

/// A received message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReceivedMessage {
    /// The message id, stable across receives.
    pub id: String,
    /// The body.
    pub body: String,
    /// This receipt's handle.
    pub receipt: Receipt,
    /// How many times it has been received, this time included (1 the first time).
    pub receive_count: u32,
    /// When it was first sent; the same on every receive.
    pub sent_at: DateTime<Utc>,
}

/// What a stage reports after handling a batch: the messages that failed, by id. The
/// rest are deleted (by Lambda's event source mapping, or by the local runner); the
/// failed ones come back after their visibility timeout (or the delay the stage set).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BatchOutcome {
    /// Ids of the messages that were not handled.
    pub failed: Vec<String>,
}

/// How many messages a queue holds, by state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct QueueDepth {
    /// Receivable now.
    pub visible: u64,
    /// Received and not yet acknowledged or returned.
    pub in_flight: u64,
    /// Sent with a delay that has not passed.
    pub delayed: u64,
}

impl QueueDepth {
    /// Every message the queue holds.
    pub fn total(&self) -> u64 {
        self.visible + self.in_flight + self.delayed
    }
}

/// The messages of one send that were not sent: their places in the slice given, and why.
/// The others were sent.
#[derive(Debug)]
pub struct Unsent {
    /// Indices into the messages given, ascending.
    pub indices: Vec<usize>,
    /// Why: the first error met.
    pub error: crate::Error,
}

/// The longest send delay, as on SQS.
pub const MAX_SEND_DELAY: Duration = Duration::from_secs(15 * 60);

/// A durable queue.
///
/// A message received and neither acknowledged nor postponed comes back after the
/// visibility timeout with a higher receive count. Received once more after the
/// queue's maximum receive count, it moves to the dead-letter queue instead.
#[async_trait]
pub trait Queue: Send + Sync {
    /// The queue's name.
    fn name(&self) -> &str;

    /// Sends messages, in batches of [`MAX_BATCH`]. All are sent or an error is returned;
    /// after an error some may have been sent all the same ([`Queue::send_each`] says which).
    async fn send_batch(&self, messages: &[OutgoingMessage]) -> Result<()> {
        self.send_each(messages).await.map_err(|unsent| unsent.error)
    }

    /// Sends messages, each judged alone (a delay over [`MAX_SEND_DELAY`] refuses only its
    /// message), and says which were not sent. A caller that hands work on in these
    /// messages needs this: where one of ten could not be sent, the other nine were.
    async fn send_each(&self, messages: &[OutgoingMessage]) -> Result<(), Unsent>;

    /// Receives up to `max` (≤ [`MAX_BATCH`]) messages, waiting up to `wait` for the first.
    /// Groups are served in turn, so one group's backlog never holds back the others'
    /// messages; within a group, oldest first.
    async fn receive(&self, max: usize, wait: Duration) -> Result<Vec<ReceivedMessage>>;

    /// Deletes received messages. A stale receipt (the message was received again since)
    /// is ignored, as on SQS.
    async fn ack(&self, receipts: &[Receipt]) -> Result<()>;

    /// Makes a received message receivable again after `delay` (0 = at once).
    async fn retry_after(&self, receipt: &Receipt, delay: Duration) -> Result<()>;

    /// How many messages it holds.
    async fn depth(&self) -> Result<QueueDepth>;

    /// Hands a message that can never succeed (it does not parse) back at once, so it
    /// reaches the dead-letter queue after its few receives instead of waiting out a
    /// visibility timeout each time. It is never acknowledged unread.
    async fn reject(&self, message: &ReceivedMessage) {
        if let Err(e) = self.retry_after(&message.receipt, Duration::ZERO).await {
            tracing::warn!(queue = self.name(), message_id = %message.id, error = %e, "could not return a malformed message early");
        }
    }
}
