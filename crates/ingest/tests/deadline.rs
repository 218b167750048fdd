//! Near its invocation's deadline ingest starts nothing more: a tenant's events come back
//! alone and a replay page is handed on in a new poke. Cut off by Lambda's timeout instead,
//! the whole batch came back (every tenant's events fanned out again, each using up one of
//! its five receives), and a replay poke used up one of its job's. What it has begun, it
//! finishes: a fan-out stopped half way would start from the top next time, and never end.

#![allow(clippy::unwrap_used)] // Tests fail loudly on purpose.

use std::time::{Duration, Instant};

use chrono::Utc;
use hookbridge_core::ids::{ReplayId, TenantId};
use hookbridge_core::ports::{OutgoingMessage, Receipt, ReceivedMessage};
use hookbridge_core::replay::{PokeFormat, ReplayJob, ReplayPoke, ReplayState};
use hookbridge_core::topology::INGEST_RECEIVES;
use hookbridge_testkit::contract::make_hook;
use hookbridge_testkit::{EmbeddedHarness, Harness};

#[allow(dead_code)] // each test binary uses part of it
mod common;

fn message(id: &str, body: String) -> ReceivedMessage {
    ReceivedMessage { id: id.into(), body, receipt: Receipt(format!("r-{id}")), receive_count: 1, sent_at: Utc::now() }
}

fn event(tenant: &str) -> String {
    event_at(tenant, Utc::now())
}

fn event_at(tenant: &str, time: chrono::DateTime<Utc>) -> String {
    let time = time.format("%Y-%m-%dT%H:%M:%SZ");
    let id = hookbridge_core::ids::EventId::generate();
    format!(
        r#"{{"version":"0","id":"{id}","detail-type":"user.login","source":"idp","account":"1","time":"{time}","region":"r","resources":[],"detail":{{"tenant":"{tenant}"}}}}"#
    )
}

