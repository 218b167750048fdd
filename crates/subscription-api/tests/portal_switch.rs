//! Portal sessions held apart. A portal link opened by someone signed in to another
//! tenant asks before it replaces their session: a link someone sent switched the visitor
//! to the sender's tenant in one click, and a hook they then set up, with their own
//! receiver's credentials, was the sender's to point elsewhere. And a session held to
//! some sites learns nothing of other sites' event types from the console's preview.

#![allow(clippy::unwrap_used)] // Tests fail loudly on purpose.

use axum::http::StatusCode;
use common::{api_and_token, call, console, token};
use hookbridge_core::settings::LOCAL_DEV_SECRET;
use hookbridge_testkit::EmbeddedHarness;
use subscription_api::{Api, Claims, JwtKey, mint_token};

#[allow(dead_code)] // each test binary uses part of it
mod common;

/// A portal link of `tenant`'s: its code.
async fn link_of(api: &Api, tenant: &str) -> String {
    link_to(api, tenant, "{}").await
}

/// A portal link of `tenant`'s, asked for with `body`: its code.
async fn link_to(api: &Api, tenant: &str, body: &str) -> String {
    let exp = chrono::Utc::now().timestamp() as u64 + 600;
    let claims = Claims { sub: "s".into(), tenant: tenant.into(), scope: "portal:create".into(), exp };
    let t = mint_token(&JwtKey::new(LOCAL_DEV_SECRET), &claims).unwrap();
    let (status, made) = call(api, "POST", "/v1/portal/sessions", &t, body).await;
    assert_eq!(status, 201, "{made}");
    made["url"].as_str().unwrap().split_once("code=").unwrap().1.to_owned()
}

