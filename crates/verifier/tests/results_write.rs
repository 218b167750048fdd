//! A check whose results cannot be written (the store refusing, or five version conflicts
//! in a row) comes back, and the hook reads as it did meanwhile. It was left AUTHORIZING,
//! and the check that came back "put back" that AUTHORIZING whenever it found nothing
//! either: after its last receive the hook read AUTHORIZING for good.

#![allow(clippy::unwrap_used)] // Tests fail loudly on purpose.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use async_trait::async_trait;
use hookbridge_core::hook::{ConnectionState, Hook};
use hookbridge_core::ids::{HookId, TenantId};
use hookbridge_core::ports::HookAccess;
use hookbridge_testkit::contract::make_hook;
use hookbridge_testkit::{EmbeddedHarness, Harness};

/// The store, refusing the next `refusals` writes of a hook that does not read AUTHORIZING
/// (the check's results, and putting the hook back).
struct Refusing {
    inner: Arc<dyn HookAccess>,
    refusals: AtomicUsize,
}

#[async_trait]
impl HookAccess for Refusing {
    async fn get(&self, tenant: &TenantId, id: HookId) -> hookbridge_core::Result<Option<Hook>> {
        self.inner.get(tenant, id).await
    }

    async fn get_many(&self, keys: &[(TenantId, HookId)]) -> hookbridge_core::Result<Vec<Arc<Hook>>> {
        self.inner.get_many(keys).await
    }

    async fn replace(&self, hook: &Hook, expected_revision: u64) -> hookbridge_core::Result<()> {
        let refused = hook.state.connection_state != ConnectionState::Authorizing
            && self.refusals.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1)).is_ok();
        if refused {
            return Err(hookbridge_core::Error::backend("hooks.replace", "refused by the test"));
        }
        self.inner.replace(hook, expected_revision).await
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_check_whose_results_are_not_written_leaves_the_hook_as_it_was() {
    let h = EmbeddedHarness::start().await;
    let (mut hook, _) = make_hook(&h, "acme", "checked").await;
    hook.state.connection_state = ConnectionState::Authorized;
    h.backend().hooks.create(&hook, 1000).await.unwrap();
    let refusing = Arc::new(Refusing { inner: h.backend().hooks.clone(), refusals: AtomicUsize::new(1) });
    let mut v = common::verifier_on(h.backend());
    v.ports.hooks = refusing.clone();
    let state =
        || async { h.backend().hooks.get(&hook.tenant, hook.id).await.unwrap().unwrap().state.connection_state };

    // The results are refused: the check comes back, and the hook reads as it did.
    assert_eq!(verifier::handle(&v, &[common::hook_updated(&hook, "m1", 1)]).await.failed, ["m1"]);
    assert_eq!(state().await, ConnectionState::Authorized, "not AUTHORIZING");

    // Refused twice over (the results, then putting it back): AUTHORIZING is left. The next
    // check whose results are refused puts back what the hook was before the check that
    // left it (noted beside it), not AUTHORIZING.
    refusing.refusals.store(2, Ordering::SeqCst);
    assert_eq!(verifier::handle(&v, &[common::hook_updated(&hook, "m2", 1)]).await.failed, ["m2"]);
    assert_eq!(state().await, ConnectionState::Authorizing);
    refusing.refusals.store(1, Ordering::SeqCst);
    assert_eq!(verifier::handle(&v, &[common::hook_updated(&hook, "m3", 1)]).await.failed, ["m3"]);
    assert_eq!(state().await, ConnectionState::Authorized, "as before the check that left it");

    // One left AUTHORIZING by a version that noted nothing beside it reads as a check
    // being due.
    let mut older = h.backend().hooks.get(&hook.tenant, hook.id).await.unwrap().unwrap();
    older.state.connection_state = ConnectionState::Authorizing;
    older.state.checked_from = None;
    h.backend().hooks.replace(&older, older.revision).await.unwrap();
    refusing.refusals.store(1, Ordering::SeqCst);
    assert_eq!(verifier::handle(&v, &[common::hook_updated(&hook, "m3b", 1)]).await.failed, ["m3b"]);
    assert_eq!(state().await, ConnectionState::Updating, "a check is due");

    // And the next whose results are written ends it.
    assert!(verifier::handle(&v, &[common::hook_updated(&hook, "m4", 1)]).await.failed.is_empty());
    assert_eq!(state().await, ConnectionState::Authorized);
}

/// The store, with the hook's secrets rotated just before each of the next `rotations`
/// writes of its check's results (which then meet a newer revision, and read it).
struct Rotating {
    inner: Arc<dyn HookAccess>,
    rotations: AtomicUsize,
}

#[async_trait]
impl HookAccess for Rotating {
    async fn get(&self, tenant: &TenantId, id: HookId) -> hookbridge_core::Result<Option<Hook>> {
        self.inner.get(tenant, id).await
    }

    async fn get_many(&self, keys: &[(TenantId, HookId)]) -> hookbridge_core::Result<Vec<Arc<Hook>>> {
        self.inner.get_many(keys).await
    }

    async fn replace(&self, hook: &Hook, expected_revision: u64) -> hookbridge_core::Result<()> {
        let rotate = hook.state.connection_state != ConnectionState::Authorizing
            && self.rotations.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1)).is_ok();
        if rotate {
            let mut stored = self.inner.get(&hook.tenant, hook.id).await?.unwrap();
            stored.sealed.0.push(0);
            stored.revision += 1;
            self.inner.replace(&stored, stored.revision - 1).await?;
        }
        self.inner.replace(hook, expected_revision).await
    }
}

/// An OAuth hook whose secrets change on every round of its check: the check gives up
/// and comes back (its message fails), and the hook reads as it did. It was acknowledged
/// and left AUTHORIZING, with no event to bring a check again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_check_whose_secrets_keep_changing_comes_back_and_leaves_the_hook_as_it_was() {
    let h = EmbeddedHarness::start().await;
    // A refusal is a finding, so each round gets as far as writing its results.
    let idp = hookbridge_testkit::Receiver::start().await;
    idp.always(hookbridge_testkit::Reply::body(401, r#"{"error": "invalid_client"}"#));
    let (mut hook, _) = hookbridge_testkit::contract::make_hook_from(
        &h,
        "acme",
        HookId::generate(),
        serde_json::json!({"name": "rotating", "url": "http://127.0.0.1:9/hook", "auth": {"type": "OAUTH_CLIENT_CREDENTIALS",
            "token_url": idp.url("/token"), "client_id": "c", "client_secret": "client-secret"}}),
    )
    .await;
    hook.state.connection_state = ConnectionState::Authorized;
    h.backend().hooks.create(&hook, 1000).await.unwrap();
    let mut v = common::verifier_on(h.backend());
    v.ports.hooks = Arc::new(Rotating { inner: h.backend().hooks.clone(), rotations: AtomicUsize::new(3) });

    assert_eq!(verifier::handle(&v, &[common::hook_updated(&hook, "m1", 1)]).await.failed, ["m1"]);
    let state = h.backend().hooks.get(&hook.tenant, hook.id).await.unwrap().unwrap().state.connection_state;
    assert_eq!(state, ConnectionState::Authorized, "not AUTHORIZING");
}
