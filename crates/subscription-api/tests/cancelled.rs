//! A request whose caller goes away mid-way (a client's timeout) still finishes what it
//! started: a publish's idempotency claim is answered, so a repeat of the request gets
//! the first answer, not minutes of `409` and then a second publish.

#![allow(clippy::unwrap_used)] // Tests fail loudly on purpose.

use std::time::Duration;

use axum::body::Body;
use axum::http::Request;
use hookbridge_core::hook::NetworkPolicy;
use hookbridge_core::settings::LOCAL_DEV_SECRET;
use hookbridge_testkit::{EmbeddedHarness, Harness};
use http_body_util::BodyExt;
use subscription_api::{Api, ApiPorts, ApiSettings, Claims, JwtKey, mint_token, router};
use tower::ServiceExt;

fn publish(token: &str) -> Request<Body> {
    Request::post("/v1/events")
        .header("authorization", format!("Bearer {token}"))
        .header("content-type", "application/json")
        .header("idempotency-key", "the-one-publish")
        .body(Body::from(r#"{"detail-type":"user.login","source":"idp","detail":{"n":1}}"#))
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_publish_whose_caller_went_away_still_answers_its_claim() {
    let h = EmbeddedHarness::start().await;
    let api = Api::new(
        ApiPorts::of(h.backend()),
        ApiSettings::local(JwtKey::new(LOCAL_DEV_SECRET), NetworkPolicy::default()),
    );
    let exp = chrono::Utc::now().timestamp() as u64 + 600;
    let claims = Claims { sub: "s".into(), tenant: "acme".into(), scope: "events:publish".into(), exp };
    let token = mint_token(&JwtKey::new(LOCAL_DEV_SECRET), &claims).unwrap();

    // The writer is busy for a moment, so the request waits inside its claim; the caller
    // gives up before it is answered.
    let db = h.db().clone();
    let busy = tokio::spawn(async move {
        db.write(|_| {
            std::thread::sleep(Duration::from_millis(800));
            Ok(())
        })
        .await
    });
    tokio::time::sleep(Duration::from_millis(100)).await;
    let gone = tokio::time::timeout(Duration::from_millis(200), router(api.clone()).oneshot(publish(&token))).await;
    assert!(gone.is_err(), "the caller gave up first");
    busy.await.unwrap().unwrap();

    // The repeat gets the first request's answer once it is in, not "in progress" until
    // the claim runs out.
    let mut answers = Vec::new();
    for _ in 0..50 {
        let resp = router(api.clone()).oneshot(publish(&token)).await.unwrap();
        let status = resp.status().as_u16();
        let replayed = resp.headers().get("idempotent-replayed").is_some();
        let body = resp.into_body().collect().await.unwrap().to_bytes();
        answers.push((status, replayed, String::from_utf8_lossy(&body).into_owned()));
        if status == 202 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let (status, replayed, body) = answers.last().unwrap();
    assert_eq!((*status, *replayed), (202, true), "after {} tries, the last: {body}", answers.len());
}
