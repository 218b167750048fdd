//! Phase three: what each attempt means, written down. One store call records every
//! delivery of the batch; retries are handed to the queue; a hook's health is written
//! only when it changes; operational events go to the bus.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use futures::future::join_all;
use hookbridge_core::delivery::{DeliveryStatus, DeliveryUpdate};
use hookbridge_core::envelope::BusEntry;
use hookbridge_core::health::after_success;
use hookbridge_core::hook::{DestinationState, Health, Hook};
use hookbridge_core::ids::DeliveryId;
use hookbridge_core::message::{PlatformDetail, event_type};
use hookbridge_core::outcome::{Decision, decide};
use hookbridge_core::ports::{BatchOutcome, Receipt};

use crate::Worker;
use crate::prepare::Job;
use crate::send::Done;

/// What one attempt tells about its hook's health.
#[derive(Debug, Clone, Copy)]
enum Signal {
    Success(DateTime<Utc>),
    Failure(DateTime<Utc>),
    Gone(DateTime<Utc>),
}

/// Uniform in [-1, 1], for the schedule's jitter.
fn jitter() -> f64 {
    rand::random::<f64>() * 2.0 - 1.0
}

pub(crate) async fn record(w: &Worker, done: Vec<Done<'_>>) -> BatchOutcome {
    let now = Utc::now();
    let mut outcome = BatchOutcome::default();
    let mut updates = Vec::with_capacity(done.len());
    let mut retries: Vec<(Receipt, Duration)> = Vec::new();
    let mut signals: HashMap<_, (Arc<Hook>, Vec<Signal>)> = HashMap::new();
    let mut exhausted: Vec<(Arc<Hook>, DeliveryId, String)> = Vec::new();
    let mut all_ids = Vec::with_capacity(done.len());
    let mut metrics = crate::metrics::BatchMetrics::default();

    for d in done {
        match d {
            Done::Skipped(Job::Poison(m)) => outcome.failed.push(m.id.clone()),
            Done::Skipped(Job::Cancel { message, key, reason }) => {
                all_ids.push(message.id.clone());
                metrics.cancelled += 1;
                tracing::info!(hook_id = %key.hook_id, delivery_id = %key.delivery_id, tenant = %key.tenant, reason, "delivery cancelled");
                updates.push(DeliveryUpdate::cancelled(key, reason, now));
            }
            Done::Skipped(Job::Send(_)) => unreachable!("every send job is attempted"),
            Done::Attempted { ready, report } => {
                let m = ready.message;
                all_ids.push(m.id.clone());
                let at = report.attempt.at;
                let decision = decide(report.sent, m.receive_count, &w.settings.schedule, jitter());
                metrics.latencies_ms.push(report.attempt.duration_ms);
                match decision {
                    Decision::Succeeded => metrics.succeeded += 1,
                    Decision::RetryIn(_) => metrics.retried += 1,
                    Decision::Failed { .. } | Decision::FailedAndDisable => metrics.failed += 1,
                }
                let (status, next, signal) = match decision {
                    Decision::Succeeded => (DeliveryStatus::Succeeded, None, Signal::Success(at)),
                    Decision::RetryIn(delay) => {
                        retries.push((m.receipt.clone(), delay));
                        outcome.failed.push(m.id.clone());
                        let next = now + chrono::Duration::from_std(delay).unwrap_or_default();
                        (DeliveryStatus::Retrying, Some(next), Signal::Failure(at))
                    }
                    Decision::Failed { exhausted: ran_out } => {
                        if ran_out {
                            let why = format!("gave up after {} attempts", m.receive_count);
                            exhausted.push((ready.hook.clone(), ready.key.delivery_id, why));
                        }
                        (DeliveryStatus::Failed, None, Signal::Failure(at))
                    }
                    Decision::FailedAndDisable => (DeliveryStatus::Failed, None, Signal::Gone(at)),
                };
                tracing::info!(
                    hook_id = %ready.key.hook_id,
                    delivery_id = %ready.key.delivery_id,
                    tenant = %ready.key.tenant,
                    attempt = m.receive_count,
                    status_code = report.attempt.status_code,
                    error_class = report.attempt.error_class.map(|c| c.as_str()),
                    duration_ms = report.attempt.duration_ms,
                    outcome = ?status,
                    "delivery attempted"
                );
                signals.entry(ready.hook.id).or_insert_with(|| (ready.hook.clone(), Vec::new())).1.push(signal);
                updates.push(DeliveryUpdate {
                    delivery: ready.key.clone(),
                    attempt: Some(report.attempt),
                    status,
                    next_attempt_at: next,
                    note: None,
                    at: now,
                });
            }
        }
    }

    if let Err(e) = w.backend.deliveries.record(&updates).await {
        // Nothing is acknowledged: the batch comes back and is sent again (at least once).
        tracing::error!(error = %e, "cannot record the batch's attempts; it will be retried");
        outcome.failed.extend(all_ids);
        outcome.failed.sort();
        outcome.failed.dedup();
        return outcome;
    }

    if w.settings.emf_metrics
        && let Some(doc) = metrics.to_emf("delivery-worker", now.timestamp_millis())
    {
        // Lambda hands stdout to CloudWatch Logs, which extracts the metrics from this line.
        println!("{doc}");
    }

    let q = &w.backend.delivery_queue;
    for (r, res) in join_all(retries.iter().map(|(r, d)| async move { (r, q.retry_after(r, *d).await) })).await {
        if let Err(e) = res {
            // It still comes back, after the queue's visibility timeout instead.
            tracing::warn!(receipt = %r.0, error = %e, "could not schedule a retry");
        }
    }

    let mut events: Vec<BusEntry> = exhausted
        .into_iter()
        .map(|(hook, delivery_id, why)| platform_event(event_type::DELIVERY_EXHAUSTED, &hook, Some(delivery_id), why))
        .collect();
    for (_, (hook, sig)) in signals {
        events.extend(update_health(w, hook, &sig, now).await);
    }
    if !events.is_empty()
        && let Err(e) = w.backend.bus.publish(events).await
    {
        tracing::error!(error = %e, "could not publish operational events");
    }
    outcome
}

