//! The API's log line per request: it names the caller's tenant, and for a publish how many
//! events went out, so that a publish is one line at `info`, not two.

#![allow(clippy::unwrap_used)] // Tests fail loudly on purpose.

#[allow(dead_code)] // each test binary uses part of it
mod common;

use common::{api_and_token, call};
use hookbridge_testkit::{CapturedLogs, EmbeddedHarness};

#[tokio::test(flavor = "current_thread")]
async fn a_publish_is_one_info_line_naming_its_tenant_and_its_events() {
    let h = EmbeddedHarness::start().await;
    let (api, token) = api_and_token(&h, "events:publish hooks:read");
    let logs = CapturedLogs::default();
    let _default = tracing::subscriber::set_default(logs.json_at(tracing::Level::INFO));
    let events = r#"[{"detail-type":"user.login","source":"idp","detail":{"n":1}},
                     {"detail-type":"user.login","source":"idp","detail":{"n":2}}]"#;
    let (status, body) = call(&api, "POST", "/v1/events", &token, events).await;
    assert_eq!(status, 202, "{body}");
    let (status, _) = call(&api, "GET", "/v1/hooks", &token, "").await;
    assert_eq!(status, 200);
    let (status, _) = call(&api, "GET", "/v1/hooks", "not-a-token", "").await;
    assert_eq!(status, 401);

    let written = logs.text();
    let lines: Vec<serde_json::Value> = written.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    let requests: Vec<&serde_json::Value> = lines.iter().filter(|l| l["fields"]["message"] == "request").collect();
    assert_eq!(requests.len(), 3, "{written}");
    let publish = &requests[0]["fields"];
    assert_eq!((publish["route"].as_str(), publish["status"].as_u64()), (Some("/v1/events"), Some(202)));
    assert_eq!((publish["tenant"].as_str(), publish["events"].as_u64()), (Some("acme"), Some(2)), "{written}");
    let read = &requests[1]["fields"];
    assert_eq!((read["tenant"].as_str(), read["events"].as_u64()), (Some("acme"), None), "{written}");
    let refused = &requests[2]["fields"];
    assert_eq!((refused["status"].as_u64(), refused["tenant"].as_str()), (Some(401), None), "{written}");
    assert!(!written.contains("events published"), "the request's line says it: {written}");
}
