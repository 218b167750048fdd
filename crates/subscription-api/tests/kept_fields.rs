//! A hook a newer release wrote, with fields this release does not know in its
//! configuration, its verification settings and its OAuth settings (decision 0044): read,
//! it shows none of them, so it can be sent back as written; replaced, it keeps them all.

#![allow(clippy::unwrap_used)] // Tests fail loudly on purpose.

use common::{api_on, call, token};
use hookbridge_testkit::{EmbeddedHarness, Harness};
use serde_json::{Value, json};
use subscription_api::ApiPorts;

#[allow(dead_code)] // each test binary uses part of it
mod common;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hook_read_with_a_newer_releases_fields_is_written_back_whole() {
    let h = EmbeddedHarness::start().await;
    let (api, t) = (api_on(ApiPorts::of(h.backend())), token("hooks:read hooks:write"));
    let draft = json!({"name": "newer", "url": "https://r.example/", "auth": {"type": "OAUTH_CLIENT_CREDENTIALS",
        "token_url": "https://idp.example/token", "client_id": "c", "client_secret": "s"}});
    let (status, made) = call(&api, "POST", "/v1/hooks", &t, &draft.to_string()).await;
    assert_eq!(status, 201, "{made}");
    let id = made["id"].as_str().unwrap().to_owned();
    let stored = |id: String| async {
        let doc = h
            .db()
            .read(move |c| {
                c.query_row("SELECT doc FROM hooks WHERE id = ?1", [&id], |r| r.get::<_, String>(0))
                    .map_err(|e| hookbridge_core::Error::backend("test", e))
            })
            .await
            .unwrap();
        serde_json::from_str::<Value>(&doc).unwrap()
    };
    let places = ["/config/x_later", "/config/verification/x_later", "/config/auth/x_later"];
    let sql_id = id.clone();
    h.db()
        .write(move |c| {
            c.execute(
                "UPDATE hooks SET doc = json_set(doc, '$.config.x_later', 1, '$.config.verification.x_later', 2,
                     '$.config.auth.x_later', 3) WHERE id = ?1",
                [&sql_id],
            )
            .map_err(|e| hookbridge_core::Error::backend("test", e))
        })
        .await
        .unwrap();

    let path = format!("/v1/hooks/{id}");
    let (status, read) = call(&api, "GET", &path, &t, "").await;
    assert_eq!(status, 200, "{read}");
    assert!(read["auth"].get("x_later").is_none(), "kept fields are not shown: {read}");
    let (status, written) = call(&api, "PUT", &path, &t, &read.to_string()).await;
    assert_eq!(status, 200, "a hook as read is accepted back as written: {written}");
    let doc = stored(id.clone()).await;
    for (i, place) in places.iter().enumerate() {
        assert_eq!(doc.pointer(place), Some(&json!(i + 1)), "{place} kept: {doc}");
    }
    let changed = json!({"url": "https://r.example/moved", "auth": read["auth"]});
    let (status, body) = call(&api, "PUT", &path, &t, &changed.to_string()).await;
    assert_eq!(status, 200, "{body}");
    let doc = stored(id).await;
    assert_eq!(doc["config"]["url"], "https://r.example/moved");
    for (i, place) in places.iter().enumerate() {
        assert_eq!(doc.pointer(place), Some(&json!(i + 1)), "{place} kept through a change: {doc}");
    }
}
