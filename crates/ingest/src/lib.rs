//! The ingest stage. For each event from the ingest queue: find the tenant's hooks that
//! want it, record one delivery per hook, keep the envelope for replay, and enqueue the
//! deliveries that may be sent. Hooks that may not receive it now (disabled, inactive,
//! unverified) get a `CANCELLED` delivery with the reason, so a replay after re-enabling
//! recovers it.
//!
//! Idempotent per ingest message: delivery ids are derived from the message's send time
//! and the (event, hook) pair, so a redelivered message records the same deliveries and
//! the receiver sees the same `webhook-id` on any duplicate.

use std::collections::BTreeMap;
use std::time::Duration;

use chrono::Utc;
use hookbridge_core::delivery::{Delivery, DeliveryKey, DeliveryUpdate};
use hookbridge_core::envelope::Envelope;
use hookbridge_core::hook::Hook;
use hookbridge_core::ids::{DeliveryId, HookId, TenantId};
use hookbridge_core::message::{DeliveryTask, INLINE_BODY_MAX};
use hookbridge_core::ports::{Backend, BatchOutcome, OutgoingMessage, ReceivedMessage};
use sha2::{Digest, Sha256};
use tracing::Instrument;

/// What ingest needs besides the ports.
#[derive(Debug, Clone)]
pub struct IngestSettings {
    /// The `account` filled into envelopes that lack one (the emulator leaves it out).
    pub account: String,
    /// The `region` filled into envelopes that lack one.
    pub region: String,
    /// How long envelopes are kept for replay.
    pub event_retention: Duration,
}

impl IngestSettings {
    /// Ingest's part of the deployment settings.
    pub fn from_settings(s: &hookbridge_core::settings::Settings) -> Self {
        Self { account: s.account.clone(), region: s.region.clone(), event_retention: s.event_retention }
    }
}

/// The ingest stage's dependencies.
#[derive(Debug, Clone)]
pub struct Ingest {
    /// The ports.
    pub backend: Backend,
    /// Settings.
    pub settings: IngestSettings,
}

/// The delivery id of `event` to `hook`, the same whenever this ingest message is
/// handled: the ULID's time is the message's send time, its randomness a hash of the
/// event and hook ids.
pub fn delivery_id(sent_at_ms: u64, event_id: &str, hook: HookId) -> DeliveryId {
    let digest = Sha256::new().chain_update(event_id).chain_update([0u8]).chain_update(hook.to_string()).finalize();
    let mut random = [0u8; 16];
    random[6..].copy_from_slice(&digest[..10]);
    DeliveryId::from_parts(sent_at_ms, u128::from_be_bytes(random))
}

struct Parsed<'a> {
    message: &'a ReceivedMessage,
    envelope: Envelope,
    tenant: TenantId,
    site: Option<String>,
}

/// Handles a batch from the ingest queue.
pub async fn handle(deps: &Ingest, messages: &[ReceivedMessage]) -> BatchOutcome {
    let mut outcome = BatchOutcome::default();
    let mut by_tenant: BTreeMap<TenantId, Vec<Parsed<'_>>> = BTreeMap::new();
    for m in messages {
        let parsed = Envelope::from_bus_json(&m.body, &deps.settings.account, &deps.settings.region)
            .and_then(|envelope| envelope.routing().map(|r| (envelope, r)));
        match parsed {
            Ok((envelope, routing)) => by_tenant.entry(routing.tenant.clone()).or_default().push(Parsed {
                message: m,
                envelope,
                tenant: routing.tenant,
                site: routing.site,
            }),
            Err(e) => {
                // Never acknowledged unread: it fails until the queue moves it to the DLQ.
                tracing::error!(message_id = %m.id, error = %e, "malformed event; it will reach the dead-letter queue");
                poison(deps, m).await;
                outcome.failed.push(m.id.clone());
            }
        }
    }
    for (tenant, events) in by_tenant {
        let span = tracing::info_span!("ingest", tenant = %tenant);
        if let Err(e) = ingest_tenant(deps, &tenant, &events).instrument(span).await {
            tracing::error!(tenant = %tenant, error = %e, "ingest failed; the events will be retried");
            outcome.failed.extend(events.iter().map(|p| p.message.id.clone()));
        }
    }
    outcome
}

/// Returns a message that can never succeed to the queue at once, so it reaches the DLQ
/// after its few receives instead of waiting out a visibility timeout each time.
async fn poison(deps: &Ingest, m: &ReceivedMessage) {
    if let Err(e) = deps.backend.ingest_queue.retry_after(&m.receipt, Duration::ZERO).await {
        tracing::warn!(message_id = %m.id, error = %e, "could not return a malformed message early");
    }
}

async fn ingest_tenant(deps: &Ingest, tenant: &TenantId, events: &[Parsed<'_>]) -> hookbridge_core::Result<()> {
    let b = &deps.backend;
    let hooks = b.hooks.list_all(tenant).await?;
    let now = Utc::now();
    let mut pending = Vec::new();
    let mut cancelled = Vec::new();
    let mut tasks = Vec::new();
    for p in events {
        let body = p.envelope.to_body();
        let sent_ms = p.message.sent_at.timestamp_millis().max(0) as u64;
        let wanted = hooks.iter().filter(|h| h.config.wants(&p.envelope.detail_type, p.site.as_deref()));
        for hook in wanted {
            let key = DeliveryKey {
                tenant: p.tenant.clone(),
                hook_id: hook.id,
                delivery_id: delivery_id(sent_ms, p.envelope.id.as_str(), hook.id),
                event_id: p.envelope.id.clone(),
                event_type: p.envelope.detail_type.clone(),
            };
            let delivery = Delivery::pending_for(&key, now);
            match deliverable(hook) {
                Ok(()) => {
                    let inline = (body.len() <= INLINE_BODY_MAX).then(|| body.clone());
                    tasks.push(OutgoingMessage::now(DeliveryTask::V1 { delivery: key, body: inline }.to_json()));
                }
                Err(reason) => cancelled.push(DeliveryUpdate::cancelled(key, reason, now)),
            }
            pending.push(delivery);
        }
    }
    let envelopes: Vec<Envelope> = events.iter().map(|p| p.envelope.clone()).collect();
    let retention = chrono::Duration::from_std(deps.settings.event_retention).unwrap_or(chrono::Duration::days(14));
    b.events.put(tenant, &envelopes, now + retention).await?;
    b.deliveries.insert(&pending).await?;
    if !cancelled.is_empty() {
        b.deliveries.record(&cancelled).await?;
    }
    b.delivery_queue.send_batch(&tasks).await?;
    tracing::info!(
        tenant = %tenant,
        events = events.len(),
        deliveries = tasks.len(),
        cancelled = cancelled.len(),
        "events ingested"
    );
    Ok(())
}

fn deliverable(hook: &Hook) -> Result<(), String> {
    hook.deliverable().map_err(|why| why.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delivery_ids_are_stable_and_distinct() {
        let h1 = HookId::generate();
        let h2 = HookId::generate();
        assert_eq!(delivery_id(1_000, "e1", h1), delivery_id(1_000, "e1", h1));
        assert_ne!(delivery_id(1_000, "e1", h1), delivery_id(1_000, "e1", h2));
        assert_ne!(delivery_id(1_000, "e1", h1), delivery_id(1_000, "e2", h1));
        assert_eq!(delivery_id(1_000, "e1", h1).timestamp_ms(), 1_000);
    }
}
