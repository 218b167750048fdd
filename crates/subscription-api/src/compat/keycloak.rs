//! Keycloak (Phase Two)'s webhooks API: `/auth/realms/{realm}/webhooks…`, and the same under
//! `/realms/…` as newer Keycloak serves it without `/auth`.
//!
//! `{realm}` is the token's tenant (any other realm is `404`); `hooks:read` stands for
//! `view-events` and `hooks:write` for `manage-events`. A webhook is a hook: created with
//! the client's own secret as its signing key, the event's `detail` as the body, and
//! `X-Keycloak-Signature` beside Standard Webhooks' headers when the client gave a secret. Listing shows the tenant's
//! hooks oldest first, paged as Phase Two pages (`first`, `max`: 100 at most), and
//! `…/webhooks/count` counts them; a webhook's sends are its deliveries
//! (`compat::keycloak_sends`). An update changes only the fields a webhook has (`enabled`,
//! `url`, `secret`, `eventTypes`) and keeps the rest. Errors are `{"error": "…"}` with the
//! status.

use axum::Json;
use axum::body::Body;
use axum::extract::rejection::PathRejection;
use axum::extract::{OriginalUri, Path, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use chrono::SecondsFormat;
use hookbridge_core::hook::{ConnectionState, Hook};
use hookbridge_core::ports::Page;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::keycloak_sends as sends;
use crate::auth::{Caller, Scope};
use crate::body::{ApiQuery, parse_object, read_body};
use crate::dto::HookOut;
use crate::error::ApiError;
use crate::hooks::{TenantBytes, create_hook, delete_hook, load, replace_hook_from};
use crate::{Api, Router};

/// The routes, under both prefixes.
pub fn routes() -> Router<Api> {
    let mut r = Router::new();
    for prefix in ["/auth/realms", "/realms"] {
        r = r
            .route(&format!("{prefix}/{{realm}}/webhooks"), get(list).post(create))
            .route(&format!("{prefix}/{{realm}}/webhooks/count"), get(count))
            .route(&format!("{prefix}/{{realm}}/webhooks/{{id}}"), get(read).put(update).delete(remove))
            .route(&format!("{prefix}/{{realm}}/webhooks/{{id}}/sends"), get(sends::list))
            .route(&format!("{prefix}/{{realm}}/webhooks/{{id}}/sends/{{sid}}"), get(sends::read))
            .route(&format!("{prefix}/{{realm}}/webhooks/{{id}}/sends/{{sid}}/resend"), post(sends::resend));
    }
    r
}

/// A webhook as Keycloak clients send it; `id`, `createdBy`, `createdAt` and anything else
/// are ignored.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct WebhookIn {
    enabled: Option<Value>,
    url: Option<String>,
    secret: Option<String>,
    event_types: Option<Vec<String>>,
    algorithm: Option<String>,
}

/// The one signing algorithm here: Phase Two's default, `HmacSHA256`. Another (its
/// `HmacSHA1`, kept for older receivers) was taken and ignored, and the receiver, checking
/// 40 hex characters of SHA-1 against 64 of SHA-256, refused every delivery.
fn only_sha256(w: &WebhookIn) -> Result<(), ApiError> {
    // Phase Two hands the name to Java's `Mac.getInstance`, which reads it in any case.
    match w.algorithm.as_deref() {
        None | Some("") => Ok(()),
        Some(a) if a.eq_ignore_ascii_case("HmacSHA256") => Ok(()),
        Some(_) => Err(ApiError::field(
            "algorithm",
            "must be HmacSHA256: X-Keycloak-Signature is the hex HMAC-SHA256 of the body",
        )),
    }
}

