//! A replay job on both backends: it works through its window a page at a time, oldest
//! first; a poke that comes back after a crash carries on from the saved page instead of
//! starting over; two pokes in flight merge back into one; a cancelled job, a disabled
//! hook and a deleted hook stop it; a page failing on every receive fails it; a page
//! re-sent while the job was cancelled is counted, and so is one whose save was lost,
//! without being sent twice, even when the job stopped before its poke came back; a page
//! that outlasts its invocation is given up, tried again
//! smaller, and fails its job on the last receive.

#![allow(clippy::unwrap_used)] // Tests fail loudly on purpose.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::Utc;
use hookbridge_core::delivery::{Delivery, DeliveryStatus};
use hookbridge_core::envelope::Envelope;
use hookbridge_core::hook::Hook;
use hookbridge_core::ids::{DeliveryId, EventId, HookId, TenantId};
use hookbridge_core::message::Task;
use hookbridge_core::ports::{DeliveryStore, Order, Page, Queue, Receipt, ReceivedMessage, Window};
use hookbridge_core::replay::{ReplayJob, ReplayPoke, ReplayState};
use hookbridge_testkit::contract::make_hook;
use hookbridge_testkit::{AwsHarness, EmbeddedHarness, Harness};
use ingest::Ingest;

#[allow(dead_code)] // each test binary uses part of it
mod common;

/// `n` finished deliveries of `hook`, a millisecond apart, with their events kept: every
/// other one `FAILED`, from the first.
async fn seed(h: &dyn Harness, hook: &Hook, n: usize) -> Vec<Delivery> {
    seed_as(h, hook, n, |i| [DeliveryStatus::Failed, DeliveryStatus::Succeeded][i % 2]).await
}

/// `n` finished deliveries of `hook`, the `i`th ending `status(i)`, a millisecond apart,
/// with their events kept.
async fn seed_as(h: &dyn Harness, hook: &Hook, n: usize, status: impl Fn(usize) -> DeliveryStatus) -> Vec<Delivery> {
    let b = h.backend();
    let start = Utc::now() - chrono::Duration::minutes(30);
    let mut envelopes = Vec::new();
    let mut deliveries = Vec::new();
    for i in 0..n {
        let id = EventId::generate();
        let body = format!(
            r#"{{"version":"0","id":"{id}","detail-type":"user.login","source":"idp","account":"1","time":"{}","region":"r","resources":[],"detail":{{"tenant":"{}","n":{i}}}}}"#,
            start.format("%Y-%m-%dT%H:%M:%SZ"),
            hook.tenant
        );
        envelopes.push(Envelope::from_bus_json(&body, "1", "r").unwrap());
        let at = start + chrono::Duration::milliseconds(i as i64);
        let delivery_id = DeliveryId::from_parts(at.timestamp_millis() as u64, i as u128 + 1);
        let mut d = Delivery::pending(delivery_id, hook.tenant.clone(), hook.id, id, "user.login".into(), at);
        d.status = status(i);
        deliveries.push(d);
    }
    for chunk in envelopes.chunks(100) {
        b.events.put(&hook.tenant, chunk, Utc::now() + chrono::Duration::hours(1)).await.unwrap();
    }
    for chunk in deliveries.chunks(100) {
        b.deliveries.insert(chunk).await.unwrap();
    }
    deliveries
}

/// A small page, so three pages stay quick on the emulator.
const PAGE: usize = 50;

/// Handles `messages` as ingest does, with [`PAGE`]-sized pages: pokes do a page each.
async fn handle(deps: &Ingest, messages: &[ReceivedMessage]) {
    for m in messages {
        let poked = ReplayPoke::parse(&m.body).expect("a poke");
        let page = ingest::replay::page_on_receive(PAGE, m.receive_count);
        let ports = ingest::replay::JobPorts { page, first_page: PAGE, ..deps.ports.job_ports() };
        ingest::replay::step(ports, &poked, Utc::now()).await.unwrap();
    }
}

fn message(body: String, id: &str) -> ReceivedMessage {
    ReceivedMessage { id: id.into(), body, receipt: Receipt(format!("r-{id}")), receive_count: 1, sent_at: Utc::now() }
}

/// The delivery ids on the fast lane, in the order they were queued (each re-sent by a
/// replay, its task saying so).
async fn queued(q: &dyn Queue, expected: usize) -> Vec<DeliveryId> {
    let mut ids = Vec::new();
    for _ in 0..200 {
        let got = q.receive(10, Duration::from_millis(200)).await.unwrap();
        if got.is_empty() && ids.len() >= expected {
            break;
        }
        for m in &got {
            let task = Task::parse(&m.body, m.receive_count).unwrap();
            // The worker's records carry it, should the re-send's own record be lost.
            assert!(task.note.as_deref().is_some_and(|n| n.starts_with("replayed by ")), "{task:?}");
            ids.push(task.delivery.delivery_id);
        }
        q.ack(&got.iter().map(|m| m.receipt.clone()).collect::<Vec<_>>()).await.unwrap();
    }
    ids
}

async fn pokes(q: &dyn Queue) -> Vec<ReceivedMessage> {
    let got = q.receive(10, Duration::from_millis(500)).await.unwrap();
    q.ack(&got.iter().map(|m| m.receipt.clone()).collect::<Vec<_>>()).await.unwrap();
    got
}

