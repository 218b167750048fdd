//! A hook's rate limit set again begins a schedule of its own, and the one it leaves is
//! forgotten: nothing paces by it any more, and were the hook to fall back to it (a release
//! before this one, beside it in a deploy or after a rollback, writes hooks without their
//! schedule), its turns, perhaps days of them, would hold up every new delivery.

#![allow(clippy::unwrap_used)] // Tests fail loudly on purpose.

use chrono::Utc;
use common::{api_and_token, call};
use hookbridge_core::rate::{Rate, hook_key, schedule_of};
use hookbridge_testkit::{EmbeddedHarness, Harness};

#[allow(dead_code)] // each test binary uses part of it
mod common;

/// `call`, which must succeed; the body.
async fn ok(api: &subscription_api::Api, method: &str, path: &str, token: &str, body: &str) -> serde_json::Value {
    let (status, answer) = call(api, method, path, token, body).await;
    assert!((200..300).contains(&status), "{method} {path}: {status} {answer}");
    answer
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_limit_set_again_begins_a_schedule_and_forgets_the_old_one() {
    let h = EmbeddedHarness::start().await;
    let (api, token) = api_and_token(&h, "hooks:read hooks:write");
    let made = ok(
        &api,
        "POST",
        "/v1/hooks",
        &token,
        r#"{"name": "paced", "url": "https://example.com/in", "rate_limit": {"per_second": 1}}"#,
    )
    .await;
    let id: hookbridge_core::ids::HookId = made["id"].as_str().unwrap().parse().unwrap();
    let tenant = "acme".parse().unwrap();
    let hook = h.backend().hooks.get(&tenant, id).await.unwrap().unwrap();
    let old = hook_key(id, schedule_of(&hook));
    let limiter = &h.backend().limiter;
    limiter.pace(&old, Rate::per_second(1), 600, Utc::now()).await.unwrap();

    let mut doc = ok(&api, "GET", &format!("/v1/hooks/{id}"), &token, "").await;
    doc["rate_limit"] = serde_json::json!({"per_second": 100});
    ok(&api, "PUT", &format!("/v1/hooks/{id}"), &token, &doc.to_string()).await;

    let changed = h.backend().hooks.get(&tenant, id).await.unwrap().unwrap();
    assert_ne!(schedule_of(&changed), schedule_of(&hook), "a schedule of its own");
    let next = limiter.pace(&old, Rate::per_second(1), 1, Utc::now()).await.unwrap();
    assert!(next <= Utc::now(), "the old schedule's ten minutes were forgotten: next turn {next}");
}
