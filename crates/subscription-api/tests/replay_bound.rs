//! At most four replay jobs of a hook run at once: a fifth is `409` until one ends. Each
//! job re-sends up to 14 days of the hook's deliveries outside the tenant's publish rate,
//! and a request repeated without an `Idempotency-Key` started one more each time.

#![allow(clippy::unwrap_used)] // Tests fail loudly on purpose.

use common::{api_on, call, token};
use hookbridge_testkit::{EmbeddedHarness, Harness};
use subscription_api::ApiPorts;

#[allow(dead_code)] // each test binary uses part of it
mod common;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hook_runs_at_most_four_replay_jobs_at_once() {
    // No ingest here to work through the jobs: each stays running until cancelled.
    let h = EmbeddedHarness::start().await;
    let (api, token) = (api_on(ApiPorts::of(h.backend())), token("hooks:read hooks:write"));
    let created = |name: &'static str| {
        let api = &api;
        let token = &token;
        async move {
            let body = format!(r#"{{"name": "{name}", "url": "https://example.com/{name}"}}"#);
            let (status, hook) = call(api, "POST", "/v1/hooks", token, &body).await;
            assert_eq!(status, 201, "{hook}");
            hook["id"].as_str().unwrap().to_owned()
        }
    };
    let (id, other) = (created("h").await, created("other").await);
    let since = (chrono::Utc::now() - chrono::Duration::hours(1)).to_rfc3339();
    let window = format!(r#"{{"since": "{since}"}}"#);
    let replay = |hook: &str| {
        let path = format!("/v1/hooks/{hook}/replay");
        let (api, token, window) = (&api, &token, &window);
        async move { call(api, "POST", &path, token, window).await }
    };
    let mut jobs = Vec::new();
    for _ in 0..4 {
        let (status, job) = replay(&id).await;
        assert_eq!(status, 202, "{job}");
        jobs.push(job["id"].as_str().unwrap().to_owned());
    }
    let (status, refused) = replay(&id).await;
    assert_eq!((status, refused["type"].as_str().map(|t| t.ends_with("conflict"))), (409, Some(true)), "{refused}");
    assert!(refused["detail"].as_str().unwrap().contains("cancel one"), "{refused}");
    let (_, listed) = call(&api, "GET", &format!("/v1/hooks/{id}/replays"), &token, "").await;
    assert_eq!(listed["replays"].as_array().unwrap().len(), 4, "nothing started: {listed}");
    // Another hook's jobs are its own.
    assert_eq!(replay(&other).await.0, 202);
    // One ended, there is room again.
    let (status, _) = call(&api, "POST", &format!("/v1/hooks/{id}/replays/{}/cancel", jobs[0]), &token, "").await;
    assert_eq!(status, 200);
    assert_eq!(replay(&id).await.0, 202);
}
