//! The event-type catalog: declared types (with a schema publishing is held to), types seen
//! on the bus, a pattern's live preview, and the seed products' catalogs loaded in one call.

use std::time::Duration;

use hookbridge_e2e::{ALL_SCOPES, TestStack, eventually, on_both_backends};
use serde_json::{Value, json};

fn names(list: &Value) -> Vec<String> {
    list["event_types"].as_array().unwrap().iter().map(|t| t["name"].as_str().unwrap().to_owned()).collect()
}

on_both_backends! {
async fn a_declared_schema_holds_every_publish_of_its_type(flavor: Flavor) {
    let stack = TestStack::start(flavor).await;
    let t = stack.token("acme", ALL_SCOPES);
    let schema = json!({"type": "object", "required": ["user"], "properties": {"user": {"type": "object",
        "required": ["id"], "properties": {"id": {"type": "string"}}}}});
    let put = stack.put("/v1/event-types/user.login", &t, &json!({"description": "A user signed in", "schema": schema})).await;
    assert_eq!(put.status, 200, "{}", put.body);
    assert_eq!((put.body["declared"].as_bool(), put.body["schema"].clone()), (Some(true), schema.clone()));

    // Conforming events pass (the routing keys the platform adds are not the producer's).
    let ok = json!({"detail-type": "user.login", "source": "idp", "detail": {"user": {"id": "u-1"}}});
    assert_eq!(stack.post("/v1/events", &t, &ok).await.status, 202);
    let bad = json!([ok, {"detail-type": "user.login", "source": "idp", "detail": {"user": {"id": 7}}},
                     {"detail-type": "other", "source": "idp", "detail": {}}]);
    let refused = stack.post("/v1/events", &t, &bad).await;
    assert_eq!(refused.status, 400, "{}", refused.body);
    assert_eq!(refused.body["errors"][0]["field"], "[1].detail.user.id");
    let missing = stack.post("/v1/events", &t, &json!({"detail-type": "user.login", "source": "idp", "detail": {}})).await;
    assert_eq!(missing.status, 400);
    assert_eq!(missing.body["errors"][0]["field"], "detail");
    // A key given twice: the schema would check the last, a receiver may read the first.
    let twice = br#"{"detail-type": "user.login", "source": "idp", "detail": {"user": {"id": 7, "id": "u-1"}}}"#;
    let auth = format!("Bearer {t}");
    let headers = [("authorization", auth.as_str()), ("content-type", "application/json")];
    let refused = stack.raw("POST", "/v1/events", &headers, twice.to_vec()).await;
    assert_eq!(refused.status, 400, "{}", refused.body);
    assert_eq!(refused.body["errors"][0]["field"], "detail");
    assert!(refused.body["errors"][0]["message"].as_str().unwrap().contains("`id` is given twice"), "{}", refused.body);

    // A recursive schema with two branches per level: listing why a deep `detail` fails
    // would build 2^40 failures; it fails as a whole, and what passes still passes.
    let tree = json!({"type": "object", "properties": {"a": {"$ref": "#/$defs/n"}}, "$defs": {"n": {"anyOf": [
        {"type": "array", "items": {"$ref": "#/$defs/n"}}, {"type": "array", "items": {"$ref": "#/$defs/n"}, "maxItems": 9}]}}});
    assert_eq!(stack.put("/v1/event-types/tree", &t, &json!({"schema": tree})).await.status, 200);
    let mut deep = json!("leaf");
    for _ in 0..40 {
        deep = json!([deep]);
    }
    let refused = stack.post("/v1/events", &t, &json!({"detail-type": "tree", "source": "idp", "detail": {"a": deep}})).await;
    assert_eq!((refused.status.as_u16(), &refused.body["errors"][0]["field"]), (400, &json!("detail")), "{}", refused.body);
    let fits = json!({"detail-type": "tree", "source": "idp", "detail": {"a": [[[]]]}});
    assert_eq!(stack.post("/v1/events", &t, &fits).await.status, 202);

    // A schema that is not one is refused, naming the field; another tenant is unaffected.
    let invalid = stack.put("/v1/event-types/x", &t, &json!({"schema": {"type": 12}})).await;
    assert_eq!((invalid.status.as_u16(), invalid.body["errors"][0]["field"].as_str()), (400, Some("schema")));
    let other = stack.token("globex", ALL_SCOPES);
    assert_eq!(stack.post("/v1/events", &other, &json!({"detail-type": "user.login", "source": "idp", "detail": {}})).await.status, 202);

    // Forgotten, the schema no longer applies.
    assert_eq!(stack.delete("/v1/event-types/user.login", &t).await.status, 204);
    assert_eq!(stack.delete("/v1/event-types/user.login", &t).await.status, 404);
    assert_eq!(stack.post("/v1/events", &t, &json!({"detail-type": "user.login", "source": "idp", "detail": {}})).await.status, 202);
    // A name no type could have is not one declared (DynamoDB would refuse the key).
    assert_eq!(stack.delete(&format!("/v1/event-types/{}", "a".repeat(1100)), &t).await.status, 404);

    // A name is a path segment, which API Gateway decodes before the API sees it: one that
    // would not arrive as written cannot be declared, and a query (what `a%3Fb` arrives as)
    // is refused rather than the shorter name forgotten.
    let odd = stack.put("/v1/event-types/a%2Fb", &t, &json!({"description": "slashed"})).await;
    assert_eq!((odd.status.as_u16(), &odd.body["errors"][0]["field"]), (400, &json!("name")), "{}", odd.body);
    assert_eq!(stack.put("/v1/event-types/a", &t, &json!({"description": "kept"})).await.status, 200);
    let bearer = format!("Bearer {t}");
    let queried = stack.raw("DELETE", "/v1/event-types/a?b", &[("authorization", &bearer)], Vec::new()).await;
    assert_eq!((queried.status.as_u16(), &queried.body["errors"][0]["field"]), (400, &json!("query")));
    assert_eq!(stack.delete("/v1/event-types/a", &t).await.status, 204, "a was kept");

    // Types named like the routes beside them are types too.
    for name in ["match", "catalogs"] {
        let put = stack.put(&format!("/v1/event-types/{name}"), &t, &json!({"description": "named oddly"})).await;
        assert_eq!((put.status.as_u16(), put.body["name"].as_str()), (200, Some(name)), "{}", put.body);
        assert_eq!(stack.delete(&format!("/v1/event-types/{name}"), &t).await.status, 204, "{name}");
        assert_eq!(stack.delete(&format!("/v1/event-types/{name}"), &t).await.status, 404, "{name}");
    }
    stack.shutdown().await;
}
}

