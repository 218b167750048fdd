//! Stored trust stays where it was given: sealed secrets open only for their own hook (and
//! older blobs are re-sealed so), a hook moved to another origin must be given its credentials
//! again, and the limits of what is stored (a hook's size, rotated-out secrets, unanswered
//! idempotency claims) are clear errors or bounded, alike on both backends.

use std::time::Duration;

use base64::Engine as _;
use hookbridge_core::hook::{Hook, SecretsOwner};
use hookbridge_core::ids::{HookId, TenantId};
use hookbridge_e2e::{ALL_SCOPES, TestStack, eventually, on_both_backends};
use hookbridge_testkit::Receiver;
use serde_json::{Value, json};

const WAIT: Duration = Duration::from_secs(30);

fn basic(password: &str) -> String {
    format!("Basic {}", base64::engine::general_purpose::STANDARD.encode(format!("u:{password}")))
}

async fn stored(stack: &TestStack, tenant: &str, id: &str) -> Hook {
    let tenant: TenantId = tenant.parse().unwrap();
    let id: HookId = id.parse().unwrap();
    stack.stack().backend().hooks.get(&tenant, id).await.unwrap().expect("stored hook")
}

/// Changes the stored hook with `change`, as someone with write access to the table could
/// (again if a stage changed it meanwhile, as the verifier does after a create).
async fn overwrite(stack: &TestStack, tenant: &str, id: &str, change: impl Fn(&mut Hook)) {
    for _ in 0..20 {
        let mut hook = stored(stack, tenant, id).await;
        let expected = hook.revision;
        change(&mut hook);
        hook.revision += 1;
        match stack.stack().backend().hooks.replace(&hook, expected).await {
            Ok(()) => return,
            Err(hookbridge_core::Error::VersionConflict) => tokio::time::sleep(Duration::from_millis(50)).await,
            Err(e) => panic!("{e}"),
        }
    }
    panic!("the hook kept changing");
}

async fn status_of(stack: &TestStack, t: &str, hook: &str, want: &str) -> Value {
    eventually(stack.flavor().patience(WAIT), || async {
        stack.deliveries(t, hook, 1).await.into_iter().find(|d| d["status"] == want)
    })
    .await
    .unwrap_or_else(|| panic!("no {want} delivery for {hook}"))
}

on_both_backends! {
async fn a_sealed_blob_copied_to_another_hook_does_not_open_there(flavor: Flavor) {
    let stack = TestStack::start(flavor).await;
    let (ra, rb) = (Receiver::start().await, Receiver::start().await);
    let t = stack.token("acme", ALL_SCOPES);
    let auth = |pw: &str| json!({"type": "BASIC", "username": "u", "password": pw});
    let a = stack.create_hook(&t, &json!({"name": "a", "url": ra.url("/"), "auth": auth("pw-a")})).await;
    let b = stack.create_hook(&t, &json!({"name": "b", "url": rb.url("/"), "auth": auth("pw-b")})).await;
    let (a_id, b_id) = (a["id"].as_str().unwrap(), b["id"].as_str().unwrap());

    // B's item gets A's sealed secrets: were they not bound to A, B would send A's password.
    let a_sealed = stored(&stack, "acme", a_id).await.sealed;
    overwrite(&stack, "acme", b_id, |b| b.sealed = a_sealed.clone()).await;

    stack.publish(&t, &json!({"detail-type": "user.login", "source": "idp", "detail": {}})).await;
    assert_eq!(ra.wait_for(1, flavor.patience(WAIT)).await[0].header("authorization"), Some(basic("pw-a").as_str()));
    let cancelled = status_of(&stack, &t, b_id, "CANCELLED").await;
    assert_eq!(cancelled["reason"], "the hook's secrets cannot be opened");
    assert!(rb.received().is_empty(), "B sent something with secrets that are not its own");
    stack.shutdown().await;
}
}

