//! The hooks table, a hook's page with its actions, Read (what it processed) and one
//! delivery.

use axum::body::Bytes;
use axum::extract::{FromRequest, FromRequestParts, Path, Query, RawQuery, Request, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use hookbridge_core::hook::PayloadFormat;
use hookbridge_core::payload::render;
use maud::{Markup, html};
use serde::Deserialize;
use serde_json::{Value, json};

use super::call::{Answer, call};
use super::layout::{action, badge, notice, page, st, time};
use super::session::Session;
use super::{form, html, replays, see_other};
use crate::Api;
use crate::error::ApiError;

impl FromRequestParts<Api> for Session {
    /// No session: the sign-in page.
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, api: &Api) -> Result<Self, Response> {
        match Session::checked(api, &parts.headers).await {
            Ok(Some(s)) => Ok(s),
            // Signed in again, a page asked for comes back (its session ended under it, the
            // five minutes of an identity provider's token, say): by itself through the
            // issuer when it signed in that way. A form posted is not taken on a trip
            // through the sign-in.
            Ok(None) if matches!(parts.method, axum::http::Method::GET | axum::http::Method::HEAD) => {
                let asked = parts.uri.path_and_query().map_or("", |p| p.as_str());
                Err(super::signin::signed_out(api, &parts.headers, &super::signin::return_to(Some(asked))))
            }
            Ok(None) => Err(see_other("/console/login")),
            Err(e) => Err(unavailable(&e)),
        }
    }
}

/// The page for a session that could not be checked now: the request is not taken for
/// signed out (a form posted would be lost on the way to the sign-in page).
fn unavailable(e: &ApiError) -> Response {
    tracing::error!(error = %e, "a console session could not be checked");
    let mut resp = html(
        e.status(),
        page(
            "Try again",
            None,
            notice(
                "error",
                "The console cannot check your session just now; nothing was done. Go back and try again in a moment.",
            ),
        ),
    );
    e.set_headers(resp.headers_mut());
    resp
}

/// A posted form: the session and the form's fields, its CSRF token checked.
pub struct Posted(pub Session, pub Vec<(String, String)>);

impl FromRequest<Api> for Posted {
    type Rejection = Response;

    async fn from_request(req: Request, api: &Api) -> Result<Self, Response> {
        let (mut parts, body) = req.into_parts();
        // Besides the token: where cookies are not `Secure` (plain http to a loopback
        // address, or a public URL that is plain http) a page on another port or a sibling
        // host could plant the forms cookie, and so know the token it makes.
        if super::session::from_another_origin(&parts.headers) {
            tracing::warn!("a console form posted from another origin; refused");
            return Err(html(
                StatusCode::FORBIDDEN,
                page("Forbidden", None, notice("error", "This form did not come from this console.")),
            ));
        }
        let s = Session::from_request_parts(&mut parts, api).await?;
        let body =
            Bytes::from_request(Request::from_parts(parts, body), api).await.map_err(IntoResponse::into_response)?;
        let fields = form::parse(&body);
        if !s.csrf_ok(form::value(&fields, "_csrf")) {
            return Err(html(
                StatusCode::FORBIDDEN,
                page(
                    "Forbidden",
                    Some(&s),
                    notice(
                        "error",
                        "This form has expired or did not come from this console; go back, reload and try again.",
                    ),
                ),
            ));
        }
        Ok(Self(s, fields))
    }
}

/// A page that changes hooks, asked for by a read-only session (from a bookmark, a link
/// kept from a writer's session): refused before a form is shown, rather than on its
/// submit with everything typed lost.
pub(super) fn read_only(s: &Session, what: &str) -> Option<Response> {
    if s.can_write() {
        return None;
    }
    let body = html! {
        h1 { (what) }
        (notice("error", "This session is read-only: it can look at hooks and deliveries, not change them."))
        p { a href="/console/hooks" { "Back to the hooks" } }
    };
    Some(html(StatusCode::FORBIDDEN, page(what, Some(s), body)))
}

/// What the API refused, as a page.
pub(super) fn refused(s: &Session, what: &str, a: &Answer) -> Response {
    refused_then(s, what, a, html! { p { a href="/console/hooks" { "Back to the hooks" } } })
}

/// What the API refused, as a page, with `then` below it: the form again, as it was
/// filled in, so that what was typed is not lost with the refusal.
pub(super) fn refused_then(s: &Session, what: &str, a: &Answer, then: Markup) -> Response {
    let status = StatusCode::from_u16(a.status.as_u16()).unwrap_or(StatusCode::BAD_GATEWAY);
    let errors = a.field_errors();
    html(
        status,
        page(
            what,
            Some(s),
            html! {
                h1 { (what) }
                (notice("error", &a.detail()))
                @if !errors.is_empty() {
                    ul.errors { @for (f, m) in &errors { li { code { (f) } " " (m) } } }
                }
                (then)
            },
        ),
    )
}

/// `GET /console`.
pub async fn home(State(api): State<Api>, headers: HeaderMap) -> Response {
    match Session::checked(&api, &headers).await {
        Ok(Some(_)) => see_other("/console/hooks"),
        Ok(None) => see_other("/console/login"),
        Err(e) => unavailable(&e),
    }
}

