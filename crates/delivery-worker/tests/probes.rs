//! A half-open circuit's probe, on the embedded backend: it is claimed only by a delivery
//! that is then sent, so one turned away first (its event no longer kept) does not hold the
//! hook's circuit half-open for a probe that never went.

#![allow(clippy::unwrap_used)] // Tests fail loudly on purpose.

use std::time::Duration;

use chrono::Utc;
use delivery_worker::{BatchContext, Worker, WorkerPorts, WorkerSettings};
use hookbridge_core::circuit::{Circuit, CircuitState};
use hookbridge_core::delivery::{DeliveryKey, DeliveryStatus};
use hookbridge_core::hook::{Lane, NetworkPolicy};
use hookbridge_core::ids::{DeliveryId, EventId};
use hookbridge_core::message::Task;
use hookbridge_core::ports::{Receipt, ReceivedMessage};
use hookbridge_outbound::{Outbound, OutboundSettings};
use hookbridge_testkit::contract::make_hook;
use hookbridge_testkit::{EmbeddedHarness, Harness, Receiver};

fn received(task: &Task, id: &str) -> ReceivedMessage {
    let now = Utc::now();
    ReceivedMessage {
        id: id.into(),
        body: task.message(now).body,
        receipt: Receipt(format!("r-{id}")),
        receive_count: 1,
        sent_at: now,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_probe_turned_away_before_its_request_leaves_the_probe_to_the_next_delivery() {
    let h = EmbeddedHarness::start().await;
    let receiver = Receiver::start().await;
    let (mut hook, _) = make_hook(&h, "acme", "recovering").await;
    hook.config.url = receiver.url("/");
    let now = Utc::now();
    hook.state.health.circuit = Circuit {
        state: CircuitState::Open,
        opened_at: Some(now - chrono::Duration::seconds(10)),
        next_probe_at: Some(now - chrono::Duration::seconds(1)),
        cooldown_ms: 5_000,
        ..Circuit::default()
    };
    let b = h.backend();
    b.hooks.create(&hook, 1000).await.unwrap();
    let worker = Worker::new(
        WorkerPorts::of(b),
        Outbound::new(OutboundSettings { timeout: Duration::from_secs(5), network: NetworkPolicy::local() }).unwrap(),
        WorkerSettings::default(),
    );
    let key = |n: u128| DeliveryKey {
        tenant: hook.tenant.clone(),
        hook_id: hook.id,
        delivery_id: DeliveryId::from_parts(now.timestamp_millis() as u64, n),
        event_id: EventId::generate(),
        event_type: "user.login".into(),
    };
    let ctx = || BatchContext { lane: Lane::Slow, deadline: None, settle: None };

    // Its event is no longer kept: cancelled without a request.
    let gone = key(1);
    let outcome =
        delivery_worker::handle(&worker, &[received(&Task::by_reference(gone.clone(), 0), "gone")], ctx()).await;
    assert!(outcome.failed.is_empty());
    let d = b.deliveries.get(hook.id, gone.delivery_id).await.unwrap().unwrap();
    assert_eq!(d.status, DeliveryStatus::Cancelled);
    let stored = b.hooks.get(&hook.tenant, hook.id).await.unwrap().unwrap();
    assert_eq!(stored.state.health.circuit.state, CircuitState::Open, "no probe was claimed for it");

    // The next delivery is the probe, at once: it is sent and closes the circuit.
    let next = key(2);
    let body = format!(
        r#"{{"version":"0","id":"{}","detail-type":"user.login","source":"idp","account":"1","time":"2026-12-02T00:00:00Z","region":"r","resources":[],"detail":{{}}}}"#,
        next.event_id
    );
    let outcome =
        delivery_worker::handle(&worker, &[received(&Task::new(next.clone(), 0, &body), "next")], ctx()).await;
    assert!(outcome.failed.is_empty());
    assert_eq!(receiver.received().len(), 1, "the probe went");
    let stored = b.hooks.get(&hook.tenant, hook.id).await.unwrap().unwrap();
    assert!(stored.state.health.circuit.is_closed(), "{:?}", stored.state.health.circuit);
}
