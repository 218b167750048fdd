//! What a hook processed: `events?hours=N` (HYPR's Read) and one delivery in detail.

use axum::Json;
use axum::extract::{Path, State};
use chrono::{Duration, Utc};
use hookbridge_core::delivery::Delivery;
use hookbridge_core::hook::Hook;
use hookbridge_core::ids::DeliveryId;
use hookbridge_core::ports::{Order, Window};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::Api;
use crate::auth::{Caller, Reader};
use crate::body::ApiQuery;
use crate::dto::{DeliveryDetailOut, DeliveryOut};
use crate::error::ApiError;
use crate::hooks::{limit, load};

/// The longest look-back: the deliveries' 14 days, so a delivery replayed days after it
/// was made can be followed (a replay reaches back that far).
pub const MAX_HOURS: i64 = 14 * 24;
/// The look-back when none is asked for, HYPR's 24 hours.
const DEFAULT_HOURS: i64 = 24;
const DEFAULT_PAGE: usize = 100;
const MAX_PAGE: usize = 500;

/// Where a listing of deliveries made by `now` ends: past any a delivery is dated by, so
/// one recorded and answered a moment ago is on the first page. A delivery is dated by
/// its event's own `time`, which may be a few seconds ahead of its publishing
/// ([`ingest::DATED_AHEAD_AT_MOST`]); a window ending at now left it out of every page of
/// a Read until that time came.
pub(crate) fn read_until(now: chrono::DateTime<Utc>) -> chrono::DateTime<Utc> {
    now + ingest::DATED_AHEAD_AT_MOST + Duration::milliseconds(1)
}

/// Query of `GET /v1/hooks/{id}/events`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReadQuery {
    hours: Option<String>,
    limit: Option<String>,
    cursor: Option<String>,
}

/// `GET /v1/hooks/{id}/events?hours=N`: deliveries of the last N hours, newest first.
pub async fn list(
    State(api): State<Api>,
    Reader(caller): Reader,
    Path(id): Path<String>,
    ApiQuery(q): ApiQuery<ReadQuery>,
) -> Result<Json<Value>, ApiError> {
    let hours = match q.hours.as_deref() {
        None => DEFAULT_HOURS,
        Some(h) => match h.parse::<i64>() {
            Ok(n) if (1..=MAX_HOURS).contains(&n) => n,
            _ => {
                return Err(ApiError::field("hours", format!("must be an integer from 1 to {MAX_HOURS}")));
            }
        },
    };
    let limit = limit(q.limit.as_deref(), DEFAULT_PAGE, MAX_PAGE)?;
    let hook = load(&api, &caller, &id).await?;
    let now = Utc::now();
    let since = now - Duration::hours(hours);
    let since = caller.history_since(&hook).map_or(since, |from| since.max(from));
    let window = Window { since, until: read_until(now) };
    let page = api.ports().deliveries.list(hook.id, window, Order::NewestFirst, limit, q.cursor.as_deref()).await?;
    let deliveries: Vec<DeliveryOut> = page.items.iter().map(DeliveryOut::from).collect();
    Ok(Json(json!({ "deliveries": deliveries, "next_cursor": page.next_cursor })))
}

/// The caller's hook and one of its deliveries, or 404 (absent, malformed, another
/// tenant's).
pub(crate) async fn load_delivery(
    api: &Api,
    caller: &Caller,
    hook_id: &str,
    delivery_id: &str,
) -> Result<(Hook, Delivery), ApiError> {
    let hook = load(api, caller, hook_id).await?;
    let delivery_id: DeliveryId = delivery_id.parse().map_err(|_| ApiError::NotFound("no such delivery"))?;
    let delivery = api
        .ports()
        .deliveries
        .get(hook.id, delivery_id)
        .await?
        .filter(|d| d.tenant == caller.tenant)
        .filter(|d| {
            caller.history_since(&hook).is_none_or(|from| d.id.timestamp_ms() >= from.timestamp_millis().max(0) as u64)
        })
        .ok_or(ApiError::NotFound("no such delivery"))?;
    Ok((hook, delivery))
}

/// `GET /v1/hooks/{id}/deliveries/{delivery_id}`: the delivery, its envelope, every attempt.
pub async fn get(
    State(api): State<Api>,
    Reader(caller): Reader,
    Path((id, delivery_id)): Path<(String, String)>,
) -> Result<Json<DeliveryDetailOut>, ApiError> {
    let (_, delivery) = crate::deliveries::load_delivery(&api, &caller, &id, &delivery_id).await?;
    let envelope = envelope_of(&api, &delivery).await?.and_then(|b| serde_json::value::RawValue::from_string(b).ok());
    Ok(Json(DeliveryDetailOut { delivery: (&delivery).into(), envelope, attempt_log: delivery.attempts.clone() }))
}

/// The delivery's envelope: kept with it, or in the event store while the event is kept.
pub(crate) async fn envelope_of(api: &Api, delivery: &Delivery) -> Result<Option<String>, ApiError> {
    Ok(match &delivery.envelope {
        Some(kept) => Some(kept.clone()),
        None => api.ports().events.get(&delivery.tenant, &delivery.event_id).await?.map(|e| e.to_body()),
    })
}