/// Filters of the hooks table.
#[derive(Debug, Default, Deserialize)]
pub struct ListFilter {
    name: Option<String>,
    state: Option<String>,
    /// The page of the matching hooks shown, from 1.
    page: Option<usize>,
}

/// Hooks shown on one page of the list. A hook's row can be some 50 KB of HTML (50
/// patterns of 128 characters and a 2 KB URL, escaped), so a tenant's whole list in one
/// page could pass Lambda's 6 MB response limit and fail the page for everyone in it.
const HOOKS_PAGE: usize = 50;

fn auth_type(h: &Value) -> &str {
    h["auth"]["type"].as_str().unwrap_or("NONE")
}

fn health_cell(h: &Value) -> Markup {
    let health = &h["health"];
    let circuit = health["circuit"]["state"].as_str().unwrap_or("closed");
    let failures = health["consecutive_failures"].as_u64().unwrap_or(0);
    html! {
        (badge(circuit))
        @if health["lane"] == "slow" { " " (badge("slow")) }
        @if failures > 0 { " " span.muted { (failures) " failing" } }
    }
}

/// `GET /console/hooks`: the hooks table.
pub async fn list(State(api): State<Api>, s: Session, Query(f): Query<ListFilter>) -> Response {
    let mut hooks: Vec<Value> = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let path = match &cursor {
            Some(c) => format!(
                "/v1/hooks?limit=100&cursor={}",
                url::form_urlencoded::byte_serialize(c.as_bytes()).collect::<String>()
            ),
            None => "/v1/hooks?limit=100".to_owned(),
        };
        let a = call(&api, &s.caller, Method::GET, &path, None).await;
        if !a.ok() {
            return refused(&s, "Hooks", &a);
        }
        hooks.extend(a.body["hooks"].as_array().cloned().unwrap_or_default());
        match a.body["next_cursor"].as_str() {
            Some(c) => cursor = Some(c.to_owned()),
            None => break,
        }
    }
    let total = hooks.len();
    let name = f.name.clone().unwrap_or_default().to_lowercase();
    let state = f.state.clone().unwrap_or_default();
    hooks.retain(|h| {
        (name.is_empty() || st(h, "name").to_lowercase().contains(&name))
            && (state.is_empty() || st(h, "destination_state") == state || st(h, "connection_state") == state)
    });
    let states = ["ACTIVE", "INACTIVE", "AUTHORIZED", "AUTHORIZING", "CREATING", "DEAUTHORIZED", "UPDATING"];
    let matching = hooks.len();
    let pages = matching.div_ceil(HOOKS_PAGE).max(1);
    let at = f.page.unwrap_or(1).clamp(1, pages);
    let shown: Vec<Value> = hooks.into_iter().skip((at - 1) * HOOKS_PAGE).take(HOOKS_PAGE).collect();
    let first = (at - 1) * HOOKS_PAGE + 1;
    let page_link = |n: usize| {
        format!(
            "/console/hooks?name={}&state={}&page={n}",
            encoded(&f.name.clone().unwrap_or_default()),
            encoded(&state)
        )
    };
    html(
        StatusCode::OK,
        page(
            "Hooks",
            Some(&s),
            html! {
                div.title-row {
                    h1 { "Hooks" }
                    @if s.can_write() { a.button.primary href="/console/hooks/new" { "New hook" } }
                }
                @if total == 0 {
                    section.card.empty {
                        h2 { "No hooks yet" }
                        p { "A hook sends your events to an HTTPS endpoint. Create one, point it at your receiver, and publish an event to see it arrive." }
                        @if s.can_write() { a.button.primary href="/console/hooks/new" { "Create your first hook" } }
                    }
                } @else {
                    form.filters method="get" action="/console/hooks" role="search" {
                        label { "Name " input type="search" name="name" value=(f.name.clone().unwrap_or_default()) placeholder="Filter by name"; }
                        label { "State "
                            select name="state" {
                                option value="" { "Any" }
                                @for st in states { option value=(st) selected[state == st] { (st) } }
                            }
                        }
                        button type="submit" { "Filter" }
                    }
                    @if shown.is_empty() {
                        p.muted { "No hook matches. " a href="/console/hooks" { "Clear the filters" } }
                    } @else {
                        div.table-wrap {
                            table {
                                caption.visually-hidden { "Hooks" }
                                thead { tr {
                                    th scope="col" { "Name" } th scope="col" { "Event types" } th scope="col" { "Endpoint" }
                                    th scope="col" { "Auth" } th scope="col" { "Method" } th scope="col" { "Connection" }
                                    th scope="col" { "Destination" } th scope="col" { "Health" }
                                } }
                                tbody {
                                    @for h in &shown {
                                        tr {
                                            td data-label="Name" { a href=(format!("/console/hooks/{}", st(h, "id"))) { (st(h, "name")) } }
                                            td data-label="Event types" { @for p in h["event_types"].as_array().into_iter().flatten() { code { (p.as_str().unwrap_or("")) } " " } }
                                            td.url data-label="Endpoint" { (st(h, "url")) }
                                            td data-label="Auth" { (auth_type(h)) }
                                            td data-label="Method" { (st(h, "method")) }
                                            td data-label="Connection" { (badge(st(h, "connection_state"))) }
                                            td data-label="Destination" { (badge(st(h, "destination_state"))) }
                                            td data-label="Health" { (health_cell(h)) }
                                        }
                                    }
                                }
                            }
                        }
                        p.muted {
                            @if pages > 1 {
                                (first) "–" (first + shown.len() - 1) " of " (matching) " matching hooks (" (total) " in all)"
                            } @else {
                                (matching) " of " (total) " hooks"
                            }
                        }
                        @if pages > 1 {
                            nav.pager aria-label="Pages of hooks" {
                                @if at > 1 { a href=(page_link(at - 1)) rel="prev" { "Previous" } " " }
                                span.muted { "Page " (at) " of " (pages) }
                                @if at < pages { " " a href=(page_link(at + 1)) rel="next" { "Next" } }
                            }
                        }
                    }
                }
            },
        ),
    )
}

