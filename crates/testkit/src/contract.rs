//! The backend contract: one set of tests for every port operation and queue semantic,
//! run against both backends (`contract_tests!`), so they cannot drift apart.
//!
//! Durations are whole seconds because SQS counts delay and visibility in seconds.

use std::time::Duration;

use chrono::{DateTime, Utc};
use hookbridge_core::Error;
use hookbridge_core::delivery::{
    Attempt, Delivery, DeliveryKey, DeliveryStatus, DeliveryUpdate, ErrorClass, KEPT_ATTEMPTS, Opening,
};
use hookbridge_core::envelope::{BusEntry, Envelope};
use hookbridge_core::hook::{
    Hook, HookDraft, HookSecrets, HookState, NetworkPolicy, SealedSecrets, SecretsOwner, ValidationContext,
};
use hookbridge_core::ids::{DeliveryId, EventId, HookId, TenantId};
use hookbridge_core::ports::{
    Claim, Order, OutgoingMessage, Queue, Rule, RulePattern, SourceMatch, StoredResponse, Window,
};
use hookbridge_core::topology::QueueSpec;
use serde_json::value::RawValue;

use crate::Harness;

/// Generates one `#[tokio::test]` per contract case for a harness made by `$start`.
#[macro_export]
macro_rules! contract_tests {
    ($start:expr) => {
        $crate::contract_tests!(@cases $start;
            queue_send_receive_ack,
            queue_batches_larger_than_ten,
            queue_send_each_names_the_messages_not_sent,
            queue_delay_holds_messages_back,
            queue_visibility_timeout_redelivers_with_higher_count,
            queue_retry_after_postpones_and_zero_redelivers_at_once,
            queue_dead_letters_after_max_receives,
            queue_long_poll_returns_a_message_sent_while_waiting,
            bus_routes_product_and_lifecycle_events_by_rule,
            bus_refuses_events_over_256_kib,
            hooks_create_get_and_tenant_isolation,
            hooks_names_are_unique_per_tenant_and_freed_by_delete,
            hooks_replace_checks_the_version,
            hooks_list_paginates_in_creation_order,
            hooks_get_many_returns_what_exists,
            hooks_get_many_sees_every_change,
            hooks_store_no_secret_in_clear,
            deliveries_insert_record_and_get,
            deliveries_list_a_time_window_newest_first_with_pagination,
            deliveries_list_leaves_out_a_record_it_cannot_read,
            deliveries_record_recreates_a_missing_delivery,
            deliveries_an_opening_record_is_the_whole_delivery,
            deliveries_are_kept_whole_for_14_days_from_their_creation,
            deliveries_keep_their_latest_attempts,
            events_put_get_and_isolation,
            idempotency_claims_completes_and_releases,
            hooks_create_stops_at_the_tenant_quota,
            hooks_stored_bytes_are_counted_per_tenant_and_bound_routing,
            deliveries_a_resend_stored_after_its_outcome_leaves_the_outcome,
            limiter_paces_and_admits_across_handles,
            limiter_forgets_the_turns_given_out_ahead,
            sealed_secrets_open_only_for_their_hook,
            hooks_scan_pages_through_every_tenant,
            event_types_are_declared_and_seen_per_tenant,
            portal_links_open_once_and_sessions_expire,
            replay_jobs_save_only_from_the_step_they_read_or_again_the_same,
            a_replay_job_this_version_cannot_read_is_left_out_of_the_listing,
            replay_jobs_list_newest_first_a_page_at_a_time,
            a_replay_job_is_kept_a_week_after_it_last_moved
        );
    };
    (@cases $start:expr; $($case:ident),* $(,)?) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $case() {
                let h = $start.await;
                $crate::contract::$case(&h).await;
            }
        )*
    };
}

const SECOND: Duration = Duration::from_secs(1);
/// A hook quota no contract case reaches.
const ANY: u32 = 1000;

fn tenant(s: &str) -> TenantId {
    s.parse().expect("tenant")
}

async fn test_queue(
    h: &dyn Harness,
    visibility_secs: u64,
    max_receive_count: u32,
) -> (std::sync::Arc<dyn Queue>, std::sync::Arc<dyn Queue>) {
    let name = h.unique("q");
    h.queue(&QueueSpec {
        dlq: format!("{name}-dlq"),
        name,
        visibility_timeout: Duration::from_secs(visibility_secs),
        max_receive_count,
    })
    .await
}

fn msgs(bodies: &[&str]) -> Vec<OutgoingMessage> {
    bodies.iter().map(|b| OutgoingMessage::now((*b).to_owned())).collect()
}

/// Receives until `n` messages arrived or `timeout` passed.
async fn receive_n(q: &dyn Queue, n: usize, timeout: Duration) -> Vec<hookbridge_core::ports::ReceivedMessage> {
    let deadline = tokio::time::Instant::now() + timeout;
    let mut got = Vec::new();
    while got.len() < n && tokio::time::Instant::now() < deadline {
        got.extend(q.receive(10, SECOND).await.expect("receive"));
    }
    got
}

/// Sent messages are received once with count 1 and are gone once acknowledged.
pub async fn queue_send_receive_ack(h: &dyn Harness) {
    let (q, _) = test_queue(h, 30, 5).await;
    q.send_batch(&msgs(&["a", "b", "c"])).await.expect("send");
    let got = receive_n(q.as_ref(), 3, 10 * SECOND).await;
    let mut bodies: Vec<_> = got.iter().map(|m| m.body.as_str()).collect();
    bodies.sort_unstable();
    assert_eq!(bodies, ["a", "b", "c"]);
    assert!(got.iter().all(|m| m.receive_count == 1));
    assert_eq!(q.depth().await.expect("depth").in_flight, 3);
    let receipts: Vec<_> = got.iter().map(|m| m.receipt.clone()).collect();
    q.ack(&receipts).await.expect("ack");
    assert!(q.receive(10, Duration::ZERO).await.expect("receive").is_empty());
    assert_eq!(q.depth().await.expect("depth").total(), 0);
}

/// More than ten messages are sent in batches and all arrive.
pub async fn queue_batches_larger_than_ten(h: &dyn Harness) {
    let (q, _) = test_queue(h, 30, 5).await;
    let bodies: Vec<String> = (0..25).map(|i| format!("m{i}")).collect();
    let out: Vec<_> = bodies.iter().map(|b| OutgoingMessage::now(b.clone())).collect();
    q.send_batch(&out).await.expect("send 25");
    let got = receive_n(q.as_ref(), 25, 20 * SECOND).await;
    let mut seen: Vec<_> = got.iter().map(|m| m.body.clone()).collect();
    seen.sort();
    seen.dedup();
    assert_eq!(seen.len(), 25);
    assert!(got.iter().all(|m| bodies.contains(&m.body)));
}

/// Messages are judged one by one: two with a delay over 15 minutes, in two batches, are
/// named as not sent, and the other ten arrive.
pub async fn queue_send_each_names_the_messages_not_sent(h: &dyn Harness) {
    let (q, _) = test_queue(h, 30, 5).await;
    let too_long = hookbridge_core::ports::MAX_SEND_DELAY + Duration::from_millis(1);
    let out: Vec<OutgoingMessage> = (0..12)
        .map(|i| {
            let m = OutgoingMessage::now(format!("m{i}"));
            match i {
                3 | 11 => OutgoingMessage { delay: too_long, ..m },
                // One byte over what a queue takes.
                7 => OutgoingMessage::now("x".repeat(hookbridge_core::ports::MAX_MESSAGE_BYTES + 1)),
                _ => m,
            }
        })
        .collect();
    let unsent = q.send_each(&out).await.expect_err("three cannot be sent");
    assert_eq!(unsent.indices, [3, 7, 11]);
    let got = receive_n(q.as_ref(), 9, 20 * SECOND).await;
    let mut seen: Vec<&str> = got.iter().map(|m| m.body.as_str()).collect();
    seen.sort_unstable();
    assert_eq!(seen, ["m0", "m1", "m10", "m2", "m4", "m5", "m6", "m8", "m9"]);
    assert_eq!(q.depth().await.expect("depth").total(), 9, "nothing else was queued");
}

/// A delayed message is not receivable before its delay.
pub async fn queue_delay_holds_messages_back(h: &dyn Harness) {
    let (q, _) = test_queue(h, 30, 5).await;
    // Long enough that the two calls below fit in it on a busy emulator.
    q.send_batch(&[OutgoingMessage { delay: 5 * SECOND, ..OutgoingMessage::now("later".into()) }]).await.expect("send");
    assert!(q.receive(10, Duration::ZERO).await.expect("receive").is_empty(), "delivered before its delay");
    assert_eq!(q.depth().await.expect("depth").delayed, 1);
    let got = receive_n(q.as_ref(), 1, 20 * SECOND).await;
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].body, "later");
}

/// A received message that is not acknowledged comes back after the visibility timeout.
pub async fn queue_visibility_timeout_redelivers_with_higher_count(h: &dyn Harness) {
    let (q, _) = test_queue(h, 5, 5).await;
    q.send_batch(&msgs(&["x"])).await.expect("send");
    let first = receive_n(q.as_ref(), 1, 10 * SECOND).await;
    assert_eq!(first[0].receive_count, 1);
    assert!(q.receive(10, Duration::ZERO).await.expect("receive").is_empty(), "visible while in flight");
    let again = receive_n(q.as_ref(), 1, 20 * SECOND).await;
    assert_eq!(again.len(), 1);
    assert_eq!(again[0].id, first[0].id);
    assert_eq!(again[0].receive_count, 2);
}

