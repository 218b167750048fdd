//! `hookbridge serve` killed with SIGKILL in the middle of delivering and started again on
//! the same data: every published event is delivered at least once, and any duplicate
//! carries the same `webhook-id`.

#![allow(clippy::unwrap_used)] // Tests fail loudly on purpose.

use std::collections::{BTreeMap, BTreeSet};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use hookbridge_testkit::{Emulator, Receiver, Reply};
use serde_json::json;
use subscription_api::{Claims, JwtKey, mint_token};

fn hookbridge(args: &[&str], env: &[(String, String)]) -> Child {
    Command::new(env!("CARGO_BIN_EXE_hookbridge"))
        .args(args)
        .envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn hookbridge")
}

async fn healthy(http: &reqwest::Client, base: &str) {
    for _ in 0..300 {
        if http.get(format!("{base}/v1/health")).send().await.is_ok_and(|r| r.status() == 200) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("hookbridge serve did not come up at {base}");
}

/// Runs the scenario with `serve` arguments and environment; `events` events in all.
async fn killed_mid_batch_and_restarted(serve_args: Vec<String>, env: Vec<(String, String)>, events: usize) {
    let http = reqwest::Client::new();
    let r = Receiver::start().await;
    r.always(Reply::status(200).after(Duration::from_millis(150)));
    let port = Receiver::free_addr().port();
    let mut args: Vec<String> = vec!["serve".into(), "--listen".into(), format!("127.0.0.1:{port}")];
    args.extend(serve_args);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let base = format!("http://127.0.0.1:{port}");

    let mut serve = hookbridge(&args, &env);
    healthy(&http, &base).await;
    let claims = Claims {
        sub: "crash".into(),
        tenant: "acme".into(),
        scope: "hooks:read hooks:write events:publish".into(),
        exp: u64::MAX / 2,
    };
    let token = mint_token(&JwtKey::new(hookbridge_core::settings::LOCAL_DEV_SECRET), &claims).unwrap();
    let hook = http
        .post(format!("{base}/v1/hooks"))
        .bearer_auth(&token)
        .json(&json!({"name": "crashy", "url": r.url("/")}))
        .send()
        .await
        .unwrap();
    assert_eq!(hook.status(), 201);
    let hook_id = hook.json::<serde_json::Value>().await.unwrap()["id"].as_str().unwrap().to_owned();
    let mut published = BTreeSet::new();
    for call in 0..events / 10 {
        let batch: Vec<_> = (0..10)
            .map(|k| json!({"detail-type": "user.login", "source": "idp", "detail": {"n": call * 10 + k}}))
            .collect();
        let a = http.post(format!("{base}/v1/events")).bearer_auth(&token).json(&batch).send().await.unwrap();
        assert_eq!(a.status(), 202);
        published.extend((0..10).map(|k| call * 10 + k));
    }

    // Kill it while deliveries are in flight.
    r.wait_for(events / 4, Duration::from_secs(60)).await;
    serve.kill().unwrap();
    serve.wait().unwrap();
    let before_restart = r.received().len();

    let mut serve = hookbridge(&args, &env);
    healthy(&http, &base).await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
    let mut ids: BTreeMap<u64, BTreeSet<String>> = BTreeMap::new();
    while tokio::time::Instant::now() < deadline {
        ids.clear();
        for g in r.received() {
            let n = g.json()["detail"]["n"].as_u64().unwrap();
            ids.entry(n).or_default().insert(g.header("webhook-id").unwrap().to_owned());
        }
        if ids.len() == published.len() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // Every delivery is written down once it is answered, the ones the kill interrupted
    // included (ingest writes none; each is made by the worker's record of its attempt).
    let mut statuses: BTreeMap<String, usize> = BTreeMap::new();
    while tokio::time::Instant::now() < deadline {
        statuses.clear();
        let page: serde_json::Value = http
            .get(format!("{base}/v1/hooks/{hook_id}/events?limit=500"))
            .bearer_auth(&token)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        for d in page["deliveries"].as_array().unwrap() {
            *statuses.entry(d["status"].as_str().unwrap().to_owned()).or_default() += 1;
        }
        if statuses.get("SUCCEEDED") == Some(&events) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(statuses, BTreeMap::from([("SUCCEEDED".to_owned(), events)]), "every delivery recorded, once");
    serve.kill().unwrap();
    serve.wait().unwrap();
    // The receiver holds every request 150 ms and the kill came as one arrived, so at
    // least that delivery was in flight, unanswered and unrecorded: it must have been sent
    // again after the restart, under its webhook-id (checked below).
    assert!(r.received().len() > events, "no delivery the kill interrupted was sent again");
    let delivered: BTreeSet<u64> = ids.keys().map(|n| *n as usize).map(|n| n as u64).collect();
    let published: BTreeSet<u64> = published.into_iter().map(|n| n as u64).collect();
    assert_eq!(delivered, published, "events lost across the crash");
    for (n, webhook_ids) in &ids {
        assert_eq!(webhook_ids.len(), 1, "event {n} arrived under different webhook-ids: {webhook_ids:?}");
    }
    eprintln!(
        "crash: {} events, {} requests received ({} before the kill), {} duplicates",
        events,
        r.received().len(),
        before_restart,
        r.received().len() - events
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_mid_batch_on_the_embedded_backend_loses_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("hb.db").display().to_string();
    // Visible again soon after the kill; a request's timeout must be shorter still.
    let env = vec![
        ("HOOKBRIDGE_VISIBILITY_TIMEOUT".to_owned(), "2s".to_owned()),
        ("HOOKBRIDGE_REQUEST_TIMEOUT".to_owned(), "1s".to_owned()),
    ];
    killed_mid_batch_and_restarted(vec!["--database".into(), db], env, 60).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_mid_batch_on_the_aws_backend_loses_nothing() {
    let mut env: Vec<(String, String)> = Emulator::shared().env().into_iter().map(|(k, v)| (k.to_owned(), v)).collect();
    env.push(("HOOKBRIDGE_VISIBILITY_TIMEOUT".into(), "2s".into()));
    env.push(("HOOKBRIDGE_REQUEST_TIMEOUT".into(), "1s".into()));
    env.push((
        "HOOKBRIDGE_PREFIX".into(),
        format!("k{}", hookbridge_core::ids::DeliveryId::generate().to_string().to_lowercase()),
    ));
    let mut init = hookbridge(&["init", "--backend", "aws"], &env);
    assert!(init.wait().unwrap().success(), "hookbridge init --backend aws failed");
    killed_mid_batch_and_restarted(vec!["--backend".into(), "aws".into()], env, 20).await;
}

#[test]
fn a_database_path_that_cannot_be_written_stops_serve_with_an_error_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    let blocker = dir.path().join("not-a-directory");
    std::fs::write(&blocker, b"a file where a directory should be").unwrap();
    let db = blocker.join("hb.db");
    let out = Command::new(env!("CARGO_BIN_EXE_hookbridge"))
        .args(["serve", "--listen", "127.0.0.1:0", "--database"])
        .arg(&db)
        .output()
        .unwrap();
    assert!(!out.status.success(), "serve started on a database it cannot write");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains(&db.display().to_string()), "the error does not name the file: {stderr}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_emulator_restarted_while_idle_fails_loudly_then_recovers_after_init() {
    let emulator = Emulator::start();
    let port = emulator.port();
    let mut env: Vec<(String, String)> = emulator.env().into_iter().map(|(k, v)| (k.to_owned(), v)).collect();
    env.push(("HOOKBRIDGE_VISIBILITY_TIMEOUT".into(), "2s".into()));
    env.push(("HOOKBRIDGE_REQUEST_TIMEOUT".into(), "1s".into()));
    let init = |env: &[(String, String)]| {
        let mut i = hookbridge(&["init", "--backend", "aws"], env);
        assert!(i.wait().unwrap().success(), "hookbridge init --backend aws failed");
    };
    init(&env);
    let http = reqwest::Client::new();
    let r = Receiver::start().await;
    let api_port = Receiver::free_addr().port();
    let base = format!("http://127.0.0.1:{api_port}");
    let mut serve = hookbridge(&["serve", "--backend", "aws", "--listen", &format!("127.0.0.1:{api_port}")], &env);
    healthy(&http, &base).await;
    let token = mint_token(
        &JwtKey::new(hookbridge_core::settings::LOCAL_DEV_SECRET),
        &Claims {
            sub: "ops".into(),
            tenant: "acme".into(),
            scope: "hooks:write events:publish".into(),
            exp: u64::MAX / 2,
        },
    )
    .unwrap();
    let create = |url: String| {
        let (http, base, token) = (http.clone(), base.clone(), token.clone());
        async move {
            http.post(format!("{base}/v1/hooks"))
                .bearer_auth(&token)
                .json(&json!({"name": "after", "url": url}))
                .send()
                .await
                .unwrap()
        }
    };
    let publish = || {
        let (http, base, token) = (http.clone(), base.clone(), token.clone());
        async move {
            http.post(format!("{base}/v1/events"))
                .bearer_auth(&token)
                .json(&json!({"detail-type": "user.login", "source": "idp", "detail": {}}))
                .send()
                .await
                .unwrap()
        }
    };
    assert_eq!(create(r.url("/")).await.status(), 201);
    assert_eq!(publish().await.status(), 202);
    r.wait_for(1, Duration::from_secs(30)).await;

    // Restarted while idle: every resource and hook is gone.
    emulator.stop();
    let emulator = Emulator::start_on(port);
    let refused = publish().await;
    assert_eq!(refused.status(), 500, "a publish that cannot reach the bus must fail, not be accepted");
    assert_eq!(refused.headers()["content-type"], "application/problem+json");

    // Recovery: the resources are created again, and the stack carries on by itself.
    init(&env);
    assert_eq!(create(r.url("/again")).await.status(), 201);
    assert_eq!(publish().await.status(), 202);
    let got = r.wait_for(2, Duration::from_secs(60)).await;
    assert!(got.iter().any(|g| g.uri.path() == "/again"), "no delivery after recovery");
    serve.kill().unwrap();
    serve.wait().unwrap();
    emulator.stop();
}