async fn load_hook(api: &Api, s: &Session, id: &str) -> Result<Value, Response> {
    let a = call(api, &s.caller, Method::GET, &format!("/v1/hooks/{id}"), None).await;
    if a.ok() { Ok(a.body) } else { Err(refused(s, "Hook", &a)) }
}

/// Notices a hook's page shows after an action (`?done=…`).
#[derive(Debug, Default, Deserialize)]
pub struct Done {
    done: Option<String>,
}

/// `GET /console/hooks/{id}`: the hook, its state and its actions.
pub async fn hook(State(api): State<Api>, s: Session, Path(id): Path<String>, Query(d): Query<Done>) -> Response {
    let h = match load_hook(&api, &s, &id).await {
        Ok(h) => h,
        Err(r) => return r,
    };
    let v = &h["verification"];
    let base = format!("/console/hooks/{id}");
    let replays = replays::section(&api, &s, &id).await;
    let done = match d.done.as_deref() {
        Some("verify") => {
            Some("The ownership challenge is on its way; its outcome shows below in a moment (reload to see it).")
        }
        Some("enabled") => Some("Enabled: deliveries resume."),
        Some("disabled") => Some("Disabled: its events are recorded as cancelled until it is enabled again."),
        Some("saved") => Some("Saved."),
        Some("replay") => Some(
            "Replay started: it works through the window in the background (below), and Read shows each delivery as it goes again.",
        ),
        Some("replay-cancelled") => {
            Some("Replay cancelled: it stops after the page under way, and what it re-sent stays sent.")
        }
        Some("replay-finished") => Some("That replay had already finished; nothing was cancelled."),
        _ => None,
    };
    html(
        StatusCode::OK,
        page(
            st(&h, "name"),
            Some(&s),
            html! {
                p.crumbs { a href="/console/hooks" { "Hooks" } " / " (st(&h, "name")) }
                div.title-row {
                    h1 { (st(&h, "name")) }
                    div.actions {
                        a.button href=(format!("{base}/read")) { "Read" }
                        @if s.can_write() {
                            a.button href=(format!("{base}/edit")) { "Edit" }
                            (action(&s, &format!("{base}/verify"), "Verify", ""))
                            (action(&s, &format!("{base}/test"), "Send test", ""))
                            (action(&s, &format!("{base}/rotate"), "Rotate secret", ""))
                            (enable_toggle(&s.csrf(), &base, &h))
                            a.button.danger href=(format!("{base}/delete")) { "Delete" }
                        }
                    }
                }
                @if let Some(t) = done { (notice("ok", t)) }
                @if let Some(r) = h["disabled_reason"].as_str() { (notice("error", &format!("Inactive: {r}"))) }
                section.card {
                    dl.grid {
                        dt { "Endpoint" } dd.url { (st(&h, "method")) " " (st(&h, "url")) }
                        dt { "Event types" } dd { @for p in h["event_types"].as_array().into_iter().flatten() { code { (p.as_str().unwrap_or("")) } " " } }
                        dt { "Applies to" } dd {
                            @if h["sites"].as_array().is_none_or(|a| a.is_empty()) { "The whole workspace" }
                            @else { "Sites: " @for site in h["sites"].as_array().into_iter().flatten() { code { (site.as_str().unwrap_or("")) } " " } }
                        }
                        dt { "Auth" } dd { (auth_type(&h)) }
                        dt { "Payload" } dd { (st(&h, "payload")) }
                        dt { "Connection" } dd { (badge(st(&h, "connection_state")))
                            @if let Some(e) = h["connection_error"].as_str() { " " span.muted { (e) } } }
                        dt { "Destination" } dd { (badge(st(&h, "destination_state"))) }
                        dt { "Health" } dd { (health_cell(&h))
                            @if h["health"]["circuit"]["state"] == "open" { " next probe " (time(&h["health"]["circuit"]["next_probe_at"])) } }
                        dt { "Ownership" } dd {
                            (badge(st(v, "status")))
                            @if v["required"] == true { " " span.muted { "required before delivery" } }
                            @if let Some(e) = v["last_error"].as_str() { p.reason { "Why: " (e) } }
                            @if !v["verified_at"].is_null() { " " (time(&v["verified_at"])) }
                        }
                        dt { "Rate limit" } dd { @match h["rate_limit"]["per_second"].as_u64() { Some(n) => { (n) " a second" }, None => { "none" } } }
                        dt { "Created" } dd { (time(&h["created_at"])) " by " (st(&h, "created_by")) }
                        dt { "Updated" } dd { (time(&h["updated_at"])) " · version " (h["version"]) }
                    }
                }
                (replays)
            },
        ),
    )
}