/// `retry_after` postpones redelivery; a zero delay makes the message receivable at once.
pub async fn queue_retry_after_postpones_and_zero_redelivers_at_once(h: &dyn Harness) {
    let (q, _) = test_queue(h, 60, 10).await;
    q.send_batch(&msgs(&["r"])).await.expect("send");
    let m = receive_n(q.as_ref(), 1, 10 * SECOND).await.remove(0);
    q.retry_after(&m.receipt, Duration::ZERO).await.expect("retry now");
    let m2 = receive_n(q.as_ref(), 1, 5 * SECOND).await.remove(0);
    assert_eq!(m2.receive_count, 2);
    q.retry_after(&m2.receipt, 5 * SECOND).await.expect("retry later");
    assert!(q.receive(10, Duration::ZERO).await.expect("receive").is_empty(), "redelivered before its delay");
    let m3 = receive_n(q.as_ref(), 1, 20 * SECOND).await;
    assert_eq!(m3.len(), 1);
    assert_eq!(m3[0].receive_count, 3);
}

/// Received `max_receive_count` times, the next receive moves the message to the DLQ.
pub async fn queue_dead_letters_after_max_receives(h: &dyn Harness) {
    let (q, dlq) = test_queue(h, 60, 2).await;
    q.send_batch(&msgs(&["poison"])).await.expect("send");
    for n in 1..=2 {
        let m = receive_n(q.as_ref(), 1, 5 * SECOND).await.remove(0);
        assert_eq!(m.receive_count, n);
        q.retry_after(&m.receipt, Duration::ZERO).await.expect("return");
    }
    assert!(q.receive(10, SECOND).await.expect("receive").is_empty(), "received a third time");
    let dead = receive_n(dlq.as_ref(), 1, 10 * SECOND).await;
    assert_eq!(dead.len(), 1);
    assert_eq!(dead[0].body, "poison");
}

/// A receive that waits gets a message sent while it waits.
pub async fn queue_long_poll_returns_a_message_sent_while_waiting(h: &dyn Harness) {
    let (q, _) = test_queue(h, 30, 5).await;
    let sender = q.clone();
    let send = tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(300)).await;
        sender.send_batch(&msgs(&["late"])).await.expect("send");
    });
    let got = q.receive(10, 5 * SECOND).await.expect("receive");
    send.await.expect("sender");
    // From the receive that was waiting, not a later one.
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].body, "late");
}

fn entry(source: &str, detail_type: &str, detail: &str) -> BusEntry {
    BusEntry {
        detail_type: detail_type.to_owned(),
        source: source.to_owned(),
        time: None,
        resources: vec![],
        detail: RawValue::from_string(detail.to_owned()).expect("json"),
    }
}

