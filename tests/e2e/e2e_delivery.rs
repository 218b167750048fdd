//! Publish → match → signed delivery → read back.

use std::time::Duration;

use hookbridge_core::secret::SigningSecret;
use hookbridge_core::signing::verify_standard;
use hookbridge_e2e::{ALL_SCOPES, Flavor, TestStack, eventually, on_both_backends};
use hookbridge_testkit::Receiver;
use serde_json::json;

const WAIT: Duration = Duration::from_secs(20);

on_both_backends! {
async fn published_event_arrives_signed_byte_for_byte_and_reads_back_succeeded(flavor: Flavor) {
    let stack = TestStack::start(flavor).await;
    let receiver = Receiver::start().await;
    let token = stack.token("acme", ALL_SCOPES);
    let hook = stack
        .create_hook(&token, &json!({"name": "siem", "url": receiver.url("/hooks"), "event_types": ["user.*"]}))
        .await;
    let hook_id = hook["id"].as_str().unwrap();
    let secret = SigningSecret::parse(hook["secret"].as_str().unwrap()).unwrap();

    // Exact bytes, so the producer's key order (not sorted) can be checked on arrival.
    let published = stack
        .post_raw(
            "/v1/events",
            &token,
            r#"{"detail-type": "user.session.start", "source": "idp.login", "site": "hq",
                "detail": {"user": "ada", "z": 1, "a": [1, 2]}}"#,
        )
        .await;
    assert_eq!(published.status, 202, "{}", published.body);
    let ids = [published.body["events"][0]["id"].as_str().unwrap().to_owned()];

    let got = receiver.wait_for(1, flavor.patience(WAIT)).await;
    assert_eq!(got.len(), 1, "one delivery");
    let req = &got[0];
    assert_eq!(req.method, "POST");
    assert_eq!(req.uri.path(), "/hooks");
    assert_eq!(req.header("content-type"), Some("application/json"));
    let body = std::str::from_utf8(&req.body).unwrap();
    // The envelope: all nine fields, the producer's detail in its own order, tenant and site added.
    let env = req.json();
    assert_eq!(env["id"], ids[0]);
    assert_eq!(env["version"], "0");
    assert_eq!(env["detail-type"], "user.session.start");
    assert_eq!(env["source"], "idp.login");
    for field in ["account", "time", "region", "resources"] {
        assert!(!env[field].is_null(), "{field} missing");
    }
    assert!(body.contains(r#""detail":{"tenant":"acme","site":"hq","user":"ada","z":1,"a":[1,2]}"#), "{body}");

    let msg_id = req.header("webhook-id").unwrap();
    let ts: i64 = req.header("webhook-timestamp").unwrap().parse().unwrap();
    let sig = req.header("webhook-signature").unwrap();
    let now = chrono::Utc::now().timestamp();
    assert_eq!(verify_standard(&secret, msg_id, ts, sig, &req.body, now), Ok(()));

    let delivery = eventually(flavor.patience(WAIT), || async {
        let list = stack.deliveries(&token, hook_id, 1).await;
        list.into_iter().find(|d| d["status"] == "SUCCEEDED")
    })
    .await
    .expect("the delivery reads back SUCCEEDED");
    assert_eq!(delivery["delivery_id"], msg_id);
    assert_eq!(delivery["event_id"], ids[0]);
    assert_eq!(delivery["event_type"], "user.session.start");
    stack.assert_attempted_once(&token, hook_id, &delivery).await;
    assert_eq!(delivery["last_status_code"], 200);

    let detail = stack.get(&format!("/v1/hooks/{hook_id}/deliveries/{msg_id}"), &token).await;
    assert_eq!(detail.status, 200);
    assert_eq!(detail.body["envelope"], env);
    assert_eq!(detail.body["attempt_log"][0]["status_code"], 200);
    stack.shutdown().await;
}
}

on_both_backends! {
async fn a_hook_whose_event_types_do_not_match_receives_nothing(flavor: Flavor) {
    let stack = TestStack::start(flavor).await;
    let matching = Receiver::start().await;
    let other = Receiver::start().await;
    let token = stack.token("acme", ALL_SCOPES);
    stack
        .create_hook(&token, &json!({"name": "admins", "url": matching.url("/"), "event_types": ["admin.CLIENT-*"]}))
        .await;
    let silent =
        stack.create_hook(&token, &json!({"name": "logins", "url": other.url("/"), "event_types": ["access.*"]})).await;
    stack.publish(&token, &json!([{"detail-type": "admin.CLIENT-CREATE", "source": "kc", "detail": {}}])).await;
    assert_eq!(matching.wait_for(1, flavor.patience(WAIT)).await.len(), 1);
    // Give a wrong delivery every chance to happen before asserting it did not.
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(other.received().is_empty(), "the non-matching hook received something");
    assert!(stack.deliveries(&token, silent["id"].as_str().unwrap(), 1).await.is_empty());
    stack.shutdown().await;
}
}

on_both_backends! {
async fn site_scoped_hooks_receive_only_their_sites(flavor: Flavor) {
    let stack = TestStack::start(flavor).await;
    let r = Receiver::start().await;
    let token = stack.token("acme", ALL_SCOPES);
    stack.create_hook(&token, &json!({"name": "hq-only", "url": r.url("/"), "sites": ["hq"]})).await;
    stack
        .publish(
            &token,
            &json!([
                {"detail-type": "user.login", "source": "idp", "site": "branch", "detail": {"n": 1}},
                {"detail-type": "user.login", "source": "idp", "detail": {"n": 2}},
                {"detail-type": "user.login", "source": "idp", "site": "hq", "detail": {"n": 3}}
            ]),
        )
        .await;
    let got = r.wait_for(1, flavor.patience(WAIT)).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let got = if got.len() == 1 { r.received() } else { got };
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].json()["detail"]["n"], 3);
    stack.shutdown().await;
}
}