on_both_backends! {
async fn secrets_sealed_before_binding_keep_working_and_are_resealed_by_the_migration(flavor: Flavor) {
    let stack = TestStack::start(flavor).await;
    let r = Receiver::start().await;
    let t = stack.token("acme", ALL_SCOPES);
    let created = stack
        .create_hook(&t, &json!({"name": "old", "url": r.url("/"), "auth": {"type": "BASIC", "username": "u", "password": "pw-old"}}))
        .await;
    let id = created["id"].as_str().unwrap();
    let b = stack.stack().backend().clone();
    let hook = stored(&stack, "acme", id).await;
    let secrets = b.sealer.open(SecretsOwner::of(&hook), &hook.sealed).await.unwrap();
    let unbound = stack.seal_unbound(&secrets).await;
    overwrite(&stack, "acme", id, |h| h.sealed = unbound.clone()).await;
    assert!(!b.sealer.is_current(&stored(&stack, "acme", id).await.sealed));

    // Until migrated, the old blob still opens: nothing stops delivering on upgrade.
    stack.publish(&t, &json!({"detail-type": "user.login", "source": "idp", "detail": {"n": 1}})).await;
    assert_eq!(r.wait_for(1, flavor.patience(WAIT)).await[0].header("authorization"), Some(basic("pw-old").as_str()));

    // Another hook's old blob, damaged: it can never be opened, and must not stop the rest.
    let other = stack.create_hook(&t, &json!({"name": "damaged", "url": r.url("/d")})).await;
    let other_id = other["id"].as_str().unwrap();
    let mut damaged = unbound.clone();
    if let Some(last) = damaged.0.last_mut() {
        *last ^= 1;
    }
    overwrite(&stack, "acme", other_id, |h| h.sealed = damaged.clone()).await;

    let done = hookbridge_local::migrate::reseal_secrets(&b).await.unwrap();
    assert_eq!((done.resealed, done.unopened), (1, 1), "{done:?}");
    assert_eq!(stored(&stack, "acme", other_id).await.sealed, damaged, "left as it was");
    let after = stored(&stack, "acme", id).await;
    assert!(b.sealer.is_current(&after.sealed), "re-sealed bound to the hook");
    assert_eq!(b.sealer.open(SecretsOwner::of(&after), &after.sealed).await.unwrap(), secrets);
    assert_eq!(hookbridge_local::migrate::reseal_secrets(&b).await.unwrap().resealed, 0, "idempotent");

    stack.publish(&t, &json!({"detail-type": "user.login", "source": "idp", "detail": {"n": 2}})).await;
    assert_eq!(r.wait_for(2, flavor.patience(WAIT)).await[1].header("authorization"), Some(basic("pw-old").as_str()));
    stack.shutdown().await;
}
}

/// A hook whose stored document this version cannot read (a newer version's value, left by
/// a rollback, or an edit by hand) does not stop `hookbridge serve` from starting: the
/// migration it runs at start leaves that hook as it is. It refused to start. Nor does a
/// hook whose secrets a newer release sealed, in a format this one does not know.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hook_this_version_cannot_read_does_not_stop_the_start() {
    let mut stack = TestStack::start(hookbridge_e2e::Flavor::Embedded).await;
    let t = stack.token("acme", ALL_SCOPES);
    let r = Receiver::start().await;
    let good = stack.create_hook(&t, &json!({"name": "good", "url": r.url("/good")})).await;
    let newer = stack.create_hook(&t, &json!({"name": "newer", "url": r.url("/newer")})).await;
    let changed = rusqlite::Connection::open(stack.database_path())
        .unwrap()
        .execute(
            // A new revision, so that a stage's write of what it read before loses to it.
            "UPDATE hooks SET doc = json_set(doc, '$.config.method', 'TELEPORT'), revision = revision + 1
             WHERE id = ?1",
            [newer["id"].as_str().unwrap()],
        )
        .unwrap();
    assert_eq!(changed, 1);
    let (tenant, id): (TenantId, HookId) = ("acme".parse().unwrap(), newer["id"].as_str().unwrap().parse().unwrap());
    assert!(stack.stack().backend().hooks.get(&tenant, id).await.is_err(), "the document is unreadable");
    let sealed = stack.create_hook(&t, &json!({"name": "newer-seal", "url": r.url("/sealed")})).await;
    {
        use base64::Engine as _;
        let b64 = base64::engine::general_purpose::STANDARD;
        let db = rusqlite::Connection::open(stack.database_path()).unwrap();
        let sealed_id = sealed["id"].as_str().unwrap();
        let doc: String = db.query_row("SELECT doc FROM hooks WHERE id = ?1", [sealed_id], |row| row.get(0)).unwrap();
        let mut doc: serde_json::Value = serde_json::from_str(&doc).unwrap();
        let mut blob = b64.decode(doc["sealed"].as_str().unwrap()).unwrap();
        blob[0] = 9;
        doc["sealed"] = json!(b64.encode(blob));
        let changed = db
            .execute(
                "UPDATE hooks SET doc = ?1, revision = revision + 1 WHERE id = ?2",
                [doc.to_string().as_str(), sealed_id],
            )
            .unwrap();
        assert_eq!(changed, 1);
    }

    stack.restart().await;
    let b = stack.stack().backend().clone();
    let done = hookbridge_local::migrate::reseal_secrets(&b).await.unwrap();
    assert_eq!(
        (done.hooks, done.resealed, done.unopened),
        (2, 0, 0),
        "the unreadable hook left out, the newer seal left as it is: {done:?}"
    );
    let read = stack.get(&format!("/v1/hooks/{}", good["id"].as_str().unwrap()), &t).await;
    assert_eq!(read.status, 200, "{}", read.body);
    stack.shutdown().await;
}

