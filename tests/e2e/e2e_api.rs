//! One test per row of API.md's table: status, body and side effects.

use std::time::Duration;

use hookbridge_core::secret::SigningSecret;
use hookbridge_core::signing::verify_standard;
use hookbridge_e2e::{ALL_SCOPES, Flavor, TestStack, eventually, on_both_backends};
use hookbridge_testkit::{Received, Receiver, Reply};
use serde_json::{Value, json};

const WAIT: Duration = Duration::from_secs(20);

fn problem_fields(body: &Value) -> Vec<String> {
    body["errors"]
        .as_array()
        .map(|e| e.iter().map(|f| f["field"].as_str().unwrap_or("").to_owned()).collect())
        .unwrap_or_default()
}

async fn publish_one(stack: &TestStack, token: &str, event_type: &str) -> String {
    stack.publish(token, &json!({"detail-type": event_type, "source": "idp", "detail": {"k": 1}})).await.remove(0)
}

on_both_backends! {
async fn create_one_returns_201_secret_and_location_then_the_verifier_authorizes(flavor: Flavor) {
    let stack = TestStack::start(flavor).await;
    let t = stack.token("acme", ALL_SCOPES);
    let a = stack.post("/v1/hooks", &t, &json!({"name": "one", "url": "https://receiver.example/h"})).await;
    assert_eq!(a.status, 201, "{}", a.body);
    let id = a.body["id"].as_str().unwrap();
    assert_eq!(a.headers["location"], format!("/v1/hooks/{id}").as_str());
    assert!(a.body["secret"].as_str().unwrap().starts_with("whsec_"));
    assert_eq!(a.body["created_by"], "acme-tester");
    assert_eq!(a.body["version"], 1);
    assert_eq!(a.body["destination_state"], "ACTIVE");
    let authorized = eventually(flavor.patience(WAIT), || async {
        let h = stack.get(&format!("/v1/hooks/{id}"), &t).await.body;
        (h["connection_state"] == "AUTHORIZED").then_some(h)
    })
    .await
    .expect("the verifier authorizes a hook that needs no checks");
    assert!(authorized.get("secret").is_none(), "a read returned the secret");
    stack.shutdown().await;
}
}

on_both_backends! {
async fn bulk_create_succeeds_or_fails_item_by_item(flavor: Flavor) {
    let stack = TestStack::start(flavor).await;
    let t = stack.token("acme", ALL_SCOPES);
    let a = stack
        .post(
            "/v1/hooks",
            &t,
            &json!([
                {"name": "good-1", "url": "https://r.example/1"},
                {"name": "bad one", "url": "https://r.example/2", "event_types": []},
                {"name": "good-1", "url": "https://r.example/3"},
                {"name": "good-2", "url": "https://r.example/4", "colour": "red"},
                {"name": "good-3", "url": "https://r.example/5"}
            ]),
        )
        .await;
    assert_eq!(a.status, 200, "{}", a.body);
    let results = a.body["results"].as_array().unwrap();
    let statuses: Vec<_> = results.iter().map(|r| r["status"].as_u64().unwrap()).collect();
    assert_eq!(statuses, [201, 400, 409, 400, 201]);
    assert_eq!(problem_fields(&results[1]["error"]), ["name", "event_types"]);
    assert_eq!(results[1]["error"]["status"], 400);
    assert_eq!(problem_fields(&results[3]["error"]), ["colour"]);
    assert!(results[0]["hook"]["secret"].as_str().is_some());
    let listed = stack.get("/v1/hooks", &t).await.body;
    assert_eq!(listed["hooks"].as_array().unwrap().len(), 2);
    // Items that are not objects: a hook's 24 fields by position would otherwise be read
    // as one.
    let mut by_position = vec![json!("by-position"), Value::Null, json!("https://r.example/6")];
    by_position.resize(24, Value::Null);
    let a = stack.post("/v1/hooks", &t, &json!([by_position, "good-4", 7])).await;
    assert_eq!(a.status, 200, "{}", a.body);
    for result in a.body["results"].as_array().unwrap() {
        assert_eq!(result["status"], 400, "{result}");
        assert_eq!(problem_fields(&result["error"]), ["body"]);
        assert_eq!(result["error"]["errors"][0]["message"], "must be a hook object");
    }
    assert_eq!(stack.get("/v1/hooks", &t).await.body["hooks"].as_array().unwrap().len(), 2);
    let too_many: Vec<Value> = (0..101).map(|i| json!({"name": format!("h{i}"), "url": "https://r.example/"})).collect();
    let a = stack.post("/v1/hooks", &t, &Value::Array(too_many)).await;
    assert_eq!(a.status, 400);
    stack.shutdown().await;
}
}