on_both_backends! {
async fn a_tenants_declared_schemas_are_bounded_together(flavor: Flavor) {
    let stack = TestStack::start(flavor).await;
    let t = stack.token("acme", ALL_SCOPES);
    // Schemas of about 63 KiB: sixty-five fit in 4 MiB, the sixty-sixth does not.
    let schema = |i: usize| json!({"type": "object", "description": format!("{i:03}{}", "d".repeat(63 * 1024))});
    let per = schema(0).to_string().len();
    let fit = 4 * 1024 * 1024 / per;
    for i in 0..fit {
        let put = stack.put(&format!("/v1/event-types/t.{i}"), &t, &json!({"schema": schema(i)})).await;
        assert_eq!(put.status, 200, "{i}: {}", put.body);
    }
    let over = stack.put(&format!("/v1/event-types/t.{fit}"), &t, &json!({"schema": schema(fit)})).await;
    assert_eq!(over.status, 422, "{}", over.body);
    assert!(over.body["detail"].as_str().unwrap().contains("together"), "{}", over.body);
    // A type declared again is counted once; one without a schema costs little.
    assert_eq!(stack.put("/v1/event-types/t.0", &t, &json!({"schema": schema(0)})).await.status, 200);
    assert_eq!(stack.put("/v1/event-types/plain", &t, &json!({"description": "no schema"})).await.status, 200);
    // Descriptions count as the listing writes them: 1,024 control characters are 6 KiB
    // there, and the 61 KiB left hold about ten of them, not twenty.
    let wordy = json!({"description": "\u{1}".repeat(1024)});
    let mut declared = 0;
    for i in 0..20 {
        let put = stack.put(&format!("/v1/event-types/wordy.{i}"), &t, &wordy).await;
        if put.status == 422 {
            assert!(put.body["detail"].as_str().unwrap().contains("descriptions"), "{}", put.body);
            break;
        }
        assert_eq!(put.status, 200, "{}", put.body);
        declared += 1;
    }
    assert!((1..20).contains(&declared), "{declared} descriptions of 6 KiB fitted in what the schemas left");
    // A catalog's descriptions count too. Filled to the last few bytes (with shorter and
    // shorter descriptions, each refused once it no longer fits), none of its types is
    // declared, whatever its descriptions come to.
    for len in [1000, 100, 10] {
        for i in 0.. {
            let put = stack.put(&format!("/v1/event-types/fill.{len}.{i}"), &t, &json!({"description": "x".repeat(len)})).await;
            if put.status == 422 {
                break;
            }
            assert_eq!(put.status, 200, "{}", put.body);
        }
    }
    let before = stack.get("/v1/event-types", &t).await.body["event_types"].as_array().unwrap().len();
    let loaded = stack.post("/v1/event-types/catalogs/keycloak", &t, &json!({})).await;
    assert_eq!(loaded.status, 422, "{}", loaded.body);
    assert!(loaded.body["detail"].as_str().unwrap().contains("together"), "{}", loaded.body);
    assert_eq!(stack.get("/v1/event-types", &t).await.body["event_types"].as_array().unwrap().len(), before);
    let listed = stack.get("/v1/event-types", &t).await;
    assert_eq!(listed.status, 200);
    assert!(listed.body.to_string().len() < 5 * 1024 * 1024);

    // Counted as Lambda answers them too, where the listing is a JSON string: a schema of
    // quotes (each `\"` in the listing) takes four bytes a quote there, and 64 of the
    // largest would have been 8 MiB, past the 6 MB a function may answer.
    let q = stack.token("quoted", ALL_SCOPES);
    let quotes = |i: usize| json!({"const": format!("{i:03}{}", "\"".repeat(32 * 1024 - 16))});
    let mut fitted = 0;
    for i in 0..64 {
        let put = stack.put(&format!("/v1/event-types/q.{i}"), &q, &json!({"schema": quotes(i)})).await;
        if put.status == 422 {
            break;
        }
        assert_eq!(put.status, 200, "{i}: {}", put.body);
        fitted += 1;
    }
    assert!((1..64).contains(&fitted), "{fitted} schemas of 64 KiB of quotes fitted");
    let listed = stack.get("/v1/event-types", &q).await;
    assert_eq!(listed.status, 200);
    let answered = serde_json::to_string(&listed.body.to_string()).unwrap().len();
    assert!(answered <= 6_000_000, "the listing takes {answered} bytes in Lambda's answer");
    stack.shutdown().await;
}
}

