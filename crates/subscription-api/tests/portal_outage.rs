//! A portal link opened while its session cannot be stored is not spent: the visitor gets
//! a page saying to try again, and the link opens on the next try. It used to answer the
//! API's problem document and leave the link spent, the customer to ask for another.

#![allow(clippy::unwrap_used)] // Tests fail loudly on purpose.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use async_trait::async_trait;
use axum::http::StatusCode;
use chrono::{DateTime, Utc};
use common::{api_on, call, console, token};
use hookbridge_core::portal::PortalGrant;
use hookbridge_core::ports::PortalStore;
use hookbridge_testkit::{EmbeddedHarness, Harness};
use subscription_api::{Api, ApiPorts};

#[allow(dead_code)] // each test binary uses part of it
mod common;

/// The backend's portal store, whose sessions cannot be stored while `down`.
struct SessionsDown {
    inner: Arc<dyn PortalStore>,
    down: AtomicBool,
}

#[async_trait]
impl PortalStore for SessionsDown {
    async fn put_link(&self, code_hash: &str, grant: &PortalGrant) -> hookbridge_core::Result<()> {
        self.inner.put_link(code_hash, grant).await
    }
    async fn redeem_link(&self, code_hash: &str, now: DateTime<Utc>) -> hookbridge_core::Result<Option<PortalGrant>> {
        self.inner.redeem_link(code_hash, now).await
    }
    async fn put_session(&self, id_hash: &str, grant: &PortalGrant) -> hookbridge_core::Result<()> {
        if self.down.load(Ordering::SeqCst) {
            return Err(hookbridge_core::Error::backend("portal.put_session", "the store is out of reach"));
        }
        self.inner.put_session(id_hash, grant).await
    }
    async fn session(&self, id_hash: &str, now: DateTime<Utc>) -> hookbridge_core::Result<Option<PortalGrant>> {
        self.inner.session(id_hash, now).await
    }
    async fn end_session(&self, id_hash: &str) -> hookbridge_core::Result<()> {
        self.inner.end_session(id_hash).await
    }
}

async fn open(api: &Api, code: &str) -> (StatusCode, String, String) {
    let page = console(api, "POST", "/console/portal", &format!("code={code}"), None).await;
    (page.status, page.header("content-type").unwrap_or_default(), page.body)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_link_opened_while_sessions_cannot_be_stored_is_not_spent() {
    let h = EmbeddedHarness::start().await;
    let store = Arc::new(SessionsDown { inner: h.backend().portal.clone(), down: AtomicBool::new(true) });
    let mut ports = ApiPorts::of(h.backend());
    ports.portal = store.clone();
    let api = api_on(ports);

    let (status, made) = call(&api, "POST", "/v1/portal/sessions", &token("portal:create"), "{}").await;
    assert_eq!(status, 201, "{made}");

    let url = made["url"].as_str().unwrap();
    let code = url.split_once("code=").unwrap().1.to_owned();

    let (status, kind, body) = open(&api, &code).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert!(kind.starts_with("text/html"), "a page for a person: {kind}");
    assert!(body.contains("Open the link again"), "{body}");

    store.down.store(false, Ordering::SeqCst);
    let (status, _, body) = open(&api, &code).await;
    assert_eq!(status, StatusCode::OK, "the link opens on the next try: {body}");
    let (status, _, _) = open(&api, &code).await;
    assert_eq!(status, StatusCode::GONE, "and only once");
}