on_both_backends! {
async fn list_pages_with_a_cursor(flavor: Flavor) {
    let stack = TestStack::start(flavor).await;
    let t = stack.token("acme", ALL_SCOPES);
    for i in 0..5 {
        stack.create_hook(&t, &json!({"name": format!("h{i}"), "url": "https://r.example/"})).await;
    }
    let mut names = Vec::new();
    let mut path = "/v1/hooks?limit=2".to_owned();
    loop {
        let a = stack.get(&path, &t).await;
        assert_eq!(a.status, 200);
        let hooks = a.body["hooks"].as_array().unwrap();
        assert!(hooks.len() <= 2);
        names.extend(hooks.iter().map(|h| h["name"].as_str().unwrap().to_owned()));
        match a.body["next_cursor"].as_str() {
            Some(c) => path = format!("/v1/hooks?limit=2&cursor={c}"),
            None => break,
        }
    }
    assert_eq!(names, ["h0", "h1", "h2", "h3", "h4"]);
    assert_eq!(problem_fields(&stack.get("/v1/hooks?limit=0", &t).await.body), ["limit"]);
    assert_eq!(problem_fields(&stack.get("/v1/hooks?cursor=nonsense", &t).await.body), ["cursor"]);
    stack.shutdown().await;
}
}

on_both_backends! {
async fn get_is_404_for_unknown_malformed_and_foreign_ids(flavor: Flavor) {
    let stack = TestStack::start(flavor).await;
    let t = stack.token("acme", ALL_SCOPES);
    let other = stack.token("globex", ALL_SCOPES);
    let h = stack.create_hook(&t, &json!({"name": "mine", "url": "https://r.example/"})).await;
    let id = h["id"].as_str().unwrap();
    assert_eq!(stack.get(&format!("/v1/hooks/{id}"), &t).await.status, 200);
    for (path, token) in [
        (format!("/v1/hooks/{id}"), &other),
        ("/v1/hooks/01KAKSAMP4E000000000H00K01".to_owned(), &t),
        ("/v1/hooks/not-an-id".to_owned(), &t),
        // Past the largest ULID: the decoder dropped the first character's high bits, so
        // this named the hook above.
        (format!("/v1/hooks/8{}", &id[1..]), &t),
        // Escapes that are not UTF-8 name nothing either (axum's own answer was a
        // plain-text 400).
        ("/v1/hooks/%FF".to_owned(), &t),
        (format!("/v1/hooks/{id}/replays/%C3%28"), &t),
    ] {
        let a = stack.get(&path, token).await;
        assert_eq!(a.status, 404, "{path}");
        assert_eq!(a.body["status"], 404);
        assert_eq!(a.headers["content-type"], "application/problem+json");
    }
    // Keycloak's adapter checks the caller first, and answers in Keycloak's shape.
    let anonymous = stack.call("GET", "/realms/%FF/webhooks", None, None).await;
    assert_eq!(anonymous.status, 401, "{}", anonymous.body);
    let known = stack.call("GET", "/realms/%FF/webhooks/x", Some(&t), None).await;
    assert_eq!((known.status.as_u16(), known.body["error"].as_str()), (404, Some("no such realm")), "{}", known.body);
    stack.shutdown().await;
}
}

on_both_backends! {
async fn replace_keeps_left_out_secrets_refuses_a_new_name_and_stale_versions(flavor: Flavor) {
    let stack = TestStack::start(flavor).await;
    let r = Receiver::start().await;
    let t = stack.token("acme", ALL_SCOPES);
    let h = stack
        .create_hook(
            &t,
            &json!({"name": "rep", "url": r.url("/a"), "auth": {"type": "HEADER", "name": "X-Key", "value": "hv-secret-1"}}),
        )
        .await;
    let id = h["id"].as_str().unwrap();
    let secret = SigningSecret::parse(h["secret"].as_str().unwrap()).unwrap();
    let path = format!("/v1/hooks/{id}");

    let renamed = stack.put(&path, &t, &json!({"name": "other", "url": r.url("/a")})).await;
    assert_eq!(renamed.status, 409, "{}", renamed.body);

    // GET → edit → PUT, with the read-only fields echoed back and the secret left out.
    let mut doc = stack.get(&path, &t).await.body;
    doc["url"] = json!(r.url("/b"));
    doc["description"] = json!("moved");
    let a = stack.put(&path, &t, &doc).await;
    assert_eq!(a.status, 200, "{}", a.body);
    assert_eq!(a.body["version"], 2);
    assert_eq!(a.body["url"], r.url("/b"));
    assert!(a.body.get("secret").is_none());

    let stale = stack.put(&path, &t, &doc).await;
    assert_eq!(stale.status, 409, "a replace naming version 1 after version 2 must lose");
    let with_header = stack
        .raw("PUT", &path, &[("authorization", &format!("Bearer {t}")), ("content-type", "application/json"), ("if-match", "\"1\"")], serde_json::to_vec(&json!({"url": r.url("/c")})).unwrap())
        .await;
    assert_eq!(with_header.status, 409);

    publish_one(&stack, &t, "user.login").await;
    let got = r.wait_for(1, flavor.patience(WAIT)).await;
    assert_eq!(got[0].uri.path(), "/b");
    assert_eq!(got[0].header("x-key"), Some("hv-secret-1"), "the auth secret left out kept its value");
    let (mid, ts, sig) = (got[0].header("webhook-id").unwrap(), got[0].header("webhook-timestamp").unwrap().parse().unwrap(), got[0].header("webhook-signature").unwrap());
    assert_eq!(verify_standard(&secret, mid, ts, sig, &got[0].body, chrono::Utc::now().timestamp()), Ok(()));

    // `If-Match: *` asks only that the hook exist (RFC 9110).
    let any = stack
        .raw("PUT", &path, &[("authorization", &format!("Bearer {t}")), ("content-type", "application/json"), ("if-match", "*")], serde_json::to_vec(&json!({"url": r.url("/c")})).unwrap())
        .await;
    assert_eq!(any.status, 200, "{}", any.body);
    assert_eq!(any.body["version"], 3);
    stack.shutdown().await;
}
}

