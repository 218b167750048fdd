//! The delivery worker on its sample event (`events/delivery-worker-batch.json`), as Lambda
//! would invoke it, over the AWS backend on the emulator, sending to a real receiver.

#![allow(clippy::unwrap_used)] // Tests fail loudly on purpose.

use std::time::Duration;

use aws_lambda_events::event::sqs::SqsEvent;
use delivery_worker::{Worker, WorkerSettings};
use hookbridge_core::delivery::DeliveryStatus;
use hookbridge_core::hook::NetworkPolicy;
use hookbridge_outbound::{Outbound, OutboundSettings};
use hookbridge_testkit::contract::make_hook;
use hookbridge_testkit::{AwsHarness, Harness, Receiver, events};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sample_batch_is_delivered_and_only_the_malformed_record_fails() {
    let h = AwsHarness::start().await;
    let receiver = Receiver::start().await;
    let (mut hook, _) = make_hook(&h, "demo", "sample").await;
    hook.id = "01KAKSAMP4E000000000H00K01".parse().unwrap();
    hook.config.url = receiver.url("/hook");
    h.backend().hooks.create(&hook).await.unwrap();
    let worker = Worker {
        backend: h.backend().clone(),
        outbound: Outbound::new(OutboundSettings { timeout: Duration::from_secs(5), network: NetworkPolicy::local() })
            .unwrap(),
        settings: WorkerSettings::default(),
    };
    let event: SqsEvent = serde_json::from_str(&events::load("delivery-worker-batch")).unwrap();
    let resp =
        hookbridge_aws::lambda::invoke(
            event,
            |records| async move { delivery_worker::handle(&worker, &records).await },
        )
        .await
        .unwrap();
    let failed: Vec<_> = resp.batch_item_failures.iter().map(|f| f.item_identifier.as_str()).collect();
    assert_eq!(failed, ["7c1d2e3f-0003-4a5b-9c8d-0000000000b3"]);

    let got = receiver.received();
    assert_eq!(got.len(), 2);
    let mut ids: Vec<_> = got.iter().map(|r| r.header("webhook-id").unwrap().to_owned()).collect();
    ids.sort();
    assert_eq!(ids, ["01KAKSAMP4E00000000DE11V01", "01KAKSAMP4E00000000DE11V02"]);
    assert!(got.iter().all(|r| r.header("authorization").is_some_and(|a| a.starts_with("Basic "))));
    let d = h.backend().deliveries.get(hook.id, ids[0].parse().unwrap()).await.unwrap().unwrap();
    assert_eq!(d.status, DeliveryStatus::Succeeded);
    assert_eq!(d.attempts.len(), 1);
}
