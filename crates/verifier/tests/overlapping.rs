//! Two checks of one hook at once: a change's, then one asked for (`POST /verify`) while
//! the first waits on a slow endpoint. The later challenge's outcome stands, and the
//! hook's news is told once.

#![allow(clippy::unwrap_used)] // Tests fail loudly on purpose.

mod common;

use std::time::Duration;

use chrono::Utc;
use hookbridge_core::hook::{ConnectionState, Hook, VerificationStatus};
use hookbridge_core::ids::EventId;
use hookbridge_core::ports::{Queue, Receipt, ReceivedMessage, Rule, RulePattern, SourceMatch};
use hookbridge_core::topology::QueueSpec;
use hookbridge_testkit::contract::make_hook;
use hookbridge_testkit::{EmbeddedHarness, Harness, Receiver, Reply};

/// A lifecycle event of `kind` for `hook`, as the verify queue hands it out.
fn lifecycle(kind: &str, hook: &Hook, id: &str) -> ReceivedMessage {
    let body = format!(
        r#"{{"version":"0","id":"{}","detail-type":"{kind}","source":"hookbridge","account":"123456789012","time":"{}","region":"us-east-1","resources":[],"detail":{{"tenant":"{}","hook_id":"{}","hook_version":1}}}}"#,
        EventId::generate(),
        Utc::now().format("%Y-%m-%dT%H:%M:%SZ"),
        hook.tenant,
        hook.id
    );
    ReceivedMessage { id: id.into(), body, receipt: Receipt(format!("r-{id}")), receive_count: 1, sent_at: Utc::now() }
}

/// A queue that gets the verifier's news about hooks.
async fn watching(h: &EmbeddedHarness) -> std::sync::Arc<dyn Queue> {
    let spec = QueueSpec {
        name: "news".into(),
        dlq: "news-dlq".into(),
        visibility_timeout: Duration::from_secs(30),
        max_receive_count: 5,
    };
    let (news, _) = h.queue(&spec).await;
    let kinds = ["hook.verified", "hook.verification.failed", "hook.authorized", "hook.deauthorized"];
    let pattern = RulePattern {
        source: SourceMatch::Exactly("hookbridge".into()),
        detail_types: kinds.map(str::to_owned).to_vec(),
    };
    h.rule(&Rule { name: "news-rule".into(), pattern, target_queue: "news".into() }).await;
    news
}

/// The kinds of news on `q` now.
async fn news(q: &dyn Queue) -> Vec<String> {
    let got = q.receive(10, Duration::from_millis(300)).await.unwrap();
    let mut kinds: Vec<String> = got
        .iter()
        .map(|m| {
            serde_json::from_str::<serde_json::Value>(&m.body).unwrap()["detail-type"].as_str().unwrap().to_owned()
        })
        .collect();
    kinds.sort();
    kinds
}

/// Checks `hook` for the lifecycle event `first`, and for `then` 300 ms later while the
/// first waits on its endpoint; both must end without handing their messages back.
async fn two_checks_at_once(v: &verifier::Verifier, hook: &Hook, first: &str, then: &str) {
    let first = [lifecycle(first, hook, "m1")];
    let second = async {
        tokio::time::sleep(Duration::from_millis(300)).await;
        verifier::handle(v, &[lifecycle(then, hook, "m2")]).await
    };
    let (a, b) = tokio::join!(verifier::handle(v, &first), second);
    assert!(a.failed.is_empty() && b.failed.is_empty());
}

/// A hook that must prove ownership, stored, at `receiver`.
async fn required_hook(h: &EmbeddedHarness, receiver: &Receiver) -> Hook {
    let (mut hook, _) = make_hook(h, "acme", "overlap").await;
    hook.config.url = receiver.url("/hook");
    hook.config.verification.required = true;
    hook.state.verification.status = VerificationStatus::Pending;
    h.backend().hooks.create(&hook, 1000).await.unwrap();
    hook
}

/// The change's challenge meets a slow 503; the one asked for after it passes first. The
/// slow failure, arriving last, was written over the pass: the hook read `FAILED` and its
/// deliveries were cancelled though its latest check had passed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_failure_does_not_overwrite_a_later_pass() {
    let h = EmbeddedHarness::start().await;
    let receiver = Receiver::start().await;
    let header = "x-uid-challenge";
    receiver.script([Reply::status(503).after(Duration::from_millis(1500))]);
    receiver.always(Reply::EchoChallenge { header: header.into() });
    let news_q = watching(&h).await;
    let hook = required_hook(&h, &receiver).await;
    let v = common::verifier_on(h.backend());

    two_checks_at_once(&v, &hook, "hook.created", "hook.verification.requested").await;
    assert_eq!(receiver.received().len(), 2, "both challenges were sent");

    let stored = h.backend().hooks.get(&hook.tenant, hook.id).await.unwrap().unwrap();
    assert_eq!(stored.state.verification.status, VerificationStatus::Verified, "{:?}", stored.state);
    assert_eq!(stored.state.connection_state, ConnectionState::Authorized);
    assert!(stored.deliverable().is_ok());
    assert_eq!(news(news_q.as_ref()).await, ["hook.authorized", "hook.verified"], "the stale failure tells nothing");
}