on_both_backends! {
async fn two_concurrent_replaces_of_one_version_cannot_both_win(flavor: Flavor) {
    let stack = TestStack::start(flavor).await;
    let t = stack.token("acme", ALL_SCOPES);
    let h = stack.create_hook(&t, &json!({"name": "race", "url": "https://r.example/"})).await;
    let path = format!("/v1/hooks/{}", h["id"].as_str().unwrap());
    let a = json!({"url": "https://r.example/a", "version": 1});
    let b = json!({"url": "https://r.example/b", "version": 1});
    let (ra, rb) = tokio::join!(stack.put(&path, &t, &a), stack.put(&path, &t, &b));
    let mut statuses = [ra.status.as_u16(), rb.status.as_u16()];
    statuses.sort_unstable();
    assert_eq!(statuses, [200, 409]);
    let winner = if ra.status == 200 { "https://r.example/a" } else { "https://r.example/b" };
    assert_eq!(stack.get(&path, &t).await.body["url"], winner);
    stack.shutdown().await;
}
}

on_both_backends! {
async fn delete_stops_every_delivery_and_frees_the_name(flavor: Flavor) {
    // The delete must land before the waiting delivery's retry: on the emulator, whose calls
    // can take seconds, the retry comes later.
    let retry_in = match flavor {
        Flavor::Embedded => 5,
        Flavor::Aws => 30,
    };
    let schedule = format!("{retry_in}s,{retry_in}s,{retry_in}s");
    let stack = TestStack::start_with(flavor, &[(hookbridge_core::settings::RETRY_SCHEDULE, &schedule)]).await;
    let (gone, kept) = (Receiver::start().await, Receiver::start().await);
    // The hook to delete has a delivery waiting on its retry; another hook of the tenant
    // receives the same events, so a later event is seen to have been routed.
    gone.always(Reply::status(503));
    let t = stack.token("acme", ALL_SCOPES);
    let h = stack.create_hook(&t, &json!({"name": "gone", "url": gone.url("/")})).await;
    stack.create_hook(&t, &json!({"name": "kept", "url": kept.url("/")})).await;
    publish_one(&stack, &t, "user.login").await;
    let first = gone.wait_for(1, flavor.patience(WAIT)).await[0].at;
    let path = format!("/v1/hooks/{}", h["id"].as_str().unwrap());
    let a = stack.delete(&path, &t).await;
    assert_eq!(a.status, 204);
    assert_eq!(stack.get(&path, &t).await.status, 404);
    assert_eq!(stack.delete(&path, &t).await.status, 404);
    let second = publish_one(&stack, &t, "user.login").await;
    let routed = |got: &[Received]| got.iter().any(|g| g.json()["id"] == second.as_str());
    assert!(routed(&kept.wait_until(flavor.patience(WAIT), routed).await), "the later event reached the hook kept");
    // Past the waiting delivery's retry (`retry_in` after the first attempt, give or take a
    // fifth), with room to spare.
    tokio::time::sleep_until(first + Duration::from_secs(retry_in * 8 / 5)).await;
    for g in gone.received() {
        assert_ne!(g.json()["id"], second.as_str(), "a deleted hook was sent a new event");
        // A copy of the first attempt (at least once) comes with it; a retry, a fifth less
        // than `retry_in` later at the soonest.
        assert!(g.at < first + Duration::from_secs(retry_in * 3 / 5), "a deleted hook was sent its retry");
    }
    stack.create_hook(&t, &json!({"name": "gone", "url": gone.url("/")})).await;
    stack.shutdown().await;
}
}

on_both_backends! {
async fn verify_runs_the_challenge_and_reports_it(flavor: Flavor) {
    let stack = TestStack::start(flavor).await;
    let r = Receiver::start().await;
    r.always(Reply::EchoChallenge { header: "x-uid-challenge".into() });
    let t = stack.token("acme", ALL_SCOPES);
    let h = stack.create_hook(&t, &json!({"name": "v", "url": r.url("/")})).await;
    let id = h["id"].as_str().unwrap();
    let a = stack.post(&format!("/v1/hooks/{id}/verify"), &t, &json!({})).await;
    assert_eq!(a.status, 202, "{}", a.body);
    assert_eq!(a.body["status"], "PENDING");
    let verified = eventually(flavor.patience(WAIT), || async {
        let h = stack.get(&format!("/v1/hooks/{id}"), &t).await.body;
        (h["verification"]["status"] == "VERIFIED").then_some(h)
    })
    .await
    .expect("verified");
    assert!(verified["verification"]["verified_at"].is_string());
    assert_eq!(r.received()[0].method, "GET");
    stack.shutdown().await;
}
}