on_both_backends! {
async fn a_delivery_waiting_to_be_retried_goes_only_where_the_hook_still_wants_it(flavor: Flavor) {
    // The move must land while the delivery waits for its retry: on the emulator, whose
    // calls can take seconds, with room for the reads and the PUT before it.
    let schedule = match flavor {
        Flavor::Embedded => "2s,2s,2s",
        Flavor::Aws => "30s,30s,30s",
    };
    let stack = TestStack::start_with(flavor, &[(hookbridge_core::settings::RETRY_SCHEDULE, schedule)]).await;
    let (before, after) = (Receiver::start().await, Receiver::start().await);
    before.always(hookbridge_testkit::Reply::status(503));
    let token = stack.token("acme", ALL_SCOPES);
    let h = stack.create_hook(&token, &json!({"name": "moves", "url": before.url("/"), "sites": ["hq"]})).await;
    let id = h["id"].as_str().unwrap().to_owned();
    stack.publish(&token, &json!({"detail-type": "user.login", "source": "idp", "site": "hq", "detail": {"n": 1}})).await;
    let retrying = eventually(flavor.patience(WAIT), || async {
        stack.deliveries(&token, &id, 1).await.into_iter().find(|d| d["status"] == "RETRYING")
    })
    .await
    .expect("the first attempt failed and waits for its retry");
    let did = retrying["delivery_id"].as_str().unwrap().to_owned();

    // The hook moves to another site, at another URL (another customer's, say): hq's
    // event waiting for its retry is not theirs to get.
    let mut doc = stack.get(&format!("/v1/hooks/{id}"), &token).await.body;
    doc["sites"] = json!(["branch"]);
    doc["url"] = json!(after.url("/"));
    assert_eq!(stack.put(&format!("/v1/hooks/{id}"), &token, &doc).await.status, 200);
    let cancelled = eventually(flavor.patience(WAIT), || async {
        let d = stack.get(&format!("/v1/hooks/{id}/deliveries/{did}"), &token).await.body;
        (d["status"] == "CANCELLED").then_some(d)
    })
    .await
    .expect("cancelled when it came due");
    assert_eq!(cancelled["reason"], hookbridge_core::delivery::NOT_SENT_NO_LONGER_WANTED, "{cancelled}");

    // The hook's own site's events still arrive, and only they.
    stack.publish(&token, &json!({"detail-type": "user.login", "source": "idp", "site": "branch", "detail": {"n": 2}})).await;
    let got = after.wait_for(1, flavor.patience(WAIT)).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let numbers: Vec<_> = after.received().iter().map(|g| g.json()["detail"]["n"].clone()).collect();
    assert_eq!(numbers, [json!(2)], "{got:?}");
    stack.shutdown().await;
}
}
