//! A half-open circuit's probe, on the embedded backend: it is claimed only by a delivery
//! that is then sent, so one turned away first (its event no longer kept) does not hold the
//! hook's circuit half-open for a probe that never went; and the deliveries that wait for it
//! hold none of a rate-limited hook's slots.

#![allow(clippy::unwrap_used)] // Tests fail loudly on purpose.

mod common;

use chrono::Utc;
use common::{carried, ctx, key, received, worker};
use delivery_worker::Worker;
use hookbridge_core::circuit::{Circuit, CircuitState};
use hookbridge_core::delivery::{DeliveryKey, DeliveryStatus};
use hookbridge_core::hook::{Hook, RateLimit};
use hookbridge_core::message::Task;
use hookbridge_core::ports::ReceivedMessage;
use hookbridge_core::rate::{Rate, hook_key, schedule_of};
use hookbridge_testkit::contract::make_hook;
use hookbridge_testkit::{EmbeddedHarness, Harness, Receiver};

/// A hook to `receiver` whose circuit is due its probe, stored, and a worker for it.
async fn recovering(h: &EmbeddedHarness, receiver: &Receiver, rate_limit: Option<RateLimit>) -> (Hook, Worker) {
    let (mut hook, _) = make_hook(h, "acme", "recovering").await;
    hook.config.url = receiver.url("/");
    hook.config.rate_limit = rate_limit;
    let now = Utc::now();
    hook.state.health.circuit = Circuit {
        state: CircuitState::Open,
        opened_at: Some(now - chrono::Duration::seconds(10)),
        next_probe_at: Some(now - chrono::Duration::seconds(1)),
        cooldown_ms: 5_000,
        ..Circuit::default()
    };
    h.backend().hooks.create(&hook, 1000).await.unwrap();
    (hook, worker(h))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_probe_turned_away_before_its_request_leaves_the_probe_to_the_next_delivery() {
    let h = EmbeddedHarness::start().await;
    let receiver = Receiver::start().await;
    let (hook, worker) = recovering(&h, &receiver, None).await;
    let b = h.backend();

    // Its event is no longer kept: cancelled without a request.
    let gone = key(&hook, 1);
    let outcome =
        delivery_worker::handle(&worker, &[received(&Task::by_reference(gone.clone(), 0), "gone")], ctx()).await;
    assert!(outcome.failed.is_empty());
    let d = b.deliveries.get(hook.id, gone.delivery_id).await.unwrap().unwrap();
    assert_eq!(d.status, DeliveryStatus::Cancelled);
    let stored = b.hooks.get(&hook.tenant, hook.id).await.unwrap().unwrap();
    assert_eq!(stored.state.health.circuit.state, CircuitState::Open, "no probe was claimed for it");

    // The next delivery is the probe, at once: it is sent and closes the circuit.
    let outcome = delivery_worker::handle(&worker, &[carried(&key(&hook, 2), "next")], ctx()).await;
    assert!(outcome.failed.is_empty());
    assert_eq!(receiver.received().len(), 1, "the probe went");
    let stored = b.hooks.get(&hook.tenant, hook.id).await.unwrap().unwrap();
    assert!(stored.state.health.circuit.is_closed(), "{:?}", stored.state.health.circuit);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deliveries_waiting_for_a_probe_hold_none_of_the_hooks_rate_limit_slots() {
    let h = EmbeddedHarness::start().await;
    let receiver = Receiver::start().await;
    let (hook, worker) = recovering(&h, &receiver, Some(RateLimit { per_second: 1 })).await;
    let b = h.backend();

    // Five of the hook's deliveries in one batch: one is the probe, four wait for it.
    let batch: Vec<ReceivedMessage> = (1..=5).map(|n| carried(&key(&hook, n), &format!("d{n}"))).collect();
    let outcome = delivery_worker::handle(&worker, &batch, ctx()).await;
    assert!(outcome.failed.is_empty());
    assert_eq!(receiver.received().len(), 1, "only the probe went");
    let stored = b.hooks.get(&hook.tenant, hook.id).await.unwrap().unwrap();
    assert!(stored.state.health.circuit.is_closed(), "{:?}", stored.state.health.circuit);

    // The hook's next slot is the one after the probe's, not four seconds past it: the
    // deliveries that waited booked none, so the hook is paced at its rate as it recovers.
    let asked = Utc::now();
    let next = b.limiter.pace(&hook_key(hook.id, schedule_of(&stored)), Rate::per_second(1), 1, asked).await.unwrap();
    assert!(next <= asked + chrono::Duration::milliseconds(1_500), "next slot {next}, asked at {asked}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_probe_of_a_rate_limited_hook_is_a_delivery_already_holding_its_slot() {
    let h = EmbeddedHarness::start().await;
    let receiver = Receiver::start().await;
    let (hook, worker) = recovering(&h, &receiver, Some(RateLimit { per_second: 1 })).await;
    let b = h.backend();

    // Three of the hook's deliveries; the second came back for the slot it holds, now.
    let keys: Vec<DeliveryKey> = (1..=3).map(|n| key(&hook, n)).collect();
    let mut batch: Vec<ReceivedMessage> = keys.iter().enumerate().map(|(i, k)| carried(k, &format!("d{i}"))).collect();
    let mut holding = Task::parse(&batch[1].body, 1).unwrap();
    (holding.slot, holding.not_before, holding.slot_schedule) = (true, Some(Utc::now()), Some(schedule_of(&hook)));
    batch[1] = received(&holding, "d1");
    let outcome = delivery_worker::handle(&worker, &batch, ctx()).await;
    assert!(outcome.failed.is_empty());
    assert_eq!(receiver.received().len(), 1, "only the probe went");
    let sent = b.deliveries.get(hook.id, keys[1].delivery_id).await.unwrap().unwrap();
    assert_eq!(sent.attempts.len(), 1, "the probe was the delivery holding its slot: {sent:?}");
    for waited in [&keys[0], &keys[2]] {
        let d = b.deliveries.get(hook.id, waited.delivery_id).await.unwrap();
        assert!(d.as_ref().is_none_or(|d| d.attempts.is_empty()), "{d:?}");
    }
}
