//! `/v1/event-types`: the tenant's known event types (declared, and seen in the last 30
//! days), declaring one (with an optional JSON Schema its events must satisfy), which known
//! types a pattern matches, and the seed products' catalogs, loaded with one call.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use chrono::Utc;
use hookbridge_core::catalog::{self, DeclaredType, KnownType};
use hookbridge_core::ids::TenantId;
use hookbridge_core::pattern::EventTypePattern;
use hookbridge_core::validation::FieldError;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::Api;
use crate::auth::{Caller, Reader, Writer};
use crate::body::{ApiQuery, JsonBody, NoQuery, parse_object};
use crate::declared_schema::DeclaredSchema;
use crate::error::ApiError;

/// The catalogs shipped with the platform: the seed products' event types.
const CATALOGS: [(&str, &str); 4] = [
    ("keycloak", include_str!("../catalogs/keycloak.json")),
    ("extremecloud-iq", include_str!("../catalogs/extremecloud-iq.json")),
    ("unifi", include_str!("../catalogs/unifi.json")),
    ("hypr", include_str!("../catalogs/hypr.json")),
];

/// How long a process trusts the declared schemas it read (a declaration made through
/// another process applies within this).
pub const SCHEMAS_KEPT_FOR: Duration = Duration::from_secs(10);

#[derive(Debug, Deserialize)]
struct Catalog {
    description: String,
    types: Vec<CatalogType>,
}

#[derive(Debug, Deserialize)]
struct CatalogType {
    name: String,
    description: String,
}

fn catalog(name: &str) -> Option<Catalog> {
    CATALOGS.iter().find(|(n, _)| *n == name).and_then(|(_, text)| serde_json::from_str(text).ok())
}

/// A known type as the API shows it.
#[derive(Debug, Serialize)]
struct TypeOut {
    name: String,
    declared: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    description: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    schema: Option<Value>,
    last_seen_at: Option<String>,
}

impl From<KnownType> for TypeOut {
    fn from(k: KnownType) -> Self {
        let declared = k.declared.is_some();
        let (description, schema) = k.declared.map(|d| (d.description, d.schema)).unwrap_or_default();
        Self { declared, name: k.name, description, schema, last_seen_at: k.last_seen.map(|t| t.to_rfc3339()) }
    }
}

async fn known(api: &Api, caller: &Caller) -> Result<Vec<KnownType>, ApiError> {
    let store = &api.ports().event_types;
    let tenant = &caller.tenant;
    let declared = store.declared(tenant).await?;
    let seen = store.seen(tenant, Utc::now() - catalog::SEEN_FOR, catalog::seen_to_read(declared.len())).await?;
    Ok(visible_to(caller, catalog::merge(declared, seen)))
}

/// The types `caller` may know of. A caller held to some sites (a portal session of one
/// of the tenant's customers) sees the tenant's declared types, without when they were
/// last seen: which types went through, and when, is about every site's events, and a
/// session for one customer listed another's (`custB.invoice`).
fn visible_to(caller: &Caller, known: Vec<KnownType>) -> Vec<KnownType> {
    if caller.sites.is_empty() {
        return known;
    }
    known.into_iter().filter(|k| k.declared.is_some()).map(|k| KnownType { last_seen: None, ..k }).collect()
}

/// `GET /v1/event-types`.
pub async fn list(State(api): State<Api>, Reader(caller): Reader) -> Result<Json<Value>, ApiError> {
    let types: Vec<TypeOut> = known(&api, &caller).await?.into_iter().map(TypeOut::from).collect();
    Ok(Json(json!({ "event_types": types })))
}

/// `PUT /v1/event-types/{name}` as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct DeclareIn {
    description: Option<String>,
    schema: Option<Value>,
}

