//! Faults the platform must ride out without losing an event: a receiver that is down and
//! comes back, a load of many tenants and hooks, a redirect towards a private address.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use hookbridge_core::settings;
use hookbridge_e2e::{ALL_SCOPES, Flavor, TestStack, eventually, numbers, on_both_backends};
use hookbridge_testkit::{Receiver, Reply};
use serde_json::json;

on_both_backends! {
async fn a_receiver_that_is_down_then_back_gets_everything_on_the_schedule(flavor: Flavor) {
    let stack = TestStack::start_with(flavor, &[(settings::RETRY_SCHEDULE, "1s,1s,2s,2s,2s")]).await;
    let addr = Receiver::free_addr();
    let t = stack.token("acme", ALL_SCOPES);
    let h = stack.create_hook(&t, &json!({"name": "flappy", "url": format!("http://{addr}/")})).await;
    let id = h["id"].as_str().unwrap();
    let events: Vec<_> = (0..5).map(|n| json!({"detail-type": "user.login", "source": "idp", "detail": {"n": n}})).collect();
    stack.publish(&t, &serde_json::Value::Array(events)).await;
    // Down: every attempt is refused and retried.
    eventually(flavor.patience(Duration::from_secs(30)), || async {
        let list = stack.deliveries(&t, id, 1).await;
        (list.len() == 5 && list.iter().all(|d| d["status"] == "RETRYING" && d["last_error_class"] == "connect")).then_some(())
    })
    .await
    .expect("all five retrying after connection failures");
    // Back.
    let r = Receiver::start_on(addr).await;
    // The circuit the failures opened lets the next probe through after its cool-down.
    let got = r.wait_until(flavor.patience(Duration::from_secs(30)), |got| numbers(got).len() >= 5).await;
    let ns = numbers(&got);
    assert_eq!(ns, (0..5).collect(), "every event arrived");
    let done = eventually(flavor.patience(Duration::from_secs(20)), || async {
        let list = stack.deliveries(&t, id, 1).await;
        list.iter().all(|d| d["status"] == "SUCCEEDED").then_some(list)
    })
    .await
    .expect("all SUCCEEDED");
    assert!(done.iter().all(|d| d["attempts"].as_u64().unwrap() >= 2));
    stack.shutdown().await;
}
}

on_both_backends! {
async fn a_redirect_towards_a_private_address_is_not_followed(flavor: Flavor) {
    let stack = TestStack::start(flavor).await;
    let r = Receiver::start().await;
    r.always(Reply::status(302).with_header("location", "http://169.254.169.254/latest/meta-data/"));
    let t = stack.token("acme", ALL_SCOPES);
    let h = stack.create_hook(&t, &json!({"name": "redir", "url": r.url("/")})).await;
    stack.publish(&t, &json!({"detail-type": "user.login", "source": "idp", "detail": {}})).await;
    let d = eventually(flavor.patience(Duration::from_secs(20)), || async {
        stack.deliveries(&t, h["id"].as_str().unwrap(), 1).await.into_iter().find(|d| d["status"] == "FAILED")
    })
    .await
    .expect("a redirect fails the delivery");
    assert_eq!(d["last_error_class"], "redirect");
    assert_eq!(d["last_status_code"], 302);
    assert_eq!(r.received().len(), 1);
    stack.shutdown().await;
}
}

