//! The delivery worker on its sample event (`events/delivery-worker-batch.json`), as Lambda
//! would invoke it, over the AWS backend on the emulator, sending to a real receiver.

#![allow(clippy::unwrap_used)] // Tests fail loudly on purpose.

use std::time::Duration;

use aws_lambda_events::event::sqs::SqsEvent;
use delivery_worker::{BatchContext, Worker, WorkerPorts, WorkerSettings};
use hookbridge_core::delivery::DeliveryStatus;
use hookbridge_core::hook::{Hook, Lane, NetworkPolicy};
use hookbridge_outbound::{Outbound, OutboundSettings};
use hookbridge_testkit::contract::make_hook_as;
use hookbridge_testkit::{AwsHarness, Harness, Receiver, events};

/// The delivery ids of the sample event, but for their last two characters.
const SAMPLE_DELIVERIES: &str = "01KAKSAMP4E00000000DE11V";

/// [`SAMPLE_DELIVERIES`] with its time (the first ten characters) that of this test
/// process's start, the same at every call.
fn delivery_prefix() -> String {
    static PREFIX: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    PREFIX
        .get_or_init(|| {
            let now = hookbridge_core::ids::DeliveryId::from_parts(chrono::Utc::now().timestamp_millis() as u64, 0);
            format!("{}{}", &now.to_string()[..10], &SAMPLE_DELIVERIES[10..])
        })
        .clone()
}

/// The sample event's hook, pointing at a real receiver, and a worker over the emulator.
async fn sample() -> (AwsHarness, Receiver, Hook, Worker, SqsEvent) {
    let h = AwsHarness::start().await;
    let receiver = Receiver::start().await;
    let id = "01KAKSAMP4E000000000H00K01".parse().unwrap();
    let (mut hook, _) = make_hook_as(&h, "demo", "sample", id).await;
    hook.config.url = receiver.url("/hook");
    h.backend().hooks.create(&hook, 1000).await.unwrap();
    let worker = Worker::new(
        WorkerPorts::of(h.backend()),
        Outbound::new(OutboundSettings { timeout: Duration::from_secs(5), network: NetworkPolicy::local() }).unwrap(),
        WorkerSettings::default(),
    );
    // The sample's deliveries are dated now: a delivery's records are kept 14 days from
    // its id's time, and the file's ids are from when it was written.
    let sample = events::load("delivery-worker-batch").replace(SAMPLE_DELIVERIES, &delivery_prefix());
    let event: SqsEvent = serde_json::from_str(&sample).unwrap();
    (h, receiver, hook, worker, event)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sample_batch_is_delivered_and_only_the_malformed_record_fails() {
    let (h, receiver, hook, worker, event) = sample().await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    let resp = hookbridge_aws::lambda::invoke(event, deadline, |batch, deadline| async move {
        let ctx = BatchContext { lane: Lane::Fast, deadline: Some(deadline), settle: None };
        delivery_worker::handle(&worker, &batch.messages, ctx).await
    })
    .await
    .unwrap();
    let failed: Vec<_> = resp.batch_item_failures.iter().map(|f| f.item_identifier.as_str()).collect();
    assert_eq!(failed, ["7c1d2e3f-0003-4a5b-9c8d-0000000000b3"]);

    let got = receiver.received();
    assert_eq!(got.len(), 2);
    let mut ids: Vec<_> = got.iter().map(|r| r.header("webhook-id").unwrap().to_owned()).collect();
    ids.sort();
    let prefix = delivery_prefix();
    assert_eq!(ids, [format!("{prefix}01"), format!("{prefix}02")]);
    assert!(got.iter().all(|r| r.header("authorization").is_some_and(|a| a.starts_with("Basic "))));
    let d = h.backend().deliveries.get(hook.id, ids[0].parse().unwrap()).await.unwrap().unwrap();
    assert_eq!(d.status, DeliveryStatus::Succeeded);
    assert_eq!(d.attempts.len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_invocation_near_its_deadline_hands_its_deliveries_back_unattempted() {
    let (h, receiver, hook, worker, event) = sample().await;
    // One second left: less than a fast-lane request may take plus the time to record it.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(1);
    let resp = hookbridge_aws::lambda::invoke(event, deadline, |batch, deadline| async move {
        let ctx = BatchContext { lane: Lane::Fast, deadline: Some(deadline), settle: None };
        delivery_worker::handle(&worker, &batch.messages, ctx).await
    })
    .await
    .unwrap();
    let failed: Vec<_> = resp.batch_item_failures.iter().map(|f| f.item_identifier.as_str()).collect();
    assert_eq!(failed, ["7c1d2e3f-0003-4a5b-9c8d-0000000000b3"], "only the malformed record fails");
    assert!(receiver.received().is_empty(), "no request was started");
    let first = format!("{}01", delivery_prefix());
    let d = h.backend().deliveries.get(hook.id, first.parse().unwrap()).await.unwrap();
    assert!(d.is_none_or(|d| d.attempts.is_empty()), "nothing was recorded as an attempt");
    // Both deliveries are back on the queue, as not yet attempted.
    let mut back = Vec::new();
    for _ in 0..10 {
        back.extend(h.backend().delivery_queue.receive(10, Duration::from_secs(1)).await.unwrap());
        if back.len() >= 2 {
            break;
        }
    }
    assert_eq!(back.len(), 2);
    for m in &back {
        let task = hookbridge_core::message::Task::parse(&m.body, m.receive_count).unwrap();
        assert_eq!(task.attempt, 0, "handing back is not an attempt");
        assert!(task.envelope.is_some());
    }
}