fn platform_event(kind: &str, hook: &Hook, delivery_id: Option<DeliveryId>, reason: String) -> BusEntry {
    PlatformDetail::about(hook, delivery_id, Some(reason)).bus_entry(kind)
}

struct HealthChange {
    health: Health,
    warn: bool,
    disable: Option<String>,
}

fn apply(w: &Worker, start: &Health, signals: &[Signal]) -> Option<HealthChange> {
    let mut h = start.clone();
    let (mut changed, mut warn, mut disable) = (false, false, None);
    for s in signals {
        match *s {
            Signal::Success(at) => {
                if let Some(next) = after_success(&h, at) {
                    h = next;
                    changed = true;
                }
            }
            Signal::Failure(at) | Signal::Gone(at) => {
                let r = w.settings.disable_rule.after_failure(&h, at);
                warn |= r.warn;
                if matches!(s, Signal::Gone(_)) {
                    disable = Some("the endpoint answered 410 Gone".to_owned());
                } else if r.disable {
                    disable = Some(format!(
                        "failing since {} ({} failed attempts in a row)",
                        r.health.failing_since.map(|t| t.to_rfc3339()).unwrap_or_default(),
                        r.health.consecutive_failures
                    ));
                }
                h = r.health;
                changed = true;
            }
        }
    }
    changed.then_some(HealthChange { health: h, warn, disable })
}

/// Writes the hook's new health (and disables it when the rule says so), retrying on a
/// concurrent change. A healthy hook's success changes nothing and costs nothing.
async fn update_health(w: &Worker, prepared: Arc<Hook>, signals: &[Signal], now: DateTime<Utc>) -> Vec<BusEntry> {
    let mut hook = (*prepared).clone();
    for _ in 0..5 {
        let Some(change) = apply(w, &hook.state.health, signals) else {
            return Vec::new();
        };
        let expected = hook.revision;
        let mut next = hook.clone();
        next.state.health = change.health;
        let disabling = change.disable.filter(|_| next.state.destination_state == DestinationState::Active);
        if let Some(reason) = &disabling {
            next.state.destination_state = DestinationState::Inactive;
            next.state.disabled_reason = Some(reason.clone());
        }
        next.revision += 1;
        next.updated_at = now;
        match w.backend.hooks.replace(&next, expected).await {
            Ok(()) => {
                let mut events = Vec::new();
                if change.warn {
                    let reason = format!("{} failed attempts in a row", next.state.health.consecutive_failures);
                    tracing::warn!(hook_id = %next.id, tenant = %next.tenant, reason, "hook failing");
                    events.push(platform_event(event_type::HOOK_FAILING, &next, None, reason));
                }
                if let Some(reason) = disabling {
                    tracing::warn!(hook_id = %next.id, tenant = %next.tenant, reason, "hook disabled");
                    events.push(platform_event(event_type::HOOK_DISABLED, &next, None, reason));
                }
                return events;
            }
            Err(hookbridge_core::Error::VersionConflict) => match w.backend.hooks.get(&hook.tenant, hook.id).await {
                Ok(Some(fresh)) => hook = fresh,
                Ok(None) => return Vec::new(),
                Err(e) => {
                    tracing::warn!(hook_id = %hook.id, error = %e, "could not re-read the hook to record its health");
                    return Vec::new();
                }
            },
            Err(e) => {
                tracing::warn!(hook_id = %hook.id, error = %e, "could not record the hook's health");
                return Vec::new();
            }
        }
    }
    tracing::warn!(hook_id = %hook.id, "hook health not recorded: it kept changing underneath");
    Vec::new()
}