/// Ten thousand events across five tenants with ten hooks each: nothing lost, nothing to the
/// wrong hook or tenant, every delivery recorded.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_thousand_events_across_fifty_hooks_and_five_tenants_all_arrive_where_they_belong() {
    let stack = TestStack::start(Flavor::Embedded).await;
    let r = Receiver::start().await;
    let tenants: Vec<String> = (0..5).map(|i| format!("load-{i}")).collect();
    let mut hook_ids: BTreeMap<(usize, usize), String> = BTreeMap::new();
    for (ti, tenant) in tenants.iter().enumerate() {
        let t = stack.token(tenant, ALL_SCOPES);
        for hi in 0..10 {
            // Hook `hi` of a tenant wants exactly the events of type `load.{hi}.*`.
            let h = stack
                .create_hook(&t, &json!({"name": format!("h{hi}"), "url": r.url(&format!("/{ti}/{hi}")), "event_types": [format!("load.{hi}.*")]}))
                .await;
            hook_ids.insert((ti, hi), h["id"].as_str().unwrap().to_owned());
        }
    }
    let per_tenant = 2_000;
    let publishers = tenants.iter().enumerate().map(|(ti, tenant)| {
        let t = stack.token(tenant, ALL_SCOPES);
        let stack = &stack;
        async move {
            for chunk in 0..per_tenant / 10 {
                let batch: Vec<_> = (0..10)
                    .map(|k| {
                        let n = chunk * 10 + k;
                        json!({"detail-type": format!("load.{}.event", n % 10), "source": "load", "detail": {"t": ti, "n": n}})
                    })
                    .collect();
                stack.publish(&t, &serde_json::Value::Array(batch)).await;
            }
        }
    });
    futures::future::join_all(publishers).await;
    let total = tenants.len() * per_tenant;
    // A request may arrive twice (at least once), so a count of requests can be reached
    // before every event has arrived: wait on until the distinct deliveries are all there.
    let mut got = r.wait_for(total, Duration::from_secs(300)).await;
    let distinct = |got: &[hookbridge_testkit::Received]| {
        got.iter().filter_map(|g| g.header("webhook-id")).collect::<BTreeSet<_>>().len()
    };
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while distinct(&got) < total && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(500)).await;
        got = r.received();
    }

    let mut seen: BTreeSet<(u64, u64)> = BTreeSet::new();
    let mut duplicates = 0;
    for g in &got {
        let env = g.json();
        let (t, n) = (env["detail"]["t"].as_u64().unwrap(), env["detail"]["n"].as_u64().unwrap());
        let path: Vec<u64> = g.uri.path().trim_matches('/').split('/').map(|p| p.parse().unwrap()).collect();
        assert_eq!(path[0], t, "an event of tenant {t} reached tenant {}'s hook", path[0]);
        assert_eq!(env["detail"]["tenant"], tenants[t as usize]);
        assert_eq!(path[1], n % 10, "event {n} reached the wrong hook");
        if !seen.insert((t, n)) {
            duplicates += 1;
        }
    }
    assert_eq!(seen.len(), total, "events lost: {}", total - seen.len());
    eprintln!("load: {total} events, {} deliveries received, {duplicates} duplicates", got.len());

    // Every delivery is recorded as SUCCEEDED (its record may land a moment after the
    // receiver answered).
    for ((ti, _), id) in &hook_ids {
        let t = stack.token(&tenants[*ti], ALL_SCOPES);
        let succeeded = || async {
            let mut succeeded = 0;
            let mut cursor: Option<String> = None;
            loop {
                let path = match &cursor {
                    Some(c) => format!("/v1/hooks/{id}/events?hours=1&limit=500&cursor={c}"),
                    None => format!("/v1/hooks/{id}/events?hours=1&limit=500"),
                };
                let page = stack.get(&path, &t).await.body;
                succeeded +=
                    page["deliveries"].as_array().unwrap().iter().filter(|d| d["status"] == "SUCCEEDED").count();
                match page["next_cursor"].as_str() {
                    Some(c) => cursor = Some(c.to_owned()),
                    None => return succeeded,
                }
            }
        };
        let all =
            eventually(Duration::from_secs(30), || async { (succeeded().await == per_tenant / 10).then_some(()) })
                .await;
        assert!(all.is_some(), "hook {id} recorded {} successes of {}", succeeded().await, per_tenant / 10);
    }
    stack.shutdown().await;
}

/// The database hits its size cap (as a full disk would): the API refuses with 503 instead
/// of accepting what it cannot keep, and once there is room again every event it did
/// accept is delivered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_database_refuses_loudly_and_loses_nothing_it_accepted() {
    let mut stack = TestStack::start_with(
        Flavor::Embedded,
        &[(settings::VISIBILITY_TIMEOUT, "1s"), (settings::REQUEST_TIMEOUT, "500ms")],
    )
    .await;
    let r = Receiver::start().await;
    let t = stack.token("acme", ALL_SCOPES);
    stack.create_hook(&t, &json!({"name": "sink", "url": r.url("/")})).await;
    // Cap the database just above what it holds now.
    let used = std::fs::metadata(stack.database_path()).map(|m| m.len()).unwrap_or(0);
    stack.restart_capped(Some(used + 256 * 1024)).await;

    let mut accepted: BTreeSet<u64> = BTreeSet::new();
    let mut refused = 0;
    for call in 0..400u64 {
        let batch: Vec<_> = (0..10)
            .map(|k| json!({"detail-type": "user.login", "source": "idp", "detail": {"n": call * 10 + k, "pad": "x".repeat(400)}}))
            .collect();
        let a = stack.post("/v1/events", &t, &serde_json::Value::Array(batch)).await;
        match a.status.as_u16() {
            202 => accepted.extend((0..10).map(|k| call * 10 + k)),
            503 => {
                assert_eq!(a.headers["content-type"], "application/problem+json");
                assert!(a.headers.contains_key("retry-after"));
                refused += 1;
                if refused >= 3 {
                    break;
                }
            }
            other => panic!("a full database must answer 202 or 503, not {other}: {}", a.body),
        }
    }
    assert!(refused > 0, "the cap was never reached");
    assert!(!accepted.is_empty());

    // Room again: everything accepted arrives (some more than once: attempts sent while
    // nothing could be recorded are sent again, so count distinct events, not requests).
    stack.restart_capped(None).await;
    let distinct = || r.received().iter().map(|g| g.json()["detail"]["n"].as_u64().unwrap()).collect::<BTreeSet<u64>>();
    let delivered = eventually(Duration::from_secs(180), || async {
        let d = distinct();
        accepted.is_subset(&d).then_some(d)
    })
    .await
    .unwrap_or_else(distinct);
    let lost: Vec<_> = accepted.difference(&delivered).collect();
    assert!(lost.is_empty(), "{} accepted events were never delivered: {lost:?}", lost.len());
    stack.shutdown().await;
}