on_both_backends! {
async fn a_put_moving_the_hook_to_another_origin_must_carry_its_credentials_again(flavor: Flavor) {
    let stack = TestStack::start(flavor).await;
    let r = Receiver::start().await;
    let t = stack.token("acme", ALL_SCOPES);
    let created = stack
        .create_hook(
            &t,
            &json!({"name": "h", "url": r.url("/a"), "auth": {"type": "BASIC", "username": "u", "password": "pw-1"},
                    "headers": [{"name": "X-Key", "value": "hv-1", "secret": true}]}),
        )
        .await;
    let path = format!("/v1/hooks/{}", created["id"].as_str().unwrap());
    let without = |url: String| {
        json!({"url": url, "auth": {"type": "BASIC", "username": "u"}, "headers": [{"name": "X-Key", "secret": true}]})
    };
    // Another host (localhost is 127.0.0.1, yet another host by name): both credentials named.
    let elsewhere = r.url("/b").replace("127.0.0.1", "localhost");
    let moved = stack.put(&path, &t, &without(elsewhere.clone())).await;
    assert_eq!(moved.status, 400, "{}", moved.body);
    let fields: Vec<&str> = moved.body["errors"].as_array().unwrap().iter().map(|e| e["field"].as_str().unwrap()).collect();
    assert_eq!(fields, ["auth.password", "headers[0].value"]);
    assert!(moved.body["errors"][0]["message"].as_str().unwrap().contains("given again"), "{}", moved.body);
    assert_eq!(stack.get(&path, &t).await.body["url"], r.url("/a"), "nothing changed");

    // The same host, another port (one a tunnel could give another party): the same.
    let other_port = Receiver::start().await;
    let moved = stack.put(&path, &t, &without(other_port.url("/a"))).await;
    assert_eq!(moved.status, 400, "{}", moved.body);
    assert_eq!(moved.body["errors"].as_array().unwrap().len(), 2, "{}", moved.body);
    let port = other_port.addr().port().to_string();
    assert!(moved.body["errors"][0]["message"].as_str().unwrap().contains(&port), "{}", moved.body);

    // The same host, another path: the stored credentials are kept.
    assert_eq!(stack.put(&path, &t, &without(r.url("/c"))).await.status, 200);
    // Another host with every credential given: accepted, and those are what is sent.
    let mut full = without(elsewhere);
    full["auth"]["password"] = json!("pw-2");
    full["headers"][0]["value"] = json!("hv-2");
    assert_eq!(stack.put(&path, &t, &full).await.status, 200);
    stack.publish(&t, &json!({"detail-type": "user.login", "source": "idp", "detail": {}})).await;
    let got = r.wait_for(1, flavor.patience(WAIT)).await;
    assert_eq!((got[0].header("authorization"), got[0].header("x-key")), (Some(basic("pw-2").as_str()), Some("hv-2")));
    stack.shutdown().await;
}
}