on_both_backends! {
async fn a_repeat_gets_its_first_answer_whatever_schema_was_declared_since(flavor: Flavor) {
    let stack = TestStack::start(flavor).await;
    let t = stack.token("acme", ALL_SCOPES);
    let body = r#"{"id": "login-1", "detail-type": "user.login", "source": "idp", "detail": {}}"#;
    let bearer = format!("Bearer {t}");
    let keyed = [("authorization", bearer.as_str()), ("content-type", "application/json"), ("idempotency-key", "k-1")];
    let first = stack.raw("POST", "/v1/events", &keyed, body.as_bytes().to_vec()).await;
    assert_eq!(first.status, 202, "{}", first.body);
    // Since then, a schema the event does not meet.
    let schema = json!({"type": "object", "required": ["user"]});
    assert_eq!(stack.put("/v1/event-types/user.login", &t, &json!({"schema": schema})).await.status, 200);
    // The same key and body: the first answer, not a 400 of today's schema.
    let again = stack.raw("POST", "/v1/events", &keyed, body.as_bytes().to_vec()).await;
    assert_eq!((again.status.as_u16(), &again.body), (202, &first.body));
    assert_eq!(again.headers.get("idempotent-replayed").and_then(|v| v.to_str().ok()), Some("true"));
    // Without the key, the event's own id: answered as published, with the id it got then.
    let by_id = stack.post_raw("/v1/events", &t, body).await;
    assert_eq!(by_id.status, 202, "{}", by_id.body);
    assert_eq!(by_id.body["events"][0]["id"], first.body["events"][0]["id"]);
    // A new event of the type is held to the schema.
    let new = stack.post_raw("/v1/events", &t, &body.replace("login-1", "login-2")).await;
    assert_eq!(new.status, 400, "{}", new.body);
    assert_eq!(new.body["errors"][0]["field"], "detail");
    stack.shutdown().await;
}
}

