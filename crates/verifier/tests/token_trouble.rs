//! A token endpoint that gives no answer, or has trouble of its own (a 5xx, a 429), says
//! nothing about the hook's credentials: the check comes back and the hook reads as it
//! did. It was written DEAUTHORIZED, told as `hook.deauthorized`, and nothing set it back
//! while its deliveries went on getting tokens. On the queue's last receive the trouble is
//! the finding; a refusal of the credentials is one at once.

#![allow(clippy::unwrap_used)] // Tests fail loudly on purpose.

mod common;

use hookbridge_core::hook::ConnectionState;
use hookbridge_core::ids::HookId;
use hookbridge_core::topology::VERIFY_RECEIVES;
use hookbridge_testkit::contract::make_hook_from;
use hookbridge_testkit::{EmbeddedHarness, Harness, Receiver, Reply};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_endpoints_own_trouble_is_checked_again_not_taken_for_a_refusal() {
    let h = EmbeddedHarness::start().await;
    let idp = Receiver::start().await;
    let draft = serde_json::json!({
        "name": "oauth",
        "url": "https://receiver.example/hook",
        "auth": {"type": "OAUTH_CLIENT_CREDENTIALS", "token_url": idp.url("/token"), "client_id": "c", "client_secret": "s"},
    });
    let (mut hook, _) = make_hook_from(&h, "acme", HookId::generate(), draft).await;
    hook.state.connection_state = ConnectionState::Authorized;
    h.backend().hooks.create(&hook, 1000).await.unwrap();
    let v = common::verifier_on(h.backend());
    let stored = || async { h.backend().hooks.get(&hook.tenant, hook.id).await.unwrap().unwrap().state };

    for trouble in [Reply::body(503, "maintenance"), Reply::body(429, "slow down")] {
        idp.always(trouble);
        assert_eq!(verifier::handle(&v, &[common::hook_updated(&hook, "m", 1)]).await.failed, ["m"], "it comes back");
        let state = stored().await;
        assert_eq!((state.connection_state, state.connection_error), (ConnectionState::Authorized, None));
    }

    // Still in trouble on the last receive: that is the finding.
    let last = verifier::handle(&v, &[common::hook_updated(&hook, "m", VERIFY_RECEIVES)]).await;
    assert!(last.failed.is_empty(), "{last:?}");
    let state = stored().await;
    assert_eq!(state.connection_state, ConnectionState::Deauthorized);
    assert!(state.connection_error.is_some_and(|e| e.contains("429")));

    // The endpoint back: the next check finds it so.
    idp.always(Reply::body(200, r#"{"access_token":"t","expires_in":60}"#));
    assert!(verifier::handle(&v, &[common::hook_updated(&hook, "m", 1)]).await.failed.is_empty());
    assert_eq!(stored().await.connection_state, ConnectionState::Authorized);

    // A refusal of the credentials is a finding on the first receive.
    idp.always(Reply::body(401, r#"{"error":"invalid_client"}"#));
    assert!(verifier::handle(&v, &[common::hook_updated(&hook, "m", 1)]).await.failed.is_empty());
    assert_eq!(stored().await.connection_state, ConnectionState::Deauthorized);
}

/// A new hook that must prove ownership passes its challenge while its token endpoint is
/// in trouble: the pass is recorded (its deliveries go out, getting tokens for
/// themselves) and the check comes back for the token alone, the hook reading as it did
/// until then. The pass was dropped with the token: the hook stayed unproven, its
/// deliveries cancelled "hook not verified", and challenged again on every retry.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_challenge_passed_while_the_token_endpoint_is_in_trouble_is_kept() {
    use hookbridge_core::hook::VerificationStatus;

    let h = EmbeddedHarness::start().await;
    let idp = Receiver::start().await;
    let receiver = Receiver::start().await;
    receiver.always(Reply::EchoChallenge { header: "x-uid-challenge".into() });
    let draft = serde_json::json!({
        "name": "oauth-proven",
        "url": receiver.url("/hook"),
        "verification": {"required": true},
        "auth": {"type": "OAUTH_CLIENT_CREDENTIALS", "token_url": idp.url("/token"), "client_id": "c", "client_secret": "s"},
    });
    let (mut hook, _) = make_hook_from(&h, "acme", HookId::generate(), draft).await;
    hook.state.connection_state = ConnectionState::Creating;
    h.backend().hooks.create(&hook, 1000).await.unwrap();
    assert!(hook.deliverable().is_err(), "unproven, it gets nothing");
    let v = common::verifier_on(h.backend());
    let stored = || async { h.backend().hooks.get(&hook.tenant, hook.id).await.unwrap().unwrap() };

    idp.always(Reply::body(503, "maintenance"));
    assert_eq!(verifier::handle(&v, &[common::hook_updated(&hook, "m", 1)]).await.failed, ["m"], "it comes back");
    let now = stored().await;
    assert_eq!(now.state.verification.status, VerificationStatus::Verified, "{:?}", now.state);
    assert_eq!(now.deliverable(), Ok(()));
    assert_eq!(now.state.connection_state, ConnectionState::Creating, "as it was until the token is had");
    assert_eq!(receiver.received().len(), 1);

    // The endpoint back: the check that comes back fetches the token and challenges no more.
    idp.always(Reply::body(200, r#"{"access_token":"t","expires_in":60}"#));
    assert!(verifier::handle(&v, &[common::hook_updated(&hook, "m", 2)]).await.failed.is_empty());
    let now = stored().await;
    assert_eq!(now.state.connection_state, ConnectionState::Authorized);
    assert_eq!(now.state.verification.status, VerificationStatus::Verified);
    assert_eq!(receiver.received().len(), 1, "challenged once");
}

/// A check of an authorized hook waits on its token endpoint while the owner gives the hook
/// new credentials (a `PUT`: UPDATING) and the change's own check begins. The first check's
/// trouble then puts back what it found only on the hook it checked: it wrote AUTHORIZED
/// over the change's check, whose note of UPDATING it wiped, so the hook read AUTHORIZED
/// with credentials no check had passed, and kept reading so when that check had trouble
/// too. Both a new token endpoint and a new client secret alone (kept sealed, outside the
/// hook's config) are such a change.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_old_checks_trouble_does_not_put_back_a_hook_changed_since() {
    use std::time::Duration;

    for new_endpoint in [true, false] {
        let h = EmbeddedHarness::start().await;
        let (old_idp, new_idp) = (Receiver::start().await, Receiver::start().await);
        old_idp.always(Reply::body(503, "maintenance").after(Duration::from_millis(1500)));
        new_idp.always(Reply::body(503, "maintenance").after(Duration::from_millis(3000)));
        let draft = |idp: &Receiver, secret: &str| {
            serde_json::json!({
                "name": "oauth-moved",
                "url": "https://receiver.example/hook",
                "auth": {"type": "OAUTH_CLIENT_CREDENTIALS", "token_url": idp.url("/token"), "client_id": "c", "client_secret": secret},
            })
        };
        let id = HookId::generate();
        let (mut hook, _) = make_hook_from(&h, "acme", id, draft(&old_idp, "s")).await;
        hook.state.connection_state = ConnectionState::Authorized;
        h.backend().hooks.create(&hook, 1000).await.unwrap();
        let v = common::verifier_on(h.backend());
        let stored = || async { h.backend().hooks.get(&hook.tenant, hook.id).await.unwrap().unwrap() };

        let changed = async {
            tokio::time::sleep(Duration::from_millis(300)).await;
            assert_eq!(stored().await.state.connection_state, ConnectionState::Authorizing, "the first check runs");
            // What a PUT of the new credentials writes.
            let new = if new_endpoint { draft(&new_idp, "s") } else { draft(&old_idp, "a-new-secret") };
            let (moved, _) = make_hook_from(&h, "acme", id, new).await;
            let mut put = stored().await;
            assert_eq!(put.config == moved.config, !new_endpoint, "a secret alone leaves the config as it was");
            (put.config, put.sealed) = (moved.config, moved.sealed);
            put.state.connection_state = ConnectionState::Updating;
            put.state.checked_from = None;
            put.revision += 1;
            h.backend().hooks.replace(&put, put.revision - 1).await.unwrap();
            verifier::handle(&v, &[common::hook_updated(&put, "m2", 1)]).await
        };
        let first = [common::hook_updated(&hook, "m1", 1)];
        let (first, second) = tokio::join!(verifier::handle(&v, &first), changed);
        assert_eq!((first.failed, second.failed), (vec!["m1".to_owned()], vec!["m2".to_owned()]), "both come back");
        assert_eq!(old_idp.received().len() + new_idp.received().len(), 2, "each check asked its endpoint");
        let state = stored().await.state;
        assert_eq!(state.connection_state, ConnectionState::Updating, "new_endpoint {new_endpoint}: {state:?}");
    }
}
