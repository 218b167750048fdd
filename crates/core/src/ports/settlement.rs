//! What a group of delivery messages came to, written in one transaction where the
//! backend can.

use async_trait::async_trait;

use super::{OutgoingMessage, Receipt};
use crate::Result;
use crate::delivery::DeliveryUpdate;

/// One group's outcome: its records, the messages that carry its deliveries on, and the
/// messages it settles.
#[derive(Debug, Clone, Copy)]
pub struct Settled<'a> {
    /// Attempts and statuses, as [`super::DeliveryStore::record`] takes them.
    pub updates: &'a [DeliveryUpdate],
    /// Messages to send, by queue name, each carrying on a received message.
    pub sends: &'a [(&'a str, Vec<CarriedOn>)],
    /// The received messages to delete.
    pub acks: &'a [Receipt],
}

/// A message that carries a delivery on from a received message (its retry, or the same
/// task handed back). It is sent only if that message was still held, so deleted by the
/// same settlement: a message whose visibility timeout ran out while it was worked on
/// may have been received again, and the second holder carries the delivery on itself.
/// Sent by both, the delivery would go on in two chains of retries.
#[derive(Debug, Clone)]
pub struct CarriedOn {
    /// Where in the settlement's `updates` the record of what became of its delivery is,
    /// if there is one. When the message it replaces is no longer held, that record keeps
    /// only its attempt ([`crate::delivery::Delivery::keep_attempt`]).
    pub record: Option<usize>,
    /// The message to send.
    pub message: OutgoingMessage,
    /// The receipt of the message it carries on; also among the settlement's `acks`.
    pub replaces: Receipt,
}

/// Records, sends and deletes a group's outcome as one: all of it or none. Only a backend
/// whose store and queues share one database has it (the embedded one): there no crash
/// can fall between the three writes, so none can leave a retry beside the message it
/// replaces (docs/decisions/0024). Elsewhere the worker writes them in turn — records,
/// then sends, then deletes — so a crash between them repeats work, never loses it.
#[async_trait]
pub trait Settlement: Send + Sync {
    /// Writes `settled`; on an error nothing of it was written.
    async fn settle(&self, settled: Settled<'_>) -> Result<()>;
}
