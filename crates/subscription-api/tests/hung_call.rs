//! An AWS call that hangs ends within the API function's timeout, and the request after it
//! frees what it claimed. Held to the queue functions' bounds (12 s a call), Lambda ended
//! such a request at 10 s: the caller got the gateway's own `500`, not the API's problem document, and the claims on its
//! `Idempotency-Key` and its events' ids turned every retry away with `409` for five
//! minutes.

#![allow(clippy::unwrap_used)] // Tests fail loudly on purpose.

use axum::body::Body;
use axum::http::Request;
use hookbridge_testkit::{AwsHarness, BlackHole, Emulator};
use http_body_util::BodyExt;
use subscription_api::router;
use tower::ServiceExt;

#[allow(dead_code)] // each test binary uses part of it
mod common;

/// Publishes one event with an `Idempotency-Key` and a producer id, as Lambda would run it:
/// ended at the function's timeout. The status and content type.
async fn publish_within_the_function(api: &subscription_api::Api, token: &str) -> (u16, String) {
    let request = Request::post("/v1/events")
        .header("authorization", format!("Bearer {token}"))
        .header("content-type", "application/json")
        .header("idempotency-key", "publish-once")
        .body(Body::from(r#"[{"id": "evt-1", "detail-type": "user.login", "source": "idp", "detail": {}}]"#))
        .unwrap();
    let answered = tokio::time::timeout(hookbridge_aws::API_FUNCTION_TIMEOUT, router(api.clone()).oneshot(request))
        .await
        .expect("answered before Lambda would end the request")
        .unwrap();
    let kind = answered.headers().get("content-type").map(|v| v.to_str().unwrap().to_owned()).unwrap_or_default();
    let status = answered.status().as_u16();
    answered.into_body().collect().await.unwrap();
    (status, kind)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_publish_whose_queue_never_answers_fails_in_time_and_frees_its_key() {
    let h = AwsHarness::start().await;
    let black_hole = BlackHole::start().await;
    // The API function's clients, on the emulator, but for SQS, which hangs.
    let sdk = Emulator::shared()
        .sdk_config()
        .await
        .to_builder()
        .timeout_config(hookbridge_aws::request_call_timeouts())
        .build();
    let mut clients = hookbridge_aws::Clients::new(&sdk);
    clients.sqs = aws_sdk_sqs::Client::from_conf(
        aws_sdk_sqs::config::Builder::from(&sdk).endpoint_url(black_hole.url("")).build(),
    );
    let api = common::api_on(subscription_api::ApiPorts::of(&hookbridge_aws::backend(&clients, h.resources())));
    let token = common::token("events:publish");

    let (status, kind) = publish_within_the_function(&api, &token).await;
    assert_eq!((status, kind.as_str()), (500, "application/problem+json"), "the API's own answer");
    // The retry the failure calls for is tried again, not turned away as still in progress.
    let (status, _) = publish_within_the_function(&api, &token).await;
    assert_eq!(status, 500, "the key and the event id were freed, not 409");
}
