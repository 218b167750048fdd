//! The verifier on its sample event (`events/verifier-batch.json`), as Lambda would invoke
//! it, over the AWS backend on the emulator, challenging a real receiver.

#![allow(clippy::unwrap_used)] // Tests fail loudly on purpose.

mod common;

use std::time::Duration;

use aws_lambda_events::event::sqs::SqsEvent;
use hookbridge_core::hook::{ConnectionState, VerificationStatus};
use hookbridge_testkit::contract::make_hook_as;
use hookbridge_testkit::{AwsHarness, Harness, Receiver, Reply, events};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sample_batch_verifies_the_hook_and_fails_only_the_malformed_record() {
    let h = AwsHarness::start().await;
    let receiver = Receiver::start().await;
    receiver.always(Reply::EchoChallenge { header: "x-uid-challenge".into() });
    let id = "01KAKSAMP4E000000000H00K01".parse().unwrap();
    let (mut hook, _) = make_hook_as(&h, "demo", "to-verify", id).await;
    hook.config.url = receiver.url("/hook");
    hook.config.verification.required = true;
    h.backend().hooks.create(&hook, 1000).await.unwrap();
    let v = common::verifier_on(h.backend());
    let event: SqsEvent = serde_json::from_str(&events::load("verifier-batch")).unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    let resp = hookbridge_aws::lambda::invoke(event, deadline, |batch, _| async move {
        verifier::handle(&v, &batch.messages).await
    })
    .await
    .unwrap();
    let failed: Vec<_> = resp.batch_item_failures.iter().map(|f| f.item_identifier.as_str()).collect();
    assert_eq!(failed, ["2a3b4c5d-0002-4e6f-8a9b-0000000000c2"]);
    let stored = h.backend().hooks.get(&hook.tenant, hook.id).await.unwrap().unwrap();
    assert_eq!(stored.state.verification.status, VerificationStatus::Verified);
    assert_eq!(stored.state.connection_state, ConnectionState::Authorized);
    let challenge = &receiver.received()[0];
    assert_eq!(challenge.method, "GET");
    assert!(challenge.header("x-uid-challenge").is_some_and(|v| v.len() >= 32));
}
