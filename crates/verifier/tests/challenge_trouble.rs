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
    let name = format!("h{}", proven as u8);
    let draft = serde_json::json!({"name": name, "url": url, "verification": {"required": true}});
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

    for trouble in [Reply::body(503, "deploying"), Reply::body(429, "slow down")] {
        receiver.always(trouble);
        assert_eq!(verifier::handle(&v, &[asked(1)]).await.failed, ["m"], "it comes back");
        let state = stored().await;
        assert!(state.verification.proven(), "{:?}", state.verification);
        assert_eq!(state.connection_state, ConnectionState::Authorized);
    }
    assert_eq!(receiver.received().len(), 2, "each check was sent");

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
