//! What these tests share: the API over a backend (or over ports some of which a test
//! replaces), a token for tenant `acme`, and a call (or a console form) through the router.

use axum::body::Body;
use axum::http::Request;
use hookbridge_core::hook::NetworkPolicy;
use hookbridge_core::settings::LOCAL_DEV_SECRET;
use hookbridge_testkit::Harness;
use http_body_util::BodyExt;
use subscription_api::{Api, ApiPorts, ApiSettings, Claims, JwtKey, mint_token, router};
use tower::ServiceExt;

/// The API over `h`'s backend, and a token of tenant `acme` with `scope`.
pub fn api_and_token(h: &dyn Harness, scope: &str) -> (Api, String) {
    (api_on(ApiPorts::of(h.backend())), token(scope))
}

/// The API over `ports`, with the local settings.
pub fn api_on(ports: ApiPorts) -> Api {
    api_with(ports, |_| {})
}

/// The API over `ports`, with the local settings as `change` leaves them.
pub fn api_with(ports: ApiPorts, change: impl FnOnce(&mut ApiSettings)) -> Api {
    let mut settings = ApiSettings::local(JwtKey::new(LOCAL_DEV_SECRET), NetworkPolicy::default());
    change(&mut settings);
    Api::new(ports, settings)
}

/// A token of tenant `acme` with `scope`, for ten minutes.
pub fn token(scope: &str) -> String {
    let exp = chrono::Utc::now().timestamp() as u64 + 600;
    let claims = Claims { sub: "s".into(), tenant: "acme".into(), scope: scope.into(), exp };
    mint_token(&JwtKey::new(LOCAL_DEV_SECRET), &claims).expect("a token")
}

/// Calls `method path` with `token` and a JSON `body`: the status and the body as JSON
/// (`Null` when it is not JSON).
pub async fn call(api: &Api, method: &str, path: &str, token: &str, body: &str) -> (u16, serde_json::Value) {
    let req = Request::builder()
        .method(method)
        .uri(path)
        .header("authorization", format!("Bearer {token}"))
        .header("content-type", "application/json")
        .body(Body::from(body.to_owned()))
        .expect("a request");
    let resp = router(api.clone()).oneshot(req).await.expect("an answer");
    let status = resp.status().as_u16();
    let bytes = resp.into_body().collect().await.expect("a body").to_bytes();
    (status, serde_json::from_slice(&bytes).unwrap_or(serde_json::Value::Null))
}

/// What a console request got.
pub struct Page {
    /// Its status.
    pub status: axum::http::StatusCode,
    /// Its headers.
    pub headers: axum::http::HeaderMap,
    /// The page.
    pub body: String,
}

impl Page {
    /// The header `name`, if it came.
    pub fn header(&self, name: &str) -> Option<String> {
        self.headers.get(name).map(|v| v.to_str().expect("a text header").to_owned())
    }
}

/// Sends `method path` with `form` as a console form does (from the console's own page on
/// 127.0.0.1:3000), signed in with `session` (a session cookie's value) if any.
pub async fn console(api: &Api, method: &str, path: &str, form: &str, session: Option<&str>) -> Page {
    let mut request = Request::builder()
        .method(method)
        .uri(path)
        .header("content-type", "application/x-www-form-urlencoded")
        .header("sec-fetch-site", "same-origin")
        .header("host", "127.0.0.1:3000");
    if let Some(s) = session {
        request = request.header("cookie", format!("hb_session={s}"));
    }
    let req = request.body(Body::from(form.to_owned())).expect("a request");
    let resp = router(api.clone()).oneshot(req).await.expect("an answer");
    let (status, headers) = (resp.status(), resp.headers().clone());
    let bytes = resp.into_body().collect().await.expect("a body").to_bytes();
    Page { status, headers, body: String::from_utf8_lossy(&bytes).into_owned() }
}