/// `ordered`: whether the queue hands messages back in the order sent (the embedded one
/// does; SQS does not promise it).
async fn a_replay_resumes_from_its_saved_page_after_a_crash(h: &dyn Harness, ordered: bool) {
    let tenant: TenantId = h.unique("tenant").parse().unwrap();
    let (hook, _) = make_hook(h, tenant.as_str(), "replayed").await;
    h.backend().hooks.create(&hook, 1000).await.unwrap();
    let n = 2 * PAGE + 10;
    let seeded = seed(h, &hook, n).await;
    let ids: Vec<DeliveryId> = seeded.iter().map(|d| d.id).collect();
    let deps = common::deps(h);
    let b = h.backend();
    let now = Utc::now();
    let job = ReplayJob::new(tenant.clone(), hook.id, now - chrono::Duration::hours(1), now, None, now);
    b.replays.create(&job).await.unwrap();
    let poke = message(ReplayPoke::of(&job).to_body(), "first");

    handle(&deps, std::slice::from_ref(&poke)).await;
    let after_one = b.replays.get(hook.id, job.id).await.unwrap().unwrap();
    assert_eq!((after_one.step, after_one.queued, after_one.state), (1, PAGE as u64, ReplayState::Running));
    // The process died before acknowledging: the same poke comes back. It does the next
    // page, not the first again.
    handle(&deps, std::slice::from_ref(&poke)).await;
    let after_two = b.replays.get(hook.id, job.id).await.unwrap().unwrap();
    assert_eq!((after_two.step, after_two.queued), (2, 2 * PAGE as u64));

    // Each handled poke sent the next one: two are in flight, and they merge back into one.
    let mut handled = 0;
    for _ in 0..10 {
        let next = pokes(b.ingest_queue.as_ref()).await;
        if next.is_empty() {
            break;
        }
        handled += next.len();
        handle(&deps, &next).await;
    }
    assert_eq!(handled, 2, "the two pokes from the first two pages, and none after the last");
    let done = b.replays.get(hook.id, job.id).await.unwrap().unwrap();
    assert_eq!((done.state, done.queued, done.skipped), (ReplayState::Succeeded, n as u64, 0));
    assert!(done.finished_at.is_some());

    let sent = queued(b.delivery_queue.as_ref(), n).await;
    assert_eq!(sent.len(), n, "every delivery once");
    let distinct: BTreeSet<_> = sent.iter().collect();
    assert!(distinct.len() == n && distinct == ids.iter().collect(), "each seeded delivery, once");
    assert!(!ordered || sent == ids, "oldest first");
    let d = b.deliveries.get(hook.id, ids[0]).await.unwrap().unwrap();
    assert_eq!((d.status, d.round), (DeliveryStatus::Pending, 1), "a new round of the same delivery");

    // A FAILED-only job over the same window re-sends half.
    let failed = ReplayJob::new(tenant.clone(), hook.id, job.since, job.until, Some(vec![DeliveryStatus::Failed]), now);
    b.replays.create(&failed).await.unwrap();
    // The first replay made them all PENDING; settle them as they were.
    let settle: Vec<_> = seeded
        .iter()
        .enumerate()
        .map(|(i, d)| {
            let mut u = hookbridge_core::delivery::DeliveryUpdate::cancelled(
                hookbridge_core::delivery::DeliveryKey {
                    tenant: tenant.clone(),
                    hook_id: hook.id,
                    delivery_id: d.id,
                    event_id: d.event_id.clone(),
                    event_type: "user.login".into(),
                },
                1,
                "settled".into(),
                Utc::now(),
            );
            u.status = if i % 2 == 0 { DeliveryStatus::Failed } else { DeliveryStatus::Succeeded };
            u
        })
        .collect();
    for chunk in settle.chunks(100) {
        b.deliveries.record(chunk).await.unwrap();
    }
    let mut next = vec![message(ReplayPoke::of(&failed).to_body(), "failed-only")];
    while !next.is_empty() {
        handle(&deps, &next).await;
        next = pokes(b.ingest_queue.as_ref()).await;
    }
    let done = b.replays.get(hook.id, failed.id).await.unwrap().unwrap();
    assert_eq!((done.state, done.queued), (ReplayState::Succeeded, n.div_ceil(2) as u64));
    // The FAILED ones, not merely as many: the other half is as many.
    let resent: BTreeSet<DeliveryId> = queued(b.delivery_queue.as_ref(), n.div_ceil(2)).await.into_iter().collect();
    let failed_ids: BTreeSet<DeliveryId> = ids.iter().step_by(2).copied().collect();
    assert_eq!(resent, failed_ids);
}

async fn a_cancelled_job_and_a_deleted_hook_stop_a_replay(h: &dyn Harness) {
    let tenant: TenantId = h.unique("tenant").parse().unwrap();
    let (hook, _) = make_hook(h, tenant.as_str(), "stopped").await;
    h.backend().hooks.create(&hook, 1000).await.unwrap();
    seed(h, &hook, 10).await;
    let deps = common::deps(h);
    let b = h.backend();
    let now = Utc::now();

    let job = ReplayJob::new(tenant.clone(), hook.id, now - chrono::Duration::hours(1), now, None, now);
    b.replays.create(&job).await.unwrap();
    assert!(b.replays.save(&job.stopped(ReplayState::Cancelled, now), job.step).await.unwrap());
    handle(&deps, &[message(ReplayPoke::of(&job).to_body(), "c")]).await;
    assert_eq!(b.replays.get(hook.id, job.id).await.unwrap().unwrap().queued, 0, "nothing re-sent once cancelled");
    assert!(b.delivery_queue.receive(10, Duration::from_millis(300)).await.unwrap().is_empty());

    // A hook disabled under a running job: re-sent now, its deliveries would only be
    // cancelled by the worker, their FAILED overwritten.
    let unreceiving = ReplayJob::new(tenant.clone(), hook.id, job.since, job.until, None, now);
    b.replays.create(&unreceiving).await.unwrap();
    let mut disabled = hook.clone();
    disabled.config.enabled = false;
    disabled.revision += 1;
    b.hooks.replace(&disabled, hook.revision).await.unwrap();
    handle(&deps, &[message(ReplayPoke::of(&unreceiving).to_body(), "u")]).await;
    let stopped = b.replays.get(hook.id, unreceiving.id).await.unwrap().unwrap();
    assert_eq!((stopped.state, stopped.queued), (ReplayState::Failed, 0));
    assert!(b.delivery_queue.receive(10, Duration::from_millis(300)).await.unwrap().is_empty());

    let orphan = ReplayJob::new(tenant.clone(), hook.id, job.since, job.until, None, now);
    b.replays.create(&orphan).await.unwrap();
    assert!(b.hooks.delete(&tenant, hook.id).await.unwrap());
    handle(&deps, &[message(ReplayPoke::of(&orphan).to_body(), "d")]).await;
    assert_eq!(b.replays.get(hook.id, orphan.id).await.unwrap().unwrap().state, ReplayState::Failed);
    assert!(pokes(b.ingest_queue.as_ref()).await.is_empty(), "a stopped job pokes no more");
}

