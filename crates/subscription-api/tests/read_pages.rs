//! What the pages of Read show at their edges. A delivery is dated by its event's own
//! `time`, which may be a few seconds ahead of when the event was published (clocks
//! differ): Read's window ended at now, so such a delivery, recorded and answered a moment
//! ago, was on no page of a Read until its date came. And an empty page between others is
//! not an empty window.

#![allow(clippy::unwrap_used)] // Tests fail loudly on purpose.

use common::{api_and_token, call};
use hookbridge_core::delivery::Delivery;
use hookbridge_core::ids::{EventId, HookId};
use hookbridge_testkit::{EmbeddedHarness, Harness};

#[allow(dead_code)] // each test binary uses part of it
mod common;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_delivery_dated_ahead_of_now_is_read_at_once() {
    let h = EmbeddedHarness::start().await;
    let (api, t) = api_and_token(&h, "hooks:read hooks:write");
    let (status, hook) =
        call(&api, "POST", "/v1/hooks", &t, r#"{"name": "ahead", "url": "https://example.com/h"}"#).await;
    assert_eq!(status, 201, "{hook}");
    let hook_id: HookId = hook["id"].as_str().unwrap().parse().unwrap();

    // As ingest dates an event whose `time` is as far ahead as it trusts (and its id in
    // the second after).
    let now = chrono::Utc::now();
    let ahead = now + ingest::EVENT_TIME_AHEAD + chrono::Duration::milliseconds(999);
    let event = EventId::generate();
    let id = ingest::delivery_id(ahead.timestamp_millis() as u64, event.as_str(), hook_id);
    let delivery = Delivery::pending(id, "acme".parse().unwrap(), hook_id, event, "user.login".into(), now);
    h.backend().deliveries.insert(std::slice::from_ref(&delivery)).await.unwrap();

    for path in [format!("/v1/hooks/{hook_id}/events"), format!("/v1/hooks/{hook_id}/events?hours=1&limit=1")] {
        let (status, page) = call(&api, "GET", &path, &t, "").await;
        assert_eq!(status, 200, "{page}");
        assert_eq!(page["deliveries"][0]["delivery_id"], id.to_string(), "{path}: {page}");
    }
}

/// A page of the console's Read that is empty while others are around it (a link to older
/// deliveries followed once there are none, records this version cannot show) does not say
/// the hook had nothing in the window: it said "Nothing in the last 24 hours" beside a
/// delivery of a minute ago.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_empty_page_of_read_between_others_is_not_an_empty_window() {
    let h = EmbeddedHarness::start().await;
    let (api, t) = api_and_token(&h, "hooks:read hooks:write");
    let (_, hook) = call(&api, "POST", "/v1/hooks", &t, r#"{"name": "paged", "url": "https://example.com/h"}"#).await;
    let hook_id: HookId = hook["id"].as_str().unwrap().parse().unwrap();
    let event = EventId::generate();
    let now = chrono::Utc::now();
    let id = ingest::delivery_id(now.timestamp_millis() as u64 - 60_000, event.as_str(), hook_id);
    let delivery = Delivery::pending(id, "acme".parse().unwrap(), hook_id, event, "user.login".into(), now);
    h.backend().deliveries.insert(std::slice::from_ref(&delivery)).await.unwrap();
    let session = format!("t.{t}");

    let first = common::console(&api, "GET", &format!("/console/hooks/{hook_id}/read"), "", Some(&session)).await;
    assert!(first.body.contains(&id.to_string()), "{}", first.body);
    let older = format!("/console/hooks/{hook_id}/read?hours=24&cursor={id}");
    let past = common::console(&api, "GET", &older, "", Some(&session)).await;
    assert_eq!(past.status, 200);
    assert!(!past.body.contains("Nothing in the last"), "{}", past.body);
    assert!(past.body.contains("Nothing to show on this page") && past.body.contains("Newest"), "{}", past.body);
}