on_both_backends! {
async fn a_hook_too_large_to_store_is_the_same_400_on_both_backends(flavor: Flavor) {
    let stack = TestStack::start(flavor).await;
    let t = stack.token("acme", ALL_SCOPES);
    let value = "v".repeat(4000);
    let params: Vec<Value> =
        (0..20).map(|i| json!({"key": format!("p{i}"), "value": value, "secret": true})).collect();
    let headers: Vec<Value> = (0..20).map(|i| json!({"name": format!("X-H{i}"), "value": value})).collect();
    let hook = json!({
        "name": "huge", "url": "https://receiver.example/", "headers": headers,
        "auth": {"type": "OAUTH_CLIENT_CREDENTIALS", "token_url": "https://idp.example/token", "client_id": "c",
                 "client_secret": "s", "header_params": params, "query_params": params, "body_params": params},
    });
    let a = stack.post("/v1/hooks", &t, &hook).await;
    assert_eq!(a.status, 400, "{}", a.body);
    assert_eq!(a.body["errors"][0]["field"], "body");
    let message = a.body["errors"][0]["message"].as_str().unwrap();
    assert!(message.contains("at most 350 KiB"), "{message}");
    assert_eq!(stack.get("/v1/hooks", &t).await.body["hooks"].as_array().unwrap().len(), 0);
    stack.shutdown().await;
}
}

on_both_backends! {
async fn a_page_of_large_hooks_stays_within_what_a_lambda_function_can_answer(flavor: Flavor) {
    let stack = TestStack::start(flavor).await;
    let t = stack.token("acme", ALL_SCOPES);
    let value = "v".repeat(4000);
    let params: Vec<Value> = (0..15).map(|i| json!({"key": format!("p{i}"), "value": value})).collect();
    let headers: Vec<Value> = (0..20).map(|i| json!({"name": format!("X-H{i}"), "value": value})).collect();
    for i in 0..18 {
        let hook = json!({
            "name": format!("large-{i}"), "url": "https://receiver.example/", "headers": headers,
            "auth": {"type": "OAUTH_CLIENT_CREDENTIALS", "token_url": "https://idp.example/token", "client_id": "c",
                     "client_secret": "s", "header_params": params, "query_params": params, "body_params": params},
        });
        assert_eq!(stack.post("/v1/hooks", &t, &hook).await.status, 201, "{i}");
    }
    // Eighteen of about 270 KB: the default page of 50 would be 4.8 MB; they come in pages
    // of at most 4 MiB (a Lambda function answers at most 6 MB, API Gateway a 500 past it).
    let (mut seen, mut cursor, mut pages) = (Vec::new(), None::<String>, 0);
    loop {
        let path = cursor.as_ref().map_or_else(|| "/v1/hooks".to_owned(), |c| format!("/v1/hooks?cursor={c}"));
        let page = stack.get(&path, &t).await;
        assert_eq!(page.status, 200);
        assert!(page.body.to_string().len() <= 4 * 1024 * 1024 + 1024, "page {pages}");
        pages += 1;
        seen.extend(page.body["hooks"].as_array().unwrap().iter().map(|h| h["name"].as_str().unwrap().to_owned()));
        match page.body["next_cursor"].as_str() {
            Some(c) => cursor = Some(c.to_owned()),
            None => break,
        }
    }
    assert!(pages >= 2, "{pages}");
    seen.sort();
    let mut all: Vec<String> = (0..18).map(|i| format!("large-{i}")).collect();
    all.sort();
    assert_eq!(seen, all, "each hook once");
    stack.shutdown().await;
}
}

on_both_backends! {
async fn rotated_out_secrets_are_bounded(flavor: Flavor) {
    let stack = TestStack::start(flavor).await;
    let r = Receiver::start().await;
    let t = stack.token("acme", ALL_SCOPES);
    let id = stack.create_hook(&t, &json!({"name": "h", "url": r.url("/")})).await["id"].as_str().unwrap().to_owned();
    for _ in 0..8 {
        let rotated = stack.call("POST", &format!("/v1/hooks/{id}/secret/rotate"), Some(&t), None).await;
        assert_eq!(rotated.status, 200);
    }
    stack.publish(&t, &json!({"detail-type": "user.login", "source": "idp", "detail": {}})).await;
    let got = r.wait_for(1, flavor.patience(WAIT)).await;
    let signatures = got[0].header("webhook-signature").unwrap().split_whitespace().count();
    assert_eq!(signatures, 1 + hookbridge_core::hook::MAX_RETIRING_SECRETS, "the current secret and the newest retiring ones");
    stack.shutdown().await;
}
}

