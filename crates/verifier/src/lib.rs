//! The verifier. Triggered by the hook lifecycle events (`hook.created`, `hook.updated`,
//! `hook.verification.requested`) through the verify queue, it proves what can be proven
//! before events flow: that the endpoint's owner wants them (the ownership challenge)
//! and that its credentials work (an OAuth token fetch). The answer is the hook's
//! connection state, in HYPR's words.

mod check;

use std::time::Duration;

use chrono::Utc;
use hookbridge_core::envelope::{BusEntry, Envelope};
use hookbridge_core::hook::{ConnectionState, Hook};
use hookbridge_core::message::{PlatformDetail, event_type};
use hookbridge_core::ports::{Backend, BatchOutcome, ReceivedMessage};
use hookbridge_outbound::Outbound;
use tracing::Instrument;

pub use check::{Findings, challenge_value};

/// The verifier's dependencies.
#[derive(Debug, Clone)]
pub struct Verifier {
    /// The ports.
    pub backend: Backend,
    /// The HTTP client (same SSRF guard and no-redirect rule as deliveries).
    pub outbound: Outbound,
    /// The `account` filled into envelopes that lack one.
    pub account: String,
    /// The `region` filled into envelopes that lack one.
    pub region: String,
}

/// Handles a batch from the verify queue.
pub async fn handle(v: &Verifier, messages: &[ReceivedMessage]) -> BatchOutcome {
    // Each message may wait on a slow endpoint (challenge) and token endpoint: handle them
    // all at once, so a batch takes as long as its slowest check, not the sum of them.
    let failed = futures::future::join_all(messages.iter().map(|m| handle_one(v, m))).await;
    BatchOutcome { failed: failed.into_iter().flatten().collect() }
}

/// Handles one message; the message id when it failed.
async fn handle_one(v: &Verifier, m: &ReceivedMessage) -> Option<String> {
    let parsed = Envelope::from_bus_json(&m.body, &v.account, &v.region)
        .ok()
        .and_then(|e| serde_json::from_str::<PlatformDetail>(e.detail.get()).ok().map(|d| (e.detail_type, d)));
    let Some((kind, detail)) = parsed else {
        tracing::error!(message_id = %m.id, "not a lifecycle event; it will reach the dead-letter queue");
        if let Err(e) = v.backend.verify_queue.retry_after(&m.receipt, Duration::ZERO).await {
            tracing::warn!(message_id = %m.id, error = %e, "could not return a malformed message early");
        }
        return Some(m.id.clone());
    };
    let span = tracing::info_span!("verify", tenant = %detail.tenant, hook_id = %detail.hook_id);
    match verify(v, &kind, &detail).instrument(span).await {
        Ok(()) => None,
        Err(e) => {
            tracing::error!(hook_id = %detail.hook_id, tenant = %detail.tenant, error = %e, "verification failed to run; it will be retried");
            Some(m.id.clone())
        }
    }
}

/// Runs what the hook needs and records the outcome.
async fn verify(v: &Verifier, kind: &str, d: &PlatformDetail) -> hookbridge_core::Result<()> {
    if !event_type::VERIFIER_TRIGGERS.contains(&kind) {
        return Ok(());
    }
    let Some(hook) = v.backend.hooks.get(&d.tenant, d.hook_id).await? else {
        return Ok(()); // Deleted since: nothing to verify.
    };
    let force_challenge = kind == event_type::HOOK_VERIFICATION_REQUESTED;
    let Some(hook) = set_state(v, hook, |h| h.state.connection_state = ConnectionState::Authorizing).await? else {
        return Ok(());
    };
    let findings = check::run(v, &hook, force_challenge).await;
    let verified_config = hook.config.clone();
    let mut events = Vec::new();
    let stored = set_state(v, hook, |h| {
        // A change to the hook while we checked makes these findings stale; the change's
        // own event brings the hook back here.
        if h.config != verified_config {
            return;
        }
        events = findings.apply(h, Utc::now());
    })
    .await?;
    if let Some(hook) = stored
        && !events.is_empty()
    {
        let entries: Vec<BusEntry> = events
            .into_iter()
            .map(|(kind, reason)| PlatformDetail::about(&hook, None, reason).bus_entry(kind))
            .collect();
        if let Err(e) = v.backend.bus.publish(entries).await {
            tracing::error!(hook_id = %hook.id, error = %e, "could not publish verification events");
        }
    }
    Ok(())
}

/// Applies `change` to the stored hook and writes it, re-reading on a concurrent change.
/// `None` if the hook was deleted meanwhile.
async fn set_state(
    v: &Verifier,
    mut hook: Hook,
    mut change: impl FnMut(&mut Hook),
) -> hookbridge_core::Result<Option<Hook>> {
    for _ in 0..5 {
        let expected = hook.revision;
        let mut next = hook.clone();
        change(&mut next);
        if next == hook {
            return Ok(Some(hook));
        }
        next.revision += 1;
        next.updated_at = Utc::now();
        match v.backend.hooks.replace(&next, expected).await {
            Ok(()) => return Ok(Some(next)),
            Err(hookbridge_core::Error::VersionConflict) => match v.backend.hooks.get(&hook.tenant, hook.id).await? {
                Some(fresh) => hook = fresh,
                None => return Ok(None),
            },
            Err(e) => return Err(e),
        }
    }
    Err(hookbridge_core::Error::VersionConflict)
}
