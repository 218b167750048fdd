//! A tenant's change to a hook the platform keeps writing (its health, while a flood of its
//! deliveries fails) is not `409` after five rounds lost: it waits a moment and reads the
//! hook again. Here the platform's write lands before each of the tenant's first seven
//! writes, each a real write to the stored hook.

#![allow(clippy::unwrap_used)] // Tests fail loudly on purpose.

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};

use async_trait::async_trait;
use common::{api_on, call, token};
use hookbridge_core::hook::Hook;
use hookbridge_core::ids::{HookId, TenantId};
use hookbridge_core::ports::{HookAccess, HookStore, Page};
use hookbridge_testkit::{EmbeddedHarness, Harness};
use subscription_api::ApiPorts;

#[allow(dead_code)] // each test binary uses part of it
mod common;

/// The hook store, with the worker's health write landing first, `left` more times.
struct Busy {
    inner: Arc<dyn HookStore>,
    left: AtomicU32,
}

#[async_trait]
impl HookAccess for Busy {
    async fn get(&self, tenant: &TenantId, id: HookId) -> hookbridge_core::Result<Option<Hook>> {
        self.inner.get(tenant, id).await
    }
    async fn get_many(&self, keys: &[(TenantId, HookId)]) -> hookbridge_core::Result<Vec<Arc<Hook>>> {
        self.inner.get_many(keys).await
    }
    async fn replace(&self, hook: &Hook, expected_revision: u64) -> hookbridge_core::Result<()> {
        if self.left.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1)).is_ok() {
            let mut stored = self.inner.get(&hook.tenant, hook.id).await?.unwrap();
            stored.state.health.consecutive_failures += 1;
            stored.revision += 1;
            self.inner.replace(&stored, stored.revision - 1).await?;
        }
        self.inner.replace(hook, expected_revision).await
    }
}

#[async_trait]
impl HookStore for Busy {
    async fn create(&self, hook: &Hook, max_hooks: u32) -> hookbridge_core::Result<()> {
        self.inner.create(hook, max_hooks).await
    }
    async fn list(&self, tenant: &TenantId, limit: usize, cursor: Option<&str>) -> hookbridge_core::Result<Page<Hook>> {
        self.inner.list(tenant, limit, cursor).await
    }
    async fn list_all(&self, tenant: &TenantId) -> hookbridge_core::Result<Vec<Hook>> {
        self.inner.list_all(tenant).await
    }
    async fn stored_bytes(
        &self,
        tenant: &TenantId,
        except: Option<HookId>,
        most: usize,
    ) -> hookbridge_core::Result<usize> {
        self.inner.stored_bytes(tenant, except, most).await
    }
    async fn delete(&self, tenant: &TenantId, id: HookId) -> hookbridge_core::Result<bool> {
        self.inner.delete(tenant, id).await
    }
    async fn scan(&self, cursor: Option<&str>, limit: usize) -> hookbridge_core::Result<Page<Hook>> {
        self.inner.scan(cursor, limit).await
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_change_to_a_hook_the_platform_keeps_writing_is_not_refused() {
    let h = EmbeddedHarness::start().await;
    let mut ports = ApiPorts::of(h.backend());
    let busy = Arc::new(Busy { inner: ports.hooks.clone(), left: AtomicU32::new(0) });
    ports.hooks = busy.clone();
    let (api, token) = (api_on(ports), token("hooks:read hooks:write"));
    let (status, hook) =
        call(&api, "POST", "/v1/hooks", &token, r#"{"name": "h", "url": "https://example.com/in"}"#).await;
    assert_eq!(status, 201, "{hook}");
    let path = format!("/v1/hooks/{}", hook["id"].as_str().unwrap());

    busy.left.store(7, Ordering::SeqCst);
    // The same URL (a new one would start the hook's health over), other event types.
    let body = r#"{"name": "h", "url": "https://example.com/in", "event_types": ["user.*"]}"#;
    let (status, replaced) = call(&api, "PUT", &path, &token, body).await;
    assert_eq!((status, replaced["event_types"][0].as_str()), (200, Some("user.*")), "{replaced}");
    assert_eq!(busy.left.load(Ordering::SeqCst), 0, "the platform wrote seven times first");
    let tenant: TenantId = "acme".parse().unwrap();
    let stored = h.backend().hooks.get(&tenant, hook["id"].as_str().unwrap().parse().unwrap()).await.unwrap().unwrap();
    assert_eq!(stored.state.health.consecutive_failures, 7, "and none of its writes was lost");

    busy.left.store(7, Ordering::SeqCst);
    let (status, body) = call(&api, "DELETE", &path, &token, "").await;
    assert_eq!(status, 204, "{body}");
    assert_eq!(call(&api, "GET", &path, &token, "").await.0, 404);
}