/// `PUT /v1/event-types/{name}`: declares it (or replaces the declaration).
pub async fn declare(
    State(api): State<Api>,
    Writer(caller): Writer,
    Path(name): Path<String>,
    query: Result<ApiQuery<NoQuery>, ApiError>,
    JsonBody(bytes): JsonBody,
) -> Result<Response, ApiError> {
    // The body's type and size are answered first (`415`, `413`), as on every route; its
    // query is part of what it says (`400`).
    query?;
    catalog::check_name(&name).map_err(|m| ApiError::field("name", m))?;
    let d: DeclareIn = parse_object(&bytes)?;
    let mut errors = Vec::new();
    if d.description.as_ref().is_some_and(|t| t.chars().count() > catalog::MAX_DESCRIPTION_LEN) {
        errors.push(FieldError::new(
            "description",
            format!("must be at most {} characters", catalog::MAX_DESCRIPTION_LEN),
        ));
    }
    if let Some(schema) = &d.schema {
        if schema.to_string().len() > catalog::MAX_SCHEMA_BYTES {
            errors.push(FieldError::new("schema", format!("must be at most {} bytes", catalog::MAX_SCHEMA_BYTES)));
        } else if let Err(e) = DeclaredSchema::compile(schema) {
            errors.push(FieldError::new("schema", format!("is not a valid JSON Schema (2020-12): {e}")));
        }
    }
    if !errors.is_empty() {
        return Err(ApiError::fields(errors));
    }
    let store = &api.ports().event_types;
    let declared = store.declared(&caller.tenant).await?;
    if declared.len() >= catalog::MAX_DECLARED && !declared.iter().any(|t| t.name == name) {
        return Err(declared_quota());
    }
    let others: usize =
        declared.iter().filter(|t| t.name != name).map(|t| answered_size(&t.description, &t.schema)).sum();
    let now = declared.iter().find(|t| t.name == name).map_or(0, |t| answered_size(&t.description, &t.schema));
    let new = answered_size(&d.description, &d.schema);
    // A tenant over the budget (descriptions counted since it declared them) may still
    // shrink a declaration.
    if others + new > catalog::MAX_SCHEMAS_BYTES && new > now {
        return Err(schemas_quota(others));
    }
    let t = DeclaredType { name, description: d.description, schema: d.schema, updated_at: Utc::now() };
    store.declare(&caller.tenant, &t).await?;
    api.schemas().forget(&caller.tenant);
    tracing::info!(tenant = %caller.tenant, event_type = %t.name, "event type declared");
    let out = TypeOut::from(KnownType { name: t.name.clone(), declared: Some(t), last_seen: None });
    Ok((StatusCode::OK, Json(out)).into_response())
}

/// `DELETE /v1/event-types/{name}`: forgets the declaration (a type seen lately stays known).
pub async fn undeclare(
    State(api): State<Api>,
    Writer(caller): Writer,
    Path(name): Path<String>,
    _: ApiQuery<NoQuery>,
) -> Result<StatusCode, ApiError> {
    // A name no declaration could have is not looked up (DynamoDB refuses a key that long).
    // Held to the length only: one declared before `/`, `?`, `#` and `%` were refused can
    // still be forgotten where the path arrives as sent (the embedded backend, the function
    // URL); behind API Gateway, which decodes it, such a name never arrives as written.
    let unheld = name.is_empty() || name.len() > catalog::MAX_NAME_LEN;
    if unheld || !api.ports().event_types.undeclare(&caller.tenant, &name).await? {
        return Err(ApiError::NotFound("no such declared event type"));
    }
    api.schemas().forget(&caller.tenant);
    Ok(StatusCode::NO_CONTENT)
}

/// `PUT /v1/event-types/match`: the type named `match`, whose path the router gives to
/// `GET …/match` before `{name}`.
pub async fn declare_match(
    api: State<Api>,
    caller: Writer,
    query: Result<ApiQuery<NoQuery>, ApiError>,
    body: JsonBody,
) -> Result<Response, ApiError> {
    declare(api, caller, Path("match".to_owned()), query, body).await
}

/// `DELETE /v1/event-types/match`.
pub async fn undeclare_match(
    api: State<Api>,
    caller: Writer,
    query: ApiQuery<NoQuery>,
) -> Result<StatusCode, ApiError> {
    undeclare(api, caller, Path("match".to_owned()), query).await
}

/// `PUT /v1/event-types/catalogs`: the type named `catalogs` (see [`declare_match`]).
pub async fn declare_catalogs(
    api: State<Api>,
    caller: Writer,
    query: Result<ApiQuery<NoQuery>, ApiError>,
    body: JsonBody,
) -> Result<Response, ApiError> {
    declare(api, caller, Path("catalogs".to_owned()), query, body).await
}

