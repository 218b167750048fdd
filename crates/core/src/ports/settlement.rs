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
    /// Messages to send, by queue name.
    pub sends: &'a [(&'a str, Vec<OutgoingMessage>)],
    /// The received messages to delete.
    pub acks: &'a [Receipt],
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