/// A page that fails on every receive (here a saved cursor no store can read) fails the job
/// on the last receive the queue allows, instead of leaving it `RUNNING` for ever once its
/// poke is in the dead-letter queue.
async fn a_page_failing_on_every_receive_fails_its_job(h: &dyn Harness) {
    let tenant: TenantId = h.unique("tenant").parse().unwrap();
    let (hook, _) = make_hook(h, tenant.as_str(), "failing").await;
    h.backend().hooks.create(&hook, 1000).await.unwrap();
    let deps = common::deps(h);
    let b = h.backend();
    let now = Utc::now();
    let mut job = ReplayJob::new(tenant.clone(), hook.id, now - chrono::Duration::hours(1), now, None, now);
    job.cursor = Some("not-a-cursor".into());
    b.replays.create(&job).await.unwrap();
    let poke = |receive_count| ReceivedMessage { receive_count, ..message(ReplayPoke::of(&job).to_body(), "p") };

    assert_eq!(ingest::handle(&deps, &[poke(1)]).await.failed, ["p"]);
    assert_eq!(b.replays.get(hook.id, job.id).await.unwrap().unwrap().state, ReplayState::Running, "tried again");
    let last = hookbridge_core::topology::INGEST_RECEIVES;
    // Two copies in one batch (a queue's duplicate), one on its last receive: the one with
    // receives left does the page, so its failure does not fail the job.
    let spent = ReceivedMessage { id: "spent".into(), ..poke(last) };
    assert_eq!(ingest::handle(&deps, &[spent, poke(2)]).await.failed, ["p"]);
    assert_eq!(b.replays.get(hook.id, job.id).await.unwrap().unwrap().state, ReplayState::Running, "not failed");
    assert_eq!(ingest::handle(&deps, &[poke(last)]).await.failed, ["p"]);
    let failed = b.replays.get(hook.id, job.id).await.unwrap().unwrap();
    assert_eq!(failed.state, ReplayState::Failed);
    assert!(failed.finished_at.is_some());
}

/// A store whose listings never answer, as a throttled table that keeps a page waiting.
struct ListsNeverAnswer {
    inner: Arc<dyn DeliveryStore>,
}

#[async_trait::async_trait]
impl DeliveryStore for ListsNeverAnswer {
    async fn insert(&self, deliveries: &[Delivery]) -> hookbridge_core::Result<()> {
        self.inner.insert(deliveries).await
    }
    async fn record(&self, updates: &[hookbridge_core::delivery::DeliveryUpdate]) -> hookbridge_core::Result<()> {
        self.inner.record(updates).await
    }
    async fn get(&self, hook_id: HookId, id: DeliveryId) -> hookbridge_core::Result<Option<Delivery>> {
        self.inner.get(hook_id, id).await
    }
    async fn list(
        &self,
        _: HookId,
        _: Window,
        _: Order,
        _: usize,
        _: Option<&str>,
    ) -> hookbridge_core::Result<Page<Delivery>> {
        std::future::pending().await
    }
}

/// A page still under way when its invocation's time runs short is given up: its poke
/// comes back and the job runs on; on the last receive the queue allows, the job fails.
/// Cut off by Lambda's timeout instead, the poke reached the dead-letter queue with no one
/// to fail the job, which read `RUNNING` for ever.
async fn a_page_that_outlasts_its_invocation_is_given_up_and_fails_its_job_at_last(h: &dyn Harness) {
    let tenant: TenantId = h.unique("tenant").parse().unwrap();
    let (hook, _) = make_hook(h, tenant.as_str(), "stalled").await;
    h.backend().hooks.create(&hook, 1000).await.unwrap();
    let b = h.backend();
    let now = Utc::now();
    let job = || ReplayJob::new(tenant.clone(), hook.id, now - chrono::Duration::hours(1), now, None, now);
    let (early, last) = (job(), job());
    b.replays.create(&early).await.unwrap();
    b.replays.create(&last).await.unwrap();
    let mut deps = common::deps(h);
    deps.ports.deliveries = Arc::new(ListsNeverAnswer { inner: deps.ports.deliveries.clone() });
    let poke = |job: &ReplayJob, id: &str, receive_count| ReceivedMessage {
        receive_count,
        ..message(ReplayPoke::of(job).to_body(), id)
    };
    // Time to begin a page, not to finish one: the two at once, in invocations of their own.
    let deadline = Instant::now() + ingest::TIME_TO_START + ingest::PAGE_MARGIN / 2;
    let receives = hookbridge_core::topology::INGEST_RECEIVES;
    let (first, final_one) = ([poke(&early, "early", 1)], [poke(&last, "last", receives)]);
    // Without the stop neither ever ends; the slack only spares a slow machine.
    let (a, z) = tokio::time::timeout(
        ingest::TIME_TO_START + Duration::from_secs(30),
        futures::future::join(
            ingest::handle_within(&deps, &first, Some(deadline)),
            ingest::handle_within(&deps, &final_one, Some(deadline)),
        ),
    )
    .await
    .expect("both invocations answer although their pages never end");
    assert_eq!((a.failed, z.failed), (vec!["early".to_owned()], vec!["last".to_owned()]), "both pokes come back");
    let early = b.replays.get(hook.id, early.id).await.unwrap().unwrap();
    assert_eq!((early.state, early.step), (ReplayState::Running, 0), "tried again from where it was");
    let last = b.replays.get(hook.id, last.id).await.unwrap().unwrap();
    assert_eq!(last.state, ReplayState::Failed, "not left running with its poke dead-lettered");
    assert!(last.finished_at.is_some());
}