/// `POST /console/hooks/{id}/verify`.
pub async fn verify(State(api): State<Api>, Path(id): Path<String>, Posted(s, _): Posted) -> Response {
    let a = call(&api, &s.caller, Method::POST, &format!("/v1/hooks/{id}/verify"), None).await;
    if !a.ok() {
        return refused(&s, "Verify", &a);
    }
    see_other(&format!("/console/hooks/{id}?done=verify"))
}

/// `POST /console/hooks/{id}/test`: a test event; its delivery's page shows the result.
pub async fn test(State(api): State<Api>, Path(id): Path<String>, Posted(s, _): Posted) -> Response {
    let a = call(&api, &s.caller, Method::POST, &format!("/v1/hooks/{id}/test"), None).await;
    if !a.ok() {
        return refused(&s, "Send test", &a);
    }
    see_other(&format!("/console/hooks/{id}/deliveries/{}", s_of(&a.body, "delivery_id")))
}

fn s_of<'a>(v: &'a Value, k: &str) -> &'a str {
    v[k].as_str().unwrap_or("")
}

/// The signing secret, shown once.
pub(super) fn secret_page(s: &Session, id: &str, title: &str, secret: &str, note: &str) -> Response {
    html(
        StatusCode::OK,
        page(
            title,
            Some(s),
            html! {
                h1 { (title) }
                section.card {
                    p { (note) }
                    label for="secret" { "Signing secret" }
                    input #secret.secret type="text" readonly value=(secret) aria-describedby="secret-hint";
                    p #secret-hint.hint { "Shown once. Store it where your receiver verifies signatures; it cannot be read again." }
                    p { a.button.primary href=(format!("/console/hooks/{id}")) { "Done" } }
                }
            },
        ),
    )
}

/// `POST /console/hooks/{id}/rotate`.
pub async fn rotate(State(api): State<Api>, Path(id): Path<String>, Posted(s, _): Posted) -> Response {
    let a = call(&api, &s.caller, Method::POST, &format!("/v1/hooks/{id}/secret/rotate"), None).await;
    if !a.ok() {
        return refused(&s, "Rotate secret", &a);
    }
    let mut note = format!(
        "The previous secret keeps signing too until {}, so receivers can switch without a gap.",
        s_of(&a.body, "previous_valid_until")
    );
    // One signature, keyed with the current secret alone: it changed just now.
    let hook = call(&api, &s.caller, Method::GET, &format!("/v1/hooks/{id}"), None).await;
    if hook.body["signature_formats"].as_array().is_some_and(|f| f.iter().any(|x| x == "keycloak")) {
        note.push_str(" X-Keycloak-Signature is made with the new secret from now on: give it to receivers that check that header.");
    }
    secret_page(&s, &id, "Secret rotated", s_of(&a.body, "secret"), &note)
}

/// `POST /console/hooks/{id}/enabled`.
pub async fn set_enabled(State(api): State<Api>, Path(id): Path<String>, Posted(s, fields): Posted) -> Response {
    let enabled = form::value(&fields, "enabled") == Some("true");
    let mut h = match load_hook(&api, &s, &id).await {
        Ok(h) => h,
        Err(r) => return r,
    };
    h["enabled"] = json!(enabled);
    let a = call(&api, &s.caller, Method::PUT, &format!("/v1/hooks/{id}"), Some(&h)).await;
    if !a.ok() {
        return refused(&s, if enabled { "Enable" } else { "Disable" }, &a);
    }
    see_other(&format!("/console/hooks/{id}?done={}", if enabled { "enabled" } else { "disabled" }))
}

/// `GET /console/hooks/{id}/delete`: are you sure?
pub async fn delete_confirm(State(api): State<Api>, s: Session, Path(id): Path<String>) -> Response {
    if let Some(refused) = read_only(&s, "Delete hook") {
        return refused;
    }
    let h = match load_hook(&api, &s, &id).await {
        Ok(h) => h,
        Err(r) => return r,
    };
    html(
        StatusCode::OK,
        page(
            "Delete hook",
            Some(&s),
            html! {
                h1 { "Delete " (st(&h, "name")) "?" }
                section.card {
                    p { "Nothing more is delivered to " code { (st(&h, "url")) } ". Its delivery history goes too. This cannot be undone." }
                    form method="post" action=(format!("/console/hooks/{id}/delete")) {
                        input type="hidden" name="_csrf" value=(s.csrf());
                        button.danger type="submit" { "Delete the hook" }
                        " "
                        a.button href=(format!("/console/hooks/{id}")) { "Keep it" }
                    }
                }
            },
        ),
    )
}

/// `POST /console/hooks/{id}/delete`.
pub async fn delete(State(api): State<Api>, Path(id): Path<String>, Posted(s, _): Posted) -> Response {
    let a = call(&api, &s.caller, Method::DELETE, &format!("/v1/hooks/{id}"), None).await;
    if !a.ok() {
        return refused(&s, "Delete hook", &a);
    }
    see_other("/console/hooks")
}