/// Event types as Keycloak's events are named on the bus. Phase Two's own documentation
/// spells a specific admin type both `admin.CLIENT-*` and `admin-USER-CREATE`; events
/// are published as `admin.…` (and `access.…`), so a type written with the dash would
/// match nothing, silently. It is read as written with the dot, when what follows the
/// dash is a Keycloak name (`USER-CREATE`, `LOGIN_ERROR`, `CLIENT-*`): another type that
/// begins so (`access-point.*`, a hook's own) is kept as it is, or a client's read, edit
/// and write back of the webhook would move it to types that never come.
///
/// `*` is "send all events" of Keycloak's, its user and admin events (`access.*`,
/// `admin.*`): as a glob it was every type the tenant publishes, and another product's
/// events reached the receiver signed as Keycloak's. Left out, the types are the same.
fn keycloak_types(types: &[String]) -> Vec<String> {
    let keycloak_name = |rest: &str| {
        rest.starts_with(|c: char| c.is_ascii_uppercase())
            && rest.chars().all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || matches!(c, '_' | '-' | '*'))
    };
    let mut out: Vec<String> = Vec::with_capacity(types.len() + 1);
    // Told apart by a set: a list of a few hundred thousand, refused later for its length,
    // took minutes of the CPU compared one by one with those before it.
    let mut seen = std::collections::HashSet::new();
    for t in types {
        let named = match ["admin-", "access-"].iter().find(|p| t.starts_with(**p) && keycloak_name(&t[p.len()..])) {
            Some(p) => vec![format!("{}.{}", &p[..p.len() - 1], &t[p.len()..])],
            None if t == "*" => KEYCLOAK_EVENTS.map(str::to_owned).to_vec(),
            None => vec![t.clone()],
        };
        for n in named {
            if seen.insert(n.clone()) {
                out.push(n);
            }
        }
    }
    out
}

/// Every event of Keycloak's: what its `*` stands for.
const KEYCLOAK_EVENTS: [&str; 2] = ["access.*", "admin.*"];

/// A hook's event types as a Keycloak client reads them: Keycloak's every event is its `*`,
/// in the place of the first of them, beside any other types (`["*", "access.LOGIN"]` reads
/// back as written; only when alone were they read as `*`, and a client comparing what it
/// wrote with what it read saw a change on every run).
fn as_keycloak_reads(patterns: Vec<String>) -> Vec<String> {
    if !KEYCLOAK_EVENTS.iter().all(|k| patterns.iter().any(|p| p == k)) {
        return patterns;
    }
    let mut star = Some("*".to_owned());
    patterns
        .into_iter()
        .filter_map(|p| if KEYCLOAK_EVENTS.contains(&p.as_str()) { star.take() } else { Some(p) })
        .collect()
}

/// Refuses an event type of Keycloak's (`admin…`, `access…`) written as a regular
/// expression, which Phase Two matches as one (`admin.USER-.*`, `access.(LOGIN|LOGOUT)`):
/// here types are globs, and such a pattern was taken and then matched nothing, silently.
/// Other types are left alone: a hook's own glob may hold any of these characters, and a
/// client writing the webhook back as it read it must not be refused for it.
fn no_regex(types: Option<&[String]>) -> Result<(), ApiError> {
    // Keycloak's names never have a dot after `-` or `_`: there, `.*` is a regex's.
    let regex = |t: &str| {
        (t.starts_with("admin") || t.starts_with("access"))
            && (t.contains(['(', ')', '|', '[', ']', '+', '?', '\\', '^', '$', '{', '}'])
                || t.contains("-.*")
                || t.contains("_.*"))
    };
    match types.into_iter().flatten().position(|t| regex(t)) {
        Some(i) => Err(ApiError::field(
            format!("eventTypes[{i}]"),
            "is a regular expression; event types here are matched as globs: * stands for any run of characters (admin.USER-*, access.*)",
        )),
        None => Ok(()),
    }
}

/// The webhook's secret: Phase Two takes an empty one as none (on create) or as the
/// one it has (on update), where a Hookbridge secret must be 8 characters or more.
fn secret_of(w: &WebhookIn) -> Result<Option<hookbridge_core::secret::SigningSecret>, ApiError> {
    super::client_secret(w.secret.as_deref().filter(|s| !s.is_empty()))
}

/// A webhook as Keycloak returns it: never its secret.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct WebhookOut {
    id: String,
    enabled: bool,
    url: String,
    event_types: Vec<String>,
    created_by: String,
    created_at: String,
    realm: String,
}

impl From<&Hook> for WebhookOut {
    fn from(h: &Hook) -> Self {
        Self {
            id: h.id.to_string(),
            realm: h.tenant.to_string(),
            enabled: super::switched_on(h),
            url: h.config.url.clone(),
            event_types: as_keycloak_reads(h.config.event_types.iter().map(|p| p.as_str().to_owned()).collect()),
            created_by: h.created_by.clone(),
            created_at: h.created_at.to_rfc3339_opts(SecondsFormat::Secs, false),
        }
    }
}

