//! Signing in and out: a pasted token, the issuer's authorization-code flow with PKCE, or a
//! portal link.

use axum::extract::{Query, RawQuery, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::Response;
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use chrono::Utc;
use hookbridge_core::portal::{SESSION_LASTS, fresh_code, hashed};
use maud::{Markup, html};
use serde::Deserialize;
use sha2::{Digest, Sha256};

use super::layout::{notice, page};
use super::session::{
    COOKIE, FORMS_COOKIE, FORMS_COOKIE_SECS, Session, console_cookie, forms_value, origin, set_cookie,
    token_session_secs,
};
use super::{form, html, see_other};
use crate::Api;
use crate::auth::{Caller, Scope};
use crate::error::ApiError;

/// The cookie that carries the authorization-code flow's state and PKCE verifier.
const FLOW_COOKIE: &str = "hb_signin";

/// The cookie that says this browser signed in through the issuer, holding when the console
/// last sent it back there by itself (`0`: never). A page asked for once the session has
/// ended (an issuer's token lasts minutes: Keycloak's five by default) goes through the
/// issuer's sign-in again, which answers at once while the browser is still signed in
/// there, instead of stopping at the console's sign-in page for a click. Not a credential:
/// it only chooses where a signed-out request is sent.
const ISSUER_COOKIE: &str = "hb_issuer";

/// How long [`ISSUER_COOKIE`] lasts after the console last set it: as long as a session.
const ISSUER_COOKIE_SECS: i64 = 12 * 3600;

/// How soon after sending a browser back through the issuer by itself the console does not
/// again: a sign-in that came back without a session (a cookie the browser would not keep)
/// stops at the sign-in page rather than going round and round.
const AGAIN_AFTER_SECS: i64 = 30;

/// Where a sign-in goes when it names no page to return to.
const FIRST_PAGE: &str = "/console/hooks";

/// The console page a sign-in returns to: `to` resolved as the browser would resolve it
/// (`..` and `%2e%2e` steps taken), when that is one of the console's own pages, so a link
/// cannot make the sign-in send the browser elsewhere, or back to the sign-in; else the
/// hook list.
pub(super) fn return_to(to: Option<&str>) -> String {
    const HOST: &str = "console.invalid";
    let resolved = to
        // Printable ASCII only: a control character in a `Location` is refused when the
        // answer is built, after the sign-in.
        .filter(|to| to.starts_with('/') && to.len() <= 1024 && to.bytes().all(|b| b.is_ascii_graphic()))
        .and_then(|to| url::Url::parse(&format!("http://{HOST}/")).ok()?.join(to).ok())
        .filter(|u| u.host_str() == Some(HOST))
        .map(|u| match u.query() {
            Some(q) => format!("{}?{q}", u.path()),
            None => u.path().to_owned(),
        });
    match resolved {
        Some(to)
            if to.starts_with("/console/")
                && !["/console/login", "/console/callback", "/console/logout", "/console/portal"]
                    .iter()
                    .any(|p| to.starts_with(p)) =>
        {
            to
        }
        _ => FIRST_PAGE.to_owned(),
    }
}

/// The `to` of a query or form.
pub(super) fn asked_to(raw: Option<&str>) -> String {
    return_to(form::value(&form::parse(raw.unwrap_or_default().as_bytes()), "to"))
}

/// The sign-in page's address, returning to `to` once signed in.
pub(super) fn login_returning_to(to: &str) -> String {
    returning_to("/console/login", to)
}

/// Where a request for the console page `to` (a page [`return_to`] allows) goes without a
/// session: back through the issuer's sign-in when this browser signed in that way (see
/// [`ISSUER_COOKIE`]), else to the sign-in page.
pub(super) fn signed_out(api: &Api, headers: &HeaderMap, to: &str) -> Response {
    let through_issuer = api.settings().tokens.has_issuer() && api.settings().console_client_id.is_some();
    let sent_at = console_cookie(api.settings().public_url.as_deref(), headers, ISSUER_COOKIE)
        .and_then(|v| v.parse::<i64>().ok());
    let now = Utc::now().timestamp();
    match sent_at {
        // A time ahead of this clock (another instance's, a clock stepped back) counts as
        // just now.
        Some(at) if through_issuer && now.saturating_sub(at) >= AGAIN_AFTER_SECS => {
            let mut resp = see_other(&returning_to("/console/login/oidc", to));
            resp.headers_mut().append(header::SET_COOKIE, issuer_cookie(api, headers, &now.to_string()));
            resp
        }
        _ => see_other(&login_returning_to(to)),
    }
}

/// The `Set-Cookie` of [`ISSUER_COOKIE`] with this value; `Lax`, so that a link to a
/// console page followed from elsewhere (a mail, a chat) carries it. Empty clears it.
fn issuer_cookie(api: &Api, headers: &HeaderMap, value: &str) -> HeaderValue {
    let max_age = if value.is_empty() { 0 } else { ISSUER_COOKIE_SECS };
    cookie_for(api, headers, ISSUER_COOKIE, value, max_age, "Lax")
}

/// `path`, naming `to` as the page to return to unless it is the hook list.
fn returning_to(path: &str, to: &str) -> String {
    if to == FIRST_PAGE {
        return path.to_owned();
    }
    let query: String = url::form_urlencoded::Serializer::new(String::new()).append_pair("to", to).finish();
    format!("{path}?{query}")
}

fn login_markup(api: &Api, error: Option<&str>) -> Markup {
    login_markup_to(api, error, FIRST_PAGE)
}

/// The sign-in page, returning to `to` (a page [`return_to`] allows) once signed in.
fn login_markup_to(api: &Api, error: Option<&str>, to: &str) -> Markup {
    let oidc = api.settings().tokens.has_issuer() && api.settings().console_client_id.is_some();
    let oidc_start = returning_to("/console/login/oidc", to);
    page(
        "Sign in",
        None,
        html! {
            section.card.narrow {
                h1 { "Sign in" }
                @if let Some(e) = error { (notice("error", e)) }
                @if oidc {
                    p { a.button.primary href=(oidc_start) { "Sign in with your identity provider" } }
                    p.muted { "Or paste an API token:" }
                }
                form method="post" action="/console/login" {
                    @if to != FIRST_PAGE { input type="hidden" name="to" value=(to); }
                    label for="token" { "API token" }
                    textarea #token name="token" rows="4" required autocomplete="off" spellcheck="false" placeholder="eyJ…" {}
                    p.hint { "A token with " code { "hooks:read" } " (and " code { "hooks:write" } " to make changes). "
                        "Locally, " code { "make run" } " prints one." }
                    button.primary type="submit" { "Sign in" }
                }
            }
        },
    )
}

/// `GET /console/login`.
pub async fn login_page(State(api): State<Api>, RawQuery(q): RawQuery) -> Response {
    html(StatusCode::OK, login_markup_to(&api, None, &asked_to(q.as_deref())))
}

/// The expiry of a (checked) token, read from its payload.
fn token_exp(token: &str) -> Option<i64> {
    let payload = token.split('.').nth(1)?;
    let json: serde_json::Value = serde_json::from_slice(&URL_SAFE_NO_PAD.decode(payload).ok()?).ok()?;
    json["exp"].as_i64()
}

/// A page that goes on to `to` by itself: the session cookie is `SameSite=Strict`, so it is
/// not sent on the rest of a redirect chain that began on another site (the issuer's sign-in
/// page, the product that handed out a portal link); a fresh navigation from here sends it.
fn continue_to(to: &str, set: axum::http::HeaderValue) -> Response {
    let body = html! {
        (maud::DOCTYPE)
        html lang="en" { head {
            meta charset="utf-8";
            meta http-equiv="refresh" content=(format!("0; url={to}"));
            title { "Signed in · Hookbridge" }
            link rel="stylesheet" href="/console/assets/console.css";
        } body { main #main { section.card.narrow { h1 { "Signed in" } p { a.button.primary href=(to) { "Continue" } } } } } }
    };
    let mut resp = html(StatusCode::OK, body);
    resp.headers_mut().append(header::SET_COOKIE, set);
    resp
}

/// The longest token a session cookie holds: browsers drop a cookie whose name and value
/// pass 4,096 bytes, silently, and the sign-in then loops back to the sign-in page with
/// no word of why (tokens with many roles or group claims get there).
const MAX_COOKIE_TOKEN: usize = 4096 - "__Host-hb_session=t.".len();

/// Why `token` cannot be a session cookie, if it cannot.
fn fits_a_cookie(token: &str) -> Result<(), String> {
    if token.len() <= MAX_COOKIE_TOKEN {
        return Ok(());
    }
    Err(format!(
        "this token is {} bytes, too large for a browser to keep as a cookie (at most {MAX_COOKIE_TOKEN}): sign in with a token that carries fewer claims, or use the API with it directly",
        token.len()
    ))
}

/// `POST /console/login`: a pasted token.
pub async fn login(State(api): State<Api>, headers: HeaderMap, body: axum::body::Bytes) -> Response {
    if super::session::from_another_origin(&headers) {
        // Login CSRF: a page elsewhere posting its own token would sign this browser in to
        // another tenant, where what the user then types (a receiver's credentials) is
        // theirs to read.
        tracing::warn!("console sign-in posted from another origin; refused");
        return forbidden("Sign in from the console's own sign-in page.");
    }
    let fields = form::parse(&body);
    let token = form::value(&fields, "token").unwrap_or("").trim().to_owned();
    let to = return_to(form::value(&fields, "to"));
    if let Err(why) = fits_a_cookie(&token) {
        return html(StatusCode::BAD_REQUEST, login_markup_to(&api, Some(&why), &to));
    }
    match api.settings().tokens.check(&token).await {
        Ok(caller) if !reads_hooks(&caller) => not_signed_in_to(&api, StatusCode::FORBIDDEN, NO_HOOKS_READ, &to),
        Ok(caller) => {
            tracing::info!(tenant = %caller.tenant, sub = %caller.sub, "console sign-in");
            let secs = token_session_secs(token_exp(&token));
            let mut resp = see_other(&to);
            resp.headers_mut()
                .append(header::SET_COOKIE, cookie_for(&api, &headers, COOKIE, &format!("t.{token}"), secs, "Strict"));
            resp.headers_mut().append(header::SET_COOKIE, forms_cookie(&api, &headers));
            // Signed in with a pasted token: a session that ends is not the issuer's to renew.
            resp.headers_mut().append(header::SET_COOKIE, issuer_cookie(&api, &headers, ""));
            resp
        }
        Err(e) => not_signed_in_to(&api, refused_status(&e), &e.to_string(), &to),
    }
}

/// The sign-in page again, saying why the token did not sign in; `Retry-After` when it is
/// worth trying again soon (`503`).
fn not_signed_in(api: &Api, status: StatusCode, why: &str) -> Response {
    not_signed_in_to(api, status, why, FIRST_PAGE)
}

/// The same, the sign-in page still returning to `to` once signed in.
fn not_signed_in_to(api: &Api, status: StatusCode, why: &str, to: &str) -> Response {
    let mut resp = html(status, login_markup_to(api, Some(why), to));
    if status == StatusCode::SERVICE_UNAVAILABLE {
        resp.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from_static("5"));
    }
    resp
}

/// The status of a token refused: `401`, but `503` for one that cannot be checked now
/// (its key or the issuer's keys out of reach), which is not a wrong token.
fn refused_status(e: &ApiError) -> StatusCode {
    if matches!(e, ApiError::Unavailable(_)) { e.status() } else { StatusCode::UNAUTHORIZED }
}

/// Why a token without `hooks:read` does not sign in.
const NO_HOOKS_READ: &str = "This token cannot read hooks (it has no hooks:read scope), and every console page does. Sign in with one that has it.";

/// Whether `caller` may use the console: every page reads hooks, and signed in without the
/// scope, the first page was a refusal whose only link led back to it.
fn reads_hooks(caller: &Caller) -> bool {
    caller.require(Scope::HooksRead).is_ok()
}

/// `POST /console/logout`.
pub async fn logout(State(api): State<Api>, headers: HeaderMap) -> Response {
    // A page elsewhere posts without the session cookie (`SameSite=Strict`): the origin is
    // what refuses it. The form's token is not asked for: a page older than the session
    // (signed in again in another tab) carries the one before, and its sign-out was refused
    // while the session stayed. Past the origin check, a sign-out is the visitor's own.
    if super::session::from_another_origin(&headers) {
        return forbidden("Sign out from the console's own pages.");
    }
    if let Some(s) = Session::of(&api, &headers).await
        && let Some(id) = s.cookie.strip_prefix("p.")
        && let Err(e) = api.ports().portal.end_session(&hashed(id)).await
    {
        tracing::warn!(error = %e, "could not end a portal session");
    }
    let mut resp = see_other("/console/login");
    resp.headers_mut().append(header::SET_COOKIE, cookie_for(&api, &headers, COOKIE, "", 0, "Strict"));
    resp.headers_mut().append(header::SET_COOKIE, cookie_for(&api, &headers, FORMS_COOKIE, "", 0, "Lax"));
    // Signed out on purpose: the next page asked for must not sign in again by itself.
    resp.headers_mut().append(header::SET_COOKIE, issuer_cookie(&api, &headers, ""));
    resp
}

/// The `Set-Cookie` of a console cookie, `Secure` by the rules of [`set_cookie`] for this
/// deployment's public URL.
fn cookie_for(api: &Api, headers: &HeaderMap, name: &str, value: &str, max_age: i64, same_site: &str) -> HeaderValue {
    set_cookie(api.settings().public_url.as_deref(), headers, name, value, max_age, same_site)
}

/// The `Set-Cookie` of the forms cookie at a sign-in: the value the browser has, so the
/// forms open in its other tabs stay good (a renewal is a sign-in), or a new one.
fn forms_cookie(api: &Api, headers: &HeaderMap) -> HeaderValue {
    let value = forms_value(api.settings().public_url.as_deref(), headers).unwrap_or_else(fresh_code);
    cookie_for(api, headers, FORMS_COOKIE, &value, FORMS_COOKIE_SECS, "Lax")
}

/// The page of a portal link that could not be opened now (the store out of reach): a
/// page, not the API's problem document, since a person opened it.
fn portal_unavailable() -> Response {
    let mut resp = html(
        StatusCode::SERVICE_UNAVAILABLE,
        page(
            "Try again",
            None,
            html! { section.card.narrow {
                h1 { "The console could not be opened just now" }
                p { "Open the link again in a moment. If it has expired by then, ask for a new one where you got it." }
            } },
        ),
    );
    resp.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from_static("5"));
    resp
}

/// A `403` page saying why.
fn forbidden(why: &str) -> Response {
    html(StatusCode::FORBIDDEN, page("Forbidden", None, notice("error", why)))
}

fn challenge_of(verifier: &str) -> String {
    URL_SAFE_NO_PAD.encode(Sha256::digest(verifier.as_bytes()))
}

/// `GET /console/login/oidc`: to the issuer's sign-in page, with PKCE.
pub async fn oidc_start(State(api): State<Api>, headers: HeaderMap, RawQuery(q): RawQuery) -> Response {
    let Some(client_id) = api.settings().console_client_id.clone() else {
        return html(
            StatusCode::NOT_FOUND,
            login_markup(&api, Some("Sign-in through an identity provider is not configured.")),
        );
    };
    let (authorize, _) = match api.settings().tokens.login_endpoints().await {
        Ok(e) => e,
        Err(e) => {
            tracing::warn!(error = %e, "the issuer's endpoints could not be read");
            return html(
                StatusCode::BAD_GATEWAY,
                login_markup(&api, Some("The identity provider cannot be reached now.")),
            );
        }
    };
    let (state, verifier) = (fresh_code(), fresh_code());
    let redirect = format!("{}/console/callback", origin(&api, &headers));
    let Ok(mut url) = url::Url::parse(&authorize) else {
        return html(
            StatusCode::BAD_GATEWAY,
            login_markup(&api, Some("The identity provider's sign-in URL is not valid.")),
        );
    };
    url.query_pairs_mut()
        .append_pair("response_type", "code")
        .append_pair("client_id", &client_id)
        .append_pair("redirect_uri", &redirect)
        .append_pair("scope", &api.settings().console_scopes)
        .append_pair("state", &state)
        .append_pair("code_challenge", &challenge_of(&verifier))
        .append_pair("code_challenge_method", "S256");
    // The audience the API checks for: without it, Auth0 gives a token that is no JWT, and
    // others one for their own API. Issuers that do not know the parameter ignore it.
    if let Some(audience) = &api.settings().console_audience {
        url.query_pairs_mut().append_pair("audience", audience);
    }
    let mut resp = see_other(url.as_str());
    // Lax: the issuer sends the browser back with a top-level GET, which must carry it. The
    // page to return to rides with the state, encoded, so it cannot end the value early.
    let to = URL_SAFE_NO_PAD.encode(asked_to(q.as_deref()));
    resp.headers_mut().append(
        header::SET_COOKIE,
        cookie_for(&api, &headers, FLOW_COOKIE, &format!("{state}.{verifier}.{to}"), 600, "Lax"),
    );
    resp
}

/// The issuer's answer.
#[derive(Deserialize)]
pub struct Callback {
    code: Option<String>,
    state: Option<String>,
    error: Option<String>,
}

/// `GET /console/callback`: the code exchanged (with the verifier) for the issuer's token.
pub async fn oidc_callback(State(api): State<Api>, headers: HeaderMap, Query(cb): Query<Callback>) -> Response {
    let fail = |msg: &str| html(StatusCode::UNAUTHORIZED, login_markup(&api, Some(msg)));
    if let Some(e) = cb.error {
        // Anyone can link here with an `error` of their own ("your account is locked, call
        // …"): only an OAuth error code (RFC 6749: `access_denied`) is shown on this page.
        tracing::info!(error = %e, "the identity provider's sign-in ended with an error");
        let code = (e.len() <= 64 && !e.is_empty() && e.bytes().all(|b| b.is_ascii_lowercase() || b == b'_'))
            .then_some(e.as_str());
        return fail(&match code {
            Some(code) => format!("The identity provider refused the sign-in ({code})."),
            None => "The identity provider refused the sign-in.".to_owned(),
        });
    }
    let flow = console_cookie(api.settings().public_url.as_deref(), &headers, FLOW_COOKIE).unwrap_or_default();
    let mut parts = flow.splitn(3, '.');
    let (expected, verifier) = (parts.next().filter(|p| !p.is_empty()), parts.next());
    let to = parts.next().and_then(|t| URL_SAFE_NO_PAD.decode(t).ok()).and_then(|t| String::from_utf8(t).ok());
    let to = return_to(to.as_deref());
    let (Some(code), Some(state), Some((expected, verifier))) = (cb.code, cb.state, expected.zip(verifier)) else {
        return fail("The sign-in was not started here, or took too long; try again.");
    };
    if state != expected {
        return fail("The sign-in was not started here; try again.");
    }
    let (Some(client_id), Ok((_, token_endpoint))) =
        (api.settings().console_client_id.clone(), api.settings().tokens.login_endpoints().await)
    else {
        return fail("The identity provider cannot be reached now.");
    };
    let redirect = format!("{}/console/callback", origin(&api, &headers));
    let form = [
        ("grant_type", "authorization_code"),
        ("code", code.as_str()),
        ("redirect_uri", redirect.as_str()),
        ("client_id", client_id.as_str()),
        ("code_verifier", verifier),
    ];
    let token = match api.settings().tokens.exchange_code(&token_endpoint, &form).await {
        Ok(t) => t,
        Err(e) => {
            tracing::warn!(error = %e, "the authorization code could not be exchanged");
            return fail("The identity provider did not give a token.");
        }
    };
    // Refused, the issuer's token will not sign this browser in by itself next time either.
    let refused = |mut resp: Response| {
        resp.headers_mut().append(header::SET_COOKIE, issuer_cookie(&api, &headers, ""));
        resp
    };
    match api.settings().tokens.check(&token).await {
        Ok(caller) if !reads_hooks(&caller) => {
            return refused(not_signed_in(&api, StatusCode::FORBIDDEN, NO_HOOKS_READ));
        }
        Ok(_) => {}
        // The code is spent: trying again is signing in again, not reloading this page.
        Err(e) => {
            let status = refused_status(&e);
            let resp = html(status, login_markup(&api, Some(&e.to_string())));
            // Not refused, only not checkable now (the issuer's keys out of reach): the
            // next session that ends may go round again.
            return if status == StatusCode::SERVICE_UNAVAILABLE { resp } else { refused(resp) };
        }
    }
    if let Err(why) = fits_a_cookie(&token) {
        return refused(fail(&why));
    }
    let secs = token_session_secs(token_exp(&token));
    let mut resp = continue_to(&to, cookie_for(&api, &headers, COOKIE, &format!("t.{token}"), secs, "Strict"));
    resp.headers_mut().append(header::SET_COOKIE, cookie_for(&api, &headers, FLOW_COOKIE, "", 0, "Lax"));
    resp.headers_mut().append(header::SET_COOKIE, forms_cookie(&api, &headers));
    // When the console last sent this browser here by itself is kept: were the session
    // not kept, the next page would otherwise send it round again at once.
    let sent_at = console_cookie(api.settings().public_url.as_deref(), &headers, ISSUER_COOKIE)
        .filter(|v| v.parse::<i64>().is_ok())
        .unwrap_or_else(|| "0".to_owned());
    resp.headers_mut().append(header::SET_COOKIE, issuer_cookie(&api, &headers, &sent_at));
    resp
}

/// What a portal link carries.
#[derive(Deserialize)]
pub struct PortalLink {
    code: Option<String>,
}

/// `GET /console/portal?code=…`: a portal link, opened by a button, not by the visit: a
/// mail scanner's or chat preview's fetch would spend it, and a page elsewhere could open
/// its own link in the visitor's browser to sign them in to its tenant. The code rides in
/// the query, not the path: API Gateway's access log writes every path, and a code logged
/// there could be redeemed by whoever reads the log until the link expires.
pub async fn portal_page(Query(link): Query<PortalLink>) -> Response {
    match link.code {
        Some(code) if !code.is_empty() => portal_form(&code),
        _ => html(
            StatusCode::BAD_REQUEST,
            page(
                "Incomplete link",
                None,
                html! { section.card.narrow {
                    h1 { "This link is incomplete" }
                    p { "Open the whole link you were given, or ask for a new one." }
                } },
            ),
        ),
    }
}

/// The page whose button opens the link, posting its code.
fn portal_form(code: &str) -> Response {
    html(
        StatusCode::OK,
        page(
            "Open the console",
            None,
            html! { section.card.narrow {
                h1 { "Open the console" }
                p { "This link opens the console once, for the hooks it was made for." }
                form method="post" action="/console/portal" {
                    input type="hidden" name="code" value=(code);
                    button.primary type="submit" { "Open the console" }
                }
            } },
        ),
    )
}

/// Whose a session is, as the visitor is told: the tenant, and the sites it is held to (a
/// site whose name holds a comma quoted, so `a, b` is not taken for two).
fn whose(tenant: &hookbridge_core::ids::TenantId, sites: &[String]) -> String {
    let sites = site_set(sites);
    if sites.is_empty() {
        return tenant.to_string();
    }
    let named: Vec<String> = sites
        .iter()
        .map(|s| if s.contains(',') || s.trim() != *s { format!("\"{s}\"") } else { (*s).to_owned() })
        .collect();
    format!("{tenant} (sites {})", named.join(", "))
}

/// The sites a session is held to, each once, in order.
fn site_set(sites: &[String]) -> std::collections::BTreeSet<&str> {
    sites.iter().map(String::as_str).collect()
}

/// The page asking a visitor signed in to `current` whether to open a link to `other`,
/// which ends their session; `None` when their sign-in through the issuer has lapsed, and
/// the link would take the place of the session the console would renew.
fn switch_form(code: &str, current: Option<&str>, other: &str) -> Response {
    html(
        StatusCode::OK,
        page(
            "Switch tenants?",
            None,
            html! { section.card.narrow {
                @if let Some(current) = current {
                    h1 { "This link is for someone else's console" }
                    p {
                        "You are signed in to " strong { (current) } ". This link opens the console for "
                        strong { (other) } " instead, and ends your session. Open it only if you expected a link to "
                        (other) " from someone you trust."
                    }
                } @else {
                    h1 { "Open this link in place of your sign-in?" }
                    p {
                        "You signed in to the console in this browser before. This link opens the console for "
                        strong { (other) } " instead of the one your sign-in would bring back. Open it only if you expected a link to "
                        (other) " from someone you trust."
                    }
                }
                form method="post" action="/console/portal" {
                    input type="hidden" name="code" value=(code);
                    input type="hidden" name="switch" value="yes";
                    button.primary type="submit" { "Open " (other) }
                }
                p { a href="/console/hooks" {
                    @if let Some(current) = current { "Stay in " (current) } @else { "Back to your console" }
                } }
            } },
        ),
    )
}

/// `POST /console/portal` with the link's `code` (in the form, or the link's own query):
/// the portal link opened, once, from its own page.
pub async fn portal(
    State(api): State<Api>,
    headers: HeaderMap,
    Query(link): Query<PortalLink>,
    body: axum::body::Bytes,
) -> Response {
    if super::session::from_another_origin(&headers) {
        return forbidden("Open a portal link from its own page.");
    }
    let fields = form::parse(&body);
    let code = form::value(&fields, "code").or(link.code.as_deref()).unwrap_or_default();
    let switching = form::value(&fields, "switch") == Some("yes");
    let now = Utc::now();
    let grant = match api.ports().portal.redeem_link(&hashed(code), now).await {
        Ok(Some(g)) => g,
        Ok(None) => {
            return html(
                StatusCode::GONE,
                page(
                    "Link expired",
                    None,
                    html! { section.card.narrow {
                        h1 { "This link has expired" }
                        p { "A portal link opens once, within minutes of being made. Ask for a new one where you got this one." }
                    } },
                ),
            );
        }
        Err(e) => {
            tracing::error!(error = %e, "a portal link could not be read");
            return portal_unavailable();
        }
    };
    // Signed in to another tenant, or to other sites of this one (a site's session is
    // held apart as another tenant is): a link someone sent would otherwise replace that
    // session with one of theirs in one click, and what the visitor then set up (a hook
    // with their own receiver's credentials) would be the sender's. Asked first, the link
    // put back until the answer; and put back if the session cannot be told now.
    if !switching {
        let asked = match super::session::Session::checked(&api, &headers).await {
            Ok(Some(current)) => {
                // Told apart by what they are, not by how they read: sites `a` and `b` read
                // as one site named `a, b` did.
                let same =
                    current.caller.tenant == grant.tenant && site_set(&current.caller.sites) == site_set(&grant.sites);
                let (now_in, link_to) =
                    (whose(&current.caller.tenant, &current.caller.sites), whose(&grant.tenant, &grant.sites));
                (!same).then(|| switch_form(code, Some(&now_in), &link_to))
            }
            // Signed in through the issuer before, the session lapsed with its token (five
            // minutes, by Keycloak's default) and the console would renew it on the next
            // page: the link would take its place unasked, as it would a live one's. (A marker
            // left from before the issuer's sign-in was switched off costs a question.)
            Ok(None)
                if console_cookie(api.settings().public_url.as_deref(), &headers, ISSUER_COOKIE)
                    .is_some_and(|v| v.parse::<i64>().is_ok()) =>
            {
                Some(switch_form(code, None, &whose(&grant.tenant, &grant.sites)))
            }
            Ok(None) => None,
            Err(e) => {
                tracing::error!(error = %e, "the session beside a portal link could not be checked");
                Some(portal_unavailable())
            }
        };
        if let Some(page) = asked {
            if let Err(e) = api.ports().portal.put_link(&hashed(code), &grant).await {
                tracing::error!(error = %e, "a portal link held for the visitor's answer could not be put back");
                return portal_unavailable();
            }
            return page;
        }
    }
    let mut session = grant.clone();
    session.expires_at = now + SESSION_LASTS;
    let id = fresh_code();
    if let Err(e) = api.ports().portal.put_session(&hashed(&id), &session).await {
        // The link was spent on a session that was not made: put back, it opens on the
        // next try, as the page says, rather than leave the customer to ask for another.
        tracing::error!(error = %e, "a portal session could not be stored; its link is put back");
        if let Err(e) = api.ports().portal.put_link(&hashed(code), &grant).await {
            tracing::error!(error = %e, "a portal link spent on no session could not be put back");
        }
        return portal_unavailable();
    }
    let grant = session;
    tracing::info!(tenant = %grant.tenant, read_only = grant.read_only, "portal session opened");
    let mut resp = continue_to(
        "/console/hooks",
        cookie_for(&api, &headers, COOKIE, &format!("p.{id}"), SESSION_LASTS.num_seconds(), "Strict"),
    );
    resp.headers_mut().append(header::SET_COOKIE, forms_cookie(&api, &headers));
    // A portal session that ends is the product's to open again, not the issuer's.
    resp.headers_mut().append(header::SET_COOKIE, issuer_cookie(&api, &headers, ""));
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_pkce_challenge_is_the_verifiers_s256() {
        // RFC 7636, appendix B.
        assert_eq!(
            challenge_of("dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk"),
            "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM"
        );
    }
}
