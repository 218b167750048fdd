//! A request whose caller goes away mid-way (a client's timeout) still finishes what it
//! started: a publish's idempotency claim is answered, so a repeat of the request gets
//! the first answer, not minutes of `409` and then a second publish; ExtremeCloud IQ's
//! subscriptions are all made, not some. A delete interrupted half way is finished by the
//! retry, or by a create it would refuse. And a request held up on its way is charged to
//! the tenant's rate when it gets there.

#![allow(clippy::unwrap_used)] // Tests fail loudly on purpose.

use std::time::Duration;

use axum::body::Body;
use axum::http::Request;
use common::{api_and_token, call};
use hookbridge_testkit::{EmbeddedHarness, Harness};
use http_body_util::BodyExt;
use subscription_api::router;
use tower::ServiceExt;

#[allow(dead_code)] // each test binary uses part of it
mod common;

fn publish(token: &str) -> Request<Body> {
    Request::post("/v1/events")
        .header("authorization", format!("Bearer {token}"))
        .header("content-type", "application/json")
        .header("idempotency-key", "the-one-publish")
        .body(Body::from(r#"{"detail-type":"user.login","source":"idp","detail":{"n":1}}"#))
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_publish_whose_caller_went_away_still_answers_its_claim() {
    let h = EmbeddedHarness::start().await;
    let (api, token) = api_and_token(&h, "events:publish");

    // The writer is busy for a moment, so the request waits inside its claim; the caller
    // gives up before it is answered.
    let busy = h.hold_the_writer(Duration::from_millis(800));
    tokio::time::sleep(Duration::from_millis(100)).await;
    let gone = tokio::time::timeout(Duration::from_millis(200), router(api.clone()).oneshot(publish(&token))).await;
    assert!(gone.is_err(), "the caller gave up first");
    busy.await.unwrap();

    // The repeat gets the first request's answer once it is in, not "in progress" until
    // the claim runs out.
    let mut answers = Vec::new();
    for _ in 0..50 {
        let resp = router(api.clone()).oneshot(publish(&token)).await.unwrap();
        let status = resp.status().as_u16();
        let replayed = resp.headers().get("idempotent-replayed").is_some();
        let body = resp.into_body().collect().await.unwrap().to_bytes();
        answers.push((status, replayed, String::from_utf8_lossy(&body).into_owned()));
        if status == 202 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let (status, replayed, body) = answers.last().unwrap();
    assert_eq!((*status, *replayed), (202, true), "after {} tries, the last: {body}", answers.len());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn xiq_subscriptions_whose_caller_went_away_are_all_made() {
    let h = EmbeddedHarness::start().await;
    let (api, token) = api_and_token(&h, "hooks:read hooks:write");
    let sub = |n: u32| serde_json::json!({"application": format!("app-{n}"), "url": "https://receiver.example/xiq", "message_type": "AUDIT_LOG_ALL"});
    let body = serde_json::json!([sub(1), sub(2)]).to_string();
    let busy = h.hold_the_writer(Duration::from_millis(800));
    tokio::time::sleep(Duration::from_millis(100)).await;
    let req = Request::post("/subscriptions/webhook")
        .header("authorization", format!("Bearer {token}"))
        .header("content-type", "application/json")
        .body(Body::from(body))
        .unwrap();
    let gone = tokio::time::timeout(Duration::from_millis(200), router(api.clone()).oneshot(req)).await;
    assert!(gone.is_err(), "the caller gave up first");
    busy.await.unwrap();
    let mut listed = 0;
    for _ in 0..50 {
        let (status, list) = call(&api, "GET", "/subscriptions/webhook", &token, "").await;
        assert_eq!(status, 200, "{list}");
        listed = list.as_array().map_or(0, Vec::len);
        if listed == 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(listed, 2, "all of them, not the first alone");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_xiq_delete_interrupted_half_way_is_finished_by_the_retry() {
    use hookbridge_core::hook::ConnectionState;
    let h = EmbeddedHarness::start().await;
    let (api, token) = api_and_token(&h, "hooks:read hooks:write");
    let body = r#"[{"application":"a","url":"https://receiver.example/xiq","message_type":"AUDIT_LOG_ALL"}]"#;
    let (status, made) = call(&api, "POST", "/subscriptions/webhook", &token, body).await;
    assert_eq!(status, 202, "{made}");
    let id = made[0]["id"].as_i64().unwrap();
    // The first delete marked the hook and failed before removing it.
    let tenant = "acme".parse().unwrap();
    let hooks = h.backend().hooks.list_all(&tenant).await.unwrap();
    let mut marked = hooks[0].clone();
    marked.state.connection_state = ConnectionState::Deleting;
    marked.revision += 1;
    h.backend().hooks.replace(&marked, hooks[0].revision).await.unwrap();

    let (status, answer) = call(&api, "DELETE", &format!("/subscriptions/webhook/{id}"), &token, "").await;
    assert_eq!(status, 202, "{answer}");
    assert!(h.backend().hooks.get(&tenant, marked.id).await.unwrap().is_none(), "the hook is gone");
}

/// A delete interrupted after marking its hook (`DELETING`) and not retried: the hook reads
/// as gone, and the console lists no delete to retry, yet it held its name and its place
/// in the quota. A create refused for either finishes such deletes and is made: it was
/// `409` (the name) or `422` (the quota) for good.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_interrupted_delete_holds_neither_the_name_nor_the_quota() {
    use hookbridge_core::hook::ConnectionState;
    let h = EmbeddedHarness::start().await;
    let api = common::api_with(subscription_api::ApiPorts::of(h.backend()), |s| s.quotas.max_hooks = 2);
    let token = common::token("hooks:read hooks:write");
    let tenant = "acme".parse().unwrap();
    let hook = |name: &str| format!(r#"{{"name":"{name}","url":"https://receiver.example/{name}"}}"#);
    let mark_deleting = |id: String| {
        let backend = h.backend().clone();
        let tenant = &tenant;
        async move {
            let stored = backend.hooks.get(tenant, id.parse().unwrap()).await.unwrap().unwrap();
            let mut marked = stored.clone();
            marked.state.connection_state = ConnectionState::Deleting;
            marked.revision += 1;
            backend.hooks.replace(&marked, stored.revision).await.unwrap();
        }
    };

    // The name: the marked hook is gone to the API, and its name is free.
    let (status, made) = call(&api, "POST", "/v1/hooks", &token, &hook("a")).await;
    assert_eq!(status, 201, "{made}");
    let first = made["id"].as_str().unwrap().to_owned();
    mark_deleting(first.clone()).await;
    assert_eq!(call(&api, "GET", &format!("/v1/hooks/{first}"), &token, "").await.0, 404);
    let (status, again) = call(&api, "POST", "/v1/hooks", &token, &hook("a")).await;
    assert_eq!(status, 201, "{again}");
    assert!(h.backend().hooks.get(&tenant, first.parse().unwrap()).await.unwrap().is_none(), "its delete finished");

    // The quota (two hooks): one of them marked, a third is made.
    let (status, made) = call(&api, "POST", "/v1/hooks", &token, &hook("b")).await;
    assert_eq!(status, 201, "{made}");
    mark_deleting(made["id"].as_str().unwrap().to_owned()).await;
    let (status, third) = call(&api, "POST", "/v1/hooks", &token, &hook("c")).await;
    assert_eq!(status, 201, "{third}");
    let (status, full) = call(&api, "POST", "/v1/hooks", &token, &hook("d")).await;
    assert_eq!(status, 422, "two live hooks are the quota: {full}");
}

/// A publish that waited on its way to the rate (its idempotency claim behind a busy
/// store) is charged at the time it gets there, not at its start: at one event a second
/// with no burst, one sent just after another and held up for over a second finds the
/// room the rate made meanwhile. Charged at its start, it was refused `429`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_publish_held_up_on_its_way_is_charged_when_it_gets_there() {
    let h = EmbeddedHarness::start().await;
    let api = common::api_with(subscription_api::ApiPorts::of(h.backend()), |s| {
        s.quotas.publish_rate = hookbridge_core::rate::Rate::per_second(1);
        s.quotas.publish_burst = 1;
    });
    let token = common::token("events:publish");
    let event = r#"{"detail-type":"user.login","source":"idp","detail":{"n":1}}"#;
    let (status, first) = call(&api, "POST", "/v1/events", &token, event).await;
    assert_eq!(status, 202, "{first}");

    let busy = h.hold_the_writer(Duration::from_millis(1_500));
    tokio::time::sleep(Duration::from_millis(100)).await;
    let resp = router(api.clone()).oneshot(publish(&token)).await.unwrap();
    let status = resp.status().as_u16();
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    busy.await.unwrap();
    assert_eq!(status, 202, "{}", String::from_utf8_lossy(&body));
}
