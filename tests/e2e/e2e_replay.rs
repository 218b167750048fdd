//! Replay as a job, through the whole stack: `POST …/replay` answers at once; the job
//! re-sends a window of more than one page (1,000 deliveries on the emulator, 2,000 on
//! SQLite; `make bench` replays 100,000), can be followed and cancelled, and is the
//! caller's own; a window must be one it can send, a hook's jobs are listed newest first,
//! and a job outlives its hook.

use std::collections::BTreeSet;
use std::time::Duration;

use futures::StreamExt;
use hookbridge_e2e::{ALL_SCOPES, Flavor, TestStack, eventually, on_both_backends};
use hookbridge_testkit::Receiver;
use serde_json::{Value, json};

const LONG: Duration = Duration::from_secs(120);
/// How long ingest may take to record every event (1,000 on a busy emulator). Alone, the
/// AWS run takes under two minutes; under the full suite the emulator serves everything
/// else too, and six minutes ran out twice.
const INGESTED: Duration = Duration::from_secs(600);

fn events(from: usize) -> Value {
    json!(
        (from..from + 10)
            .map(|n| json!({"detail-type": "user.login", "source": "idp", "detail": {"n": n}}))
            .collect::<Vec<_>>()
    )
}

/// How many deliveries the hook has in the last hour, by status.
async fn count(stack: &TestStack, t: &str, id: &str, status: &str) -> usize {
    let mut n = 0;
    let mut cursor: Option<String> = None;
    loop {
        let after = cursor.as_ref().map(|c| format!("&cursor={c}")).unwrap_or_default();
        let page = stack.get(&format!("/v1/hooks/{id}/events?hours=1&limit=500{after}"), t).await.body;
        n += page["deliveries"].as_array().unwrap().iter().filter(|d| d["status"] == status).count();
        match page["next_cursor"].as_str() {
            Some(c) => cursor = Some(c.to_owned()),
            None => return n,
        }
    }
}

async fn job_until_stopped(stack: &TestStack, t: &str, location: &str) -> Value {
    eventually(stack.flavor().patience(LONG), || async {
        let job = stack.get(location, t).await;
        assert_eq!(job.status, 200, "{}", job.body);
        (job.body["state"] != "RUNNING").then_some(job.body)
    })
    .await
    .expect("the replay finishes")
}

