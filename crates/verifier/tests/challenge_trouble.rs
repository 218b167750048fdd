//! A proven endpoint checked again on request (`POST /verify`) that gives no answer, or has
//! trouble of its own (a 5xx, a 429), says nothing about its owner: the check comes back
//! and the hook stays proven, as its token endpoint's trouble does. It was written
//! `FAILED`, and every delivery was cancelled "hook not verified" until someone asked
//! again. On the queue's last receive the trouble is the finding; a wrong answer is one at
//! once, and so is any failure of an endpoint never proven.

#![allow(clippy::unwrap_used)] // Tests fail loudly on purpose.

mod common;

use chrono::Utc;
use hookbridge_core::hook::{ConnectionState, Hook, VerificationStatus};
use hookbridge_core::ids::HookId;
use hookbridge_core::message::event_type;
use hookbridge_core::topology::VERIFY_RECEIVES;
use hookbridge_testkit::contract::make_hook_from;
use hookbridge_testkit::{EmbeddedHarness, Harness, Receiver, Reply};

/// A hook that must prove ownership, stored as `POST /verify` leaves it: `proven` says
/// whether it passed a challenge before.
async fn stored_hook(h: &EmbeddedHarness, url: &str, proven: bool) -> Hook {
    stored(h, serde_json::json!({"url": url, "verification": {"required": true}}), proven).await
}

/// A hook from `draft` (named here), stored as `POST /verify` leaves it.
async fn stored(h: &EmbeddedHarness, mut draft: serde_json::Value, proven: bool) -> Hook {
    draft["name"] = format!("h{}", HookId::generate()).into();
    let (mut hook, _) = make_hook_from(h, "acme", HookId::generate(), draft).await;
    hook.state.verification.status = VerificationStatus::Pending;
    hook.state.verification.verified_at = proven.then(Utc::now);
    hook.state.connection_state = if proven { ConnectionState::Authorized } else { ConnectionState::Updating };
    h.backend().hooks.create(&hook, 1000).await.unwrap();
    hook
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_proven_endpoints_own_trouble_is_checked_again_not_taken_for_a_failure() {
    let h = EmbeddedHarness::start().await;
    let receiver = Receiver::start().await;
    let hook = stored_hook(&h, &receiver.url("/hook"), true).await;
    let v = common::verifier_on(h.backend());
    let asked = |receives| common::lifecycle(&hook, event_type::HOOK_VERIFICATION_REQUESTED, "m", receives);
    let stored = || async { h.backend().hooks.get(&hook.tenant, hook.id).await.unwrap().unwrap().state };

    // No answer within the request timeout (5 s here), then the endpoint's own trouble.
    let silent = Reply::status(200).after(std::time::Duration::from_secs(8));
    for trouble in [silent, Reply::body(503, "deploying"), Reply::body(408, "late"), Reply::body(429, "slow down")] {
        receiver.always(trouble);
        assert_eq!(verifier::handle(&v, &[asked(1)]).await.failed, ["m"], "it comes back");
        let state = stored().await;
        assert!(state.verification.proven(), "{:?}", state.verification);
        assert_eq!(state.connection_state, ConnectionState::Authorized);
    }
    assert_eq!(receiver.received().len(), 4, "each check was sent");

    // Still in trouble on the last receive: that is the finding.
    let last = verifier::handle(&v, &[asked(VERIFY_RECEIVES)]).await;
    assert!(last.failed.is_empty(), "{last:?}");
    let state = stored().await;
    assert_eq!(state.verification.status, VerificationStatus::Failed);
    assert!(state.verification.last_error.is_some_and(|e| e.contains("429")));
    assert_eq!(state.connection_state, ConnectionState::Deauthorized);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_answer_or_an_endpoint_never_proven_is_a_finding_at_once() {
    let h = EmbeddedHarness::start().await;
    let receiver = Receiver::start().await;
    let v = common::verifier_on(h.backend());

    // A proven endpoint answering, but not with the value.
    let proven = stored_hook(&h, &receiver.url("/hook"), true).await;
    receiver.always(Reply::body(200, r#"{"verification":"not it"}"#));
    let asked = common::lifecycle(&proven, event_type::HOOK_VERIFICATION_REQUESTED, "m", 1);
    assert!(verifier::handle(&v, &[asked]).await.failed.is_empty());
    let state = h.backend().hooks.get(&proven.tenant, proven.id).await.unwrap().unwrap().state;
    assert_eq!(state.verification.status, VerificationStatus::Failed);
    assert!(state.verification.last_error.is_some_and(|e| e.contains("wrong answer")));

    // An endpoint never proven, in trouble: its owner is told now.
    let fresh = stored_hook(&h, &receiver.url("/fresh"), false).await;
    receiver.always(Reply::body(503, "deploying"));
    assert!(verifier::handle(&v, &[common::hook_updated(&fresh, "n", 1)]).await.failed.is_empty());
    let state = h.backend().hooks.get(&fresh.tenant, fresh.id).await.unwrap().unwrap().state;
    assert_eq!(state.verification.status, VerificationStatus::Failed);
    assert!(state.verification.last_error.is_some_and(|e| e.contains("503")));
}

/// A hook that does not require proof, checked on request: nothing waits on the answer,
/// so its owner is told of the trouble at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_check_of_a_hook_not_requiring_proof_is_a_finding_at_once() {
    let h = EmbeddedHarness::start().await;
    let receiver = Receiver::start().await;
    let hook = stored(&h, serde_json::json!({"url": receiver.url("/hook")}), true).await;
    let v = common::verifier_on(h.backend());
    receiver.always(Reply::body(503, "deploying"));
    let asked = common::lifecycle(&hook, event_type::HOOK_VERIFICATION_REQUESTED, "m", 1);
    assert!(verifier::handle(&v, &[asked]).await.failed.is_empty());
    let state = h.backend().hooks.get(&hook.tenant, hook.id).await.unwrap().unwrap().state;
    assert_eq!(state.verification.status, VerificationStatus::Failed);
    assert_eq!(state.connection_state, ConnectionState::Authorized, "delivery does not wait on it");
}

/// A challenge put off does not hide the token endpoint's refusal of the credentials: the
/// hook reads `DEAUTHORIZED` with the refusal now, and stays `PENDING`, to be challenged
/// at its next check.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_refusal_is_a_finding_while_the_challenge_is_put_off() {
    let h = EmbeddedHarness::start().await;
    let (receiver, idp) = (Receiver::start().await, Receiver::start().await);
    let draft = serde_json::json!({
        "url": receiver.url("/hook"),
        "verification": {"required": true},
        "auth": {"type": "OAUTH_CLIENT_CREDENTIALS", "token_url": idp.url("/token"), "client_id": "c", "client_secret": "s"},
    });
    let hook = stored(&h, draft, true).await;
    let v = common::verifier_on(h.backend());
    receiver.always(Reply::body(503, "deploying"));
    idp.always(Reply::body(401, r#"{"error":"invalid_client"}"#));
    let asked = common::lifecycle(&hook, event_type::HOOK_VERIFICATION_REQUESTED, "m", 1);
    assert!(verifier::handle(&v, &[asked]).await.failed.is_empty());
    let state = h.backend().hooks.get(&hook.tenant, hook.id).await.unwrap().unwrap().state;
    assert_eq!(state.connection_state, ConnectionState::Deauthorized);
    assert!(state.connection_error.is_some_and(|e| e.contains("401")));
    assert_eq!((state.verification.status, state.verification.last_error), (VerificationStatus::Pending, None));
    assert_eq!(receiver.received().len(), 1, "the challenge was sent");
}
