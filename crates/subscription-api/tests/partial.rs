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

#[allow(dead_code)] // each test binary uses part of it
mod common;

/// Publishes `body` twice, the second time as the retry the first's failure calls for;
/// both fail.
async fn publish_failing_twice(api: &subscription_api::Api, token: &str, body: &str) {
    for _ in 0..2 {
        let request = Request::post("/v1/events")
            .header("authorization", format!("Bearer {token}"))
            .header("content-type", "application/json")
            .body(Body::from(body.to_owned()))
            .unwrap();
        let resp = router(api.clone()).oneshot(request).await.unwrap();
        assert!(resp.status().is_server_error(), "{}", resp.status());
    }
}

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
    publish_failing_twice(&api, &token, &body).await;

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

/// Sends every `PutEvents` request that carries `marker` to an address nothing listens on:
/// that request fails, after the SDK's retries, and the others go through.
#[derive(Debug)]
struct FailPutsCarrying {
    marker: &'static str,
}

impl aws_sdk_eventbridge::config::Intercept for FailPutsCarrying {
    fn name(&self) -> &'static str {
        "FailPutsCarrying"
    }

    fn modify_before_transmit(
        &self,
        context: &mut aws_sdk_eventbridge::config::interceptors::BeforeTransmitInterceptorContextMut<'_>,
        _runtime_components: &aws_sdk_eventbridge::config::RuntimeComponents,
        _cfg: &mut aws_sdk_eventbridge::config::ConfigBag,
    ) -> Result<(), aws_smithy_runtime_api::box_error::BoxError> {
        let body = context.request().body().bytes().unwrap_or_default();
        if String::from_utf8_lossy(body).contains(self.marker) {
            context.request_mut().set_uri("http://127.0.0.1:1/")?;
        }
        Ok(())
    }
}

/// Publishing through the bus, events that take more than one `PutEvents` request, the
/// last of which fails: the events of the requests that went through keep their producer
/// ids' answers, so the retry publishes them no more. The bus's port said only that not
/// all went, every claim was freed, and the retry published them again under new ids.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_the_bus_took_before_it_failed_the_rest_are_not_published_again() {
    let h = AwsHarness::start().await;
    let mut clients = h.clients().clone();
    let config =
        clients.eventbridge.config().to_builder().interceptor(FailPutsCarrying { marker: "refuse-me" }).build();
    clients.eventbridge = aws_sdk_eventbridge::Client::from_conf(config);
    let backend = hookbridge_aws::backend(&clients, h.resources());
    let (_, token) = api_and_token(&h, "events:publish");
    let api = common::api_with(subscription_api::ApiPorts::of(&backend), |s| {
        s.publish_to = hookbridge_core::settings::PublishTo::Bus;
    });
    // Three of 70 KB fill one request (256 KiB at most); the fourth is a request of its own.
    let event = |id: &str, marker: &str| {
        json!({"id": id, "detail-type": "user.login", "source": "idp",
               "detail": {"marker": format!("{marker}-{id}"), "pad": "x".repeat(70_000)}})
    };
    let body = json!([event("a", "went"), event("b", "went"), event("c", "went"), event("d", "refuse-me")]).to_string();
    publish_failing_twice(&api, &token, &body).await;

    let mut bodies = Vec::new();
    for _ in 0..10 {
        let got = h.backend().ingest_queue.receive(10, Duration::from_millis(500)).await.unwrap();
        if got.is_empty() && bodies.len() >= 3 {
            break;
        }
        bodies.extend(got.into_iter().map(|m| m.body));
    }
    for id in ["a", "b", "c"] {
        let copies = bodies.iter().filter(|b| b.contains(&format!("went-{id}"))).count();
        assert_eq!(copies, 1, "event {id} went out once, not once a try");
    }
    assert!(!bodies.iter().any(|b| b.contains("refuse-me")));
}
