//! A hook this version cannot read (a newer release wrote it, seen after a rollback), on
//! both backends: its own routes say so in a problem of its own, not an anonymous `500`,
//! and its owner can still delete it. (That a caller held to some sites does not see it is
//! the unit test `a_hook_no_one_can_read_is_not_a_site_held_callers` in `hooks.rs`.)

#![allow(clippy::unwrap_used)] // Tests fail loudly on purpose.

use std::sync::Arc;
use std::time::Duration;

use common::{api_on, call, token};
use hookbridge_core::ids::{HookId, TenantId};
use hookbridge_core::ports::{Queue, Rule, RulePattern, SourceMatch};
use hookbridge_core::topology::QueueSpec;
use hookbridge_testkit::{AwsHarness, EmbeddedHarness, Harness};
use subscription_api::ApiPorts;

#[allow(dead_code)] // each test binary uses part of it
mod common;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hook_this_version_cannot_read_says_so_and_can_be_deleted() {
    cannot_read(&EmbeddedHarness::start().await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hook_this_version_cannot_read_says_so_and_can_be_deleted_on_aws() {
    cannot_read(&AwsHarness::start().await).await;
}

/// `hook.deleted` as a customer's rule on the bus gets it.
async fn watching_deletes(h: &impl Harness) -> Arc<dyn Queue> {
    let spec = QueueSpec {
        name: h.unique("watch"),
        dlq: h.unique("watch-dlq"),
        visibility_timeout: Duration::from_secs(30),
        max_receive_count: 5,
    };
    let (watch, _) = h.queue(&spec).await;
    let pattern =
        RulePattern { source: SourceMatch::Exactly("hookbridge".into()), detail_types: vec!["hook.deleted".into()] };
    h.rule(&Rule { name: h.unique("watch-rule"), pattern, target_queue: spec.name.clone() }).await;
    watch
}

async fn cannot_read(h: &impl Harness) {
    let (api, t) = (api_on(ApiPorts::of(h.backend())), token("hooks:read hooks:write"));
    let (status, made) = call(&api, "POST", "/v1/hooks", &t, r#"{"name": "newer", "url": "https://r.example/"}"#).await;
    assert_eq!(status, 201, "{made}");
    let id: HookId = made["id"].as_str().unwrap().parse().unwrap();
    let path = format!("/v1/hooks/{id}");
    h.make_unreadable(&"acme".parse::<TenantId>().unwrap(), id).await;

    for (method, body) in [("GET", ""), ("PUT", r#"{"url": "https://r.example/2"}"#)] {
        let (status, problem) = call(&api, method, &path, &t, body).await;
        assert_eq!(status, 500, "{method}: {problem}");
        assert_eq!(problem["type"], "https://hookbridge.dev/problems/unreadable-hook", "{method}");
        assert!(problem["detail"].as_str().unwrap().contains("newer version"), "{problem}");
    }
    let (status, _) = call(&api, "GET", &format!("{path}/events"), &t, "").await;
    assert_eq!(status, 500);

    let watch = watching_deletes(h).await;
    let (status, body) = call(&api, "DELETE", &path, &t, "").await;
    assert_eq!(status, 204, "{body}");
    assert_eq!(call(&api, "GET", &path, &t, "").await.0, 404, "gone");
    assert_eq!(call(&api, "DELETE", &path, &t, "").await.0, 404, "deleted once");
    assert!(h.backend().hooks.list_all(&"acme".parse::<TenantId>().unwrap()).await.unwrap().is_empty());
    let told = watch.receive(10, Duration::from_secs(5)).await.unwrap();
    assert_eq!(told.len(), 1, "{told:?}");
    let event: serde_json::Value = serde_json::from_str(&told[0].body).unwrap();
    assert_eq!(event["detail-type"], "hook.deleted");
    assert_eq!(
        (event["detail"]["tenant"].as_str(), event["detail"]["hook_id"].as_str()),
        (Some("acme"), Some(id.to_string().as_str()))
    );
    assert!(event["detail"].get("hook_version").is_none(), "{event}");

    // Its name is free again.
    let (status, made) = call(&api, "POST", "/v1/hooks", &t, r#"{"name": "newer", "url": "https://r.example/"}"#).await;
    assert_eq!(status, 201, "{made}");
}
