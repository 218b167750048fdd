//! Secrets stay secret: no value a tenant gave as secret (nor the signing secret after the
//! create response, nor the caller's bearer token) appears in any response, log line (at
//! every level, every crate) or bus event of a full run on each backend, with HS256 tokens
//! and with tokens from an OpenID Connect issuer. The run's failures too: an ownership
//! challenge answered with an echo of the request, and a token endpoint that refuses by
//! echoing a `GET` that carried secrets in its query and headers.

#![allow(clippy::unwrap_used)] // Tests fail loudly on purpose.

use std::time::Duration;

use hookbridge_e2e::{ALL_SCOPES, Flavor, TestStack, eventually};
use hookbridge_testkit::{CapturedLogs, Receiver, Reply};
use serde_json::{Value, json};

async fn full_run(flavor: Flavor, oidc: bool, logs: CapturedLogs) {
    logs.clear();

    let stack = if oidc { TestStack::start_oidc(flavor).await } else { TestStack::start(flavor).await };
    let watch = stack.watch_bus("hookbridge").await;
    let r = Receiver::start().await;
    // It answers with the request it got, credentials and all: the attempts' excerpts,
    // read below, must show none of them.
    r.always(Reply::Echo { status: 200 });
    let idp = Receiver::start().await;
    idp.always(Reply::body(200, r#"{"access_token":"tok-s3cret-access","expires_in":600}"#));
    let t = stack.token("acme", ALL_SCOPES);

    let secret_values = [
        "pw-s3cret-basic",
        "key-s3cret-apikey",
        "hdr-s3cret-auth",
        "cs-s3cret-oauth",
        "param-s3cret-oauth",
        "xh-s3cret-header",
    ];
    let hooks = [
        json!({"name": "basic", "url": r.url("/1"), "auth": {"type": "BASIC", "username": "u", "password": secret_values[0]}}),
        json!({"name": "apikey", "url": r.url("/2"), "auth": {"type": "API_KEY", "key_name": "k", "key_value": secret_values[1]}}),
        json!({"name": "header", "url": r.url("/3"), "auth": {"type": "HEADER", "name": "X-T", "value": secret_values[2]},
               "headers": [{"name": "X-Hidden", "value": secret_values[5], "secret": true}]}),
        json!({"name": "oauth", "url": r.url("/4"), "auth": {"type": "OAUTH_CLIENT_CREDENTIALS", "token_url": idp.url("/t"),
               "client_id": "c", "client_secret": secret_values[3],
               "body_params": [{"key": "p", "value": secret_values[4], "secret": true}]}}),
    ];
    // Two hooks that fail, each with what it was sent echoed back into its error: the
    // challenge (which carries the hook's credential and secret header) answered with the
    // request, and a token `GET` (secrets in its query and headers) refused the same way.
    let refusing_idp = Receiver::start().await;
    refusing_idp.always(Reply::Echo { status: 401 });
    let failing_values = ["pw2-s3cret-challenge", "cs2-s3cret-refused", "qp-s3cret-query", "hp-s3cret-header"];
    let failing_hooks = [
        json!({"name": "challenged", "url": r.url("/5"), "verification": {"required": true},
               "auth": {"type": "BASIC", "username": "u2", "password": failing_values[0]},
               "headers": [{"name": "X-Hidden", "value": secret_values[5], "secret": true}]}),
        json!({"name": "refused", "url": r.url("/6"), "auth": {"type": "OAUTH_CLIENT_CREDENTIALS",
               "token_url": refusing_idp.url("/t"), "http_method": "GET", "client_id": "c2",
               "client_secret": failing_values[1],
               "query_params": [{"key": "q", "value": failing_values[2], "secret": true}],
               "header_params": [{"key": "X-P", "value": failing_values[3], "secret": true}]}}),
    ];
    let mut all_secrets: Vec<String> = secret_values.iter().chain(&failing_values).map(|s| (*s).to_owned()).collect();
    all_secrets.push("tok-s3cret-access".to_owned());
    // The BASIC password and the OAuth client secret travel only as Basic credentials: a
    // line logging the request's headers would show them so.
    use base64::Engine as _;
    let basic = |user: &str, secret: &str| base64::engine::general_purpose::STANDARD.encode(format!("{user}:{secret}"));
    let (basic_hook, basic_client) = (basic("u", secret_values[0]), basic("c", secret_values[3]));
    all_secrets.extend([basic_hook.clone(), basic_client.clone()]);
    all_secrets.extend([basic("u2", failing_values[0]), basic("c2", failing_values[1])]);
    // The caller's bearer token is a credential too: its signature never appears anywhere.
    all_secrets.push(t.rsplit('.').next().unwrap().to_owned());
    let mut responses: Vec<Value> = Vec::new();
    let mut ids = Vec::new();
    for h in &hooks {
        let created = stack.create_hook(&t, h).await;
        let signing = created["secret"].as_str().unwrap().to_owned();
        all_secrets.push(signing.trim_start_matches("whsec_").to_owned());
        ids.push(created["id"].as_str().unwrap().to_owned());
        let mut without = created.clone();
        without.as_object_mut().unwrap().remove("secret");
        responses.push(without);
    }
    for id in &ids {
        let path = format!("/v1/hooks/{id}");
        let doc = stack.get(&path, &t).await.body;
        responses.push(stack.put(&path, &t, &doc).await.body);
        let rotated = stack.call("POST", &format!("{path}/secret/rotate"), Some(&t), None).await.body;
        all_secrets.push(rotated["secret"].as_str().unwrap().trim_start_matches("whsec_").to_owned());
        responses.push(stack.get(&path, &t).await.body);
    }
    let mut failing_ids = Vec::new();
    for h in &failing_hooks {
        let created = stack.create_hook(&t, h).await;
        all_secrets.push(created["secret"].as_str().unwrap().trim_start_matches("whsec_").to_owned());
        failing_ids.push(created["id"].as_str().unwrap().to_owned());
    }
    responses.push(stack.get("/v1/hooks", &t).await.body);
    stack.publish(&t, &json!({"detail-type": "user.login", "source": "idp", "detail": {"n": 1}})).await;
    r.wait_for(4, Duration::from_secs(30)).await;
    for id in &ids {
        let list = eventually(Duration::from_secs(30), || async {
            let l = stack.deliveries(&t, id, 1).await;
            l.iter().any(|d| d["status"] == "SUCCEEDED").then_some(l)
        })
        .await
        .expect("delivered");
        let did = list[0]["delivery_id"].as_str().unwrap();
        responses.push(stack.get(&format!("/v1/hooks/{id}/deliveries/{did}"), &t).await.body);
        responses.push(Value::Array(list));
    }
    // Each failing hook shows its failure, echo and all (redacted), where its readers look.
    let (challenged, refused) = (&failing_ids[0], &failing_ids[1]);
    let failed = eventually(Duration::from_secs(30), || async {
        let hook = stack.get(&format!("/v1/hooks/{challenged}"), &t).await.body;
        (hook["verification"]["status"] == "FAILED").then_some(hook)
    })
    .await
    .expect("the challenge failed");
    let shown = failed["verification"]["last_error"].as_str().unwrap_or_default();
    assert!(shown.contains("x-hidden: [redacted]"), "the echoed challenge is shown, redacted: {shown}");
    responses.push(failed);
    let refused_hook = eventually(Duration::from_secs(30), || async {
        let hook = stack.get(&format!("/v1/hooks/{refused}"), &t).await.body;
        (hook["connection_state"] == "DEAUTHORIZED").then_some(hook)
    })
    .await
    .expect("the token endpoint's refusal was found");
    let shown = refused_hook["connection_error"].as_str().unwrap_or_default();
    assert!(shown.contains("x-p: [redacted]"), "the echoed token request is shown, redacted: {shown}");
    responses.push(refused_hook);
    for id in &failing_ids {
        responses.push(Value::Array(stack.deliveries(&t, id, 1).await));
    }
    // Every hook's news, read to the end: each hook was created, replaced and authorized
    // (the OAuth hook's check fetched a token with its secrets). Stopping at the first of
    // each type left most events unread.
    let counted = |events: &[Value], kind: &str| {
        let hooks: std::collections::BTreeSet<&str> = events
            .iter()
            .filter(|e| e["detail-type"] == kind)
            .filter_map(|e| e["detail"]["hook_id"].as_str())
            .collect();
        hooks.len()
    };
    let mut bus: Vec<Value> = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    let expected = [("hook.created", ids.len() + 2), ("hook.updated", ids.len()), ("hook.authorized", ids.len())];
    let failures = ["hook.verification.failed", "hook.deauthorized"];
    while (expected.iter().any(|(k, n)| counted(&bus, k) < *n) || failures.iter().any(|k| counted(&bus, k) == 0))
        && tokio::time::Instant::now() < deadline
    {
        for m in watch.receive(10, Duration::from_millis(500)).await.unwrap() {
            bus.push(serde_json::from_str(&m.body).unwrap());
            watch.ack(&[m.receipt]).await.unwrap();
        }
    }
    for (kind, n) in expected {
        assert_eq!(counted(&bus, kind), n, "{kind}: hooks told of");
    }
    for kind in failures {
        assert!(counted(&bus, kind) > 0, "{kind}: no hook told of");
    }
    stack.shutdown().await;

    let logs = logs.text();
    assert!(logs.lines().count() > 50, "the run was logged ({} lines)", logs.lines().count());
    // The capture sees the stages' own lines (so a leak there would be seen too).
    for line in ["hook created", "events ingested", "delivery attempted", "signing secret rotated"] {
        assert!(logs.contains(line), "the captured logs lack {line:?}");
    }
    let answers = serde_json::to_string(&responses).unwrap();
    assert!(answers.contains("x-hidden: [redacted]"), "the receiver's echoes were read back");
    let events = serde_json::to_string(&bus).unwrap();
    for secret in &all_secrets {
        assert!(!logs.contains(secret.as_str()), "a secret reached the logs: {secret}");
        assert!(!answers.contains(secret.as_str()), "a secret reached a response: {secret}");
        assert!(!events.contains(secret.as_str()), "a secret reached the bus: {secret}");
    }
    // The receivers did get them, where they belong.
    let got = r.received();
    assert!(got.iter().any(|g| g.header("x-hidden") == Some(secret_values[5])));
    let basic_hook = format!("Basic {basic_hook}");
    assert!(got.iter().any(|g| g.header("authorization") == Some(basic_hook.as_str())), "the BASIC hook's credential");
    let basic_client = format!("Basic {basic_client}");
    let asked = idp.received();
    assert!(asked.iter().any(|g| g.header("authorization") == Some(basic_client.as_str())), "the client's credential");
    let asked = refusing_idp.received();
    assert!(
        asked.iter().any(|g| g.uri.query().is_some_and(|q| q.contains(failing_values[2]))
            && g.header("x-p") == Some(failing_values[3])),
        "the refused token request carried its secrets"
    );
}

/// One test (and its own binary), so the process-wide subscriber sees every line of the
/// run and nothing from other tests.
#[test]
fn no_secret_in_responses_logs_or_bus_events_on_either_backend_with_either_kind_of_token() {
    // Every log line written, at every level.
    let logs = CapturedLogs::default();
    let subscriber =
        tracing_subscriber::fmt().json().with_max_level(tracing::Level::TRACE).with_writer(logs.clone()).finish();
    tracing::subscriber::set_global_default(subscriber).expect("the only subscriber of this process");
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    for (flavor, oidc) in
        [(Flavor::Embedded, false), (Flavor::Aws, false), (Flavor::Embedded, true), (Flavor::Aws, true)]
    {
        rt.block_on(full_run(flavor, oidc, logs.clone()));
    }
}
