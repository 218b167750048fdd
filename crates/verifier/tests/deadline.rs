//! A check whose hook's secrets changed while it ran is run again, but only if the round
//! can end before the invocation's deadline. Begun anyway, it was cut off by Lambda's
//! timeout, and the whole batch came back: every hook in it challenged again, every
//! outcome published again.

#![allow(clippy::unwrap_used)] // Tests fail loudly on purpose.

mod common;

use std::time::{Duration, Instant};

use chrono::Utc;
use hookbridge_core::hook::ConnectionState;
use hookbridge_core::ids::HookId;
use hookbridge_core::ports::OutgoingMessage;
use hookbridge_testkit::contract::make_hook_from;
use hookbridge_testkit::{EmbeddedHarness, Harness, Receiver, Reply};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_round_that_would_outlast_the_invocation_is_handed_back_not_begun() {
    let h = EmbeddedHarness::start().await;
    let idp = Receiver::start().await;
    idp.always(Reply::body(200, r#"{"access_token":"t","expires_in":60}"#).after(Duration::from_secs(1)));
    let draft = |secret: &str| {
        serde_json::json!({
            "name": "rotating",
            "url": "https://receiver.example/hook",
            "auth": {"type": "OAUTH_CLIENT_CREDENTIALS", "token_url": idp.url("/token"), "client_id": "c", "client_secret": secret},
        })
    };
    let id = HookId::generate();
    let (mut hook, _) = make_hook_from(&h, "acme", id, draft("first")).await;
    hook.state.connection_state = ConnectionState::Authorized;
    h.backend().hooks.create(&hook, 1000).await.unwrap();
    let (replaced, _) = make_hook_from(&h, "acme", id, draft("second")).await;

    let queue = &h.backend().verify_queue;
    let body = format!(
        r#"{{"version":"0","id":"9b1c2d3e-0000-4000-8000-0000000000f1","detail-type":"hook.updated","source":"hookbridge","account":"123456789012","time":"{}","region":"us-east-1","resources":[],"detail":{{"tenant":"acme","hook_id":"{id}","hook_version":1}}}}"#,
        Utc::now().format("%Y-%m-%dT%H:%M:%SZ"),
    );
    queue.send_batch(&[OutgoingMessage::now(body)]).await.unwrap();
    let m = queue.receive(1, Duration::from_secs(5)).await.unwrap().pop().unwrap();

    let v = common::verifier_on(h.backend());
    // Time for one round and a little more, not for two.
    let deadline = Instant::now() + verifier::round_time(v.outbound.settings()) + Duration::from_millis(500);
    let check = verifier::handle_within(&v, std::slice::from_ref(&m), Some(deadline));
    let replace_secret = async {
        // While the token is being fetched with the first client secret.
        idp.wait_for(1, Duration::from_secs(10)).await;
        let mut now = h.backend().hooks.get(&hook.tenant, id).await.unwrap().unwrap();
        let expected = now.revision;
        (now.sealed, now.revision) = (replaced.sealed.clone(), expected + 1);
        h.backend().hooks.replace(&now, expected).await.unwrap();
    };
    let (outcome, ()) = tokio::join!(check, replace_secret);

    assert_eq!(
        outcome.failed,
        std::slice::from_ref(&m.id),
        "the check comes back to be made in an invocation of its own"
    );
    assert_eq!(idp.received().len(), 1, "no second round was begun");
    let stored = h.backend().hooks.get(&hook.tenant, id).await.unwrap().unwrap();
    assert_eq!(stored.state.connection_state, ConnectionState::Authorized, "as it was: nothing was found");
    assert_eq!(stored.sealed, replaced.sealed);
    let again = queue.receive(1, Duration::from_secs(5)).await.unwrap();
    assert_eq!(again.iter().map(|r| &r.id).collect::<Vec<_>>(), [&m.id], "handed back at once");

    // With the time, the next invocation checks the new secret.
    let outcome = verifier::handle(&v, &again).await;
    assert!(outcome.failed.is_empty(), "{outcome:?}");
    assert_eq!(idp.received().len(), 2);
    let stored = h.backend().hooks.get(&hook.tenant, id).await.unwrap().unwrap();
    assert_eq!(stored.state.connection_state, ConnectionState::Authorized);
}

/// The hook's writes are bounded by nothing the verifier knows (an AWS call may take its
/// SDK's whole timeout, retries and all), so a round that fitted can still run long: the
/// check is given up just before the deadline and comes back on its own, rather than
/// Lambda ending the invocation and bringing back every check in the batch.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_check_whose_writes_outlast_the_invocation_is_given_up_before_its_deadline() {
    let h = EmbeddedHarness::start().await;
    let r = Receiver::start().await;
    r.always(Reply::status(200).after(Duration::from_millis(300)));
    let id = HookId::generate();
    let (mut hook, _) =
        make_hook_from(&h, "acme", id, serde_json::json!({"name": "challenged", "url": r.url("/")})).await;
    hook.state.connection_state = ConnectionState::Authorized;
    h.backend().hooks.create(&hook, 1000).await.unwrap();
    let mut v = common::verifier_on(h.backend());
    v.outbound = hookbridge_outbound::Outbound::new(hookbridge_outbound::OutboundSettings {
        timeout: Duration::from_secs(1),
        network: hookbridge_core::hook::NetworkPolicy::local(),
    })
    .unwrap();
    let m = common::lifecycle(&hook, "hook.verification.requested", "m1", 1);
    let deadline = Instant::now() + verifier::round_time(v.outbound.settings()) + Duration::from_millis(500);
    let check = async {
        let outcome = verifier::handle_within(&v, std::slice::from_ref(&m), Some(deadline)).await;
        (outcome, Instant::now())
    };
    // While the endpoint answers the challenge, the store's writer is taken for longer than
    // the invocation has left: the results' write waits behind it.
    let held = async {
        r.wait_for(1, Duration::from_secs(5)).await;
        h.hold_the_writer(verifier::round_time(v.outbound.settings()) + Duration::from_secs(3)).await.unwrap();
    };
    let ((outcome, answered), ()) = tokio::join!(check, held);
    assert!(answered < deadline, "answered {:?} past the deadline", answered - deadline);
    assert_eq!(outcome.failed, ["m1"], "the check comes back");
    // Made again with the time, it ends.
    let outcome = verifier::handle(&v, std::slice::from_ref(&m)).await;
    assert!(outcome.failed.is_empty(), "{outcome:?}");
    assert_eq!(r.received().len(), 2, "challenged again");
}