/// An error as Keycloak clients read it.
pub(super) struct KeycloakError(pub(super) ApiError);

impl From<ApiError> for KeycloakError {
    /// Fields are named as the client wrote them: `eventTypes[0]`, not the hook's
    /// `event_types[0]`.
    fn from(e: ApiError) -> Self {
        Self(match e {
            ApiError::Invalid { detail, errors } => ApiError::Invalid {
                detail,
                errors: errors
                    .into_iter()
                    .map(|f| match f.field.strip_prefix("event_types") {
                        Some(rest) => {
                            hookbridge_core::validation::FieldError::new(format!("eventTypes{rest}"), f.message)
                        }
                        None => f,
                    })
                    .collect(),
            },
            other => other,
        })
    }
}

impl IntoResponse for KeycloakError {
    fn into_response(self) -> Response {
        if let ApiError::Internal(e) = &self.0 {
            tracing::error!(error = %e, "keycloak webhooks request failed");
        }
        let mut resp = (self.0.status(), Json(json!({ "error": super::message(&self.0) }))).into_response();
        self.0.set_headers(resp.headers_mut());
        resp
    }
}

pub(super) type Answer = Result<Response, KeycloakError>;

/// The caller, with `scope`, acting in its own realm. Phase Two's own permissions stand for
/// the scopes here, granted as Keycloak grants them, as roles of the realm's
/// `realm-management` client: `view-events` for `hooks:read`, `manage-events` for
/// `hooks:write`. A client's token from that Keycloak works as it did with Phase Two.
pub(super) fn authorised(
    caller: Result<Caller, ApiError>,
    scope: Scope,
    realm: Option<&str>,
) -> Result<Caller, ApiError> {
    let mut caller = caller?;
    for (role, granted) in [("view-events", Scope::HooksRead), ("manage-events", Scope::HooksWrite)] {
        if caller.realm_roles.iter().any(|r| r == role) && caller.require(granted).is_err() {
            caller.scopes.push(granted.as_str().to_owned());
        }
    }
    caller.require(scope)?;
    if realm != Some(caller.tenant.as_str()) {
        return Err(ApiError::NotFound("no such realm"));
    }
    Ok(caller)
}

/// `enabled` as `true`/`false` or the strings `"true"`/`"false"`, as Keycloak's own
/// examples write it.
fn enabled(v: Option<&Value>) -> Result<Option<bool>, ApiError> {
    match v {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Bool(b)) => Ok(Some(*b)),
        Some(Value::String(s)) if s.eq_ignore_ascii_case("true") => Ok(Some(true)),
        Some(Value::String(s)) if s.eq_ignore_ascii_case("false") => Ok(Some(false)),
        Some(_) => Err(ApiError::field("enabled", "must be true or false")),
    }
}

/// The most a page of webhooks or sends holds, and how many one holds when `max` is not
/// given: Phase Two's own limit. A client that pages until a page comes back short ends.
const MAX_RESULTS: usize = 100;

/// `first` and `max`, as Phase Two's lists take them; anything else is ignored.
#[derive(Debug, Deserialize)]
pub(super) struct Paging {
    first: Option<String>,
    max: Option<String>,
}

/// The most a page may pass over. Phase Two's database skips rows itself; here the store is
/// read up to the page, so a `first` of millions would read a hook's whole history (on
/// DynamoDB, every shard's) for one answer.
const MAX_FIRST: usize = 10_000;

impl Paging {
    /// How many to pass over and how many to return, checked.
    fn bounds(&self) -> Result<(usize, usize), ApiError> {
        let first = count_param("first", self.first.as_deref(), 0)?;
        if first > MAX_FIRST {
            return Err(ApiError::field("first", format!("must be at most {MAX_FIRST}")));
        }
        let max = count_param("max", self.max.as_deref(), MAX_RESULTS)?.min(MAX_RESULTS);
        Ok((first, max))
    }
}

/// A whole number of 0 or more, or `default` when absent.
fn count_param(name: &str, v: Option<&str>, default: usize) -> Result<usize, ApiError> {
    v.map_or(Ok(default), |v| v.trim().parse().map_err(|_| ApiError::field(name, "must be a whole number, 0 or more")))
}

