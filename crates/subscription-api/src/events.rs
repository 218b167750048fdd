//! `POST /v1/events`: producers publish onto the bus; the tenant comes from the token.

use axum::Json;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, Duration, Utc};
use hookbridge_core::envelope::{BusEntry, MAX_EVENT_BYTES, Routing, compact_json};
use hookbridge_core::ids::{EventId, TenantId};
use hookbridge_core::message::PLATFORM_SOURCE;
use hookbridge_core::ports::{Claim, StoredResponse};
use hookbridge_core::validation::{Errors, FieldError};
use serde::Deserialize;
use serde_json::value::RawValue;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use crate::Api;
use crate::auth::Publisher;
use crate::body::JsonBody;
use crate::error::ApiError;

/// Most events in one call, as PutEvents takes.
pub const MAX_EVENTS: usize = 10;
/// How long an idempotency key (or a producer's event id) is remembered.
pub const IDEMPOTENCY_WINDOW: Duration = Duration::hours(24);
const MAX_KEY_LEN: usize = 255;

/// One event as a producer writes it.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct EventIn {
    #[serde(rename = "detail-type")]
    detail_type: Option<String>,
    source: Option<String>,
    detail: Option<Box<RawValue>>,
    site: Option<String>,
    id: Option<String>,
    time: Option<String>,
    resources: Option<Vec<String>>,
}

/// A validated event: the bus entry and the producer's id, if any.
struct Accepted {
    entry: BusEntry,
    producer_id: Option<String>,
}

fn printable(s: &str, max: usize) -> bool {
    !s.is_empty() && s.len() <= max && s.chars().all(|c| !c.is_control())
}

/// Splits the body into its events without re-encoding them (their `detail` must reach
/// receivers byte for byte).
fn split(bytes: &[u8]) -> Result<Vec<Box<RawValue>>, ApiError> {
    let first = bytes.iter().find(|b| !b.is_ascii_whitespace());
    let parsed = match first {
        Some(b'[') => serde_json::from_slice::<Vec<Box<RawValue>>>(bytes),
        Some(b'{') => serde_json::from_slice::<Box<RawValue>>(bytes).map(|one| vec![one]),
        _ => {
            return Err(ApiError::field("body", "must be an event object or an array of events"));
        }
    };
    let events = parsed.map_err(|e| ApiError::field("body", e.to_string()))?;
    if events.is_empty() || events.len() > MAX_EVENTS {
        return Err(ApiError::field("body", format!("must hold 1-{MAX_EVENTS} events")));
    }
    Ok(events)
}

/// Inserts `tenant` (and `site`) at the front of the producer's `detail`, leaving every
/// other byte as the producer wrote it.
fn route_detail(
    detail: &RawValue,
    tenant: &TenantId,
    site: Option<&str>,
    has_tenant: bool,
    has_site: bool,
) -> Box<RawValue> {
    // Compact, as the bus would store it, so both backends deliver the same bytes.
    let compact = compact_json(detail.get());
    let text = compact.as_str();
    let inner = text.strip_prefix('{').unwrap_or(text);
    let mut out = String::with_capacity(text.len() + 64);
    out.push('{');
    let mut added = false;
    if !has_tenant {
        out.push_str(&format!("\"tenant\":{}", Value::String(tenant.to_string())));
        added = true;
    }
    if let (Some(site), false) = (site, has_site) {
        if added {
            out.push(',');
        }
        out.push_str(&format!("\"site\":{}", Value::String(site.to_owned())));
        added = true;
    }
    if added && !inner.starts_with('}') {
        out.push(',');
    }
    out.push_str(inner);
    RawValue::from_string(out).unwrap_or_else(|_| detail.to_owned())
}