#[tokio::test]
async fn near_its_deadline_ingest_starts_nothing_and_hands_replay_pages_on() {
    let h = EmbeddedHarness::start().await;
    let deps = common::deps(&h);
    let mut pokes = Vec::new();
    for tenant in ["acme", "globex", "initech"] {
        let (hook, _) = make_hook(&h, tenant, "hook").await;
        h.backend().hooks.create(&hook, 1000).await.unwrap();
        pokes.push(ReplayPoke {
            format: PokeFormat::V1,
            tenant: hook.tenant.clone(),
            hook_id: hook.id,
            replay_id: ReplayId::generate(),
        });
    }
    // The events as the queue hands them out, so that what comes back can be seen there.
    let queue = h.backend().ingest_queue.clone();
    // acme's event is new; initech's was timed by its producer two hours ago, so its
    // delivery ids are dated by its message's send time.
    let sent = [
        OutgoingMessage::now(event("acme")).in_group("acme"),
        OutgoingMessage::now(event("globex")).in_group("globex"),
        OutgoingMessage::now(event_at("initech", Utc::now() - chrono::Duration::hours(2))).in_group("initech"),
    ];
    queue.send_batch(&sent).await.unwrap();
    let mut events = queue.receive(10, Duration::from_secs(1)).await.unwrap();
    let of = |tenant: &str, m: &ReceivedMessage| m.body.contains(&format!(r#""tenant":"{tenant}""#));
    events.sort_by_key(|m| ["acme", "globex", "initech"].iter().position(|t| of(t, m)));
    assert_eq!(events.len(), 3);
    // globex's event was received before (a fan-out may have begun).
    queue.retry_after(&events[1].receipt, Duration::ZERO).await.unwrap();
    events[1] = queue.receive(10, Duration::from_secs(1)).await.unwrap().remove(0);
    assert!(of("globex", &events[1]) && events[1].receive_count == 2);
    let poke = message("poke", pokes[0].to_body());
    let batch = [events[0].clone(), poke, events[1].clone(), events[2].clone()];

    // Less than the time to start anything is left.
    let out = ingest::handle_within(&deps, &batch, Some(Instant::now() + ingest::TIME_TO_START / 2)).await;
    let mut failed = out.failed.clone();
    failed.sort();
    let mut expected = vec![events[1].id.clone(), events[2].id.clone()];
    expected.sort();
    assert_eq!(failed, expected, "the events received before, or dated by their send time, come back");
    let fanned = h.backend().delivery_queue.receive(10, Duration::from_millis(300)).await.unwrap();
    assert!(fanned.is_empty(), "nothing fanned out");
    let back = queue.receive(10, Duration::from_secs(1)).await.unwrap();
    let handed_on: Vec<_> = back.iter().filter(|m| ReplayPoke::parse(&m.body).is_some()).collect();
    assert_eq!(handed_on.len(), 1, "the page is handed on");
    assert_eq!(ReplayPoke::parse(&handed_on[0].body), Some(pokes[0].clone()));
    assert_eq!(handed_on[0].receive_count, 1, "as a new message, its receives all ahead of it");
    // The events are receivable again at once, not after the queue's visibility timeout:
    // acme's as a new message, with all its receives ahead of it (came back, an event
    // reached late in five invocations went to the dead-letter queue unrouted); the others
    // as they are, their receives counted: had a fan-out begun, or the original come back
    // after its copy was sent, a new message's send time would date initech's delivery
    // ids anew, and its receivers would get it twice under two sets of ids.
    let mut again: Vec<(&str, u32)> = back
        .iter()
        .filter(|m| ReplayPoke::parse(&m.body).is_none())
        .map(|m| (m.body.as_str(), m.receive_count))
        .collect();
    again.sort();
    let mut expected = [(events[0].body.as_str(), 1), (events[1].body.as_str(), 3), (events[2].body.as_str(), 2)];
    expected.sort();
    assert_eq!(again, expected, "the events not begun come back at once");
    let events = back.into_iter().filter(|m| ReplayPoke::parse(&m.body).is_none()).collect::<Vec<_>>();

    // With time enough, the same events are fanned out.
    let out = ingest::handle_within(&deps, &events, Some(Instant::now() + Duration::from_secs(60))).await;
    assert!(out.failed.is_empty(), "{:?}", out.failed);
    assert_eq!(common::queued_tasks(&h, 3).await.len(), 3);
}

/// An event the queue delivered twice in one batch, reached with too little time to begin
/// its tenant, is handed on once: two new messages could land in two batches and each be
/// fanned out, sending receivers the event twice.
#[tokio::test]
async fn an_event_twice_in_a_batch_and_not_begun_is_handed_on_once() {
    let h = EmbeddedHarness::start().await;
    let (hook, _) = make_hook(&h, "acme", "hook").await;
    h.backend().hooks.create(&hook, 1000).await.unwrap();
    let body = event("acme");
    let batch = [message("first", body.clone()), message("copy", body.clone())];

    let out = ingest::handle_within(&common::deps(&h), &batch, Some(Instant::now() + ingest::TIME_TO_START / 2)).await;

    assert!(out.failed.is_empty(), "handed on, not failed: {:?}", out.failed);
    let back = h.backend().ingest_queue.receive(10, Duration::from_secs(1)).await.unwrap();
    let bodies: Vec<&str> = back.iter().map(|m| m.body.as_str()).collect();
    assert_eq!(bodies, [body.as_str()], "one copy handed on");
}

/// Every delivery waiting on the fast lane, waiting up to 500 ms for each receive.
async fn drain_deliveries(h: &EmbeddedHarness) -> usize {
    let mut queued = 0;
    loop {
        let got = h.backend().delivery_queue.receive(10, Duration::from_millis(500)).await.unwrap();
        if got.is_empty() {
            return queued;
        }
        queued += got.len();
    }
}

/// `events` handled with a second more than the time to start left, while the writer is
/// held for two: its writes wait until less than the time to start is left. The outcome,
/// and the deadline it was handled to.
async fn handled_with_the_writer_held(
    h: &EmbeddedHarness,
    events: &[ReceivedMessage],
) -> (hookbridge_core::ports::BatchOutcome, Instant) {
    let deadline = Instant::now() + ingest::TIME_TO_START + Duration::from_secs(1);
    let held = h.hold_the_writer(Duration::from_secs(2));
    tokio::time::sleep(Duration::from_millis(100)).await;
    let out = ingest::handle_within(&common::deps(h), events, Some(deadline)).await;
    held.await.unwrap();
    (out, deadline)
}

/// Begun with time to spare, an event's fan-out of more than one chunk finishes though its
/// writes wait past the point where nothing new would be started.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fan_out_begun_in_time_finishes_past_the_time_to_start() {
    let h = EmbeddedHarness::start().await;
    for i in 0..=ingest::CHUNK {
        let (hook, _) = make_hook(&h, "acme", &format!("hook-{i}")).await;
        h.backend().hooks.create(&hook, 1000).await.unwrap();
    }
    let events = [message("e", event("acme"))];

    // Every write of the fan-out waits until less than the time to start is left.
    let (out, deadline) = handled_with_the_writer_held(&h, &events).await;

    assert!(out.failed.is_empty(), "{:?}", out.failed);
    assert!(Instant::now() + ingest::TIME_TO_START > deadline, "the writes waited past the time to start");
    assert_eq!(drain_deliveries(&h).await, ingest::CHUNK + 1, "every delivery queued");
}

/// A tenant's events after its first are each begun only with the time to start left: a
/// batch of one tenant's events whose fan-outs together outlast the invocation (ten events
/// to 10,000 hooks) is fanned out as far as time allows, and the events not begun come
/// back alone, handed on as new messages. Checked only when the tenant was begun, such a
/// batch met Lambda's timeout on every receive, fanned out again each time, and went to
/// the dead-letter queue.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tenants_events_not_begun_in_time_come_back_and_those_begun_are_fanned_out() {
    let h = EmbeddedHarness::start().await;
    let (hook, _) = make_hook(&h, "acme", "hook").await;
    h.backend().hooks.create(&hook, 1000).await.unwrap();
    let events: Vec<_> = (0..=ingest::CHUNK).map(|i| message(&format!("e{i}"), event("acme"))).collect();

    // The first chunk's writes wait until less than the time to start is left.
    let (out, _) = handled_with_the_writer_held(&h, &events).await;

    assert!(out.failed.is_empty(), "handed on, not failed: {:?}", out.failed);
    // However far it got before the time ran short, it began the first, and each event it
    // began it fanned out whole; the rest are back on the queue, each once, as new messages.
    let begun = drain_deliveries(&h).await;
    assert!((1..=ingest::CHUNK).contains(&begun), "{begun} of {} begun", events.len());
    let mut back = Vec::new();
    loop {
        let got = h.backend().ingest_queue.receive(10, Duration::from_millis(500)).await.unwrap();
        if got.is_empty() {
            break;
        }
        back.extend(got.into_iter().map(|m| (m.body, m.receive_count)));
    }
    back.sort();
    let mut not_begun: Vec<(String, u32)> = events[begun..].iter().map(|m| (m.body.clone(), 1)).collect();
    not_begun.sort();
    assert_eq!(back, not_begun, "the events not begun, and only those");
}

