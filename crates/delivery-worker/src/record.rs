//! Phase three: what each message came to, written down. For a long-running consumer
//! (the local runner) results are written as they arrive: a group is what has come in
//! when the last write ended and what comes within [`crate::WorkerSettings::gather`]
//! after it, so a busy worker writes in batches, an idle one at once, and no message waits
//! for the batch's slowest request to be settled. A Lambda invocation's messages are
//! deleted by the event source mapping only when it returns, so there the whole batch is
//! written together, in the fewest requests.
//!
//! For each group: one store call records every attempt and status; follow-up messages
//! (retries, deferrals, moves to the slow lane) are sent to their lanes; each hook's
//! health is written when it changes; operational events go to the bus; and, for a
//! long-running consumer, the group's messages are settled. Where the backend has a
//! [`Settlement`](hookbridge_core::ports::Settlement) (the embedded one), a long-running
//! consumer writes the records, the follow-ups and the deletions as one, after the health
//! and the events.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use hookbridge_core::circuit::Reachability;
use hookbridge_core::delivery::{
    Attempt, DeliveryKey, DeliveryStatus, DeliveryUpdate, NOT_RETRIED_PAST_RETENTION, past_retention,
    past_retention_note,
};
use hookbridge_core::envelope::BusEntry;
use hookbridge_core::health::Observation;
use hookbridge_core::hook::{Hook, Lane};
use hookbridge_core::ids::HookId;
use hookbridge_core::message::{PlatformDetail, Task, event_type};
use hookbridge_core::outcome::{Decision, RetryRule, decide};
use hookbridge_core::ports::{BatchOutcome, CarriedOn, OutgoingMessage, Receipt, ReceivedMessage, Settled};
use hookbridge_core::topology::LANE_RECEIVES;
use hookbridge_outbound::AttemptReport;
use tokio::sync::mpsc::UnboundedReceiver;
use tokio::sync::mpsc::error::TryRecvError;

use crate::prepare::Ready;
use crate::{BatchContext, Worker};

/// Results written in one group at most: one `BatchWriteItem` takes 25 items.
const GROUP_MAX: usize = 25;

/// How long before a Lambda invocation's deadline its recording gives up: a record write
/// not done by then, and any group not begun, leave their messages to come back, and the
/// invocation answers the runtime with those failures. Past the deadline Lambda ends the
/// invocation instead, and every message of the batch comes back, the recorded ones too,
/// to be sent again.
pub(crate) const RECORDING_MARGIN: Duration = Duration::from_millis(250);