/// `DELETE /v1/event-types/catalogs`.
pub async fn undeclare_catalogs(
    api: State<Api>,
    caller: Writer,
    query: ApiQuery<NoQuery>,
) -> Result<StatusCode, ApiError> {
    undeclare(api, caller, Path("catalogs".to_owned()), query).await
}

/// Query of `GET /v1/event-types/match`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MatchQuery {
    pattern: Option<String>,
}

/// `GET /v1/event-types/match?pattern=…`: which known types a hook's pattern would match.
pub async fn matching(
    State(api): State<Api>,
    Reader(caller): Reader,
    ApiQuery(q): ApiQuery<MatchQuery>,
) -> Result<Json<Value>, ApiError> {
    let raw = q.pattern.ok_or_else(|| ApiError::field("pattern", "is required"))?;
    let matched = matches_of(&api, &caller, &[raw.as_str()]).await?.pop().unwrap_or_else(|| Ok(Vec::new()));
    let matches = matched.map_err(|e| ApiError::field("pattern", e))?;
    Ok(Json(json!({ "pattern": raw, "matches": matches })))
}

/// What [`matching`] answers for each of `patterns` (the types it matches, or why it is
/// not a pattern), for a caller with `hooks:read`, the known types read once for all: the
/// console's preview asks of up to 50 patterns as its user types, and read for each, a
/// tenant's 4 MiB of declared schemas were read and parsed 50 times a keystroke.
pub(crate) async fn matches_of(
    api: &Api,
    caller: &Caller,
    patterns: &[&str],
) -> Result<Vec<Result<Vec<String>, String>>, ApiError> {
    caller.require(crate::auth::Scope::HooksRead)?;
    let parsed: Vec<Result<EventTypePattern, String>> = patterns
        .iter()
        .map(|raw| raw.parse().map_err(|e: hookbridge_core::pattern::InvalidPattern| e.to_string()))
        .collect();
    // Read only when a pattern is to be matched: a bad one is answered without a read.
    let known = if parsed.iter().any(Result::is_ok) { known(api, caller).await? } else { Vec::new() };
    Ok(parsed
        .into_iter()
        .map(|pattern| {
            let pattern = pattern?;
            Ok(known.iter().map(|k| &k.name).filter(|n| pattern.matches(n)).cloned().collect())
        })
        .collect())
}

/// `GET /v1/event-types/catalogs`: the catalogs that can be loaded.
pub async fn catalogs(Reader(_caller): Reader) -> Json<Value> {
    let list: Vec<Value> = CATALOGS
        .iter()
        .filter_map(|(name, _)| {
            catalog(name).map(|c| json!({"name": name, "description": c.description, "types": c.types.len()}))
        })
        .collect();
    Json(json!({ "catalogs": list }))
}

/// `POST /v1/event-types/catalogs/{catalog}`: declares the catalog's types the tenant has
/// not declared yet (its own declarations are kept).
pub async fn load_catalog(
    State(api): State<Api>,
    Writer(caller): Writer,
    Path(name): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let c = catalog(&name).ok_or(ApiError::NotFound("no such catalog"))?;
    let store = &api.ports().event_types;
    let existing = store.declared(&caller.tenant).await?;
    let new: Vec<&CatalogType> = c.types.iter().filter(|t| !existing.iter().any(|e| e.name == t.name)).collect();
    if existing.len() + new.len() > catalog::MAX_DECLARED {
        return Err(declared_quota());
    }
    // The catalog's descriptions count toward the budget as a declaration's do.
    let declared: usize = existing.iter().map(|t| answered_size(&t.description, &t.schema)).sum();
    let adding: usize = new.iter().map(|t| answered_size(&Some(t.description.clone()), &None)).sum();
    if adding > 0 && declared + adding > catalog::MAX_SCHEMAS_BYTES {
        return Err(schemas_quota(declared));
    }
    let now = Utc::now();
    for t in &new {
        let d = DeclaredType {
            name: t.name.clone(),
            description: Some(t.description.clone()),
            schema: None,
            updated_at: now,
        };
        store.declare(&caller.tenant, &d).await?;
    }
    api.schemas().forget(&caller.tenant);
    tracing::info!(tenant = %caller.tenant, catalog = %name, declared = new.len(), "catalog loaded");
    Ok(Json(json!({ "catalog": name, "declared": new.len(), "already_declared": c.types.len() - new.len() })))
}

