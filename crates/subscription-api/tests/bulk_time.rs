//! A bulk create makes its hooks one after another. When the store is slow (AWS calls that
//! take seconds), a hundred of them outlasted the API function: Lambda ended the request,
//! the caller got the gateway's own error, and the signing secrets of the hooks made were
//! never shown. Past its time the rest are answered `503`, not attempted.

#![allow(clippy::unwrap_used)] // Tests fail loudly on purpose.

use std::time::Duration;

use common::{api_and_token, call};
use hookbridge_testkit::EmbeddedHarness;
use serde_json::json;

#[allow(dead_code)] // each test binary uses part of it
mod common;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bulk_create_slower_than_its_time_answers_what_it_made_and_leaves_the_rest() {
    let h = EmbeddedHarness::start().await;
    let (api, token) = api_and_token(&h, "hooks:read hooks:write");
    let hook = |n: u32| json!({"name": format!("h-{n}"), "url": format!("https://receiver.example/{n}")});
    let malformed = json!({"name": "h-bad", "url": "https://receiver.example/bad", "rate_limit": [5]});
    let body = json!([hook(1), hook(2), malformed, hook(3)]).to_string();

    // The first hook's write waits behind the writer for longer than the request's time.
    let busy = h.hold_the_writer(subscription_api::BULK_BEGUN_WITHIN + Duration::from_secs(2));
    tokio::time::sleep(Duration::from_millis(100)).await;
    let (status, answer) = call(&api, "POST", "/v1/hooks", &token, &body).await;
    busy.await.unwrap();
    assert_eq!(status, 200, "{answer}");
    let results = answer["results"].as_array().unwrap();
    let statuses: Vec<u64> = results.iter().map(|r| r["status"].as_u64().unwrap()).collect();
    assert_eq!(statuses, [201, 503, 400, 503], "{answer}");
    assert!(results[0]["hook"]["secret"].as_str().unwrap().starts_with("whsec_"), "the secret of the hook made");
    assert_eq!(results[2]["error"]["errors"][0]["field"], "rate_limit", "refused as such, not left: {answer}");
    for left in [&results[1], &results[3]] {
        assert_eq!(left["error"]["type"], "https://hookbridge.dev/problems/unavailable", "{left}");
        assert!(left["error"]["detail"].as_str().unwrap().contains("not attempted"), "{left}");
    }
    let (_, listed) = call(&api, "GET", "/v1/hooks", &token, "").await;
    let names: Vec<&str> = listed["hooks"].as_array().unwrap().iter().map(|h| h["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["h-1"], "only the one made");

    // Sent again, they are made.
    let (status, again) = call(&api, "POST", "/v1/hooks", &token, &json!([hook(2), hook(3)]).to_string()).await;
    assert_eq!(status, 200);
    let statuses: Vec<u64> =
        again["results"].as_array().unwrap().iter().map(|r| r["status"].as_u64().unwrap()).collect();
    assert_eq!(statuses, [201, 201], "{again}");
}

/// ExtremeCloud IQ's create makes all of its subscriptions or none. Past the same time it
/// makes no more, undoes those it made, and answers `503`: made to the end and then undone
/// one after another, a hundred on a slow store outlasted the API function, which Lambda
/// ends half way, some of them made.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_extremecloud_iq_create_slower_than_its_time_makes_none() {
    let h = EmbeddedHarness::start().await;
    let (api, token) = api_and_token(&h, "hooks:read hooks:write");
    let subscription = |n: u32| json!({"application": format!("app-{n}"), "url": format!("https://receiver.example/{n}"), "secret": "s3cret-value", "message_type": "AUDIT_LOG_ALL"});
    let body = json!([subscription(1), subscription(2), subscription(3)]).to_string();

    // The first subscription's write waits behind the writer for longer than the time.
    let busy = h.hold_the_writer(subscription_api::BULK_BEGUN_WITHIN + Duration::from_secs(2));
    tokio::time::sleep(Duration::from_millis(100)).await;
    let (status, answer) = call(&api, "POST", "/subscriptions/webhook", &token, &body).await;
    busy.await.unwrap();
    assert_eq!(status, 503, "{answer}");
    assert_eq!(answer["error_code"], "UNAVAILABLE", "{answer}");
    let (_, listed) = call(&api, "GET", "/subscriptions/webhook", &token, "").await;
    assert_eq!(listed, json!([]), "the one made was undone");
    let (_, hooks) = call(&api, "GET", "/v1/hooks", &token, "").await;
    assert_eq!(hooks["hooks"], json!([]), "{hooks}");

    // Sent again, all are made.
    let (status, again) = call(&api, "POST", "/subscriptions/webhook", &token, &body).await;
    assert_eq!(status, 202, "{again}");
    assert_eq!(again.as_array().unwrap().len(), 3, "{again}");
}
