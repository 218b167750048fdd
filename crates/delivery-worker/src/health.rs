//! A hook's health after a group of results: failures counted toward the disable rule,
//! the circuit opened or closed, the slow-lane mark renewed. Written only when it changes
//! enough to matter, so a healthy hook's deliveries cost no hook write, and a long-failing
//! one's about one a minute per process (decision 0043).

use std::sync::Arc;

use chrono::{DateTime, Utc};
use hookbridge_core::circuit::Transition;
use hookbridge_core::envelope::BusEntry;
use hookbridge_core::health::{HealthChange, Observation, observe};
use hookbridge_core::hook::{DestinationState, Hook, Modified, UPDATE_ROUNDS, modify};
use hookbridge_core::message::{PlatformDetail, event_type};
use hookbridge_core::outcome::RetryRule;

use crate::Worker;
use crate::local::Unwritten;

/// Writes the hook's new health (and disables it when the rule says so); returns the
/// operational events the change calls for. `hook` is the hook as the requests were sent:
/// if its URL has changed since, they tell nothing about the new endpoint, whose health
/// starts afresh (the API resets it), and are dropped.
pub(crate) async fn record(w: &Worker, hook: Arc<Hook>, obs: &[Observation], now: DateTime<Utc>) -> Vec<BusEntry> {
    let rule = w.settings.disable_rule;
    let sent_to = hook.config.url.clone();
    // A copy older than this process's own last write (another batch opened the circuit
    // meanwhile, say) is read again: judged against the copy, a success that finds nothing
    // to change there is written nowhere, and the circuit it should close stays open.
    let hook = if w.local.behind(hook.id, hook.revision) {
        match w.ports.hooks.get(&hook.tenant, hook.id).await {
            Ok(Some(fresh)) => Arc::new(fresh),
            Ok(None) => return Vec::new(),
            Err(e) => {
                tracing::warn!(hook_id = %hook.id, tenant = %hook.tenant, error = %e, "could not read the hook again");
                hook
            }
        }
    } else {
        hook
    };
    let carried = w.local.unwritten(hook.id);
    let mut quiet = None;
    let r = modify(w.ports.hooks.as_ref(), (*hook).clone(), UPDATE_ROUNDS, |mut h: Hook| {
        let moved = h.config.url != sent_to;
        let retry = RetryRule::of(&h.config);
        // The failures this process counted and did not write belong to the run if the row's
        // run is the one they were counted in.
        let mut start = h.state.health.clone();
        if let Some(u) = carried.filter(|u| start.failing_since == Some(u.since)) {
            start.consecutive_failures = start.consecutive_failures.saturating_add(u.failures);
        }
        let observed = observe(&rule, retry, &start, obs).filter(|_| !moved);
        let observed = match observed {
            Some(change) if change.quiet => {
                quiet = change.health.failing_since.map(|since| Unwritten {
                    since,
                    failures: change.health.consecutive_failures.saturating_sub(h.state.health.consecutive_failures),
                });
                None
            }
            other => other,
        };
        let changed = observed.map(|change| {
            h.state.health = change.health.clone();
            let disabling = change.disable.clone().filter(|_| h.state.destination_state == DestinationState::Active);
            if let Some(reason) = &disabling {
                h.state.destination_state = DestinationState::Inactive;
                h.state.disabled_reason = Some(reason.clone());
            }
            h.updated_at = now;
            (h, (change, disabling))
        });
        std::future::ready(Ok::<_, hookbridge_core::Error>(changed))
    })
    .await;
    let (next, change, disabling): (Hook, HealthChange, Option<String>) = match r {
        Ok(Modified::Written(next, (change, disabling))) => {
            w.local.wrote(next.id, next.revision);
            w.local.set_unwritten(next.id, None);
            (next, change, disabling)
        }
        Ok(Modified::Unchanged(_)) => {
            if quiet.is_some() {
                w.local.set_unwritten(hook.id, quiet);
            }
            return Vec::new();
        }
        Ok(Modified::Deleted) => return Vec::new(),
        Err(e) => {
            tracing::warn!(hook_id = %hook.id, tenant = %hook.tenant, error = %e, "could not record the hook's health");
            return Vec::new();
        }
    };
    let event = |kind: &str, reason: String| PlatformDetail::about(&next, None, Some(reason)).bus_entry(kind);
    let mut events = Vec::new();
    if change.warn {
        let reason = format!("{} failed attempts in a row", next.state.health.consecutive_failures);
        tracing::warn!(hook_id = %next.id, tenant = %next.tenant, reason, "hook failing");
        events.push(event(event_type::HOOK_FAILING, reason));
    }
    for transition in &change.circuits {
        match transition {
            Transition::Opened => {
                let reason = match next.state.health.circuit.next_probe_at {
                    Some(t) => format!("the endpoint is down; next probe at {}", t.to_rfc3339()),
                    // Closed again by a later result of the same group (told next).
                    None => "the endpoint was down".to_owned(),
                };
                tracing::warn!(hook_id = %next.id, tenant = %next.tenant, reason, "circuit opened");
                events.push(event(event_type::HOOK_CIRCUIT_OPENED, reason));
            }
            Transition::Closed => {
                tracing::info!(hook_id = %next.id, tenant = %next.tenant, "circuit closed");
                events.push(event(event_type::HOOK_CIRCUIT_CLOSED, "the endpoint answered again".to_owned()));
            }
        }
    }
    if let Some(reason) = disabling {
        tracing::warn!(hook_id = %next.id, tenant = %next.tenant, reason, "hook disabled");
        events.push(event(event_type::HOOK_DISABLED, reason));
    }
    events
}