on_both_backends! {
async fn rotation_signs_with_both_secrets_for_a_day(flavor: Flavor) {
    let stack = TestStack::start(flavor).await;
    let r = Receiver::start().await;
    let t = stack.token("acme", ALL_SCOPES);
    let h = stack.create_hook(&t, &json!({"name": "rot", "url": r.url("/")})).await;
    let id = h["id"].as_str().unwrap();
    let old = SigningSecret::parse(h["secret"].as_str().unwrap()).unwrap();
    let a = stack.call("POST", &format!("/v1/hooks/{id}/secret/rotate"), Some(&t), None).await;
    assert_eq!(a.status, 200, "{}", a.body);
    let new = SigningSecret::parse(a.body["secret"].as_str().unwrap()).unwrap();
    assert_ne!(new.expose(), old.expose());
    assert!(stack.get(&format!("/v1/hooks/{id}"), &t).await.body.get("secret").is_none());

    publish_one(&stack, &t, "user.login").await;
    let got = r.wait_for(1, flavor.patience(WAIT)).await;
    let sig = got[0].header("webhook-signature").unwrap();
    assert_eq!(sig.split(' ').count(), 2, "{sig}");
    let (mid, ts) = (got[0].header("webhook-id").unwrap(), got[0].header("webhook-timestamp").unwrap().parse().unwrap());
    let now = chrono::Utc::now().timestamp();
    assert_eq!(verify_standard(&old, mid, ts, sig, &got[0].body, now), Ok(()));
    assert_eq!(verify_standard(&new, mid, ts, sig, &got[0].body, now), Ok(()));
    let chosen = stack.post(&format!("/v1/hooks/{id}/secret/rotate"), &t, &json!({"secret": "nope"})).await;
    assert_eq!(problem_fields(&chosen.body), ["secret"]);
    stack.shutdown().await;
}
}

on_both_backends! {
async fn test_event_goes_to_this_hook_only(flavor: Flavor) {
    let stack = TestStack::start(flavor).await;
    let r = Receiver::start().await;
    let other = Receiver::start().await;
    let t = stack.token("acme", ALL_SCOPES);
    let h = stack.create_hook(&t, &json!({"name": "tested", "url": r.url("/")})).await;
    stack.create_hook(&t, &json!({"name": "bystander", "url": other.url("/")})).await;
    let id = h["id"].as_str().unwrap();
    let a = stack.call("POST", &format!("/v1/hooks/{id}/test"), Some(&t), None).await;
    assert_eq!(a.status, 202, "{}", a.body);
    let got = r.wait_for(1, flavor.patience(WAIT)).await;
    assert_eq!(got[0].header("webhook-id"), a.body["delivery_id"].as_str());
    assert_eq!(got[0].json()["detail-type"], "hook.test");
    assert_eq!(got[0].json()["detail"]["hook_id"], id);
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert!(other.received().is_empty());
    stack.shutdown().await;
}
}

on_both_backends! {
async fn read_detail_and_retry_of_a_delivery(flavor: Flavor) {
    let stack = TestStack::start(flavor).await;
    let r = Receiver::start().await;
    // Every copy of the first attempt (delivery is at least once) gets the 400 too.
    r.always(Reply::body(400, "bad request, says the receiver"));
    let t = stack.token("acme", ALL_SCOPES);
    let h = stack.create_hook(&t, &json!({"name": "rd", "url": r.url("/")})).await;
    let id = h["id"].as_str().unwrap();
    publish_one(&stack, &t, "user.login").await;
    let failed = eventually(flavor.patience(WAIT), || async {
        stack.deliveries(&t, id, 1).await.into_iter().find(|d| d["status"] == "FAILED")
    })
    .await
    .expect("a 400 fails at once");
    stack.assert_attempted_once(&t, id, &failed).await;
    assert_eq!(failed["last_status_code"], 400);
    assert_eq!(failed["last_error_class"], "http_4xx");
    let did = failed["delivery_id"].as_str().unwrap();

    let detail = stack.get(&format!("/v1/hooks/{id}/deliveries/{did}"), &t).await;
    assert_eq!(detail.status, 200);
    assert_eq!(detail.body["envelope"]["detail-type"], "user.login");
    assert_eq!(detail.body["attempt_log"][0]["response_excerpt"], "bad request, says the receiver");

    r.always(Reply::status(200));
    let before = r.received().len();
    let asked_at = chrono::Utc::now() - chrono::Duration::milliseconds(5);
    let a = stack.call("POST", &format!("/v1/hooks/{id}/deliveries/{did}/retry"), Some(&t), None).await;
    assert_eq!(a.status, 202, "{}", a.body);
    let got = r.wait_until(flavor.patience(WAIT), |got| got.len() > before).await;
    assert!(got.len() > before, "the retry was sent");
    assert!(got.iter().all(|g| g.header("webhook-id") == Some(did)), "a retry keeps the webhook-id");
    let done = eventually(flavor.patience(WAIT), || async {
        stack.deliveries(&t, id, 1).await.into_iter().find(|d| d["status"] == "SUCCEEDED")
    })
    .await
    .expect("the retry succeeds");
    // One attempt more than the failure read back (copies aside, on the emulator).
    match flavor {
        hookbridge_e2e::Flavor::Embedded => assert_eq!(done["attempts"], 2, "{done}"),
        hookbridge_e2e::Flavor::Aws => assert!(done["attempts"].as_u64() > failed["attempts"].as_u64(), "{done}"),
    }
    // The success is the retry's: made after it was asked for (not a late copy of the 400's).
    let detail = stack.get(&format!("/v1/hooks/{id}/deliveries/{did}"), &t).await.body;
    let last = detail["attempt_log"].as_array().and_then(|l| l.last()).cloned().unwrap_or_default();
    let at = last["at"].as_str().and_then(|a| chrono::DateTime::parse_from_rfc3339(a).ok()).expect("its time");
    assert!(last["status_code"] == 200 && at >= asked_at, "{detail}");
    for bad in ["hours=0", "hours=337", "hours=x"] {
        assert_eq!(problem_fields(&stack.get(&format!("/v1/hooks/{id}/events?{bad}"), &t).await.body), ["hours"]);
    }
    // As far back as deliveries are kept, so one replayed days later can be followed.
    assert_eq!(stack.get(&format!("/v1/hooks/{id}/events?hours=336"), &t).await.status, 200);
    // A parameter the route does not take is refused, not ignored: `status` would seem to
    // filter, and a bulk retry of "the failed ones" would re-send every delivery.
    for unknown in ["status=FAILED", "hour=1"] {
        let refused = stack.get(&format!("/v1/hooks/{id}/events?{unknown}"), &t).await;
        assert_eq!(problem_fields(&refused.body), ["query"], "{unknown}: {}", refused.body);
    }
    assert_eq!(problem_fields(&stack.get("/v1/hooks?status=FAILED", &t).await.body), ["query"]);
    stack.shutdown().await;
}
}

