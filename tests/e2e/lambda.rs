//! The four compiled function binaries run as Lambda runs them (Runtime API, SQS event
//! sources with partial batch failures, an HTTP API front), against the emulator: create a
//! hook that must be verified, publish, receive a signed delivery, read it back, retry it.
//! The worker's EMF lines are parsed and checked. Its own binary: it owns the processes.

#![allow(clippy::unwrap_used)] // Tests fail loudly on purpose.

use std::time::Duration;

use base64::Engine as _;
use hmac::{Hmac, Mac};
use hookbridge_e2e::eventually;
use hookbridge_testkit::lambda::{LambdaOptions, LambdaStack};
use hookbridge_testkit::{Receiver, Reply};
use serde_json::{Value, json};
use sha2::Sha256;

const WAIT: Duration = Duration::from_secs(60);

struct Client {
    base: String,
    token: String,
    http: reqwest::Client,
}

impl Client {
    async fn call(&self, method: &str, path: &str, body: Option<Value>) -> (u16, Value) {
        let m = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
        let mut req = self.http.request(m, format!("{}{path}", self.base)).bearer_auth(&self.token);
        if let Some(b) = body {
            req = req.json(&b);
        }
        let resp = req.send().await.unwrap();
        let status = resp.status().as_u16();
        (status, resp.json().await.unwrap_or(Value::Null))
    }
}