/// `GET /console/hooks/{id}/read?hours=N&cursor=…`.
#[derive(Debug, Default, Deserialize)]
pub struct ReadQuery {
    hours: Option<u32>,
    /// Where the page starts: the `next_cursor` of the page before.
    cursor: Option<String>,
}

/// Deliveries on one Read page.
const READ_PAGE: usize = 100;

fn encoded(s: &str) -> String {
    url::form_urlencoded::byte_serialize(s.as_bytes()).collect()
}

/// A look-back as the Read page's choice names it: hours up to a day, then days.
fn hours_label(n: u32) -> String {
    if n > 24 && n.is_multiple_of(24) { format!("{} days", n / 24) } else { format!("{n} h") }
}

/// `GET /console/hooks/{id}/read`: what the hook processed in the last N hours (up to the
/// deliveries' 14 days).
pub async fn read(State(api): State<Api>, s: Session, Path(id): Path<String>, Query(q): Query<ReadQuery>) -> Response {
    let h = match load_hook(&api, &s, &id).await {
        Ok(h) => h,
        Err(r) => return r,
    };
    let hours = q.hours.unwrap_or(24).clamp(1, crate::deliveries::MAX_HOURS as u32);
    let cursor = q.cursor.as_deref().filter(|c| !c.is_empty());
    let mut path = format!("/v1/hooks/{id}/events?hours={hours}&limit={READ_PAGE}");
    if let Some(c) = cursor {
        path.push_str(&format!("&cursor={}", encoded(c)));
    }
    let a = call(&api, &s.caller, Method::GET, &path, None).await;
    if !a.ok() {
        return refused(&s, "Read", &a);
    }
    let deliveries = a.body["deliveries"].as_array().cloned().unwrap_or_default();
    let next = a.body["next_cursor"].as_str().map(encoded);
    let base = format!("/console/hooks/{id}");
    html(
        StatusCode::OK,
        page(
            "Read",
            Some(&s),
            html! {
                p.crumbs { a href="/console/hooks" { "Hooks" } " / " a href=(base) { (st(&h, "name")) } " / Read" }
                div.title-row {
                    h1 { "Read: " (st(&h, "name")) }
                    form.filters method="get" action=(format!("{base}/read")) {
                        label { "Last "
                            select name="hours" { @for n in [1u32, 2, 4, 8, 12, 24, 72, 168, 336] { option value=(n) selected[n == hours] { (hours_label(n)) } } }
                        }
                        button type="submit" { "Read" }
                    }
                }
                // An empty page with pages around it is not an empty window: its deliveries
                // may be ones this version cannot show (written by a newer release), or a
                // link to older ones followed after the window moved on.
                @if deliveries.is_empty() && (next.is_some() || cursor.is_some()) {
                    section.card.empty {
                        h2 { "Nothing to show on this page" }
                        p { "The deliveries here could not be shown, or have left the window since. The links below go on to the others." }
                    }
                } @else if deliveries.is_empty() {
                    section.card.empty {
                        h2 { "Nothing in the last " (hours) " hours" }
                        p { "Events this hook matches show here as they are delivered. Publish one, or send a test from the hook's page." }
                    }
                } @else {
                    div.table-wrap { table {
                        caption.visually-hidden { "Deliveries" }
                        thead { tr { th scope="col" { "Delivery" } th scope="col" { "Event type" } th scope="col" { "Status" }
                            th scope="col" { "Attempts" } th scope="col" { "Last answer" } th scope="col" { "Created" } th scope="col" { "Updated" } } }
                        tbody { @for d in &deliveries { tr {
                            td data-label="Delivery" { a href=(format!("{base}/deliveries/{}", st(d, "delivery_id"))) { code { (st(d, "delivery_id")) } } }
                            td data-label="Event type" { code { (st(d, "event_type")) } }
                            td data-label="Status" { (badge(st(d, "status"))) @if let Some(r) = d["reason"].as_str() { " " span.muted { (r) } } }
                            td data-label="Attempts" { (d["attempts"]) }
                            td data-label="Last answer" {
                                @if let Some(c) = d["last_status_code"].as_u64() { (c) }
                                @if let Some(e) = d["last_error_class"].as_str() { " " code { (e) } }
                            }
                            td data-label="Created" { (time(&d["created_at"])) }
                            td data-label="Updated" { (time(&d["updated_at"])) }
                        } } }
                    } }
                }
                // A busy hook has more than a page in the window: the rest are a link away,
                // not silently left out.
                @if next.is_some() || cursor.is_some() {
                    nav.pager {
                        @if cursor.is_some() { a href=(format!("{base}/read?hours={hours}")) { "Newest" } " " }
                        @if let Some(n) = &next { a href=(format!("{base}/read?hours={hours}&cursor={n}")) { "Older deliveries" } }
                    }
                }
                @if s.can_write() {
                    section.card {
                        h2 { "Replay a window" }
                        (super::replays::replay_form(&s, &base, None))
                    }
                }
            },
        ),
    )
}

