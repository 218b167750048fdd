//! Sending deliveries again: one (`retry`) or a time window (`replay`). A re-send is a new
//! round of the same delivery: same `webhook-id`, the full retry schedule again.

use std::collections::HashMap;

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use chrono::{DateTime, Duration, Utc};
use futures::{StreamExt, TryStreamExt};
use hookbridge_core::delivery::{Delivery, DeliveryKey, DeliveryStatus, DeliveryUpdate};
use hookbridge_core::hook::Hook;
use hookbridge_core::ids::EventId;
use hookbridge_core::message::Task;
use hookbridge_core::ports::Window;
use serde::Deserialize;
use serde_json::{Value, json};

use crate::Api;
use crate::auth::Writer;
use crate::body::{JsonBody, parse};
use crate::error::ApiError;
use crate::hooks::load;

/// Most deliveries one replay re-sends; a larger window is refused with a hint to narrow it.
pub const MAX_REPLAY: usize = 10_000;
/// Deliveries are kept this long, so a replay cannot reach further back.
const MAX_REPLAY_AGE: Duration = Duration::days(hookbridge_core::delivery::DELIVERY_RETENTION_DAYS);

/// Reads the events' envelopes, a few at a time (a replay may span thousands of events).
const EVENT_READS_IN_FLIGHT: usize = 16;

/// Queues the deliveries again as a new round, oldest first, then records them as
/// `PENDING`. Sending first means a failure cannot leave a delivery `PENDING` with nothing
/// queued for it; the round means the worker's outcome stands even when it is stored
/// before this `PENDING` (see [`Delivery::apply`]). Deliveries whose event is no longer
/// kept are skipped. Returns how many were queued.
async fn resend(api: &Api, hook: &Hook, deliveries: &[Delivery], note: &str) -> Result<usize, ApiError> {
    let b = api.ports();
    let now = Utc::now();
    let mut wanted: Vec<EventId> = deliveries.iter().map(|d| d.event_id.clone()).collect();
    wanted.sort();
    wanted.dedup();
    let tenant = &hook.tenant;
    let read: Vec<(EventId, Option<String>)> = futures::stream::iter(wanted)
        .map(|id: EventId| async move {
            let env = b.events.get(tenant, &id).await?;
            Ok::<_, hookbridge_core::Error>((id, env.map(|e| e.to_body())))
        })
        .buffer_unordered(EVENT_READS_IN_FLIGHT)
        .try_collect()
        .await?;
    let bodies: HashMap<EventId, Option<String>> = read.into_iter().collect();
    let mut updates = Vec::new();
    let mut tasks = Vec::new();
    for d in deliveries {
        let Some(Some(body)) = bodies.get(&d.event_id) else { continue };
        let key = DeliveryKey {
            tenant: hook.tenant.clone(),
            hook_id: hook.id,
            delivery_id: d.id,
            event_id: d.event_id.clone(),
            event_type: d.event_type.clone(),
        };
        let round = d.round + 1;
        updates.push(DeliveryUpdate {
            delivery: key.clone(),
            attempt: None,
            status: DeliveryStatus::Pending,
            next_attempt_at: Some(now),
            note: Some(note.to_owned()),
            round,
            at: now,
        });
        tasks.push(Task::new(key, round, body).message(now));
    }
    b.lanes.get(hook.state.health.lane(now)).send_batch(&tasks).await?;
    b.deliveries.record(&updates).await?;
    Ok(tasks.len())
}

