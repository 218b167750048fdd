//! The verifier. Triggered by the hook lifecycle events (`hook.created`, `hook.updated`,
//! `hook.verification.requested`) through the verify queue, it proves what can be proven
//! before events flow: that the endpoint's owner wants them (the ownership challenge)
//! and that its credentials work (an OAuth token fetch). The answer is the hook's
//! connection state, in HYPR's words.

mod check;

use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::Utc;
use hookbridge_core::envelope::{BusEntry, Envelope};
use hookbridge_core::hook::{ConnectionState, Hook, Modified, UPDATE_ROUNDS, modify};
use hookbridge_core::message::{PlatformDetail, event_type};
use hookbridge_core::ports::{Backend, BatchOutcome, Bus, HookAccess, Queue, ReceivedMessage, Resource, Sealer};
use hookbridge_outbound::{Outbound, OutboundSettings};
use tracing::Instrument;

pub use check::{Findings, challenge_value};

/// The ports the verifier uses, and no others.
#[derive(Clone)]
pub struct VerifierPorts {
    /// Hooks: read, and their connection state written.
    pub hooks: Arc<dyn HookAccess>,
    /// Opens hook secrets (OAuth client secrets).
    pub sealer: Arc<dyn Sealer>,
    /// Verification outcomes as operational events.
    pub bus: Arc<dyn Bus>,
    /// Where its lifecycle events come from (to reject malformed ones).
    pub verify: Arc<dyn Queue>,
}

impl VerifierPorts {
    /// What these ports reach (the template's permissions for the function are held to it).
    pub const RESOURCES: &'static [Resource] = &[Resource::Table, Resource::Bus, Resource::VerifyQueue, Resource::Key];

    /// The verifier's ports of a backend.
    ///
    /// The deployed function makes the same ports one at a time
    /// (`crates/verifier/src/main.rs`), so that its binary carries no other
    /// port's code: a port added here goes there too.
    pub fn of(b: &Backend) -> Self {
        Self { hooks: b.hooks.clone(), sealer: b.sealer.clone(), bus: b.bus.clone(), verify: b.verify_queue.clone() }
    }
}

impl std::fmt::Debug for VerifierPorts {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VerifierPorts").finish_non_exhaustive()
    }
}

/// The verifier's dependencies.
#[derive(Debug, Clone)]
pub struct Verifier {
    /// What it reads and writes.
    pub ports: VerifierPorts,
    /// The HTTP client (same SSRF guard and no-redirect rule as deliveries).
    pub outbound: Outbound,
    /// The `account` filled into envelopes that lack one.
    pub account: String,
    /// The `region` filled into envelopes that lack one.
    pub region: String,
}

/// [`handle_within`] with no deadline (the local runner's consumers have none).
pub async fn handle(v: &Verifier, messages: &[ReceivedMessage]) -> BatchOutcome {
    handle_within(v, messages, None).await
}

/// Handles a batch from the verify queue. A check's round that could not end before the
/// invocation's `deadline` is not begun: its message is handed back, to be checked in an
/// invocation of its own. Cut off by Lambda's timeout instead, the whole batch came back
/// (its hooks challenged again, their outcomes published again).
pub async fn handle_within(v: &Verifier, messages: &[ReceivedMessage], deadline: Option<Instant>) -> BatchOutcome {
    // Each message may wait on a slow endpoint (challenge) and token endpoint: handle them
    // all at once, so a batch takes as long as its slowest check, not the sum of them.
    let failed = futures::future::join_all(messages.iter().map(|m| handle_one(v, m, deadline))).await;
    BatchOutcome { failed: failed.into_iter().flatten().collect() }
}