fn validate(raw: &RawValue, index: Option<usize>, tenant: &TenantId) -> Result<Accepted, Vec<FieldError>> {
    let at = |f: &str| match index {
        Some(i) => format!("[{i}].{f}"),
        None => f.to_owned(),
    };
    let mut de = serde_json::Deserializer::from_str(raw.get());
    let ev: EventIn = serde_path_to_error::deserialize(&mut de).map_err(|e| {
        let path = e.path().to_string();
        vec![FieldError::new(
            if path == "." { at("").trim_end_matches('.').to_owned() } else { at(&path) },
            e.inner().to_string(),
        )]
    })?;
    let mut e = Errors::default();
    let detail_type = match ev.detail_type {
        Some(d) if printable(&d, 128) => d,
        Some(_) => {
            e.push(at("detail-type"), "must be 1-128 printable characters");
            String::new()
        }
        None => {
            e.push(at("detail-type"), "is required");
            String::new()
        }
    };
    let source = match ev.source {
        Some(s) if s == PLATFORM_SOURCE || s.starts_with("aws.") => {
            e.push(at("source"), "is reserved; use your product's own source name");
            String::new()
        }
        Some(s) if printable(&s, 256) => s,
        Some(_) => {
            e.push(at("source"), "must be 1-256 printable characters");
            String::new()
        }
        None => {
            e.push(at("source"), "is required");
            String::new()
        }
    };
    if let Some(site) = &ev.site
        && !printable(site, 128)
    {
        e.push(at("site"), "must be 1-128 printable characters");
    }
    let time = match ev.time.as_deref().map(DateTime::parse_from_rfc3339) {
        None => None,
        Some(Ok(t)) => Some(t.with_timezone(&Utc)),
        Some(Err(_)) => {
            e.push(at("time"), "must be an RFC 3339 time");
            None
        }
    };
    let resources = ev.resources.unwrap_or_default();
    if resources.len() > 10 || resources.iter().any(|r| !printable(r, 2048)) {
        e.push(at("resources"), "must list at most 10 non-empty strings");
    }
    if let Some(id) = &ev.id
        && !printable(id, 128)
    {
        e.push(at("id"), "must be 1-128 printable characters");
    }
    let detail = match &ev.detail {
        None => {
            e.push(at("detail"), "is required");
            None
        }
        Some(d) => match serde_json::from_str::<Value>(d.get()) {
            Ok(Value::Object(map)) => {
                let has_tenant = match map.get("tenant") {
                    None => false,
                    Some(Value::String(t)) if t == tenant.as_str() => true,
                    Some(_) => {
                        e.push(at("detail.tenant"), "must be left out or equal the token's tenant");
                        true
                    }
                };
                let has_site = match (map.get("site"), &ev.site) {
                    (None, _) => false,
                    (Some(Value::String(a)), Some(b)) if a != b => {
                        e.push(at("detail.site"), "differs from site");
                        true
                    }
                    (Some(Value::String(_)), _) => true,
                    (Some(_), _) => {
                        e.push(at("detail.site"), "must be a string");
                        true
                    }
                };
                Some(route_detail(d, tenant, ev.site.as_deref(), has_tenant, has_site))
            }
            _ => {
                e.push(at("detail"), "must be a JSON object");
                None
            }
        },
    };
    e.finish(())?;
    let detail = detail.unwrap_or_else(|| raw.to_owned());
    // The very parser ingest routes with: what it cannot route (a duplicated `tenant`, say)
    // is refused here, not accepted and dead-lettered later.
    if let Err(why) = serde_json::from_str::<Routing>(detail.get()) {
        return Err(vec![FieldError::new(at("detail"), format!("cannot be routed: {why}"))]);
    }
    let entry = BusEntry { detail_type, source, time, resources, detail };
    Ok(Accepted { entry, producer_id: ev.id })
}

fn idempotency_key(headers: &HeaderMap) -> Result<Option<String>, ApiError> {
    match headers.get("idempotency-key") {
        None => Ok(None),
        Some(v) => match v.to_str() {
            Ok(k) if printable(k, MAX_KEY_LEN) => Ok(Some(format!("key:{k}"))),
            _ => Err(ApiError::field("Idempotency-Key", format!("must be 1-{MAX_KEY_LEN} printable characters"))),
        },
    }
}

