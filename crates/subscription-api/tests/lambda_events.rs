//! The API function on its sample API Gateway (HTTP API, payload 2.0) and function URL
//! events, as `lambda_http` would hand them to the router, over the AWS backend on the
//! emulator.

#![allow(clippy::unwrap_used)] // Tests fail loudly on purpose.

use hookbridge_core::hook::NetworkPolicy;
use hookbridge_testkit::{AwsHarness, Harness, events};
use http_body_util::BodyExt;
use subscription_api::{Api, ApiSettings, JwtKey, router};
use tower::ServiceExt;

async fn invoke(api: &Api, name: &str) -> (u16, serde_json::Value) {
    let req = lambda_http::request::from_str(&events::load(name)).unwrap();
    let resp = router(api.clone()).oneshot(req).await.unwrap();
    let status = resp.status().as_u16();
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    (status, serde_json::from_slice(&body).unwrap_or(serde_json::Value::Null))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_sample_request_gets_its_answer() {
    let h = AwsHarness::start().await;
    let api = Api::new(
        subscription_api::ApiPorts::of(h.backend()),
        ApiSettings::local(JwtKey::new(hookbridge_core::settings::LOCAL_DEV_SECRET), NetworkPolicy::default()),
    );
    let (status, body) = invoke(&api, "subscription-api-health").await;
    assert_eq!((status, body["status"].as_str()), (200, Some("ok")));

    let (status, body) = invoke(&api, "subscription-api-create-hook").await;
    assert_eq!(status, 201, "{body}");
    assert_eq!(body["name"], "siem-forwarder");
    assert!(body["secret"].as_str().unwrap().starts_with("whsec_"));
    assert!(!body.to_string().contains("s3cr3t-header-value"), "a write-only value was returned");

    let (status, body) = invoke(&api, "subscription-api-list-hooks").await;
    assert_eq!(status, 200);
    assert_eq!(body["hooks"].as_array().unwrap().len(), 1);
    assert!(body["hooks"][0].get("secret").is_none());

    let (status, body) = invoke(&api, "subscription-api-publish-event").await;
    assert_eq!(status, 202, "{body}");
    assert_eq!(body["events"].as_array().unwrap().len(), 1);

    // The same publish through the function's URL (template parameter ApiFunctionUrl),
    // whose events are payload 2.0 without API Gateway's account or authorizer.
    let (status, body) = invoke(&api, "subscription-api-publish-event-function-url").await;
    assert_eq!(status, 202, "{body}");
    assert_eq!(body["events"].as_array().unwrap().len(), 1);

    let (status, body) = invoke(&api, "subscription-api-create-hook-invalid").await;
    assert_eq!(status, 400);
    let fields: Vec<_> = body["errors"].as_array().unwrap().iter().map(|e| e["field"].as_str().unwrap()).collect();
    assert_eq!(fields, ["name", "url"]);
}

/// A `hooks:read` token of tenant `acme`'s, signed with `key`, for ten minutes. Each is a
/// token not seen before (its own `sub`), so its check is never one the API kept from an
/// earlier call (decision 0037): what a key signs is checked afresh.
fn token(key: &str) -> String {
    static MINTED: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = MINTED.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let exp = chrono::Utc::now().timestamp() as u64 + 600;
    let claims =
        subscription_api::Claims { sub: format!("s-{n}"), tenant: "acme".into(), scope: "hooks:read".into(), exp };
    subscription_api::mint_token(&JwtKey::new(key), &claims).expect("a token")
}

/// Tokens checked with the HS256 key from `source`, the rest as by default.
fn tokens_over(source: hookbridge_aws::SecretsManagerKey) -> subscription_api::Tokens {
    let settings = hookbridge_core::settings::TokenSettings::default();
    let outbound = hookbridge_outbound::Outbound::new(hookbridge_outbound::OutboundSettings::default()).unwrap();
    subscription_api::Tokens::from_settings(&settings, Some(std::sync::Arc::new(source)), &outbound).unwrap()
}

/// The reads of a secret `counter` has seen.
fn secret_reads(counter: &hookbridge_aws::RequestCounter) -> u64 {
    counter.snapshot().iter().filter(|((_, op), _)| op == "GetSecretValue").map(|(_, n)| n).sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_token_key_is_read_from_secrets_manager_and_a_rotation_is_picked_up() {
    use std::time::Duration;

    let clients = hookbridge_aws::Clients::new(&hookbridge_testkit::Emulator::shared().sdk_config().await);
    let name = format!("hookbridge/jwt-{}", hookbridge_core::ids::DeliveryId::generate());
    let first = "the-first-key-0123456789abcdef0123456789";
    let second = "the-second-key-0123456789abcdef0123456789";
    let missing = hookbridge_aws::SecretsManagerKey::new(clients.secretsmanager.clone(), &name);
    assert!(hookbridge_core::ports::KeySource::key(&missing).await.is_err(), "a missing secret is an error");
    // A key that cannot be read is the platform's trouble, not the caller's: 503, not a
    // 401 that would send the client for a new token.
    let unreadable = tokens_over(missing);
    let refused = unreadable.check(&token(first)).await.unwrap_err();
    assert_eq!(axum::response::IntoResponse::into_response(refused).status(), 503);
    clients.secretsmanager.create_secret().name(&name).secret_string(first).send().await.unwrap();
    let source = hookbridge_aws::SecretsManagerKey::new(clients.secretsmanager.clone(), &name)
        .reread_after(Duration::from_millis(200));
    let tokens = tokens_over(source);
    assert!(tokens.check(&token(first)).await.is_ok());
    assert!(tokens.check(&token(second)).await.is_err());

    clients.secretsmanager.put_secret_value().secret_id(&name).secret_string(second).send().await.unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(tokens.check(&token(second)).await.is_ok(), "the rotated key is picked up");
    assert!(tokens.check(&token(first)).await.is_err(), "the old key no longer signs");
}

/// A token signed with a key rotated in since the held key was read is taken at once, not
/// after the periodic re-read (5 minutes, during which one instance took the new key's
/// tokens and another refused them); tokens no key signs read the secret once between them,
/// however many come at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_under_a_key_rotated_in_is_taken_at_once_and_bad_ones_read_the_secret_once_a_while() {
    use std::time::Duration;

    let sdk = hookbridge_testkit::Emulator::shared().sdk_config().await;
    let counter = hookbridge_aws::RequestCounter::default();
    let clients = hookbridge_aws::Clients::counted(&sdk, &counter);
    let name = format!("hookbridge/jwt-{}", hookbridge_core::ids::DeliveryId::generate());
    let (first, second) = ("the-first-key-0123456789abcdef0123456789", "the-second-key-0123456789abcdef0123456789");
    clients.secretsmanager.create_secret().name(&name).secret_string(first).send().await.unwrap();
    // Re-read periodically only after an hour, and for refused tokens once a minute.
    let tokens = || {
        let source = hookbridge_aws::SecretsManagerKey::new(clients.secretsmanager.clone(), &name)
            .reread_after(Duration::from_secs(3600))
            .reread_on_refusal_at_most_every(Duration::from_secs(60));
        tokens_over(source)
    };

    let rotated = tokens();
    assert!(rotated.check(&token(first)).await.is_ok());
    clients.secretsmanager.put_secret_value().secret_id(&name).secret_string(second).send().await.unwrap();
    let new_key = token(second);
    let checks = futures::future::join_all((0..10).map(|_| rotated.check(&new_key))).await;
    assert!(checks.iter().all(Result::is_ok), "every new key's token, at once: {checks:?}");
    assert!(rotated.check(&token(first)).await.is_err(), "the old key no longer signs");

    let forged_at = tokens();
    assert!(forged_at.check(&new_key).await.is_ok());
    counter.reset();
    let forged = token("a-key-no-one-was-given-0123456789abcdef");
    let checks = futures::future::join_all((0..20).map(|_| forged_at.check(&forged))).await;
    for refused in checks {
        let refused = refused.expect_err("a forged token");
        assert_eq!(axum::response::IntoResponse::into_response(refused).status(), 401);
    }
    assert_eq!(secret_reads(&counter), 1, "{:?}", counter.snapshot());
    assert!(forged_at.check(&token(second)).await.is_ok(), "the held key still signs");
}

/// A Secrets Manager that takes the request and never answers is a `503` in bounded time
/// (a refused token's re-read goes through the same read): the SDK bounds only the
/// connection, and such a read held every request that needed the key until the function
/// timed out.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_key_store_that_never_answers_is_a_503_not_a_hang() {
    use std::sync::Arc;
    use std::time::Duration;

    // Takes connections and reads nothing from them, never answering.
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = silent.local_addr().unwrap();
    let taken = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counted = taken.clone();
    std::thread::spawn(move || {
        let mut held = Vec::new();
        for conn in silent.incoming() {
            counted.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            held.push(conn);
        }
    });
    let sdk = hookbridge_testkit::Emulator::shared().sdk_config().await;
    let config = aws_sdk_secretsmanager::config::Builder::from(&sdk).endpoint_url(format!("http://{addr}")).build();
    let source =
        hookbridge_aws::SecretsManagerKey::new(aws_sdk_secretsmanager::Client::from_conf(config.clone()), "any");
    let tokens = tokens_over(source);
    // A guard against hanging, far past the read's own bound, not a timing.
    let checked =
        tokio::time::timeout(Duration::from_secs(60), tokens.check(&token("a-key-0123456789abcdef0123456789ab")))
            .await
            .expect("the check ended");
    let refused = checked.expect_err("no key could be read");
    assert_eq!(axum::response::IntoResponse::into_response(refused).status(), 503);
    assert!(taken.load(std::sync::atomic::Ordering::SeqCst) > 0, "the read reached the endpoint that never answers");

    // A first read cut off half way (its request dropped, the client gone) is not a failure
    // that stands: the next request reads again (here, waiting on the silent endpoint once
    // more) rather than being refused at once. Marked as failed, it had every HS256 request
    // refused for ten seconds by an instance that could have read the key.
    let source = hookbridge_aws::SecretsManagerKey::new(aws_sdk_secretsmanager::Client::from_conf(config), "any");
    let read = || tokio::time::timeout(Duration::from_millis(300), hookbridge_core::ports::KeySource::key(&source));
    assert!(read().await.is_err(), "cut off while reading");
    let before = taken.load(std::sync::atomic::Ordering::SeqCst);
    assert!(read().await.is_err(), "reading again, not answered from the cut-off read");
    assert!(taken.load(std::sync::atomic::Ordering::SeqCst) > before, "a second read reached the endpoint");
}