/// Handles one message; the message id when it failed. With a `deadline`, everything it
/// does (the check, and handing its message back) is given up [`ANSWER_MARGIN`] before it,
/// and its rounds are judged against that.
async fn handle_one(v: &Verifier, m: &ReceivedMessage, deadline: Option<Instant>) -> Option<String> {
    let Some(d) = deadline else {
        return handle_until(v, m, None).await;
    };
    let stop = d.checked_sub(ANSWER_MARGIN).unwrap_or(d);
    match tokio::time::timeout_at(tokio::time::Instant::from_std(stop), handle_until(v, m, Some(stop))).await {
        Ok(failed) => failed,
        Err(_) => {
            // Its writes may have landed, and not what they told the bus; the hook may read
            // AUTHORIZING until the check comes back (as when Lambda ended the invocation).
            tracing::warn!(message_id = %m.id, "the check's reads and writes outlasted the invocation; it comes back after the visibility timeout");
            Some(m.id.clone())
        }
    }
}

/// [`handle_one`]'s work, its rounds begun only if they can end by `stop`.
async fn handle_until(v: &Verifier, m: &ReceivedMessage, stop: Option<Instant>) -> Option<String> {
    let parsed = Envelope::from_bus_json(&m.body, &v.account, &v.region)
        .ok()
        .and_then(|e| serde_json::from_str::<PlatformDetail>(e.detail.get()).ok().map(|d| (e.detail_type, d)));
    let Some((kind, detail)) = parsed else {
        tracing::error!(message_id = %m.id, "not a lifecycle event; it will reach the dead-letter queue");
        v.ports.verify.reject(m).await;
        return Some(m.id.clone());
    };
    let span = tracing::info_span!("verify", tenant = %detail.tenant, hook_id = %detail.hook_id);
    // On the queue's last receive, a token endpoint still without an answer is the finding.
    let last_try = m.receive_count >= hookbridge_core::topology::VERIFY_RECEIVES;
    match verify(v, &kind, &detail, stop, last_try).instrument(span).await {
        Ok(Checked::Done) => None,
        Ok(Checked::OutOfTime) => {
            tracing::info!(hook_id = %detail.hook_id, tenant = %detail.tenant, "too little time left for the check; handed back");
            // Back at once, not after the queue's visibility timeout: nothing is wrong
            // with the hook, and it reads as it did until it is checked.
            if let Err(e) = v.ports.verify.retry_after(&m.receipt, Duration::ZERO).await {
                tracing::warn!(message_id = %m.id, error = %e, "could not hand the check back early; it comes back after the visibility timeout");
            }
            Some(m.id.clone())
        }
        // The hook's own endpoint in trouble (a challenge or token fetch put off) is the
        // customer's outage, not the platform's: no error to page anyone about.
        Err(e @ hookbridge_core::Error::Backend { operation: check::ENDPOINT_TROUBLE | check::TOKEN_TROUBLE, .. }) => {
            tracing::info!(hook_id = %detail.hook_id, tenant = %detail.tenant, reason = %e, "the hook's endpoint had trouble; checked again later");
            Some(m.id.clone())
        }
        Err(e) => {
            tracing::error!(hook_id = %detail.hook_id, tenant = %detail.tenant, error = %e, "verification failed to run; it will be retried");
            Some(m.id.clone())
        }
    }
}

/// How a check ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Checked {
    /// Its outcome is recorded (or there was nothing to check).
    Done,
    /// Not begun, or not begun again: a round would not have ended before the deadline.
    OutOfTime,
}

/// The longest a round of checks takes under `settings`: the challenge (one request), the
/// token fetch (which may first wait as long for another fetch of the same token), and the
/// writes around them. An invocation shorter than this checks nothing.
pub fn round_time(settings: &OutboundSettings) -> Duration {
    settings.timeout + 2 * settings.token_budget() + WRITE_TIME
}

/// Whether a round of checks begun now ends before `deadline`.
fn round_fits(v: &Verifier, deadline: Option<Instant>) -> bool {
    deadline.is_none_or(|d| Instant::now() + round_time(v.outbound.settings()) <= d)
}