/// A poke back after its page failed reads half the page it read before, and so on, so a
/// page too large for the time an invocation has gets through on a later receive.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_poke_back_after_a_failed_page_reads_a_smaller_one() {
    let h = EmbeddedHarness::start().await;
    let tenant: TenantId = "acme".parse().unwrap();
    let (hook, _) = make_hook(&h, tenant.as_str(), "smaller").await;
    h.backend().hooks.create(&hook, 1000).await.unwrap();
    let full = hookbridge_core::replay::PAGE;
    seed(&h, &hook, full).await;
    let deps = common::deps(&h);
    let now = Utc::now();
    let job = ReplayJob::new(tenant, hook.id, now - chrono::Duration::hours(1), now, None, now);
    h.backend().replays.create(&job).await.unwrap();
    let again = ReceivedMessage { receive_count: 2, ..message(ReplayPoke::of(&job).to_body(), "again") };
    assert!(ingest::handle(&deps, &[again]).await.failed.is_empty());
    let job = h.backend().replays.get(hook.id, job.id).await.unwrap().unwrap();
    assert_eq!((job.state, job.queued), (ReplayState::Running, (full / 2) as u64), "half a page, and more to come");
    assert_eq!(pokes(h.backend().ingest_queue.as_ref()).await.len(), 1, "the next page poked, from a first receive");
}

/// A page re-sent while the job was being cancelled: its save loses to the cancel, but its
/// deliveries went, and `queued` (re-sent so far) counts them. A page another poke saved
/// is not counted twice.
async fn a_page_resent_while_its_job_was_cancelled_is_counted(h: &dyn Harness) {
    use ingest::replay::{Resent, count_after_cancel};
    let b = h.backend();
    let deps = common::deps(h);
    let now = Utc::now();
    let tenant: TenantId = h.unique("tenant").parse().unwrap();
    let job = ReplayJob::new(tenant.clone(), hook_id(), now - chrono::Duration::hours(1), now, None, now);
    b.replays.create(&job).await.unwrap();
    assert!(b.replays.save(&job.stopped(ReplayState::Cancelled, now), job.step).await.unwrap());
    let page = Resent { queued: 3, skipped: 1, ..Resent::default() };
    count_after_cancel(deps.ports.job_ports(), &job, page, now).await.unwrap();
    let counted = b.replays.get(job.hook_id, job.id).await.unwrap().unwrap();
    assert_eq!((counted.state, counted.queued, counted.skipped), (ReplayState::Cancelled, 3, 1));

    let other = ReplayJob::new(tenant, hook_id(), job.since, job.until, None, now);
    b.replays.create(&other).await.unwrap();
    let by_another_poke = other.advanced(Some("01KA".into()), 3, 1, now);
    assert!(b.replays.save(&by_another_poke, other.step).await.unwrap());
    count_after_cancel(deps.ports.job_ports(), &other, page, now).await.unwrap();
    assert_eq!(b.replays.get(other.hook_id, other.id).await.unwrap().unwrap(), by_another_poke);
}

/// The jobs, with the job cancelled just before each save (as a `DELETE` landing while a
/// page is re-sent), which the save then loses to.
struct CancelledWhileSaving<'a>(&'a dyn hookbridge_core::ports::ReplayStore);

#[async_trait::async_trait]
impl hookbridge_core::ports::ReplayStore for CancelledWhileSaving<'_> {
    async fn create(&self, job: &ReplayJob) -> hookbridge_core::Result<()> {
        self.0.create(job).await
    }

    async fn get(
        &self,
        hook_id: HookId,
        id: hookbridge_core::ids::ReplayId,
    ) -> hookbridge_core::Result<Option<ReplayJob>> {
        self.0.get(hook_id, id).await
    }

    async fn list(
        &self,
        hook_id: HookId,
        limit: usize,
        cursor: Option<&str>,
    ) -> hookbridge_core::Result<Page<ReplayJob>> {
        self.0.list(hook_id, limit, cursor).await
    }

    async fn save(&self, job: &ReplayJob, read_step: u64) -> hookbridge_core::Result<bool> {
        if let Some(read) = self.0.get(job.hook_id, job.id).await?.filter(|j| !j.state.is_final()) {
            self.0.save(&read.stopped(ReplayState::Cancelled, Utc::now()), read_step).await?;
        }
        self.0.save(job, read_step).await
    }
}

/// A page re-sent whose save failed, its poke back (reading half the page) cancelled while
/// it ran: the cancelled job counts all its first try re-sent, not the half the poke back
/// read. The other half was counted nowhere; so was all of it when the half read held
/// nothing the job re-sends (a job for `FAILED` deliveries, the first half `SUCCEEDED`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_poke_back_that_loses_to_a_cancel_counts_all_its_first_try_resent() {
    let all = poke_back_losing_to_a_cancel(None, |i| [DeliveryStatus::Failed, DeliveryStatus::Succeeded][i % 2]).await;
    assert_eq!(all, 4);
    let failed_half = poke_back_losing_to_a_cancel(Some(vec![DeliveryStatus::Failed]), |i| match i {
        0 | 1 => DeliveryStatus::Succeeded,
        _ => DeliveryStatus::Failed,
    })
    .await;
    assert_eq!(failed_half, 2);
}