/// Posts the link's page form, signed in with `session` (a cookie value) if any: the
/// status, the session cookie set (if one was), and the page.
async fn open(api: &Api, form: &str, session: Option<&str>) -> (StatusCode, Option<String>, String) {
    let page = console(api, "POST", "/console/portal", form, session).await;
    (page.status, page.header("set-cookie"), page.body)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_link_to_another_tenant_asks_before_it_ends_the_session() {
    let h = EmbeddedHarness::start().await;
    let (api, _) = api_and_token(&h, "hooks:read");
    let acme = format!("t.{}", token("hooks:read"));

    let code = link_of(&api, "mallory").await;
    for _ in 0..2 {
        let (status, set, page) = open(&api, &format!("code={code}"), Some(&acme)).await;
        assert_eq!((status, set), (StatusCode::OK, None), "asked, signed in as before: {page}");
        assert!(page.contains("someone else") && page.contains("mallory") && page.contains("acme"), "{page}");
        assert!(page.contains(r#"name="switch" value="yes""#), "{page}");
    }
    // The answer: the link, kept meanwhile, opens.
    let (status, set, page) = open(&api, &format!("code={code}&switch=yes"), Some(&acme)).await;
    assert_eq!(status, StatusCode::OK, "{page}");
    assert!(set.is_some_and(|c| c.starts_with("hb_session=p.")), "a portal session");

    // One site's session is held apart from another's as another tenant's is.
    let site_a = link_to(&api, "acme", r#"{"sites": ["a"]}"#).await;
    let (_, set, _) = open(&api, &format!("code={site_a}"), None).await;
    let session_a = set.unwrap().split(';').next().unwrap().trim_start_matches("hb_session=").to_owned();
    let site_b = link_to(&api, "acme", r#"{"sites": ["b"]}"#).await;
    let (status, set, page) = open(&api, &format!("code={site_b}"), Some(&session_a)).await;
    assert_eq!((status, set), (StatusCode::OK, None), "asked: {page}");
    assert!(page.contains("acme (sites a)") && page.contains("acme (sites b)"), "{page}");

    // Sites `a` and `b` are not one site named `a, b`, though the names read alike.
    let sites_a_b = link_to(&api, "acme", r#"{"sites": ["b", "a"]}"#).await;
    let (_, set, _) = open(&api, &format!("code={sites_a_b}"), None).await;
    let session_a_b = set.unwrap().split(';').next().unwrap().trim_start_matches("hb_session=").to_owned();
    let one_site = link_to(&api, "acme", r#"{"sites": ["a, b"]}"#).await;
    let (status, set, page) = open(&api, &format!("code={one_site}"), Some(&session_a_b)).await;
    assert_eq!((status, set), (StatusCode::OK, None), "asked: {page}");
    assert!(page.contains("acme (sites a, b)") && page.contains("acme (sites &quot;a, b&quot;)"), "{page}");
    let same_sites = link_to(&api, "acme", r#"{"sites": ["a", "b", "a"]}"#).await;
    let (_, set, page) = open(&api, &format!("code={same_sites}"), Some(&session_a_b)).await;
    assert!(set.is_some_and(|c| c.starts_with("hb_session=p.")), "the same sites open at once: {page}");

    // A link of the tenant signed in to, or opened signed out, opens at once.
    for (tenant, session) in [("acme", Some(acme.as_str())), ("mallory", None)] {
        let code = link_of(&api, tenant).await;
        let (_, set, page) = open(&api, &format!("code={code}"), session).await;
        assert!(set.is_some_and(|c| c.starts_with("hb_session=p.")), "{tenant}: {page}");
    }
}

/// A browser whose sign-in through the issuer lapsed with its token (its session cookie
/// gone, the issuer's marker kept) is asked too: the console would renew that session on
/// its next page, and the link took its place unasked.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_link_opened_after_a_sign_in_lapsed_asks_too() {
    use axum::body::Body;
    use http_body_util::BodyExt;
    use tower::ServiceExt;
    let h = EmbeddedHarness::start().await;
    let (api, _) = api_and_token(&h, "hooks:read");
    let code = link_of(&api, "mallory").await;
    let open_with = |form: String, cookie: &'static str| {
        let request = axum::http::Request::post("/console/portal")
            .header("content-type", "application/x-www-form-urlencoded")
            .header("sec-fetch-site", "same-origin")
            .header("host", "127.0.0.1:3000")
            .header("cookie", cookie)
            .body(Body::from(form))
            .unwrap();
        let api = api.clone();
        async move {
            let resp = subscription_api::router(api).oneshot(request).await.unwrap();
            let set = resp.headers().get("set-cookie").map(|v| v.to_str().unwrap().to_owned());
            let page = resp.into_body().collect().await.unwrap().to_bytes();
            (set, String::from_utf8_lossy(&page).into_owned())
        }
    };

    let (set, page) = open_with(format!("code={code}"), "hb_issuer=1765000000").await;
    assert_eq!(set, None, "asked: {page}");
    assert!(page.contains("signed in to the console in this browser before") && page.contains("mallory"), "{page}");
    assert!(page.contains(r#"name="switch" value="yes""#), "{page}");
    let (set, page) = open_with(format!("code={code}&switch=yes"), "hb_issuer=1765000000").await;
    assert!(set.is_some_and(|c| c.starts_with("hb_session=p.")), "opened when answered: {page}");

    // Signed out (the marker cleared), or a marker that is not the console's: opened at
    // once, as before.
    for marker in ["hb_issuer=", "hb_issuer=yes"] {
        let code = link_of(&api, "mallory").await;
        let (set, page) = open_with(format!("code={code}"), marker).await;
        assert!(set.is_some_and(|c| c.starts_with("hb_session=p.")), "{marker}: {page}");
    }
}

/// `GET path` in the console with the session `cookie`: the body.
async fn console_get(api: &Api, path: &str, cookie: &str) -> String {
    let page = console(api, "GET", path, "", Some(cookie)).await;
    assert_eq!(page.status, StatusCode::OK);
    page.body
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_held_to_sites_previews_only_declared_event_types() {
    let h = EmbeddedHarness::start().await;
    let (api, writer) = api_and_token(&h, "hooks:read hooks:write");
    let (status, body) = call(&api, "PUT", "/v1/event-types/order.paid", &writer, "{}").await;
    assert!((200..300).contains(&status), "{status} {body}");
    // Another customer's events went through.
    let tenant = "acme".parse().unwrap();
    hookbridge_testkit::Harness::backend(&h).events.record_seen(&tenant, &["custB.invoice"]).await.unwrap();

    let whole = console_get(&api, "/console/preview?pattern=*", &format!("t.{writer}")).await;
    assert!(whole.contains("order.paid") && whole.contains("custB.invoice"), "{whole}");
    let code = link_to(&api, "acme", r#"{"sites": ["a"]}"#).await;
    let (_, set, _) = open(&api, &format!("code={code}"), None).await;
    let session = set.unwrap().split(';').next().unwrap().trim_start_matches("hb_session=").to_owned();
    let held = console_get(&api, "/console/preview?pattern=*", &session).await;
    assert!(held.contains("order.paid") && !held.contains("custB.invoice"), "{held}");
}
