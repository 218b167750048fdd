//! A hook's health after a group of results: failures counted toward the disable rule,
//! the circuit opened or closed, the slow-lane mark renewed. Written only when it changes
//! enough to matter, so a healthy hook's deliveries cost no hook write, and a long-failing
//! one's about one a minute per process (decision 0043).

use std::sync::Arc;

use chrono::{DateTime, Utc};
use hookbridge_core::circuit::Transition;
use hookbridge_core::envelope::BusEntry;
use hookbridge_core::health::{FAILURE_RESOLUTION, HealthChange, Observation, observe};
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
    let sent_to = hook.config.url.clone();
    let mut hook = hook;
    // A copy older than this process's own last write (another batch opened the circuit
    // meanwhile, say) is read again: judged against the copy, a success that finds nothing
    // to change there is written nowhere, and the circuit it should close stays open.
    let mut fresh = false;
    if w.local.behind(hook.id, hook.revision) {
        match read_again(w, &hook).await {
            Some(Ok(h)) => (hook, fresh) = (h, true),
            Some(Err(())) => {}
            None => return Vec::new(),
        }
    }
    // Taken while this group is judged, so that concurrent batches neither add them twice
    // nor lose each other's; put back, with this group's own, unless written.
    let carried = w.local.take_unwritten(hook.id);
    let (r, held) = loop {
        let (r, held) = judge(w, &hook, carried, obs, &sent_to, now).await;
        // Held back on the batch's copy: the row may have moved since (another process
        // opened the circuit this group's answers would close), so it is judged again on
        // the row as it is. A read, not a write: it crowds out no tenant's change.
        if held.quiet.is_some() && !fresh {
            match read_again(w, &hook).await {
                Some(Ok(h)) => {
                    (hook, fresh) = (h, true);
                    continue;
                }
                Some(Err(())) => {}
                None => return Vec::new(),
            }
        }
        break (r, held);
    };
    let (next, change, disabling): (Hook, HealthChange, Option<String>) = match r {
        Ok(Modified::Written(next, (change, disabling))) => {
            w.local.wrote(next.id, next.revision);
            (next, change, disabling)
        }
        Ok(Modified::Unchanged(_)) => {
            w.local.put_unwritten(hook.id, held.quiet.or(carried));
            return Vec::new();
        }
        Ok(Modified::Deleted) => return Vec::new(),
        Err(e) => {
            // The group's failures too: dropped, a hook whose writes fail for a while (the
            // table throttled, say) came back counting fewer than it had, and was disabled
            // that much later.
            w.local.put_unwritten(hook.id, held.unwritten.unwrap_or(carried));
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

/// The hook read again: `None` if it is gone, `Err` (logged) if it could not be read.
async fn read_again(w: &Worker, hook: &Hook) -> Option<Result<Arc<Hook>, ()>> {
    match w.ports.hooks.get(&hook.tenant, hook.id).await {
        Ok(Some(fresh)) => Some(Ok(Arc::new(fresh))),
        Ok(None) => None,
        Err(e) => {
            tracing::warn!(hook_id = %hook.id, tenant = %hook.tenant, error = %e, "could not read the hook again");
            Some(Err(()))
        }
    }
}

/// The failures of a run this process counted and [`judge`] did not write.
#[derive(Debug, Default)]
struct Held {
    /// Held back by choice: the change is only the run's count
    /// ([`hookbridge_core::health::HealthChange::quiet`]).
    quiet: Option<Unwritten>,
    /// Those the change would have written, to keep if its write fails: `Some(None)` when
    /// the change ends the run (a success), `None` when nothing was judged.
    unwritten: Option<Option<Unwritten>>,
}

/// The group's observations folded into `hook`'s health and written if worth it, with the
/// failures this process held back (`carried`) added when they belong to the row's run.
/// Also the failures to hold back now, when the change is only the run's count and the
/// oldest held is less than [`FAILURE_RESOLUTION`] old: past it they are written, so that
/// a process whose failures are always judged within a minute of another process's write
/// still writes its own.
async fn judge(
    w: &Worker,
    hook: &Hook,
    carried: Option<Unwritten>,
    obs: &[Observation],
    sent_to: &str,
    now: DateTime<Utc>,
) -> (hookbridge_core::Result<Modified<(HealthChange, Option<String>)>>, Held) {
    let rule = w.settings.disable_rule;
    let resolution = chrono::Duration::from_std(FAILURE_RESOLUTION).unwrap_or_default();
    let mut held = Held::default();
    let r = modify(w.ports.hooks.as_ref(), hook.clone(), UPDATE_ROUNDS, |mut h: Hook| {
        let moved = h.config.url != sent_to;
        let retry = RetryRule::of(&h.config);
        // The failures this process counted and did not write belong to the run if the row's
        // run is the one they were counted in; or if the row has none, and nothing since
        // they began ended it (a success, the account started over): a run this process
        // began whose writes failed, which would otherwise begin again at each group.
        let mut start = h.state.health.clone();
        let ours = carried.filter(|u| {
            start.failing_since == Some(u.since)
                || (start.failing_since.is_none()
                    && start.last_success_at.is_none_or(|s| s < u.since)
                    && start.since.is_none_or(|s| s <= u.since))
        });
        if let Some(u) = ours {
            start.failing_since = Some(u.since);
            start.consecutive_failures = start.consecutive_failures.saturating_add(u.failures);
        }
        let overdue = ours.is_some_and(|u| now - u.held_since >= resolution);
        let observed = observe(&rule, retry, &start, obs).filter(|_| !moved);
        let unwritten = observed.as_ref().map(|change| {
            change.health.failing_since.map(|since| Unwritten {
                since,
                failures: change.health.consecutive_failures.saturating_sub(h.state.health.consecutive_failures),
                held_since: ours.map_or(now, |u| u.held_since),
            })
        });
        let quiet = observed.as_ref().is_some_and(|change| change.quiet && !overdue);
        held = Held { quiet: unwritten.flatten().filter(|_| quiet), unwritten };
        let observed = observed.filter(|_| !quiet);
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
    (r, held)
}