/// `POST /v1/events`.
pub async fn publish(
    State(api): State<Api>,
    Publisher(caller): Publisher,
    headers: HeaderMap,
    JsonBody(bytes): JsonBody,
) -> Result<Response, ApiError> {
    let key = idempotency_key(&headers)?;
    let raw = split(&bytes)?;
    let indexed = raw.len() > 1 || bytes.iter().find(|b| !b.is_ascii_whitespace()) == Some(&b'[');
    let mut accepted = Vec::with_capacity(raw.len());
    let mut errors = Vec::new();
    let mut oversized = None;
    for (i, r) in raw.iter().enumerate() {
        match validate(r, indexed.then_some(i), &caller.tenant) {
            Ok(a) if a.entry.size() > MAX_EVENT_BYTES => {
                let which = if indexed { format!("event [{i}]") } else { "the event".to_owned() };
                oversized = Some(ApiError::TooLarge(format!(
                    "{which} is {} bytes; the bus takes at most {MAX_EVENT_BYTES} per event",
                    a.entry.size()
                )));
            }
            Ok(a) => accepted.push(a),
            Err(e) => errors.extend(e),
        }
    }
    let mut seen_ids = std::collections::HashSet::new();
    for (i, a) in accepted.iter().enumerate() {
        if let Some(pid) = &a.producer_id
            && !seen_ids.insert(pid.clone())
        {
            let at = if indexed { format!("[{i}].id") } else { "id".to_owned() };
            errors.push(FieldError::new(at, "is given to another event of this request"));
        }
    }
    if let Some(big) = oversized {
        return Err(big);
    }
    if !errors.is_empty() {
        return Err(ApiError::fields(errors));
    }

    let now = Utc::now();
    throttle(&api, &caller.tenant, accepted.len(), now).await?;
    let store = &api.backend().idempotency;
    let fingerprint = hex::encode(Sha256::digest(&bytes));
    if let Some(k) = &key {
        match store.claim(&caller.tenant, k, &fingerprint, now, now + IDEMPOTENCY_WINDOW).await? {
            Claim::Claimed => {}
            Claim::Existing { fingerprint: fp, response: Some(r) } if fp == fingerprint => {
                return Ok(replayed(r));
            }
            Claim::Existing { response: Some(_), .. } => {
                return Err(ApiError::Conflict(
                    "this Idempotency-Key was used for a different request in the last 24 hours".to_owned(),
                ));
            }
            Claim::Existing { response: None, .. } => {
                return Err(ApiError::Conflict("a request with this Idempotency-Key is still in progress".to_owned()));
            }
        }
    }

    let result = publish_events(&api, &caller.tenant, accepted, now).await;
    match (&key, &result) {
        (Some(k), Ok(body)) => {
            let stored = StoredResponse { status: 202, body: body.to_string() };
            if let Err(e) = store.complete(&caller.tenant, k, &stored).await {
                tracing::error!(error = %e, "could not store the idempotent answer");
            }
        }
        (Some(k), Err(_)) => {
            if let Err(e) = store.release(&caller.tenant, k).await {
                tracing::error!(error = %e, "could not release an Idempotency-Key after a failed publish");
            }
        }
        (None, _) => {}
    }
    Ok((StatusCode::ACCEPTED, Json(result?)).into_response())
}

/// Holds a tenant to its publish rate: every event through the API counts, so no one
/// tenant can queue more work for ingest than ingest clears, which is what would delay
/// everyone else's events.
async fn throttle(api: &Api, tenant: &TenantId, events: usize, now: DateTime<Utc>) -> Result<(), ApiError> {
    let q = api.settings().quotas;
    match api.meter().take(api.backend().limiter.as_ref(), q, tenant, events as u32, now).await? {
        None => Ok(()),
        Some(wait) => {
            tracing::info!(tenant = %tenant, events, "publish throttled");
            Err(ApiError::Throttled {
                rate: q.publish_rate.get(),
                burst: q.publish_burst,
                retry_after_secs: wait.as_millis().div_ceil(1000).max(1) as u64,
            })
        }
    }
}