/// `POST /v1/hooks/{id}/deliveries/{delivery_id}/retry`: sent again now.
pub async fn retry(
    State(api): State<Api>,
    Writer(caller): Writer,
    Path((id, delivery_id)): Path<(String, String)>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let (hook, delivery) = crate::deliveries::load_delivery(&api, &caller, &id, &delivery_id).await?;
    if !delivery.status.is_final() {
        return Err(ApiError::Conflict(format!(
            "the delivery is {:?} and will be attempted again anyway; retry a finished one",
            delivery.status
        )));
    }
    if resend(&api, &hook, std::slice::from_ref(&delivery), "retry requested").await? == 0 {
        return Err(ApiError::Conflict(
            "the delivery's event is no longer kept, so it cannot be sent again".to_owned(),
        ));
    }
    tracing::info!(tenant = %hook.tenant, hook_id = %hook.id, delivery_id = %delivery.id, "delivery retried");
    Ok((StatusCode::ACCEPTED, Json(json!({ "delivery_id": delivery.id }))))
}

/// Which deliveries a replay re-sends.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum StatusFilter {
    One(String),
    Many(Vec<String>),
}

/// The body of `POST /v1/hooks/{id}/replay`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ReplayIn {
    since: Option<String>,
    until: Option<String>,
    status: Option<StatusFilter>,
}

fn time(field: &str, raw: Option<&str>) -> Result<Option<DateTime<Utc>>, ApiError> {
    raw.map(|s| {
        DateTime::parse_from_rfc3339(s)
            .map(|t| t.with_timezone(&Utc))
            .map_err(|_| ApiError::field(field, "must be an RFC 3339 time"))
    })
    .transpose()
}

fn statuses(filter: Option<StatusFilter>) -> Result<Option<Vec<DeliveryStatus>>, ApiError> {
    let names = match filter {
        None => vec!["FAILED".to_owned()],
        Some(StatusFilter::One(s)) if s == "ALL" => return Ok(None),
        Some(StatusFilter::One(s)) => vec![s],
        Some(StatusFilter::Many(v)) if !v.is_empty() => v,
        Some(StatusFilter::Many(_)) => return Err(ApiError::field("status", "must list at least one status")),
    };
    names
        .iter()
        .map(|n| {
            serde_json::from_value(Value::String(n.clone())).map_err(|_| {
                ApiError::field(
                    "status",
                    "must be ALL or one or more of PENDING, RETRYING, SUCCEEDED, FAILED, CANCELLED",
                )
            })
        })
        .collect::<Result<Vec<_>, _>>()
        .map(Some)
}

/// `POST /v1/hooks/{id}/replay`: re-sends the window's deliveries, oldest first.
pub async fn replay(
    State(api): State<Api>,
    Writer(caller): Writer,
    Path(id): Path<String>,
    JsonBody(bytes): JsonBody,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let body: ReplayIn = parse(&bytes)?;
    let now = Utc::now();
    let since = time("since", body.since.as_deref())?.ok_or_else(|| ApiError::field("since", "is required"))?;
    let until = time("until", body.until.as_deref())?.unwrap_or(now);
    if since >= until {
        return Err(ApiError::field("until", "must be later than since"));
    }
    // Nothing older than the retention is kept, so an earlier `since` means "all of it".
    let since = since.max(now - MAX_REPLAY_AGE);
    let wanted = statuses(body.status)?;
    let hook = load(&api, &caller, &id).await?;
    let mut picked = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let page = api.ports().deliveries.list(hook.id, Window { since, until }, 500, cursor.as_deref()).await?;
        // Deliveries still under way are left to their own schedule, whatever the filter.
        picked.extend(
            page.items
                .into_iter()
                .filter(|d| d.status.is_final() && wanted.as_ref().is_none_or(|w| w.contains(&d.status))),
        );
        if picked.len() > MAX_REPLAY {
            return Err(ApiError::field(
                "since",
                format!("the window holds more than {MAX_REPLAY} deliveries; narrow it"),
            ));
        }
        match page.next_cursor {
            Some(c) => cursor = Some(c),
            None => break,
        }
    }
    picked.reverse();
    let count = resend(&api, &hook, &picked, "replayed").await?;
    tracing::info!(tenant = %hook.tenant, hook_id = %hook.id, count, "deliveries replayed");
    Ok((StatusCode::ACCEPTED, Json(json!({ "count": count }))))
}
