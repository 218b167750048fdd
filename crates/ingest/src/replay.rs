//! Re-sending deliveries: one (a retry, from the API) or a replay job's window a page at a
//! time (from a [`ReplayPoke`] on the ingest queue). A re-send is a new round of the same
//! delivery: same `webhook-id`, the full retry schedule again.

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use futures::{StreamExt, TryStreamExt};
use hookbridge_core::Result;
use hookbridge_core::delivery::{Delivery, DeliveryKey, DeliveryStatus, DeliveryUpdate};
use hookbridge_core::envelope::{EnvelopeError, Routing};
use hookbridge_core::hook::Hook;
use hookbridge_core::ids::EventId;
use hookbridge_core::message::{INLINE_BODY_MAX, Routed, Task};
use hookbridge_core::ports::{
    DeliveryStore, EventStore, HookStore, Lanes, Order, OutgoingMessage, Queue, ReplayStore, Window,
};
#[cfg(doc)]
use hookbridge_core::replay::PAGE;
use hookbridge_core::replay::{ReplayJob, ReplayPoke, ReplayState};

/// Reads the events' envelopes, a few at a time (a page may span hundreds of events).
const EVENT_READS_IN_FLIGHT: usize = 16;

/// An event read from the event store: how it is kept, and how it was routed.
struct Found {
    kept: Kept,
    routed: Result<Option<Routed>, Unroutable>,
}

/// An event whose routing cannot be read even as an earlier release read it: it cannot be
/// checked against the hook as it is now, so it is not sent again.
#[derive(Debug, Clone, Copy)]
struct Unroutable;

/// An event still kept, as a re-send needs it.
enum Kept {
    /// Small enough to ride in the task.
    Inline(String),
    /// Read from the event store by the worker.
    Apart,
}

/// How ingest routed an envelope's event (its site), from the envelope's routing and
/// whether it is the platform's test event; `None`, so the worker sends it without checking
/// it again, for the test event (it goes to its one hook whatever the hook subscribes to,
/// as it did the first time). A routing that does not read is not sent unchecked: that let
/// an event kept from before `"site": null` was refused reach a hook moved to other sites.
fn routed(head: Result<(Routing, bool), EnvelopeError>) -> Result<Option<Routed>, Unroutable> {
    let (routing, test) = head.map_err(|_| Unroutable)?;
    Ok((!test).then_some(Routed { site: routing.site }))
}

/// What a re-send did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Resent {
    /// Deliveries queued again.
    pub queued: u64,
    /// Deliveries whose event is no longer kept, so they could not be.
    pub skipped: u64,
    /// Deliveries of events the hook no longer subscribes to (its `event_types` or
    /// `sites` changed), left as they were: the worker would only cancel them, their
    /// status overwritten.
    pub unwanted: u64,
    /// Deliveries whose kept event's routing cannot be read, even as earlier releases read
    /// it: they cannot be checked against the hook as it is now, so they are not sent.
    pub unroutable: u64,
}

impl Resent {
    /// What a replay job counts as skipped: not re-sent, for any of the reasons.
    pub fn not_resent(&self) -> u64 {
        self.skipped + self.unwanted + self.unroutable
    }
}

