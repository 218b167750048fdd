//! A hook whose delete was interrupted (marked `DELETING`, not yet removed) stays that way
//! when a lifecycle event from before the delete reaches the verifier: it is not challenged,
//! and not made deliverable again.

#![allow(clippy::unwrap_used)] // Tests fail loudly on purpose.

mod common;

use chrono::Utc;
use hookbridge_core::hook::ConnectionState;
use hookbridge_core::ports::{Receipt, ReceivedMessage};
use hookbridge_testkit::contract::make_hook;
use hookbridge_testkit::{EmbeddedHarness, Harness, Receiver, Reply};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hook_being_deleted_is_left_alone() {
    let h = EmbeddedHarness::start().await;
    let receiver = Receiver::start().await;
    receiver.always(Reply::EchoChallenge { header: "x-uid-challenge".into() });
    let (mut hook, _) = make_hook(&h, "acme", "going").await;
    hook.config.url = receiver.url("/hook");
    hook.config.verification.required = true;
    hook.state.connection_state = ConnectionState::Deleting;
    h.backend().hooks.create(&hook, 1000).await.unwrap();
    let v = common::verifier_on(h.backend());
    // The hook.updated of a change made before the delete began.
    let body = format!(
        r#"{{"version":"0","id":"9b1c2d3e-0000-4000-8000-0000000000d1","detail-type":"hook.updated","source":"hookbridge","account":"123456789012","time":"{}","region":"us-east-1","resources":[],"detail":{{"tenant":"acme","hook_id":"{}","hook_version":1}}}}"#,
        Utc::now().format("%Y-%m-%dT%H:%M:%SZ"),
        hook.id
    );
    let m =
        ReceivedMessage { id: "m1".into(), body, receipt: Receipt("r1".into()), receive_count: 1, sent_at: Utc::now() };
    assert!(verifier::handle(&v, &[m]).await.failed.is_empty());
    let stored = h.backend().hooks.get(&hook.tenant, hook.id).await.unwrap().unwrap();
    assert_eq!(stored.state.connection_state, ConnectionState::Deleting);
    assert!(receiver.received().is_empty(), "not challenged");
}