/// Two checks asked for at once of an authorized hook: the second finds it AUTHORIZING
/// (the first running). Whichever ends last wrote `hook.authorized` again, for a hook
/// that had been authorized all along; now the news is that of the checks' outcome only.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_second_of_two_checks_tells_no_news_the_first_told() {
    let h = EmbeddedHarness::start().await;
    let receiver = Receiver::start().await;
    let header = "x-uid-challenge";
    let echo = Reply::EchoChallenge { header: header.into() };
    receiver.script([Reply::Delayed(Box::new(echo.clone()), Duration::from_millis(1500))]);
    receiver.always(echo);
    let news_q = watching(&h).await;
    let mut hook = required_hook(&h, &receiver).await;
    hook.state.connection_state = ConnectionState::Authorized;
    hook.state.verification.status = VerificationStatus::Verified;
    hook.state.verification.verified_at = Some(Utc::now());
    let stored = h.backend().hooks.get(&hook.tenant, hook.id).await.unwrap().unwrap();
    h.backend().hooks.replace(&hook, stored.revision).await.unwrap();
    let v = common::verifier_on(h.backend());

    two_checks_at_once(&v, &hook, "hook.verification.requested", "hook.verification.requested").await;
    assert_eq!(receiver.received().len(), 2, "both checks were made");
    let stored = h.backend().hooks.get(&hook.tenant, hook.id).await.unwrap().unwrap();
    assert_eq!(stored.state.connection_state, ConnectionState::Authorized);
    let told = news(news_q.as_ref()).await;
    assert!(!told.contains(&"hook.authorized".to_owned()), "it was authorized all along: {told:?}");
}

/// The store, with the hook changed by a tenant's `PUT` (UPDATING, another URL) just
/// before the check's first write, which then meets a newer revision and reads it.
struct ChangedMeanwhile {
    inner: std::sync::Arc<dyn hookbridge_core::ports::HookAccess>,
    moved_to: String,
    changed: std::sync::atomic::AtomicBool,
}

#[async_trait::async_trait]
impl hookbridge_core::ports::HookAccess for ChangedMeanwhile {
    async fn get(
        &self,
        tenant: &hookbridge_core::ids::TenantId,
        id: hookbridge_core::ids::HookId,
    ) -> hookbridge_core::Result<Option<Hook>> {
        self.inner.get(tenant, id).await
    }

    async fn get_many(
        &self,
        keys: &[(hookbridge_core::ids::TenantId, hookbridge_core::ids::HookId)],
    ) -> hookbridge_core::Result<Vec<std::sync::Arc<Hook>>> {
        self.inner.get_many(keys).await
    }

    async fn replace(&self, hook: &Hook, expected_revision: u64) -> hookbridge_core::Result<()> {
        if !self.changed.swap(true, std::sync::atomic::Ordering::SeqCst) {
            let mut put = self.inner.get(&hook.tenant, hook.id).await?.unwrap();
            put.config.url = self.moved_to.clone();
            put.state.connection_state = ConnectionState::Updating;
            put.revision += 1;
            self.inner.replace(&put, put.revision - 1).await?;
        }
        self.inner.replace(hook, expected_revision).await
    }
}

/// A check that began on an authorized hook, which a `PUT` made UPDATING before the check
/// noted it was running: the check runs on the change and, passing, tells the hook is
/// authorized again. Judged against the copy read before the change, it told nothing, and
/// the change's own check then found the hook AUTHORIZED and told nothing either.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_check_judges_the_hook_as_it_was_when_the_check_began_on_it() {
    let h = EmbeddedHarness::start().await;
    let receiver = Receiver::start().await;
    let news_q = watching(&h).await;
    let (mut hook, _) = make_hook(&h, "acme", "moved").await;
    hook.config.url = receiver.url("/hook");
    hook.state.connection_state = ConnectionState::Authorized;
    h.backend().hooks.create(&hook, 1000).await.unwrap();
    let mut v = common::verifier_on(h.backend());
    v.ports.hooks = std::sync::Arc::new(ChangedMeanwhile {
        inner: h.backend().hooks.clone(),
        moved_to: receiver.url("/moved"),
        changed: Default::default(),
    });

    let out = verifier::handle(&v, &[lifecycle("hook.updated", &hook, "m1")]).await;

    assert!(out.failed.is_empty(), "{:?}", out.failed);
    let stored = h.backend().hooks.get(&hook.tenant, hook.id).await.unwrap().unwrap();
    assert_eq!(
        (stored.config.url.as_str(), stored.state.connection_state),
        (receiver.url("/moved").as_str(), ConnectionState::Authorized)
    );
    assert_eq!(news(news_q.as_ref()).await, ["hook.authorized"], "UPDATING → AUTHORIZED is news");
}
