//! The API function on its sample API Gateway (HTTP API, payload 2.0) events, as
//! `lambda_http` would hand them to the router, over the AWS backend on the emulator.

#![allow(clippy::unwrap_used)] // Tests fail loudly on purpose.

use hookbridge_core::hook::NetworkPolicy;
use hookbridge_testkit::{AwsHarness, Harness, events};
use http_body_util::BodyExt;
use subscription_api::{Api, ApiSettings, JwtKey, router};
use tower::ServiceExt;

async fn invoke(api: &Api, name: &str) -> (u16, serde_json::Value) {
    let req = lambda_http::request::from_str(&events::load(name)).unwrap();
    let resp = router(api.clone()).oneshot(req).await.unwrap();
    let status = resp.status().as_u16();
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    (status, serde_json::from_slice(&body).unwrap_or(serde_json::Value::Null))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_sample_request_gets_its_answer() {
    let h = AwsHarness::start().await;
    let api = Api::new(
        subscription_api::ApiPorts::of(h.backend()),
        ApiSettings::local(JwtKey::new("local-dev-secret"), NetworkPolicy::default()),
    );
    let (status, body) = invoke(&api, "subscription-api-health").await;
    assert_eq!((status, body["status"].as_str()), (200, Some("ok")));

    let (status, body) = invoke(&api, "subscription-api-create-hook").await;
    assert_eq!(status, 201, "{body}");
    assert_eq!(body["name"], "siem-forwarder");
    assert!(body["secret"].as_str().unwrap().starts_with("whsec_"));
    assert!(!body.to_string().contains("s3cr3t-header-value"), "a write-only value was returned");

    let (status, body) = invoke(&api, "subscription-api-list-hooks").await;
    assert_eq!(status, 200);
    assert_eq!(body["hooks"].as_array().unwrap().len(), 1);
    assert!(body["hooks"][0].get("secret").is_none());

    let (status, body) = invoke(&api, "subscription-api-publish-event").await;
    assert_eq!(status, 202, "{body}");
    assert_eq!(body["events"].as_array().unwrap().len(), 1);

    let (status, body) = invoke(&api, "subscription-api-create-hook-invalid").await;
    assert_eq!(status, 400);
    let fields: Vec<_> = body["errors"].as_array().unwrap().iter().map(|e| e["field"].as_str().unwrap()).collect();
    assert_eq!(fields, ["name", "url"]);
}

#[test]
fn every_sample_event_file_is_used_by_a_handler_test() {
    let sources = [
        include_str!("lambda_events.rs"),
        include_str!("../../ingest/tests/lambda_events.rs"),
        include_str!("../../delivery-worker/tests/lambda_events.rs"),
        include_str!("../../verifier/tests/lambda_events.rs"),
    ]
    .concat();
    for name in events::all() {
        assert!(sources.contains(&format!("\"{name}\"")), "events/{name}.json is not used by any handler test");
    }
}