/// The most of a body the page lays out for reading. An event may be 256 KiB and 100
/// levels deep, and laid out two spaces a level it could pass the 6 MB Lambda allows an
/// answer: the page was then API Gateway's bare `500`, the delivery's attempts and its
/// Retry button out of reach. Past this it is shown on one line, as it was sent.
const LAID_OUT_AT_MOST: usize = 512 * 1024;

/// The body the receiver was sent: the envelope in the hook's payload format (a hook made
/// through Keycloak's or XIQ's API is sent the event's `detail`, not the envelope), laid
/// out for reading unless that would make it larger than [`LAID_OUT_AT_MOST`]; and
/// whether it was.
fn body_sent(h: &Value, envelope: &Value) -> (String, bool) {
    let format: PayloadFormat = serde_json::from_value(h["payload"].clone()).unwrap_or_default();
    let envelope_text = envelope.to_string();
    let sent = render(format, &envelope_text).ok().and_then(|b| serde_json::from_str::<Value>(&b).ok());
    let sent = sent.as_ref().unwrap_or(envelope);
    match serde_json::to_string_pretty(sent) {
        Ok(laid_out) if laid_out.len() <= LAID_OUT_AT_MOST => (laid_out, true),
        _ => (sent.to_string(), false),
    }
}

/// What the receiver was sent, reconstructed from the hook (secret values masked), in the
/// form it goes on the wire.
fn headers_sent(h: &Value, d: &Value) -> Vec<(String, String)> {
    let own =
        |name: &str| h["headers"].as_array().into_iter().flatten().any(|x| st(x, "name").eq_ignore_ascii_case(name));
    let mut out = vec![("content-type".to_owned(), "application/json".to_owned())];
    // The hook's own `User-Agent` goes instead of ours, and is listed with its headers.
    if !own("user-agent") {
        out.push(("user-agent".to_owned(), hookbridge_outbound::USER_AGENT.to_owned()));
    }
    out.extend([
        ("webhook-id".to_owned(), st(d, "delivery_id").to_owned()),
        ("webhook-timestamp".to_owned(), "the attempt's time, in seconds".to_owned()),
        ("webhook-signature".to_owned(), "v1,•••• (HMAC-SHA256 with the signing secret)".to_owned()),
    ]);
    if h["signature_formats"].as_array().is_some_and(|f| f.iter().any(|x| x == "keycloak")) {
        out.push(("x-keycloak-signature".to_owned(), "•••• (hex HMAC-SHA256 of the body)".to_owned()));
    }
    match auth_type(h) {
        "BASIC" => out.push((
            "authorization".to_owned(),
            format!("Basic •••• (base64 of {}:<password>)", st(&h["auth"], "username")),
        )),
        "API_KEY" | "OAUTH_CLIENT_CREDENTIALS" => out.push(("authorization".to_owned(), "Bearer ••••".to_owned())),
        "HEADER" => out.push((st(&h["auth"], "name").to_ascii_lowercase(), "••••".to_owned())),
        _ => {}
    }
    for x in h["headers"].as_array().into_iter().flatten() {
        let value = if x["secret"] == true { "••••".to_owned() } else { st(x, "value").to_owned() };
        out.push((st(x, "name").to_ascii_lowercase(), value));
    }
    out
}