/// What a round leaves for reading and writing the hook's state: time enough when the
/// store answers as it usually does. It can take longer (each AWS call is bounded only by
/// the SDK's timeout, retries included), so a check is also given up [`ANSWER_MARGIN`]
/// before the deadline: it comes back alone, where Lambda ending the invocation brought
/// back every check in the batch, finished ones too.
const WRITE_TIME: Duration = Duration::from_secs(3);

/// What a batch keeps, after its checks are given up, to answer with its failures.
const ANSWER_MARGIN: Duration = Duration::from_millis(250);

/// Runs what the hook needs and records the outcome.
async fn verify(
    v: &Verifier,
    kind: &str,
    d: &PlatformDetail,
    deadline: Option<Instant>,
    last_try: bool,
) -> hookbridge_core::Result<Checked> {
    if !event_type::VERIFIER_TRIGGERS.contains(&kind) {
        return Ok(Checked::Done);
    }
    if !round_fits(v, deadline) {
        return Ok(Checked::OutOfTime);
    }
    let Some(hook) = v.ports.hooks.get(&d.tenant, d.hook_id).await?.filter(|h| !being_deleted(h)) else {
        return Ok(Checked::Done); // Deleted since (or being deleted): nothing to verify.
    };
    let force_challenge = kind == event_type::HOOK_VERIFICATION_REQUESTED;
    let began = set_state(v, hook, |h| {
        if h.state.connection_state != ConnectionState::Authorizing {
            h.state.checked_from = Some(h.state.connection_state);
        }
        h.state.connection_state = ConnectionState::Authorizing;
    });
    let Some(mut hook) = began.await? else {
        return Ok(Checked::Done);
    };
    // What it reads as again if the check finds nothing, and what its findings are news
    // against: as noted on the copy written, not the one first read, which a change may
    // have replaced meanwhile (a PUT making an authorized hook UPDATING: put back, or
    // judged, as AUTHORIZED, the change read so unchecked, or its pass told nothing). No
    // note is a check from before notes were kept that could not write its results: a
    // check is due, as after a change.
    let before = hook.state.checked_from.unwrap_or(ConnectionState::Updating);
    for round in 0..CHECK_ROUNDS {
        // Nothing was found: the hook reads as it did, not AUTHORIZING until someone asks.
        if round > 0 && !round_fits(v, deadline) {
            put_back(v, hook, before).await;
            return Ok(Checked::OutOfTime);
        }
        let findings = match check::run(v, &hook, force_challenge, last_try).await {
            Ok(findings) => findings,
            Err(e) => {
                // Not run, or nothing found: the key service would not open the secrets
                // now, or the token endpoint had no answer.
                put_back(v, hook, before).await;
                return Err(e);
            }
        };
        let (checked_config, checked_secrets) = (hook.config.clone(), hook.sealed.clone());
        let secrets_read = check::reads_secrets(&checked_config, findings.challenge.is_some());
        let (mut events, mut stale) = (Vec::new(), Stale::No);
        let checked = hook.clone();
        let stored = set_state(v, hook, |h| {
            // Judged afresh on every round of the write: an earlier round's findings may
            // have been applied to a hook that has changed since.
            events.clear();
            stale = if h.config != checked_config {
                Stale::Config
            } else if secrets_read && h.sealed != checked_secrets {
                Stale::Secrets
            } else {
                events = findings.apply(h, before, Utc::now());
                Stale::No
            };
        })
        .await;
        let stored = match stored {
            Ok(stored) => stored,
            Err(e) => {
                // The results are lost with the write; the check comes back. Left AUTHORIZING,
                // the hook would read so for good if it never did.
                put_back(v, checked, before).await;
                return Err(e);
            }
        };
        let Some(stored) = stored else {
            return Ok(Checked::Done);
        };
        match stale {
            // A check asked for (`POST /verify`) is made again on the hook as it is now:
            // the change's own check runs no challenge unless the hook requires one, and
            // the one asked for would be lost.
            Stale::Config if force_challenge => hook = stored,
            // The change's own event brings the hook back here.
            Stale::Config => return Ok(Checked::Done),
            // New secrets (a client secret replaced, the signing secret rotated) bring no
            // check of their own, and a token fetched with the old ones says nothing of them.
            Stale::Secrets => hook = stored,
            Stale::No => {
                publish(v, &stored, events).await;
                if findings.token_put_off {
                    // Its pass recorded; back for the token, as a check whose token
                    // endpoint had trouble comes back.
                    return Err(hookbridge_core::Error::backend(
                        check::TOKEN_TROUBLE,
                        "the token endpoint had trouble after the challenge passed",
                    ));
                }
                return Ok(Checked::Done);
            }
        }
    }
    // Handed back, to be checked again once they rest: a rotation brings no event of its
    // own, so nothing else would check it, and left AUTHORIZING it would read so for good.
    put_back(v, hook, before).await;
    Err(hookbridge_core::Error::backend("verifier.check", "the hook's secrets kept changing while it was checked"))
}

