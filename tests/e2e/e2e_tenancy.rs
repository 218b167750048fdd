//! Tenants never see or receive each other's data.

use std::time::Duration;

use hookbridge_e2e::{ALL_SCOPES, TestStack, on_both_backends};
use hookbridge_testkit::Receiver;
use serde_json::json;

on_both_backends! {
async fn another_tenants_hook_receives_nothing_and_reads_as_404(flavor: Flavor) {
    let stack = TestStack::start(flavor).await;
    let mine = Receiver::start().await;
    let theirs = Receiver::start().await;
    let a = stack.token("tenant-a", ALL_SCOPES);
    let b = stack.token("tenant-b", ALL_SCOPES);
    stack.create_hook(&a, &json!({"name": "a-hook", "url": mine.url("/")})).await;
    let b_hook = stack.create_hook(&b, &json!({"name": "b-hook", "url": theirs.url("/")})).await;
    let b_id = b_hook["id"].as_str().unwrap();

    stack.publish(&a, &json!({"detail-type": "user.login", "source": "idp", "detail": {}})).await;
    assert_eq!(mine.wait_for(1, flavor.patience(Duration::from_secs(20))).await.len(), 1);
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert!(theirs.received().is_empty(), "tenant B received tenant A's event");

    for path in [format!("/v1/hooks/{b_id}"), format!("/v1/hooks/{b_id}/events?hours=1")] {
        let r = stack.get(&path, &a).await;
        assert_eq!(r.status, 404, "{path}: {}", r.body);
        assert_eq!(r.headers["content-type"], "application/problem+json");
    }
    let listed = stack.get("/v1/hooks", &a).await;
    assert_eq!(listed.body["hooks"].as_array().unwrap().len(), 1);
    assert_eq!(listed.body["hooks"][0]["name"], "a-hook");

    // A publish claiming another tenant in detail is refused.
    let forged = stack
        .post("/v1/events", &a, &json!({"detail-type": "x", "source": "idp", "detail": {"tenant": "tenant-b"}}))
        .await;
    assert_eq!(forged.status, 400);
    assert_eq!(forged.body["errors"][0]["field"], "detail.tenant");
    stack.shutdown().await;
}
}

on_both_backends! {
async fn every_call_with_one_tenants_token_on_anothers_hook_is_404(flavor: Flavor) {
    every_call_on_anothers_hook_is_404(TestStack::start(flavor).await).await;
}
}

on_both_backends! {
async fn every_call_with_one_tenants_oidc_token_on_anothers_hook_is_404(flavor: Flavor) {
    every_call_on_anothers_hook_is_404(TestStack::start_oidc(flavor).await).await;
}
}

/// Tenant A's and tenant B's tokens, and B's hook with one delivery sent and recorded.
struct Two {
    a: String,
    b: String,
    id: String,
    delivery: serde_json::Value,
}

/// Two tenants; B's hook sends to `theirs`, and has delivered one event.
async fn two_tenants(stack: &TestStack, theirs: &Receiver) -> Two {
    let a = stack.token("tenant-a", ALL_SCOPES);
    let b = stack.token("tenant-b", ALL_SCOPES);
    let b_hook = stack.create_hook(&b, &json!({"name": "b-hook", "url": theirs.url("/")})).await;
    let id = b_hook["id"].as_str().unwrap().to_owned();
    stack.publish(&b, &json!({"detail-type": "user.login", "source": "idp", "detail": {}})).await;
    let delivery = hookbridge_e2e::eventually(stack.flavor().patience(Duration::from_secs(20)), || async {
        stack.deliveries(&b, &id, 1).await.into_iter().find(|d| d["status"] == "SUCCEEDED")
    })
    .await
    .expect("B's delivery");
    Two { a, b, id, delivery }
}

/// Each of `calls` made with `token` is 404.
async fn each_is_404(stack: &TestStack, token: &str, calls: &[(&str, String, Option<&serde_json::Value>)]) {
    for (method, path, body) in calls {
        let r = stack.call(method, path, Some(token), *body).await;
        assert_eq!(r.status, 404, "{method} {path} with another tenant's token: {}", r.body);
    }
}