/// A declaration's size as the listing answers it: a description's characters can take six
/// bytes each there (`\u0001`), so 500 of them would be 3 MB beside the schemas; and the
/// whole answer is escaped once more in Lambda's, where a schema of quotes takes four bytes
/// for each.
fn answered_size(description: &Option<String>, schema: &Option<Value>) -> usize {
    crate::body::as_answered(&json!({ "description": description, "schema": schema }).to_string())
}

/// The budget of a tenant's declarations together is reached, `declared` bytes of it taken.
fn schemas_quota(declared: usize) -> ApiError {
    ApiError::QuotaReached {
        detail: format!(
            "a tenant's declared schemas and descriptions may come to at most {} bytes together, as the listing answers them (a JSON string in Lambda's answer); {declared} are declared",
            catalog::MAX_SCHEMAS_BYTES
        ),
        limit: catalog::MAX_SCHEMAS_BYTES as u32,
    }
}

fn declared_quota() -> ApiError {
    ApiError::QuotaReached {
        detail: format!("a tenant may declare at most {} event types", catalog::MAX_DECLARED),
        limit: catalog::MAX_DECLARED as u32,
    }
}

type Validators = Arc<HashMap<String, Arc<DeclaredSchema>>>;

/// The declared schemas of each tenant, as compiled validators, kept for
/// [`SCHEMAS_KEPT_FOR`] so a publish costs no read in the steady state.
#[derive(Default)]
pub(crate) struct Schemas {
    cache: Mutex<HashMap<TenantId, (Instant, Validators)>>,
    /// Bumped by every [`Schemas::forget`]: a read that began before one is not kept, or
    /// the set it read (from before a declaration changed) would be served for another
    /// [`SCHEMAS_KEPT_FOR`] by the very process that changed it.
    forgotten: std::sync::atomic::AtomicU64,
}

impl Schemas {
    fn forget(&self, tenant: &TenantId) {
        self.cache.lock().unwrap_or_else(std::sync::PoisonError::into_inner).remove(tenant);
        self.forgotten.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
    }

    /// Keeps `v`, read from `started` on, unless a [`Schemas::forget`] came after
    /// `generation` (taken before the read).
    fn remember(&self, generation: u64, tenant: &TenantId, started: Instant, v: &Validators) {
        let mut cache = self.cache.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if self.forgotten.load(std::sync::atomic::Ordering::SeqCst) != generation {
            return;
        }
        if cache.len() > 10_000 {
            cache.clear();
        }
        cache.insert(tenant.clone(), (started, v.clone()));
    }

    async fn of(&self, api: &Api, tenant: &TenantId) -> Result<Validators, ApiError> {
        if let Some((at, v)) = self.cache.lock().unwrap_or_else(std::sync::PoisonError::into_inner).get(tenant)
            && at.elapsed() < SCHEMAS_KEPT_FOR
        {
            return Ok(v.clone());
        }
        let generation = self.forgotten.load(std::sync::atomic::Ordering::SeqCst);
        let started = Instant::now();
        let mut compiled = HashMap::new();
        for d in api.ports().event_types.declared(tenant).await? {
            if let Some(schema) = &d.schema {
                // Schemas were checked when declared; one that no longer compiles checks nothing.
                match DeclaredSchema::compile_kept(schema) {
                    Ok(v) => {
                        compiled.insert(d.name.clone(), Arc::new(v));
                    }
                    Err(e) => {
                        tracing::warn!(tenant = %tenant, event_type = %d.name, error = %e, "a declared schema does not compile")
                    }
                }
            }
        }
        let v: Validators = Arc::new(compiled);
        self.remember(generation, tenant, started, &v);
        Ok(v)
    }