/// The page `paging` asks for, of the items `read` lists a store page at a time (each
/// page after the cursor the last one gave) that `listed` keeps, each as `show` shows it.
/// Stores page by cursor, Phase Two by offset: the store is read only as far as the page
/// reaches, the items before it counted, not shown.
pub(super) async fn offset_page<T, O, F, Fut>(
    paging: &Paging,
    mut read: F,
    mut listed: impl FnMut(&T) -> bool,
    mut show: impl FnMut(&T) -> O,
) -> Result<Vec<O>, ApiError>
where
    F: FnMut(Option<String>) -> Fut,
    Fut: Future<Output = hookbridge_core::Result<Page<T>>>,
{
    let (first, max) = paging.bounds()?;
    let (mut skipped, mut out, mut cursor) = (0, Vec::with_capacity(max), None);
    while out.len() < max {
        let page = read(cursor.take()).await?;
        for item in page.items.iter().filter(|t| listed(t)) {
            if skipped < first {
                skipped += 1;
            } else if out.len() < max {
                out.push(show(item));
            }
        }
        match page.next_cursor {
            Some(next) => cursor = Some(next),
            None => break,
        }
    }
    Ok(out)
}

/// Whether the caller is shown `h` in the list and the count.
fn listed(caller: &Caller, h: &Hook) -> bool {
    h.state.connection_state != ConnectionState::Deleting && caller.sees(h)
}

async fn list(
    State(api): State<Api>,
    caller: Result<Caller, ApiError>,
    path: Result<Path<String>, PathRejection>,
    query: Result<ApiQuery<Paging>, ApiError>,
) -> Answer {
    let caller = authorised(caller, Scope::HooksRead, super::segments(path).as_deref())?;
    let ApiQuery(paging) = query?;
    let hooks = &api.ports().hooks;
    let read = |cursor: Option<String>| {
        let tenant = &caller.tenant;
        async move { hooks.list(tenant, MAX_RESULTS, cursor.as_deref()).await }
    };
    let out = offset_page(&paging, read, |h: &Hook| listed(&caller, h), |h: &Hook| WebhookOut::from(h)).await?;
    Ok(Json(out).into_response())
}

/// `…/webhooks/count`: how many webhooks the list holds, as a bare number.
async fn count(
    State(api): State<Api>,
    caller: Result<Caller, ApiError>,
    path: Result<Path<String>, PathRejection>,
) -> Answer {
    let caller = authorised(caller, Scope::HooksRead, super::segments(path).as_deref())?;
    // A page at a time: only the count is kept.
    let (mut n, mut cursor) = (0usize, None::<String>);
    loop {
        let page =
            api.ports().hooks.list(&caller.tenant, MAX_RESULTS, cursor.as_deref()).await.map_err(ApiError::from)?;
        n += page.items.iter().filter(|h| listed(&caller, h)).count();
        match page.next_cursor {
            Some(next) => cursor = Some(next),
            None => break,
        }
    }
    Ok(Json(n).into_response())
}

async fn create(
    State(api): State<Api>,
    caller: Result<Caller, ApiError>,
    path: Result<Path<String>, PathRejection>,
    OriginalUri(uri): OriginalUri,
    body: Body,
) -> Answer {
    let caller = authorised(caller, Scope::HooksWrite, super::segments(path).as_deref())?;
    let w: WebhookIn = parse_object(&read_body(body).await?)?;
    no_regex(w.event_types.as_deref())?;
    only_sha256(&w)?;
    let signing = secret_of(&w)?;
    let draft = super::draft(json!({
        "name": super::generated_name("keycloak"),
        "url": w.url,
        "enabled": enabled(w.enabled.as_ref())?.unwrap_or(true),
        "event_types": keycloak_types(w.event_types.as_deref().unwrap_or(&["*".to_owned()])),
        "payload": "detail",
        // "Webhooks are sent using an automatic exponential backoff if there is not a 2xx
        // response": a 404 while the receiver is deployed is tried again, not given up.
        "retry_non_2xx": true,
        // Keycloak signs only with a secret the client set: with one it never saw, the
        // header would fail every receiver that checks it.
        "signature_formats": if signing.is_some() { json!(["keycloak"]) } else { json!([]) },
    }))?;
    let (hook, _) = create_hook(&api, &caller, draft, signing, &mut TenantBytes::default()).await?;
    let location = format!("{}/{}", uri.path().trim_end_matches('/'), hook.id);
    Ok((StatusCode::CREATED, [(header::LOCATION, location)]).into_response())
}

