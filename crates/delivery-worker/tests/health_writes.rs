//! A hook whose endpoint keeps rejecting deliveries, on both backends: past the
//! disable rule's count its failures are not each a hook write (decision 0043), and the
//! ones a process held back are in its next write.

#![allow(clippy::unwrap_used)] // Tests fail loudly on purpose.

mod common;

use common::{carried, ctx, key, worker};
use hookbridge_core::health::DisableRule;
use hookbridge_testkit::contract::make_hook;
use hookbridge_testkit::{AwsHarness, EmbeddedHarness, Harness, Receiver, Reply};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rejecting_endpoints_failures_past_the_rules_count_are_written_together() {
    rejecting_endpoint(&EmbeddedHarness::start().await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rejecting_endpoints_failures_past_the_rules_count_are_written_together_on_aws() {
    rejecting_endpoint(&AwsHarness::start().await).await;
}

async fn rejecting_endpoint(h: &impl Harness) {
    let receiver = Receiver::start().await;
    receiver.always(Reply::status(400));
    let (mut hook, _) = make_hook(h, "acme", "rejected").await;
    hook.config.url = receiver.url("/");
    let b = h.backend();
    b.hooks.create(&hook, 1000).await.unwrap();
    let created = b.hooks.get(&hook.tenant, hook.id).await.unwrap().unwrap().revision;
    let worker = worker(h);
    let count = DisableRule::default().min_failures;

    // One delivery a batch, so each is a group of its own: every failure up to the rule's
    // count is a write, and the ones after it within the minute are not.
    for n in 0..count + 15 {
        let outcome =
            delivery_worker::handle(&worker, &[carried(&key(&hook, n.into()), &format!("d{n}"))], ctx()).await;
        assert!(outcome.failed.is_empty());
    }
    assert_eq!(receiver.received().len(), (count + 15) as usize, "every delivery was tried");
    let stored = b.hooks.get(&hook.tenant, hook.id).await.unwrap().unwrap();
    assert_eq!(stored.state.health.consecutive_failures, count);
    assert_eq!(stored.revision, created + u64::from(count), "one write per failure up to the count, none after");

    // A 503 moves the circuit's count of unreachable answers: written, with the fifteen
    // failures held back.
    receiver.always(Reply::status(503));
    delivery_worker::handle(&worker, &[carried(&key(&hook, 99), "down")], ctx()).await;
    let stored = b.hooks.get(&hook.tenant, hook.id).await.unwrap().unwrap();
    assert_eq!(stored.state.health.consecutive_failures, count + 16);
    assert_eq!(stored.state.health.circuit.down_streak, 1);
    assert_eq!(stored.revision, created + u64::from(count) + 1);
}