on_both_backends! {
async fn a_replay_job_resends_a_window_of_many_pages_and_can_be_followed_and_cancelled(flavor: Flavor) {
    let n = match flavor {
        Flavor::Aws => 1_000,
        _ => 2_000,
    };
    let stack = TestStack::start(flavor).await;
    let r = Receiver::start().await;
    let t = stack.token("acme", ALL_SCOPES);
    // Disabled while the events arrive: every delivery is recorded CANCELLED, none sent.
    let h = stack.create_hook(&t, &json!({"name": "later", "url": r.url("/"), "enabled": false})).await;
    let id = h["id"].as_str().unwrap().to_owned();
    let since = chrono::Utc::now() - chrono::Duration::seconds(1);
    futures::stream::iter((0..n).step_by(10))
        .map(|from| {
            let (stack, t) = (&stack, &t);
            async move {
                // The tenant's publish rate is enforced here too: wait as told and go on.
                loop {
                    let a = stack.post("/v1/events", t, &events(from)).await;
                    if a.status != 429 {
                        assert_eq!(a.status, 202, "{}", a.body);
                        break;
                    }
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
            }
        })
        .buffer_unordered(8)
        .collect::<Vec<_>>()
        .await;
    // Polled every few seconds, with time to spare: a listing of thousands is 66 queries
    // on the emulator, which the rest of the suite keeps busy too.
    eventually(INGESTED, || async {
        let done = count(&stack, &t, &id, "CANCELLED").await == n;
        if !done {
            tokio::time::sleep(Duration::from_secs(5)).await;
        }
        done.then_some(())
    })
        .await
        .expect("every event recorded for the disabled hook");
    assert!(r.received().is_empty());

    let mut doc = stack.get(&format!("/v1/hooks/{id}"), &t).await.body;
    doc["enabled"] = json!(true);
    assert_eq!(stack.put(&format!("/v1/hooks/{id}"), &t, &doc).await.status, 200);
    let started = stack
        .post(&format!("/v1/hooks/{id}/replay"), &t, &json!({"since": since.to_rfc3339(), "status": "CANCELLED"}))
        .await;
    assert_eq!(started.status, 202, "{}", started.body);
    assert_eq!((started.body["state"].as_str(), started.body["queued"].as_u64()), (Some("RUNNING"), Some(0)));
    let location = started.headers["location"].to_str().unwrap().to_owned();
    assert_eq!(location, format!("/v1/hooks/{id}/replays/{}", started.body["id"].as_str().unwrap()));

    let done = job_until_stopped(&stack, &t, &location).await;
    assert_eq!(done["state"], "SUCCEEDED", "{done}");
    assert_eq!((done["queued"].as_u64(), done["skipped"].as_u64()), (Some(n as u64), Some(0)));
    assert!(done["finished_at"].is_string());
    // Delivery is at least once: a message the emulator hands out again (its visibility
    // timeout passing on a busy machine) arrives twice, with the same webhook-id. So wait
    // for every event, not for n requests, and hold each event to one id.
    let every_event = || {
        let got = r.received();
        let pairs: BTreeSet<(u64, String)> = got
            .iter()
            .map(|g| (g.json()["detail"]["n"].as_u64().unwrap(), g.header("webhook-id").unwrap().to_owned()))
            .collect();
        (got.len(), pairs)
    };
    eventually(INGESTED, || async {
        let (_, pairs) = every_event();
        (pairs.iter().map(|(e, _)| e).collect::<BTreeSet<_>>().len() >= n).then_some(())
    })
    .await;
    let (requests, pairs) = every_event();
    let numbers: BTreeSet<_> = pairs.iter().map(|(e, _)| *e).collect();
    let ids: BTreeSet<_> = pairs.iter().map(|(_, id)| id.clone()).collect();
    assert_eq!(
        (numbers.len(), ids.len(), pairs.len()),
        (n, n, n),
        "every event, each with one webhook-id of its own ({requests} requests)"
    );

    // Cancelling a finished job changes nothing.
    let again = stack.post(&format!("{location}/cancel"), &t, &json!({})).await;
    assert_eq!((again.status.as_u16(), again.body["state"].as_str()), (200, Some("SUCCEEDED")));

    // A running job stops after the page under way, and stays stopped.
    let second = stack.post(&format!("/v1/hooks/{id}/replay"), &t, &json!({"since": since.to_rfc3339(), "status": "ALL"})).await;
    let second_at = second.headers["location"].to_str().unwrap().to_owned();
    let cancelled = stack.post(&format!("{second_at}/cancel"), &t, &json!({})).await;
    assert_eq!(cancelled.status, 200, "{}", cancelled.body);
    let state = cancelled.body["state"].as_str().unwrap().to_owned();
    assert!(state == "CANCELLED" || state == "SUCCEEDED", "{}", cancelled.body);
    if state == "CANCELLED" {
        // The page under way when it was cancelled is sent, and counted; nothing after it.
        // The page under way ends when ingest acknowledges its poke, which may take
        // seconds on the emulator: wait for that rather than for a time.
        let queued = cancelled.body["queued"].as_u64().unwrap();
        let ingest = stack.queue(&stack.settings().topology.ingest.name).await;
        let settled = || async { ingest.depth().await.map(|d| d.total() == 0).unwrap_or(false) };
        eventually(stack.flavor().patience(LONG), || async { settled().await.then_some(()) }).await.expect("the page under way ends");
        let later = stack.get(&second_at, &t).await.body;
        let counted = later["queued"].as_u64().unwrap();
        assert_eq!(later["state"], "CANCELLED");
        assert!(counted <= queued + hookbridge_core::replay::PAGE as u64, "{queued} queued at the cancel, {counted} later");
        // A page after it would need a poke of its own.
        tokio::time::sleep(Duration::from_secs(2)).await;
        assert!(settled().await, "no page is started after the cancel");
        assert_eq!(stack.get(&second_at, &t).await.body["queued"].as_u64(), Some(counted), "nothing more after the page under way");
    }

    // Someone else's replay, or none: 404.
    let other = stack.token("globex", ALL_SCOPES);
    assert_eq!(stack.get(&location, &other).await.status, 404);
    assert_eq!(stack.get(&format!("/v1/hooks/{id}/replays/01J00000000000000000000000"), &t).await.status, 404);
    assert_eq!(stack.get(&format!("/v1/hooks/{id}/replays/not-an-id"), &t).await.status, 404);
    stack.shutdown().await;
}
}

on_both_backends! {
async fn a_replay_asks_for_a_window_it_can_send_and_its_job_outlives_the_hook(flavor: Flavor) {
    let stack = TestStack::start(flavor).await;
    let r = Receiver::start().await;
    let t = stack.token("acme", ALL_SCOPES);
    let h = stack.create_hook(&t, &json!({"name": "outlived", "url": r.url("/")})).await;
    let id = h["id"].as_str().unwrap().to_owned();
    stack.publish(&t, &json!({"detail-type": "user.login", "source": "idp", "detail": {"n": 1}})).await;
    let delivered = eventually(stack.flavor().patience(LONG), || async {
        stack.deliveries(&t, &id, 1).await.into_iter().find(|d| d["status"] == "SUCCEEDED")
    })
    .await
    .expect("delivered");
    let did = delivered["delivery_id"].as_str().unwrap().to_owned();
    let replay = |body: Value| {
        let (stack, t, id) = (&stack, &t, &id);
        async move { stack.post(&format!("/v1/hooks/{id}/replay"), t, &body).await }
    };
    let now = chrono::Utc::now();

    // A window that ends now must start before it; one wholly past the retention is empty.
    let future = replay(json!({"since": (now + chrono::Duration::hours(1)).to_rfc3339()})).await;
    assert_eq!((future.status.as_u16(), &future.body["errors"][0]["field"]), (400, &json!("since")), "{}", future.body);
    let ahead = replay(json!({"since": (now + chrono::Duration::hours(1)).to_rfc3339(),
        "until": (now + chrono::Duration::hours(2)).to_rfc3339()}))
    .await;
    assert_eq!((ahead.status.as_u16(), &ahead.body["errors"][0]["field"]), (400, &json!("since")), "{}", ahead.body);
    let old = replay(json!({"since": "2020-01-01T00:00:00Z", "until": "2020-01-02T00:00:00Z"})).await;
    assert_eq!((old.status.as_u16(), &old.body["errors"][0]["field"]), (400, &json!("until")), "{}", old.body);
    // A window written as an array is not read by position (as `since`, `until`, `status`).
    let listed = replay(json!([(now - chrono::Duration::hours(1)).to_rfc3339(), null, "ALL"])).await;
    assert_eq!((listed.status.as_u16(), &listed.body["errors"][0]["field"]), (400, &json!("body")), "{}", listed.body);

    // A status named many times is kept once; an `until` past now is now (the job takes in
    // no delivery made after it was asked for, and says so in a time RFC 3339 can write).
    let since = (now - chrono::Duration::hours(1)).to_rfc3339();
    let started =
        replay(json!({"since": since, "until": "9999-12-31T23:59:59-01:00", "status": vec!["SUCCEEDED"; 1000]})).await;
    assert_eq!(started.status, 202, "{}", started.body);
    assert_eq!(started.body["status"], json!(["SUCCEEDED"]));
    let until = chrono::DateTime::parse_from_rfc3339(started.body["until"].as_str().unwrap()).expect("RFC 3339");
    assert!(until <= chrono::Utc::now(), "{}", started.body);
    let location = started.headers["location"].to_str().unwrap().to_owned();
    let done = job_until_stopped(&stack, &t, &location).await;
    assert_eq!((done["state"].as_str(), done["queued"].as_u64()), (Some("SUCCEEDED"), Some(1)), "{done}");

    // The hook's jobs are listed newest first, a page at a time, as they now stand.
    let second = replay(json!({"since": since, "status": "ALL"})).await;
    assert_eq!(second.status, 202, "{}", second.body);
    let second_at = second.headers["location"].to_str().unwrap().to_owned();
    let stopped = job_until_stopped(&stack, &t, &second_at).await;
    let list = |query: &str| {
        let (stack, t, id) = (&stack, &t, &id);
        let path = format!("/v1/hooks/{id}/replays{query}");
        async move { stack.get(&path, t).await }
    };
    let all = list("").await;
    assert_eq!(all.status, 200, "{}", all.body);
    assert_eq!((&all.body["replays"], &all.body["next_cursor"]), (&json!([stopped, done]), &Value::Null));
    let first = list("?limit=1").await.body;
    assert_eq!(first["replays"], json!([stopped]));
    let cursor = first["next_cursor"].as_str().expect("a second page").to_owned();
    let rest = list(&format!("?limit=1&cursor={cursor}")).await.body;
    assert_eq!((&rest["replays"], &rest["next_cursor"]), (&json!([done]), &Value::Null));
    for (query, field) in [("?limit=0", "limit"), ("?limit=101", "limit"), ("?cursor=not-a-cursor", "cursor")] {
        let refused = list(query).await;
        assert_eq!((refused.status.as_u16(), &refused.body["errors"][0]["field"]), (400, &json!(field)), "{query}");
    }
    let theirs = stack.get(&format!("/v1/hooks/{id}/replays"), &stack.token("globex", ALL_SCOPES)).await;
    assert_eq!(theirs.status, 404, "another tenant's hook: {}", theirs.body);

    // With an Idempotency-Key, a repeat (a double submit, a retry after a timeout) gets the
    // first job back, and no second job sends the window again.
    let bearer = format!("Bearer {t}");
    let keyed = |key: &'static str, body: Value| {
        let (stack, bearer, id) = (&stack, &bearer, &id);
        async move {
            let headers = [("authorization", bearer.as_str()), ("content-type", "application/json"), ("idempotency-key", key)];
            stack.raw("POST", &format!("/v1/hooks/{id}/replay"), &headers, serde_json::to_vec(&body).unwrap()).await
        }
    };
    let once = keyed("replay-1", json!({"since": since, "status": "ALL"})).await;
    let again = keyed("replay-1", json!({"since": since, "status": "ALL"})).await;
    assert_eq!((once.status.as_u16(), again.status.as_u16()), (202, 202), "{} {}", once.body, again.body);
    assert_eq!(again.body, once.body, "the repeat is answered with the first job");
    assert_eq!(again.headers["idempotent-replayed"], "true");
    assert_eq!(again.headers["location"], once.headers["location"]);
    let other = keyed("replay-1", json!({"since": since, "status": "FAILED"})).await;
    assert_eq!(other.status, 409, "the key names another request: {}", other.body);
    let keyed_job = job_until_stopped(&stack, &t, once.headers["location"].to_str().unwrap()).await;
    assert_eq!(list("").await.body["replays"], json!([keyed_job, stopped, done]), "one job for the two requests");

    // A hook that cannot receive is not sent to: the deliveries would only be cancelled.
    let mut doc = stack.get(&format!("/v1/hooks/{id}"), &t).await.body;
    doc["enabled"] = json!(false);
    assert_eq!(stack.put(&format!("/v1/hooks/{id}"), &t, &doc).await.status, 200);
    let retried = stack.call("POST", &format!("/v1/hooks/{id}/deliveries/{did}/retry"), Some(&t), None).await;
    let refused = replay(json!({"since": since})).await;
    for a in [&retried, &refused] {
        assert_eq!(a.status, 409, "{}", a.body);
        assert_eq!(a.headers["content-type"], "application/problem+json");
        assert!(a.body["detail"].as_str().unwrap().contains("hook disabled"), "{}", a.body);
    }
    // A repeat of an answered request is still answered as the first time: the client
    // whose answer was lost learns its job started.
    let repeated = keyed("replay-1", json!({"since": since, "status": "ALL"})).await;
    assert_eq!((repeated.status.as_u16(), &repeated.body), (202, &once.body), "{}", repeated.body);
    assert_eq!(repeated.headers["idempotent-replayed"], "true");
    // A new key refused here is given back, so the request can be made again once the hook
    // receives (held, it would answer "in progress" for five minutes).
    assert_eq!(keyed("replay-2", json!({"since": since})).await.status, 409);
    doc["enabled"] = json!(true);
    doc["version"] = stack.get(&format!("/v1/hooks/{id}"), &t).await.body["version"].clone();
    assert_eq!(stack.put(&format!("/v1/hooks/{id}"), &t, &doc).await.status, 200);
    let after = keyed("replay-2", json!({"since": since})).await;
    assert_eq!(after.status, 202, "{}", after.body);
    job_until_stopped(&stack, &t, after.headers["location"].to_str().unwrap()).await;

    // The job is readable after its hook is deleted, and still only to its tenant.
    assert_eq!(stack.delete(&format!("/v1/hooks/{id}"), &t).await.status, 204);
    let read = stack.get(&location, &t).await;
    assert_eq!((read.status.as_u16(), read.body["state"].as_str()), (200, Some("SUCCEEDED")), "{}", read.body);
    assert_eq!(stack.get(&location, &stack.token("globex", ALL_SCOPES)).await.status, 404);
    assert_eq!(stack.get(&format!("/v1/hooks/{id}/replays/01J00000000000000000000000"), &t).await.status, 404);
    // Its jobs are no longer listed: the hook is gone.
    assert_eq!(stack.get(&format!("/v1/hooks/{id}/replays"), &t).await.status, 404);
    stack.shutdown().await;
}
}

