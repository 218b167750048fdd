//! The seeds' own APIs and payloads: requests copied verbatim from the Keycloak (Phase Two)
//! and ExtremeCloud IQ documents (`tests/fixtures/seeds/`) answer as those products do, and
//! events reach a real receiver in each product's format, with a signature it verifies
//! using only the secret it chose.

use std::time::Duration;

use base64::Engine as _;
use hmac::{Hmac, Mac};
use hookbridge_core::settings;
use hookbridge_e2e::{ALL_SCOPES, TestStack, eventually, on_both_backends};
use hookbridge_testkit::{Received, Receiver, Reply};
use serde_json::{Value, json};
use sha2::Sha256;

const WAIT: Duration = Duration::from_secs(30);

fn fixture(name: &str) -> String {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/seeds").join(name);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn hmac_sha256(key: &[u8], data: &[u8]) -> Vec<u8> {
    let mut m = Hmac::<Sha256>::new_from_slice(key).unwrap();
    m.update(data);
    m.finalize().into_bytes().to_vec()
}

/// Whether a Standard Webhooks signature of `got` verifies with `key`, computed here from
/// the specification, not with the platform's code.
fn standard_signature_verifies(got: &Received, key: &[u8]) -> bool {
    let (id, ts) = (got.header("webhook-id").unwrap(), got.header("webhook-timestamp").unwrap());
    let signed = [id.as_bytes(), b".", ts.as_bytes(), b".", &got.body].concat();
    let expected = format!("v1,{}", base64::engine::general_purpose::STANDARD.encode(hmac_sha256(key, &signed)));
    got.header("webhook-signature").unwrap().split_whitespace().any(|s| s == expected)
}

/// `method path` with a raw JSON body, as a client of another product would send it (the
/// answer is checked against the OpenAPI document like every other).
async fn send(
    stack: &TestStack,
    method: &str,
    path: &str,
    token: &str,
    body: Option<&str>,
) -> (u16, Value, reqwest::header::HeaderMap) {
    let auth = format!("Bearer {token}");
    let mut headers = vec![("authorization", auth.as_str())];
    if body.is_some() {
        headers.push(("content-type", "application/json"));
    }
    let a = stack.raw(method, path, &headers, body.unwrap_or_default().as_bytes().to_vec()).await;
    (a.status.as_u16(), a.body, a.headers)
}