/// What became of one message.
pub(crate) enum Done<'a> {
    /// Not a delivery task: failed until the dead-letter queue takes it.
    Poison(&'a ReceivedMessage),
    /// Not handled now: something its hook needs (its secrets, its rate state, its
    /// envelope) could not be had for a reason that may pass. Left to come back on the
    /// queue's schedule, alone: the batch's other deliveries go on. On the queue's last
    /// receive it is recorded `FAILED` with `why` instead. `hook_version` is the hook's
    /// as read, when it was, for the event that tells of it then.
    Later { message: &'a ReceivedMessage, task: Box<Task>, why: &'static str, hook_version: Option<u64> },
    /// Queued unrouted to a hook that, read now, does not want its event (or is gone):
    /// done with, nothing recorded, as ingest would have queued nothing.
    Unwanted { message: &'a ReceivedMessage, task: Box<Task> },
    /// Not sent, for good: recorded `CANCELLED`.
    Cancel { message: &'a ReceivedMessage, task: Box<Task>, reason: String },
    /// Not sent now: handed back to `lane` as a new message (its wait in the task).
    /// `hook_version` is the hook's as read, for the event should its wait outlast it.
    Requeue { message: &'a ReceivedMessage, task: Box<Task>, lane: Lane, why: &'static str, hook_version: u64 },
    /// Sent. `slow`: it showed the hook slow; `recovered`: it made the hook, found slow,
    /// quick enough for long enough to go back to the fast lane (`Local::answered_on_slow_lane`).
    Attempted { ready: Box<Ready<'a>>, report: AttemptReport, abandoned: bool, slow: bool, recovered: bool },
}

impl<'a> Done<'a> {
    /// `message` not handled now, for `why`; poison if it is not a delivery task.
    pub(crate) fn later(message: &'a ReceivedMessage, why: &'static str) -> Self {
        match Task::parse(&message.body, message.receive_count) {
            Some(task) => Done::Later { message, task: Box::new(task), why, hook_version: None },
            None => Done::Poison(message),
        }
    }
}

/// Uniform in [-1, 1], for the schedule's jitter.
fn jitter() -> f64 {
    rand::random::<f64>() * 2.0 - 1.0
}

/// Records results until every sender is done; returns the messages that must come back.
pub(crate) async fn run(w: &Worker, ctx: &BatchContext<'_>, mut results: UnboundedReceiver<Done<'_>>) -> BatchOutcome {
    let mut outcome = BatchOutcome::default();
    if ctx.settle.is_none() {
        let mut all = Vec::new();
        while let Some(d) = results.recv().await {
            all.push(d);
        }
        let stop = stop_of(ctx.deadline);
        while !all.is_empty() {
            let rest = all.split_off(all.len().min(GROUP_MAX));
            let group = std::mem::replace(&mut all, rest);
            if stop.is_some_and(|s| tokio::time::Instant::now() >= s) {
                // Not begun: its messages come back, as after a crash before it.
                tracing::error!(
                    messages = group.len(),
                    "no time left in the invocation to record these; they come back"
                );
                outcome.failed.extend(group.iter().filter_map(message_of).map(|m| m.id.clone()));
                continue;
            }
            outcome.failed.extend(flush(w, ctx, group, stop).await);
        }
        return outcome;
    }
    while let Some(first) = results.recv().await {
        let mut group = vec![first];
        // What has come in, then what comes before the wait is over. The channel closes
        // once the batch's last request is done, which ends the wait at once.
        let until = tokio::time::Instant::now() + w.settings.gather;
        while group.len() < GROUP_MAX {
            match results.try_recv() {
                Ok(d) => group.push(d),
                Err(TryRecvError::Disconnected) => break,
                // tokio's timer rounds a deadline up to its next millisecond: no wait at
                // all is none.
                Err(TryRecvError::Empty) if w.settings.gather.is_zero() => break,
                Err(TryRecvError::Empty) => match tokio::time::timeout_at(until, results.recv()).await {
                    Ok(Some(d)) => group.push(d),
                    Ok(None) | Err(_) => break,
                },
            }
        }
        outcome.failed.extend(flush(w, ctx, group, None).await);
    }
    outcome
}

/// A follow-up message and the message it replaces.
struct FollowUp<'a> {
    /// Where the record of what became of its delivery is in the group's updates.
    record: Option<usize>,
    replaces: &'a ReceivedMessage,
    message: OutgoingMessage,
}

/// Writes one group; returns the ids of the messages that must come back. A record write
/// not done by `stop` is given up, as one that failed: then no follow-up is sent and the
/// group's messages come back. The follow-ups, sent once the record is written, and beside
/// them the hooks' health, the operational events (written as well as they can be) and the
/// early return of malformed messages, are given up half the margin later than `stop`.
///
/// A lane's send given up cannot say which of its messages were sent, so all their
/// originals come back: one whose follow-up was sent then goes on in two chains (sent
/// again, same `webhook-id`). Left to run, the send would outlast the invocation, and
/// Lambda would bring back every message of the batch, those two chains among them.
async fn flush(
    w: &Worker,
    ctx: &BatchContext<'_>,
    group: Vec<Done<'_>>,
    stop: Option<tokio::time::Instant>,
) -> Vec<String> {
    let now = Utc::now();
    let mut failed: Vec<&ReceivedMessage> = Vec::new();
    let mut poison: Vec<&ReceivedMessage> = Vec::new();
    let mut handled: Vec<&ReceivedMessage> = Vec::new();
    let mut updates = Vec::new();
    let mut follow_ups: HashMap<Lane, Vec<FollowUp<'_>>> = HashMap::new();
    let mut observed: HashMap<HookId, (Arc<Hook>, Vec<Observation>)> = HashMap::new();
    let mut events: Vec<BusEntry> = Vec::new();
    let mut metrics = crate::metrics::BatchMetrics::default();

    for d in &group {
        match d {
            Done::Poison(m) => {
                tracing::error!(message_id = %m.id, "not a delivery task; it will reach the dead-letter queue");
                poison.push(*m);
                failed.push(m);
            }
            Done::Later { message, task, .. } if task.unrouted.is_some() && message.receive_count >= LANE_RECEIVES => {
                // Never routed: whether its hook wants the event is not known, so nothing
                // is recorded (a record would show the event, perhaps another site's, to
                // whoever reads the hook). It goes to the dead-letter queue.
                let k = &task.delivery;
                tracing::error!(hook_id = %k.hook_id, delivery_id = %k.delivery_id, tenant = %k.tenant, "an unrouted delivery's hook could not be read on any of its receives; it goes to the dead-letter queue");
                failed.push(message);
            }
            Done::Later { message, task, why, hook_version } if message.receive_count >= LANE_RECEIVES => {
                // Failed again, it would go to the dead-letter queue and its delivery stay
                // as it was: never recorded, or `RETRYING` for ever. Recorded as given up
                // on instead, so Read shows it and a retry or replay sends it again.
                let k = &task.delivery;
                let note = format!("not sent: {why} on any of its {LANE_RECEIVES} receives");
                tracing::error!(hook_id = %k.hook_id, delivery_id = %k.delivery_id, tenant = %k.tenant, note, "delivery given up");
                // Failed for good, as an exhausted schedule is, and told of so: it went to
                // the dead-letter queue, whose alarm said so.
                metrics.failed += 1;
                events.push(
                    PlatformDetail {
                        tenant: k.tenant.clone(),
                        hook_id: k.hook_id,
                        hook_version: *hook_version,
                        delivery_id: Some(k.delivery_id),
                        reason: Some(note.clone()),
                    }
                    .bus_entry(event_type::DELIVERY_EXHAUSTED),
                );
                let mut update = DeliveryUpdate::given_up(k.clone(), task.round, note, now);
                update.opening = task.opening();
                updates.push(update);
                handled.push(message);
            }
            Done::Later { message, .. } => failed.push(message),
            Done::Unwanted { message, task } => {
                let k = &task.delivery;
                tracing::debug!(hook_id = %k.hook_id, delivery_id = %k.delivery_id, tenant = %k.tenant, "unrouted delivery not wanted by its hook");
                handled.push(message);
            }
            Done::Cancel { message, task, reason } => {
                let k = &task.delivery;
                tracing::info!(hook_id = %k.hook_id, delivery_id = %k.delivery_id, tenant = %k.tenant, reason, "delivery cancelled");
                metrics.cancelled += 1;
                let mut update = DeliveryUpdate::cancelled(k.clone(), task.round, reason.clone(), now);
                update.opening = task.opening();
                updates.push(update);
                handled.push(message);
            }
            Done::Requeue { message, task, hook_version, .. }
                if task.not_before.is_some_and(|t| past_retention(task.delivery.delivery_id, t)) =>
            {
                // Its wait (a rate-limit slot days ahead, an open circuit) ends after its
                // records are dropped: it would vanish from Read unsent. It ends now, as a
                // retry due then does.
                let k = &task.delivery;
                tracing::info!(hook_id = %k.hook_id, delivery_id = %k.delivery_id, tenant = %k.tenant, "delivery out of time");
                metrics.failed += 1;
                events.push(out_of_time_event(task, *hook_version));
                let mut update = DeliveryUpdate::given_up(k.clone(), task.round, String::new(), now);
                // Or, on a later round, the note that opened it, as an attempt's record keeps.
                update.note = past_retention_note(task.round).or_else(|| task.note.clone());
                update.opening = task.opening();
                updates.push(update);
                handled.push(message);
            }
            Done::Requeue { message, task, lane, why, .. } => {
                let k = &task.delivery;
                tracing::debug!(hook_id = %k.hook_id, delivery_id = %k.delivery_id, lane = ?lane, why, "delivery handed back");
                metrics.deferred += 1;
                let record = waiting(task, now).map(|update| {
                    // Read shows it while it waits; its later records need no opening.
                    updates.push(update);
                    updates.len() - 1
                });
                follow_ups.entry(*lane).or_default().push(FollowUp {
                    record,
                    replaces: message,
                    message: recorded(task).message(now),
                });
            }
            Done::Attempted { ready, report, abandoned, slow, recovered } => {
                let (update, follow_up) = attempted(w, ready, report, *abandoned, now, &mut events, &mut metrics);
                updates.push(update);
                let record = Some(updates.len() - 1);
                match follow_up {
                    Some((lane, msg)) => follow_ups.entry(lane).or_default().push(FollowUp {
                        record,
                        replaces: ready.message,
                        message: msg,
                    }),
                    None => handled.push(ready.message),
                }
                let started = report.attempt.at;
                let ended = started + chrono::Duration::milliseconds(report.attempt.duration_ms as i64);
                let observation = match (*abandoned, *slow) {
                    // Given up before the receiver had the lane's patience (its token still
                    // being fetched, or fetched late): nothing of its pace was seen.
                    (true, false) => None,
                    // When it was given up, as the worker's own mark dates it.
                    (true, true) => Some(Observation::Abandoned { started, at: ended }),
                    (false, _) => Some(Observation::Attempt { started, ended, sent: report.sent, slow: *slow }),
                };
                // When its answer came, so a slower answer of the group after it counts.
                let recovery = recovered.then_some(Observation::Recovered { at: ended });
                for observation in observation.into_iter().chain(recovery) {
                    observed
                        .entry(ready.hook.id)
                        .or_insert_with(|| (ready.hook.clone(), Vec::new()))
                        .1
                        .push(observation);
                }
            }
        }
    }

    let count = group.len();
    if let Some(together) = w.ports.settlement.as_ref().filter(|_| ctx.settle.is_some()) {
        // Health and operational events first: they tell of requests already made, and if
        // the write below fails the messages come back to be handled again.
        futures::join!(report(w, observed, events, &metrics, now), reject(w, ctx, &poison));
        let mut sends: Vec<(&str, Vec<CarriedOn>)> = Vec::with_capacity(follow_ups.len());
        for (lane, items) in follow_ups {
            let messages = items.into_iter().map(|f| {
                handled.push(f.replaces);
                CarriedOn { record: f.record, message: f.message, replaces: f.replaces.receipt.clone() }
            });
            sends.push((w.ports.lanes.get(lane).name(), messages.collect()));
        }
        let acks: Vec<Receipt> = handled.iter().map(|m| m.receipt.clone()).collect();
        let settled = Settled { updates: &updates, sends: &sends, acks: &acks };
        // A group of poison messages alone has nothing to write.
        let nothing = updates.is_empty() && acks.is_empty();
        if !nothing && let Err(e) = together.settle(settled).await {
            tracing::error!(error = %e, "cannot record the attempts; the messages will be retried");
            failed.append(&mut handled);
        }
        settle(ctx, Vec::new(), count).await;
        return failed.into_iter().map(|m| m.id.clone()).collect();
    }

    let late = stop.map(|s| s + RECORDING_MARGIN / 2);
    if !updates.is_empty()
        && let Err(e) = record_by(w, &updates, stop).await
    {
        // Nothing is settled: the group's messages come back and are handled again (at
        // least once); their follow-ups are not sent, or they would be doubled.
        tracing::error!(error = %e, "cannot record the attempts; the messages will be retried");
        let _ = by(late, reject(w, ctx, &poison)).await;
        let all: Vec<&ReceivedMessage> = group.iter().filter_map(message_of).collect();
        settle(ctx, Vec::new(), all.len()).await;
        return all.into_iter().map(|m| m.id.clone()).collect();
    }

    // The lanes' sends and the writes that tell of the group, all at once: one stalled
    // leaves the others their time.
    let follow_ups: Vec<(Lane, Vec<FollowUp<'_>>)> = follow_ups.into_iter().collect();
    let sends = futures::future::join_all(follow_ups.iter().map(|(lane, items)| async move {
        let messages: Vec<OutgoingMessage> = items.iter().map(|f| f.message.clone()).collect();
        by(late, w.ports.lanes.get(*lane).send_each(&messages)).await
    }));
    let reported =
        by(late, async { futures::join!(report(w, observed, events, &metrics, now), reject(w, ctx, &poison)) });
    let (sent, reported) = futures::join!(sends, reported);
    for ((lane, items), sent) in follow_ups.iter().zip(sent) {
        let unsent = match sent {
            Some(Ok(())) => Vec::new(),
            Some(Err(unsent)) => {
                // Those originals come back after their visibility timeout instead. Only
                // those: an original whose follow-up was sent must go, or its delivery
                // would go on in two chains.
                tracing::error!(error = %unsent.error, lane = ?lane, count = unsent.indices.len(), "could not hand messages back to the queue");
                unsent.indices
            }
            None => {
                tracing::error!(lane = ?lane, count = items.len(), "no time left in the invocation to hand these messages back to the queue; their originals come back");
                (0..items.len()).collect()
            }
        };
        for (i, f) in items.iter().enumerate() {
            if unsent.binary_search(&i).is_ok() { failed.push(f.replaces) } else { handled.push(f.replaces) }
        }
    }
    if reported.is_none() {
        tracing::error!(
            "no time left in the invocation to write the hooks' health and the operational events, or to return malformed messages early"
        );
    }
    settle(ctx, handled.iter().map(|m| m.receipt.clone()).collect(), count).await;
    failed.into_iter().map(|m| m.id.clone()).collect()
}

/// Hands `poison` (messages that are not delivery tasks) back at once, so they reach the
/// dead-letter queue sooner. Only that: not done, they come back after their visibility
/// timeout instead, so it waits on nothing that must be written.
async fn reject(w: &Worker, ctx: &BatchContext<'_>, poison: &[&ReceivedMessage]) {
    let queue = w.ports.lanes.get(ctx.lane);
    futures::future::join_all(poison.iter().map(|m| queue.reject(m))).await;
}

/// When recording gives up, for an invocation ending at `deadline`.
pub(crate) fn stop_of(deadline: Option<tokio::time::Instant>) -> Option<tokio::time::Instant> {
    deadline.map(|d| d.checked_sub(RECORDING_MARGIN).unwrap_or(d))
}

/// `work`'s result, or `None` when it was given up at `stop` (never without one).
pub(crate) async fn by<T>(stop: Option<tokio::time::Instant>, work: impl Future<Output = T>) -> Option<T> {
    match stop {
        None => Some(work.await),
        Some(s) => tokio::time::timeout_at(s, work).await.ok(),
    }
}

/// Records `updates`, given up at `stop`.
async fn record_by(
    w: &Worker,
    updates: &[DeliveryUpdate],
    stop: Option<tokio::time::Instant>,
) -> hookbridge_core::Result<()> {
    by(stop, w.ports.deliveries.record(updates)).await.unwrap_or_else(|| {
        Err(hookbridge_core::Error::backend("deliveries.record", "the invocation's time ran out before it was written"))
    })
}

/// The group's metrics line, each hook's health, and the operational events.
async fn report(
    w: &Worker,
    observed: HashMap<HookId, (Arc<Hook>, Vec<Observation>)>,
    mut events: Vec<BusEntry>,
    metrics: &crate::metrics::BatchMetrics,
    now: DateTime<Utc>,
) {
    if let Some(stack) = &w.settings.emf_stack
        && let Some(doc) = metrics.to_emf(stack, "delivery-worker", now.timestamp_millis())
    {
        // Lambda hands stdout to CloudWatch Logs, which extracts the metrics from this line.
        println!("{doc}");
    }
    for (_, (hook, obs)) in observed {
        events.extend(crate::health::record(w, hook, &obs, now).await);
    }
    if !events.is_empty()
        && let Err(e) = w.ports.bus.publish(events).await
    {
        tracing::error!(error = %e, "could not publish operational events");
    }
}

async fn settle(ctx: &BatchContext<'_>, done: Vec<Receipt>, count: usize) {
    if let Some(s) = ctx.settle {
        s.settled(done, count).await;
    }
}

/// `delivery.exhausted` for a delivery whose next attempt would come after its records are
/// dropped.
fn out_of_time_event(task: &Task, hook_version: u64) -> BusEntry {
    let k = &task.delivery;
    PlatformDetail {
        tenant: k.tenant.clone(),
        hook_id: k.hook_id,
        hook_version: Some(hook_version),
        delivery_id: Some(k.delivery_id),
        reason: Some(NOT_RETRIED_PAST_RETENTION.to_owned()),
    }
    .bus_entry(event_type::DELIVERY_EXHAUSTED)
}

fn message_of<'a>(d: &Done<'a>) -> Option<&'a ReceivedMessage> {
    match d {
        Done::Poison(m) => Some(m),
        Done::Later { message, .. }
        | Done::Unwanted { message, .. }
        | Done::Cancel { message, .. }
        | Done::Requeue { message, .. } => Some(message),
        Done::Attempted { ready, .. } => Some(ready.message),
    }
}

/// The `PENDING` record that makes a delivery nothing was recorded of yet, when its first
/// handling hands it back to wait (a rate-limit slot, an open circuit, the in-flight cap).
fn waiting(task: &Task, now: DateTime<Utc>) -> Option<DeliveryUpdate> {
    let opening = task.opening()?;
    Some(DeliveryUpdate {
        delivery: task.delivery.clone(),
        attempt: None,
        status: DeliveryStatus::Pending,
        next_attempt_at: task.not_before.or(Some(now)),
        note: task.note.clone(),
        round: task.round,
        at: now,
        opening: Some(opening),
    })
}

/// `task` carried on after this group's records: they made its delivery, if it was not.
fn recorded(task: &Task) -> Task {
    Task { unrecorded: None, ..task.clone() }
}

/// The attempt's log line, "delivery attempted". A success is a `debug` line: at the
/// volume the platform is for it would be most of the log, and say nothing its record
/// (Read, the console) does not; on AWS every line is paid for too (CloudWatch Logs, about
/// $0.20 a million deliveries). Any other outcome is an `info` line: what an operator
/// looks for (README: the failing-deliveries alarm).
fn log_attempt(k: &DeliveryKey, number: u32, probe: bool, attempt: &Attempt, status: DeliveryStatus) {
    // A macro, since an event's level is part of its call site and must be a constant.
    macro_rules! line {
        ($level:expr) => {
            tracing::event!(
                $level,
                hook_id = %k.hook_id,
                delivery_id = %k.delivery_id,
                tenant = %k.tenant,
                attempt = number,
                probe,
                status_code = attempt.status_code,
                error_class = attempt.error_class.map(|c| c.as_str()),
                duration_ms = attempt.duration_ms,
                outcome = ?status,
                "delivery attempted"
            )
        };
    }
    if status == DeliveryStatus::Succeeded {
        line!(tracing::Level::DEBUG);
    } else {
        line!(tracing::Level::INFO);
    }
}

/// The record of one attempt and the message that carries the delivery on, if any.
fn attempted(
    w: &Worker,
    ready: &Ready<'_>,
    report: &AttemptReport,
    abandoned: bool,
    now: DateTime<Utc>,
    events: &mut Vec<BusEntry>,
    metrics: &mut crate::metrics::BatchMetrics,
) -> (DeliveryUpdate, Option<(Lane, OutgoingMessage)>) {
    let task = &ready.task;
    let k = &task.delivery;
    metrics.latencies_ms.push(report.attempt.duration_ms);
    let mut attempt = report.attempt.clone();
    let mut note = None;
    let (status, next_at, follow_up) = if abandoned {
        // The same attempt number again, at once, with the slow lane's whole timeout: the
        // receiver may have got this request, but giving up on it was ours, not its fault.
        metrics.moved += 1;
        // Said as it was: a request the fast lane's budget ran out on while its token was
        // still being fetched never reached the receiver.
        attempt.response_excerpt = Some(if report.reached && report.token_pending {
            format!(
                "the receiver refused its token (401) and a new one was not fetched within the fast lane's {} ms; sent again at once on the slow lane",
                w.settings.patience.as_millis()
            )
        } else if report.reached {
            format!(
                "no answer within the fast lane's {} ms; sent again at once on the slow lane",
                w.settings.patience.as_millis()
            )
        } else {
            format!(
                "its token was not fetched within the fast lane's {} ms, so the receiver was not asked; sent again at once on the slow lane",
                w.settings.patience.as_millis()
            )
        });
        let mut next = recorded(task);
        next.not_before = None;
        next.slot = false;
        next.slot_schedule = None;
        (DeliveryStatus::Retrying, Some(now), Some((Lane::Slow, next.message(now))))
    } else {
        let number = task.attempt + 1;
        match decide(report.sent, number, &w.settings.schedule, jitter(), RetryRule::of(&ready.hook.config)) {
            Decision::Succeeded => {
                metrics.succeeded += 1;
                (DeliveryStatus::Succeeded, None, None)
            }
            Decision::RetryIn(delay) => {
                let at = now + chrono::Duration::from_std(delay).unwrap_or_default();
                if past_retention(k.delivery_id, at) {
                    metrics.failed += 1;
                    events.push(out_of_time_event(task, ready.hook.version));
                    note = past_retention_note(task.round);
                    (DeliveryStatus::Failed, None, None)
                } else {
                    metrics.retried += 1;
                    let mut next = recorded(task);
                    next.attempt = number;
                    next.not_before = Some(at);
                    next.slot = false;
                    next.slot_schedule = None;
                    let lane = if Reachability::of(report.sent) == Reachability::Down {
                        Lane::Slow
                    } else {
                        ready.hook.state.health.lane(now)
                    };
                    (DeliveryStatus::Retrying, Some(at), Some((lane, next.message(now))))
                }
            }
            Decision::Failed { exhausted } => {
                metrics.failed += 1;
                if exhausted {
                    // The schedule's, this round's: Read counts every attempt of every round, and
                    // a fast-lane try given up and sent again on the slow lane.
                    let why = format!("gave up after {number} attempts on its schedule");
                    events.push(
                        PlatformDetail::about(&ready.hook, Some(k.delivery_id), Some(why))
                            .bus_entry(event_type::DELIVERY_EXHAUSTED),
                    );
                }
                (DeliveryStatus::Failed, None, None)
            }
            Decision::FailedAndDisable => {
                metrics.failed += 1;
                (DeliveryStatus::Failed, None, None)
            }
        }
    };
    log_attempt(k, task.attempt + 1, ready.probe, &report.attempt, status);
    let update = DeliveryUpdate {
        delivery: k.clone(),
        attempt: Some(attempt),
        status,
        next_attempt_at: next_at,
        // An outcome's own reason, or what opened the round.
        note: note.or_else(|| task.note.clone()),
        round: task.round,
        at: now,
        opening: task.opening(),
    };
    (update, follow_up)
}

#[cfg(test)]
mod tests {
    use super::*;
    use hookbridge_core::ids::{DeliveryId, EventId};

    /// The lines written at `level` and above while `log` runs.
    fn lines_at(level: tracing::Level, log: impl FnOnce()) -> String {
        let logs = hookbridge_testkit::CapturedLogs::default();
        tracing::subscriber::with_default(logs.json_at(level), log);
        logs.text()
    }

    /// At `info` (the default), an attempt that did not succeed (here one to be retried) is
    /// logged and a successful one is not; at `debug` both are, with the delivery's ids
    /// and the attempt's number (the one passed, not the report's own).
    #[test]
    fn a_success_is_a_debug_line_and_any_other_outcome_an_info_line() {
        let k = DeliveryKey {
            tenant: "acme".parse().unwrap_or_else(|e| panic!("{e}")),
            hook_id: HookId::generate(),
            delivery_id: DeliveryId::generate(),
            event_id: EventId::generate(),
            event_type: "user.login".into(),
        };
        let attempt = |status_code| Attempt {
            attempt: 9,
            at: Utc::now(),
            duration_ms: 12,
            status_code: Some(status_code),
            error_class: None,
            response_excerpt: None,
        };
        let succeeded = || log_attempt(&k, 3, false, &attempt(200), DeliveryStatus::Succeeded);
        let retrying = || log_attempt(&k, 3, false, &attempt(503), DeliveryStatus::Retrying);
        assert_eq!(lines_at(tracing::Level::INFO, succeeded), "");
        let failed = lines_at(tracing::Level::INFO, retrying);
        assert!(failed.contains("delivery attempted") && failed.contains("\"status_code\":503"), "{failed}");
        let debug = lines_at(tracing::Level::DEBUG, succeeded);
        for said in ["delivery attempted", &k.delivery_id.to_string(), &k.hook_id.to_string(), "\"attempt\":3"] {
            assert!(debug.contains(said), "{said} in {debug}");
        }
    }
}