/// A re-read that fails keeps the key held until the next re-read is due: after one failure
/// every request read Secrets Manager again, waiting on the outage that failed it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_reread_of_the_token_key_is_not_tried_on_every_request() {
    use std::time::Duration;

    let sdk = hookbridge_testkit::Emulator::shared().sdk_config().await;
    let counter = hookbridge_aws::RequestCounter::default();
    let clients = hookbridge_aws::Clients::counted(&sdk, &counter);
    let name = format!("hookbridge/jwt-{}", hookbridge_core::ids::DeliveryId::generate());
    let key = "the-held-key-0123456789abcdef0123456789";
    clients.secretsmanager.create_secret().name(&name).secret_string(key).send().await.unwrap();
    let source = hookbridge_aws::SecretsManagerKey::new(clients.secretsmanager.clone(), &name)
        .reread_after(Duration::from_secs(1));
    assert_eq!(hookbridge_core::ports::KeySource::key(&source).await.unwrap().expose(), key);
    clients.secretsmanager.delete_secret().secret_id(&name).force_delete_without_recovery(true).send().await.unwrap();
    tokio::time::sleep(Duration::from_millis(1100)).await;
    counter.reset();
    for _ in 0..10 {
        assert_eq!(hookbridge_core::ports::KeySource::key(&source).await.unwrap().expose(), key, "the key held");
    }
    assert_eq!(
        secret_reads(&counter),
        1,
        "one failed re-read, then the held key until the next is due: {:?}",
        counter.snapshot()
    );
}

