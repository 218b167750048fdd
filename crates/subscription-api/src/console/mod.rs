//! `/console`: the hooks screens of the products Hookbridge stands in for — a hooks table,
//! a form for every field, Verify, Test, Rotate, Enable, Delete, and Read — served by the
//! API itself, every asset in the binary, and pages that work without JavaScript (which
//! only adds conveniences: local times, the auth fields of the chosen type, extra rows, the
//! live preview of what a pattern matches). Every change is an ordinary API request made
//! in-process ([`call`]), so no rule is implemented twice.

mod call;
mod form;
mod hookform;
mod layout;
mod pages;
mod replays;
mod session;
mod signin;

use axum::Router;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};

pub(crate) use session::origin;

use crate::Api;

/// The console's stylesheet and script, shipped in the binary.
const CSS: &str = include_str!("../../console/console.css");
const JS: &str = include_str!("../../console/console.js");

/// The console's routes.
pub fn routes() -> Router<Api> {
    Router::new()
        .route("/console", get(pages::home))
        .route("/console/", get(pages::home))
        .route("/console/login", get(signin::login_page).post(signin::login))
        .route("/console/login/oidc", get(signin::oidc_start))
        .route("/console/callback", get(signin::oidc_callback))
        .route("/console/logout", post(signin::logout))
        .route("/console/portal", get(signin::portal_page).post(signin::portal))
        .route("/console/assets/console.css", get(|| async { asset("text/css; charset=utf-8", CSS) }))
        .route("/console/assets/console.js", get(|| async { asset("text/javascript; charset=utf-8", JS) }))
        .route("/console/preview", get(pages::preview))
        .route("/console/hooks", get(pages::list))
        .route("/console/hooks/new", get(hookform::new_form).post(hookform::create))
        .route("/console/hooks/{id}", get(pages::hook))
        .route("/console/hooks/{id}/edit", get(hookform::edit_form).post(hookform::replace))
        .route("/console/hooks/{id}/verify", post(pages::verify))
        .route("/console/hooks/{id}/test", post(pages::test))
        .route("/console/hooks/{id}/rotate", post(pages::rotate))
        .route("/console/hooks/{id}/enabled", post(pages::set_enabled))
        .route("/console/hooks/{id}/delete", get(pages::delete_confirm).post(pages::delete))
        .route("/console/hooks/{id}/read", get(pages::read))
        .route("/console/hooks/{id}/replay", post(replays::replay))
        .route("/console/hooks/{id}/replays/{replay_id}/cancel", post(replays::cancel))
        .route("/console/hooks/{id}/deliveries/{delivery_id}", get(pages::delivery))
        .route("/console/hooks/{id}/deliveries/{delivery_id}/retry", post(pages::retry))
        .route_layer(axum::middleware::from_fn(plain_ids))
}

/// A page's ids are hook, delivery and replay ids, which hold only letters, digits, `-` and
/// `_`: another (an escaped `?` or `/`) is no page. Each is pasted into the path of the API
/// call the page makes, where it would name another call.
async fn plain_ids(
    params: Result<axum::extract::RawPathParams, axum::extract::rejection::RawPathParamsRejection>,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    use axum::extract::rejection::RawPathParamsRejection;
    let plain = |v: &str| !v.is_empty() && v.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    let all_plain = match &params {
        Ok(params) => params.iter().all(|(_, v)| plain(v)),
        // A page without ids.
        Err(RawPathParamsRejection::MissingPathParams(_)) => true,
        // Escapes that are not UTF-8.
        Err(_) => false,
    };
    if all_plain {
        return next.run(request).await;
    }
    html(
        StatusCode::NOT_FOUND,
        layout::page(
            "Not found",
            None,
            maud::html! { section.card.narrow {
                h1 { "Not found" }
                p { a href="/console/hooks" { "Back to the hooks" } }
            } },
        ),
    )
}

fn asset(content_type: &'static str, body: &'static str) -> Response {
    ([(header::CONTENT_TYPE, content_type), (header::CACHE_CONTROL, "public, max-age=300")], body).into_response()
}

/// Every console page: no caching, no framing by another site, nothing loaded from elsewhere.
fn html(status: StatusCode, markup: maud::Markup) -> Response {
    let mut headers = HeaderMap::new();
    headers.insert(header::CONTENT_TYPE, header::HeaderValue::from_static("text/html; charset=utf-8"));
    headers.insert(header::CACHE_CONTROL, header::HeaderValue::from_static("no-store"));
    headers.insert("x-frame-options", header::HeaderValue::from_static("DENY"));
    headers.insert(
        "content-security-policy",
        header::HeaderValue::from_static(
            "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; frame-ancestors 'none'; form-action 'self'; base-uri 'none'",
        ),
    );
    headers.insert("referrer-policy", header::HeaderValue::from_static("no-referrer"));
    (status, headers, markup.into_string()).into_response()
}

/// A redirect after a form (303: the browser follows with `GET`).
fn see_other(to: &str) -> Response {
    (StatusCode::SEE_OTHER, [(header::LOCATION, to.to_owned())]).into_response()
}
