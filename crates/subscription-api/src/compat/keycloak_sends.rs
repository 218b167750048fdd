//! Keycloak (Phase Two)'s webhook sends: a webhook's deliveries as Phase Two shows them.
//! `…/webhooks/{id}/sends` lists them newest first, paged as the webhook list is;
//! `…/sends/{sid}` is one with the body it carried; `…/sends/{sid}/resend` is a retry. A
//! send is a delivery: its id is the delivery's (the `webhook-id` the receiver got), and
//! `retries` counts its attempts, as Phase Two counts every send it made.

use axum::Json;
use axum::extract::rejection::PathRejection;
use axum::extract::{Path, State};
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use chrono::{Duration, SecondsFormat, Utc};
use hookbridge_core::delivery::{DELIVERY_RETENTION_DAYS, Delivery};
use hookbridge_core::hook::Hook;
use hookbridge_core::payload::render;
use hookbridge_core::ports::{Order, Window};
use serde::Serialize;

use super::keycloak::{Answer, Paging, authorised, offset_page};
use crate::Api;
use crate::auth::{Caller, Scope};
use crate::body::ApiQuery;
use crate::deliveries::{envelope_of, load_delivery};
use crate::error::ApiError;
use crate::hooks::load;

/// Deliveries read from the store at a time while paging: Read's largest page.
const STORE_PAGE: usize = 500;

/// The webhook a send belongs to, briefly, as Phase Two shows it.
#[derive(Debug, Serialize)]
struct SendWebhook {
    id: String,
    enabled: bool,
    url: String,
}

/// A send as Phase Two shows it, with its field names; absent fields are left out, as
/// Keycloak leaves out nulls.
#[derive(Debug, Serialize)]
struct SendOut {
    id: String,
    #[serde(rename = "type")]
    event_type: String,
    webhook: SendWebhook,
    /// The last attempt's HTTP status, if it got one.
    #[serde(skip_serializing_if = "Option::is_none")]
    status: Option<u16>,
    status_message: String,
    /// Attempts made.
    retries: u32,
    /// When the last attempt was made.
    #[serde(skip_serializing_if = "Option::is_none")]
    sent_at: Option<String>,
    event_id: String,
    /// `USER` for Keycloak's `access.*` events, `ADMIN` for its `admin.*` ones.
    #[serde(skip_serializing_if = "Option::is_none")]
    keycloak_event_type: Option<&'static str>,
    keycloak_event_id: String,
    /// The body, on a send read alone.
    #[serde(skip_serializing_if = "Option::is_none")]
    payload: Option<String>,
}

/// `HTTP 200 OK`, as Phase Two words a status; `HTTP 999 Unknown Status Code` without one.
fn status_message(status: Option<u16>) -> String {
    let reason = status
        .and_then(|s| axum::http::StatusCode::from_u16(s).ok())
        .and_then(|s| s.canonical_reason())
        .unwrap_or("Unknown Status Code");
    format!("HTTP {} {reason}", status.unwrap_or(999))
}

impl SendOut {
    fn of(hook: &Hook, d: &Delivery) -> Self {
        let last = d.attempts.last();
        let status = last.and_then(|a| a.status_code);
        let keycloak_event_type = if d.event_type.starts_with("access.") {
            Some("USER")
        } else if d.event_type.starts_with("admin.") {
            Some("ADMIN")
        } else {
            None
        };
        Self {
            id: d.id.to_string(),
            event_id: d.event_id.to_string(),
            event_type: d.event_type.clone(),
            webhook: SendWebhook {
                id: hook.id.to_string(),
                enabled: super::switched_on(hook),
                url: hook.config.url.clone(),
            },
            status,
            status_message: status_message(status),
            retries: d.attempts_made(),
            sent_at: last.map(|a| a.at.to_rfc3339_opts(SecondsFormat::Secs, false)),
            keycloak_event_type,
            keycloak_event_id: d.event_id.to_string(),
            payload: None,
        }
    }
}

/// `…/webhooks/{id}/sends?first=&max=`: the webhook's sends, newest first.
pub(super) async fn list(
    State(api): State<Api>,
    caller: Result<Caller, ApiError>,
    path: Result<Path<(String, String)>, PathRejection>,
    query: Result<ApiQuery<Paging>, ApiError>,
) -> Answer {
    let (realm, id) = super::segments(path).unzip();
    let caller = authorised(caller, Scope::HooksRead, realm.as_deref())?;
    let ApiQuery(paging) = query?;
    let hook = load(&api, &caller, &id.unwrap_or_default()).await?;
    let now = Utc::now();
    let kept_since = now - Duration::days(DELIVERY_RETENTION_DAYS);
    // As Read: a caller held to some sites sees only what was sent since they were set.
    let since = caller.history_since(&hook).map_or(kept_since, |from| kept_since.max(from));
    let window = Window { since, until: crate::deliveries::read_until(now) };
    let deliveries = &api.ports().deliveries;
    let read = |cursor: Option<String>| async move {
        deliveries.list(hook.id, window, Order::NewestFirst, STORE_PAGE, cursor.as_deref()).await
    };
    let out = offset_page(&paging, read, |_| true, |d| SendOut::of(&hook, d)).await?;
    Ok(Json(out).into_response())
}

/// A send's path: its realm (`None` when the path's escapes are not UTF-8, which no realm
/// matches), webhook and send.
fn send_path(path: Result<Path<(String, String, String)>, PathRejection>) -> (Option<String>, String, String) {
    match super::segments(path) {
        Some((realm, id, sid)) => (Some(realm), id, sid),
        None => (None, String::new(), String::new()),
    }
}

/// `…/webhooks/{id}/sends/{sid}`: one send, with the body it carried while its event is
/// kept.
pub(super) async fn read(
    State(api): State<Api>,
    caller: Result<Caller, ApiError>,
    path: Result<Path<(String, String, String)>, PathRejection>,
) -> Answer {
    let (realm, id, sid) = send_path(path);
    let caller = authorised(caller, Scope::HooksRead, realm.as_deref())?;
    let (hook, delivery) = load_delivery(&api, &caller, &id, &sid).await?;
    let envelope = envelope_of(&api, &delivery).await?;
    let mut out = SendOut::of(&hook, &delivery);
    out.payload = envelope.and_then(|e| render(hook.config.payload, &e).ok().map(|b| b.into_owned()));
    Ok(Json(out).into_response())
}

/// `POST …/webhooks/{id}/sends/{sid}/resend`: sent again now, as `POST …/retry` does;
/// `202` with no body, as Phase Two answers.
pub(super) async fn resend(
    State(api): State<Api>,
    caller: Result<Caller, ApiError>,
    path: Result<Path<(String, String, String)>, PathRejection>,
) -> Answer {
    let (realm, id, sid) = send_path(path);
    let caller = authorised(caller, Scope::HooksWrite, realm.as_deref())?;
    crate::redeliver::retry_one(&api, &caller, &id, &sid).await?;
    Ok((StatusCode::ACCEPTED, [(header::CONTENT_TYPE, "text/plain")]).into_response())
}

#[cfg(test)]
mod tests {
    use super::status_message;

    #[test]
    fn statuses_are_worded_as_phase_two_words_them() {
        assert_eq!(status_message(Some(200)), "HTTP 200 OK");
        assert_eq!(status_message(Some(503)), "HTTP 503 Service Unavailable");
        assert_eq!(status_message(Some(599)), "HTTP 599 Unknown Status Code");
        assert_eq!(status_message(None), "HTTP 999 Unknown Status Code");
    }
}
