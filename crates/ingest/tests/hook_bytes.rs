//! A tenant whose hooks take more than ingest reads to route (twice its quota of stored
//! bytes: the quota lowered under it, or writes racing past it) has its events fail and
//! come back, alone: another tenant's events in the same batch are routed as ever, and the
//! big tenant's hooks are never all held in memory. Both backends.

#![allow(clippy::unwrap_used)] // Tests fail loudly on purpose.

use chrono::Utc;
use hookbridge_core::hook::Hook;
use hookbridge_core::ids::HookId;
use hookbridge_core::ports::{Receipt, ReceivedMessage};
use hookbridge_testkit::contract::make_hook_from;
use hookbridge_testkit::{AwsHarness, EmbeddedHarness, Harness};

#[allow(dead_code)] // each test binary uses part of it
mod common;

/// A hook of `tenant` taking about 13 KiB stored (its event types are long).
async fn big_hook(h: &dyn Harness, tenant: &str, name: &str) -> Hook {
    let types: Vec<String> = (0..100).map(|i| format!("user.{i}.{}", "x".repeat(120))).collect();
    let types = [vec!["user.login".to_owned()], types].concat();
    let draft = serde_json::json!({"name": name, "url": "https://r.example/", "event_types": types});
    make_hook_from(h, tenant, HookId::generate(), draft).await.0
}

fn login(id: &str, tenant: &str) -> ReceivedMessage {
    let sent_at = Utc::now();
    let time = sent_at.format("%Y-%m-%dT%H:%M:%SZ");
    let body = format!(
        r#"{{"version":"0","id":"{id}","detail-type":"user.login","source":"idp","account":"1","time":"{time}","region":"r","resources":[],"detail":{{"tenant":"{tenant}"}}}}"#
    );
    ReceivedMessage { id: format!("m-{id}"), body, receipt: Receipt(format!("r-{id}")), receive_count: 1, sent_at }
}

async fn a_tenant_whose_hooks_are_past_the_routing_bound_holds_up_no_other_tenant(h: &dyn Harness) {
    let (big, calm) = (h.unique("big"), h.unique("calm"));
    let mut bytes = 0;
    for i in 0..4 {
        let hook = big_hook(h, &big, &format!("h{i}")).await;
        bytes += hook.stored_size();
        h.backend().hooks.create(&hook, 1000).await.unwrap();
    }
    let calm_hook = big_hook(h, &calm, "only").await;
    h.backend().hooks.create(&calm_hook, 1000).await.unwrap();
    let mut deps = common::deps(h);
    // Three of the big tenant's hooks fit; the calm tenant's one does.
    deps.settings.routing_most_bytes = bytes * 3 / 4;

    let batch =
        [login("9b1c2d3e-0000-4000-8000-0000000000b1", &big), login("9b1c2d3e-0000-4000-8000-0000000000c1", &calm)];
    let outcome = ingest::handle(&deps, &batch).await;
    assert_eq!(outcome.failed, [batch[0].id.clone()], "only the big tenant's event comes back");
    let queued = common::queued_tasks(h, 1).await;
    let hooks: Vec<HookId> = queued.iter().map(|t| t.delivery.hook_id).collect();
    assert_eq!(hooks, [calm_hook.id], "the calm tenant's event is routed");
    let more = h.backend().delivery_queue.receive(10, std::time::Duration::from_millis(300)).await.unwrap();
    assert!(more.is_empty(), "nothing of the big tenant's: {more:?}");

    // Within the bound, the big tenant's events are routed again.
    deps.settings.routing_most_bytes = bytes;
    let outcome = ingest::handle(&deps, &batch[..1]).await;
    assert!(outcome.failed.is_empty(), "{outcome:?}");
    assert_eq!(common::queued_tasks(h, 4).await.len(), 4);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tenant_whose_hooks_are_past_the_routing_bound_holds_up_no_other_tenant_embedded() {
    a_tenant_whose_hooks_are_past_the_routing_bound_holds_up_no_other_tenant(&EmbeddedHarness::start().await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tenant_whose_hooks_are_past_the_routing_bound_holds_up_no_other_tenant_aws() {
    a_tenant_whose_hooks_are_past_the_routing_bound_holds_up_no_other_tenant(&AwsHarness::start().await).await;
}