/// While no key has been read (the secret not made, or not readable), a failed read
/// stands a while: HS256 tokens that come meanwhile, together or one after another, are
/// `503` from it, and the secret is read once. Every one of them read Secrets Manager again,
/// waiting on its retries and timeouts. Once the secret can be read, the next read after
/// that while takes it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_key_that_cannot_be_read_is_not_read_for_every_request() {
    use std::time::Duration;

    let sdk = hookbridge_testkit::Emulator::shared().sdk_config().await;
    let counter = hookbridge_aws::RequestCounter::default();
    let clients = hookbridge_aws::Clients::counted(&sdk, &counter);
    let name = format!("hookbridge/jwt-{}", hookbridge_core::ids::DeliveryId::generate());
    let key = "the-key-made-late-0123456789abcdef0123456";
    let status = |checked: Result<_, subscription_api::ApiError>| {
        axum::response::IntoResponse::into_response(checked.expect_err("no key to check it with")).status()
    };

    let unread = tokens_over(
        hookbridge_aws::SecretsManagerKey::new(clients.secretsmanager.clone(), &name)
            .retry_unread_at_most_every(Duration::from_secs(3600)),
    );
    let signed = token(key);
    let together = futures::future::join_all((0..20).map(|_| unread.check(&signed))).await;
    for checked in together {
        assert_eq!(status(checked), 503);
    }
    for _ in 0..10 {
        assert_eq!(status(unread.check(&token(key)).await), 503);
    }
    assert_eq!(secret_reads(&counter), 1, "one read for thirty requests: {:?}", counter.snapshot());

    let made_late = tokens_over(
        hookbridge_aws::SecretsManagerKey::new(clients.secretsmanager.clone(), &name)
            .retry_unread_at_most_every(Duration::from_millis(200)),
    );
    assert_eq!(status(made_late.check(&token(key)).await), 503);
    clients.secretsmanager.create_secret().name(&name).secret_string(key).send().await.unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(made_late.check(&token(key)).await.is_ok(), "the secret made since is read");
}