/// A job for `statuses` over four deliveries (the `i`th ending `status(i)`), its first
/// try re-sending what it wants and failing to save, and its poke back (reading two)
/// losing its save to a cancel: the cancelled job's `queued`.
async fn poke_back_losing_to_a_cancel(
    statuses: Option<Vec<DeliveryStatus>>,
    status: impl Fn(usize) -> DeliveryStatus,
) -> u64 {
    let h = EmbeddedHarness::start().await;
    let tenant: TenantId = "acme".parse().unwrap();
    let (hook, _) = make_hook(&h, tenant.as_str(), "cancelled").await;
    h.backend().hooks.create(&hook, 1000).await.unwrap();
    let seeded = seed_as(&h, &hook, 4, status).await;
    let deps = common::deps(&h);
    let b = h.backend();
    let now = Utc::now();
    let job = ReplayJob::new(tenant, hook.id, now - chrono::Duration::hours(1), now, statuses, now);
    b.replays.create(&job).await.unwrap();
    // What the first try did before its save failed: the page's wanted deliveries re-sent
    // and recorded.
    let p = deps.ports.job_ports();
    let wanted: Vec<Delivery> = seeded.into_iter().filter(|d| job.wants(d)).collect();
    ingest::replay::resend(p.events, p.deliveries, p.lanes, &hook, &wanted, &job.note()).await.unwrap();

    let cancelling = CancelledWhileSaving(b.replays.as_ref());
    let back = ingest::replay::JobPorts {
        replays: &cancelling,
        page: ingest::replay::page_on_receive(4, 2),
        first_page: 4,
        ..deps.ports.job_ports()
    };
    assert_eq!(back.page, 2, "the poke back reads half the page");
    ingest::replay::step(back, &ReplayPoke::of(&job), Utc::now()).await.unwrap();

    let cancelled = b.replays.get(hook.id, job.id).await.unwrap().unwrap();
    assert_eq!(cancelled.state, ReplayState::Cancelled);
    cancelled.queued
}