/// Queues the deliveries again as a new round, in the order given, then records them as
/// `PENDING`. Sending first means a failure cannot leave a delivery `PENDING` with nothing
/// queued for it; the round means the worker's outcome stands even when it is stored
/// before this `PENDING` (see [`Delivery::apply`]). Deliveries whose event is no longer
/// kept, or that the hook no longer wants, are skipped.
pub async fn resend(
    events: &dyn EventStore,
    store: &dyn DeliveryStore,
    lanes: &Lanes,
    hook: &Hook,
    deliveries: &[Delivery],
    note: &str,
) -> Result<Resent> {
    let now = Utc::now();
    // Most deliveries keep their envelope; the rest are read from the event store.
    let mut wanted: Vec<EventId> =
        deliveries.iter().filter(|d| d.envelope.is_none()).map(|d| d.event_id.clone()).collect();
    wanted.sort();
    wanted.dedup();
    let tenant = &hook.tenant;
    // Only a small envelope is kept once read: the task carries it. A larger one was read
    // only to learn the event is still kept (the worker reads it again), and a page of
    // 500 events of 256 KiB held at once would be 125 MB in a 256 MB function.
    let read: Vec<(EventId, Option<Found>)> = futures::stream::iter(wanted)
        .map(|id: EventId| async move {
            let env = events.get(tenant, &id).await?;
            let kept = env.map(|e| {
                let routed = routed(e.kept_routing().map(|r| (r, e.is_test())));
                let b = e.to_body();
                let kept = if b.len() <= INLINE_BODY_MAX { Kept::Inline(b) } else { Kept::Apart };
                Found { kept, routed }
            });
            Ok::<_, hookbridge_core::Error>((id, kept))
        })
        .buffer_unordered(EVENT_READS_IN_FLIGHT)
        .try_collect()
        .await?;
    let bodies: HashMap<EventId, Option<Found>> = read.into_iter().collect();
    let mut updates = Vec::new();
    let mut tasks = Vec::new();
    let (mut unwanted, mut unroutable) = (0, 0);
    for d in deliveries {
        let (body, routed) = match (&d.envelope, bodies.get(&d.event_id)) {
            (Some(kept), _) => (Some(kept.as_str()), routed(Routing::of_kept_body(kept))),
            (None, Some(Some(Found { kept: Kept::Inline(read), routed }))) => (Some(read.as_str()), routed.clone()),
            (None, Some(Some(Found { kept: Kept::Apart, routed }))) => (None, routed.clone()),
            (None, _) => continue,
        };
        let Ok(routed) = routed else {
            unroutable += 1;
            continue;
        };
        if routed.as_ref().is_some_and(|r| !hook.config.wants(&d.event_type, r.site.as_deref())) {
            unwanted += 1;
            continue;
        }
        let key = DeliveryKey {
            tenant: hook.tenant.clone(),
            hook_id: hook.id,
            delivery_id: d.id,
            event_id: d.event_id.clone(),
            event_type: d.event_type.clone(),
        };
        let round = d.round + 1;
        updates.push(DeliveryUpdate {
            delivery: key.clone(),
            attempt: None,
            status: DeliveryStatus::Pending,
            next_attempt_at: Some(now),
            note: Some(note.to_owned()),
            round,
            at: now,
            opening: None,
        });
        let mut task = match body {
            Some(body) => Task::new(key, round, body),
            None => Task::by_reference(key, round),
        };
        task.note = Some(note.to_owned());
        // Checked by the worker against the hook as it is then, as ingest's tasks are.
        task.routed = routed;
        tasks.push(task.message(now));
    }
    if !tasks.is_empty() {
        lanes.get(hook.state.health.lane(now)).send_batch(&tasks).await?;
        store.record(&updates).await?;
    }
    let queued = tasks.len() as u64;
    let skipped = deliveries.len() as u64 - queued - unwanted - unroutable;
    Ok(Resent { queued, skipped, unwanted, unroutable })
}

/// What a replay job's page needs.
#[derive(Clone, Copy)]
pub struct JobPorts<'a> {
    /// The hook, re-read each page (it may be deleted, or change lanes).
    pub hooks: &'a dyn HookStore,
    /// The window's deliveries.
    pub deliveries: &'a dyn DeliveryStore,
    /// Their envelopes.
    pub events: &'a dyn EventStore,
    /// The jobs.
    pub replays: &'a dyn ReplayStore,
    /// Where the next poke goes.
    pub ingest: &'a dyn Queue,
    /// Where re-sent deliveries go.
    pub lanes: &'a Lanes,
    /// Deliveries read per page ([`PAGE`]; tests use fewer). A poke back reads fewer
    /// ([`page_on_receive`]).
    pub page: usize,
    /// Deliveries a poke's first receive reads: as many as a page that failed after
    /// re-sending may have re-sent, which a poke back for a stopped job counts.
    pub first_page: usize,
}

impl std::fmt::Debug for JobPorts<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JobPorts").finish_non_exhaustive()
    }
}

/// Counts a page re-sent while the job was cancelled: the cancel was saved over the step
/// the page read, so the page's save lost, but its deliveries went all the same and
/// `queued` says what was re-sent. A page saved by another poke is counted there already.
/// `queued` is at least what the job's note marks at the cursor: a poke back reads a
/// smaller page ([`page_on_receive`]) than the one its failed first try re-sent, and
/// what that one re-sent past the smaller page was counted nowhere.
pub async fn count_after_cancel(p: JobPorts<'_>, read: &ReplayJob, resent: Resent, now: DateTime<Utc>) -> Result<()> {
    let Some(stored) = p.replays.get(read.hook_id, read.id).await? else { return Ok(()) };
    let cancelled_over_this_page =
        stored.state == ReplayState::Cancelled && stored.step == read.step + 1 && stored.cursor == read.cursor;
    if !cancelled_over_this_page {
        return Ok(());
    }
    // Read even when this page found nothing to re-send: the earlier try's page was larger.
    let queued = match resent_at_cursor(p, read).await {
        Ok(marked) => resent.queued.max(marked),
        Err(e) => {
            tracing::warn!(replay_id = %read.id, error = %e, "cannot count what a cancelled replay's earlier try re-sent");
            resent.queued
        }
    };
    if queued == 0 && resent.not_resent() == 0 {
        return Ok(());
    }
    let counted = with_page_counted(&stored, queued, resent.not_resent(), now);
    // Lost again only to a later save of the cancelled job, which nothing makes.
    p.replays.save(&counted, stored.step).await.map(|_| ())
}

