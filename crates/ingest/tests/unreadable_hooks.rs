//! A hook whose stored document this version cannot read (written by a newer version
//! during a deploy) holds up none of its tenant's events: ingest routes them to the other
//! hooks as ever, and queues each to the unreadable hook unrouted, on the slow lane, for
//! the worker to route once it can read the hook (docs/decisions/0026). Both backends.

#![allow(clippy::unwrap_used)] // Tests fail loudly on purpose.

use chrono::Utc;
use hookbridge_core::message::Unrouted;
use hookbridge_core::ports::{Receipt, ReceivedMessage};
use hookbridge_testkit::contract::make_hook;
use hookbridge_testkit::{AwsHarness, EmbeddedHarness, Harness};

#[allow(dead_code)] // each test binary uses part of it
mod common;

async fn a_hook_that_cannot_be_read_holds_up_none_of_its_tenants_events(h: &dyn Harness) {
    let tenant = h.unique("tenant");
    let (good, _) = make_hook(h, &tenant, "good").await;
    let (newer, _) = make_hook(h, &tenant, "newer").await;
    for hook in [&good, &newer] {
        h.backend().hooks.create(hook, 1000).await.unwrap();
    }
    h.make_unreadable(&newer.tenant, newer.id).await;
    assert!(h.backend().hooks.get(&newer.tenant, newer.id).await.is_err(), "the document is unreadable");

    let sent_at = Utc::now();
    let time = sent_at.format("%Y-%m-%dT%H:%M:%SZ");
    let event_id = "9b1c2d3e-0000-4000-8000-0000000000e1";
    let body = format!(
        r#"{{"version":"0","id":"{event_id}","detail-type":"user.login","source":"idp","account":"1","time":"{time}","region":"r","resources":[],"detail":{{"tenant":"{tenant}","site":"s1"}}}}"#
    );
    let message = ReceivedMessage { id: "m1".into(), body, receipt: Receipt("r-m1".into()), receive_count: 1, sent_at };
    let outcome = ingest::handle(&common::deps(h), &[message]).await;
    assert!(outcome.failed.is_empty(), "the event is not failed for the hook that cannot be read: {outcome:?}");

    let fast = common::queued_tasks(h, 1).await;
    assert_eq!(fast.len(), 1, "{fast:?}");
    assert_eq!(fast[0].delivery.hook_id, good.id, "the readable hook's delivery is routed as ever");
    assert_eq!(fast[0].unrouted, None);

    let slow = common::tasks_on(h.backend().lanes().slow.as_ref(), 1).await;
    assert_eq!(slow.len(), 1, "{slow:?}");
    let task = &slow[0];
    assert_eq!(task.delivery.hook_id, newer.id, "the event is queued to the unreadable hook");
    assert_eq!(task.unrouted, Some(Unrouted { site: Some("s1".into()) }), "for the worker to route");
    assert!(task.unrecorded.is_some(), "nothing recorded of it yet");
    let at = ingest::dated(&task_envelope(task), sent_at);
    assert_eq!(task.delivery.delivery_id, ingest::delivery_id(at, event_id, newer.id), "its id as if it were routed");
    // Two hooks may get the event, so its envelope is kept once, apart from either delivery.
    let kept = h.backend().events.get(&newer.tenant, &event_id.parse().unwrap()).await.unwrap();
    assert!(kept.is_some(), "the envelope is kept for both");
}

fn task_envelope(task: &hookbridge_core::message::Task) -> hookbridge_core::envelope::Envelope {
    let body = task.envelope.as_ref().expect("small enough to ride in the task").get();
    hookbridge_core::envelope::Envelope::from_bus_json(body, "1", "r").unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hook_that_cannot_be_read_holds_up_none_of_its_tenants_events_embedded() {
    a_hook_that_cannot_be_read_holds_up_none_of_its_tenants_events(&EmbeddedHarness::start().await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hook_that_cannot_be_read_holds_up_none_of_its_tenants_events_aws() {
    a_hook_that_cannot_be_read_holds_up_none_of_its_tenants_events(&AwsHarness::start().await).await;
}

/// More unreadable hooks than ingest queues unrouted events to (a tenant whose documents a
/// newer version rewrote, mid-deploy): the tenant's events fail and come back, as they all
/// did before, rather than cost a message per hook per event whether wanted or not.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tenant_with_many_hooks_that_cannot_be_read_has_its_events_come_back() {
    let h = EmbeddedHarness::start().await;
    let tenant = h.unique("tenant");
    for i in 0..=ingest::UNROUTED_HOOKS_MOST {
        let (hook, _) = make_hook(&h, &tenant, &format!("newer-{i}")).await;
        h.backend().hooks.create(&hook, 1000).await.unwrap();
        h.make_unreadable(&hook.tenant, hook.id).await;
    }
    let sent_at = Utc::now();
    let time = sent_at.format("%Y-%m-%dT%H:%M:%SZ");
    let body = format!(
        r#"{{"version":"0","id":"e-many","detail-type":"user.login","source":"idp","account":"1","time":"{time}","region":"r","resources":[],"detail":{{"tenant":"{tenant}"}}}}"#
    );
    let message = ReceivedMessage { id: "m1".into(), body, receipt: Receipt("r-m1".into()), receive_count: 1, sent_at };
    let outcome = ingest::handle(&common::deps(&h), &[message]).await;
    assert_eq!(outcome.failed, ["m1"], "the event comes back");
    let queued = h.backend().lanes().slow.receive(10, std::time::Duration::from_millis(300)).await.unwrap();
    assert!(queued.is_empty(), "nothing queued unrouted");
}
