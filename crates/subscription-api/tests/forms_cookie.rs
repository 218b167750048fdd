//! The console's forms cookie (`hb_forms`), from which its forms' CSRF tokens are made: set
//! at sign-in, `SameSite=Lax` so an issuer's redirect back shows it, kept by a renewal, and
//! no use to a page that planted it (over plain http a page on another port can).

#![allow(clippy::unwrap_used)] // Tests fail loudly on purpose.

use axum::body::Body;
use axum::http::Request;
use common::{api_and_token, call, token};
use hookbridge_testkit::EmbeddedHarness;
use http_body_util::BodyExt;
use subscription_api::{Api, router};
use tower::ServiceExt;

#[allow(dead_code)] // each test binary uses part of it
mod common;

/// `method path` with `form`, the `cookies` given, posted from `site` (`Sec-Fetch-Site`):
/// the status, the `Set-Cookie`s and the page.
async fn send(
    api: &Api,
    method: &str,
    path: &str,
    form: &str,
    cookies: &str,
    site: &str,
) -> (u16, Vec<String>, String) {
    let req = Request::builder()
        .method(method)
        .uri(path)
        .header("content-type", "application/x-www-form-urlencoded")
        .header("sec-fetch-site", site)
        .header("host", "127.0.0.1:3000")
        .header("cookie", cookies)
        .body(Body::from(form.to_owned()))
        .unwrap();
    let resp = router(api.clone()).oneshot(req).await.unwrap();
    let status = resp.status().as_u16();
    let set = resp.headers().get_all("set-cookie").iter().map(|v| v.to_str().unwrap().to_owned()).collect();
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    (status, set, String::from_utf8_lossy(&body).into_owned())
}

/// The value a `Set-Cookie` of `name` gives, and the cookie's attributes.
fn set_cookie<'a>(set: &'a [String], name: &str) -> Option<(&'a str, &'a str)> {
    set.iter().find_map(|c| c.strip_prefix(&format!("{name}="))).map(|rest| rest.split_once(';').unwrap_or((rest, "")))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_forms_cookie_is_set_at_sign_in_kept_by_the_next_and_no_use_planted() {
    let h = EmbeddedHarness::start().await;
    let (api, t) = api_and_token(&h, "hooks:read hooks:write");

    let (status, set, _) = send(&api, "POST", "/console/login", &format!("token={t}"), "", "same-origin").await;
    assert_eq!(status, 303);
    let (forms, attributes) = set_cookie(&set, "hb_forms").expect("the forms cookie is set");
    assert!(forms.len() >= 32, "a random value: {forms}");
    for a in ["HttpOnly", "SameSite=Lax", "Max-Age=43200"] {
        assert!(attributes.contains(a), "{a}: {attributes}");
    }
    // Signed in again (a renewal, another token): the value stays, so open forms stay good.
    let renewed = token("hooks:read hooks:write");
    let (_, set, _) =
        send(&api, "POST", "/console/login", &format!("token={renewed}"), &format!("hb_forms={forms}"), "same-origin")
            .await;
    assert_eq!(set_cookie(&set, "hb_forms").map(|(v, _)| v), Some(forms), "kept");
    let (_, set, _) = send(&api, "POST", "/console/logout", "", &format!("hb_forms={forms}"), "same-origin").await;
    assert!(set_cookie(&set, "hb_forms").is_some_and(|(v, a)| v.is_empty() && a.contains("Max-Age=0")), "cleared");

    // A value a page on another port of 127.0.0.1 planted, known to it, and so the token
    // of the form it makes: its post, from another origin, changes nothing.
    let (status, hook) =
        call(&api, "POST", "/v1/hooks", &t, r#"{"name": "kept", "url": "https://example.com/h"}"#).await;
    assert_eq!(status, 201, "{hook}");
    let id = hook["id"].as_str().unwrap();
    let planted = format!("hb_session=t.{t}; hb_forms={}", "p".repeat(43));
    let (status, _, confirm) = send(&api, "GET", &format!("/console/hooks/{id}/delete"), "", &planted, "none").await;
    assert_eq!(status, 200);
    let csrf = confirm.split(r#"name="_csrf" value=""#).nth(1).and_then(|r| r.split('"').next()).unwrap();
    let form = format!("_csrf={csrf}");
    let (status, _, page) =
        send(&api, "POST", &format!("/console/hooks/{id}/delete"), &form, &planted, "same-site").await;
    assert_eq!(status, 403, "{page}");
    assert!(page.contains("did not come from this console"), "{page}");
    assert_eq!(call(&api, "GET", &format!("/v1/hooks/{id}"), &t, "").await.0, 200, "not deleted");
    // The same form from the console's own page is taken: the origin was what refused it.
    let (status, _, _) =
        send(&api, "POST", &format!("/console/hooks/{id}/delete"), &form, &planted, "same-origin").await;
    assert_eq!(status, 303);
    assert_eq!(call(&api, "GET", &format!("/v1/hooks/{id}"), &t, "").await.0, 404, "deleted");
}