/// The matrix: every call on tenant B's hook with tenant A's token (of the stack's kind).
async fn every_call_on_anothers_hook_is_404(stack: TestStack) {
    let theirs = Receiver::start().await;
    let Two { a, b, id, delivery } = two_tenants(&stack, &theirs).await;
    let (id, did) = (id.as_str(), delivery["delivery_id"].as_str().unwrap());

    let hook_doc = json!({"url": "https://evil.example/"});
    let replay = json!({"since": (chrono::Utc::now() - chrono::Duration::hours(1)).to_rfc3339()});
    // B's own replay job, for the calls that name a job.
    let job = stack.call("POST", &format!("/v1/hooks/{id}/replay"), Some(&b), Some(&replay)).await;
    assert_eq!(job.status, 202, "{}", job.body);
    let rid = job.body["id"].as_str().unwrap().to_owned();
    let calls: Vec<(&str, String, Option<&serde_json::Value>)> = vec![
        ("GET", format!("/v1/hooks/{id}"), None),
        ("PUT", format!("/v1/hooks/{id}"), Some(&hook_doc)),
        ("DELETE", format!("/v1/hooks/{id}"), None),
        ("POST", format!("/v1/hooks/{id}/verify"), None),
        ("POST", format!("/v1/hooks/{id}/secret/rotate"), None),
        ("POST", format!("/v1/hooks/{id}/test"), None),
        ("GET", format!("/v1/hooks/{id}/events?hours=24"), None),
        ("GET", format!("/v1/hooks/{id}/deliveries/{did}"), None),
        ("POST", format!("/v1/hooks/{id}/deliveries/{did}/retry"), None),
        ("POST", format!("/v1/hooks/{id}/replay"), Some(&replay)),
        ("GET", format!("/v1/hooks/{id}/replays/{rid}"), None),
        ("POST", format!("/v1/hooks/{id}/replays/{rid}/cancel"), None),
    ];
    // The reads among them answer B: a 404 below is about the caller, not the call.
    for (_, path, _) in calls.iter().filter(|(method, _, _)| *method == "GET") {
        let own = stack.get(path, &b).await;
        assert_eq!(own.status, 200, "{path}: {}", own.body);
    }
    each_is_404(&stack, &a, &calls).await;
    // B's hook is untouched and received nothing more.
    let still = stack.get(&format!("/v1/hooks/{id}"), &b).await;
    assert_eq!(still.status, 200);
    assert_eq!(still.body["version"], 1);
    assert_eq!(still.body["url"], theirs.url("/"));
    stack.publish(&a, &json!({"detail-type": "user.login", "source": "idp", "detail": {}})).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(theirs.received().len(), 1, "tenant A's calls and events reached tenant B's hook");
    stack.shutdown().await;
}

on_both_backends! {
/// The seeds' own routes (Keycloak Phase Two's and ExtremeCloud IQ's) reach no other
/// tenant's hook either: with tenant A's token, under A's realm or B's, every call on B's
/// hook, its sends and its subscription is 404, and B's hook stays as it was.
async fn the_seed_routes_reach_no_other_tenants_hook(flavor: Flavor) {
    let stack = TestStack::start(flavor).await;
    let theirs = Receiver::start().await;
    let Two { a, b, id, delivery } = two_tenants(&stack, &theirs).await;
    let (id, did) = (id.as_str(), delivery["delivery_id"].as_str().unwrap());
    let sent = theirs.received().len();
    let subscription = json!([{"application": "b-app", "url": "https://b.example/hook", "secret": "00000000",
                               "message_type": "AUDIT_LOG_ALL"}]);
    let made = stack.call("POST", "/subscriptions/webhook", Some(&b), Some(&subscription)).await;
    assert_eq!(made.status, 202, "{}", made.body);
    let sid = made.body[0]["id"].as_i64().unwrap();

    let keycloak_doc = json!({"url": "https://evil.example/", "enabled": true, "eventTypes": ["*"]});
    for realm in ["/realms/tenant-a", "/auth/realms/tenant-b"] {
        let calls: Vec<(&str, String, Option<&serde_json::Value>)> = vec![
            ("GET", format!("{realm}/webhooks/{id}"), None),
            ("PUT", format!("{realm}/webhooks/{id}"), Some(&keycloak_doc)),
            ("DELETE", format!("{realm}/webhooks/{id}"), None),
            ("GET", format!("{realm}/webhooks/{id}/sends"), None),
            ("GET", format!("{realm}/webhooks/{id}/sends/{did}"), None),
            ("POST", format!("{realm}/webhooks/{id}/sends/{did}/resend"), None),
        ];
        each_is_404(&stack, &a, &calls).await;
    }
    for path in ["/realms/tenant-b/webhooks", "/realms/tenant-b/webhooks/count"] {
        assert_eq!(stack.get(path, &a).await.status, 404, "{path}");
    }
    let own_realm = stack.get("/realms/tenant-a/webhooks", &a).await;
    assert_eq!(own_realm.body, json!([]), "A's realm lists none of B's hooks");
    let r = stack.call("DELETE", &format!("/subscriptions/webhook/{sid}"), Some(&a), None).await;
    assert_eq!(r.status, 404, "{}", r.body);
    assert_eq!(stack.get("/subscriptions/webhook", &a).await.body, json!([]), "A lists none of B's subscriptions");

    let still = stack.get(&format!("/v1/hooks/{id}"), &b).await;
    assert_eq!((still.status.as_u16(), &still.body["version"], &still.body["url"]), (200, &json!(1), &json!(theirs.url("/"))));
    let listed = stack.get("/subscriptions/webhook", &b).await.body;
    assert!(listed.as_array().unwrap().iter().any(|s| s["id"] == sid), "B's subscription is kept: {listed}");
    let deliveries = stack.deliveries(&b, id, 10).await;
    assert_eq!(deliveries.len(), 1, "no delivery added: {deliveries:?}");
    // Nor sent again: no attempt added, nothing more at B's receiver.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let now = stack.get(&format!("/v1/hooks/{id}/deliveries/{did}"), &b).await.body;
    assert_eq!(now["attempts"], delivery["attempts"], "{now}");
    assert_eq!(theirs.received().len(), sent, "B's receiver got nothing more");
    stack.shutdown().await;
}
}