/// A stopped `job` with one more page counted: `queued` re-sent and `skipped`, saved as a
/// step of its own.
fn with_page_counted(job: &ReplayJob, queued: u64, skipped: u64, now: DateTime<Utc>) -> ReplayJob {
    let mut counted = job.clone();
    counted.step += 1;
    counted.queued += queued;
    counted.skipped += skipped;
    counted.updated_at = now;
    counted
}

/// How many of the deliveries at `job`'s cursor the job re-sent already: what a page
/// re-sent when its save never came (its poke failed after re-sending, and comes back).
async fn resent_at_cursor(p: JobPorts<'_>, job: &ReplayJob) -> Result<u64> {
    let window = Window { since: job.since, until: job.until };
    let most = p.page.max(p.first_page);
    let page = p.deliveries.list(job.hook_id, window, Order::OldestFirst, most, job.cursor.as_deref()).await?;
    Ok(page.items.iter().filter(|d| job.resent(d)).count() as u64)
}

/// The running `job` stopped `FAILED` (its hook deleted or unable to receive, or its poke
/// failing on its last receive), counting what the page at its cursor re-sent already: a
/// poke that re-sent the page and failed before saving it comes back to find the hook
/// gone, or fails for the last time. Stopped all the same when the page cannot be read.
async fn stopped_counted(p: JobPorts<'_>, job: &ReplayJob, now: DateTime<Utc>) -> ReplayJob {
    let mut stopped = job.stopped(ReplayState::Failed, now);
    match resent_at_cursor(p, job).await {
        Ok(n) => stopped.queued += n,
        Err(e) => {
            tracing::warn!(replay_id = %job.id, error = %e, "cannot count what a stopped replay's last page re-sent")
        }
    }
    stopped
}

/// Counts, on a cancelled job, what its last page re-sent when that page's save never
/// came: the poke re-sent the page and failed (saving, or poking again), and the job was
/// cancelled before the poke came back. The page is read again from the cursor the cancel
/// kept, and the deliveries the job's note marks are added to `queued`. Only while nothing
/// has been counted since the cancel (its `updated_at` is still the cancel's), so a second
/// copy of the poke counts nothing more; a page whose own poke counted it after losing to
/// the cancel ([`count_after_cancel`]) is not counted twice. The page's skipped deliveries
/// left no mark, and stay uncounted. A failure is only logged: the job has stopped, and
/// its poke must not come back for it again and again.
async fn count_when_cancelled(p: JobPorts<'_>, job: &ReplayJob, now: DateTime<Utc>) -> Result<()> {
    if job.state != ReplayState::Cancelled || job.finished_at != Some(job.updated_at) {
        return Ok(());
    }
    let counted = match resent_at_cursor(p, job).await {
        Ok(0) => return Ok(()),
        Ok(n) => n,
        Err(e) => {
            tracing::warn!(replay_id = %job.id, error = %e, "cannot count what a cancelled replay's last page re-sent");
            return Ok(());
        }
    };
    if let Err(e) = p.replays.save(&with_page_counted(job, counted, 0, now), job.step).await {
        tracing::warn!(replay_id = %job.id, error = %e, "cannot count what a cancelled replay's last page re-sent");
    }
    Ok(())
}

/// Marks the poked job `FAILED`: its poke failed (its page, or handing the page on) on the
/// last receive the queue allows. What a try of the page re-sent before failing is counted
/// ([`stopped_counted`]): a first try may have re-sent a whole page before its save failed.
pub async fn give_up(p: JobPorts<'_>, poked: &ReplayPoke, now: DateTime<Utc>) -> Result<()> {
    let Some(job) = p.replays.get(poked.hook_id, poked.replay_id).await? else { return Ok(()) };
    if job.state.is_final() || job.tenant != poked.tenant {
        return Ok(());
    }
    let stopped = match tokio::time::timeout(COUNT_PATIENCE, stopped_counted(p, &job, now)).await {
        Ok(stopped) => stopped,
        Err(_) => {
            tracing::warn!(replay_id = %job.id, "cannot count in time what a failed replay's last page re-sent");
            job.stopped(ReplayState::Failed, now)
        }
    };
    p.replays.save(&stopped, job.step).await.map(|_| ())
}