on_both_backends! {
/// A job stored but never poked (the API stopped between the two), or whose poke was lost
/// with the save that would have failed it, read `RUNNING` for its seven days with nothing
/// working on it. Read once it has stalled, it is poked again and finishes; one that has
/// not stalled is left to its poke.
async fn a_stalled_replay_is_poked_again_when_it_is_read(flavor: Flavor) {
    use hookbridge_core::replay::{ReplayJob, STALLED_AFTER};

    let stack = TestStack::start(flavor).await;
    let r = Receiver::start().await;
    let t = stack.token("acme", ALL_SCOPES);
    let h = stack.create_hook(&t, &json!({"name": "stalled", "url": r.url("/")})).await;
    let id = h["id"].as_str().unwrap().to_owned();
    let now = chrono::Utc::now();
    stack.publish(&t, &events(0)).await;
    r.wait_for(10, stack.flavor().patience(LONG)).await;
    eventually(stack.flavor().patience(LONG), || async { (count(&stack, &t, &id, "SUCCEEDED").await == 10).then_some(()) })
        .await
        .expect("every delivery recorded");

    // Stored as the API stores a job, and never poked; `idle` is how long ago it was last
    // saved (it is asked for now, after the deliveries it re-sends).
    let stored = |idle: chrono::Duration| {
        let asked_at = chrono::Utc::now();
        let mut job =
            ReplayJob::new("acme".parse().unwrap(), id.parse().unwrap(), now - chrono::Duration::hours(1), asked_at, None, asked_at);
        job.updated_at = asked_at - idle;
        let (stack, location) = (&stack, format!("/v1/hooks/{id}/replays/{}", job.id));
        async move {
            stack.stack().backend().replays.create(&job).await.unwrap();
            location
        }
    };
    let recent = stored(chrono::Duration::minutes(1)).await;
    let stalled = stored(STALLED_AFTER + chrono::Duration::minutes(1)).await;

    let read = stack.get(&stalled, &t).await;
    assert_eq!(read.status, 200, "{}", read.body);
    let updated = chrono::DateTime::parse_from_rfc3339(read.body["updated_at"].as_str().unwrap()).unwrap();
    assert!(updated > now, "its updated_at moves on when it is poked again: {}", read.body);
    let done = job_until_stopped(&stack, &t, &stalled).await;
    assert_eq!((done["state"].as_str(), done["queued"].as_u64()), (Some("SUCCEEDED"), Some(10)), "{done}");
    r.wait_for(20, stack.flavor().patience(LONG)).await;

    // Not stalled: read, listed, it stays as its poke (here, none) leaves it.
    let listed = stack.get(&format!("/v1/hooks/{id}/replays"), &t).await;
    assert_eq!(listed.status, 200, "{}", listed.body);
    tokio::time::sleep(Duration::from_secs(2)).await;
    let left = stack.get(&recent, &t).await.body;
    assert_eq!((left["state"].as_str(), left["queued"].as_u64()), (Some("RUNNING"), Some(0)), "{left}");
    assert_eq!(r.received().len(), 20, "only the stalled job re-sent anything");
    stack.shutdown().await;
}
}