fn replayed(r: StoredResponse) -> Response {
    let status = StatusCode::from_u16(r.status).unwrap_or(StatusCode::ACCEPTED);
    let mut resp = (status, r.body).into_response();
    resp.headers_mut().insert(axum::http::header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    resp.headers_mut().insert("idempotent-replayed", HeaderValue::from_static("true"));
    resp
}

/// Publishes the events, skipping those whose producer id was already published in the
/// last 24 hours (answering with the id they got then).
async fn publish_events(
    api: &Api,
    tenant: &TenantId,
    events: Vec<Accepted>,
    now: DateTime<Utc>,
) -> Result<Value, ApiError> {
    let store = &api.backend().idempotency;
    let mut claimed: Vec<(usize, String)> = Vec::new();
    let outcome = claim_and_publish(api, tenant, events, now, &mut claimed).await;
    if outcome.is_err() {
        // Whatever went wrong, the producer ids this request claimed are free again, so a
        // retry can publish them.
        for (_, k) in &claimed {
            if let Err(e) = store.release(tenant, k).await {
                tracing::error!(error = %e, "could not release a producer's event id");
            }
        }
    }
    outcome
}

async fn claim_and_publish(
    api: &Api,
    tenant: &TenantId,
    events: Vec<Accepted>,
    now: DateTime<Utc>,
    claimed: &mut Vec<(usize, String)>,
) -> Result<Value, ApiError> {
    let store = &api.backend().idempotency;
    let mut ids: Vec<Option<EventId>> = Vec::with_capacity(events.len());
    let mut to_publish = Vec::new();
    for (i, a) in events.into_iter().enumerate() {
        if let Some(pid) = &a.producer_id {
            let k = format!("event:{pid}");
            match store.claim(tenant, &k, pid, now, now + IDEMPOTENCY_WINDOW).await? {
                Claim::Claimed => claimed.push((i, k)),
                Claim::Existing { response: Some(r), .. } => {
                    ids.push(r.body.parse().ok());
                    continue;
                }
                Claim::Existing { response: None, .. } => {
                    return Err(ApiError::Conflict(format!("event {pid} is being published by another request")));
                }
            }
        }
        ids.push(None);
        to_publish.push((i, a.entry));
    }
    let positions: Vec<usize> = to_publish.iter().map(|(i, _)| *i).collect();
    let published = api.backend().bus.publish(to_publish.into_iter().map(|(_, e)| e).collect()).await?;
    for (pos, id) in positions.iter().zip(published) {
        if let Some((_, k)) = claimed.iter().find(|(i, _)| i == pos) {
            let r = StoredResponse { status: 202, body: id.to_string() };
            if let Err(e) = store.complete(tenant, k, &r).await {
                tracing::error!(error = %e, "could not remember a producer's event id");
            }
        }
        ids[*pos] = Some(id);
    }
    tracing::info!(tenant = %tenant, count = ids.len(), "events published");
    let events: Vec<Value> = ids.into_iter().map(|id| json!({ "id": id })).collect();
    Ok(json!({ "events": events }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn raw(s: &str) -> Box<RawValue> {
        RawValue::from_string(s.to_owned()).unwrap()
    }

    #[test]
    fn tenant_and_site_are_prepended_without_touching_the_rest() {
        let t: TenantId = "acme".parse().unwrap();
        assert_eq!(
            route_detail(&raw(r#"{"z":1,"a":{"b":2}}"#), &t, None, false, false).get(),
            r#"{"tenant":"acme","z":1,"a":{"b":2}}"#
        );
        assert_eq!(route_detail(&raw("{ }"), &t, Some("s1"), false, false).get(), r#"{"tenant":"acme","site":"s1"}"#);
        assert_eq!(route_detail(&raw(r#"{"tenant":"acme"}"#), &t, None, true, false).get(), r#"{"tenant":"acme"}"#);
    }

    #[test]
    fn foreign_tenant_and_reserved_source_are_refused() {
        let t: TenantId = "acme".parse().unwrap();
        let r = raw(r#"{"detail-type":"x","source":"hookbridge","detail":{"tenant":"evil"}}"#);
        let errs = validate(&r, None, &t).err().unwrap();
        let fields: Vec<_> = errs.iter().map(|e| e.field.as_str()).collect();
        assert_eq!(fields, ["source", "detail.tenant"]);
    }
}
