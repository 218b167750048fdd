//! A rotation to the secret already signing (a client repeating a rotation whose answer it
//! lost) writes nothing and answers as the first one did: it signed every request twice,
//! pushed a genuine previous secret out before its time, and moved the hook's version
//! under any other client.

#![allow(clippy::unwrap_used)] // Tests fail loudly on purpose.

use common::{api_and_token, call};
use hookbridge_core::secret::SigningSecret;
use hookbridge_testkit::EmbeddedHarness;

#[allow(dead_code)] // each test binary uses part of it
mod common;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_repeated_rotation_writes_nothing_and_answers_as_the_first() {
    let h = EmbeddedHarness::start().await;
    let (api, token) = api_and_token(&h, "hooks:read hooks:write");
    let (status, made) =
        call(&api, "POST", "/v1/hooks", &token, r#"{"name": "h", "url": "https://example.com/in"}"#).await;
    assert_eq!(status, 201, "{made}");
    let path = format!("/v1/hooks/{}", made["id"].as_str().unwrap());
    let rotate = format!(r#"{{"secret": "{}"}}"#, SigningSecret::generate().expose());

    let (status, first) = call(&api, "POST", &format!("{path}/secret/rotate"), &token, &rotate).await;
    assert_eq!(status, 200, "{first}");
    let version = call(&api, "GET", &path, &token, "").await.1["version"].clone();
    assert!(version.is_u64(), "{version}");
    let (status, again) = call(&api, "POST", &format!("{path}/secret/rotate"), &token, &rotate).await;
    assert_eq!(status, 200, "{again}");
    assert_eq!(again, first, "the same answer");
    assert_eq!(call(&api, "GET", &path, &token, "").await.1["version"], version, "nothing written");
}