on_both_backends! {
async fn publishing_validates_deduplicates_and_forces_the_tenant(flavor: Flavor) {
    let stack = TestStack::start(flavor).await;
    let r = Receiver::start().await;
    let t = stack.token("acme", ALL_SCOPES);
    stack.create_hook(&t, &json!({"name": "all", "url": r.url("/")})).await;
    let eleven: Vec<Value> = (0..11).map(|_| json!({"detail-type": "x", "source": "p", "detail": {}})).collect();
    assert_eq!(problem_fields(&stack.post("/v1/events", &t, &Value::Array(eleven)).await.body), ["body"]);
    let big = json!({"detail-type": "x", "source": "p", "detail": {"pad": "x".repeat(256 * 1024)}});
    let too_big = stack.post("/v1/events", &t, &big).await;
    assert_eq!(too_big.status, 413, "{}", too_big.body);
    assert!(too_big.body["detail"].as_str().unwrap().contains("262144"));
    // Within the bus's limit, but not once in its envelope, which the ingest queue carries.
    let edge = json!({"detail-type": "x", "source": "p", "detail": {"pad": "x".repeat(256 * 1024 - 60)}});
    let refused = stack.post("/v1/events", &t, &edge).await;
    assert_eq!(refused.status, 413, "{}", refused.body);
    assert!(refused.body["detail"].as_str().unwrap().contains("envelope"), "{}", refused.body);
    // Well within the bus's count, but every `"` of its resources is two bytes once escaped
    // in the envelope: 20 KiB more than the bus counts.
    let quotes: Vec<String> = (0..10).map(|_| "\"".repeat(2048)).collect();
    let escaped = json!({"detail-type": "x", "source": "p", "resources": quotes,
        "detail": {"pad": "x".repeat(239_500)}});
    let refused = stack.post("/v1/events", &t, &escaped).await;
    assert_eq!(refused.status, 413, "{}", refused.body);
    assert!(refused.body["detail"].as_str().unwrap().contains("envelope"), "{}", refused.body);
    let doubled = stack
        .post_raw("/v1/events", &t, r#"{"detail-type": "x", "source": "p", "detail": {"tenant": "other", "tenant": "acme"}}"#)
        .await;
    assert_eq!(problem_fields(&doubled.body), ["detail"], "a detail ingest could not route is refused");
    let twice = stack.post("/v1/events", &t, &json!([
        {"id": "dup", "detail-type": "x", "source": "p", "detail": {}},
        {"id": "dup", "detail-type": "x", "source": "p", "detail": {}}
    ])).await;
    assert_eq!(problem_fields(&twice.body), ["[1].id"]);
    // Named by its place in the request, whatever came before it at fault.
    let after_a_fault = stack.post("/v1/events", &t, &json!([
        {"detail-type": "x", "source": "p", "detail": []},
        {"id": "dup", "detail-type": "x", "source": "p", "detail": {}},
        {"id": "dup", "detail-type": "x", "source": "p", "detail": {}}
    ])).await;
    assert_eq!(problem_fields(&after_a_fault.body), ["[0].detail", "[2].id"]);
    let bad = stack.post("/v1/events", &t, &json!([{"source": "p", "detail": []}])).await;
    assert_eq!(problem_fields(&bad.body), ["[0].detail-type", "[0].detail"]);

    let key = [("authorization", format!("Bearer {t}")), ("content-type", "application/json".to_owned()), ("idempotency-key", "order-42".to_owned())];
    let headers: Vec<(&str, &str)> = key.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let body = serde_json::to_vec(&json!({"detail-type": "user.login", "source": "idp", "detail": {"n": 1}})).unwrap();
    let first = stack.raw("POST", "/v1/events", &headers, body.clone()).await;
    let again = stack.raw("POST", "/v1/events", &headers, body).await;
    assert_eq!(first.status, 202);
    assert_eq!(again.status, 202);
    assert_eq!(first.body, again.body, "a repeat returns the first answer");
    assert_eq!(again.headers["idempotent-replayed"], "true");
    let other_body = serde_json::to_vec(&json!({"detail-type": "user.login", "source": "idp", "detail": {"n": 2}})).unwrap();
    assert_eq!(stack.raw("POST", "/v1/events", &headers, other_body).await.status, 409);

    let p1 = stack.publish(&t, &json!({"id": "producer-7", "detail-type": "user.login", "source": "idp", "detail": {}})).await;
    let p2 = stack.publish(&t, &json!({"id": "producer-7", "detail-type": "user.login", "source": "idp", "detail": {}})).await;
    assert_eq!(p1, p2, "a producer's id makes the event idempotent");

    // Deliveries, not requests, are counted: a delivery may arrive twice (at least once),
    // with the same webhook-id each time, while a repeat that published would add new ones.
    let deliveries = |got: &[Received]| -> std::collections::BTreeSet<String> {
        got.iter().filter_map(|g| g.header("webhook-id").map(str::to_owned)).collect()
    };
    r.wait_until(flavor.patience(WAIT), |got| deliveries(got).len() >= 2).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(deliveries(&r.received()).len(), 2, "repeats published nothing");
    assert!(r.received().iter().all(|g| g.json()["detail"]["tenant"] == "acme"));
    stack.shutdown().await;
}
}

on_both_backends! {
async fn bodies_must_be_json_known_fields_and_not_too_large(flavor: Flavor) {
    let stack = TestStack::start(flavor).await;
    let t = stack.token("acme", ALL_SCOPES);
    let auth = format!("Bearer {t}");
    let a = stack.raw("POST", "/v1/hooks", &[("authorization", &auth), ("content-type", "text/plain")], b"{}".to_vec()).await;
    assert_eq!(a.status, 415);
    assert_eq!(a.headers["content-type"], "application/problem+json");
    let huge = vec![b' '; 4 * 1024 * 1024];
    let a = stack.raw("POST", "/v1/hooks", &[("authorization", &auth), ("content-type", "application/json")], huge).await;
    assert_eq!(a.status, 413);
    let a = stack.raw("POST", "/v1/hooks", &[("authorization", &auth), ("content-type", "application/json")], b"{not json".to_vec()).await;
    assert_eq!(a.status, 400);
    // The same order where the query is checked too: the body's type and size before it.
    for path in ["/v1/event-types/a.b?x=1", "/v1/event-types/match?x=1", "/v1/event-types/catalogs?x=1"] {
        let a = stack.raw("PUT", path, &[("authorization", &auth), ("content-type", "text/plain")], b"{}".to_vec()).await;
        assert_eq!(a.status, 415, "{path}");
        let json = ("content-type", "application/json");
        let a = stack.raw("PUT", path, &[("authorization", &auth), json], vec![b' '; 4 * 1024 * 1024]).await;
        assert_eq!(a.status, 413, "{path}");
        let a = stack.raw("PUT", path, &[("authorization", &auth), json], b"{}".to_vec()).await;
        assert_eq!((a.status.as_u16(), problem_fields(&a.body)), (400, vec!["query".to_owned()]), "{path}");
    }
    let a = stack.post("/v1/hooks", &t, &json!({"name": "x", "url": "https://r.example/", "auth": {"type": "BASIC", "username": "u", "password": "p", "token": 1}})).await;
    assert_eq!(problem_fields(&a.body), ["auth.token"]);
    let a = stack.post("/v1/hooks", &t, &json!({"name": 5, "url": "https://r.example/"})).await;
    assert_eq!(problem_fields(&a.body), ["name"]);
    // A key given twice: one reader would take the first, another the last.
    let json = ("content-type", "application/json");
    let dup = stack.create_hook(&t, &json!({"name": "dup", "url": "https://a.example/"})).await;
    let dup_path = format!("/v1/hooks/{}", dup["id"].as_str().unwrap());
    for (method, path, body, field) in [
        ("POST", "/v1/hooks", &br#"{"name": "x", "url": "https://a.example/", "url": "https://b.example/"}"#[..], "body"),
        ("POST", "/v1/hooks", br#"{"name": "x", "url": "https://a.example/", "auth": {"type": "BASIC", "username": "u", "username": "v", "password": "p"}}"#, "auth"),
        ("PUT", dup_path.as_str(), br#"{"name": "dup", "url": "https://a.example/", "url": "https://b.example/"}"#, "body"),
    ] {
        let a = stack.raw(method, path, &[("authorization", &auth), json], body.to_vec()).await;
        assert_eq!((a.status.as_u16(), problem_fields(&a.body)), (400, vec![field.to_owned()]), "{method} {}", a.body);
        assert!(a.body.to_string().contains("is given twice"), "{}", a.body);
    }
    // In a bulk create, that hook fails on its own, as it would for any other fault.
    let bulk = br#"[{"name": "x", "url": "https://a.example/", "enabled": false, "enabled": true},
        {"name": "bulk-ok", "url": "https://a.example/"}]"#;
    let a = stack.raw("POST", "/v1/hooks", &[("authorization", &auth), json], bulk.to_vec()).await;
    assert_eq!(a.status, 200, "{}", a.body);
    let results = &a.body["results"];
    assert_eq!((&results[0]["status"], &results[1]["status"]), (&json!(400), &json!(201)), "{}", a.body);
    assert!(results[0]["error"].to_string().contains("is given twice"), "{}", a.body);
    // Objects within the hook written as arrays are not read by position either.
    let by_position = json!({"name": "x", "url": "https://r.example/", "rate_limit": [5],
        "headers": [["X-A", "v"]], "auth": {"type": "OAUTH_CLIENT_CREDENTIALS", "token_url": "https://idp.example/t",
        "client_id": "c", "client_secret": "s", "body_params": [{"key": "a", "value": "b"}, ["c", "d"]]}});
    let a = stack.post("/v1/hooks", &t, &by_position).await;
    assert_eq!(a.status, 400, "{}", a.body);
    assert_eq!(problem_fields(&a.body), ["rate_limit", "headers[0]", "auth.body_params[1]"]);
    stack.shutdown().await;
}
}

on_both_backends! {
async fn scopes_and_tokens_are_enforced(flavor: Flavor) {
    let stack = TestStack::start(flavor).await;
    let writer = stack.token("acme", "hooks:write");
    let reader = stack.token("acme", "hooks:read");
    let publisher = stack.token("acme", "events:publish");
    let hook = json!({"name": "s", "url": "https://r.example/"});
    assert_eq!(stack.post("/v1/hooks", &reader, &hook).await.status, 403);
    assert_eq!(stack.post("/v1/hooks", &publisher, &hook).await.status, 403);
    let created = stack.post("/v1/hooks", &writer, &hook).await;
    assert_eq!(created.status, 201);
    let id = created.body["id"].as_str().unwrap();
    assert_eq!(stack.get("/v1/hooks", &writer).await.status, 403);
    assert_eq!(stack.get(&format!("/v1/hooks/{id}"), &reader).await.status, 200);
    assert_eq!(stack.get(&format!("/v1/hooks/{id}/events"), &publisher).await.status, 403);
    let event = json!({"detail-type": "x", "source": "p", "detail": {}});
    assert_eq!(stack.post("/v1/events", &reader, &event).await.status, 403);
    assert_eq!(stack.post("/v1/events", &publisher, &event).await.status, 202);
    let forbidden = stack.delete(&format!("/v1/hooks/{id}"), &reader).await;
    assert_eq!(forbidden.status, 403);
    assert!(forbidden.body["detail"].as_str().unwrap().contains("hooks:write"));

    let key = subscription_api::JwtKey::new(stack.settings().tokens.hs256.as_ref().unwrap().expose());
    let claims = |exp: u64| subscription_api::Claims { sub: "s".into(), tenant: "acme".into(), scope: ALL_SCOPES.into(), exp };
    let expired = subscription_api::mint_token(&key, &claims(1_000_000)).unwrap();
    let wrong_key = subscription_api::mint_token(&subscription_api::JwtKey::new("not-the-key"), &claims(4_000_000_000)).unwrap();
    let mut forged = reader.clone();
    let payload = forged.split('.').nth(1).unwrap().to_owned();
    let admin = {
        use base64::Engine as _;
        let e = base64::engine::general_purpose::URL_SAFE_NO_PAD;
        let mut c: Value = serde_json::from_slice(&e.decode(&payload).unwrap()).unwrap();
        c["scope"] = json!(ALL_SCOPES);
        e.encode(serde_json::to_vec(&c).unwrap())
    };
    forged = forged.replace(&payload, &admin);
    // A token that never expires is refused: a leaked one would be good for ever.
    let no_exp = {
        let c = json!({"sub": "s", "tenant": "acme", "scope": ALL_SCOPES});
        let k = stack.settings().tokens.hs256.as_ref().unwrap().expose().to_owned();
        jsonwebtoken::encode(&jsonwebtoken::Header::default(), &c, &jsonwebtoken::EncodingKey::from_secret(k.as_bytes())).unwrap()
    };
    for (what, token) in [("expired", expired.as_str()), ("wrong key", &wrong_key), ("forged", &forged), ("garbage", "abc"), ("no exp", &no_exp)] {
        let a = stack.get("/v1/hooks", token).await;
        assert_eq!(a.status, 401, "{what}");
        assert_eq!(a.headers["www-authenticate"], "Bearer");
    }
    assert_eq!(stack.call("GET", "/v1/hooks", None, None).await.status, 401);
    assert_eq!(stack.call("GET", "/v1/health", None, None).await.status, 200);
    stack.shutdown().await;
}
}

on_both_backends! {
async fn hook_lifecycle_events_reach_the_bus(flavor: Flavor) {
    let stack = TestStack::start(flavor).await;
    let watch = stack.watch_bus("hookbridge").await;
    let t = stack.token("acme", ALL_SCOPES);
    let h = stack.create_hook(&t, &json!({"name": "life", "url": "https://r.example/"})).await;
    let path = format!("/v1/hooks/{}", h["id"].as_str().unwrap());
    assert_eq!(stack.put(&path, &t, &json!({"url": "https://r.example/2"})).await.status, 200);
    assert_eq!(stack.post(&format!("{path}/verify"), &t, &json!({})).await.status, 202);
    assert_eq!(stack.delete(&path, &t).await.status, 204);
    let types = ["hook.created", "hook.updated", "hook.verification.requested", "hook.deleted"];
    let seen = stack.bus_events(watch.as_ref(), &types, flavor.patience(WAIT)).await;
    for ty in types {
        let e = seen.iter().find(|e| e["detail-type"] == ty).unwrap_or_else(|| panic!("no {ty} among {seen:?}"));
        assert_eq!(e["source"], "hookbridge");
        assert_eq!(e["detail"]["tenant"], "acme");
        assert_eq!(e["detail"]["hook_id"], h["id"]);
    }
    stack.shutdown().await;
}
}

on_both_backends! {
async fn published_events_go_straight_to_ingest_unless_large_or_the_bus_is_asked_for(flavor: Flavor) {
    use hookbridge_core::settings::PUBLISH_TO;
    let small = json!({"detail-type": "small.one", "source": "shop", "detail": {"n": 1}});
    let large = json!({"detail-type": "large.one", "source": "shop", "detail": {"pad": "x".repeat(100 * 1024)}});
    for (via, expect_small_on_bus) in [("queue", false), ("bus", true)] {
        let stack = TestStack::start_with(flavor, &[(PUBLISH_TO, via)]).await;
        let watch = stack.watch_bus("shop").await;
        let r = Receiver::start().await;
        let t = stack.token("acme", ALL_SCOPES);
        stack.create_hook(&t, &json!({"name": "all", "url": r.url("/")})).await;
        stack.publish(&t, &small).await;
        stack.publish(&t, &large).await;
        let types_of = |got: &[Received]| -> std::collections::BTreeSet<String> {
            got.iter().filter_map(|g| g.json()["detail-type"].as_str().map(str::to_owned)).collect()
        };
        let got = r.wait_until(flavor.patience(WAIT), |got| types_of(got).len() >= 2).await;
        assert_eq!(types_of(&got), ["large.one", "small.one"].map(str::to_owned).into(), "{via}: both delivered");
        assert!(got.iter().all(|g| g.json()["account"].is_string() && g.json()["region"].is_string()));
        // What the account's own rules see: the large event always, the small one only
        // when the deployment publishes through the bus.
        let seen = stack.bus_events(watch.as_ref(), &["large.one", "small.one"], Duration::from_secs(3)).await;
        let on_bus: Vec<&str> = seen.iter().filter_map(|e| e["detail-type"].as_str()).collect();
        assert!(on_bus.contains(&"large.one"), "{via}: {on_bus:?}");
        assert_eq!(on_bus.contains(&"small.one"), expect_small_on_bus, "{via}: {on_bus:?}");
        stack.shutdown().await;
    }
}
}

/// `POST /v1/portal/sessions` takes no body at all (every field is optional, as the OpenAPI
/// document says), and no more sites than a hook may have, nor none, each one a hook could have.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_portal_link_needs_no_body_and_at_most_a_hooks_sites() {
    let stack = TestStack::start(hookbridge_e2e::Flavor::Embedded).await;
    let maker = stack.token("acme", "portal:create");
    let bare =
        stack.raw("POST", "/v1/portal/sessions", &[("authorization", &format!("Bearer {maker}"))], Vec::new()).await;
    assert_eq!(bare.status, 201, "{}", bare.body);
    let sites: Vec<String> = (0..101).map(|i| format!("site-{i}")).collect();
    let many = stack.post("/v1/portal/sessions", &maker, &json!({ "sites": sites })).await;
    assert_eq!(many.status, 400, "{}", many.body);
    assert_eq!(problem_fields(&many.body), ["sites"]);
    assert_eq!(stack.post("/v1/portal/sessions", &maker, &json!({ "sites": &sites[..100] })).await.status, 201);
    // An empty list holds the session to no site, which is the whole tenant: refused.
    let none = stack.post("/v1/portal/sessions", &maker, &json!({ "sites": [] })).await;
    assert_eq!(none.status, 400, "{}", none.body);
    assert_eq!(problem_fields(&none.body), ["sites"]);
    // A `null` (a Go client's nil slice, an unset flag) is not "left out": read so, it
    // opened the whole tenant, for writing.
    for (body, field) in [(json!({"sites": null}), "sites"), (json!({"sites": ["a"], "read_only": null}), "read_only")]
    {
        let null = stack.post("/v1/portal/sessions", &maker, &body).await;
        assert_eq!(null.status, 400, "{body}: {}", null.body);
        assert_eq!(problem_fields(&null.body), [field]);
    }
    // Each site at fault is named, as a hook's are.
    let bad = stack.post("/v1/portal/sessions", &maker, &json!({ "sites": ["a", "", "b", "x".repeat(129)] })).await;
    assert_eq!(bad.status, 400, "{}", bad.body);
    assert_eq!(problem_fields(&bad.body), ["sites[1]", "sites[3]"]);
    stack.shutdown().await;
}