/// The longest [`give_up`] spends counting what the job's last page re-sent, so that the
/// job is still failed in the time its poke's last receive leaves (`GIVE_UP_TIME`): the
/// page is read from the store that may be what held the page up.
const COUNT_PATIENCE: std::time::Duration = std::time::Duration::from_secs(1);

/// The deliveries a poke's page reads: `page` on the poke's first receive, half as many on
/// each receive after. A poke comes back when its page failed, perhaps for want of time
/// (a throttled table, a slow queue), and a smaller page is likelier to fit. At least one.
pub fn page_on_receive(page: usize, receive_count: u32) -> usize {
    (page >> receive_count.saturating_sub(1).min(usize::BITS - 1)).max(1)
}

/// Puts the poke that makes ingest do `job`'s next page.
pub async fn poke(ingest: &dyn Queue, job: &ReplayJob) -> Result<()> {
    let message = OutgoingMessage::now(ReplayPoke::of(job).to_body()).in_group(job.tenant.to_string());
    ingest.send_batch(std::slice::from_ref(&message)).await
}

/// Does one page of the poked job: re-sends the page's matching deliveries, saves the
/// job's progress, and pokes again unless the job is done. A poke for a job that has
/// stopped (or is unknown, or whose page someone else saved first) does nothing.
pub async fn step(p: JobPorts<'_>, poked: &ReplayPoke, now: DateTime<Utc>) -> Result<()> {
    let Some(job) = p.replays.get(poked.hook_id, poked.replay_id).await? else {
        tracing::warn!(replay_id = %poked.replay_id, "poke for an unknown replay job; dropped");
        return Ok(());
    };
    if job.tenant != poked.tenant {
        return Ok(());
    }
    if job.state.is_final() {
        return count_when_cancelled(p, &job, now).await;
    }
    let Some(hook) = p.hooks.get(&job.tenant, job.hook_id).await? else {
        p.replays.save(&stopped_counted(p, &job, now).await, job.step).await?;
        tracing::info!(replay_id = %job.id, "replay stopped: the hook was deleted");
        return Ok(());
    };
    if let Err(why) = hook.deliverable() {
        // What it re-sent now would only be cancelled by the worker, its status overwritten.
        p.replays.save(&stopped_counted(p, &job, now).await, job.step).await?;
        tracing::info!(replay_id = %job.id, reason = %why, "replay stopped: the hook cannot receive");
        return Ok(());
    }
    let window = Window { since: job.since, until: job.until };
    let page = p.deliveries.list(job.hook_id, window, Order::OldestFirst, p.page, job.cursor.as_deref()).await?;
    // The cursor moves past what was read, matching or not.
    let next = page.next_cursor;
    let (already, picked): (Vec<Delivery>, Vec<Delivery>) =
        page.items.into_iter().filter(|d| job.resent(d) || job.wants(d)).partition(|d| job.resent(d));
    let mut resent = resend(p.events, p.deliveries, p.lanes, &hook, &picked, &job.note()).await?;
    resent.queued += already.len() as u64;
    let saved = job.advanced(next, resent.queued, resent.not_resent(), now);
    if !p.replays.save(&saved, job.step).await? {
        // Cancelled, or a second poke (after a crash) saved this page first: it goes on.
        tracing::info!(replay_id = %job.id, "replay page saved elsewhere; this poke stops here");
        count_after_cancel(p, &job, resent, now).await?;
        return Ok(());
    }
    tracing::info!(
        tenant = %job.tenant, hook_id = %job.hook_id, replay_id = %job.id,
        step = saved.step, queued = saved.queued, state = ?saved.state, "replay page done"
    );
    if saved.state == ReplayState::Running {
        // Only after the save: a crash before this line brings the current poke back,
        // and it carries on from the saved cursor.
        poke(p.ingest, &saved).await?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::page_on_receive;

    #[test]
    fn a_page_tried_again_is_half_the_last_and_never_empty() {
        let pages: Vec<usize> = (1..=5).map(|n| page_on_receive(500, n)).collect();
        assert_eq!(pages, [500, 250, 125, 62, 31]);
        assert_eq!(page_on_receive(500, 0), 500, "a count of 0 (no queue gives one) is a first receive");
        assert_eq!(page_on_receive(3, 40), 1);
    }
}