on_both_backends! {
async fn seen_types_catalogs_and_the_pattern_preview(flavor: Flavor) {
    let stack = TestStack::start(flavor).await;
    let t = stack.token("acme", ALL_SCOPES);
    stack.publish(&t, &json!({"detail-type": "device.registered", "source": "mdm", "detail": {}})).await;
    let seen = eventually(flavor.patience(Duration::from_secs(20)), || async {
        let list = stack.get("/v1/event-types", &t).await.body;
        names(&list).contains(&"device.registered".to_owned()).then_some(list)
    })
    .await
    .expect("the published type is seen");
    let entry = seen["event_types"].as_array().unwrap().iter().find(|e| e["name"] == "device.registered").unwrap();
    assert_eq!(entry["declared"], false);
    assert!(entry["last_seen_at"].is_string());
    assert!(names(&stack.get("/v1/event-types", &stack.token("globex", ALL_SCOPES)).await.body).is_empty());

    let catalogs = stack.get("/v1/event-types/catalogs", &t).await.body;
    let offered: Vec<&str> = catalogs["catalogs"].as_array().unwrap().iter().map(|c| c["name"].as_str().unwrap()).collect();
    assert_eq!(offered, ["keycloak", "extremecloud-iq", "unifi", "hypr"]);
    let loaded = stack.post("/v1/event-types/catalogs/keycloak", &t, &json!({})).await;
    assert_eq!(loaded.status, 200, "{}", loaded.body);
    let declared = loaded.body["declared"].as_u64().unwrap();
    assert!(declared > 20);
    let again = stack.post("/v1/event-types/catalogs/keycloak", &t, &json!({})).await;
    assert_eq!((again.body["declared"].as_u64(), again.body["already_declared"].as_u64()), (Some(0), Some(declared)));
    assert_eq!(stack.post("/v1/event-types/catalogs/nope", &t, &json!({})).await.status, 404);
    assert_eq!(stack.post("/v1/event-types/catalogs/extremecloud-iq", &t, &json!({})).await.body["declared"], 9);

    // The preview: Keycloak's own wildcard examples, against everything known.
    let m = stack.get("/v1/event-types/match?pattern=admin.CLIENT-*", &t).await.body;
    assert_eq!(m["matches"], json!(["admin.CLIENT-CREATE", "admin.CLIENT-DELETE", "admin.CLIENT-UPDATE"]));
    let m = stack.get("/v1/event-types/match?pattern=*_LOG_ALL", &t).await.body;
    assert_eq!(m["matches"].as_array().unwrap().len(), 7);
    let m = stack.get("/v1/event-types/match?pattern=device.*", &t).await.body;
    assert_eq!(m["matches"], json!(["device.registered"]));
    let bad = stack.get("/v1/event-types/match?pattern=a%09b", &t).await;
    assert_eq!((bad.status.as_u16(), bad.body["errors"][0]["field"].as_str()), (400, Some("pattern")));
    stack.shutdown().await;
}
}

on_both_backends! {
/// Events a declared schema refuses are answered `400` and charged nothing: only events
/// that would be published count against the tenant's rate. Charged first, a producer's
/// bad events used up its burst, and the 400 that says what is wrong became a 429.
async fn events_a_schema_refuses_are_not_charged_to_the_publish_rate(flavor: Flavor) {
    let stack = TestStack::start_with(
        flavor,
        &[("HOOKBRIDGE_TENANT_PUBLISH_RATE", "1"), ("HOOKBRIDGE_TENANT_PUBLISH_BURST", "3")],
    )
    .await;
    let t = stack.token("acme", ALL_SCOPES);
    let schema = json!({"type": "object", "required": ["user"]});
    assert_eq!(stack.put("/v1/event-types/user.login", &t, &json!({"schema": schema})).await.status, 200);
    let event = |detail: Value| json!({"detail-type": "user.login", "source": "idp", "detail": detail});
    for _ in 0..6 {
        let refused = stack.post("/v1/events", &t, &event(json!({}))).await;
        assert_eq!((refused.status.as_u16(), &refused.body["errors"][0]["field"]), (400, &json!("detail")), "{}", refused.body);
    }
    let burst = json!([event(json!({"user": 1})), event(json!({"user": 2})), event(json!({"user": 3}))]);
    let published = stack.post("/v1/events", &t, &burst).await;
    assert_eq!(published.status, 202, "the whole burst is left: {}", published.body);
    stack.shutdown().await;
}
}
