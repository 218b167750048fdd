//! Where ingest keeps an event's envelope (decision 0021), on both backends: with the
//! delivery when the event goes to one hook, so its first record is the only write; once
//! in the event store when hooks share it or it is too large to ride in a message; not at
//! all when no hook wants it.

#![allow(clippy::unwrap_used)] // Tests fail loudly on purpose.

use chrono::Utc;
use hookbridge_core::message::INLINE_BODY_MAX;
use hookbridge_core::ports::{Order, Receipt, ReceivedMessage, Window};
use hookbridge_testkit::contract::make_hook;
use hookbridge_testkit::{AwsHarness, EmbeddedHarness, Harness};

#[allow(dead_code)] // each test binary uses part of it
mod common;

fn event(tenant: &str, id: &str, detail_type: &str, pad: usize) -> ReceivedMessage {
    let time = Utc::now().format("%Y-%m-%dT%H:%M:%SZ");
    let body = format!(
        r#"{{"version":"0","id":"{id}","detail-type":"{detail_type}","source":"idp","account":"1","time":"{time}","region":"r","resources":[],"detail":{{"tenant":"{tenant}","pad":"{}"}}}}"#,
        "x".repeat(pad)
    );
    ReceivedMessage {
        id: format!("m-{id}"),
        body,
        receipt: Receipt(format!("r-{id}")),
        receive_count: 1,
        sent_at: Utc::now(),
    }
}

async fn envelopes_are_kept_once(h: &dyn Harness) {
    let tenant = h.unique("tenant");
    let (mut one, _) = make_hook(h, &tenant, "logins").await;
    one.config.event_types = vec!["user.login".parse().unwrap()];
    let (mut two, _) = make_hook(h, &tenant, "users").await;
    two.config.event_types = vec!["user.*".parse().unwrap()];
    for hook in [&one, &two] {
        h.backend().hooks.create(hook, 1000).await.unwrap();
    }
    let deps = common::deps(h);
    let alone = event(&tenant, "00000000-0000-4000-8000-0000000000a1", "user.created", 10);
    let shared = event(&tenant, "00000000-0000-4000-8000-0000000000a2", "user.login", 10);
    let large = event(&tenant, "00000000-0000-4000-8000-0000000000a3", "user.created", INLINE_BODY_MAX);
    let unwanted = event(&tenant, "00000000-0000-4000-8000-0000000000a4", "audit.export", INLINE_BODY_MAX);
    assert!(ingest::handle(&deps, &[alone, shared, large, unwanted]).await.failed.is_empty());

    let events = &h.backend().events;
    let t: hookbridge_core::ids::TenantId = tenant.parse().unwrap();
    let t = &t;
    let kept = |id: &'static str| async move { events.get(t, &id.parse().unwrap()).await.unwrap().is_some() };
    assert!(!kept("00000000-0000-4000-8000-0000000000a1").await, "one hook: kept with its delivery instead");
    assert!(kept("00000000-0000-4000-8000-0000000000a2").await, "two hooks share it: kept once, apart");
    assert!(kept("00000000-0000-4000-8000-0000000000a3").await, "too large to ride in the message: kept apart");
    assert!(!kept("00000000-0000-4000-8000-0000000000a4").await, "no hook wants it: nothing could ever read it");

    let mut got = common::queued_tasks(h, 4).await;
    got.sort_by_key(|t| t.delivery.event_id.to_string());
    let summary: Vec<(String, bool, bool)> = got
        .iter()
        .map(|t| {
            let opening = t.opening().expect("every delivery queued unrecorded");
            (t.delivery.event_id.to_string(), opening.envelope.is_some(), t.envelope.is_some())
        })
        .collect();
    let a = |n: &str| format!("00000000-0000-4000-8000-0000000000{n}");
    assert_eq!(
        summary,
        [(a("a1"), true, true), (a("a2"), false, true), (a("a2"), false, true), (a("a3"), false, false)],
        "(event, envelope kept with the delivery, envelope in the message)"
    );
    let window =
        Window { since: Utc::now() - chrono::Duration::hours(1), until: Utc::now() + chrono::Duration::hours(1) };
    for hook in [&one, &two] {
        let page = h.backend().deliveries.list(hook.id, window, Order::NewestFirst, 10, None).await.unwrap();
        assert!(page.items.is_empty(), "nothing written per delivery before the worker's first record");
    }
}

/// An event past what the API lets through, put on the bus by a producer (it takes 1 MiB):
/// not routed, and it goes to the dead-letter queue alone. Kept apart, its envelope was past
/// a DynamoDB item's 400 KB, and the refused write failed the tenant's other events too.
async fn an_event_too_large_to_route_fails_alone(h: &dyn Harness) {
    let tenant = h.unique("tenant");
    let (mut hook, _) = make_hook(h, &tenant, "users").await;
    hook.config.event_types = vec!["user.*".parse().unwrap()];
    h.backend().hooks.create(&hook, 1000).await.unwrap();
    let deps = common::deps(h);
    let small = event(&tenant, "00000000-0000-4000-8000-0000000000b1", "user.created", 10);
    let huge = event(&tenant, "00000000-0000-4000-8000-0000000000b2", "user.created", 420 * 1024);
    assert!(huge.body.len() > hookbridge_core::ports::MAX_MESSAGE_BYTES);
    let outcome = ingest::handle(&deps, &[small, huge.clone()]).await;
    assert_eq!(outcome.failed, [huge.id], "only the large one failed");
    let got = common::queued_tasks(h, 1).await;
    assert_eq!(got[0].delivery.event_id.to_string(), "00000000-0000-4000-8000-0000000000b1");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_event_too_large_to_route_fails_alone_embedded() {
    an_event_too_large_to_route_fails_alone(&EmbeddedHarness::start().await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_event_too_large_to_route_fails_alone_aws() {
    an_event_too_large_to_route_fails_alone(&AwsHarness::start().await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn envelopes_are_kept_once_embedded() {
    envelopes_are_kept_once(&EmbeddedHarness::start().await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn envelopes_are_kept_once_aws() {
    envelopes_are_kept_once(&AwsHarness::start().await).await;
}

/// The types seen feed only the event-type listing's `last_seen_at`: a failure to record
/// them (a throttled partition, a full disk) delays no delivery.
#[tokio::test]
async fn a_failure_to_record_the_types_seen_delays_no_delivery() {
    let h = EmbeddedHarness::start().await;
    let tenant = h.unique("tenant");
    let (hook, _) = make_hook(&h, &tenant, "logins").await;
    h.backend().hooks.create(&hook, 1000).await.unwrap();
    h.db()
        .write(|c| {
            c.execute_batch(
                "CREATE TRIGGER refuse BEFORE INSERT ON seen_types BEGIN SELECT RAISE(ABORT, 'refused by the test'); END;",
            )
            .map_err(|e| hookbridge_core::Error::backend("test", e))
        })
        .await
        .unwrap();
    let deps = common::deps(&h);
    let out = ingest::handle(&deps, &[event(&tenant, "00000000-0000-4000-8000-0000000000b1", "user.login", 10)]).await;
    assert!(out.failed.is_empty(), "{:?}", out.failed);
    assert_eq!(common::queued_tasks(&h, 1).await.len(), 1, "the delivery is queued");
}
