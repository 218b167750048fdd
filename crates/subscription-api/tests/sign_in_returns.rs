//! A console page asked for without a session (its session ended under it: an identity
//! provider's tokens last five minutes) sends the browser to the sign-in, and the sign-in
//! brings it back to that page, not to the hook list; only to a page of the console's own.
//! And a page's ids are ids: an escaped `?` or `/` in one named another API call.

#![allow(clippy::unwrap_used)] // Tests fail loudly on purpose.

use common::{api_and_token, console, token};
use hookbridge_core::settings::LOCAL_DEV_SECRET;
use hookbridge_testkit::EmbeddedHarness;
use subscription_api::{Api, Claims, JwtKey, mint_token};

#[allow(dead_code)] // each test binary uses part of it
mod common;

/// The status, `Location` and page of `method path` with `form`, signed in with `session`.
async fn ask(api: &Api, method: &str, path: &str, form: &str, session: Option<&str>) -> (u16, String, String) {
    let page = console(api, method, path, form, session).await;
    (page.status.as_u16(), page.header("location").unwrap_or_default(), page.body)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_page_asked_for_signed_out_is_where_the_sign_in_returns() {
    let h = EmbeddedHarness::start().await;
    let (api, _) = api_and_token(&h, "hooks:read");
    let page = "/console/hooks/hk_01/read?after=x&limit=5";

    // A session whose token has expired.
    let claims = Claims {
        sub: "s".into(),
        tenant: "acme".into(),
        scope: "hooks:read".into(),
        exp: chrono::Utc::now().timestamp() as u64 - 120,
    };
    let expired = format!("t.{}", mint_token(&JwtKey::new(LOCAL_DEV_SECRET), &claims).unwrap());
    let back = "/console/login?to=%2Fconsole%2Fhooks%2Fhk_01%2Fread%3Fafter%3Dx%26limit%3D5";
    for method in ["GET", "HEAD"] {
        let (status, location, _) = ask(&api, method, page, "", Some(&expired)).await;
        assert_eq!((status, location.as_str()), (303, back), "{method}");
    }
    let location = back.to_owned();
    let (status, _, login) = ask(&api, "GET", &location, "", None).await;
    assert_eq!(status, 200);
    assert!(login.contains(r#"name="to" value="/console/hooks/hk_01/read?after=x&amp;limit=5""#), "{login}");

    let form = format!("token={}&to=%2Fconsole%2Fhooks%2Fhk_01%2Fread%3Fafter%3Dx%26limit%3D5", token("hooks:read"));
    // A token refused first: the page asked for is still where the next sign-in returns.
    let refused = "token=not-a-token&to=%2Fconsole%2Fhooks%2Fhk_01%2Fread%3Fafter%3Dx%26limit%3D5";
    let (status, _, again) = ask(&api, "POST", "/console/login", refused, None).await;
    assert_eq!(status, 401);
    assert!(again.contains(r#"name="to" value="/console/hooks/hk_01/read?after=x&amp;limit=5""#), "{again}");
    let (status, location, _) = ask(&api, "POST", "/console/login", &form, None).await;
    assert_eq!((status, location.as_str()), (303, page), "back to the page asked for");
    // The sign-in page names its page once; a query naming two is not refused.
    let (status, _, twice) =
        ask(&api, "GET", "/console/login?to=%2Fconsole%2Fhooks%2Fa&to=%2Fconsole%2Fhooks%2Fb", "", None).await;
    assert_eq!(status, 200);
    assert!(twice.contains(r#"name="to" value="/console/hooks/a""#), "{twice}");

    // With nowhere to return to, the hook list, as before.
    let (status, location, _) = ask(&api, "GET", "/console/hooks", "", None).await;
    assert_eq!((status, location.as_str()), (303, "/console/login"));
    let (status, location, _) =
        ask(&api, "POST", "/console/login", &format!("token={}", token("hooks:read")), None).await;
    assert_eq!((status, location.as_str()), (303, "/console/hooks"));
    // A form posted signed out is not carried through the sign-in.
    let (status, location, _) = ask(&api, "POST", "/console/hooks/new", "name=x", None).await;
    assert_eq!((status, location.as_str()), (303, "/console/login"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_sign_in_returns_only_to_the_consoles_own_pages() {
    let h = EmbeddedHarness::start().await;
    let (api, _) = api_and_token(&h, "hooks:read");
    for to in [
        "https://elsewhere.example/",
        "//elsewhere.example/console/hooks",
        "/v1/hooks",
        "/console",
        "/console/logout",
        "/console/login?to=%2Fconsole%2Fhooks",
        "/console/callback?code=x",
        "/console/portal",
        "/console/hooks\r\nLocation: https://elsewhere.example/",
        "/console/hooks\u{1}",
        "/console/hooks\tx",
        "/console/../v1/hooks",
        "/console/%2e%2e/v1/hooks",
        "/console/%2E%2E/console/login?to=%2Fconsole%2Fhooks%2Fx",
        "/console/./portal?code=theirs",
        "/console/hooks/../callback",
    ] {
        let form = format!("token={}&to={}", token("hooks:read"), url_encoded(to));
        let (status, location, _) = ask(&api, "POST", "/console/login", &form, None).await;
        assert_eq!((status, location.as_str()), (303, "/console/hooks"), "{to}");
    }
}

fn url_encoded(s: &str) -> String {
    url::form_urlencoded::byte_serialize(s.as_bytes()).collect()
}

/// A path with steps the browser takes is followed to where it leads, within the console.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_return_path_is_resolved_as_the_browser_would() {
    let h = EmbeddedHarness::start().await;
    let (api, _) = api_and_token(&h, "hooks:read");
    let form = format!("token={}&to={}", token("hooks:read"), url_encoded("/console/hooks/x/../hk_01/read?a=1"));
    let (status, location, _) = ask(&api, "POST", "/console/login", &form, None).await;
    assert_eq!((status, location.as_str()), (303, "/console/hooks/hk_01/read?a=1"));
}

/// A console page's ids hold only what ids hold: one with an escaped `?` or `/` is no page.
/// Each id is pasted into the API call the page makes, where `hk%3Fx` read the list of
/// deliveries of a hook named `hk` with a query of its own.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_page_whose_id_is_not_an_id_is_not_found() {
    let h = EmbeddedHarness::start().await;
    let (api, _) = api_and_token(&h, "hooks:read hooks:write");
    let session = format!("t.{}", token("hooks:read hooks:write"));
    for (method, path) in [
        ("GET", "/console/hooks/H1%3Fx/read"),
        ("GET", "/console/hooks/H1%3Fx"),
        ("GET", "/console/hooks/H1%2Fdeliveries/read"),
        ("GET", "/console/hooks/H1/deliveries/D1%3Fafter%3Dx"),
        ("POST", "/console/hooks/H1%2F..%2Fx/delete"),
    ] {
        let (status, _, page) = ask(&api, method, path, "", Some(&session)).await;
        assert_eq!(status, 404, "{method} {path}: {page}");
        assert!(page.contains("Not found"), "{page}");
    }
    // An id that is one, of no hook, is the API's own `404`, as before.
    let (status, _, page) = ask(&api, "GET", "/console/hooks/hk_01-x", "", Some(&session)).await;
    assert_eq!(status, 404, "{page}");
    assert!(page.contains("no such hook") && !page.contains("Not found"), "the hook page's own: {page}");
    let (status, _, page) = ask(&api, "GET", "/console/hooks", "", Some(&session)).await;
    assert_eq!(status, 200, "{page}");
}
