//! A publish that failed part way: the events that went out before the failure keep their
//! producer ids' answers, so the retry the failure calls for does not publish them again
//! (under new envelope ids their receivers could not tell apart).

#![allow(clippy::unwrap_used)] // Tests fail loudly on purpose.

use std::time::Duration;

use axum::body::Body;
use axum::http::Request;
use common::api_and_token;
use hookbridge_testkit::{AwsHarness, Harness};
use serde_json::json;
use subscription_api::router;
use tower::ServiceExt;

mod common;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_out_before_a_failure_are_not_published_again_by_the_retry() {
    let h = AwsHarness::start().await;
    let (api, token) = api_and_token(&h, "events:publish");
    // The small event goes straight onto the ingest queue; the large one (over 64 KiB)
    // through the bus, which is gone.
    h.clients().eventbridge.delete_event_bus().name(&h.resources().bus).send().await.unwrap();
    let body = json!([
        {"id": "small-1", "detail-type": "user.login", "source": "idp", "detail": {"marker": "the-small-one"}},
        {"id": "large-1", "detail-type": "user.login", "source": "idp", "detail": {"pad": "x".repeat(70_000)}},
    ])
    .to_string();
    let publish = || {
        Request::post("/v1/events")
            .header("authorization", format!("Bearer {token}"))
            .header("content-type", "application/json")
            .body(Body::from(body.clone()))
            .unwrap()
    };
    for _ in 0..2 {
        let resp = router(api.clone()).oneshot(publish()).await.unwrap();
        assert!(resp.status().is_server_error(), "{}", resp.status());
    }

    let mut bodies = Vec::new();
    for _ in 0..5 {
        let got = h.backend().ingest_queue.receive(10, Duration::from_millis(500)).await.unwrap();
        if got.is_empty() {
            break;
        }
        bodies.extend(got.into_iter().map(|m| m.body));
    }
    let small = bodies.iter().filter(|b| b.contains("the-small-one")).count();
    assert_eq!(small, 1, "the small event went out once, not once a try");
}