/// A page re-sent and recorded whose save was lost (the poke died before it, or another
/// poke saved first): read again, what it re-sent is counted, and not sent a second time.
async fn a_page_whose_save_was_lost_is_counted_not_sent_again(h: &dyn Harness) {
    let tenant: TenantId = h.unique("tenant").parse().unwrap();
    let (hook, _) = make_hook(h, tenant.as_str(), "lost-save").await;
    h.backend().hooks.create(&hook, 1000).await.unwrap();
    let seeded = seed(h, &hook, 10).await;
    let deps = common::deps(h);
    let b = h.backend();
    let now = Utc::now();
    let job = ReplayJob::new(tenant, hook.id, now - chrono::Duration::hours(1), now, None, now);
    b.replays.create(&job).await.unwrap();
    // What the poke that died did, as `step` does it: the page re-sent and recorded.
    let p = deps.ports.job_ports();
    let resent = ingest::replay::resend(p.events, p.deliveries, p.lanes, &hook, &seeded, &job.note()).await.unwrap();
    assert_eq!(resent.queued, 10);

    handle(&deps, &[message(ReplayPoke::of(&job).to_body(), "again")]).await;
    let done = b.replays.get(hook.id, job.id).await.unwrap().unwrap();
    assert_eq!((done.state, done.queued, done.skipped), (ReplayState::Succeeded, 10, 0));
    assert_eq!(queued(b.delivery_queue.as_ref(), 10).await.len(), 10, "each once, by the poke that died");
    let d = b.deliveries.get(hook.id, seeded[0].id).await.unwrap().unwrap();
    assert_eq!((d.status, d.round, d.note), (DeliveryStatus::Pending, 1, Some(job.note())));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_page_whose_save_was_lost_is_counted_not_sent_again_embedded() {
    a_page_whose_save_was_lost_is_counted_not_sent_again(&EmbeddedHarness::start().await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_page_whose_save_was_lost_is_counted_not_sent_again_aws() {
    a_page_whose_save_was_lost_is_counted_not_sent_again(&AwsHarness::start().await).await;
}

/// A page re-sent whose save never came (its poke failed after re-sending), and the job
/// cancelled before the poke came back: the poke back counts what the page re-sent, once
/// however many copies come, and sends nothing. So does a poke back that finds the hook
/// deleted, as it stops the job, and a poke failing on its last receive, as it fails it.
async fn a_page_resent_before_its_job_stopped_is_counted_by_the_poke_back(h: &dyn Harness) {
    let tenant: TenantId = h.unique("tenant").parse().unwrap();
    let (hook, _) = make_hook(h, tenant.as_str(), "stopped-meanwhile").await;
    h.backend().hooks.create(&hook, 1000).await.unwrap();
    // More than the poke back's own page (a quarter, on its third receive) reads.
    let n = PAGE / 2;
    let seeded = seed(h, &hook, n).await;
    let deps = common::deps(h);
    let b = h.backend();
    let now = Utc::now();
    let p = deps.ports.job_ports();
    let back =
        |id: &str, job: &ReplayJob| ReceivedMessage { receive_count: 3, ..message(ReplayPoke::of(job).to_body(), id) };
    // What the poke that failed did before it failed: the page re-sent and recorded.
    let resent_by = |job: ReplayJob| {
        let (hook, seeded) = (hook.clone(), seeded.clone());
        async move {
            b.replays.create(&job).await.unwrap();
            let resent = ingest::replay::resend(p.events, p.deliveries, p.lanes, &hook, &seeded, &job.note()).await;
            assert_eq!(resent.unwrap().queued, n as u64);
            job
        }
    };

    let job =
        resent_by(ReplayJob::new(tenant.clone(), hook.id, now - chrono::Duration::hours(1), now, None, now)).await;
    assert!(b.replays.save(&job.stopped(ReplayState::Cancelled, now), job.step).await.unwrap());
    handle(&deps, &[back("back", &job)]).await;
    handle(&deps, &[back("copy", &job)]).await;
    let cancelled = b.replays.get(hook.id, job.id).await.unwrap().unwrap();
    assert_eq!((cancelled.state, cancelled.queued), (ReplayState::Cancelled, n as u64));
    assert_eq!(queued(b.delivery_queue.as_ref(), n).await.len(), n, "each once, by the poke that failed");

    // Its poke failing on its last receive instead: the job fails, counting them.
    let given_up = resent_by(ReplayJob::new(tenant.clone(), hook.id, job.since, job.until, None, now)).await;
    ingest::replay::give_up(p, &ReplayPoke::of(&given_up), now).await.unwrap();
    let failed = b.replays.get(hook.id, given_up.id).await.unwrap().unwrap();
    assert_eq!((failed.state, failed.queued), (ReplayState::Failed, n as u64));
    assert_eq!(queued(b.delivery_queue.as_ref(), n).await.len(), n, "each once, by the poke that failed");

    let orphan = resent_by(ReplayJob::new(tenant.clone(), hook.id, job.since, job.until, None, now)).await;
    assert!(b.hooks.delete(&tenant, hook.id).await.unwrap());
    handle(&deps, &[back("orphan", &orphan)]).await;
    handle(&deps, &[back("orphan-copy", &orphan)]).await;
    let failed = b.replays.get(hook.id, orphan.id).await.unwrap().unwrap();
    assert_eq!((failed.state, failed.queued), (ReplayState::Failed, n as u64));
    assert_eq!(queued(b.delivery_queue.as_ref(), n).await.len(), n, "each once, by the poke that failed");
    assert!(pokes(b.ingest_queue.as_ref()).await.is_empty(), "a stopped job pokes no more");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_page_resent_before_its_job_stopped_is_counted_by_the_poke_back_embedded() {
    a_page_resent_before_its_job_stopped_is_counted_by_the_poke_back(&EmbeddedHarness::start().await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_page_resent_before_its_job_stopped_is_counted_by_the_poke_back_aws() {
    a_page_resent_before_its_job_stopped_is_counted_by_the_poke_back(&AwsHarness::start().await).await;
}

/// A delivery made after the replay was asked for is not re-sent, even when its id falls
/// inside the window: ids are dated by the event's own `time`, which a producer may set in
/// the past. Its receiver got it once already, as a new event.
async fn a_delivery_made_after_the_replay_was_asked_for_is_not_resent(h: &dyn Harness) {
    let tenant: TenantId = h.unique("tenant").parse().unwrap();
    let (hook, _) = make_hook(h, tenant.as_str(), "made-after").await;
    let b = h.backend();
    b.hooks.create(&hook, 1000).await.unwrap();
    let before = seed(h, &hook, 2).await;
    let now = Utc::now();
    let job = ReplayJob::new(tenant.clone(), hook.id, now - chrono::Duration::hours(1), now, None, now);
    b.replays.create(&job).await.unwrap();
    // Published after the request, its `time` twenty minutes back.
    let at = now - chrono::Duration::minutes(20);
    let event = EventId::generate();
    let body = format!(
        r#"{{"version":"0","id":"{event}","detail-type":"user.login","source":"idp","account":"1","time":"{}","region":"r","resources":[],"detail":{{"tenant":"{tenant}"}}}}"#,
        at.format("%Y-%m-%dT%H:%M:%SZ"),
    );
    b.events
        .put(&tenant, &[Envelope::from_bus_json(&body, "1", "r").unwrap()], Utc::now() + chrono::Duration::hours(1))
        .await
        .unwrap();
    let late = DeliveryId::from_parts(at.timestamp_millis() as u64, 99);
    let mut d =
        Delivery::pending(late, tenant, hook.id, event, "user.login".into(), now + chrono::Duration::seconds(1));
    d.status = DeliveryStatus::Succeeded;
    b.deliveries.insert(&[d]).await.unwrap();

    handle(&common::deps(h), &[message(ReplayPoke::of(&job).to_body(), "made-after")]).await;
    let done = b.replays.get(hook.id, job.id).await.unwrap().unwrap();
    assert_eq!((done.state, done.queued, done.skipped), (ReplayState::Succeeded, 2, 0));
    let sent: BTreeSet<DeliveryId> = queued(b.delivery_queue.as_ref(), 2).await.into_iter().collect();
    assert_eq!(sent, before.iter().map(|d| d.id).collect::<BTreeSet<_>>(), "not the delivery made after");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_delivery_made_after_the_replay_was_asked_for_is_not_resent_embedded() {
    a_delivery_made_after_the_replay_was_asked_for_is_not_resent(&EmbeddedHarness::start().await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_delivery_made_after_the_replay_was_asked_for_is_not_resent_aws() {
    a_delivery_made_after_the_replay_was_asked_for_is_not_resent(&AwsHarness::start().await).await;
}

/// A delivery whose event is too large to ride in its task is re-sent by reference (the
/// worker reads the event from the store), and counted as queued, not skipped.
async fn a_large_event_is_replayed_by_reference(h: &dyn Harness) {
    let tenant: TenantId = h.unique("tenant").parse().unwrap();
    let (hook, _) = make_hook(h, tenant.as_str(), "large").await;
    let b = h.backend();
    b.hooks.create(&hook, 1000).await.unwrap();
    let at = Utc::now() - chrono::Duration::minutes(5);
    let id = EventId::generate();
    let body = format!(
        r#"{{"version":"0","id":"{id}","detail-type":"user.login","source":"idp","account":"1","time":"{}","region":"r","resources":[],"detail":{{"tenant":"{tenant}","site":"hq","pad":"{}"}}}}"#,
        at.format("%Y-%m-%dT%H:%M:%SZ"),
        "x".repeat(hookbridge_core::message::INLINE_BODY_MAX)
    );
    b.events
        .put(&tenant, &[Envelope::from_bus_json(&body, "1", "r").unwrap()], Utc::now() + chrono::Duration::hours(1))
        .await
        .unwrap();
    // Dated when it happened, as ingest dates ids: inside the job's window.
    let delivery_id = DeliveryId::from_parts(at.timestamp_millis() as u64, 7);
    let mut d = Delivery::pending(delivery_id, tenant.clone(), hook.id, id, "user.login".into(), at);
    d.status = DeliveryStatus::Failed;
    b.deliveries.insert(&[d]).await.unwrap();
    let job = ReplayJob::new(tenant, hook.id, at - chrono::Duration::minutes(1), Utc::now(), None, Utc::now());
    b.replays.create(&job).await.unwrap();
    handle(&common::deps(h), &[message(ReplayPoke::of(&job).to_body(), "big")]).await;
    let done = b.replays.get(hook.id, job.id).await.unwrap().unwrap();
    assert_eq!((done.state, done.queued, done.skipped), (ReplayState::Succeeded, 1, 0));
    let tasks = common::queued_tasks(h, 1).await;
    assert_eq!(tasks.len(), 1);
    assert!(tasks[0].envelope.is_none(), "the worker reads it from the event store");
    let routed = tasks[0].routed.as_ref().expect("routed: the worker checks it against the hook as it is then");
    assert_eq!(routed.site.as_deref(), Some("hq"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_large_event_is_replayed_by_reference_embedded() {
    a_large_event_is_replayed_by_reference(&EmbeddedHarness::start().await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_large_event_is_replayed_by_reference_aws() {
    a_large_event_is_replayed_by_reference(&AwsHarness::start().await).await;
}

/// A replay page and another tenant's event in one ingest batch: the event's delivery is
/// queued while the page is still being worked through. Before, the batch's pokes were
/// handled one after another ahead of any event, and its tenants one after another, so a
/// page (500 deliveries: reads, sends, writes) held up every other tenant's events.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replay_page_does_not_hold_up_another_tenants_events_in_the_same_batch() {
    let h = AwsHarness::start().await;
    let b = h.backend();
    let replaying: TenantId = h.unique("replaying").parse().unwrap();
    let (replayed, _) = make_hook(&h, replaying.as_str(), "replayed").await;
    b.hooks.create(&replayed, 1000).await.unwrap();
    seed(&h, &replayed, hookbridge_core::replay::PAGE).await;
    let now = Utc::now();
    let job = ReplayJob::new(replaying, replayed.id, now - chrono::Duration::hours(1), now, None, now);
    b.replays.create(&job).await.unwrap();

    let other: TenantId = h.unique("other").parse().unwrap();
    let (hook, _) = make_hook(&h, other.as_str(), "waiting").await;
    b.hooks.create(&hook, 1000).await.unwrap();
    let event = format!(
        r#"{{"version":"0","id":"{}","detail-type":"user.login","source":"idp","account":"1","time":"{}","region":"r","resources":[],"detail":{{"tenant":"{other}"}}}}"#,
        EventId::generate(),
        Utc::now().to_rfc3339()
    );
    let batch = vec![message(ReplayPoke::of(&job).to_body(), "poke"), message(event, "event")];
    let deps = common::deps(&h);
    let handling = tokio::spawn(async move { ingest::handle(&deps, &batch).await });

    let lane = b.delivery_queue.as_ref();
    let mut waited = 0;
    let still_handling = loop {
        let got = lane.receive(10, Duration::from_millis(100)).await.unwrap();
        lane.ack(&got.iter().map(|m| m.receipt.clone()).collect::<Vec<_>>()).await.unwrap();
        let tasks: Vec<Task> = got.iter().map(|m| Task::parse(&m.body, m.receive_count).unwrap()).collect();
        if tasks.iter().any(|t| t.delivery.hook_id == hook.id) {
            break !handling.is_finished();
        }
        waited += 1;
        assert!(waited < 600, "the other tenant's delivery never came");
    };
    assert!(still_handling, "queued only once the replay page was done");
    assert!(handling.await.unwrap().failed.is_empty());
    let done = b.replays.get(replayed.id, job.id).await.unwrap().unwrap();
    assert_eq!(done.queued, hookbridge_core::replay::PAGE as u64);
}

/// Two copies of one job's poke in one batch (a queue's duplicate) re-send its page once:
/// handled side by side, both re-sent the page before either saved it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_copies_of_a_poke_in_one_batch_send_its_page_once() {
    let h = EmbeddedHarness::start().await;
    let b = h.backend();
    let tenant: TenantId = h.unique("tenant").parse().unwrap();
    let (hook, _) = make_hook(&h, tenant.as_str(), "replayed").await;
    b.hooks.create(&hook, 1000).await.unwrap();
    let n = hookbridge_core::replay::PAGE;
    seed(&h, &hook, n).await;
    let now = Utc::now();
    let job = ReplayJob::new(tenant, hook.id, now - chrono::Duration::hours(1), now, None, now);
    b.replays.create(&job).await.unwrap();
    let poke = ReplayPoke::of(&job).to_body();
    let outcome = ingest::handle(&common::deps(&h), &[message(poke.clone(), "one"), message(poke, "two")]).await;
    assert!(outcome.failed.is_empty());
    assert_eq!(queued(b.delivery_queue.as_ref(), n).await.len(), n, "each delivery once");
    assert_eq!(b.replays.get(hook.id, job.id).await.unwrap().unwrap().queued, n as u64);
}

fn hook_id() -> hookbridge_core::ids::HookId {
    hookbridge_core::ids::HookId::generate()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_page_failing_on_every_receive_fails_its_job_embedded() {
    a_page_failing_on_every_receive_fails_its_job(&EmbeddedHarness::start().await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_page_failing_on_every_receive_fails_its_job_aws() {
    a_page_failing_on_every_receive_fails_its_job(&AwsHarness::start().await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_page_resent_while_its_job_was_cancelled_is_counted_embedded() {
    a_page_resent_while_its_job_was_cancelled_is_counted(&EmbeddedHarness::start().await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_page_resent_while_its_job_was_cancelled_is_counted_aws() {
    a_page_resent_while_its_job_was_cancelled_is_counted(&AwsHarness::start().await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replay_resumes_from_its_saved_page_after_a_crash_embedded() {
    a_replay_resumes_from_its_saved_page_after_a_crash(&EmbeddedHarness::start().await, true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replay_resumes_from_its_saved_page_after_a_crash_aws() {
    a_replay_resumes_from_its_saved_page_after_a_crash(&AwsHarness::start().await, false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancelled_job_and_a_deleted_hook_stop_a_replay_embedded() {
    a_cancelled_job_and_a_deleted_hook_stop_a_replay(&EmbeddedHarness::start().await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancelled_job_and_a_deleted_hook_stop_a_replay_aws() {
    a_cancelled_job_and_a_deleted_hook_stop_a_replay(&AwsHarness::start().await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_page_that_outlasts_its_invocation_is_given_up_and_fails_its_job_at_last_embedded() {
    a_page_that_outlasts_its_invocation_is_given_up_and_fails_its_job_at_last(&EmbeddedHarness::start().await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_page_that_outlasts_its_invocation_is_given_up_and_fails_its_job_at_last_aws() {
    a_page_that_outlasts_its_invocation_is_given_up_and_fails_its_job_at_last(&AwsHarness::start().await).await;
}

/// Events kept from before `"site": null` was refused (bda3838) were routed then as having
/// no site. A re-send routes them so again: a hook moved to sites since leaves them as they
/// were, and one without sites gets them, to be checked again by the worker. Their routing
/// did not read, and they went unchecked to whatever the hook had become.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_kept_with_a_null_site_are_routed_as_they_were() {
    use hookbridge_core::message::Routed;
    let h = EmbeddedHarness::start().await;
    let tenant: TenantId = "acme".parse().unwrap();
    let b = h.backend();
    let deps = common::deps(&h);
    let p = deps.ports.job_ports();
    for (name, sites, wanted) in [("scoped", vec!["b".to_owned()], 0), ("unscoped", vec![], 4)] {
        let (mut hook, _) = make_hook(&h, tenant.as_str(), name).await;
        hook.config.sites = sites;
        b.hooks.create(&hook, 1000).await.unwrap();
        let start = Utc::now() - chrono::Duration::minutes(30);
        let mut deliveries = Vec::new();
        for i in 0..4u32 {
            let id = EventId::generate();
            let body = format!(
                r#"{{"version":"0","id":"{id}","detail-type":"user.login","source":"idp","account":"1","time":"{}","region":"r","resources":[],"detail":{{"tenant":"acme","site":null}}}}"#,
                start.format("%Y-%m-%dT%H:%M:%SZ"),
            );
            let at = start + chrono::Duration::milliseconds(i64::from(i));
            let delivery_id = DeliveryId::from_parts(at.timestamp_millis() as u64, u128::from(i) + 1);
            let mut d = Delivery::pending(delivery_id, tenant.clone(), hook.id, id, "user.login".into(), at);
            d.status = DeliveryStatus::Failed;
            // Half keep their envelope on the record, half in the event store.
            if i % 2 == 0 {
                d.envelope = Some(body);
            } else {
                let kept = Envelope::from_bus_json(&body, "1", "r").unwrap();
                b.events.put(&tenant, &[kept], Utc::now() + chrono::Duration::hours(1)).await.unwrap();
            }
            deliveries.push(d);
        }
        b.deliveries.insert(&deliveries).await.unwrap();
        let resent = ingest::replay::resend(p.events, p.deliveries, p.lanes, &hook, &deliveries, "replayed by a test")
            .await
            .unwrap();
        assert_eq!((resent.queued, resent.unwanted), (wanted, 4 - wanted), "{name}");
    }
    let got = b.delivery_queue.receive(10, Duration::from_secs(1)).await.unwrap();
    assert_eq!(got.len(), 4);
    for m in got {
        let task = Task::parse(&m.body, m.receive_count).unwrap();
        assert_eq!(task.routed, Some(Routed { site: None }), "checked again by the worker, as having no site");
    }
}

/// A kept event whose routing cannot be read at all, even as earlier releases read it, is
/// not sent again unchecked: counted apart (a retry says so), not as unwanted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kept_event_that_cannot_be_routed_is_not_sent_again() {
    let h = EmbeddedHarness::start().await;
    let tenant: TenantId = "acme".parse().unwrap();
    let (hook, _) = make_hook(&h, tenant.as_str(), "unroutable").await;
    h.backend().hooks.create(&hook, 1000).await.unwrap();
    let at = Utc::now() - chrono::Duration::minutes(5);
    let id = EventId::generate();
    let body = format!(
        r#"{{"version":"0","id":"{id}","detail-type":"user.login","source":"idp","account":"1","time":"{}","region":"r","resources":[],"detail":{{"tenant":5}}}}"#,
        at.format("%Y-%m-%dT%H:%M:%SZ"),
    );
    let delivery_id = DeliveryId::from_parts(at.timestamp_millis() as u64, 1);
    let mut d = Delivery::pending(delivery_id, tenant, hook.id, id, "user.login".into(), at);
    (d.status, d.envelope) = (DeliveryStatus::Failed, Some(body));
    h.backend().deliveries.insert(std::slice::from_ref(&d)).await.unwrap();
    let deps = common::deps(&h);
    let p = deps.ports.job_ports();
    let resent =
        ingest::replay::resend(p.events, p.deliveries, p.lanes, &hook, &[d], "replayed by a test").await.unwrap();
    assert_eq!((resent.queued, resent.unwanted, resent.unroutable), (0, 0, 1));
    assert_eq!(resent.not_resent(), 1);
}
