//! A request's errors are bounded, however much is wrong with it: a list over its bound is
//! refused whole, its items not looked at (told apart one by one, a few hundred thousand
//! took minutes of the CPU); at most `MAX_REPORTED` errors are listed, and none quotes more
//! than `MAX_TEXT` bytes of what was sent (a problem document of tens of megabytes was past
//! what Lambda can answer, and the client got a bare `500`).

#![allow(clippy::unwrap_used)] // Tests fail loudly on purpose.

use common::{api_and_token, call};
use hookbridge_core::validation::{MAX_REPORTED, MAX_TEXT};
use hookbridge_testkit::{EmbeddedHarness, Harness};
use serde_json::{Value, json};

#[allow(dead_code)] // each test binary uses part of it
mod common;

/// The fields a refused hook named.
fn fields(answer: &Value) -> Vec<&str> {
    answer["errors"].as_array().unwrap().iter().map(|e| e["field"].as_str().unwrap()).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_requests_errors_are_bounded() {
    let h = EmbeddedHarness::start().await;
    let (api, token) = api_and_token(&h, "hooks:write");
    let create = |change: Value| {
        let (api, token) = (&api, &token);
        async move {
            let mut hook = json!({"name": "many", "url": "https://example.com/in"});
            for (k, v) in change.as_object().unwrap() {
                hook[k] = v.clone();
            }
            let (status, answer) = call(api, "POST", "/v1/hooks", token, &hook.to_string()).await;
            assert_eq!(status, 400, "{answer}");
            answer
        }
    };
    let many = |item: Value| Value::Array(vec![item; 1000]);

    // Lists over their bounds: refused whole, their items not looked at.
    assert_eq!(fields(&create(json!({"event_types": many(json!(""))})).await), ["event_types"]);
    assert_eq!(fields(&create(json!({"sites": many(json!(""))})).await), ["sites"]);
    assert_eq!(fields(&create(json!({"headers": many(json!({}))})).await), ["headers"]);
    let params = json!({"type": "OAUTH_CLIENT_CREDENTIALS", "token_url": "https://example.com/token",
        "client_id": "c", "client_secret": "a-secret-of-some-length", "body_params": many(json!({}))});
    assert_eq!(fields(&create(json!({"auth": params})).await), ["auth.body_params"]);

    // A thousand bad items of a list with no bound: the first hundred.
    let formats = create(json!({"signature_formats": many(json!("x"))})).await;
    assert_eq!(fields(&formats).len(), MAX_REPORTED);
    assert_eq!(fields(&formats)[0], "signature_formats[0]");
    assert_eq!(fields(&create(json!({"headers": many(json!(1))})).await), ["headers"], "not looked at");

    // Fifty failures of its declared schema in each of ten events: the first hundred.
    let schema = json!({"schema": {"type": "object", "additionalProperties": {"type": "number"}}});
    let (status, declared) = call(&api, "PUT", "/v1/event-types/counts", &token, &schema.to_string()).await;
    assert_eq!(status, 200, "{declared}");
    let detail: serde_json::Map<String, Value> = (0..60).map(|i| (format!("k{i}"), json!("not a number"))).collect();
    let events = vec![json!({"detail-type": "counts", "source": "app", "detail": detail}); 10];
    let publisher = common::token("events:publish");
    let (status, refused) = call(&api, "POST", "/v1/events", &publisher, &Value::Array(events).to_string()).await;
    assert_eq!(status, 400, "{refused}");
    assert_eq!(fields(&refused).len(), MAX_REPORTED);

    // A message quoting what was sent quotes a bounded part of it.
    let quoted = create(json!({"rate_limit": {"per_second": "\"".repeat(100_000)}})).await;
    let message = quoted["errors"][0]["message"].as_str().unwrap();
    assert!(message.len() <= MAX_TEXT + '…'.len_utf8() && message.ends_with('…'), "{message}");
    assert_eq!(fields(&quoted), ["rate_limit.per_second"]);
}

/// The `*` of a hook's patterns are bounded in all: every event is matched against every
/// pattern of every hook of its tenant, and a `*` costs a search. 1,000 hooks of 200
/// patterns of 64 `*` each made about 400 ms of CPU per event, matching nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hooks_patterns_hold_a_bounded_number_of_stars() {
    use hookbridge_core::pattern::MAX_STARS_PER_HOOK;
    let h = EmbeddedHarness::start().await;
    let (api, token) = api_and_token(&h, "hooks:write");
    // Two `*` in each of 200 patterns is the most: ordinary patterns fit.
    let mut patterns: Vec<String> = (0..MAX_STARS_PER_HOOK / 2).map(|i| format!("app.*.start{i}*")).collect();
    let hook = |name: &str, patterns: &[String]| json!({"name": name, "url": "https://example.com/in", "event_types": patterns});
    let (status, created) = call(&api, "POST", "/v1/hooks", &token, &hook("starry", &patterns).to_string()).await;
    assert_eq!(status, 201, "{created}");
    let path = format!("/v1/hooks/{}", created["id"].as_str().unwrap());

    // One more, by a create or a change: refused, naming the list.
    patterns[0] = "app.*.*start*".to_owned();
    for (method, path, name) in [("POST", "/v1/hooks", "starry-2"), ("PUT", path.as_str(), "starry")] {
        let (status, refused) = call(&api, method, path, &token, &hook(name, &patterns).to_string()).await;
        assert_eq!(status, 400, "{method}: {refused}");
        assert_eq!(fields(&refused), ["event_types"], "{method}");
        assert!(refused["errors"][0]["message"].as_str().unwrap().contains("400 `*`"), "{refused}");
    }

    // A hook stored before the bound, with more: still changed (disabled, here) as long as
    // its `*` do not grow, so it need not be rewritten to be switched off.
    let tenant = "acme".parse().unwrap();
    let mut stored = h.backend().hooks.list_all(&tenant).await.unwrap().remove(0);
    let before = stored.revision;
    stored.config.event_types = patterns.iter().map(|p| p.parse().unwrap()).collect();
    stored.revision += 1;
    h.backend().hooks.replace(&stored, before).await.unwrap();
    let mut disabled = hook("starry", &patterns);
    disabled["enabled"] = json!(false);
    let (status, answer) = call(&api, "PUT", &path, &token, &disabled.to_string()).await;
    assert_eq!((status, &answer["enabled"]), (200, &json!(false)), "{answer}");
    patterns[1] = "app.*.*start1*".to_owned();
    let (status, refused) = call(&api, "PUT", &path, &token, &hook("starry", &patterns).to_string()).await;
    assert_eq!((status, fields(&refused)), (400, vec!["event_types"]), "{refused}");

    // Many patterns of no `*` are not held to it.
    let plain: Vec<String> = (0..200).map(|i| format!("app.event{i}")).collect();
    let plain = json!({"name": "plain", "url": "https://example.com/in", "event_types": plain});
    assert_eq!(call(&api, "POST", "/v1/hooks", &token, &plain.to_string()).await.0, 201);
}

