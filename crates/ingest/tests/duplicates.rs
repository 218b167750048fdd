//! The same event put on the ingest queue twice (EventBridge may deliver an event more
//! than once) is one delivery per hook, with one `webhook-id`, on both backends.

#![allow(clippy::unwrap_used)] // Tests fail loudly on purpose.

use chrono::Utc;
use hookbridge_core::delivery::DeliveryUpdate;
use hookbridge_core::ports::{Order, Receipt, ReceivedMessage, Window};
use hookbridge_testkit::contract::make_hook;
use hookbridge_testkit::{AwsHarness, EmbeddedHarness, Harness};

#[allow(dead_code)] // each test binary uses part of it
mod common;

async fn a_duplicate_from_the_bus_keeps_its_delivery_ids(h: &dyn Harness) {
    let tenant = h.unique("tenant");
    let (hook, _) = make_hook(h, &tenant, "dup").await;
    h.backend().hooks.create(&hook, 1000).await.unwrap();
    let deps = common::deps(h);
    let time = Utc::now().format("%Y-%m-%dT%H:%M:%SZ");
    let body = format!(
        r#"{{"version":"0","id":"9b1c2d3e-0000-4000-8000-00000000d0b1","detail-type":"user.login","source":"idp","account":"1","time":"{time}","region":"r","resources":[],"detail":{{"tenant":"{tenant}"}}}}"#
    );
    // Two copies of one event: two messages, sent a second apart.
    let copy = |id: &str, sent_ago: i64| ReceivedMessage {
        id: id.into(),
        body: body.clone(),
        receipt: Receipt(format!("r-{id}")),
        receive_count: 1,
        sent_at: Utc::now() - chrono::Duration::seconds(sent_ago),
    };
    assert!(ingest::handle(&deps, &[copy("m1", 2)]).await.failed.is_empty());
    assert!(ingest::handle(&deps, &[copy("m2", 1)]).await.failed.is_empty());

    let window =
        Window { since: Utc::now() - chrono::Duration::hours(1), until: Utc::now() + chrono::Duration::hours(1) };
    let tasks = common::queued_tasks(h, 2).await;
    assert_eq!(tasks.len(), 2, "each copy is sent (at least once)");
    assert_eq!(tasks[0].delivery.delivery_id, tasks[1].delivery.delivery_id, "with the same webhook-id");

    // What the worker's first record of each copy makes: one delivery, both attempts.
    for t in &tasks {
        let mut first = DeliveryUpdate::cancelled(t.delivery.clone(), 0, "recorded by the test".into(), Utc::now());
        first.opening = t.opening();
        h.backend().deliveries.record(&[first]).await.unwrap();
    }
    let page = h.backend().deliveries.list(hook.id, window, Order::NewestFirst, 10, None).await.unwrap();
    assert_eq!(page.items.len(), 1, "one delivery for one event");
    assert_eq!(page.items[0].id, tasks[0].delivery.delivery_id);
    assert!(page.items[0].envelope.as_deref().is_some_and(|e| e.contains("d0b1")), "its envelope kept with it");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_duplicate_from_the_bus_keeps_its_delivery_ids_embedded() {
    a_duplicate_from_the_bus_keeps_its_delivery_ids(&EmbeddedHarness::start().await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_duplicate_from_the_bus_keeps_its_delivery_ids_aws() {
    a_duplicate_from_the_bus_keeps_its_delivery_ids(&AwsHarness::start().await).await;
}

/// A message handled again long after it was sent (its first handling failed part-way,
/// or it sat in a backlog) makes the delivery ids it made the first time, though its event's
/// `time` is by then over an hour old.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_handled_again_an_hour_on_keeps_its_delivery_ids() {
    let h = EmbeddedHarness::start().await;
    let tenant = h.unique("tenant");
    let (hook, _) = make_hook(&h, &tenant, "late").await;
    h.backend().hooks.create(&hook, 1000).await.unwrap();
    let deps = common::deps(&h);
    // Just under the hour the event's own time is trusted for, when first handled.
    let time = (Utc::now() - chrono::Duration::hours(1) + chrono::Duration::seconds(3)).format("%Y-%m-%dT%H:%M:%SZ");
    let body = format!(
        r#"{{"version":"0","id":"9b1c2d3e-0000-4000-8000-00000000d0b3","detail-type":"user.login","source":"idp","account":"1","time":"{time}","region":"r","resources":[],"detail":{{"tenant":"{tenant}"}}}}"#
    );
    let sent = ReceivedMessage {
        id: "m1".into(),
        body,
        receipt: Receipt("r-1".into()),
        receive_count: 1,
        sent_at: Utc::now(),
    };
    assert!(ingest::handle(&deps, std::slice::from_ref(&sent)).await.failed.is_empty());
    // Handled again once the event's time is past the hour.
    tokio::time::sleep(std::time::Duration::from_secs(4)).await;
    let again = ReceivedMessage { receive_count: 2, receipt: Receipt("r-2".into()), ..sent };
    assert!(ingest::handle(&deps, &[again]).await.failed.is_empty());
    let tasks = common::queued_tasks(&h, 2).await;
    assert_eq!(tasks.len(), 2, "queued at each handling");
    assert_eq!(tasks[0].delivery.delivery_id, tasks[1].delivery.delivery_id, "with the same webhook-id");
}

/// Two copies of one event in the same batch (a queue's at-least-once delivery can put
/// both in one receive): ingested once, one delivery per hook, not one per copy. With two
/// hooks the envelope is also stored apart, and DynamoDB documents a batch write that
/// names one item twice as a `ValidationException`.
async fn two_copies_in_one_batch_are_ingested_once(h: &dyn Harness) {
    let tenant = h.unique("tenant");
    let (a, _) = make_hook(h, &tenant, "dup-a").await;
    let (b, _) = make_hook(h, &tenant, "dup-b").await;
    for hook in [&a, &b] {
        h.backend().hooks.create(hook, 1000).await.unwrap();
    }
    let deps = common::deps(h);
    let time = Utc::now().format("%Y-%m-%dT%H:%M:%SZ");
    let body = format!(
        r#"{{"version":"0","id":"9b1c2d3e-0000-4000-8000-00000000d0b2","detail-type":"user.login","source":"idp","account":"1","time":"{time}","region":"r","resources":[],"detail":{{"tenant":"{tenant}"}}}}"#
    );
    let copy = |id: &str| ReceivedMessage {
        id: id.into(),
        body: body.clone(),
        receipt: Receipt(format!("r-{id}")),
        receive_count: 1,
        sent_at: Utc::now(),
    };
    let out = ingest::handle(&deps, &[copy("m1"), copy("m2")]).await;
    assert!(out.failed.is_empty(), "failed: {:?}", out.failed);

    let tasks = common::queued_tasks(h, 2).await;
    let more = h.backend().delivery_queue.receive(10, std::time::Duration::from_millis(500)).await.unwrap();
    assert_eq!(tasks.len() + more.len(), 2, "one delivery per hook, not one per copy");
    let mut hooks: Vec<_> = tasks.iter().map(|t| t.delivery.hook_id).collect();
    hooks.sort_unstable();
    let mut want = vec![a.id, b.id];
    want.sort_unstable();
    assert_eq!(hooks, want);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_copies_in_one_batch_are_ingested_once_embedded() {
    two_copies_in_one_batch_are_ingested_once(&EmbeddedHarness::start().await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_copies_in_one_batch_are_ingested_once_aws() {
    two_copies_in_one_batch_are_ingested_once(&AwsHarness::start().await).await;
}
