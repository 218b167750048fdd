//! The console's live preview of what a hook's patterns match reads the tenant's known
//! event types once for all its patterns (up to 50), not once a pattern: with 4 MiB of
//! declared schemas, each keystroke read and parsed them 50 times.

#![allow(clippy::unwrap_used)] // Tests fail loudly on purpose.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use common::{api_on, call, console, token};
use hookbridge_core::catalog::DeclaredType;
use hookbridge_core::ids::TenantId;
use hookbridge_core::ports::EventTypeStore;
use hookbridge_testkit::{EmbeddedHarness, Harness};
use subscription_api::ApiPorts;

#[allow(dead_code)] // each test binary uses part of it
mod common;

/// The event type store, counting the reads of declared types.
struct Counting {
    inner: Arc<dyn EventTypeStore>,
    reads: Arc<AtomicUsize>,
}

#[async_trait]
impl EventTypeStore for Counting {
    async fn declare(&self, tenant: &TenantId, declared: &DeclaredType) -> hookbridge_core::Result<()> {
        self.inner.declare(tenant, declared).await
    }
    async fn undeclare(&self, tenant: &TenantId, name: &str) -> hookbridge_core::Result<bool> {
        self.inner.undeclare(tenant, name).await
    }
    async fn declared(&self, tenant: &TenantId) -> hookbridge_core::Result<Vec<DeclaredType>> {
        self.reads.fetch_add(1, Ordering::SeqCst);
        self.inner.declared(tenant).await
    }
    async fn seen(
        &self,
        tenant: &TenantId,
        since: DateTime<Utc>,
        max: usize,
    ) -> hookbridge_core::Result<Vec<(String, DateTime<Utc>)>> {
        self.inner.seen(tenant, since, max).await
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_preview_reads_the_known_types_once_for_all_its_patterns() {
    let h = EmbeddedHarness::start().await;
    let reads = Arc::new(AtomicUsize::new(0));
    let mut ports = ApiPorts::of(h.backend());
    ports.event_types = Arc::new(Counting { inner: ports.event_types.clone(), reads: reads.clone() });
    let api = api_on(ports);
    let writer = token("hooks:read hooks:write");
    for name in ["order.paid", "order.refunded", "user.login"] {
        let (status, body) = call(&api, "PUT", &format!("/v1/event-types/{name}"), &writer, "{}").await;
        assert!((200..300).contains(&status), "{status} {body}");
    }

    let before = reads.load(Ordering::SeqCst);
    let page = console(
        &api,
        "GET",
        "/console/preview?pattern=order.*&pattern=user.login&pattern=*x%00",
        "",
        Some(&format!("t.{writer}")),
    )
    .await;
    let answer: serde_json::Value = serde_json::from_str(&page.body).unwrap();
    assert_eq!(answer["matches"], serde_json::json!(["order.paid", "order.refunded", "user.login"]), "{answer}");
    assert_eq!(answer["errors"][0]["pattern"], "*x\u{0}", "{answer}");
    assert!(reads.load(Ordering::SeqCst) - before <= 1, "read once, not once a pattern");

    // A bad pattern alone is answered without a read, by the API as by the preview.
    let before = reads.load(Ordering::SeqCst);
    let (status, body) = call(&api, "GET", "/v1/event-types/match?pattern=%00", &writer, "").await;
    assert_eq!((status, body["errors"][0]["field"].as_str()), (400, Some("pattern")), "{body}");
    let page = console(&api, "GET", "/console/preview?pattern=%00", "", Some(&format!("t.{writer}"))).await;
    let answer: serde_json::Value = serde_json::from_str(&page.body).unwrap();
    assert_eq!((answer["errors"][0]["pattern"].as_str(), &answer["matches"]), (Some("\u{0}"), &serde_json::json!([])));
    assert_eq!(reads.load(Ordering::SeqCst), before, "nothing read");

    // A reader without `hooks:read` is told so, for each pattern.
    let page =
        console(&api, "GET", "/console/preview?pattern=order.*", "", Some(&format!("t.{}", token("hooks:write"))))
            .await;
    let answer: serde_json::Value = serde_json::from_str(&page.body).unwrap();
    assert_eq!(answer["matches"], serde_json::json!([]), "{answer}");
    assert!(answer["errors"][0]["message"].as_str().unwrap().contains("hooks:read"), "{answer}");
}
