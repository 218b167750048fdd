//! Re-enabling a hook, or moving it to a new URL, starts its health over from that moment:
//! the worker counts nothing from requests begun before it (a 410 recorded late would
//! otherwise disable the hook again). Any other change leaves its health as it was.

#![allow(clippy::unwrap_used)] // Tests fail loudly on purpose.

use chrono::Utc;
use common::{api_and_token, call};
use hookbridge_core::hook::{DestinationState, Hook};
use hookbridge_core::ids::{HookId, TenantId};
use hookbridge_testkit::{EmbeddedHarness, Harness};

#[allow(dead_code)] // each test binary uses part of it
mod common;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hook_re_enabled_or_moved_starts_its_health_over_from_then() {
    let harness = EmbeddedHarness::start().await;
    let h = &harness;
    let (api, token) = api_and_token(h, "hooks:read hooks:write");
    let (status, made) =
        call(&api, "POST", "/v1/hooks", &token, r#"{"name": "gone", "url": "https://example.com/in"}"#).await;
    assert_eq!(status, 201, "{made}");
    let id: HookId = made["id"].as_str().unwrap().parse().unwrap();
    let tenant: TenantId = "acme".parse().unwrap();
    let stored = || async { h.backend().hooks.get(&tenant, id).await.unwrap().unwrap() };
    let put = |change: fn(&mut serde_json::Value)| {
        let (api, token) = (&api, &token);
        async move {
            let (_, mut doc) = call(api, "GET", &format!("/v1/hooks/{id}"), token, "").await;
            change(&mut doc);
            let (status, body) = call(api, "PUT", &format!("/v1/hooks/{id}"), token, &doc.to_string()).await;
            assert_eq!(status, 200, "{body}");
        }
    };
    // Disabled by the worker for a 410, after failures.
    let disable = |mut hook: Hook| async move {
        hook.state.destination_state = DestinationState::Inactive;
        hook.state.disabled_reason = Some("the endpoint answered 410 Gone".into());
        hook.state.health.consecutive_failures = 3;
        hook.revision += 1;
        h.backend().hooks.replace(&hook, hook.revision - 1).await.unwrap();
    };
    assert_eq!(stored().await.state.health.since, None, "as created");

    disable(stored().await).await;
    let before = Utc::now();
    put(|doc| doc["enabled"] = true.into()).await;
    let health = stored().await.state.health;
    assert_eq!(health.consecutive_failures, 0);
    let since = health.since.expect("started over");
    assert!(since >= before && since <= Utc::now(), "{since}");

    put(|doc| doc["description"] = "renamed".into()).await;
    assert_eq!(stored().await.state.health.since, Some(since), "any other change keeps it");

    let before = Utc::now();
    put(|doc| doc["url"] = "https://example.com/elsewhere".into()).await;
    assert!(stored().await.state.health.since.is_some_and(|t| t >= before), "a new URL starts it over");
}
