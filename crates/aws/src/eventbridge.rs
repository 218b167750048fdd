//! The bus on EventBridge: PutEvents in requests of at most 10 entries and 256 KiB,
//! entries that fail retried, 256 KiB per event enforced here (the emulator enforces
//! neither limit).

use std::time::Duration;

use async_trait::async_trait;
use aws_sdk_eventbridge::Client;
use aws_sdk_eventbridge::primitives::DateTime as AwsTime;
use aws_sdk_eventbridge::types::PutEventsRequestEntry;
use futures::StreamExt;
use hookbridge_core::envelope::{BusEntry, MAX_EVENT_BYTES};
use hookbridge_core::ids::EventId;
use hookbridge_core::ports::{Bus, MAX_BATCH, PartlyPublished};
use hookbridge_core::{Error, Result};

/// Rounds of retrying entries EventBridge refused (throttling, internal failures).
const PUT_ROUNDS: u32 = 4;

/// The entries of each `PutEvents` request, in order: at most [`MAX_BATCH`] entries and,
/// as EventBridge measures them ([`BusEntry::size`]), at most 256 KiB together, the limit
/// on the whole request and not only on each entry. Ten entries of 70 KiB are valid one by
/// one and refused as one request.
fn requests(entries: &[BusEntry]) -> Vec<std::ops::Range<usize>> {
    let mut out = Vec::new();
    let (mut start, mut bytes) = (0, 0);
    for (i, e) in entries.iter().enumerate() {
        let size = e.size();
        if i > start && (i - start == MAX_BATCH || bytes + size > MAX_EVENT_BYTES) {
            out.push(start..i);
            (start, bytes) = (i, 0);
        }
        bytes += size;
    }
    if start < entries.len() {
        out.push(start..entries.len());
    }
    out
}

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

    /// Puts one request's entries, retrying those refused for the moment: the id of each
    /// that went out, and what stopped the others. An entry that went out is never put
    /// again, whatever happens to the rest.
    async fn put_chunk(&self, chunk: &[BusEntry]) -> (Vec<Option<EventId>>, Option<Error>) {
        let mut ids: Vec<Option<EventId>> = vec![None; chunk.len()];
        for round in 0..PUT_ROUNDS {
            let pending: Vec<usize> = (0..chunk.len()).filter(|i| ids[*i].is_none()).collect();
            if pending.is_empty() {
                break;
            }
            if round > 0 {
                tokio::time::sleep(Duration::from_millis(100 << round)).await;
            }
            let out = match self
                .client
                .put_events()
                .set_entries(Some(pending.iter().map(|i| self.entry(&chunk[*i])).collect()))
                .send()
                .await
            {
                Ok(out) => out,
                Err(e) => return (ids, Some(Error::backend("eventbridge.PutEvents", e))),
            };
            let mut refused = None;
            for (i, result) in pending.iter().zip(out.entries()) {
                match (result.event_id(), result.error_code()) {
                    (Some(id), None) => match id.parse() {
                        Ok(id) => ids[*i] = Some(id),
                        // It went out; only its id is unreadable. Not put again.
                        Err(e) => refused = refused.or(Some(Error::backend("eventbridge.PutEvents", e))),
                    },
                    (_, code) => {
                        let code = code.unwrap_or("unknown");
                        // Malformed entries never succeed; only transient failures are retried.
                        if code.contains("Malformed") || code.contains("Validation") || code.contains("Invalid") {
                            refused = refused.or(Some(Error::backend(
                                "eventbridge.PutEvents",
                                format!("entry refused: {code}: {}", result.error_message().unwrap_or("")),
                            )));
                        } else {
                            tracing::warn!(code, "an event was refused by the bus; retrying it");
                        }
                    }
                }
            }
            if refused.is_some() {
                return (ids, refused);
            }
        }
        let all = ids.iter().all(Option::is_some);
        let error = (!all).then(|| Error::backend("eventbridge.PutEvents", "an event was refused on every retry"));
        (ids, error)
    }
}

#[async_trait]
impl Bus for EventBridgeBus {
    async fn publish(&self, entries: Vec<BusEntry>) -> Result<Vec<EventId>> {
        self.publish_each(entries).await.map_err(|p| p.error)
    }

    async fn publish_each(&self, entries: Vec<BusEntry>) -> std::result::Result<Vec<EventId>, PartlyPublished> {
        if let Err(error) = entries.iter().try_for_each(BusEntry::fits) {
            return Err(PartlyPublished { ids: vec![None; entries.len()], error });
        }
        // In order (ids answer entries one for one), a bounded number at a time.
        // Futures start when polled, so making them all first starts none of them.
        let puts: Vec<_> = requests(&entries).into_iter().map(|r| self.put_chunk(&entries[r])).collect();
        let chunks: Vec<(Vec<Option<EventId>>, Option<Error>)> =
            futures::stream::iter(puts).buffered(crate::REQUESTS_IN_FLIGHT).collect().await;
        let mut ids = Vec::with_capacity(entries.len());
        let mut error = None;
        for (chunk_ids, chunk_error) in chunks {
            ids.extend(chunk_ids);
            error = error.or(chunk_error);
        }
        match error {
            None => Ok(ids.into_iter().flatten().collect()),
            Some(error) => Err(PartlyPublished { ids, error }),
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)] // Tests fail loudly on purpose.

    use serde_json::value::RawValue;

    use super::*;

    fn entry(detail_bytes: usize) -> BusEntry {
        let detail = format!(r#"{{"tenant":"t","x":"{}"}}"#, "a".repeat(detail_bytes.saturating_sub(24)));
        BusEntry {
            detail_type: "t".into(),
            source: "s".into(),
            time: None,
            resources: vec![],
            detail: RawValue::from_string(detail).unwrap(),
        }
    }

    #[test]
    fn requests_hold_ten_entries_at_most() {
        let small: Vec<_> = (0..25).map(|_| entry(100)).collect();
        assert_eq!(requests(&small), [0..10, 10..20, 20..25]);
        assert!(requests(&[]).is_empty());
    }

    #[test]
    fn requests_hold_256_kib_at_most_in_order() {
        let kib = 1024;
        let sizes = [70 * kib, 70 * kib, 70 * kib, 70 * kib, 200 * kib, 56 * kib - 2, MAX_EVENT_BYTES - 2, 10];
        let entries: Vec<_> = sizes.iter().map(|s| entry(*s)).collect();
        let ranges = requests(&entries);
        assert_eq!(ranges, [0..3, 3..4, 4..6, 6..7, 7..8]);
        for r in ranges {
            let bytes: usize = entries[r.clone()].iter().map(BusEntry::size).sum();
            assert!(bytes <= MAX_EVENT_BYTES, "{r:?} weighs {bytes}");
        }
    }
}