/// `GET /console/hooks/{id}/deliveries/{delivery_id}`: one delivery, every attempt.
pub async fn delivery(State(api): State<Api>, s: Session, Path((id, did)): Path<(String, String)>) -> Response {
    let h = match load_hook(&api, &s, &id).await {
        Ok(h) => h,
        Err(r) => return r,
    };
    let a = call(&api, &s.caller, Method::GET, &format!("/v1/hooks/{id}/deliveries/{did}"), None).await;
    if !a.ok() {
        return refused(&s, "Delivery", &a);
    }
    let d = &a.body;
    let pending = matches!(st(d, "status"), "PENDING");
    // Only a finished delivery can be retried; the API refuses the others.
    let finished = matches!(st(d, "status"), "SUCCEEDED" | "FAILED" | "CANCELLED");
    let base = format!("/console/hooks/{id}");
    let mut resp = html(
        StatusCode::OK,
        page(
            "Delivery",
            Some(&s),
            html! {
                p.crumbs { a href="/console/hooks" { "Hooks" } " / " a href=(base) { (st(&h, "name")) } " / " a href=(format!("{base}/read")) { "Read" } " / delivery" }
                div.title-row {
                    h1 { "Delivery " code { (st(d, "delivery_id")) } }
                    @if s.can_write() && finished { (action(&s, &format!("{base}/deliveries/{did}/retry"), "Retry", "primary")) }
                }
                section.card {
                    dl.grid {
                        dt { "Status" } dd #delivery-status { (badge(st(d, "status"))) @if let Some(r) = d["reason"].as_str() { " " (r) } @if pending { " " span.muted { "(refreshing…)" } } }
                        dt { "Event" } dd { code { (st(d, "event_type")) } " " span.muted { (st(d, "event_id")) } }
                        dt { "Attempts" } dd { (d["attempts"]) }
                        @if !d["next_attempt_at"].is_null() { dt { "Next attempt" } dd { (time(&d["next_attempt_at"])) } }
                        dt { "Created" } dd { (time(&d["created_at"])) }
                    }
                }
                section.card {
                    h2 { "Request" }
                    // Made from the hook as it is now: attempts keep no copy of what was
                    // sent, and one made before an edit went as the hook was then.
                    p.muted { "As the hook sends it now; attempts made before its last change went as it was then." }
                    p { code { (st(&h, "method")) " " (st(&h, "url")) } }
                    table.kv { tbody { @for (k, v) in headers_sent(&h, d) { tr { th scope="row" { code { (k) } } td { code { (v) } } } } } }
                    @if !d["envelope"].is_null() {
                        @let (body, laid_out) = body_sent(&h, &d["envelope"]);
                        details {
                            summary { "Body" }
                            // Its signature is over the bytes sent, which this is not.
                            @if laid_out {
                                p.muted { "Laid out for reading: the receiver got it on one line, its keys in the event's own order." }
                            } @else {
                                p.muted { "On one line, as the receiver got it (too large to lay out), its keys in the event's own order." }
                            }
                            pre { (body) }
                        }
                    }
                }
                section.card {
                    h2 { "Attempts" }
                    @if d["attempt_log"].as_array().is_none_or(|a| a.is_empty()) {
                        p.muted { "Not attempted yet." }
                    } @else {
                        div.table-wrap { table {
                            thead { tr { th scope="col" { "#" } th scope="col" { "At" } th scope="col" { "Took" } th scope="col" { "Status" } th scope="col" { "Error" } th scope="col" { "Response" } } }
                            tbody { @for at in d["attempt_log"].as_array().into_iter().flatten() { tr.attempt {
                                td data-label="#" { (at["attempt"]) }
                                td data-label="At" { (time(&at["at"])) }
                                td data-label="Took" { (at["duration_ms"]) " ms" }
                                td data-label="Status" { @if let Some(c) = at["status_code"].as_u64() { (c) } @else { "—" } }
                                td data-label="Error" { @if let Some(e) = at["error_class"].as_str() { code { (e) } } }
                                td data-label="Response" { @if let Some(r) = at["response_excerpt"].as_str() { pre.excerpt { (r) } } }
                            } } }
                        } }
                    }
                }
            },
        ),
    );
    if pending && let Some(after) = refresh_after(&d["next_attempt_at"], chrono::Utc::now()) {
        // No script needed: the page reloads itself until the first attempt is recorded.
        resp.headers_mut().insert("refresh", axum::http::HeaderValue::from(after));
    }
    resp
}

/// How many seconds a page showing a `PENDING` delivery waits before it reloads: a second
/// while its attempt is due, else until it is (at most a minute), and every 10 s once it is
/// overdue by more than a few seconds (waiting for an open circuit or a rate-limit slot,
/// which its record does not show). Such a wait can last a quarter of an hour, and a page
/// reloading every second for that long closes what the reader opened and loses their place.
fn refresh_after(next_attempt_at: &Value, now: chrono::DateTime<chrono::Utc>) -> Option<u64> {
    let due = next_attempt_at.as_str().and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok());
    let wait = due.map_or(0, |t| (t.with_timezone(&chrono::Utc) - now).num_seconds());
    Some(if wait < -5 { 10 } else { wait.clamp(1, 60) as u64 })
}

/// `POST …/deliveries/{delivery_id}/retry`.
pub async fn retry(State(api): State<Api>, Path((id, did)): Path<(String, String)>, Posted(s, _): Posted) -> Response {
    let a = call(&api, &s.caller, Method::POST, &format!("/v1/hooks/{id}/deliveries/{did}/retry"), None).await;
    if !a.ok() {
        return refused(&s, "Retry", &a);
    }
    see_other(&format!("/console/hooks/{id}/deliveries/{did}"))
}

/// `GET /console/preview?pattern=…&pattern=…`: the known event types any pattern matches
/// (JSON, for the form's live preview).
pub async fn preview(State(api): State<Api>, headers: HeaderMap, RawQuery(q): RawQuery) -> Response {
    let Some(s) = Session::of(&api, &headers).await else {
        return StatusCode::UNAUTHORIZED.into_response();
    };
    let mut matches = std::collections::BTreeSet::new();
    let mut errors: Vec<Value> = Vec::new();
    let given: Vec<String> = form::parse(q.unwrap_or_default().as_bytes())
        .into_iter()
        .filter(|(k, _)| k == "pattern")
        .map(|(_, v)| v)
        .collect();
    let patterns: Vec<&String> = given.iter().filter(|p| !p.trim().is_empty()).take(50).collect();
    let trimmed: Vec<&str> = patterns.iter().map(|p| p.trim()).collect();
    match crate::catalog::matches_of(&api, &s.caller, &trimmed).await {
        Ok(each) => {
            for (p, matched) in patterns.iter().zip(each) {
                match matched {
                    Ok(m) => matches.extend(m),
                    Err(message) => errors.push(json!({"pattern": p, "message": message})),
                }
            }
        }
        Err(e) => {
            if let ApiError::Internal(cause) = &e {
                tracing::error!(error = %cause, "the pattern preview could not read the known event types");
            }
            errors.extend(patterns.iter().map(|p| json!({"pattern": p, "message": e.to_string()})));
        }
    }
    // The tenant's own event types, at a URL every tenant shares: no cache may keep them.
    ([(header::CACHE_CONTROL, "no-store")], axum::Json(json!({"matches": matches, "errors": errors}))).into_response()
}