/// A replay page handed on whose new poke cannot be sent comes back; on the last receive
/// the queue allows, it fails its job rather than leave it `RUNNING` in the dead-letter
/// queue.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_page_that_cannot_be_handed_on_fails_its_job_on_its_last_receive() {
    let h = EmbeddedHarness::start().await;
    let deps = common::deps(&h);
    let tenant: TenantId = "acme".parse().unwrap();
    let (hook, _) = make_hook(&h, tenant.as_str(), "hook").await;
    h.backend().hooks.create(&hook, 1000).await.unwrap();
    let now = Utc::now();
    let job = ReplayJob::new(tenant, hook.id, now - chrono::Duration::hours(1), now, None, now);
    h.backend().replays.create(&job).await.unwrap();
    // The queue refuses the new poke, as a full disk or an unreachable SQS would.
    let refuse = format!(
        "CREATE TRIGGER refuse BEFORE INSERT ON messages WHEN NEW.body LIKE '%{}%'
         BEGIN SELECT RAISE(ABORT, 'refused by the test'); END;",
        job.id
    );
    h.db()
        .write(move |c| c.execute_batch(&refuse).map_err(|e| hookbridge_core::Error::backend("test", e)))
        .await
        .unwrap();
    let poke = |receive_count| ReceivedMessage { receive_count, ..message("poke", ReplayPoke::of(&job).to_body()) };
    let too_late = || Some(Instant::now() + ingest::TIME_TO_START / 2);

    assert_eq!(ingest::handle_within(&deps, &[poke(1)], too_late()).await.failed, ["poke"]);
    let state = h.backend().replays.get(hook.id, job.id).await.unwrap().unwrap().state;
    assert_eq!(state, ReplayState::Running, "tried again");

    let last = ingest::handle_within(&deps, &[poke(INGEST_RECEIVES)], too_late()).await;
    assert_eq!(last.failed, ["poke"], "to the dead-letter queue");
    let failed = h.backend().replays.get(hook.id, job.id).await.unwrap().unwrap();
    assert_eq!(failed.state, ReplayState::Failed);
    assert!(failed.finished_at.is_some());
}
