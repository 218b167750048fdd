//! The ingest function on its sample event (`events/ingest-batch.json`), as Lambda would
//! invoke it, over the AWS backend on the emulator.

#![allow(clippy::unwrap_used)] // Tests fail loudly on purpose.

use std::time::Duration;

use aws_lambda_events::event::sqs::SqsEvent;
use hookbridge_core::message::Task;
use hookbridge_core::ports::{Order, Window};
use hookbridge_testkit::contract::make_hook;
use hookbridge_testkit::{AwsHarness, Harness, events};
use ingest::{Ingest, IngestPorts, IngestSettings};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sample_batch_queues_deliveries_and_fails_only_the_malformed_record() {
    let h = AwsHarness::start().await;
    let (hook, _) = make_hook(&h, "demo", "everything").await;
    h.backend().hooks.create(&hook, 1000).await.unwrap();
    let deps = Ingest {
        ports: IngestPorts::of(h.backend()),
        settings: IngestSettings {
            account: "123456789012".into(),
            region: "us-east-1".into(),
            event_retention: Duration::from_secs(86_400),
            routing_most_bytes: hookbridge_core::settings::Quotas::default().routing_most_bytes(),
        },
    };
    let event: SqsEvent = serde_json::from_str(&events::load("ingest-batch")).unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    let resp = hookbridge_aws::lambda::invoke(event, deadline, |batch, _| async move {
        ingest::handle(&deps, &batch.messages).await
    })
    .await
    .unwrap();
    let failed: Vec<_> = resp.batch_item_failures.iter().map(|f| f.item_identifier.as_str()).collect();
    assert_eq!(failed, ["4f3a1b2c-0003-4d5e-8f90-0000000000a3"]);

    let window = Window { since: chrono::Utc::now() - chrono::Duration::days(3650), until: chrono::Utc::now() };
    let page = h.backend().deliveries.list(hook.id, window, Order::NewestFirst, 10, None).await.unwrap();
    assert!(page.items.is_empty(), "ingest writes nothing down; the worker's first record makes each delivery");
    let tasks = h.backend().delivery_queue.receive(10, Duration::from_secs(1)).await.unwrap();
    assert_eq!(tasks.len(), 2, "one delivery per valid event");
    for t in &tasks {
        let task = Task::parse(&t.body, t.receive_count).unwrap();
        let opening = task.opening().expect("queued unrecorded");
        assert!(opening.envelope.is_some_and(|e| e.contains(task.delivery.event_id.as_str())), "kept with it");
    }
    // The record without an account (as the emulator delivers) gets the configured one.
    assert!(tasks.iter().all(|t| t.body.contains(r#""account":"123456789012""#)), "{tasks:?}");
}