/// A console session that cannot be checked now (the token key unreadable) is not taken
/// for "signed out": the page says to try again, `503`, and a posted form is not sent on
/// to the sign-in page, where it was lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_console_session_that_cannot_be_checked_now_is_not_signed_out() {
    let h = AwsHarness::start().await;
    let clients = hookbridge_aws::Clients::new(&hookbridge_testkit::Emulator::shared().sdk_config().await);
    let name = format!("hookbridge/jwt-{}", hookbridge_core::ids::DeliveryId::generate());
    let missing = hookbridge_aws::SecretsManagerKey::new(clients.secretsmanager.clone(), &name);
    let mut api_settings =
        ApiSettings::local(JwtKey::new(hookbridge_core::settings::LOCAL_DEV_SECRET), NetworkPolicy::default());
    api_settings.tokens = tokens_over(missing);
    let api = Api::new(subscription_api::ApiPorts::of(h.backend()), api_settings);
    let claims = subscription_api::Claims {
        sub: "s".into(),
        tenant: "acme".into(),
        scope: "hooks:read hooks:write".into(),
        exp: chrono::Utc::now().timestamp() as u64 + 600,
    };
    let token =
        subscription_api::mint_token(&JwtKey::new("a-key-nobody-can-read-now-0123456789abcdef"), &claims).unwrap();
    for (method, path) in [("GET", "/console/hooks"), ("POST", "/console/hooks/new"), ("GET", "/console")] {
        let req = http::Request::builder()
            .method(method)
            .uri(path)
            .header("host", "127.0.0.1:8080")
            .header("cookie", format!("hb_session=t.{token}"))
            .header("content-type", "application/x-www-form-urlencoded")
            .body(axum::body::Body::from("name=kept&_csrf=x"))
            .unwrap();
        let resp = router(api.clone()).oneshot(req).await.unwrap();
        assert_eq!(resp.status(), 503, "{method} {path}: {:?}", resp.headers().get("location"));
        assert_eq!(resp.headers()["retry-after"], "30");
    }
}