/// A hook whose stored size grows with `n`, by about 4/3 bytes a unit: `n` characters of
/// secret OAuth query and body parameters (sealed, then base64), beside headers and header
/// parameters as long as the largest hooks' above.
fn hook_padded(name: &str, n: usize) -> Value {
    let value = "v".repeat(4000);
    let headers: Vec<Value> = (0..20).map(|i| json!({"name": format!("X-H{i}"), "value": value})).collect();
    let plain: Vec<Value> = (0..20).map(|i| json!({"key": format!("p{i}"), "value": value})).collect();
    let lengths: Vec<usize> = (0..40).map(|i| n.saturating_sub(4000 * i).min(4000)).collect();
    let secret = |group: &[usize]| -> Vec<Value> {
        group
            .iter()
            .enumerate()
            .filter(|(_, len)| **len > 0)
            .map(|(i, len)| json!({"key": format!("s{i}"), "value": "s".repeat(*len), "secret": true}))
            .collect()
    };
    json!({
        "name": name, "url": "https://receiver.example/", "headers": headers,
        "auth": {"type": "OAUTH_CLIENT_CREDENTIALS", "token_url": "https://idp.example/token", "client_id": "c",
                 "client_secret": "s", "header_params": plain, "query_params": secret(&lengths[..20]),
                 "body_params": secret(&lengths[20..])},
    })
}

on_both_backends! {
async fn a_hook_at_the_size_limit_can_still_be_written_back_as_read_after_rotations(flavor: Flavor) {
    let stack = TestStack::start(flavor).await;
    let t = stack.token("acme", ALL_SCOPES);
    // The largest hook the API accepts, found as a client would: by its answers.
    let (mut fits, mut too_large) = (0, 160_000);
    assert_eq!(stack.post("/v1/hooks", &t, &hook_padded("probe", too_large)).await.status, 400);
    while too_large - fits > 1 {
        let n = (fits + too_large) / 2;
        let a = stack.post("/v1/hooks", &t, &hook_padded("probe", n)).await;
        match a.status.as_u16() {
            201 => {
                fits = n;
                let id = a.body["id"].as_str().unwrap();
                assert_eq!(stack.delete(&format!("/v1/hooks/{id}"), &t).await.status, 204);
            }
            400 => too_large = n,
            other => panic!("{other}: {}", a.body),
        }
    }
    let created = stack.post("/v1/hooks", &t, &hook_padded("full", fits)).await;
    assert_eq!(created.status, 201, "{}", created.body);
    let id = created.body["id"].as_str().unwrap().to_owned();
    let before = stored(&stack, "acme", &id).await.stored_size();
    assert!(before > hookbridge_core::hook::MAX_STORED_HOOK_BYTES - 100, "{before} bytes: not at the limit");
    // Each rotation keeps the secret it replaces for a day, in the sealed secrets; the last
    // chooses the longest secret there is.
    let longest = json!({"secret": format!("whsec_{}", base64::engine::general_purpose::STANDARD.encode([7u8; 64]))});
    for i in 0..hookbridge_core::hook::MAX_RETIRING_SECRETS {
        let body = (i + 1 == hookbridge_core::hook::MAX_RETIRING_SECRETS).then_some(&longest);
        let rotated = stack.call("POST", &format!("/v1/hooks/{id}/secret/rotate"), Some(&t), body).await;
        assert_eq!(rotated.status, 200, "{}", rotated.body);
    }
    let after = stored(&stack, "acme", &id).await.stored_size();
    assert!(after > hookbridge_core::hook::MAX_STORED_HOOK_BYTES, "{after} bytes: the rotations added too little to test");
    let read = stack.get(&format!("/v1/hooks/{id}"), &t).await;
    assert_eq!(read.status, 200);
    let written = stack.put(&format!("/v1/hooks/{id}"), &t, &read.body).await;
    assert_eq!(written.status, 200, "the hook as read was refused: {}", written.body);
    assert_eq!(written.body["headers"], read.body["headers"]);
    stack.shutdown().await;
}
}