on_both_backends! {
async fn keycloak_clients_work_unchanged(flavor: Flavor) {
    let stack = TestStack::start(flavor).await;
    let r = Receiver::start().await;
    let t = stack.token("test", ALL_SCOPES);

    // The document's example, verbatim, on both path styles.
    for prefix in ["/auth/realms/test", "/realms/test"] {
        let (status, body, headers) = send(&stack, "POST", &format!("{prefix}/webhooks"), &t, Some(&fixture("keycloak-create-webhook.json"))).await;
        assert_eq!(status, 201, "{prefix}: {body}");
        let location = headers["location"].to_str().unwrap().to_owned();
        assert!(location.contains(&format!("{prefix}/webhooks/")), "{location}");
        let (status, one, _) = send(&stack, "GET", location.trim_start_matches(stack.base_url()), &t, None).await;
        assert_eq!(status, 200);
        // Stored normalised, as every hook URL is (the root path spelled out).
        assert_eq!(one["url"], "https://exxxxxxxxxxxxxx.m.pipedream.net/");
        assert_eq!((one["enabled"].clone(), one["eventTypes"].clone()), (json!(true), json!(["*"])));
        assert_eq!(one["createdBy"], "test-tester");
        assert!(one["id"].is_string());
        // Shaped as the seed's `"2021-04-21T18:25:43-05:00"`: whole seconds and an offset,
        // which strict parsers (Python's `fromisoformat` before 3.11) read; nanoseconds and
        // `Z` they refuse.
        let created = one["createdAt"].as_str().unwrap();
        assert!(chrono::DateTime::parse_from_str(created, "%Y-%m-%dT%H:%M:%S%:z").is_ok(), "{created}");
        assert!(one.get("secret").is_none(), "the secret is never sent on reads: {one}");
    }
    let (status, list, _) = send(&stack, "GET", "/auth/realms/test/webhooks", &t, None).await;
    assert_eq!(status, 200);
    assert_eq!(list.as_array().unwrap().len(), 2);
    assert!(!list.to_string().contains("A3jt6D8lz"));

    // The webhook object, verbatim (its id, createdBy and createdAt ignored), as an update.
    let id = list[0]["id"].as_str().unwrap().to_owned();
    let object = fixture("keycloak-webhook-object.json");
    let (status, _, _) = send(&stack, "PUT", &format!("/auth/realms/test/webhooks/{id}"), &t, Some(&object)).await;
    assert_eq!(status, 204);
    let (_, updated, _) = send(&stack, "GET", &format!("/auth/realms/test/webhooks/{id}"), &t, None).await;
    assert_eq!((updated["id"].as_str(), updated["url"].as_str()), (Some(id.as_str()), Some("https://example.com/some/webhook")));

    // Another realm is another tenant's: 404, with Keycloak's error body.
    let (status, err, _) = send(&stack, "GET", "/auth/realms/master/webhooks", &t, None).await;
    assert_eq!(status, 404);
    assert!(err["error"].is_string(), "{err}");
    let reader = stack.token("test", "hooks:read");
    let (status, err, _) = send(&stack, "POST", "/realms/test/webhooks", &reader, Some(&fixture("keycloak-create-webhook.json"))).await;
    assert_eq!(status, 403, "view-events alone cannot create: {err}");
    let (status, err, _) = send(&stack, "POST", "/realms/test/webhooks", &t, Some(r#"{"url":"https://x.example/","secret":"short"}"#)).await;
    assert_eq!(status, 400);
    assert!(err["error"].as_str().unwrap().contains("secret"), "{err}");
    // A webhook written as an array of its fields is not read by position.
    let (status, err, _) = send(&stack, "POST", "/realms/test/webhooks", &t, Some(r#"[true,"https://x.example/",null,null,null]"#)).await;
    assert_eq!(status, 400, "{err}");
    assert_eq!(err["error"], "body: must be a JSON object");
    // Named as the client wrote it.
    let (status, err, _) = send(&stack, "POST", "/realms/test/webhooks", &t, Some(r#"{"url":"https://x.example/","eventTypes":["bad\ttype"]}"#)).await;
    assert_eq!(status, 400);
    assert!(err["error"].as_str().unwrap().starts_with("eventTypes[0]: "), "{err}");
    // A regular expression, which Phase Two would match as one, is refused, not taken to
    // match nothing.
    for regex in [r#"["access.*", "admin.USER-.*"]"#, r#"["access.*", "access.(LOGIN|LOGOUT)"]"#] {
        let doc = format!(r#"{{"url":"https://x.example/","eventTypes":{regex}}}"#);
        let (status, err, _) = send(&stack, "POST", "/realms/test/webhooks", &t, Some(&doc)).await;
        assert_eq!(status, 400, "{regex}: {err}");
        assert!(err["error"].as_str().unwrap().starts_with("eventTypes[1]: is a regular expression"), "{err}");
    }
    // A signing algorithm other than the one used is refused, not ignored; Phase Two's
    // default, named in any case (as Java reads it), is taken.
    let sha1 = r#"{"url":"https://x.example/","secret":"A3jt6D8lz","algorithm":"HmacSHA1"}"#;
    let (status, err, _) = send(&stack, "POST", "/realms/test/webhooks", &t, Some(sha1)).await;
    assert_eq!(status, 400);
    assert!(err["error"].as_str().unwrap().starts_with("algorithm: "), "{err}");
    let sha256 = r#"{"url":"https://x.example/","secret":"A3jt6D8lz","algorithm":"hmacsha256","eventTypes":["never.sent"]}"#;
    let (status, created, _) = send(&stack, "POST", "/realms/test/webhooks", &t, Some(sha256)).await;
    assert_eq!(status, 201, "{created}");

    // Delivery: the example pointed at a real receiver; the event itself as the body,
    // signed with the secret the client chose.
    let doc = fixture("keycloak-create-webhook.json").replace("https://exxxxxxxxxxxxxx.m.pipedream.net", &r.url("/kc"));
    assert_eq!(send(&stack, "POST", "/realms/test/webhooks", &t, Some(&doc)).await.0, 201);
    let event = json!({"type": "access.LOGIN", "realmId": "test", "clientId": "account", "userId": "u-1", "ipAddress": "203.0.113.7", "details": {"username": "ada"}});
    stack.publish(&t, &json!({"detail-type": "access.LOGIN", "source": "keycloak", "detail": event})).await;
    let got = r.wait_for(1, flavor.patience(WAIT)).await;
    let body: Value = serde_json::from_slice(&got[0].body).unwrap();
    assert_eq!(body, event, "the event as submitted, nothing added");
    let expected = hex::encode(hmac_sha256(b"A3jt6D8lz", &got[0].body));
    assert_eq!(got[0].header("x-keycloak-signature"), Some(expected.as_str()));

    // An empty secret is none, as Phase Two reads it (it was `400`, "8-256 characters"):
    // on create, nothing is signed; on update, the secret stays as it was.
    let unsigned = Receiver::start().await;
    let mut doc: Value = serde_json::from_str(&fixture("keycloak-create-webhook.json")).unwrap();
    doc["url"] = json!(unsigned.url("/none"));
    doc["secret"] = json!("");
    let (status, body, headers) = send(&stack, "POST", "/realms/test/webhooks", &t, Some(&doc.to_string())).await;
    assert_eq!(status, 201, "{body}");
    let at = headers["location"].to_str().unwrap().trim_start_matches(stack.base_url()).to_owned();
    assert_eq!(send(&stack, "PUT", &at, &t, Some(&doc.to_string())).await.0, 204, "an update with an empty secret");
    stack.publish(&t, &json!({"detail-type": "access.LOGIN", "source": "keycloak", "detail": event})).await;
    let got = unsigned.wait_for(1, flavor.patience(WAIT)).await;
    assert_eq!(got[0].header("x-keycloak-signature"), None, "no secret, no signature");

    // Delete: 204, then 404.
    assert_eq!(send(&stack, "DELETE", &format!("/realms/test/webhooks/{id}"), &t, None).await.0, 204);
    assert_eq!(send(&stack, "GET", &format!("/realms/test/webhooks/{id}"), &t, None).await.0, 404);
    stack.shutdown().await;
}
}

on_both_backends! {
/// Phase Two pages its list (`first`, `max`, 100 at most and by default) and counts it at
/// `…/webhooks/count`; a client that pages until a short page ends, and sees every webhook
/// once, oldest first.
async fn keycloak_lists_page_and_count_as_phase_two_does(flavor: Flavor) {
    let stack = TestStack::start(flavor).await;
    let t = stack.token("test", ALL_SCOPES);
    let create = |i: usize| {
        let (stack, t) = (&stack, &t);
        async move {
            let doc = json!({"url": format!("https://kc{i}.example/"), "eventTypes": ["*"]}).to_string();
            let (status, body, headers) = send(stack, "POST", "/realms/test/webhooks", t, Some(&doc)).await;
            assert_eq!(status, 201, "{body}");
            headers["location"].to_str().unwrap().rsplit('/').next().unwrap().to_owned()
        }
    };
    // One at a time, so that oldest first is an order this test knows.
    let mut made = Vec::new();
    for i in 0..7 {
        made.push(create(i).await);
    }
    let page = |query: &str| {
        let (stack, t) = (&stack, &t);
        let path = format!("/auth/realms/test/webhooks{query}");
        async move {
            let (status, body, _) = send(stack, "GET", &path, t, None).await;
            assert_eq!(status, 200, "{path}: {body}");
            body.as_array().unwrap().iter().map(|w| w["id"].as_str().unwrap().to_owned()).collect::<Vec<_>>()
        }
    };
    let mut paged = Vec::new();
    for first in (0..).step_by(3) {
        let ids = page(&format!("?first={first}&max=3")).await;
        assert!(ids.len() <= 3, "{ids:?}");
        let short = ids.len() < 3;
        paged.extend(ids);
        if short {
            break;
        }
    }
    assert_eq!(paged, made, "every webhook once, oldest first");
    assert_eq!(page("?first=7").await, Vec::<String>::new());
    assert_eq!(page("?max=0").await, Vec::<String>::new());
    assert_eq!(page("?first=5&max=1000").await, made[5..].to_vec());
    let (_, one, _) = send(&stack, "GET", "/realms/test/webhooks?max=1", &t, None).await;
    assert_eq!(one[0]["realm"], "test");

    let reader = stack.token("test", "hooks:read");
    let count = |stack| send(stack, "GET", "/realms/test/webhooks/count", &reader, None);
    let (status, n, _) = count(&stack).await;
    assert_eq!((status, n), (200, json!(7)));
    assert_eq!(send(&stack, "DELETE", &format!("/realms/test/webhooks/{}", made[0]), &t, None).await.0, 204);
    assert_eq!(count(&stack).await.1, json!(6));
    assert_eq!(page("").await, made[1..].to_vec());

    // A page holds 100 at most, asked for more or not asked at all.
    futures::future::join_all((7..102).map(create)).await;
    assert_eq!(page("").await.len(), 100);
    assert_eq!(page("?max=101").await.len(), 100);
    assert_eq!(page("?first=100").await.len(), 1);
    assert_eq!(count(&stack).await.1, json!(101));

    for (query, field) in [("?first=-1", "first"), ("?max=many", "max"), ("?first=10001", "first")] {
        let (status, err, _) = send(&stack, "GET", &format!("/realms/test/webhooks{query}"), &t, None).await;
        assert_eq!(status, 400, "{query}: {err}");
        assert!(err["error"].as_str().unwrap().contains(field), "{query}: {err}");
    }
    stack.shutdown().await;
}
}

on_both_backends! {
/// A webhook's sends are its deliveries as Phase Two shows them: newest first and paged,
/// one with the body it carried, and a resend that sends the same delivery again.
async fn keycloak_sends_show_and_resend_a_webhooks_deliveries(flavor: Flavor) {
    let stack = TestStack::start(flavor).await;
    let r = Receiver::start().await;
    let t = stack.token("test", ALL_SCOPES);
    let doc = fixture("keycloak-create-webhook.json").replace("https://exxxxxxxxxxxxxx.m.pipedream.net", &r.url("/kc"));
    let (status, _, headers) = send(&stack, "POST", "/realms/test/webhooks", &t, Some(&doc)).await;
    assert_eq!(status, 201);
    let webhook = headers["location"].to_str().unwrap().trim_start_matches(stack.base_url()).to_owned();
    let events: Vec<Value> = (0..3).map(|i| json!({"type": "LOGIN", "realmId": "test", "userId": format!("u-{i}")})).collect();
    let mut ids = Vec::new();
    for e in &events {
        ids.extend(stack.publish(&t, &json!({"detail-type": "access.LOGIN", "source": "keycloak", "detail": e})).await);
    }
    r.wait_for(3, flavor.patience(WAIT)).await;
    let sends = |query: &'static str| {
        let (stack, t, path) = (&stack, &t, format!("{webhook}/sends{query}"));
        async move {
            let (status, body, _) = send(stack, "GET", &path, t, None).await;
            assert_eq!(status, 200, "{path}: {body}");
            body.as_array().unwrap().clone()
        }
    };
    let all = eventually(flavor.patience(WAIT), || async {
        let all = sends("").await;
        (all.len() == 3 && all.iter().all(|s| s["status"] == 200)).then_some(all)
    })
    .await
    .expect("three sends, each answered 200");
    // Newest first: by delivery id, which is time-ordered to the event's time (a second,
    // as EventBridge gives it), so these three may share one.
    let sends_ids: Vec<&str> = all.iter().map(|s| s["id"].as_str().unwrap()).collect();
    assert!(sends_ids.windows(2).all(|w| w[0] > w[1]), "{sends_ids:?}");
    let mut sent_events: Vec<String> = all.iter().map(|s| s["event_id"].as_str().unwrap().to_owned()).collect();
    sent_events.sort();
    ids.sort();
    assert_eq!(sent_events, ids);
    let webhook_id = webhook.rsplit('/').next().unwrap();
    for s in &all {
        // Phase Two's own field names.
        assert_eq!((s["type"].as_str(), s["keycloak_event_type"].as_str()), (Some("access.LOGIN"), Some("USER")));
        assert_eq!(s["status_message"], "HTTP 200 OK");
        assert_eq!(s["keycloak_event_id"], s["event_id"]);
        // Every attempt counts, as Phase Two counts every send (delivery is at least once: a
        // message handed out twice is two attempts).
        let retries = s["retries"].as_u64().unwrap();
        assert!(retries >= 1 && (flavor != hookbridge_e2e::Flavor::Embedded || retries == 1), "{s}");
        assert_eq!(s["webhook"]["id"], webhook_id);
        assert!(s["sent_at"].is_string() && s.get("payload").is_none(), "{s}");
    }
    let ids_of = |page: Vec<Value>| page.iter().map(|s| s["id"].as_str().unwrap().to_owned()).collect::<Vec<_>>();
    assert_eq!(ids_of(sends("?first=1&max=1").await), [sends_ids[1]]);
    assert_eq!(sends("?first=3").await, Vec::<Value>::new());
    let (status, err, _) = send(&stack, "GET", &format!("{webhook}/sends?first=10001"), &t, None).await;
    assert_eq!(status, 400);
    assert!(err["error"].as_str().unwrap().contains("first"), "{err}");

    // One send: the body the receiver got, and the delivery's id is the `webhook-id` it got.
    let oldest = all[2]["id"].as_str().unwrap().to_owned();
    let (status, one, _) = send(&stack, "GET", &format!("{webhook}/sends/{oldest}"), &t, None).await;
    assert_eq!(status, 200, "{one}");
    assert_eq!(one["event_id"], all[2]["event_id"]);
    let got = r.received();
    let received = got.iter().find(|g| g.header("webhook-id") == Some(oldest.as_str())).expect("the send's id is the delivery's");
    assert_eq!(one["payload"].as_str().unwrap().as_bytes(), &received.body[..], "the body sent, byte for byte");

    // Resend: 202, and the same delivery arrives again (counted from what arrived before,
    // which a duplicate may have made two).
    let arrivals = |got: &[hookbridge_testkit::Received]| got.iter().filter(|g| g.header("webhook-id") == Some(oldest.as_str())).count();
    let before = arrivals(&r.received());
    let (status, _, headers) = send(&stack, "POST", &format!("{webhook}/sends/{oldest}/resend"), &t, None).await;
    assert_eq!(status, 202);
    assert_eq!(headers["content-type"], "text/plain");
    let got = r.wait_until(flavor.patience(WAIT), |got| arrivals(got) > before).await;
    assert!(arrivals(&got) > before, "the resent delivery arrived");

    // Another webhook's send, an unknown one, and a reader resending: Keycloak's errors.
    let other = fixture("keycloak-create-webhook.json");
    let (_, _, headers) = send(&stack, "POST", "/realms/test/webhooks", &t, Some(&other)).await;
    let other = headers["location"].to_str().unwrap().trim_start_matches(stack.base_url()).to_owned();
    for path in [format!("{other}/sends/{oldest}"), format!("{webhook}/sends/01KAKSAMP4E000000000H00K01"), format!("{webhook}/sends/nope")] {
        let (status, err, _) = send(&stack, "GET", &path, &t, None).await;
        assert_eq!(status, 404, "{path}: {err}");
        assert!(err["error"].is_string(), "{err}");
    }
    let reader = stack.token("test", "hooks:read");
    assert_eq!(send(&stack, "POST", &format!("{webhook}/sends/{oldest}/resend"), &reader, None).await.0, 403);
    stack.shutdown().await;
}
}

/// The answer to a request's head alone: it announces a body of `len` bytes and waits to
/// be told to send it (`Expect: 100-continue`), so a server that checks the caller before
/// reading the body answers without any of it. (Sending the body too made the test a race:
/// the server answers and closes while the client may still be writing.)
async fn answer_to_the_head_alone(stack: &TestStack, path: &str, token: &str, len: usize) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let addr = stack.base_url().trim_start_matches("http://").trim_end_matches('/').to_owned();
    let mut conn = tokio::net::TcpStream::connect(&addr).await.unwrap();
    let head = format!(
        "POST {path} HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {token}\r\nContent-Type: application/json\r\nContent-Length: {len}\r\nExpect: 100-continue\r\n\r\n"
    );
    conn.write_all(head.as_bytes()).await.unwrap();
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    while !got.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = tokio::time::timeout(WAIT, conn.read(&mut buf)).await.expect("an answer before the body").unwrap();
        assert!(n > 0, "closed without an answer");
        got.extend_from_slice(&buf[..n]);
    }
    String::from_utf8_lossy(&got).into_owned()
}

on_both_backends! {
async fn extremecloud_iq_clients_work_unchanged(flavor: Flavor) {
    let stack = TestStack::start(flavor).await;
    let r = Receiver::start().await;
    let t = stack.token("acme", ALL_SCOPES);

    // The document's example, verbatim: the created subscriptions come back with ids.
    let (status, created, _) = send(&stack, "POST", "/subscriptions/webhook", &t, Some(&fixture("xiq-create-subscription.json"))).await;
    assert_eq!(status, 202, "{created}");
    let sub = &created[0];
    // Exact in any JSON reader: JavaScript's and jq's numbers are doubles.
    assert!(sub["id"].as_i64().is_some_and(|id| (0..=(1i64 << 53) - 1).contains(&id)), "{sub}");
    assert_eq!((sub["application"].as_str(), sub["message_type"].as_str()), (Some("example-app-audits"), Some("AUDIT_LOG_ALL")));
    // Every field XIQ's SDK requires of a subscription; its secret only as a mask.
    assert_eq!((sub["data_type"].as_str(), sub["secret"].as_str()), (Some("AUDIT_LOG"), Some("********")), "{sub}");
    assert_eq!(sub["status"], "ENABLED");
    for field in ["create_time", "update_time"] {
        let at = sub[field].as_str().unwrap();
        assert!(chrono::NaiveDateTime::parse_from_str(at, "%Y-%m-%dT%H:%M:%S%.3fZ").is_ok() && at.len() == 24, "{field}: {at}");
    }
    let (status, list, _) = send(&stack, "GET", "/subscriptions/webhook", &t, None).await;
    assert_eq!(status, 200);
    assert_eq!(list.as_array().unwrap().len(), 1);
    assert_eq!(list[0]["id"], sub["id"]);
    assert!(!list.to_string().contains("00000000\""), "the secret is never listed");

    // A bad message type names the item and field; nothing of the request is created.
    let bad = r#"[{"application":"a","url":"https://x.example/","message_type":"AUDIT_LOG_ALL"},{"application":"b","url":"https://y.example/","message_type":"NOPE"}]"#;
    let (status, err, _) = send(&stack, "POST", "/subscriptions/webhook", &t, Some(bad)).await;
    assert_eq!(status, 400);
    assert!(err["error_message"].as_str().unwrap().contains("[1].message_type"), "{err}");
    assert_eq!(send(&stack, "GET", "/subscriptions/webhook", &t, None).await.1.as_array().unwrap().len(), 1);
    // A subscription written as an array of its fields is not read by position.
    let by_position = r#"[["app","https://z.example/","sekret-1","AUDIT_LOG_ALL"]]"#;
    let (status, err, _) = send(&stack, "POST", "/subscriptions/webhook", &t, Some(by_position)).await;
    assert_eq!(status, 400, "{err}");
    assert!(err["error_message"].as_str().unwrap().contains("[0]: must be a JSON object"), "{err}");
    assert_eq!(send(&stack, "GET", "/subscriptions/webhook", &t, None).await.1.as_array().unwrap().len(), 1);

    // A subscription read and sent back to make it again (XIQ has no update) carries the
    // read's mask, not a secret: refused rather than signed with a key anyone can read.
    let again = json!([{"application": "a", "url": "https://x.example/", "secret": list[0]["secret"], "message_type": "AUDIT_LOG_ALL"}]);
    let (status, err, _) = send(&stack, "POST", "/subscriptions/webhook", &t, Some(again.to_string().as_str())).await;
    assert_eq!(status, 400, "{err}");
    assert!(err["error_message"].as_str().unwrap().contains("[0].secret"), "{err}");
    // A hook named like a subscription whose event types are not one message type (made,
    // or edited, through `/v1`) is not listed: XIQ's SDKs read the type into their enum.
    stack.create_hook(&t, &json!({"name": "xiq-forwarder", "url": "https://x.example/", "event_types": ["user.*"]})).await;
    let (_, list, _) = send(&stack, "GET", "/subscriptions/webhook", &t, None).await;
    assert_eq!(list.as_array().unwrap().len(), 1, "{list}");
    assert_eq!(list[0]["id"], sub["id"]);

    // Delivery: the example pointed at a real receiver; the log record as XIQ sends it,
    // signed with the subscription's secret.
    let doc = fixture("xiq-create-subscription.json").replace("https://webhook-endpoint-example-audits", &r.url("/xiq"));
    let (_, mine, _) = send(&stack, "POST", "/subscriptions/webhook", &t, Some(&doc)).await;
    let records: Value = serde_json::from_str(&fixture("xiq-user-logged-in.json")).unwrap();
    stack.publish(&t, &json!({"detail-type": "AUDIT_LOG_ALL", "source": "xiq", "detail": records[0]})).await;
    stack.publish(&t, &json!({"detail-type": "SMS_LOG_ALL", "source": "xiq", "detail": records[0]})).await;
    let got = r.wait_for(1, flavor.patience(WAIT)).await;
    let body: Value = serde_json::from_slice(&got[0].body).unwrap();
    assert_eq!(body, records, "the record in an array, as XIQ sends it");
    assert!(standard_signature_verifies(&got[0], b"00000000"));
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(r.received().len(), 1, "only the subscribed message type");

    // Delete by the numeric id: 202, and it is gone.
    let id = mine[0]["id"].as_i64().unwrap();
    assert_eq!(send(&stack, "DELETE", &format!("/subscriptions/webhook/{id}"), &t, None).await.0, 202);
    assert_eq!(send(&stack, "DELETE", &format!("/subscriptions/webhook/{id}"), &t, None).await.0, 404);
    assert_eq!(send(&stack, "GET", "/subscriptions/webhook", &t, None).await.1.as_array().unwrap().len(), 1);

    // An id as it was once given (the low 63 bits of the hook's id) still names it.
    let left = &send(&stack, "GET", "/subscriptions/webhook", &t, None).await.1[0];
    let hooks = stack.get("/v1/hooks", &t).await.body;
    let hook = hooks["hooks"].as_array().unwrap().iter().find(|h| h["description"] == "example-app-audits").unwrap();
    let ulid: hookbridge_core::ids::HookId = hook["id"].as_str().unwrap().parse().unwrap();
    assert_eq!(ulid.integer(), left["id"].as_i64().unwrap());
    assert_eq!(send(&stack, "DELETE", &format!("/subscriptions/webhook/{}", ulid.low_bits()), &t, None).await.0, 202);
    assert_eq!(send(&stack, "GET", "/subscriptions/webhook", &t, None).await.1, json!([]));
    stack.shutdown().await;
}
}

on_both_backends! {
async fn hooks_the_failure_rule_disabled_read_as_disabled_through_the_other_products_apis(flavor: Flavor) {
    let stack = TestStack::start_with(
        flavor,
        &[(settings::RETRY_SCHEDULE, "1s,1s,1s"), (settings::DISABLE_AFTER, "2s"), (settings::DISABLE_MIN_FAILURES, "3")],
    )
    .await;
    let r = Receiver::start().await;
    r.always(Reply::status(410));
    let t = stack.token("test", ALL_SCOPES);
    let kc = fixture("keycloak-create-webhook.json").replace("https://exxxxxxxxxxxxxx.m.pipedream.net", &r.url("/kc"));
    assert_eq!(send(&stack, "POST", "/realms/test/webhooks", &t, Some(&kc)).await.0, 201);
    let xiq = fixture("xiq-create-subscription.json").replace("https://webhook-endpoint-example-audits", &r.url("/xiq"));
    assert_eq!(send(&stack, "POST", "/subscriptions/webhook", &t, Some(&xiq)).await.0, 202);
    stack.publish(&t, &json!({"detail-type": "AUDIT_LOG_ALL", "source": "xiq", "detail": {"code": 1}})).await;
    stack.publish(&t, &json!({"detail-type": "access.LOGIN", "source": "keycloak", "detail": {"type": "LOGIN"}})).await;
    // Both answered 410: XIQ's was disabled by it at once. Keycloak's tries a 410 again,
    // as Keycloak does, so the failure rule disabled it, not the 410.
    let inactive = eventually(flavor.patience(WAIT), || async {
        let hooks = stack.get("/v1/hooks", &t).await.body["hooks"].clone();
        let all = hooks.as_array().unwrap().clone();
        (all.len() == 2 && all.iter().all(|h| h["destination_state"] == "INACTIVE")).then_some(all)
    })
    .await
    .expect("both disabled");
    let reason = |path: &str| {
        let h = inactive.iter().find(|h| h["url"].as_str().unwrap().ends_with(path)).unwrap();
        h["disabled_reason"].as_str().unwrap_or_default().to_owned()
    };
    assert!(reason("/xiq").contains("410"), "{inactive:?}");
    assert!(reason("/kc").starts_with("failing since"), "{inactive:?}");
    assert!(r.received().iter().filter(|g| g.uri.path() == "/kc").count() >= 3, "Keycloak's tried again");
    let (_, webhooks, _) = send(&stack, "GET", "/realms/test/webhooks", &t, None).await;
    let keycloak = webhooks.as_array().unwrap().iter().find(|w| w["url"].as_str().unwrap().ends_with("/kc")).unwrap().clone();
    assert_eq!(keycloak["enabled"], false, "{keycloak}");
    let (_, subs, _) = send(&stack, "GET", "/subscriptions/webhook", &t, None).await;
    assert_eq!(subs[0]["status"], "DISABLED", "{subs}");
    // Keycloak's way to turn it on again: a PUT with `enabled`.
    let id = keycloak["id"].as_str().unwrap();
    let on = send(&stack, "PUT", &format!("/realms/test/webhooks/{id}"), &t, Some(r#"{"enabled":"true"}"#)).await;
    assert_eq!(on.0, 204);
    assert_eq!(send(&stack, "GET", &format!("/realms/test/webhooks/{id}"), &t, None).await.1["enabled"], true);
    // A hook awaiting its challenge reads on: a client sending back what it read (as
    // Keycloak's admin console does) would otherwise switch it off for good.
    let waiting = stack
        .create_hook(&t, &json!({"name": "unproven", "url": r.url("/unproven"), "verification": {"required": true}}))
        .await;
    let path = format!("/realms/test/webhooks/{}", waiting["id"].as_str().unwrap());
    let read = send(&stack, "GET", &path, &t, None).await;
    assert_eq!(read.1["enabled"], true, "{}", read.1);
    assert_eq!(send(&stack, "PUT", &path, &t, Some(&read.1.to_string())).await.0, 204);
    assert_eq!(stack.get(&format!("/v1/hooks/{}", waiting["id"].as_str().unwrap()), &t).await.body["enabled"], true);
    stack.shutdown().await;
}
}

on_both_backends! {
async fn keycloak_signs_only_with_a_secret_the_client_set(flavor: Flavor) {
    let stack = TestStack::start(flavor).await;
    let r = Receiver::start().await;
    let t = stack.token("test", ALL_SCOPES);
    // No secret: no `X-Keycloak-Signature` keyed with one the client never saw.
    let body = json!({"url": r.url("/none"), "eventTypes": ["access.LOGIN"]}).to_string();
    assert_eq!(send(&stack, "POST", "/realms/test/webhooks", &t, Some(&body)).await.0, 201);
    // A hook made through `/v1`, given a secret through Keycloak's API: signed with it.
    let v1 = stack.create_hook(&t, &json!({"name": "made-by-v1", "url": r.url("/v1"), "event_types": ["access.LOGIN"], "payload": "detail"})).await;
    let put = send(&stack, "PUT", &format!("/realms/test/webhooks/{}", v1["id"].as_str().unwrap()), &t, Some(r#"{"secret":"A3jt6D8lz"}"#)).await;
    assert_eq!(put.0, 204);
    stack.publish(&t, &json!({"detail-type": "access.LOGIN", "source": "keycloak", "detail": {"type": "LOGIN"}})).await;
    let got = r.wait_for_paths(&["/none", "/v1"], flavor.patience(WAIT)).await;
    let at = |p: &str| got.iter().find(|g| g.uri.path() == p).unwrap_or_else(|| panic!("nothing at {p}"));
    assert_eq!(at("/none").header("x-keycloak-signature"), None);
    assert!(at("/none").header("webhook-signature").is_some(), "still signed the standard way");
    let expected = hex::encode(hmac_sha256(b"A3jt6D8lz", &at("/v1").body));
    assert_eq!(at("/v1").header("x-keycloak-signature"), Some(expected.as_str()));
    stack.shutdown().await;
}
}

on_both_backends! {
/// "`*` (send all events)" is all of Keycloak's events, not every product's: a webhook
/// made with it (or with no `eventTypes`) got the tenant's ExtremeCloud IQ log records too,
/// signed as Keycloak's.
async fn a_keycloak_webhook_for_all_events_gets_keycloaks_events_only(flavor: Flavor) {
    let stack = TestStack::start(flavor).await;
    let r = Receiver::start().await;
    let t = stack.token("test", ALL_SCOPES);
    for (path, doc) in [("/all", json!({"eventTypes": ["*"]})), ("/unsaid", json!({}))] {
        let mut doc = doc;
        doc["url"] = json!(r.url(path));
        let (status, _, headers) = send(&stack, "POST", "/realms/test/webhooks", &t, Some(&doc.to_string())).await;
        assert_eq!(status, 201);
        let location = headers["location"].to_str().unwrap().trim_start_matches(stack.base_url()).to_owned();
        let (_, read, _) = send(&stack, "GET", &location, &t, None).await;
        assert_eq!(read["eventTypes"], json!(["*"]), "{read}");
        let id = location.rsplit('/').next().unwrap();
        let hook = stack.get(&format!("/v1/hooks/{id}"), &t).await.body;
        assert_eq!(hook["event_types"], json!(["access.*", "admin.*"]), "{hook}");
    }
    stack.publish(&t, &json!({"detail-type": "AUDIT_LOG_ALL", "source": "xiq", "detail": {"code": 1}})).await;
    for kind in ["access.LOGIN", "admin.USER-CREATE"] {
        stack.publish(&t, &json!({"detail-type": kind, "source": "keycloak", "detail": {"type": kind}})).await;
    }
    r.wait_for(4, flavor.patience(WAIT)).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let got = r.received();
    let mut kinds: Vec<(String, String)> =
        got.iter().map(|g| (g.uri.path().to_owned(), g.json()["type"].as_str().unwrap_or("not keycloak's").to_owned())).collect();
    kinds.sort();
    assert_eq!(
        kinds,
        [("/all", "access.LOGIN"), ("/all", "admin.USER-CREATE"), ("/unsaid", "access.LOGIN"), ("/unsaid", "admin.USER-CREATE")]
            .map(|(p, k)| (p.to_owned(), k.to_owned()))
    );
    stack.shutdown().await;
}
}

on_both_backends! {
/// A client that lists Keycloak's types one by one: its user events' errors alone are 56
/// (`access.LOGIN_ERROR`, …), past the 50 patterns a hook could list.
async fn a_keycloak_webhook_may_list_every_type_keycloak_names(flavor: Flavor) {
    let stack = TestStack::start(flavor).await;
    let t = stack.token("test", ALL_SCOPES);
    let types: Vec<String> = (0..112).map(|i| format!("access.TYPE_{i}_ERROR")).collect();
    let body = json!({"url": "https://kc.example/", "eventTypes": types}).to_string();
    let (status, err, headers) = send(&stack, "POST", "/realms/test/webhooks", &t, Some(&body)).await;
    assert_eq!(status, 201, "{err}");
    let location = headers["location"].to_str().unwrap().trim_start_matches(stack.base_url()).to_owned();
    assert_eq!(send(&stack, "GET", &location, &t, None).await.1["eventTypes"], json!(types));
    let too_many: Vec<String> = (0..=hookbridge_core::hook::MAX_EVENT_TYPES).map(|i| format!("access.T{i}")).collect();
    let body = json!({"url": "https://kc.example/", "eventTypes": too_many}).to_string();
    let (status, err, _) = send(&stack, "POST", "/realms/test/webhooks", &t, Some(&body)).await;
    assert_eq!(status, 400, "{err}");
    assert!(err["error"].as_str().unwrap().starts_with("eventTypes: must list 1-"), "{err}");
    stack.shutdown().await;
}
}

on_both_backends! {
/// Phase Two's documentation spells a specific admin type `admin-USER-CREATE` beside
/// `admin.CLIENT-*`; its events are `admin.…`. A webhook written with the dash gets them,
/// and reads back as they are named. It was stored as written and matched nothing.
async fn keycloak_event_types_written_with_a_dash_get_their_events(flavor: Flavor) {
    let stack = TestStack::start(flavor).await;
    let r = Receiver::start().await;
    let t = stack.token("test", ALL_SCOPES);
    let body = json!({"url": r.url("/kc"), "eventTypes": ["admin-USER-CREATE", "access-LOG*"]}).to_string();
    let (status, _, headers) = send(&stack, "POST", "/realms/test/webhooks", &t, Some(&body)).await;
    assert_eq!(status, 201);
    let location = headers["location"].to_str().unwrap().trim_start_matches(stack.base_url()).to_owned();
    let (_, read, _) = send(&stack, "GET", &location, &t, None).await;
    assert_eq!(read["eventTypes"], json!(["admin.USER-CREATE", "access.LOG*"]), "{read}");
    for kind in ["admin.USER-CREATE", "access.LOGIN", "admin.USER-DELETE"] {
        stack.publish(&t, &json!({"detail-type": kind, "source": "keycloak", "detail": {"type": kind}})).await;
    }
    r.wait_for(2, flavor.patience(WAIT)).await;
    // Time for the one it must not get, published last, to arrive if it were sent. Each
    // delivery once, by its id: a copy (delivery is at least once) is the same one.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let kinds: std::collections::BTreeSet<(String, String)> = r
        .received()
        .iter()
        .map(|g| (g.json()["type"].as_str().unwrap().to_owned(), g.header("webhook-id").unwrap_or("").to_owned()))
        .collect();
    let kinds: Vec<&str> = kinds.iter().map(|(kind, _)| kind.as_str()).collect();
    assert_eq!(kinds, ["access.LOGIN", "admin.USER-CREATE"]);
    stack.shutdown().await;
}
}

on_both_backends! {
/// "Webhooks are sent using an automatic exponential backoff if there is not a 2xx
/// response": a webhook made through Keycloak's API tries a `404` again (a receiver not yet
/// deployed), where a hook made through `/v1` gives up on it at once.
async fn keycloak_webhooks_retry_every_answer_that_is_not_2xx(flavor: Flavor) {
    let stack = TestStack::start(flavor).await;
    let r = Receiver::start().await;
    let t = stack.token("test", ALL_SCOPES);
    let body = json!({"url": r.url("/kc"), "eventTypes": ["access.LOGIN"]}).to_string();
    let (status, _, headers) = send(&stack, "POST", "/realms/test/webhooks", &t, Some(&body)).await;
    assert_eq!(status, 201);
    let id = headers["location"].to_str().unwrap().rsplit('/').next().unwrap().to_owned();
    assert_eq!(stack.get(&format!("/v1/hooks/{id}"), &t).await.body["retry_non_2xx"], true);
    let v1 = stack.create_hook(&t, &json!({"name": "v1", "url": r.url("/v1"), "event_types": ["access.LOGIN"]})).await;
    assert_eq!(v1["retry_non_2xx"], false);
    r.script([Reply::status(404), Reply::status(404)]);
    r.always(Reply::status(200));
    stack.publish(&t, &json!({"detail-type": "access.LOGIN", "source": "keycloak", "detail": {"type": "LOGIN"}})).await;
    let got = r.wait_until(flavor.patience(WAIT), |got| got.iter().filter(|g| g.uri.path() == "/kc").count() == 2).await;
    assert_eq!(got.iter().filter(|g| g.uri.path() == "/v1").count(), 1, "the /v1 hook gave up on its 404");
    let delivered = eventually(flavor.patience(WAIT), || async {
        stack.deliveries(&t, &id, 1).await.into_iter().find(|d| d["status"] == "SUCCEEDED")
    })
    .await;
    assert!(delivered.is_some(), "the Keycloak webhook's delivery succeeded on its second attempt");
    let failed = stack.deliveries(&t, v1["id"].as_str().unwrap(), 1).await;
    assert_eq!(failed[0]["status"], "FAILED", "{failed:?}");
    stack.shutdown().await;
}
}

on_both_backends! {
async fn extremecloud_iq_subscriptions_are_all_checked_before_any_is_made(flavor: Flavor) {
    let stack = TestStack::start(flavor).await;
    let watch_bus = stack.watch_bus("hookbridge").await;
    let t = stack.token("acme", ALL_SCOPES);
    let bad = r#"[{"application":"a","url":"https://x.example/","message_type":"AUDIT_LOG_ALL"},{"application":"b","url":"not a url","message_type":"AUDIT_LOG_ALL"}]"#;
    let (status, err, _) = send(&stack, "POST", "/subscriptions/webhook", &t, Some(bad)).await;
    assert_eq!(status, 400, "{err}");
    assert!(err["error_message"].as_str().unwrap().contains("[1].url"), "{err}");
    assert_eq!(send(&stack, "GET", "/subscriptions/webhook", &t, None).await.1, json!([]));
    // Nothing was made and undone: no hook was told of, but the one made after.
    let good = r#"[{"application":"c","url":"https://x.example/","message_type":"AUDIT_LOG_ALL"}]"#;
    assert_eq!(send(&stack, "POST", "/subscriptions/webhook", &t, Some(good)).await.0, 202);
    let listed = stack.get("/v1/hooks", &t).await.body;
    let made: Vec<&str> = listed["hooks"].as_array().unwrap().iter().filter_map(|h| h["id"].as_str()).collect();
    assert_eq!(made.len(), 1, "{listed}");
    // Told of the one made after (told before it, any made and undone would come first),
    // and then of nothing more; a copy of its event (the bus is at least once) is the same.
    let mut told = stack.bus_events(watch_bus.as_ref(), &["hook.created"], flavor.patience(WAIT)).await;
    told.extend(stack.bus_events(watch_bus.as_ref(), &["none"], Duration::from_secs(2)).await);
    let about: std::collections::BTreeSet<&str> = told
        .iter()
        .filter(|e| e["detail-type"] == "hook.created")
        .filter_map(|e| e["detail"]["hook_id"].as_str())
        .collect();
    assert_eq!(about, std::collections::BTreeSet::from([made[0]]), "{told:?}");
    stack.shutdown().await;
}
}

on_both_backends! {
async fn the_other_products_apis_answer_errors_with_the_headers_they_call_for(flavor: Flavor) {
    let stack = TestStack::start(flavor).await;
    for path in ["/auth/realms/acme/webhooks", "/subscriptions/webhook"] {
        let (status, _, headers) = send(&stack, "GET", path, "not-a-token", None).await;
        assert_eq!(status, 401, "{path}");
        let challenge = headers.get("www-authenticate").and_then(|v| v.to_str().ok());
        assert_eq!(challenge, Some("Bearer"), "{path}: a 401 says how to authenticate");
    }
    // A method or route the product does not have is answered in its shape too.
    let t = stack.token("acme", ALL_SCOPES);
    let (status, body, _) = send(&stack, "GET", "/subscriptions/webhook/1", &t, None).await;
    assert_eq!((status, body["error_code"].as_str()), (405, Some("METHOD_NOT_ALLOWED")), "{body}");
    let (status, body, _) = send(&stack, "GET", "/subscriptions/nothing", &t, None).await;
    assert_eq!((status, body["error_code"].as_str()), (404, Some("NOT_FOUND")), "{body}");
    let (status, body, _) = send(&stack, "PATCH", "/auth/realms/acme/webhooks/x", &t, Some("{}")).await;
    assert_eq!(status, 405, "{body}");
    assert!(body["error"].is_string() && body.get("type").is_none(), "Keycloak's shape: {body}");
    stack.shutdown().await;
}
}

on_both_backends! {
async fn unifi_and_hypr_events_arrive_in_their_own_shapes(flavor: Flavor) {
    let stack = TestStack::start(flavor).await;
    let r = Receiver::start().await;
    let t = stack.token("acme", ALL_SCOPES);
    stack.create_hook(&t, &json!({"name": "unifi", "url": r.url("/unifi"), "event_types": ["user.session.*"], "payload": "detail"})).await;
    // A HYPR hook forwards one category (its "Event Type"): published as the event type,
    // as the catalog names them, so the hook can choose it.
    let hypr = stack.create_hook(&t, &json!({"name": "hypr", "url": r.url("/hypr"), "event_types": ["REGISTRATION"]})).await;
    assert_eq!(hypr["payload"], "envelope", "the default");
    let unifi: Value = serde_json::from_str(&fixture("unifi-event.json")).unwrap();
    stack.publish(&t, &json!({"detail-type": "user.session.start", "source": "uid", "detail": unifi})).await;
    let hypr_event = |category: &str, name: &str| {
        json!({"detail-type": category, "source": "hypr_event_hooks", "detail": {"data": {"eventName": name, "eventTags": category}}})
    };
    stack.publish(&t, &hypr_event("AUTHENTICATION", "FIDO2_AUTH")).await;
    stack.publish(&t, &hypr_event("REGISTRATION", "FIDO2_DEVICE_REG")).await;
    let got = r.wait_for_paths(&["/unifi", "/hypr"], WAIT).await;
    let at = |p: &str| got.iter().find(|g| g.uri.path() == p).unwrap_or_else(|| panic!("nothing at {p}"));
    assert_eq!(serde_json::from_slice::<Value>(&at("/unifi").body).unwrap(), unifi, "UniFi's event as it is");
    let envelope: Value = serde_json::from_slice(&at("/hypr").body).unwrap();
    assert_eq!(
        (envelope["detail-type"].as_str(), envelope["source"].as_str()),
        (Some("REGISTRATION"), Some("hypr_event_hooks"))
    );
    assert_eq!(envelope["detail"]["data"]["eventName"], "FIDO2_DEVICE_REG", "only the hook's category");
    assert_eq!(r.received().iter().filter(|g| g.uri.path() == "/hypr").count(), 1, "{:?}", r.received());
    for g in &got {
        assert!(g.header("webhook-signature").is_some(), "every format is signed");
    }
    stack.shutdown().await;
}
}

/// The other products' endpoints read bodies as the API does: the caller is checked before
/// the body is read (an anonymous 2.5 MB post is `401`, not a `413` after reading it), and
/// the cap is the API's 3 MiB, answered in the product's own error shape.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compat_endpoints_check_the_caller_first_and_cap_bodies_as_the_api_does() {
    let stack = TestStack::start(hookbridge_e2e::Flavor::Embedded).await;
    let t = stack.token("test", ALL_SCOPES);
    let padded = |bytes: usize| format!(r#"{{"url":"https://x.example/","pad":"{}"}}"#, "x".repeat(bytes));
    let big = padded(2_500_000);
    for path in ["/realms/test/webhooks", "/subscriptions/webhook"] {
        let head = answer_to_the_head_alone(&stack, path, "not-a-token", big.len()).await;
        assert!(head.starts_with("HTTP/1.1 401"), "{path}: {head}");
    }
    let (status, err, _) = send(&stack, "POST", "/realms/test/webhooks", &t, Some(&padded(3_200_000))).await;
    assert_eq!(status, 413);
    assert!(err["error"].as_str().is_some_and(|e| e.contains("larger than")), "{err}");
    // Under the cap (and over axum's default 2 MB), the body is read: fields Keycloak's
    // webhooks do not have are ignored, as before.
    let (status, _, _) = send(&stack, "POST", "/realms/test/webhooks", &t, Some(&big)).await;
    assert_eq!(status, 201);
    stack.shutdown().await;
}
