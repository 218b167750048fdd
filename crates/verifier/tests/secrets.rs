//! An OAuth hook whose secrets the key service will not open this time is checked again
//! later: that says nothing about its token endpoint, so it is no finding, and the hook
//! reads as it did meanwhile.

#![allow(clippy::unwrap_used)] // Tests fail loudly on purpose.

mod common;

use chrono::Utc;
use hookbridge_core::hook::ConnectionState;
use hookbridge_core::ids::HookId;
use hookbridge_core::ports::{Receipt, ReceivedMessage};
use hookbridge_testkit::contract::make_hook_from;
use hookbridge_testkit::{AwsHarness, Harness, Receiver, Reply};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn secrets_that_cannot_be_opened_now_are_retried_not_taken_for_a_refusal() {
    let h = AwsHarness::start().await;
    let idp = Receiver::start().await;
    idp.always(Reply::body(200, r#"{"access_token":"t","expires_in":60}"#));
    let draft = serde_json::json!({
        "name": "locked",
        "url": "https://receiver.example/hook",
        "auth": {"type": "OAUTH_CLIENT_CREDENTIALS", "token_url": idp.url("/token"), "client_id": "c", "client_secret": "s"},
    });
    let (mut hook, _) = make_hook_from(&h, "acme", HookId::generate(), draft).await;
    // The sealed blob is [format, data key's length (2 bytes), the data key as KMS
    // encrypted it, ...]; the emulator's encrypted key starts with its key's id. Another id
    // names no key: Decrypt is refused, as when a key is disabled or access revoked.
    hook.sealed.0[3] = b'z';
    hook.state.connection_state = ConnectionState::Authorized;
    h.backend().hooks.create(&hook, 1000).await.unwrap();
    let v = common::verifier_on(h.backend());
    let body = format!(
        r#"{{"version":"0","id":"9b1c2d3e-0000-4000-8000-0000000000e1","detail-type":"hook.created","source":"hookbridge","account":"123456789012","time":"{}","region":"us-east-1","resources":[],"detail":{{"tenant":"acme","hook_id":"{}","hook_version":1}}}}"#,
        Utc::now().format("%Y-%m-%dT%H:%M:%SZ"),
        hook.id
    );
    let m =
        ReceivedMessage { id: "m1".into(), body, receipt: Receipt("r1".into()), receive_count: 1, sent_at: Utc::now() };
    assert_eq!(verifier::handle(&v, &[m]).await.failed, ["m1"], "the message comes back to be checked again");
    let stored = h.backend().hooks.get(&hook.tenant, hook.id).await.unwrap().unwrap();
    assert_eq!(stored.state.connection_state, ConnectionState::Authorized, "as it was: nothing was found");
    assert_eq!(stored.state.connection_error, None);
    assert!(idp.received().is_empty(), "no token was asked for without the secret");
}