#[test]
fn every_sample_event_file_is_used_by_a_handler_test() {
    let sources = [
        include_str!("lambda_events.rs"),
        include_str!("../../ingest/tests/lambda_events.rs"),
        include_str!("../../delivery-worker/tests/lambda_events.rs"),
        include_str!("../../verifier/tests/lambda_events.rs"),
    ]
    .concat();
    for name in events::all() {
        assert!(sources.contains(&format!("\"{name}\"")), "events/{name}.json is not used by any handler test");
    }
}

/// API Gateway hands the function the path decoded: `DELETE /v1/event-types/billing%23v2`
/// arrives with `billing#v2` as its path, which `lambda_http` cut at the `#`. It forgot the
/// declaration of `billing`; a name holding `#` or `?` is now refused as such, and
/// `billing` is kept.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_decoded_path_cut_short_by_lambda_http_is_refused_not_taken_for_another() {
    let h = hookbridge_testkit::EmbeddedHarness::start().await;
    let api = Api::new(
        subscription_api::ApiPorts::of(h.backend()),
        ApiSettings::local(JwtKey::new(hookbridge_core::settings::LOCAL_DEV_SECRET), NetworkPolicy::default()),
    );
    // The sample's token is tenant `demo`'s, with `hooks:write`.
    let sample: serde_json::Value = serde_json::from_str(&events::load("subscription-api-list-hooks")).unwrap();
    let event = |method: &str, raw_path: &str, body: Option<&str>| {
        let mut e = sample.clone();
        e["rawPath"] = raw_path.into();
        e["rawQueryString"] = "".into();
        e.as_object_mut().unwrap().remove("queryStringParameters");
        e["requestContext"]["http"]["method"] = method.into();
        e["requestContext"]["http"]["path"] = raw_path.into();
        if let Some(b) = body {
            e["body"] = b.into();
            e["headers"]["content-type"] = "application/json".into();
        }
        lambda_http::request::from_str(&e.to_string()).unwrap()
    };
    let call = |req: lambda_http::Request| async {
        let resp = router(api.clone()).oneshot(req).await.unwrap();
        let status = resp.status().as_u16();
        let body = resp.into_body().collect().await.unwrap().to_bytes();
        (status, serde_json::from_slice::<serde_json::Value>(&body).unwrap_or_default())
    };
    let schema = r#"{"schema": {"type": "object"}}"#;
    assert_eq!(call(event("PUT", "/v1/event-types/billing", Some(schema))).await.0, 200);
    for (method, path) in [
        ("DELETE", "/v1/event-types/billing#v2"),
        ("PUT", "/v1/event-types/billing?v2"),
        ("DELETE", "/v1/event-types/x/../billing"),
        ("DELETE", "/v1/event-types/bill\ting"),
    ] {
        let (status, body) = call(event(method, path, Some(r#"{"description": "x"}"#))).await;
        assert_eq!((status, body["errors"][0]["field"].as_str()), (400, Some("name")), "{method} {path}: {body}");
    }
    let (status, body) = call(event("GET", "/v1/hooks/01KB000000000000000000000#x", None)).await;
    assert_eq!(status, 404, "{body}");
    // A name that needs escaping, handed on decoded, is routed as it came.
    assert_eq!(call(event("PUT", "/v1/event-types/a\"b", Some(r#"{"description": "x"}"#))).await.0, 200);
    let (_, listed) = call(event("GET", "/v1/event-types", None)).await;
    let billing = listed["event_types"].as_array().unwrap().iter().find(|t| t["name"] == "billing").cloned();
    assert_eq!(billing.map(|b| b["schema"].clone()), Some(serde_json::json!({"type": "object"})), "{listed}");
}