/// The hook's connection state as it was before its check, if the check left it
/// AUTHORIZING and the hook is still the one checked, under this check's note (best effort:
/// the check comes back either way). Changed since (a `PUT`, which clears the note, of its
/// URL or only of a client secret, which is not in its config), the AUTHORIZING is the
/// change's own check's, whose note of what it was before this would wipe: an authorized
/// hook given new credentials read AUTHORIZED, unchecked, once this check failed.
async fn put_back(v: &Verifier, hook: Hook, before: ConnectionState) {
    let (checked, noted) = (hook.config.clone(), hook.state.checked_from);
    let _ = set_state(v, hook, |h| {
        if h.state.connection_state == ConnectionState::Authorizing
            && h.config == checked
            && h.state.checked_from == noted
        {
            h.state.connection_state = before;
            h.state.checked_from = None;
        }
    })
    .await;
}

/// How many times a check runs again because the hook's secrets changed while it ran.
const CHECK_ROUNDS: usize = 3;

/// Whether the hook changed while it was checked, making the findings stale.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stale {
    No,
    Config,
    Secrets,
}

/// Tells of the findings on the bus (best effort: the hook's state already says them).
async fn publish(v: &Verifier, hook: &Hook, events: Vec<(&'static str, Option<String>)>) {
    if events.is_empty() {
        return;
    }
    let entries: Vec<BusEntry> =
        events.into_iter().map(|(kind, reason)| PlatformDetail::about(hook, None, reason).bus_entry(kind)).collect();
    if let Err(e) = v.ports.bus.publish(entries).await {
        tracing::error!(hook_id = %hook.id, error = %e, "could not publish verification events");
    }
}

/// A delete marked the hook and did not finish (or has not yet): it is as good as gone.
fn being_deleted(h: &Hook) -> bool {
    h.state.connection_state == ConnectionState::Deleting
}

/// Applies `change` to the stored hook and writes it, re-reading on a concurrent change.
/// `None` if the hook was deleted meanwhile.
async fn set_state(
    v: &Verifier,
    hook: Hook,
    mut change: impl FnMut(&mut Hook),
) -> hookbridge_core::Result<Option<Hook>> {
    let r = modify(v.ports.hooks.as_ref(), hook, UPDATE_ROUNDS, |h: Hook| {
        if being_deleted(&h) {
            // A delete began meanwhile; its end must not find the hook deliverable again.
            return std::future::ready(Ok(None));
        }
        let mut next = h.clone();
        change(&mut next);
        next.updated_at = Utc::now();
        let changed = (next.config != h.config || next.state != h.state).then_some((next, ()));
        std::future::ready(Ok::<_, hookbridge_core::Error>(changed))
    })
    .await?;
    Ok(match r {
        Modified::Written(h, ()) => Some(h),
        Modified::Unchanged(h) => (!being_deleted(&h)).then_some(h),
        Modified::Deleted => None,
    })
}