    /// Checks each event's `detail` (without the routing keys) against its type's declared
    /// schema; every failure names the path in the request, e.g. `[2].detail.user.id`.
    pub(crate) async fn check(
        &self,
        api: &Api,
        tenant: &TenantId,
        events: &[(Option<usize>, &str, &serde_json::value::RawValue)],
    ) -> Result<(), ApiError> {
        let validators = self.of(api, tenant).await?;
        if validators.is_empty() {
            return Ok(());
        }
        let mut errors = Vec::new();
        for (index, detail_type, detail) in events {
            let Some(v) = validators.get(*detail_type) else { continue };
            let prefix = index.map(|i| format!("[{i}].")).unwrap_or_default();
            // Checked as it is, or refused: read as `null` instead, it passed schemas that
            // say nothing of `null` and failed others with a misleading message.
            let parsed = hookbridge_core::payload::without_routing_keys(detail)
                .map_err(|e| e.to_string())
                .and_then(|d| serde_json::from_str::<crate::body::Unique>(&d).map(|u| u.0).map_err(|e| e.to_string()));
            let detail = match parsed {
                Ok(d) => d,
                Err(why) => {
                    errors.push(FieldError::new(
                        format!("{prefix}detail"),
                        format!("cannot be checked against its schema: {why}"),
                    ));
                    continue;
                }
            };
            for f in v.failures(&detail) {
                errors.push(FieldError::new(format!("{prefix}detail{}", dotted(&f.pointer)), f.message));
            }
        }
        if errors.is_empty() { Ok(()) } else { Err(ApiError::fields(errors)) }
    }
}

/// A JSON Pointer (`/user/ids/0`) as the API names fields (`.user.ids[0]`).
fn dotted(pointer: &str) -> String {
    pointer
        .split('/')
        .skip(1)
        .map(|seg| seg.replace("~1", "/").replace("~0", "~"))
        .map(|seg| {
            if !seg.is_empty() && seg.bytes().all(|b| b.is_ascii_digit()) {
                format!("[{seg}]")
            } else {
                format!(".{seg}")
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A portal session held to some sites sees the tenant's declared types, and not
    /// which types went through lately, nor when: those are every site's events.
    #[test]
    fn a_caller_held_to_sites_sees_declared_types_only() {
        let now = Utc::now();
        let declared = DeclaredType { name: "order.paid".into(), description: None, schema: None, updated_at: now };
        let known = catalog::merge(vec![declared], vec![("order.paid".into(), now), ("custB.invoice".into(), now)]);
        let caller = |sites: Vec<String>| Caller {
            tenant: "acme".parse().expect("tenant"),
            sub: "s".into(),
            scopes: vec![],
            realm_roles: vec![],
            sites,
        };
        let names = |v: &[KnownType]| v.iter().map(|k| k.name.clone()).collect::<Vec<_>>();
        let whole = visible_to(&caller(vec![]), known.clone());
        assert_eq!(names(&whole), ["custB.invoice", "order.paid"]);
        assert!(whole.iter().all(|k| k.last_seen.is_some()));
        let held = visible_to(&caller(vec!["a".into()]), known);
        assert_eq!(names(&held), ["order.paid"]);
        assert_eq!(held[0].last_seen, None);
    }

    #[test]
    fn every_shipped_catalog_parses_and_names_valid_types() {
        for (name, _) in CATALOGS {
            let c = catalog(name).unwrap_or_else(|| panic!("{name} does not parse"));
            assert!(!c.types.is_empty());
            for t in c.types {
                assert!(catalog::check_name(&t.name).is_ok(), "{name}: {}", t.name);
            }
        }
    }

    /// A read that began before a declaration changed (and its `forget`) is not kept: the
    /// process that changed it would have served the old schemas for another 10 seconds.
    #[test]
    fn a_read_from_before_a_change_is_not_kept() {
        let schemas = Schemas::default();
        let tenant: TenantId = "acme".parse().unwrap_or_else(|_| unreachable!());
        let read: Validators = Arc::new(HashMap::new());
        let before = schemas.forgotten.load(std::sync::atomic::Ordering::SeqCst);
        schemas.forget(&tenant);
        schemas.remember(before, &tenant, Instant::now(), &read);
        assert!(schemas.cache.lock().unwrap_or_else(std::sync::PoisonError::into_inner).get(&tenant).is_none());
        let now = schemas.forgotten.load(std::sync::atomic::Ordering::SeqCst);
        schemas.remember(now, &tenant, Instant::now(), &read);
        assert!(schemas.cache.lock().unwrap_or_else(std::sync::PoisonError::into_inner).get(&tenant).is_some());
    }

    #[test]
    fn pointers_read_as_field_paths() {
        assert_eq!(dotted(""), "");
        assert_eq!(dotted("/user/ids/0"), ".user.ids[0]");
        assert_eq!(dotted("/a~1b"), ".a/b");
    }
}
