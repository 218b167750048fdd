//! Near its invocation's deadline ingest starts nothing more: a tenant's events come back
//! alone and a replay page is handed on in a new poke. Cut off by Lambda's timeout instead,
//! the whole batch came back (every tenant's events fanned out again, each using up one of
//! its five receives), and a replay poke used up one of its job's.

#![allow(clippy::unwrap_used)] // Tests fail loudly on purpose.

use std::time::{Duration, Instant};

use chrono::Utc;
use hookbridge_core::ids::ReplayId;
use hookbridge_core::ports::{Receipt, ReceivedMessage};
use hookbridge_core::replay::{PokeFormat, ReplayPoke};
use hookbridge_testkit::contract::make_hook;
use hookbridge_testkit::{EmbeddedHarness, Harness};

#[allow(dead_code)] // each test binary uses part of it
mod common;

fn message(id: &str, body: String) -> ReceivedMessage {
    ReceivedMessage { id: id.into(), body, receipt: Receipt(format!("r-{id}")), receive_count: 1, sent_at: Utc::now() }
}

fn event(tenant: &str) -> String {
    let time = Utc::now().format("%Y-%m-%dT%H:%M:%SZ");
    let id = hookbridge_core::ids::EventId::generate();
    format!(
        r#"{{"version":"0","id":"{id}","detail-type":"user.login","source":"idp","account":"1","time":"{time}","region":"r","resources":[],"detail":{{"tenant":"{tenant}"}}}}"#
    )
}

#[tokio::test]
async fn near_its_deadline_ingest_starts_nothing_and_hands_replay_pages_on() {
    let h = EmbeddedHarness::start().await;
    let deps = common::deps(&h);
    let mut pokes = Vec::new();
    for tenant in ["acme", "globex"] {
        let (hook, _) = make_hook(&h, tenant, "hook").await;
        h.backend().hooks.create(&hook, 1000).await.unwrap();
        pokes.push(ReplayPoke {
            format: PokeFormat::V1,
            tenant: hook.tenant.clone(),
            hook_id: hook.id,
            replay_id: ReplayId::generate(),
        });
    }
    let events = [message("e-acme", event("acme")), message("e-globex", event("globex"))];
    let poke = message("poke", pokes[0].to_body());
    let batch = [events[0].clone(), poke, events[1].clone()];

    // Less than the time to start anything is left.
    let out = ingest::handle_within(&deps, &batch, Some(Instant::now() + ingest::TIME_TO_START / 2)).await;
    let mut failed = out.failed.clone();
    failed.sort();
    assert_eq!(failed, ["e-acme", "e-globex"], "the events come back; the poke is done with");
    let fanned = h.backend().delivery_queue.receive(10, Duration::from_millis(300)).await.unwrap();
    assert!(fanned.is_empty(), "nothing fanned out");
    let handed_on = h.backend().ingest_queue.receive(10, Duration::from_secs(1)).await.unwrap();
    assert_eq!(handed_on.len(), 1, "the page is handed on");
    assert_eq!(ReplayPoke::parse(&handed_on[0].body), Some(pokes[0].clone()));
    assert_eq!(handed_on[0].receive_count, 1, "as a new message, its receives all ahead of it");

    // With time enough, the same events are fanned out.
    let out = ingest::handle_within(&deps, &events, Some(Instant::now() + Duration::from_secs(60))).await;
    assert!(out.failed.is_empty(), "{:?}", out.failed);
    assert_eq!(common::queued_tasks(&h, 2).await.len(), 2);
}