on_both_backends! {
/// A hook narrowed since (its `event_types` changed) is not sent, by a retry or a replay,
/// the deliveries it no longer wants: the worker would only cancel them, overwriting how
/// they ended. Its test event is sent again, as it was sent the first time, whatever the
/// hook subscribes to; a producer's event that names the test event's type is not.
async fn a_resend_leaves_what_the_hook_no_longer_wants_and_sends_its_test_event(flavor: Flavor) {
    let stack = TestStack::start(flavor).await;
    let r = Receiver::start().await;
    let t = stack.token("acme", ALL_SCOPES);
    let h = stack
        .create_hook(&t, &json!({"name": "narrowed", "url": r.url("/"), "event_types": ["user.*", "hook.test"]}))
        .await;
    let id = h["id"].as_str().unwrap().to_owned();
    let since = (chrono::Utc::now() - chrono::Duration::minutes(5)).to_rfc3339();
    stack.publish(&t, &json!({"detail-type": "user.login", "source": "idp", "detail": {"n": 1}})).await;
    stack.publish(&t, &json!({"detail-type": "hook.test", "source": "crm", "detail": {"n": 2}})).await;
    let tested = stack.call("POST", &format!("/v1/hooks/{id}/test"), Some(&t), None).await;
    assert_eq!(tested.status, 202, "{}", tested.body);
    let test = tested.body["delivery_id"].as_str().unwrap().to_owned();
    // Given long: under the whole suite on a 2-core machine the emulator once took more
    // than the two minutes for these three (alone they take seconds), and a delivery whose
    // first two attempts were cut short waits five minutes for its third.
    let done = eventually(Duration::from_secs(600), || async {
        let ds = stack.deliveries(&t, &id, 1).await;
        (ds.len() == 3 && ds.iter().all(|d| d["status"] == "SUCCEEDED")).then_some(ds)
    })
    .await
    .expect("all three delivered");
    let login = done.iter().find(|d| d["event_type"] == "user.login").unwrap()["delivery_id"].as_str().unwrap().to_owned();
    let theirs = done.iter().find(|d| d["event_type"] == "hook.test" && d["delivery_id"] != test.as_str()).unwrap();
    let theirs = theirs["delivery_id"].as_str().unwrap().to_owned();

    let mut doc = stack.get(&format!("/v1/hooks/{id}"), &t).await.body;
    doc["event_types"] = json!(["device.*"]);
    let narrowed = stack.put(&format!("/v1/hooks/{id}"), &t, &doc).await;
    assert_eq!(narrowed.status, 200, "{}", narrowed.body);

    for unwanted in [&login, &theirs] {
        let refused = stack.call("POST", &format!("/v1/hooks/{id}/deliveries/{unwanted}/retry"), Some(&t), None).await;
        assert_eq!(refused.status, 409, "{}", refused.body);
        assert!(refused.body["detail"].as_str().unwrap().contains("no longer subscribes"), "{}", refused.body);
    }
    let retried = stack.call("POST", &format!("/v1/hooks/{id}/deliveries/{test}/retry"), Some(&t), None).await;
    assert_eq!(retried.status, 202, "{}", retried.body);
    r.wait_for(4, stack.flavor().patience(LONG)).await;
    // Recorded too: a replay passes over a delivery still under way (the receiver can have
    // it a moment before its record says so).
    let finished = eventually(stack.flavor().patience(LONG), || async {
        let d = stack.get(&format!("/v1/hooks/{id}/deliveries/{test}"), &t).await.body;
        (d["status"] == "SUCCEEDED" && d["attempts"].as_u64() == Some(2)).then_some(())
    })
    .await;
    assert!(finished.is_some(), "the retried test event is recorded");

    let started = stack.post(&format!("/v1/hooks/{id}/replay"), &t, &json!({"since": since, "status": "ALL"})).await;
    assert_eq!(started.status, 202, "{}", started.body);
    let job = job_until_stopped(&stack, &t, started.headers["location"].to_str().unwrap()).await;
    assert_eq!((job["state"].as_str(), job["queued"].as_u64(), job["skipped"].as_u64()), (Some("SUCCEEDED"), Some(1), Some(2)), "{job}");
    let received = r.wait_for(5, stack.flavor().patience(LONG)).await;
    let kinds: Vec<String> = received
        .iter()
        .map(|m| format!("{} from {}", m.json()["detail-type"].as_str().unwrap(), m.json()["source"].as_str().unwrap()))
        .collect();
    let count = |k: &str| kinds.iter().filter(|x| *x == k).count();
    assert_eq!(count("hook.test from hookbridge"), 3, "sent, retried, replayed: {kinds:?}");
    assert_eq!((count("user.login from idp"), count("hook.test from crm")), (1, 1), "{kinds:?}");
    let settled = eventually(stack.flavor().patience(LONG), || async {
        let ds = stack.deliveries(&t, &id, 1).await;
        ds.iter().all(|d| d["status"] == "SUCCEEDED").then_some(ds)
    })
    .await
    .expect("the test event's re-send ends");
    assert_eq!(settled.len(), 3, "{settled:?}");
    stack.shutdown().await;
}
}