async fn read(
    State(api): State<Api>,
    caller: Result<Caller, ApiError>,
    path: Result<Path<(String, String)>, PathRejection>,
) -> Answer {
    let (realm, id) = super::segments(path).unzip();
    let caller = authorised(caller, Scope::HooksRead, realm.as_deref())?;
    let id = id.unwrap_or_default();
    Ok(Json(WebhookOut::from(&load(&api, &caller, &id).await?)).into_response())
}

async fn update(
    State(api): State<Api>,
    caller: Result<Caller, ApiError>,
    path: Result<Path<(String, String)>, PathRejection>,
    body: Body,
) -> Answer {
    let (realm, id) = super::segments(path).unzip();
    let caller = authorised(caller, Scope::HooksWrite, realm.as_deref())?;
    let id = id.unwrap_or_default();
    let w: WebhookIn = parse_object(&read_body(body).await?)?;
    no_regex(w.event_types.as_deref())?;
    only_sha256(&w)?;
    let signing = secret_of(&w)?;
    let sets_secret = signing.is_some();
    let enabled = enabled(w.enabled.as_ref())?;
    // The hook as it is when written, with the webhook's fields changed: everything else is
    // kept, a change another client made meanwhile included.
    let draft_of = |stored: &Hook| {
        let mut doc = serde_json::to_value(HookOut::from(stored))
            .map_err(|e| ApiError::Internal(hookbridge_core::Error::backend("keycloak.encode", e)))?;
        if let Some(url) = &w.url {
            doc["url"] = json!(url);
        }
        if let Some(e) = enabled {
            doc["enabled"] = json!(e);
        }
        if let Some(types) = &w.event_types {
            doc["event_types"] = json!(keycloak_types(types));
        }
        // A client that sets a secret here expects Keycloak's signature with it, whichever
        // API made the hook.
        if sets_secret
            && let Some(formats) = doc["signature_formats"].as_array_mut()
            && !formats.iter().any(|f| f == "keycloak")
        {
            formats.push(json!("keycloak"));
        }
        super::draft(doc)
    };
    replace_hook_from(&api, &caller, &id, draft_of, signing, None).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

async fn remove(
    State(api): State<Api>,
    caller: Result<Caller, ApiError>,
    path: Result<Path<(String, String)>, PathRejection>,
) -> Answer {
    let (realm, id) = super::segments(path).unzip();
    let caller = authorised(caller, Scope::HooksWrite, realm.as_deref())?;
    let id = id.unwrap_or_default();
    delete_hook(&api, &caller, &id).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

#[cfg(test)]
mod tests {
    use super::{as_keycloak_reads, keycloak_types};

    /// Keycloak's `*` reads back as written, beside other types too.
    #[test]
    fn keycloaks_every_event_reads_back_as_its_star() {
        let round_trip = |written: &[&str]| {
            as_keycloak_reads(keycloak_types(&written.iter().map(|t| (*t).to_owned()).collect::<Vec<_>>()))
        };
        assert_eq!(round_trip(&["*"]), ["*"]);
        assert_eq!(round_trip(&["*", "access.LOGIN"]), ["*", "access.LOGIN"]);
        assert_eq!(round_trip(&["admin.USER-CREATE", "*"]), ["admin.USER-CREATE", "*"]);
        assert_eq!(round_trip(&["access.*"]), ["access.*"]);
        assert_eq!(round_trip(&["access.LOGIN", "admin-USER-CREATE"]), ["access.LOGIN", "admin.USER-CREATE"]);
    }

    /// Keycloak's names written with a dash are read with the dot; another type that only
    /// begins so is kept as it is.
    #[test]
    fn only_keycloak_names_written_with_a_dash_are_read_with_the_dot() {
        let types = [
            "admin-USER-CREATE",
            "access-LOGIN_ERROR",
            "admin-CLIENT-*",
            "access-*",
            "access-point.*",
            "admin-user.created",
        ];
        let read = keycloak_types(&types.map(str::to_owned));
        assert_eq!(
            read,
            [
                "admin.USER-CREATE",
                "access.LOGIN_ERROR",
                "admin.CLIENT-*",
                "access-*",
                "access-point.*",
                "admin-user.created"
            ]
        );
    }
}
