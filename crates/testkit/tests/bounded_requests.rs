//! A large send, batch write or publish keeps a bounded number of AWS requests under way
//! (a 10,000-delivery replay once opened about 1,000 connections at once).

#![allow(clippy::unwrap_used)] // Tests fail loudly on purpose.

use chrono::Utc;
use hookbridge_aws::{REQUESTS_IN_FLIGHT, RequestCounter};
use hookbridge_core::delivery::{Delivery, DeliveryKey};
use hookbridge_core::envelope::BusEntry;
use hookbridge_core::ids::{DeliveryId, HookId};
use hookbridge_core::ports::OutgoingMessage;
use hookbridge_testkit::{AwsHarness, Harness};
use serde_json::value::RawValue;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_sends_writes_and_publishes_keep_few_requests_in_flight() {
    let counter = RequestCounter::default();
    let h = AwsHarness::start_counted(Some(&counter)).await;
    let b = h.backend();

    counter.reset();
    let messages: Vec<_> = (0..400).map(|i| OutgoingMessage::now(format!("m{i}"))).collect();
    b.delivery_queue.send_batch(&messages).await.unwrap();
    assert!(counter.most_in_flight() <= REQUESTS_IN_FLIGHT, "{} sends at once", counter.most_in_flight());
    assert_eq!(b.delivery_queue.depth().await.unwrap().total(), 400, "all sent");

    counter.reset();
    let hook = HookId::generate();
    let deliveries: Vec<_> = (0..500)
        .map(|i| {
            let key = DeliveryKey {
                tenant: "acme".parse().unwrap(),
                hook_id: hook,
                delivery_id: DeliveryId::generate(),
                event_id: format!("e{i}").parse().unwrap(),
                event_type: "t".into(),
            };
            Delivery::pending_for(&key, Utc::now())
        })
        .collect();
    b.deliveries.insert(&deliveries).await.unwrap();
    assert!(counter.most_in_flight() <= REQUESTS_IN_FLIGHT, "{} writes at once", counter.most_in_flight());

    counter.reset();
    let entries: Vec<_> = (0..200)
        .map(|i| BusEntry {
            detail_type: "t".into(),
            source: "s".into(),
            time: None,
            resources: Vec::new(),
            detail: RawValue::from_string(format!(r#"{{"tenant":"acme","n":{i}}}"#)).unwrap(),
        })
        .collect();
    let ids = b.bus.publish(entries).await.unwrap();
    assert_eq!(ids.len(), 200);
    assert!(counter.most_in_flight() <= REQUESTS_IN_FLIGHT, "{} publishes at once", counter.most_in_flight());
}
