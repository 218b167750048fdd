//! The bus on EventBridge: PutEvents in batches of 10, entries that fail retried, 256 KiB
//! per event enforced here (the emulator does not).

use std::time::Duration;

use async_trait::async_trait;
use aws_sdk_eventbridge::Client;
use aws_sdk_eventbridge::primitives::DateTime as AwsTime;
use aws_sdk_eventbridge::types::PutEventsRequestEntry;
use futures::StreamExt;
use hookbridge_core::envelope::BusEntry;
use hookbridge_core::ids::EventId;
use hookbridge_core::ports::{Bus, MAX_BATCH};
use hookbridge_core::{Error, Result};

/// Rounds of retrying entries EventBridge refused (throttling, internal failures).
const PUT_ROUNDS: u32 = 4;

/// A custom event bus.
#[derive(Debug, Clone)]
pub struct EventBridgeBus {
    client: Client,
    bus: String,
}

impl EventBridgeBus {
    /// The bus named (or with the ARN) `bus`.
    pub fn new(client: Client, bus: impl Into<String>) -> Self {
        Self { client, bus: bus.into() }
    }

    fn entry(&self, e: &BusEntry) -> PutEventsRequestEntry {
        PutEventsRequestEntry::builder()
            .event_bus_name(&self.bus)
            .source(&e.source)
            .detail_type(&e.detail_type)
            .detail(e.detail.get())
            .set_time(e.time.map(|t| AwsTime::from_secs(t.timestamp())))
            .set_resources((!e.resources.is_empty()).then(|| e.resources.clone()))
            .build()
    }

    async fn put_chunk(&self, chunk: &[BusEntry]) -> Result<Vec<EventId>> {
        let mut ids: Vec<Option<EventId>> = vec![None; chunk.len()];
        for round in 0..PUT_ROUNDS {
            let pending: Vec<usize> = (0..chunk.len()).filter(|i| ids[*i].is_none()).collect();
            if pending.is_empty() {
                break;
            }
            if round > 0 {
                tokio::time::sleep(Duration::from_millis(100 << round)).await;
            }
            let out = self
                .client
                .put_events()
                .set_entries(Some(pending.iter().map(|i| self.entry(&chunk[*i])).collect()))
                .send()
                .await
                .map_err(|e| Error::backend("eventbridge.PutEvents", e))?;
            for (i, result) in pending.iter().zip(out.entries()) {
                match (result.event_id(), result.error_code()) {
                    (Some(id), None) => {
                        ids[*i] = Some(id.parse().map_err(|e| Error::backend("eventbridge.PutEvents", e))?);
                    }
                    (_, code) => {
                        let code = code.unwrap_or("unknown");
                        // Malformed entries never succeed; only transient failures are retried.
                        if code.contains("Malformed") || code.contains("Validation") || code.contains("Invalid") {
                            return Err(Error::backend(
                                "eventbridge.PutEvents",
                                format!("entry refused: {code}: {}", result.error_message().unwrap_or("")),
                            ));
                        }
                        tracing::warn!(code, "an event was refused by the bus; retrying it");
                    }
                }
            }
        }
        ids.into_iter()
            .map(|id| id.ok_or_else(|| Error::backend("eventbridge.PutEvents", "an event was refused on every retry")))
            .collect()
    }
}

#[async_trait]
impl Bus for EventBridgeBus {
    async fn publish(&self, entries: Vec<BusEntry>) -> Result<Vec<EventId>> {
        entries.iter().try_for_each(BusEntry::fits)?;
        // In order (ids answer entries one for one), a bounded number at a time.
        // Futures start when polled, so making them all first starts none of them.
        let puts: Vec<_> = entries.chunks(MAX_BATCH).map(|c| self.put_chunk(c)).collect();
        let chunks: Vec<Result<Vec<EventId>>> =
            futures::stream::iter(puts).buffered(crate::REQUESTS_IN_FLIGHT).collect().await;
        let mut ids = Vec::with_capacity(entries.len());
        for r in chunks {
            ids.extend(r?);
        }
        Ok(ids)
    }
}