/// The deliveries (`POST`s) `r` got, once there are at least `n`, waiting up to [`WAIT`].
async fn posts_at_least(r: &Receiver, n: usize) -> Option<Vec<hookbridge_testkit::Received>> {
    eventually(WAIT, || async {
        let posts: Vec<_> = r.received().into_iter().filter(|g| g.method == "POST").collect();
        (posts.len() >= n).then_some(posts)
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_function_binaries_deliver_end_to_end_as_lambda_runs_them() {
    let mut opts = LambdaOptions::local();
    opts.env.push(("HOOKBRIDGE_RETRY_SCHEDULE".into(), "1s".into()));
    let stack = LambdaStack::start(opts).await.unwrap();
    let claims = subscription_api::Claims {
        sub: "lambda-tester".into(),
        tenant: "acme".into(),
        scope: "hooks:read hooks:write events:publish".into(),
        exp: chrono::Utc::now().timestamp() as u64 + 3600,
    };
    let token = subscription_api::mint_token(&subscription_api::JwtKey::new(stack.token_key()), &claims).unwrap();
    let api = Client { base: format!("http://{}", stack.addr()), token, http: reqwest::Client::new() };

    // Through the HTTP front: health, then a hook that must pass the ownership challenge.
    let health = reqwest::get(format!("{}/v1/health", api.base)).await.unwrap();
    assert_eq!(health.status(), 200);
    let r = Receiver::start().await;
    r.always(Reply::EchoChallenge { header: "x-uid-challenge".into() });
    let (status, hook) = api
        .call(
            "POST",
            "/v1/hooks",
            Some(json!({"name": "lambda", "url": r.url("/hook"), "verification": {"required": true}})),
        )
        .await;
    assert_eq!(status, 201, "{hook}");
    let id = hook["id"].as_str().unwrap().to_owned();
    let secret = hook["secret"].as_str().unwrap().to_owned();

    // The verifier (fed by the bus's lifecycle rule) challenges the endpoint.
    let verified = eventually(WAIT, || async {
        let (_, h) = api.call("GET", &format!("/v1/hooks/{id}"), None).await;
        (h["verification"]["status"] == "VERIFIED").then_some(h)
    })
    .await;
    assert!(verified.is_some(), "the hook was never verified");
    assert!(r.received().iter().any(|g| g.method == "GET" && g.header("x-uid-challenge").is_some()));
    // The first delivery is refused once, so the worker schedules a retry.
    r.script([Reply::status(500)]);

    // Publish; ingest (fed by the product rule) matches; the worker delivers, signed.
    let (status, published) = api
        .call(
            "POST",
            "/v1/events",
            Some(json!({"detail-type": "user.login", "source": "idp", "detail": {"user": "ada"}})),
        )
        .await;
    assert_eq!(status, 202, "{published}");
    let got = posts_at_least(&r, 1).await.expect("the delivery arrived");
    let d = &got[0];
    let key = base64::engine::general_purpose::STANDARD.decode(secret.trim_start_matches("whsec_")).unwrap();
    let signed = [
        d.header("webhook-id").unwrap().as_bytes(),
        b".",
        d.header("webhook-timestamp").unwrap().as_bytes(),
        b".",
        &d.body,
    ]
    .concat();
    let mut mac = Hmac::<Sha256>::new_from_slice(&key).unwrap();
    mac.update(&signed);
    let expected = format!("v1,{}", base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes()));
    assert!(d.header("webhook-signature").unwrap().split_whitespace().any(|s| s == expected), "the signature verifies");
    assert_eq!(d.json()["detail"]["user"], "ada");

    // Refused, then retried by the worker on its schedule, under the same webhook-id.
    let retried = posts_at_least(&r, 2).await.expect("the worker retried");
    assert_eq!(retried[1].header("webhook-id"), d.header("webhook-id"));

    // Read back, then retry: the same webhook-id arrives again.
    let delivery = eventually(WAIT, || async {
        let (_, page) = api.call("GET", &format!("/v1/hooks/{id}/events?hours=1"), None).await;
        page["deliveries"].as_array().and_then(|l| l.iter().find(|x| x["status"] == "SUCCEEDED").cloned())
    })
    .await
    .expect("the delivery reads back SUCCEEDED");
    let did = delivery["delivery_id"].as_str().unwrap();
    // Counted from here, and arrived after it was asked for: not a late copy of the
    // scheduled retry's request.
    let (before, asked) = (posts_at_least(&r, 0).await.map_or(0, |p| p.len()), tokio::time::Instant::now());
    let (status, _) = api.call("POST", &format!("/v1/hooks/{id}/deliveries/{did}/retry"), None).await;
    assert_eq!(status, 202);
    let again = posts_at_least(&r, before + 1).await.expect("the retry arrived");
    assert!(again[before].at >= asked, "the retry's own request");
    assert_eq!(again[before].header("webhook-id"), d.header("webhook-id"));

    // A replay job: the API starts it, ingest works through it page by page.
    let since = (chrono::Utc::now() - chrono::Duration::hours(1)).to_rfc3339();
    let (status, job) =
        api.call("POST", &format!("/v1/hooks/{id}/replay"), Some(json!({"since": since, "status": "ALL"}))).await;
    assert_eq!(status, 202, "{job}");
    let job_id = job["id"].as_str().unwrap().to_owned();
    let finished = eventually(WAIT, || async {
        let (_, j) = api.call("GET", &format!("/v1/hooks/{id}/replays/{job_id}"), None).await;
        (j["state"] != "RUNNING").then_some(j)
    })
    .await
    .expect("the replay job finished");
    assert_eq!(finished["state"], "SUCCEEDED", "{finished}");
    assert_eq!(finished["queued"], 1, "{finished}");
    let replayed = posts_at_least(&r, before + 2).await.expect("the replayed delivery arrived");
    assert_eq!(replayed[before + 1].header("webhook-id"), d.header("webhook-id"));
    let (status, _) = api.call("DELETE", &format!("/v1/hooks/{id}"), None).await;
    assert_eq!(status, 204);

    // The worker's metrics, as CloudWatch would read them from its log lines.
    let worker = stack.function("delivery-worker").unwrap();
    let emf = eventually(Duration::from_secs(10), || async {
        let lines: Vec<Value> = worker
            .output()
            .iter()
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .filter(|v| v.get("_aws").is_some())
            .collect();
        (!lines.is_empty()).then_some(lines)
    })
    .await
    .expect("the worker wrote EMF lines");
    let succeeded: u64 = emf.iter().filter_map(|m| m["DeliveriesSucceeded"].as_u64()).sum();
    assert!(succeeded >= 2, "{emf:?}");
    for m in &emf {
        assert_eq!(m["Stack"], stack.prefix());
        assert_eq!(m["_aws"]["CloudWatchMetrics"][0]["Namespace"], "Hookbridge");
    }
    for f in hookbridge_testkit::lambda::FUNCTIONS {
        assert!(stack.function(f).unwrap().init_errors().is_empty(), "{f} failed to start");
    }

    // Everything above worked on an emulator that enforces no IAM; on AWS each function may
    // do only what the template grants it.
    let template = hookbridge_testkit::template::load();
    for (f, logical_id) in [
        ("subscription-api", "SubscriptionApiFunction"),
        ("ingest", "IngestFunction"),
        ("delivery-worker", "DeliveryWorkerFunction"),
        ("verifier", "VerifierFunction"),
    ] {
        let granted = hookbridge_testkit::template::policy_actions(&template, logical_id);
        let used = stack.aws_actions(f).unwrap();
        assert!(!used.is_empty(), "{f} made no AWS request through its pass-through");
        let refused: Vec<_> = used.difference(&granted).collect();
        assert!(refused.is_empty(), "{f} needs {refused:?}, which template.yaml does not grant it");
    }
}

/// An API function whose HS256 token key cannot be read (the secret never made, its
/// permission taken away, Secrets Manager out) still starts: `/v1/health` and an issuer's
/// tokens are answered, and an HS256 token is `503` with `Retry-After`, not `401`. Its
/// start failed, and every request was a bare `500`, though only HS256 tokens need the key.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_api_whose_token_key_cannot_be_read_serves_what_needs_none() {
    let idp = hookbridge_testkit::IdentityProvider::start().await;
    let mut opts = LambdaOptions::local();
    opts.token_key_stored = false;
    opts.env.push(("HOOKBRIDGE_JWT_ISSUER".into(), idp.issuer().to_owned()));
    opts.env.push(("HOOKBRIDGE_JWT_AUDIENCE".into(), "hookbridge-tests".into()));
    let stack = LambdaStack::start(opts).await.unwrap();
    let base = format!("http://{}", stack.addr());
    let http = reqwest::Client::new();

    let health = http.get(format!("{base}/v1/health")).send().await.unwrap();
    assert_eq!(health.status(), 200, "{}", health.text().await.unwrap());
    let now = chrono::Utc::now().timestamp();
    let claims =
        json!({"sub": "alice", "tenant": "acme", "scope": "hooks:read", "aud": "hookbridge-tests", "exp": now + 600});
    let listed = http.get(format!("{base}/v1/hooks")).bearer_auth(idp.sign("rsa-1", &claims)).send().await.unwrap();
    assert_eq!(listed.status(), 200, "an issuer's token: {}", listed.text().await.unwrap());

    let hs256 = subscription_api::Claims {
        sub: "alice".into(),
        tenant: "acme".into(),
        scope: "hooks:read".into(),
        exp: now as u64 + 600,
    };
    let hs256 =
        subscription_api::mint_token(&subscription_api::JwtKey::new("a-key-no-one-could-read-here"), &hs256).unwrap();
    let refused = http.get(format!("{base}/v1/hooks")).bearer_auth(hs256).send().await.unwrap();
    assert_eq!(refused.status(), 503, "an HS256 token cannot be checked now");
    assert!(refused.headers().contains_key("retry-after"));
    assert!(stack.function("subscription-api").unwrap().init_errors().is_empty(), "the API started");
}