/// An event whose check against its declared schema would take more than the budget is
/// refused unchecked, naming its `detail`: `{"items": {"allOf": [3,000 branches]}}`
/// against 120,000 numbers took 2.5 s of CPU for one event. The same schema checks a
/// smaller `detail`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_detail_too_costly_to_check_against_its_schema_is_refused() {
    let h = EmbeddedHarness::start().await;
    let (api, token) = api_and_token(&h, "hooks:write");
    let branches = vec![json!({"minimum": 0}); 300];
    let schema = json!({"schema": {"type": "object", "properties": {"n": {"items": {"allOf": branches}}}}});
    let (status, declared) = call(&api, "PUT", "/v1/event-types/counted", &token, &schema.to_string()).await;
    assert_eq!(status, 200, "{declared}");
    let publisher = common::token("events:publish");
    let publish = |numbers: Vec<i32>| {
        let event = json!({"detail-type": "counted", "source": "app", "detail": {"n": numbers}});
        let (api, publisher) = (&api, &publisher);
        async move { call(api, "POST", "/v1/events", publisher, &event.to_string()).await }
    };

    // 301 subschemas (about 900 steps) for each of 10,000 numbers: past the budget of
    // 2,000,000.
    let (status, refused) = publish(vec![1; 10_000]).await;
    assert_eq!(status, 400, "{refused}");
    assert_eq!(fields(&refused), ["detail"]);
    assert!(refused["errors"][0]["message"].as_str().unwrap().contains("too large to check"), "{refused}");
    // For 1,000, within it: checked, and its failures named.
    let (status, published) = publish(vec![1; 1_000]).await;
    assert_eq!(status, 202, "{published}");
    let (status, failed) = publish(vec![1, -1]).await;
    assert_eq!(status, 400, "{failed}");
    assert_eq!(fields(&failed)[0], "detail.n[1]");

    // A reference the walk could not follow is refused as the schema is declared.
    let anchored = json!({"schema": {"items": {"$ref": "#n"}, "$defs": {"n": {"$anchor": "n", "minimum": 0}}}});
    let (status, refused) = call(&api, "PUT", "/v1/event-types/anchored", &token, &anchored.to_string()).await;
    assert_eq!((status, fields(&refused)), (400, vec!["schema"]), "{refused}");
}