on_both_backends! {
async fn an_idempotency_claim_a_crash_left_unanswered_frees_its_key_within_minutes(flavor: Flavor) {
    let stack = TestStack::start(flavor).await;
    let t = stack.token("acme", ALL_SCOPES);
    let store = stack.stack().backend().idempotency.clone();
    let tenant: TenantId = "acme".parse().unwrap();
    let pending = subscription_api::CLAIM_PENDING_FOR;
    let now = chrono::Utc::now();
    // Two requests that claimed their key and crashed: one just now, one long enough ago.
    for (key, at) in [("recent", now - chrono::Duration::minutes(1)), ("stale", now - pending - chrono::Duration::minutes(1))] {
        let claimed = store.claim(&tenant, &subscription_api::request_claim_key(key), "fp", at, at + pending).await.unwrap();
        assert_eq!(claimed, hookbridge_core::ports::Claim::Claimed);
    }
    let publish = |key: &'static str| {
        let req = reqwest::Client::new()
            .post(format!("{}/v1/events", stack.base_url()))
            .bearer_auth(&t)
            .header("idempotency-key", key)
            .json(&json!({"detail-type": "user.login", "source": "idp", "detail": {}}));
        async move {
            let resp = req.send().await.unwrap();
            (resp.status().as_u16(), resp.headers().get("idempotent-replayed").is_some())
        }
    };
    assert_eq!(publish("recent").await, (409, false), "a claim still in progress holds its key");
    assert_eq!(publish("stale").await, (202, false), "a crashed claim's key is free again");
    assert_eq!(publish("stale").await, (202, true), "and its answer is the one remembered now");
    stack.shutdown().await;
}
}

on_both_backends! {
/// A call whose events carry ids of their own claims them side by side; when one is held by
/// another request the call is answered `409`, and the ids it did claim are free again at
/// once, so its retry publishes them rather than waiting out their pending minutes.
async fn a_call_refused_for_one_events_id_frees_the_ids_it_claimed(flavor: Flavor) {
    let stack = TestStack::start(flavor).await;
    let t = stack.token("acme", ALL_SCOPES);
    let store = stack.stack().backend().idempotency.clone();
    let tenant: TenantId = "acme".parse().unwrap();
    let now = chrono::Utc::now();
    let held = store.claim(&tenant, "event:held", "held", now, now + subscription_api::CLAIM_PENDING_FOR).await.unwrap();
    assert_eq!(held, hookbridge_core::ports::Claim::Claimed);
    let event = |id: &str| json!({"id": id, "detail-type": "user.login", "source": "idp", "detail": {}});
    let refused = stack.post("/v1/events", &t, &json!([event("a"), event("held"), event("b")])).await;
    assert_eq!(refused.status, 409, "{}", refused.body);
    assert!(refused.body["detail"].as_str().unwrap().contains("held"), "{}", refused.body);
    let retried = stack.post("/v1/events", &t, &json!([event("a"), event("b")])).await;
    assert_eq!(retried.status, 202, "{}", retried.body);
    let again = stack.post("/v1/events", &t, &json!([event("b"), event("a")])).await;
    assert_eq!(again.status, 202);
    assert_eq!(again.body["events"][0], retried.body["events"][1], "each id answers with what it published");
    assert_eq!(again.body["events"][1], retried.body["events"][0]);
    stack.shutdown().await;
}
}

/// The embedded stack sweeps what expired as it runs (DynamoDB's TTL and SQS's retention do
/// it on AWS, where reads also skip expired items; see the contract cases).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_embedded_stack_sweeps_expired_data_while_it_runs() {
    let mut stack = TestStack::start(hookbridge_e2e::Flavor::Embedded).await;
    let path = stack.database_path().to_path_buf();
    let rows = |sql: &str| {
        let c = rusqlite::Connection::open(&path).unwrap();
        c.query_row(sql, [], |r| r.get::<_, i64>(0)).unwrap()
    };
    {
        let c = rusqlite::Connection::open(stack.database_path()).unwrap();
        c.execute("INSERT INTO events (tenant, id, doc, expires_at) VALUES ('acme', 'gone', '{}', 1)", []).unwrap();
        c.execute(
            "INSERT INTO idempotency (tenant, key, fingerprint, expires_at) VALUES ('acme', 'gone', 'fp', 1)",
            [],
        )
        .unwrap();
    }
    stack.restart().await;
    let swept = eventually(WAIT, || async {
        (rows("SELECT COUNT(*) FROM events WHERE id = 'gone'") == 0
            && rows("SELECT COUNT(*) FROM idempotency WHERE key = 'gone'") == 0)
            .then_some(())
    })
    .await;
    assert!(swept.is_some(), "the expired rows are still there");
    stack.shutdown().await;
}