/// The hook page's Enable or Disable button. A hook the failure rule made `INACTIVE` is
/// still `enabled`; what its owner wants then is to enable it again, which starts its
/// health over, not to disable it first.
fn enable_toggle(csrf: &str, base: &str, h: &Value) -> Markup {
    let receiving = h["enabled"] == true && h["destination_state"] != "INACTIVE";
    html! {
        form.inline method="post" action=(format!("{base}/enabled")) {
            input type="hidden" name="_csrf" value=(csrf);
            @if receiving {
                input type="hidden" name="enabled" value="false";
                button type="submit" { "Disable" }
            } @else {
                input type="hidden" name="enabled" value="true";
                button.primary type="submit" { "Enable" }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The headers listed are the ones sent: a `User-Agent` of the hook's own instead of
    /// ours, and Basic credentials as their encoding (masked), not as `user:password`.
    #[test]
    fn the_headers_shown_are_the_headers_sent() {
        let names = |h: &Value| headers_sent(h, &json!({"delivery_id": "d"}));
        let plain = names(&json!({"auth": {"type": "BASIC", "username": "ada"}}));
        assert!(plain.contains(&("user-agent".to_owned(), hookbridge_outbound::USER_AGENT.to_owned())), "{plain:?}");
        let basic = plain.iter().find(|(k, _)| k == "authorization").map(|(_, v)| v.as_str());
        assert_eq!(basic, Some("Basic •••• (base64 of ada:<password>)"));
        let own = names(&json!({"headers": [{"name": "User-Agent", "value": "acme-bot"}]}));
        let agents: Vec<&str> = own.iter().filter(|(k, _)| k == "user-agent").map(|(_, v)| v.as_str()).collect();
        assert_eq!(agents, ["acme-bot"], "the hook's own replaces ours: {own:?}");
    }

    #[test]
    fn the_body_shown_is_the_body_the_hooks_payload_format_sends() {
        let envelope = json!({"detail-type": "user.login", "source": "idp", "detail": {"tenant": "acme", "site": "a", "who": "ada"}});
        let shown =
            |payload: &str| serde_json::from_str::<Value>(&body_sent(&json!({"payload": payload}), &envelope).0).ok();
        assert_eq!(shown("envelope"), Some(envelope.clone()));
        assert_eq!(shown("detail"), Some(json!({"who": "ada"})));
        assert_eq!(shown("detail_array"), Some(json!([{"who": "ada"}])));
        assert!(body_sent(&json!({"payload": "envelope"}), &envelope).1, "laid out");
    }

    /// An event as large and deep as publishing allows is shown on one line: laid out, its
    /// indentation alone made the page larger than Lambda lets an answer be.
    #[test]
    fn a_body_too_large_to_lay_out_is_shown_on_one_line() {
        let mut deep = json!(vec![0; 120_000]);
        for _ in 0..30 {
            deep = json!([deep]);
        }
        let envelope = json!({"detail-type": "user.login", "source": "idp", "detail": {"tenant": "acme", "m": deep}});
        for payload in ["envelope", "detail"] {
            let (body, laid_out) = body_sent(&json!({"payload": payload}), &envelope);
            assert!(!laid_out, "{payload}");
            assert!(body.len() < 300 * 1024, "{payload}: {} bytes", body.len());
            assert!(!body.contains('\n'), "{payload}");
        }
    }

    #[test]
    fn a_look_back_is_named_in_hours_then_days() {
        assert_eq!(
            (hours_label(1), hours_label(24), hours_label(72), hours_label(336)),
            ("1 h".into(), "24 h".into(), "3 days".into(), "14 days".into())
        );
    }

    #[test]
    fn a_waiting_delivery_reloads_when_it_is_due_not_every_second() {
        let now = chrono::Utc::now();
        let at = |secs: i64| json!((now + chrono::Duration::seconds(secs)).to_rfc3339());
        assert_eq!(refresh_after(&Value::Null, now), Some(1), "no time yet: the attempt is under way");
        assert_eq!(refresh_after(&at(-2), now), Some(1), "due");
        assert_eq!(refresh_after(&at(-120), now), Some(10), "overdue: waiting for something its record does not show");
        assert_eq!(refresh_after(&at(20), now), Some(20));
        assert_eq!(refresh_after(&at(900), now), Some(60), "an open circuit's wait");
    }

    #[test]
    fn a_hook_the_failure_rule_disabled_is_offered_enable() {
        let button = |h: Value| enable_toggle("c", "/console/hooks/x", &h).into_string();
        assert!(button(json!({"enabled": true, "destination_state": "ACTIVE"})).contains("Disable"));
        assert!(button(json!({"enabled": false, "destination_state": "INACTIVE"})).contains("Enable"));
        let failed = button(json!({"enabled": true, "destination_state": "INACTIVE"}));
        assert!(failed.contains("Enable") && !failed.contains("Disable"), "{failed}");
    }
}