/// Rules route by source and event type; what arrives is the full envelope.
pub async fn bus_routes_product_and_lifecycle_events_by_rule(h: &dyn Harness) {
    let (product_q, _) = test_queue(h, 30, 5).await;
    let (life_q, _) = test_queue(h, 30, 5).await;
    let source = h.unique("src");
    h.rule(&Rule {
        name: h.unique("r1"),
        pattern: RulePattern { source: SourceMatch::Exactly(source.clone()), detail_types: vec![] },
        target_queue: product_q.name().to_owned(),
    })
    .await;
    h.rule(&Rule {
        name: h.unique("r2"),
        pattern: RulePattern {
            source: SourceMatch::Exactly(source.clone()),
            detail_types: vec!["hook.created".into()],
        },
        target_queue: life_q.name().to_owned(),
    })
    .await;
    let ids = h
        .backend()
        .bus
        .publish(vec![
            entry(&source, "user.session.start", r#"{"tenant":"acme","n":1}"#),
            entry(&source, "hook.created", r#"{"tenant":"acme","n":2}"#),
        ])
        .await
        .expect("publish");
    assert_eq!(ids.len(), 2);

    let got = receive_n(product_q.as_ref(), 2, 10 * SECOND).await;
    assert_eq!(got.len(), 2, "the catch-all rule gets both");
    let life = receive_n(life_q.as_ref(), 1, 10 * SECOND).await;
    assert_eq!(life.len(), 1);
    let env = Envelope::from_bus_json(&life[0].body, "acct", "reg").expect("envelope");
    assert_eq!(env.detail_type, "hook.created");
    assert_eq!(env.id, ids[1]);
    assert_eq!(env.source, source);
    assert_eq!(env.version, "0");
    assert!(!env.account.is_empty() && !env.region.is_empty());
    assert_eq!(env.routing().expect("routing").tenant.as_str(), "acme");
    let detail: serde_json::Value = serde_json::from_str(env.detail.get()).expect("detail");
    assert_eq!(detail["n"], 2);
}

/// An entry over 256 KiB is refused before anything is published.
pub async fn bus_refuses_events_over_256_kib(h: &dyn Harness) {
    let big = format!(r#"{{"tenant":"acme","pad":"{}"}}"#, "x".repeat(256 * 1024));
    let err = h
        .backend()
        .bus
        .publish(vec![entry("p", "t", r#"{"tenant":"acme"}"#), entry("p", "t", &big)])
        .await
        .expect_err("too large");
    assert!(matches!(err, Error::TooLarge(_)), "{err:?}");
}

/// A hook for store tests, with its secrets sealed by the backend.
pub async fn make_hook(h: &dyn Harness, tenant_id: &str, name: &str) -> (Hook, HookSecrets) {
    make_hook_as(h, tenant_id, name, HookId::generate()).await
}

/// The same, with the id `id` (its secrets are sealed for it: a blob is bound to its hook).
pub async fn make_hook_as(h: &dyn Harness, tenant_id: &str, name: &str, id: HookId) -> (Hook, HookSecrets) {
    let draft = serde_json::json!({
        "name": name,
        "url": "https://receiver.example/hook",
        "auth": {"type": "BASIC", "username": "u", "password": format!("pw-{name}-secret")},
        "headers": [{"name": "X-Hidden", "value": format!("hv-{name}-secret"), "secret": true}],
    });
    make_hook_from(h, tenant_id, id, draft).await
}

/// A hook written as `draft` (the API's JSON), with its secrets sealed by the backend.
pub async fn make_hook_from(
    h: &dyn Harness,
    tenant_id: &str,
    id: HookId,
    draft: serde_json::Value,
) -> (Hook, HookSecrets) {
    let (mut hook, secrets) = unsealed_hook(tenant_id, id, draft);
    hook.sealed = h.backend().sealer.seal(SecretsOwner::of(&hook), &secrets).await.expect("seal");
    (hook, secrets)
}

/// The hook the API would make of `draft` (validated for loopback), its secrets not sealed
/// (for code that is handed them opened, as the worker and the verifier are).
pub fn unsealed_hook(tenant_id: &str, id: HookId, draft: serde_json::Value) -> (Hook, HookSecrets) {
    let policy = NetworkPolicy::local();
    let draft: HookDraft = serde_json::from_value(draft).expect("draft");
    let (config, secrets) = draft.validate(ValidationContext { network: &policy }, None).expect("valid");
    let now = Utc::now();
    let hook = Hook {
        newer: Default::default(),
        id,
        tenant: tenant(tenant_id),
        state: HookState::new_for(&config),
        config,
        sealed: SealedSecrets(Vec::new()),
        created_by: "tester".into(),
        created_at: now,
        updated_at: now,
        version: 1,
        revision: 1,
    };
    (hook, secrets)
}

/// A created hook reads back whole, and only under its own tenant.
pub async fn hooks_create_get_and_tenant_isolation(h: &dyn Harness) {
    let t = h.unique("tenant");
    let (hook, secrets) = make_hook(h, &t, "one").await;
    let store = &h.backend().hooks;
    store.create(&hook, ANY).await.expect("create");
    let got = store.get(&hook.tenant, hook.id).await.expect("get").expect("present");
    assert_eq!(got, hook);
    let opened = h.backend().sealer.open(SecretsOwner::of(&got), &got.sealed).await.expect("open");
    assert_eq!(opened, secrets);
    assert_eq!(store.get(&tenant("someone-else"), hook.id).await.expect("get"), None);
    assert_eq!(store.get(&hook.tenant, HookId::generate()).await.expect("get"), None);
}

/// Two hooks of a tenant cannot share a name; another tenant can use it; delete frees it.
pub async fn hooks_names_are_unique_per_tenant_and_freed_by_delete(h: &dyn Harness) {
    let t = h.unique("tenant");
    let store = &h.backend().hooks;
    let (a, _) = make_hook(h, &t, "same").await;
    let (b, _) = make_hook(h, &t, "same").await;
    store.create(&a, ANY).await.expect("first");
    assert!(matches!(store.create(&b, ANY).await, Err(Error::NameTaken)));
    let other_tenant = h.unique("tenant");
    let (c, _) = make_hook(h, &other_tenant, "same").await;
    store.create(&c, ANY).await.expect("other tenant may use the name");

    // Racing creates of one name: exactly one wins.
    let racers: Vec<Hook> = {
        let mut v = Vec::new();
        for _ in 0..5 {
            v.push(make_hook(h, &t, "raced").await.0);
        }
        v
    };
    let results = futures_join(racers.iter().map(|r| store.create(r, ANY))).await;
    assert_eq!(results.iter().filter(|r| r.is_ok()).count(), 1, "{results:?}");
    assert!(results.iter().filter(|r| r.is_err()).all(|r| matches!(r, Err(Error::NameTaken))));

    assert!(store.delete(&a.tenant, a.id).await.expect("delete"));
    assert!(!store.delete(&a.tenant, a.id).await.expect("delete again"));
    assert_eq!(store.get(&a.tenant, a.id).await.expect("get"), None);
    store.create(&b, ANY).await.expect("name is free again");
}

async fn futures_join<F: std::future::Future>(futs: impl Iterator<Item = F>) -> Vec<F::Output> {
    let mut set = Vec::new();
    for f in futs {
        set.push(f);
    }
    let mut out = Vec::new();
    // Poll them concurrently.
    let joined = async {
        let mut pinned: Vec<_> = set.into_iter().map(Box::pin).collect();
        let mut results: Vec<Option<F::Output>> = (0..pinned.len()).map(|_| None).collect();
        std::future::poll_fn(|cx| {
            let mut pending = false;
            for (i, f) in pinned.iter_mut().enumerate() {
                if results[i].is_none() {
                    match f.as_mut().poll(cx) {
                        std::task::Poll::Ready(v) => results[i] = Some(v),
                        std::task::Poll::Pending => pending = true,
                    }
                }
            }
            if pending { std::task::Poll::Pending } else { std::task::Poll::Ready(()) }
        })
        .await;
        results.into_iter().flatten().collect::<Vec<_>>()
    };
    out.extend(joined.await);
    out
}

/// A replace naming the stored revision wins; one naming an older revision loses.
pub async fn hooks_replace_checks_the_version(h: &dyn Harness) {
    let t = h.unique("tenant");
    let store = &h.backend().hooks;
    let (hook, _) = make_hook(h, &t, "versioned").await;
    store.create(&hook, ANY).await.expect("create");
    let mut v2 = hook.clone();
    v2.config.description = Some("second".into());
    v2.revision = 2;
    store.replace(&v2, 1).await.expect("replace revision 1 -> 2");
    // The same write again (an SDK resending it after its answer was lost) is that write,
    // stored, not a conflict.
    store.replace(&v2, 1).await.expect("the same write, repeated");
    let mut stale = hook.clone();
    stale.config.description = Some("stale".into());
    stale.revision = 2;
    assert!(matches!(store.replace(&stale, 1).await, Err(Error::VersionConflict)));
    let got = store.get(&hook.tenant, hook.id).await.expect("get").expect("present");
    assert_eq!(got.config.description.as_deref(), Some("second"));
    assert_eq!(got.revision, 2);
    store.delete(&hook.tenant, hook.id).await.expect("delete");
    assert!(matches!(store.replace(&v2, 2).await, Err(Error::VersionConflict)), "replace after delete");
}

/// Listing pages through every hook once, oldest first; a foreign cursor is refused.
pub async fn hooks_list_paginates_in_creation_order(h: &dyn Harness) {
    let t = h.unique("tenant");
    let store = &h.backend().hooks;
    let mut ids = Vec::new();
    for i in 0..5 {
        let (hook, _) = make_hook(h, &t, &format!("h{i}")).await;
        store.create(&hook, ANY).await.expect("create");
        ids.push(hook.id);
    }
    let mut seen = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let page = store.list(&tenant(&t), 2, cursor.as_deref()).await.expect("list");
        assert!(page.items.len() <= 2);
        seen.extend(page.items.iter().map(|h| h.id));
        match page.next_cursor {
            Some(c) => cursor = Some(c),
            None => break,
        }
    }
    assert_eq!(seen, ids);
    assert_eq!(store.list_all(&tenant(&t)).await.expect("all").len(), 5);
    assert!(matches!(store.list(&tenant(&t), 2, Some("not-a-cursor")).await, Err(Error::InvalidCursor)));

    // A hook this version cannot read (a newer one wrote it) is left out of both, and the
    // pages go on past it: it made every listing of the tenant an error.
    h.make_unreadable(&tenant(&t), ids[1]).await;
    let (mut seen, mut cursor) = (Vec::new(), None::<String>);
    loop {
        let page = store.list(&tenant(&t), 2, cursor.as_deref()).await.expect("list past an unreadable hook");
        seen.extend(page.items.iter().map(|h| h.id));
        match page.next_cursor {
            Some(c) => cursor = Some(c),
            None => break,
        }
    }
    let readable: Vec<_> = ids.iter().copied().filter(|id| *id != ids[1]).collect();
    assert_eq!(seen, readable);
    let all: Vec<_> =
        store.list_all(&tenant(&t)).await.expect("all past an unreadable hook").iter().map(|h| h.id).collect();
    assert_eq!(all, readable);
}

/// `get_many` returns the hooks that exist, each once, and skips the rest. A key named
/// twice made DynamoDB refuse the whole read, where SQLite gave the hook twice.
pub async fn hooks_get_many_returns_what_exists(h: &dyn Harness) {
    let t = h.unique("tenant");
    let store = &h.backend().hooks;
    let (a, _) = make_hook(h, &t, "a").await;
    let (b, _) = make_hook(h, &t, "b").await;
    store.create(&a, ANY).await.expect("a");
    store.create(&b, ANY).await.expect("b");
    let mut got = store
        .get_many(&[
            (a.tenant.clone(), a.id),
            (b.tenant.clone(), b.id),
            (a.tenant.clone(), HookId::generate()),
            (a.tenant.clone(), a.id),
        ])
        .await
        .expect("get many");
    got.sort_by_key(|h| h.id);
    assert_eq!(got.iter().map(|h| h.id).collect::<Vec<_>>(), vec![a.id, b.id]);
}

/// `get_many` and `list_for_routing`, asked again and again (the worker's and ingest's
/// batches), return each hook as it is stored now: every change shows at the next read, a
/// deleted hook is gone, and a hook asked for by another tenant is not found.
pub async fn hooks_get_many_sees_every_change(h: &dyn Harness) {
    let t = h.unique("tenant");
    let store = &h.backend().hooks;
    let (hook, _) = make_hook(h, &t, "changing").await;
    store.create(&hook, ANY).await.expect("create");
    let key = [(hook.tenant.clone(), hook.id)];
    let read = || async { store.get_many(&key).await.expect("get many") };
    assert_eq!(read().await.iter().map(|h| h.revision).collect::<Vec<_>>(), vec![1]);
    let mut changed = hook.clone();
    for (revision, description) in [(2, "second"), (3, "third")] {
        changed.config.description = Some(description.into());
        changed.revision = revision;
        store.replace(&changed, revision - 1).await.expect("replace");
        let got = read().await;
        assert_eq!(got.len(), 1);
        assert_eq!((got[0].revision, got[0].config.description.as_deref()), (revision, Some(description)));
        assert_eq!(*got[0], changed, "the whole hook as stored");
        let routed = store.list_for_routing(&hook.tenant, usize::MAX).await.expect("list for routing").hooks;
        assert_eq!(routed.iter().map(|h| h.as_ref()).collect::<Vec<_>>(), vec![&changed], "routed as stored");
    }
    let other = tenant(&h.unique("tenant"));
    assert!(store.get_many(&[(other, hook.id)]).await.expect("another tenant's key").is_empty());
    store.delete(&hook.tenant, hook.id).await.expect("delete");
    assert!(read().await.is_empty(), "a deleted hook is not returned");
    assert!(
        store.list_for_routing(&hook.tenant, usize::MAX).await.expect("list for routing").hooks.is_empty(),
        "nor routed to"
    );
}

/// The stored form of a hook holds no secret value in clear.
pub async fn hooks_store_no_secret_in_clear(h: &dyn Harness) {
    let t = h.unique("tenant");
    let (hook, secrets) = make_hook(h, &t, "secretive").await;
    h.backend().hooks.create(&hook, ANY).await.expect("create");
    let raw = h.raw_hook(&hook.tenant, hook.id).await;
    assert!(raw.contains("secretive"), "raw item should be the hook: {raw}");
    // Every run of base64 characters in the item, decoded as each alphabet reads it: a
    // sealer that only encoded the secrets would show them here.
    let decoded: Vec<Vec<u8>> = raw
        .split(|c: char| !(c.is_ascii_alphanumeric() || "+/-_=".contains(c)))
        .filter(|run| run.len() >= 16)
        .flat_map(|run| {
            use base64::Engine as _;
            use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD, URL_SAFE, URL_SAFE_NO_PAD};
            [STANDARD, STANDARD_NO_PAD, URL_SAFE, URL_SAFE_NO_PAD].into_iter().filter_map(move |e| e.decode(run).ok())
        })
        .collect();
    assert!(!decoded.is_empty(), "the sealed secrets are in the item: {raw}");
    let values = secrets.all_values();
    assert!(values.len() >= 2, "the hook has secrets to look for");
    for s in values {
        assert!(!raw.contains(s), "secret stored in clear");
        // Nor the base64 body of the signing secret.
        if let Some(b64) = s.strip_prefix("whsec_") {
            assert!(!raw.contains(b64));
        }
        assert!(
            !decoded.iter().any(|d| d.windows(s.len()).any(|w| w == s.as_bytes())),
            "a secret is stored only encoded, not sealed"
        );
    }
}

fn key(t: &TenantId, hook: HookId, id: DeliveryId) -> DeliveryKey {
    DeliveryKey {
        tenant: t.clone(),
        hook_id: hook,
        delivery_id: id,
        event_id: EventId::generate(),
        event_type: "user.login".into(),
    }
}

fn attempt(status: u16) -> Attempt {
    Attempt {
        attempt: 0,
        at: Utc::now(),
        duration_ms: 12,
        status_code: Some(status),
        error_class: (status >= 300).then_some(ErrorClass::Http5xx),
        response_excerpt: Some("boom".into()),
    }
}

/// Deliveries are inserted once, and attempts append in order.
pub async fn deliveries_insert_record_and_get(h: &dyn Harness) {
    let t = tenant(&h.unique("tenant"));
    let hook = HookId::generate();
    let store = &h.backend().deliveries;
    let k = key(&t, hook, DeliveryId::generate());
    let d = Delivery::pending(k.delivery_id, t.clone(), hook, k.event_id.clone(), k.event_type.clone(), Utc::now());
    store.insert(std::slice::from_ref(&d)).await.expect("insert");
    assert_eq!(store.get(hook, d.id).await.expect("get"), Some(d.clone()));

    let next = Utc::now() + chrono::Duration::seconds(5);
    store
        .record(&[DeliveryUpdate {
            delivery: k.clone(),
            attempt: Some(attempt(503)),
            status: DeliveryStatus::Retrying,
            next_attempt_at: Some(next),
            note: None,
            round: 0,
            at: Utc::now(),
            opening: None,
        }])
        .await
        .expect("record 1");
    store
        .record(&[DeliveryUpdate {
            delivery: k.clone(),
            attempt: Some(attempt(200)),
            status: DeliveryStatus::Succeeded,
            next_attempt_at: None,
            note: None,
            round: 0,
            at: Utc::now(),
            opening: None,
        }])
        .await
        .expect("record 2");
    // A redelivered ingest message inserting again changes nothing.
    store.insert(std::slice::from_ref(&d)).await.expect("insert again");

    let got = store.get(hook, d.id).await.expect("get").expect("present");
    assert_eq!(got.status, DeliveryStatus::Succeeded);
    assert_eq!(got.attempts.iter().map(|a| a.attempt).collect::<Vec<_>>(), vec![1, 2]);
    assert_eq!(got.attempts[0].status_code, Some(503));
    assert_eq!(got.attempts[1].status_code, Some(200));
    assert_eq!(got.next_attempt_at, None);
    assert_eq!(store.get(HookId::generate(), d.id).await.expect("get"), None);
}

/// A window returns only its deliveries, newest first (or oldest first), page by page.
pub async fn deliveries_list_a_time_window_newest_first_with_pagination(h: &dyn Harness) {
    let t = tenant(&h.unique("tenant"));
    let hook = HookId::generate();
    let store = &h.backend().deliveries;
    let now = Utc::now();
    let at = |hours_ago: i64| -> (DeliveryId, DateTime<Utc>) {
        let when = now - chrono::Duration::hours(hours_ago);
        (DeliveryId::from_parts(when.timestamp_millis() as u64, rand_u128()), when)
    };
    let mut made = Vec::new();
    for hours_ago in [30, 20, 5, 3, 2, 1] {
        let (id, when) = at(hours_ago);
        made.push(Delivery::pending(id, t.clone(), hook, EventId::generate(), "e".into(), when));
    }
    store.insert(&made).await.expect("insert");
    let window = Window { since: now - chrono::Duration::hours(24), until: now + chrono::Duration::seconds(1) };
    let mut seen = Vec::new();
    let mut cursor = None;
    loop {
        let page = store.list(hook, window, Order::NewestFirst, 2, cursor.as_deref()).await.expect("list");
        seen.extend(page.items.iter().map(|d| d.id));
        match page.next_cursor {
            Some(c) => cursor = Some(c),
            None => break,
        }
    }
    let mut expected: Vec<_> = made[1..].iter().map(|d| d.id).collect();
    expected.reverse();
    assert_eq!(seen, expected, "the 30-hour-old delivery is outside; newest first");
    let narrow = Window { since: now - chrono::Duration::hours(4), until: now - chrono::Duration::minutes(90) };
    let page = store.list(hook, narrow, Order::NewestFirst, 10, None).await.expect("narrow");
    assert_eq!(page.items.iter().map(|d| d.id).collect::<Vec<_>>(), vec![made[4].id, made[3].id]);
    assert!(matches!(
        store.list(hook, window, Order::NewestFirst, 2, Some("garbage")).await,
        Err(Error::InvalidCursor)
    ));
    // A cursor from outside the window (a next page asked for after the window moved
    // past it): the last page, empty.
    let old = made[0].id.to_string();
    let page = store.list(hook, window, Order::NewestFirst, 2, Some(&old)).await.expect("a cursor before the window");
    assert!(page.items.is_empty() && page.next_cursor.is_none());
    let late = DeliveryId::from_parts((now + chrono::Duration::hours(2)).timestamp_millis() as u64, 0).to_string();
    let page = store.list(hook, window, Order::OldestFirst, 2, Some(&late)).await.expect("a cursor after the window");
    assert!(page.items.is_empty() && page.next_cursor.is_none());

    // Oldest first, with an update on one of them (its items fold the same either way).
    let k = DeliveryKey {
        tenant: t.clone(),
        hook_id: hook,
        delivery_id: made[3].id,
        event_id: made[3].event_id.clone(),
        event_type: "e".into(),
    };
    store.record(&[DeliveryUpdate::cancelled(k, 0, "why".into(), now)]).await.expect("record");
    let mut seen = Vec::new();
    let mut cursor = None;
    loop {
        let page = store.list(hook, window, Order::OldestFirst, 2, cursor.as_deref()).await.expect("list");
        assert!(page.items.len() <= 2);
        seen.extend(page.items.iter().map(|d| (d.id, d.status)));
        match page.next_cursor {
            Some(c) => cursor = Some(c),
            None => break,
        }
    }
    let expected: Vec<_> = made[1..]
        .iter()
        .map(|d| (d.id, if d.id == made[3].id { DeliveryStatus::Cancelled } else { DeliveryStatus::Pending }))
        .collect();
    assert_eq!(seen, expected, "oldest first, each delivery once, folded with its updates");
}

/// A delivery record this version cannot read (a newer release's, read during a
/// rollback) is left out of listings, which go on past it, rather than failing every
/// listing of the hook's days; reading it alone is the error.
pub async fn deliveries_list_leaves_out_a_record_it_cannot_read(h: &dyn Harness) {
    let t = tenant(&h.unique("tenant"));
    let hook = HookId::generate();
    let store = &h.backend().deliveries;
    let now = Utc::now();
    let made: Vec<Delivery> = [3, 2, 1]
        .into_iter()
        .map(|hours_ago| {
            let when = now - chrono::Duration::hours(hours_ago);
            let id = DeliveryId::from_parts(when.timestamp_millis() as u64, rand_u128());
            Delivery::pending(id, t.clone(), hook, EventId::generate(), "e".into(), when)
        })
        .collect();
    store.insert(&made).await.expect("insert");
    let middle = &made[1];
    let k = DeliveryKey {
        tenant: t.clone(),
        hook_id: hook,
        delivery_id: middle.id,
        event_id: middle.event_id.clone(),
        event_type: "e".into(),
    };
    store.record(&[DeliveryUpdate::cancelled(k, 0, "why".into(), now)]).await.expect("record");
    h.make_delivery_unreadable(hook, middle.id).await;

    let window = Window { since: now - chrono::Duration::hours(24), until: now + chrono::Duration::seconds(1) };
    for order in [Order::NewestFirst, Order::OldestFirst] {
        for limit in [1, 10] {
            let mut seen = Vec::new();
            let mut cursor = None;
            loop {
                let page = store.list(hook, window, order, limit, cursor.as_deref()).await.expect("list");
                seen.extend(page.items.iter().map(|d| d.id));
                match page.next_cursor {
                    Some(c) => cursor = Some(c),
                    None => break,
                }
            }
            let mut expected = vec![made[0].id, made[2].id];
            if order == Order::NewestFirst {
                expected.reverse();
            }
            assert_eq!(seen, expected, "{order:?}, {limit} a page: the readable ones, each once");
        }
    }
    assert!(matches!(store.get(hook, middle.id).await, Err(Error::Corrupt { .. })), "read alone, it is the error");
    assert_eq!(store.get(hook, made[0].id).await.expect("get"), Some(made[0].clone()));
}

fn rand_u128() -> u128 {
    u128::from_le_bytes(*DeliveryId::generate().to_string().as_bytes().first_chunk::<16>().expect("16 bytes"))
}

/// Recording against a missing delivery recreates it rather than losing the attempt.
pub async fn deliveries_record_recreates_a_missing_delivery(h: &dyn Harness) {
    let t = tenant(&h.unique("tenant"));
    let hook = HookId::generate();
    let k = key(&t, hook, DeliveryId::generate());
    let store = &h.backend().deliveries;
    store
        .record(&[DeliveryUpdate {
            delivery: k.clone(),
            attempt: Some(attempt(200)),
            status: DeliveryStatus::Succeeded,
            next_attempt_at: None,
            note: None,
            round: 0,
            at: Utc::now(),
            opening: None,
        }])
        .await
        .expect("record");
    let got = store.get(hook, k.delivery_id).await.expect("get").expect("recreated");
    assert_eq!(got.status, DeliveryStatus::Succeeded);
    assert_eq!(got.event_id, k.event_id);
    assert_eq!(got.attempts.len(), 1);
}

/// The first record of a delivery ingest queued without writing down (decision 0021)
/// makes the whole delivery: dated when ingest queued it, with its envelope, and later
/// records change its status without losing either.
/// Every record of a delivery is kept for 14 days from its creation (its id's time), all
/// alike: one whose records span days is shown whole until then, then not at all.
pub async fn deliveries_are_kept_whole_for_14_days_from_their_creation(h: &dyn Harness) {
    let t = tenant(&h.unique("tenant"));
    let hook = HookId::generate();
    let store = &h.backend().deliveries;
    let now = Utc::now();
    let record = |k: &DeliveryKey, status, code: u16, at, opening: Option<Opening>| DeliveryUpdate {
        delivery: k.clone(),
        attempt: Some(attempt(code)),
        status,
        next_attempt_at: None,
        note: None,
        round: 0,
        at,
        opening,
    };
    let mut ids = Vec::new();
    for (n, created_days_ago) in [(1u128, 13), (2, 15)] {
        let created = now - chrono::Duration::days(created_days_ago);
        let k = key(&t, hook, DeliveryId::from_parts(created.timestamp_millis() as u64, n));
        let opening = Opening { created_at: created, envelope: Some(format!(r#"{{"id":"{}"}}"#, k.event_id)) };
        // Its first attempt when it was created, its last a day ago (a replay), in one call.
        store
            .record(&[
                record(&k, DeliveryStatus::Retrying, 503, created, Some(opening)),
                record(&k, DeliveryStatus::Failed, 500, now - chrono::Duration::days(1), None),
            ])
            .await
            .expect("record");
        ids.push((k, created));
    }
    let (kept, created) = &ids[0];
    let got = store.get(hook, kept.delivery_id).await.expect("get").expect("13 days old: kept");
    assert_eq!(got.attempts.len(), 2, "its first record too");
    assert_eq!(got.created_at.timestamp_millis(), created.timestamp_millis());
    assert!(got.envelope.is_some(), "the envelope its first record carried");
    assert!(store.get(hook, ids[1].0.delivery_id).await.expect("get").is_none(), "15 days old: gone, whole");
}

pub async fn deliveries_an_opening_record_is_the_whole_delivery(h: &dyn Harness) {
    let t = tenant(&h.unique("tenant"));
    let hook = HookId::generate();
    let k = key(&t, hook, DeliveryId::generate());
    let store = &h.backend().deliveries;
    let queued = Utc::now() - chrono::Duration::seconds(30);
    let envelope = format!(r#"{{"version":"0","id":"{}","detail":{{"tenant":"{t}"}}}}"#, k.event_id);
    let record = |status, code: Option<u16>, opening: Option<Opening>| DeliveryUpdate {
        delivery: k.clone(),
        attempt: code.map(attempt),
        status,
        next_attempt_at: None,
        note: None,
        round: 0,
        at: Utc::now(),
        opening,
    };
    let opening = Opening { created_at: queued, envelope: Some(envelope.clone()) };
    store.record(&[record(DeliveryStatus::Retrying, Some(503), Some(opening.clone()))]).await.expect("first record");
    let got = store.get(hook, k.delivery_id).await.expect("get").expect("opened");
    assert_eq!(got.status, DeliveryStatus::Retrying);
    assert_eq!(got.created_at.timestamp_millis(), queued.timestamp_millis(), "dated when ingest queued it");
    assert_eq!(got.envelope.as_deref(), Some(envelope.as_str()));
    assert_eq!(got.attempts.len(), 1);

    // The retry's record carries no opening; the same opening again (a redelivered first
    // message) adds its attempt and changes nothing else.
    store.record(&[record(DeliveryStatus::Retrying, Some(503), Some(opening))]).await.expect("again");
    store.record(&[record(DeliveryStatus::Succeeded, Some(200), None)]).await.expect("retry");
    let got = store.get(hook, k.delivery_id).await.expect("get").expect("present");
    assert_eq!(got.status, DeliveryStatus::Succeeded);
    assert_eq!(got.attempts.iter().map(|a| a.status_code).collect::<Vec<_>>(), [Some(503), Some(503), Some(200)]);
    assert_eq!(got.created_at.timestamp_millis(), queued.timestamp_millis());
    assert_eq!(got.envelope.as_deref(), Some(envelope.as_str()), "kept through later records");
    let listed = store
        .list(
            hook,
            // Past now: the window's end is exclusive to the millisecond, and on a fast
            // machine the delivery's id was made in the very millisecond this reads now.
            Window { since: queued - chrono::Duration::minutes(1), until: Utc::now() + chrono::Duration::seconds(1) },
            Order::NewestFirst,
            10,
            None,
        )
        .await
        .expect("list");
    assert_eq!(listed.items, vec![got], "a listing folds it the same way");
}

/// A delivery sent again and again keeps its latest [`KEPT_ATTEMPTS`], numbered among all
/// it made, read and listed alike.
pub async fn deliveries_keep_their_latest_attempts(h: &dyn Harness) {
    let t = tenant(&h.unique("tenant"));
    let hook = HookId::generate();
    let k = key(&t, hook, DeliveryId::generate());
    let store = &h.backend().deliveries;
    let made = KEPT_ATTEMPTS as u32 + 5;
    let updates: Vec<DeliveryUpdate> = (0..made)
        .map(|n| DeliveryUpdate {
            delivery: k.clone(),
            attempt: Some(attempt(if n + 1 == made { 200 } else { 503 })),
            status: if n + 1 == made { DeliveryStatus::Succeeded } else { DeliveryStatus::Failed },
            next_attempt_at: None,
            note: None,
            round: n,
            at: Utc::now(),
            opening: None,
        })
        .collect();
    store.record(&updates).await.expect("record");
    let got = store.get(hook, k.delivery_id).await.expect("get").expect("present");
    assert_eq!(got.attempts.len(), KEPT_ATTEMPTS);
    assert_eq!(got.attempts_made(), made);
    assert_eq!(got.attempts.iter().map(|a| a.attempt).collect::<Vec<_>>(), (6..=made).collect::<Vec<_>>());
    assert_eq!((got.status, got.last_attempt().and_then(|a| a.status_code)), (DeliveryStatus::Succeeded, Some(200)));
    // Past now, as above: the id may be of this very millisecond.
    let until = Utc::now() + chrono::Duration::seconds(1);
    let window = Window { since: Utc::now() - chrono::Duration::minutes(5), until };
    let listed = store.list(hook, window, Order::NewestFirst, 10, None).await.expect("list");
    assert_eq!(listed.items, vec![got], "a listing folds it the same way");
}

/// Envelopes read back byte for byte, only for their tenant, and not after they expire.
pub async fn events_put_get_and_isolation(h: &dyn Harness) {
    let t = tenant(&h.unique("tenant"));
    let body = format!(
        r#"{{"version":"0","id":"{}","detail-type":"user.login","source":"idp","account":"1","time":"2026-11-22T10:00:00Z","region":"r","resources":[],"detail":{{"tenant":"{t}","z":1,"a":2}}}}"#,
        EventId::generate()
    );
    let env = Envelope::from_bus_json(&body, "x", "y").expect("envelope");
    let store = &h.backend().events;
    store.put(&t, std::slice::from_ref(&env), Utc::now() + chrono::Duration::days(1)).await.expect("put");
    let got = store.get(&t, &env.id).await.expect("get").expect("present");
    assert_eq!(got.to_body(), body);
    assert!(store.get(&tenant("other"), &env.id).await.expect("get").is_none());

    let old = Envelope::from_bus_json(&body.replace(env.id.as_str(), "expired-event"), "x", "y").expect("envelope");
    store.put(&t, std::slice::from_ref(&old), Utc::now() - chrono::Duration::seconds(1)).await.expect("put expired");
    assert!(store.get(&t, &old.id).await.expect("get").is_none(), "expired items are filtered on read");
    // Stored again before its expired record is swept (an event ingested again after its
    // retention): kept anew, not dropped behind the old record and swept with it.
    store.put(&t, std::slice::from_ref(&old), Utc::now() + chrono::Duration::days(1)).await.expect("put again");
    assert!(store.get(&t, &old.id).await.expect("get").is_some(), "an expired record does not stand in the way");
    // Nor one about to expire: stored again, it is kept until the later expiry.
    let soon = Envelope::from_bus_json(&body.replace(env.id.as_str(), "expiring-event"), "x", "y").expect("envelope");
    store.put(&t, std::slice::from_ref(&soon), Utc::now() + chrono::Duration::seconds(2)).await.expect("put");
    store.put(&t, std::slice::from_ref(&soon), Utc::now() + chrono::Duration::days(1)).await.expect("put again");
    tokio::time::sleep(Duration::from_millis(2_500)).await;
    assert!(store.get(&t, &soon.id).await.expect("get").is_some(), "kept until the later expiry");
}

/// A key is claimed once; repeats see the first answer; a released key is free again.
pub async fn idempotency_claims_completes_and_releases(h: &dyn Harness) {
    let t = tenant(&h.unique("tenant"));
    let store = &h.backend().idempotency;
    let now = Utc::now();
    let day = now + chrono::Duration::hours(24);
    assert_eq!(store.claim(&t, "k1", "fp", now, day).await.expect("claim"), Claim::Claimed);
    assert_eq!(
        store.claim(&t, "k1", "fp", now, day).await.expect("claim"),
        Claim::Existing { fingerprint: "fp".into(), response: None }
    );
    let resp = StoredResponse { status: 202, body: r#"{"events":[]}"#.into() };
    store.complete(&t, "k1", &resp, day).await.expect("complete");
    assert_eq!(
        store.claim(&t, "k1", "other", now, day).await.expect("claim"),
        Claim::Existing { fingerprint: "fp".into(), response: Some(resp.clone()) }
    );
    assert_eq!(store.claim(&tenant("other"), "k1", "fp", now, day).await.expect("claim"), Claim::Claimed);

    assert_eq!(store.claim(&t, "k2", "fp", now, day).await.expect("claim"), Claim::Claimed);
    store.release(&t, "k2").await.expect("release");
    assert_eq!(store.claim(&t, "k2", "fp", now, day).await.expect("claim"), Claim::Claimed);

    let past = now - chrono::Duration::seconds(1);
    assert_eq!(store.claim(&t, "k3", "fp", now, past).await.expect("claim"), Claim::Claimed);
    assert_eq!(store.claim(&t, "k3", "fp", now, day).await.expect("claim"), Claim::Claimed, "expired claims are free");

    // A short claim, once answered, lives as long as its answer is kept.
    let soon = now + chrono::Duration::seconds(60);
    assert_eq!(store.claim(&t, "k4", "fp", now, soon).await.expect("claim"), Claim::Claimed);
    store.complete(&t, "k4", &resp, day).await.expect("complete");
    let later = now + chrono::Duration::seconds(120);
    assert_eq!(
        store.claim(&t, "k4", "fp", later, day).await.expect("claim"),
        Claim::Existing { fingerprint: "fp".into(), response: Some(resp) },
        "the answer outlives the claim's own expiry"
    );

    // An answer whose claim is gone (released, or never made) is not kept: the key stays
    // free, not held by an answer no claim made.
    store.complete(&t, "k5", &StoredResponse { status: 202, body: "{}".into() }, day).await.expect("complete");
    assert_eq!(store.claim(&t, "k5", "fp", now, day).await.expect("claim"), Claim::Claimed);
}

/// A tenant cannot have more hooks than its quota; deleting one makes room again.
pub async fn hooks_create_stops_at_the_tenant_quota(h: &dyn Harness) {
    let t = h.unique("tenant");
    let store = &h.backend().hooks;
    let (a, _) = make_hook(h, &t, "a").await;
    let (b, _) = make_hook(h, &t, "b").await;
    let (c, _) = make_hook(h, &t, "c").await;
    store.create(&a, 2).await.expect("a");
    store.create(&b, 2).await.expect("b");
    assert!(matches!(store.create(&c, 2).await, Err(Error::QuotaReached { limit: 2 })));
    assert_eq!(store.get(&c.tenant, c.id).await.expect("get"), None, "nothing of a refused hook is stored");
    // At the quota, a name in use is still that: the same answer on every backend.
    let (again, _) = make_hook(h, &t, "a").await;
    assert!(matches!(store.create(&again, 2).await, Err(Error::NameTaken)));
    let (other, _) = make_hook(h, &h.unique("tenant"), "c").await;
    store.create(&other, 2).await.expect("another tenant has its own quota");
    assert!(store.delete(&a.tenant, a.id).await.expect("delete"));
    store.create(&c, 2).await.expect("room after a delete");
}

/// A tenant's hooks' stored bytes are counted (one hook left out when asked) apart from
/// other tenants', and a routing list past its bound is refused rather than read whole,
/// while other tenants' lists are read as ever.
pub async fn hooks_stored_bytes_are_counted_per_tenant_and_bound_routing(h: &dyn Harness) {
    let t = h.unique("tenant");
    let store = &h.backend().hooks;
    let types: Vec<String> = (0..50).map(|i| format!("type.{i}.{}", "x".repeat(100))).collect();
    let draft = |name: &str| serde_json::json!({"name": name, "url": "https://r.example/", "event_types": types});
    let mut sizes = Vec::new();
    let mut ids = Vec::new();
    for name in ["a", "b", "c"] {
        let (hook, _) = make_hook_from(h, &t, HookId::generate(), draft(name)).await;
        store.create(&hook, 10).await.expect("create");
        sizes.push(hook.stored_size());
        ids.push(hook.id);
    }
    let (small, _) = make_hook(h, &h.unique("tenant"), "small").await;
    store.create(&small, 10).await.expect("create");
    let all: usize = sizes.iter().sum();
    let tenant_id = tenant(&t);
    assert_eq!(store.stored_bytes(&tenant_id, None, usize::MAX).await.expect("count"), all);
    assert_eq!(store.stored_bytes(&tenant_id, Some(ids[1]), usize::MAX).await.expect("count"), all - sizes[1]);
    assert_eq!(store.stored_bytes(&small.tenant, None, usize::MAX).await.expect("count"), small.stored_size());
    assert_eq!(store.stored_bytes(&tenant(&h.unique("none")), None, 0).await.expect("count"), 0);
    assert!(
        store.stored_bytes(&tenant_id, None, 1).await.expect("count") > 1,
        "past the most it may stop, but past it"
    );

    let routed = store.list_for_routing(&tenant_id, all).await.expect("at the bound, read");
    assert_eq!(routed.hooks.len(), 3);
    let over = store.list_for_routing(&tenant_id, all - 1).await;
    assert!(matches!(&over, Err(Error::TooLarge(why)) if why.contains(&t)), "past it, refused: {over:?}");
    let other = store.list_for_routing(&small.tenant, all - 1).await.expect("another tenant's list is read");
    assert_eq!(other.hooks.len(), 1);
}

/// The API opens a new round (`PENDING`) and the worker records the round's outcome; the
/// delivery reads as the outcome whichever of the two writes is stored last.
pub async fn deliveries_a_resend_stored_after_its_outcome_leaves_the_outcome(h: &dyn Harness) {
    let t = tenant(&h.unique("tenant"));
    let hook = HookId::generate();
    let store = &h.backend().deliveries;
    let k = key(&t, hook, DeliveryId::generate());
    let d = Delivery::pending(k.delivery_id, t.clone(), hook, k.event_id.clone(), k.event_type.clone(), Utc::now());
    store.insert(std::slice::from_ref(&d)).await.expect("insert");
    let update = |status, round, code: Option<u16>| DeliveryUpdate {
        delivery: k.clone(),
        attempt: code.map(attempt),
        status,
        next_attempt_at: None,
        note: None,
        round,
        at: Utc::now(),
        opening: None,
    };
    store.record(&[update(DeliveryStatus::Failed, 0, Some(400))]).await.expect("round 0 fails");
    // The worker's outcome of round 1 lands first, the API's PENDING for round 1 after it.
    store.record(&[update(DeliveryStatus::Succeeded, 1, Some(200))]).await.expect("round 1 succeeds");
    store.record(&[update(DeliveryStatus::Pending, 1, None)]).await.expect("round 1 opened, late");
    let got = store.get(hook, d.id).await.expect("get").expect("present");
    assert_eq!(got.status, DeliveryStatus::Succeeded);
    assert_eq!(got.round, 1);
    assert_eq!(got.attempts.len(), 2);
    // A straggler from round 0 cannot undo round 1 either.
    store.record(&[update(DeliveryStatus::Failed, 0, Some(500))]).await.expect("straggler");
    let got = store.get(hook, d.id).await.expect("get").expect("present");
    assert_eq!(got.status, DeliveryStatus::Succeeded);
    assert_eq!(got.attempts.len(), 3);
}

/// Paced slots follow each other at the rate whoever reserves them, and only a unit that
/// can use its slot before its deadline takes one; admission refuses beyond the burst and
/// says how long to wait.
pub async fn limiter_paces_and_admits_across_handles(h: &dyn Harness) {
    use hookbridge_core::ports::Admission;
    use hookbridge_core::rate::Rate;
    let limiter = &h.backend().limiter;
    let key = h.unique("hook");
    // Rate state is kept to the microsecond. Paced as of a time ahead of the clock (a
    // floor), so that a slow store (the emulator under load) cannot move the slots.
    let now =
        hookbridge_core::rate::from_micros(hookbridge_core::rate::micros(Utc::now() + chrono::Duration::seconds(30)));
    let rate = Rate::per_second(10);
    let first = limiter.pace(&key, rate, 3, now).await.expect("pace");
    assert_eq!(first, now, "an idle key starts at the later of now and the clock");
    let second = limiter.pace(&key, rate, 2, now).await.expect("pace");
    assert_eq!((second - first).num_milliseconds(), 300, "after the three slots reserved before");
    // A unit whose slot would come at or after its deadline takes none.
    let (at_500, at_800) = (first + chrono::Duration::milliseconds(500), first + chrono::Duration::milliseconds(800));
    let slots = limiter.pace_before(&key, rate, &[at_800, at_500, at_800], now).await.expect("pace");
    let at_600 = first + chrono::Duration::milliseconds(600);
    assert_eq!(slots, [Some(at_500), None, Some(at_600)], "the deadlines: 800, 500, 800 ms");
    let none_fit = limiter.pace_before(&key, rate, &[at_500], now).await.expect("pace");
    assert_eq!(none_fit, [None]);
    assert_eq!(limiter.pace(&key, rate, 1, now).await.expect("pace"), first + chrono::Duration::milliseconds(700));
    let later = now + chrono::Duration::seconds(60);
    assert_eq!(limiter.pace(&key, rate, 1, later).await.expect("pace"), later, "idle time is not banked");
    // Paced as of a time already past, an idle key starts at the clock as the change is
    // made: slots before it would all be sent at once.
    let past = Utc::now() - chrono::Duration::seconds(5);
    let fresh_key = h.unique("hook");
    let first = limiter.pace(&fresh_key, rate, 1, past).await.expect("pace");
    assert!(first > past + chrono::Duration::seconds(4) && first <= Utc::now(), "{first} paced as of {past}");

    let tenant_key = h.unique("tenant");
    assert_eq!(limiter.admit(&tenant_key, rate, 5, 5, now).await.expect("admit"), Admission::Admitted);
    match limiter.admit(&tenant_key, rate, 5, 1, now).await.expect("admit") {
        Admission::RetryAfter(wait) => assert_eq!(wait, Duration::from_millis(100)),
        Admission::Admitted => panic!("the burst is used up"),
    }
    let soon = now + chrono::Duration::milliseconds(100);
    assert_eq!(limiter.admit(&tenant_key, rate, 5, 1, soon).await.expect("admit"), Admission::Admitted);
}

/// A schedule whose turns ahead are forgotten (a hook's limit was set again) gives its next
/// slot at the change, not after the slots reserved ahead under the old limit; one with
/// nothing reserved past the change, or nothing at all, is left as it was.
pub async fn limiter_forgets_the_turns_given_out_ahead(h: &dyn Harness) {
    use hookbridge_core::rate::Rate;
    let limiter = &h.backend().limiter;
    // As of a time ahead of the clock, as above, so that a slow store cannot move the slots.
    let now =
        hookbridge_core::rate::from_micros(hookbridge_core::rate::micros(Utc::now() + chrono::Duration::seconds(30)));
    let seconds = chrono::Duration::seconds;
    let key = h.unique("hook");
    assert_eq!(limiter.pace(&key, Rate::per_second(1), 90, now).await.expect("pace"), now);
    let change = now + seconds(5);
    limiter.forget(&key, change).await.expect("forget");
    assert_eq!(limiter.pace(&key, Rate::per_second(1000), 1, now).await.expect("pace"), change, "not at +90 s");
    assert_eq!(
        limiter.pace(&key, Rate::per_second(1000), 1, now).await.expect("pace"),
        change + chrono::Duration::milliseconds(1),
        "the schedule goes on from there"
    );
    // Reserved only up to a time before the change: nothing to start over.
    let caught_up = h.unique("hook");
    assert_eq!(limiter.pace(&caught_up, Rate::per_second(1), 2, now).await.expect("pace"), now);
    limiter.forget(&caught_up, now + seconds(60)).await.expect("forget");
    assert_eq!(limiter.pace(&caught_up, Rate::per_second(1), 1, now).await.expect("pace"), now + seconds(2));
    let idle = h.unique("hook");
    limiter.forget(&idle, now + seconds(60)).await.expect("forget");
    assert_eq!(limiter.pace(&idle, Rate::per_second(1), 1, now).await.expect("pace"), now, "no schedule made");
}

/// A blob opens only for the hook it was sealed for: copied into another hook's item (even
/// one of the same tenant), it is refused as corrupt. Blobs of the older, unbound format
/// still open until they are re-sealed.
pub async fn sealed_secrets_open_only_for_their_hook(h: &dyn Harness) {
    let t = h.unique("tenant");
    let (a, secrets) = make_hook(h, &t, "a").await;
    let (b, _) = make_hook(h, &t, "b").await;
    let (c, _) = make_hook(h, &h.unique("tenant"), "c").await;
    let sealer = &h.backend().sealer;
    assert!(sealer.is_current(&a.sealed));
    assert_eq!(sealer.open(SecretsOwner::of(&a), &a.sealed).await.expect("open"), secrets);
    for other in [&b, &c] {
        let moved = sealer.open(SecretsOwner::of(other), &a.sealed).await;
        assert!(matches!(moved, Err(Error::Corrupt { .. })), "a's blob opened for {}: {moved:?}", other.config.name);
    }
    let old = h.seal_unbound(&secrets).await;
    assert!(!sealer.is_current(&old));
    assert_eq!(sealer.open(SecretsOwner::of(&b), &old).await.expect("an unbound blob opens"), secrets);
}

/// A scan reads every tenant's hooks, a page at a time, each once.
pub async fn hooks_scan_pages_through_every_tenant(h: &dyn Harness) {
    let store = &h.backend().hooks;
    let mut mine = std::collections::BTreeSet::new();
    for t in [h.unique("tenant"), h.unique("tenant")] {
        for n in 0..3 {
            let (hook, _) = make_hook(h, &t, &format!("s{n}")).await;
            store.create(&hook, ANY).await.expect("create");
            mine.insert(hook.id);
        }
    }
    let mut seen = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let page = store.scan(cursor.as_deref(), 2).await.expect("scan");
        assert!(page.items.len() <= 2);
        seen.extend(page.items.iter().map(|x| x.id).filter(|id| mine.contains(id)));
        match page.next_cursor {
            Some(c) => cursor = Some(c),
            None => break,
        }
    }
    seen.sort();
    assert_eq!(seen, mine.into_iter().collect::<Vec<_>>(), "each hook once");
}

/// Declarations read back per tenant, replaced, forgotten; an envelope kept marks its type
/// seen (for that tenant only).
pub async fn event_types_are_declared_and_seen_per_tenant(h: &dyn Harness) {
    use hookbridge_core::catalog::DeclaredType;
    let (t, other) = (tenant(&h.unique("tenant")), tenant(&h.unique("tenant")));
    let store = &h.backend().event_types;
    let now = Utc::now();
    let declared = |name: &str, description: &str| DeclaredType {
        name: name.to_owned(),
        description: Some(description.to_owned()),
        schema: Some(serde_json::json!({"type": "object", "required": ["user"]})),
        updated_at: now,
    };
    store.declare(&t, &declared("user.login", "in")).await.expect("declare");
    store.declare(&t, &declared("admin.USER-CREATE", "created")).await.expect("declare");
    store.declare(&t, &declared("user.login", "signed in")).await.expect("re-declare");
    let got = store.declared(&t).await.expect("declared");
    assert_eq!(got, vec![declared("admin.USER-CREATE", "created"), declared("user.login", "signed in")]);
    assert!(store.declared(&other).await.expect("declared").is_empty());
    assert!(store.undeclare(&t, "admin.USER-CREATE").await.expect("undeclare"));
    assert!(!store.undeclare(&t, "admin.USER-CREATE").await.expect("undeclare"), "already gone");
    assert_eq!(store.declared(&t).await.expect("declared").len(), 1);

    let body = format!(
        r#"{{"version":"0","id":"{}","detail-type":"device.registered","source":"idp","account":"1","time":"2026-11-22T10:00:00Z","region":"r","resources":[],"detail":{{"tenant":"{t}"}}}}"#,
        EventId::generate()
    );
    let env = Envelope::from_bus_json(&body, "x", "y").expect("envelope");
    h.backend().events.put(&t, std::slice::from_ref(&env), now + chrono::Duration::days(1)).await.expect("put");
    let seen = store.seen(&t, now - chrono::Duration::minutes(1), 10).await.expect("seen");
    assert_eq!(seen.iter().map(|(n, _)| n.as_str()).collect::<Vec<_>>(), ["device.registered"]);
    assert!(store.seen(&other, now - chrono::Duration::minutes(1), 10).await.expect("seen").is_empty());
    assert!(
        store.seen(&t, now + chrono::Duration::hours(1), 10).await.expect("seen").is_empty(),
        "not seen since then"
    );
    // At most `max`, the first by name.
    h.backend().events.record_seen(&t, &["a.first", "b.second", "z.last"]).await.expect("record");
    let first = store.seen(&t, now - chrono::Duration::minutes(1), 2).await.expect("seen");
    assert_eq!(first.iter().map(|(n, _)| n.as_str()).collect::<Vec<_>>(), ["a.first", "b.second"]);
    assert_eq!(store.seen(&t, now - chrono::Duration::minutes(1), 10).await.expect("seen").len(), 4);
}

/// A portal link opens once, before it expires; a session reads back until it expires or
/// is ended.
pub async fn portal_links_open_once_and_sessions_expire(h: &dyn Harness) {
    use hookbridge_core::portal::{PortalGrant, fresh_code, hashed};
    let store = &h.backend().portal;
    let now = Utc::now();
    let grant = PortalGrant {
        tenant: tenant(&h.unique("tenant")),
        sites: vec!["hq".into()],
        read_only: true,
        expires_at: now + chrono::Duration::minutes(5),
    };
    let code = hashed(&fresh_code());
    store.put_link(&code, &grant).await.expect("put link");
    let (a, b) = futures_join([store.redeem_link(&code, now), store.redeem_link(&code, now)].into_iter())
        .await
        .into_iter()
        .fold((0, 0), |(some, none), r| match r.expect("redeem") {
            Some(g) => {
                assert_eq!(g, grant);
                (some + 1, none)
            }
            None => (some, none + 1),
        });
    assert_eq!((a, b), (1, 1), "exactly one of two racing redeemers gets it");
    let stale = hashed(&fresh_code());
    store.put_link(&stale, &grant).await.expect("put link");
    assert_eq!(store.redeem_link(&stale, now + chrono::Duration::minutes(6)).await.expect("redeem"), None, "expired");
    assert_eq!(store.redeem_link(&hashed("never-made"), now).await.expect("redeem"), None);

    let session = hashed(&fresh_code());
    store.put_session(&session, &grant).await.expect("put session");
    assert_eq!(store.session(&session, now).await.expect("session"), Some(grant.clone()));
    assert_eq!(store.session(&session, now + chrono::Duration::minutes(6)).await.expect("session"), None);
    store.end_session(&session).await.expect("end");
    assert_eq!(store.session(&session, now).await.expect("session"), None);
}

/// A replay job reads back as saved; a save names the step it read, so of two saves from
/// the same read only the first lands.
pub async fn replay_jobs_save_only_from_the_step_they_read_or_again_the_same(h: &dyn Harness) {
    use hookbridge_core::replay::{ReplayJob, ReplayState};
    let store = &h.backend().replays;
    let now = Utc::now();
    let hook = HookId::generate();
    let job = ReplayJob::new(tenant(&h.unique("tenant")), hook, now - chrono::Duration::hours(1), now, None, now);
    store.create(&job).await.expect("create");
    // A request sent again after its answer was lost (the SDK does) is the same create.
    store.create(&job).await.expect("the same create again");
    let other = ReplayJob { statuses: Some(Vec::new()), ..job.clone() };
    assert!(store.create(&other).await.is_err(), "another job under its id");
    assert_eq!(store.get(hook, job.id).await.expect("get"), Some(job.clone()));
    assert_eq!(store.get(HookId::generate(), job.id).await.expect("get"), None, "only under its hook");

    let page = job.advanced(Some("01KA".into()), 3, 1, now);
    let cancelled = job.stopped(ReplayState::Cancelled, now);
    assert!(store.save(&page, job.step).await.expect("save"));
    // The same save again: it is this save (a poke that read it as someone else's would
    // stop, and with it the job, for good).
    assert!(store.save(&page, job.step).await.expect("the same save again"));
    assert!(!store.save(&cancelled, job.step).await.expect("save"), "read before the page was saved");
    assert_eq!(store.get(hook, job.id).await.expect("get"), Some(page.clone()));
    let cancelled = page.stopped(ReplayState::Cancelled, now);
    assert!(store.save(&cancelled, page.step).await.expect("save"));
    assert_eq!(store.get(hook, job.id).await.expect("get").map(|j| j.state), Some(ReplayState::Cancelled));
}

/// A replay job this version cannot read (a newer release wrote it, read after a rollback)
/// is left out of its hook's listing, which pages on past it; it made the listing, and
/// every replay request of the hook (which counts the running jobs), an error.
pub async fn a_replay_job_this_version_cannot_read_is_left_out_of_the_listing(h: &dyn Harness) {
    use hookbridge_core::replay::ReplayJob;
    let store = &h.backend().replays;
    let now = Utc::now();
    let hook = HookId::generate();
    let mut jobs = Vec::new();
    for i in 0..3 {
        let job = ReplayJob::new(tenant(&h.unique("tenant")), hook, now - chrono::Duration::hours(1), now, None, now);
        store.create(&job).await.expect("create");
        jobs.push(job);
        if i < 2 {
            // Job ids are ULIDs: a millisecond apart, they list in the order made.
            tokio::time::sleep(std::time::Duration::from_millis(2)).await;
        }
    }
    h.make_replay_unreadable(hook, jobs[1].id).await;
    let listed = store.list(hook, 10, None).await.expect("listed");
    assert_eq!(listed.items.iter().map(|j| j.id).collect::<Vec<_>>(), [jobs[2].id, jobs[0].id], "newest first");
    let mut seen = Vec::new();
    let mut cursor = None;
    loop {
        let page = store.list(hook, 1, cursor.as_deref()).await.expect("a page");
        seen.extend(page.items.iter().map(|j| j.id));
        match page.next_cursor {
            Some(c) => cursor = Some(c),
            None => break,
        }
    }
    assert_eq!(seen, [jobs[2].id, jobs[0].id], "paged on past it");
}

/// A job is kept for a week after it last moved, not after it was asked for: one still
/// working through a long window after a week vanished mid-way, the rest never sent.
pub async fn a_replay_job_is_kept_a_week_after_it_last_moved(h: &dyn Harness) {
    use hookbridge_core::replay::{ReplayJob, ReplayState};
    let store = &h.backend().replays;
    let now = Utc::now();
    let asked = now - chrono::Duration::days(8);
    let job = ReplayJob::new(
        tenant(&h.unique("tenant")),
        HookId::generate(),
        asked - chrono::Duration::days(6),
        asked,
        None,
        asked,
    );
    store.create(&job).await.expect("create");
    assert_eq!(store.get(job.hook_id, job.id).await.expect("get"), None, "asked for and left for eight days");
    // Its latest page, saved now: a week from now it is still readable.
    let page = job.advanced(Some("01KA".into()), 500, 0, now - chrono::Duration::minutes(1));
    assert!(store.save(&page, job.step).await.expect("save"));
    assert_eq!(store.get(job.hook_id, job.id).await.expect("get"), Some(page.clone()), "moving, so kept");
    // Stopped two days ago: kept five more.
    let done = page.stopped(ReplayState::Succeeded, now - chrono::Duration::days(2));
    assert!(store.save(&done, page.step).await.expect("save"));
    assert_eq!(store.get(job.hook_id, job.id).await.expect("get"), Some(done.clone()));
    assert_eq!(store.list(job.hook_id, 10, None).await.expect("list").items, [done], "and listed");
}

/// A hook's jobs list newest first, a page at a time, each once and as last saved; a job
/// past the time it is kept and another hook's are not listed; a cursor that is not a job
/// id is refused.
pub async fn replay_jobs_list_newest_first_a_page_at_a_time(h: &dyn Harness) {
    use hookbridge_core::replay::{ReplayJob, ReplayState};
    let store = &h.backend().replays;
    let now = Utc::now();
    let t = tenant(&h.unique("tenant"));
    let hook = HookId::generate();
    let job = |hook: HookId, asked: DateTime<Utc>| {
        ReplayJob::new(t.clone(), hook, asked - chrono::Duration::hours(1), asked, None, asked)
    };
    let mut made = Vec::new();
    for i in 0..5 {
        if i == 3 {
            // Asked for eight days ago (kept seven), between the others in id order: the
            // store may still hold it, and a page must not count it.
            store.create(&job(hook, now - chrono::Duration::days(8))).await.expect("create");
        }
        let j = job(hook, now);
        store.create(&j).await.expect("create");
        made.push(j);
    }
    store.create(&job(HookId::generate(), now)).await.expect("another hook's");
    let cancelled = made[1].stopped(ReplayState::Cancelled, now);
    assert!(store.save(&cancelled, made[1].step).await.expect("save"));
    made[1] = cancelled;
    made.reverse();

    let mut listed = Vec::new();
    let mut cursor: Option<String> = None;
    for _ in 0..10 {
        let page = store.list(hook, 2, cursor.as_deref()).await.expect("list");
        assert!(page.items.len() <= 2, "{} on a page of 2", page.items.len());
        listed.extend(page.items);
        cursor = page.next_cursor;
        if cursor.is_none() {
            break;
        }
    }
    assert_eq!(listed, made, "newest first, each once, as saved");
    let whole = store.list(hook, 10, None).await.expect("list");
    assert_eq!((whole.items, whole.next_cursor), (made.clone(), None));
    assert!(matches!(store.list(hook, 2, Some("not-a-job")).await, Err(Error::InvalidCursor)));
    assert_eq!(store.list(HookId::generate(), 10, None).await.expect("list").items, Vec::new());
}
