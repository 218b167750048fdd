//! The verifier: ownership challenges and OAuth authorization, seen through the API in
//! HYPR's state names.

use std::time::Duration;

use hookbridge_core::settings;
use hookbridge_e2e::{ALL_SCOPES, Flavor, TestStack, eventually, on_both_backends};
use hookbridge_testkit::{Receiver, Reply};
use serde_json::{Value, json};

const WAIT: Duration = Duration::from_secs(30);
const HYPR_CONNECTION_STATES: [&str; 7] =
    ["CREATING", "AUTHORIZING", "AUTHORIZED", "DEAUTHORIZED", "UPDATING", "DEAUTHORIZING", "DELETING"];

/// Polls the hook until `done`, checking every state seen is one of HYPR's names.
async fn watch(stack: &TestStack, t: &str, id: &str, done: impl Fn(&Value) -> bool) -> (Value, Vec<String>) {
    let mut seen: Vec<String> = Vec::new();
    let deadline = tokio::time::Instant::now() + stack.flavor().patience(WAIT);
    loop {
        let h = stack.get(&format!("/v1/hooks/{id}"), t).await.body;
        let state = h["connection_state"].as_str().unwrap_or("?").to_owned();
        assert!(HYPR_CONNECTION_STATES.contains(&state.as_str()), "{state} is not a HYPR connection state");
        assert!(["ACTIVE", "INACTIVE"].contains(&h["destination_state"].as_str().unwrap_or("?")));
        if seen.last() != Some(&state) {
            seen.push(state);
        }
        if done(&h) {
            return (h, seen);
        }
        assert!(tokio::time::Instant::now() < deadline, "the hook never reached the expected state: {h}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// How long a token endpoint holds a check while the test changes the hook under it: the
/// change must land within it, and the emulator's calls can take seconds (under the 9 s a
/// token fetch is given).
fn token_hold(flavor: Flavor) -> Duration {
    match flavor {
        Flavor::Embedded => Duration::from_secs(2),
        Flavor::Aws => Duration::from_secs(8),
    }
}

async fn required_hook(stack: &TestStack, t: &str, name: &str, url: &str) -> Value {
    let h = stack.create_hook(t, &json!({"name": name, "url": url, "verification": {"required": true}})).await;
    assert_eq!(h["verification"]["status"], "PENDING");
    assert_eq!(h["connection_state"], "CREATING");
    h
}

on_both_backends! {
async fn an_endpoint_answering_the_challenge_is_verified_and_receives_events(flavor: Flavor) {
    let stack = TestStack::start(flavor).await;
    let watch_bus = stack.watch_bus("hookbridge").await;
    let r = Receiver::start().await;
    r.script([Reply::EchoChallenge { header: "x-okta-verification-challenge".into() }]);
    let t = stack.token("acme", ALL_SCOPES);
    let h = stack
        .create_hook(&t, &json!({"name": "okta-style", "url": r.url("/hook"),
            "verification": {"required": true, "header": "X-Okta-Verification-Challenge"}}))
        .await;
    let id = h["id"].as_str().unwrap();
    let (hook, seen) = watch(&stack, &t, id, |h| h["verification"]["status"] == "VERIFIED").await;
    assert_eq!(hook["connection_state"], "AUTHORIZED");
    assert_eq!(seen.last().map(String::as_str), Some("AUTHORIZED"), "{seen:?}");
    let challenge = &r.received()[0];
    assert_eq!(challenge.method, "GET");
    assert!(challenge.header("x-okta-verification-challenge").is_some());
    stack.publish(&t, &json!({"detail-type": "user.login", "source": "idp", "detail": {}})).await;
    let got = r.wait_for(2, flavor.patience(WAIT)).await;
    assert_eq!(got[1].method, "POST");
    let events = stack.bus_events(watch_bus.as_ref(), &["hook.verified", "hook.authorized"], WAIT).await;
    assert!(events.iter().any(|e| e["detail-type"] == "hook.verified" && e["detail"]["hook_id"] == id));
    stack.shutdown().await;
}
}

on_both_backends! {
/// UniFi's auth header "secures the communication channel": a receiver may refuse every
/// request without it, the challenge too. The challenge carries the hook's credential and
/// its own headers, as deliveries do, and an answer with keys of the receiver's own beside
/// the value passes (UniFi asks only for "a JSON object named verification").
async fn the_challenge_carries_the_hooks_credential_and_its_answer_may_say_more(flavor: Flavor) {
    let stack = TestStack::start(flavor).await;
    let r = Receiver::start().await;
    r.always(Reply::GuardedChallenge {
        header: "x-uid-challenge".into(),
        credential: ("x-unifi-auth".into(), "channel-secret".into()),
    });
    let t = stack.token("acme", ALL_SCOPES);
    let h = stack
        .create_hook(&t, &json!({"name": "unifi", "url": r.url("/hook"), "verification": {"required": true},
            "auth": {"type": "HEADER", "name": "X-Unifi-Auth", "value": "channel-secret"},
            "headers": [{"name": "X-Context", "value": "lab"}, {"name": "X-Key", "value": "k-1", "secret": true}]}))
        .await;
    let id = h["id"].as_str().unwrap();
    let (hook, _) = watch(&stack, &t, id, |h| h["verification"]["status"] != "PENDING").await;
    assert_eq!((&hook["verification"]["status"], &hook["connection_state"]), (&json!("VERIFIED"), &json!("AUTHORIZED")), "{hook}");
    let challenge = &r.received()[0];
    assert_eq!(challenge.method, "GET");
    assert_eq!((challenge.header("x-context"), challenge.header("x-key")), (Some("lab"), Some("k-1")));
    stack.shutdown().await;
}
}

on_both_backends! {
async fn wrong_answers_fail_verification_with_the_reason_and_nothing_is_delivered(flavor: Flavor) {
    // A timeout long enough that no quick answer is taken for a slow one on a busy machine.
    let stack = TestStack::start_with(flavor, &[(settings::REQUEST_TIMEOUT, "3s")]).await;
    let watch_bus = stack.watch_bus("hookbridge").await;
    let t = stack.token("acme", ALL_SCOPES);
    let cases = [
        ("wrong-value", Reply::body(200, r#"{"verification":"not-the-value"}"#), "wrong answer"),
        ("html", Reply::body(200, "<html><body>hello</body></html>").with_header("content-type", "text/html"), "not JSON"),
        ("server-error", Reply::status(500), "status 500"),
        ("too-slow", Reply::status(200).after(Duration::from_secs(30)), "timeout"),
    ];
    let mut receivers = Vec::new();
    for (name, reply, reason) in cases {
        let r = Receiver::start().await;
        r.always(reply);
        let h = required_hook(&stack, &t, name, &r.url("/")).await;
        receivers.push((r, h["id"].as_str().unwrap().to_owned(), reason));
    }
    for (_, id, reason) in &receivers {
        let (hook, _) = watch(&stack, &t, id, |h| h["verification"]["status"] == "FAILED").await;
        let why = hook["verification"]["last_error"].as_str().unwrap();
        assert!(why.contains(reason), "{id}: {why:?} should say {reason:?}");
        assert_eq!(hook["connection_state"], "DEAUTHORIZED");
    }
    stack.publish(&t, &json!({"detail-type": "user.login", "source": "idp", "detail": {}})).await;
    for (r, id, _) in &receivers {
        let cancelled = eventually(flavor.patience(WAIT), || async {
            stack.deliveries(&t, id, 1).await.into_iter().find(|d| d["status"] == "CANCELLED")
        })
        .await
        .expect("the event is recorded as cancelled");
        assert_eq!(cancelled["reason"], "hook not verified");
        assert!(r.received().iter().all(|g| g.method == "GET"), "an unverified hook received an event");
    }
    let events = stack.bus_events(watch_bus.as_ref(), &["hook.verification.failed", "hook.deauthorized"], WAIT).await;
    assert!(events.iter().any(|e| e["detail-type"] == "hook.verification.failed" && e["detail"]["reason"].is_string()));
    stack.shutdown().await;
}
}

on_both_backends! {
async fn a_new_url_sends_the_hook_back_to_pending_and_re_verifies(flavor: Flavor) {
    let stack = TestStack::start(flavor).await;
    let first = Receiver::start().await;
    first.always(Reply::EchoChallenge { header: "x-uid-challenge".into() });
    let second = Receiver::start().await;
    second.always(Reply::EchoChallenge { header: "x-uid-challenge".into() });
    let t = stack.token("acme", ALL_SCOPES);
    let h = required_hook(&stack, &t, "moving", &first.url("/")).await;
    let id = h["id"].as_str().unwrap();
    watch(&stack, &t, id, |h| h["verification"]["status"] == "VERIFIED").await;
    let moved = stack.put(&format!("/v1/hooks/{id}"), &t, &json!({"url": second.url("/"), "verification": {"required": true}})).await;
    assert_eq!(moved.status, 200);
    assert_eq!(moved.body["verification"]["status"], "PENDING");
    assert_eq!(moved.body["connection_state"], "UPDATING");
    let (hook, _) = watch(&stack, &t, id, |h| h["verification"]["status"] == "VERIFIED" && h["connection_state"] == "AUTHORIZED").await;
    assert_eq!(hook["url"], second.url("/"));
    assert_eq!(second.received().len(), 1, "the new URL was challenged");
    stack.shutdown().await;
}
}

on_both_backends! {
async fn a_check_asked_for_after_a_failed_one_does_not_restart_deliveries(flavor: Flavor) {
    // Long enough that the third check is still running when the event is judged.
    let stack = TestStack::start_with(flavor, &[(settings::REQUEST_TIMEOUT, "10s")]).await;
    let r = Receiver::start().await;
    r.script([
        Reply::EchoChallenge { header: "x-uid-challenge".into() },
        Reply::body(200, r#"{"verification":"not-the-value"}"#),
    ]);
    r.always(Reply::status(200).after(Duration::from_secs(30)));
    let t = stack.token("acme", ALL_SCOPES);
    let h = required_hook(&stack, &t, "lapsed", &r.url("/")).await;
    let id = h["id"].as_str().unwrap();
    watch(&stack, &t, id, |h| h["verification"]["status"] == "VERIFIED").await;
    let verify = format!("/v1/hooks/{id}/verify");
    assert_eq!(stack.post(&verify, &t, &json!({})).await.status, 202);
    watch(&stack, &t, id, |h| h["verification"]["status"] == "FAILED").await;
    let again = stack.post(&verify, &t, &json!({})).await;
    assert_eq!(again.status, 202);
    assert_eq!(again.body["status"], "PENDING");
    assert!(again.body["last_error"].as_str().unwrap().contains("wrong answer"), "{}", again.body);
    stack.publish(&t, &json!({"detail-type": "user.login", "source": "idp", "detail": {}})).await;
    let cancelled = eventually(flavor.patience(WAIT), || async {
        stack.deliveries(&t, id, 1).await.into_iter().find(|d| d["status"] == "CANCELLED")
    })
    .await
    .expect("the event is recorded as cancelled");
    assert_eq!(cancelled["reason"], "hook not verified");
    assert!(r.received().iter().all(|g| g.method == "GET"), "a hook whose last check failed received an event");
    stack.shutdown().await;
}
}

on_both_backends! {
async fn a_check_overtaken_by_a_change_of_the_hook_tells_nothing(flavor: Flavor) {
    let stack = TestStack::start(flavor).await;
    let watch_bus = stack.watch_bus("hookbridge").await;
    // The first check's token endpoint answers after a while; the hook is moved to another
    // one, which refuses at once, while it waits.
    let hold = token_hold(flavor);
    let slow_idp = Receiver::start().await;
    slow_idp.always(Reply::body(200, r#"{"access_token":"t","expires_in":60}"#).after(hold));
    let refusing_idp = Receiver::start().await;
    refusing_idp.always(Reply::body(401, r#"{"error":"invalid_client"}"#));
    let r = Receiver::start().await;
    let t = stack.token("acme", ALL_SCOPES);
    let oauth = |idp: &Receiver| json!({"type": "OAUTH_CLIENT_CREDENTIALS", "token_url": idp.url("/token"), "client_id": "c", "client_secret": "s"});
    let h = stack.create_hook(&t, &json!({"name": "moved", "url": r.url("/"), "auth": oauth(&slow_idp)})).await;
    let id = h["id"].as_str().unwrap();
    assert_eq!(slow_idp.wait_for(1, flavor.patience(WAIT)).await.len(), 1, "the first check began");
    let moved = stack.put(&format!("/v1/hooks/{id}"), &t, &json!({"name": "moved", "url": r.url("/"), "auth": oauth(&refusing_idp)})).await;
    assert_eq!(moved.status, 200, "{}", moved.body);
    watch(&stack, &t, id, |h| h["connection_state"] == "DEAUTHORIZED").await;
    // The change's finding told, and then long enough for the first check to end and tell
    // what it found, if it did.
    let mut events = stack.bus_events(watch_bus.as_ref(), &["hook.deauthorized"], flavor.patience(WAIT)).await;
    events.extend(stack.bus_events(watch_bus.as_ref(), &["hook.authorized"], hold + Duration::from_secs(4)).await);
    let mine: Vec<&Value> = events.iter().filter(|e| e["detail"]["hook_id"] == id).collect();
    assert!(mine.iter().any(|e| e["detail-type"] == "hook.deauthorized"), "{mine:?}");
    assert!(!mine.iter().any(|e| e["detail-type"] == "hook.authorized"), "the overtaken check told its finding: {mine:?}");
    let now = stack.get(&format!("/v1/hooks/{id}"), &t).await.body;
    assert_eq!(now["connection_state"], "DEAUTHORIZED");
    stack.shutdown().await;
}
}

on_both_backends! {
async fn a_check_made_with_secrets_replaced_meanwhile_is_made_again_with_the_new_ones(flavor: Flavor) {
    let stack = TestStack::start(flavor).await;
    // The token endpoint refuses the first fetch, after a while, and the hook's secrets are
    // replaced while it waits (a rotation: it brings no check of its own); every later
    // fetch succeeds. What the first fetch found says nothing of the secrets now stored.
    let hold = token_hold(flavor);
    let idp = Receiver::start().await;
    idp.script([Reply::body(401, r#"{"error":"invalid_client"}"#).after(hold)]);
    idp.always(Reply::body(200, r#"{"access_token":"t","expires_in":60}"#));
    let r = Receiver::start().await;
    let t = stack.token("acme", ALL_SCOPES);
    let auth = json!({"type": "OAUTH_CLIENT_CREDENTIALS", "token_url": idp.url("/token"), "client_id": "c", "client_secret": "s"});
    let h = stack.create_hook(&t, &json!({"name": "renewed", "url": r.url("/"), "auth": auth})).await;
    let id = h["id"].as_str().unwrap();
    idp.wait_for(1, flavor.patience(WAIT)).await;
    let rotated = stack.post(&format!("/v1/hooks/{id}/secret/rotate"), &t, &json!({})).await;
    assert_eq!(rotated.status, 200, "{}", rotated.body);
    assert_eq!(idp.wait_for(2, flavor.patience(WAIT)).await.len(), 2, "the check was made again");
    let (hook, _) = watch(&stack, &t, id, |h| h["connection_state"] == "AUTHORIZED").await;
    assert!(hook["connection_error"].is_null(), "{hook}");
    stack.shutdown().await;
}
}

on_both_backends! {
async fn a_blocked_address_fails_the_challenge(flavor: Flavor) {
    let stack = TestStack::start_with(flavor, &[(settings::ALLOWED_NETWORKS, "")]).await;
    let r = Receiver::start().await;
    r.always(Reply::EchoChallenge { header: "x-uid-challenge".into() });
    let t = stack.token("acme", ALL_SCOPES);
    let h = required_hook(&stack, &t, "sneaky", &format!("http://localhost:{}/", r.addr().port())).await;
    let (hook, _) = watch(&stack, &t, h["id"].as_str().unwrap(), |h| h["verification"]["status"] == "FAILED").await;
    assert!(hook["verification"]["last_error"].as_str().unwrap().contains("ssrf_blocked"), "{hook}");
    assert!(r.received().is_empty());
    stack.shutdown().await;
}
}

on_both_backends! {
async fn oauth_credentials_are_authorized_or_deauthorized_with_the_token_endpoints_answer(flavor: Flavor) {
    let stack = TestStack::start(flavor).await;
    let watch_bus = stack.watch_bus("hookbridge").await;
    let good_idp = Receiver::start().await;
    good_idp.always(Reply::body(200, r#"{"access_token":"t","expires_in":60}"#));
    let bad_idp = Receiver::start().await;
    bad_idp.always(Reply::body(401, r#"{"error":"invalid_client"}"#));
    let r = Receiver::start().await;
    let t = stack.token("acme", ALL_SCOPES);
    let oauth = |idp: &Receiver| json!({"type": "OAUTH_CLIENT_CREDENTIALS", "token_url": idp.url("/token"), "client_id": "c", "client_secret": "s"});
    let good = stack.create_hook(&t, &json!({"name": "good", "url": r.url("/"), "auth": oauth(&good_idp)})).await;
    let bad = stack.create_hook(&t, &json!({"name": "bad", "url": r.url("/"), "auth": oauth(&bad_idp)})).await;
    let (g, _) = watch(&stack, &t, good["id"].as_str().unwrap(), |h| h["connection_state"] == "AUTHORIZED").await;
    assert!(g["connection_error"].is_null());
    let (b, _) = watch(&stack, &t, bad["id"].as_str().unwrap(), |h| h["connection_state"] == "DEAUTHORIZED").await;
    let why = b["connection_error"].as_str().unwrap();
    assert!(why.contains("401") && why.contains("invalid_client"), "{why}");
    let events = stack.bus_events(watch_bus.as_ref(), &["hook.authorized", "hook.deauthorized"], flavor.patience(WAIT)).await;
    assert!(events.iter().any(|e| e["detail-type"] == "hook.deauthorized" && e["detail"]["hook_id"] == bad["id"]));
    assert!(events.iter().any(|e| e["detail-type"] == "hook.authorized" && e["detail"]["hook_id"] == good["id"]));
    stack.shutdown().await;
}
}

on_both_backends! {
async fn a_challenge_is_not_made_again_for_a_secret_it_never_read(flavor: Flavor) {
    let stack = TestStack::start(flavor).await;
    // The challenge is the URL and its header: the signing secret rotated while the
    // endpoint answers it (after 1 s) changes nothing it found. It was made again, up to
    // three times, and then left the hook PENDING with no check to come.
    let r = Receiver::start().await;
    r.always(Reply::EchoChallenge { header: "x-uid-challenge".into() }.after(Duration::from_secs(1)));
    let t = stack.token("acme", ALL_SCOPES);
    let h = required_hook(&stack, &t, "rotated", &r.url("/")).await;
    let id = h["id"].as_str().unwrap();
    r.wait_for(1, flavor.patience(WAIT)).await;
    let rotated = stack.post(&format!("/v1/hooks/{id}/secret/rotate"), &t, &json!({})).await;
    assert_eq!(rotated.status, 200, "{}", rotated.body);
    watch(&stack, &t, id, |h| h["verification"]["status"] == "VERIFIED").await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(r.received().len(), 1, "one challenge");
    stack.shutdown().await;
}
}

on_both_backends! {
async fn a_check_asked_for_is_made_even_when_the_hook_changes_meanwhile(flavor: Flavor) {
    let stack = TestStack::start(flavor).await;
    // A hook that does not require verification, checked on request (`POST /verify`); its
    // description changes while the endpoint answers the challenge (after 2 s). The check
    // was dropped as overtaken, and the change's own check runs no challenge: the status
    // stayed UNVERIFIED though the endpoint had answered.
    let r = Receiver::start().await;
    r.always(Reply::EchoChallenge { header: "x-uid-challenge".into() }.after(Duration::from_secs(2)));
    let t = stack.token("acme", ALL_SCOPES);
    let h = stack.create_hook(&t, &json!({"name": "asked", "url": r.url("/")})).await;
    let id = h["id"].as_str().unwrap();
    watch(&stack, &t, id, |h| h["connection_state"] == "AUTHORIZED").await;
    assert_eq!(stack.post(&format!("/v1/hooks/{id}/verify"), &t, &json!({})).await.status, 202);
    r.wait_for(1, flavor.patience(WAIT)).await;
    let changed = stack
        .put(&format!("/v1/hooks/{id}"), &t, &json!({"name": "asked", "url": r.url("/"), "description": "changed"}))
        .await;
    assert_eq!(changed.status, 200, "{}", changed.body);
    watch(&stack, &t, id, |h| h["verification"]["status"] == "VERIFIED").await;
    stack.shutdown().await;
}
}
