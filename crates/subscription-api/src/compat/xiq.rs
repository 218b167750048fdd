//! ExtremeCloud IQ's webhook subscriptions: `POST /subscriptions/webhook` with an array of
//! `{application, url, secret, message_type}`, `GET` the list, `DELETE …/{id}`.
//!
//! A subscription is a hook named `xiq-…` matching one message type XIQ offers (the
//! listing shows only those: an edit elsewhere can make one match others), its
//! `application` kept as the hook's description, its `message_type` the one event type it
//! matches, its deliveries the event's record in an array (`detail_array`), as XIQ sends
//! its log records. Ids are integers, as XIQ's SDKs expect: the low 53 bits of the hook's
//! id, exact in any JSON reader (the low 63 bits, as they were once, are still accepted). XIQ's published SDK calls `secret` "the basic auth secret for the webhook
//! endpoint" without saying how it is sent; we sign each delivery with it (Standard
//! Webhooks, keyed with the secret's text) rather than guess a username. Status codes are
//! XIQ's: `202` for create and delete, `200` for the list; errors are
//! `{"error_code", "error_message"}`.

use axum::Json;
use axum::body::Body;
use axum::extract::rejection::PathRejection;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get};
use chrono::SecondsFormat;
use futures::StreamExt;
use hookbridge_core::hook::{ConnectionState, Hook, ValidationContext};
use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::auth::{Caller, Scope};
use crate::body::{parse_objects, read_body};
use crate::error::ApiError;
use crate::hooks::{TenantBytes, create_hook, delete_hook};
use crate::{Api, Router};

/// The message types XIQ's webhooks offer.
pub const MESSAGE_TYPES: [&str; 9] = [
    "LOCATION_AP_CENTRIC",
    "LOCATION_CLIENT_CENTRIC",
    "AUDIT_LOG_ALL",
    "GDPR_LOG_ALL",
    "CREDENTIAL_LOG_ALL",
    "ACCOUNTING_LOG_ALL",
    "AUTHENTICATION_LOG_ALL",
    "EMAIL_LOG_ALL",
    "SMS_LOG_ALL",
];
/// The prefix of a subscription's hook name.
const PREFIX: &str = "xiq";
/// Most subscriptions one request may create.
const MAX_BATCH: usize = 100;
/// Subscriptions deleted at once when a create is undone. Each delete writes the tenant's
/// counts on DynamoDB in its transaction, whose retries are sized for two at once.
const UNDONE_AT_ONCE: usize = 2;
/// Longest `application` name.
const MAX_APPLICATION_LEN: usize = 255;

/// The routes.
pub fn routes() -> Router<Api> {
    Router::new()
        .route("/subscriptions/webhook", get(list).post(create))
        .route("/subscriptions/webhook/{id}", delete(remove))
}

#[derive(Deserialize)]
struct SubscriptionIn {
    application: Option<String>,
    url: Option<String>,
    secret: Option<String>,
    message_type: Option<String>,
}

#[derive(Debug, Serialize)]
struct SubscriptionOut {
    id: i64,
    create_time: String,
    update_time: String,
    application: String,
    url: String,
    /// Never the secret: XIQ's SDK refuses a subscription without one, so a mask.
    secret: &'static str,
    data_type: &'static str,
    message_type: String,
    status: &'static str,
}

/// What XIQ's SDKs put in `secret` on reads: the secret itself is never returned.
const SECRET_MASK: &str = "********";

/// The kind of data a message type carries (XIQ's `data_type`): `LOCATION` for both
/// location types, else the type without its `_ALL`; none for a type XIQ does not offer.
fn data_type(message_type: &str) -> Option<&'static str> {
    Some(match message_type {
        "LOCATION_AP_CENTRIC" | "LOCATION_CLIENT_CENTRIC" => "LOCATION",
        "AUDIT_LOG_ALL" => "AUDIT_LOG",
        "GDPR_LOG_ALL" => "GDPR_LOG",
        "CREDENTIAL_LOG_ALL" => "CREDENTIAL_LOG",
        "ACCOUNTING_LOG_ALL" => "ACCOUNTING_LOG",
        "AUTHENTICATION_LOG_ALL" => "AUTHENTICATION_LOG",
        "EMAIL_LOG_ALL" => "EMAIL_LOG",
        "SMS_LOG_ALL" => "SMS_LOG",
        _ => return None,
    })
}

impl SubscriptionOut {
    /// `h` as XIQ shows a subscription, if it is one XIQ can show: its one event type a
    /// message type XIQ offers (an edit through `/v1` or the console can make it match
    /// others, which XIQ's SDKs, reading the field into their enum, would refuse the whole
    /// list over).
    fn of(h: &Hook) -> Option<Self> {
        let [message_type] = h.config.event_types.as_slice() else { return None };
        let message_type = message_type.as_str().to_owned();
        Some(Self {
            id: h.id.integer(),
            create_time: h.created_at.to_rfc3339_opts(SecondsFormat::Millis, true),
            update_time: h.updated_at.to_rfc3339_opts(SecondsFormat::Millis, true),
            application: h.config.description.clone().unwrap_or_default(),
            url: h.config.url.clone(),
            secret: SECRET_MASK,
            data_type: data_type(&message_type)?,
            message_type,
            status: if super::switched_on(h) { "ENABLED" } else { "DISABLED" },
        })
    }
}

fn is_subscription(h: &Hook) -> bool {
    made_here(h) && h.state.connection_state != ConnectionState::Deleting
}

/// Whether this API made `h`, whatever its state: a delete interrupted after marking the
/// hook `DELETING` is finished by the client's retry, as `/v1` and Keycloak's finish it.
fn made_here(h: &Hook) -> bool {
    h.config.name.as_str().starts_with(&format!("{PREFIX}-"))
}

/// An error as XIQ clients read it.
pub(super) struct XiqError(pub(super) ApiError);

impl From<ApiError> for XiqError {
    fn from(e: ApiError) -> Self {
        Self(e)
    }
}

impl IntoResponse for XiqError {
    fn into_response(self) -> Response {
        if let ApiError::Internal(e) = &self.0 {
            tracing::error!(error = %e, "xiq subscriptions request failed");
        }
        let code = self.0.problem().kind.rsplit('/').next().unwrap_or("error").replace('-', "_").to_ascii_uppercase();
        let mut resp = (self.0.status(), Json(json!({ "error_code": code, "error_message": super::message(&self.0) })))
            .into_response();
        self.0.set_headers(resp.headers_mut());
        resp
    }
}

type Answer = Result<Response, XiqError>;

fn authorised(caller: Result<Caller, ApiError>, scope: Scope) -> Result<Caller, ApiError> {
    let caller = caller?;
    caller.require(scope)?;
    Ok(caller)
}

async fn list(State(api): State<Api>, caller: Result<Caller, ApiError>) -> Answer {
    let caller = authorised(caller, Scope::HooksRead)?;
    let hooks = api.ports().hooks.list_all(&caller.tenant).await.map_err(ApiError::from)?;
    let out: Vec<SubscriptionOut> =
        hooks.iter().filter(|h| is_subscription(h) && caller.sees(h)).filter_map(SubscriptionOut::of).collect();
    Ok(Json(out).into_response())
}

/// Checks one subscription of the array at `[i]`.
fn check(i: usize, s: &SubscriptionIn) -> Result<(), ApiError> {
    let at = |f: &str| format!("[{i}].{f}");
    match s.application.as_deref() {
        Some(a)
            if !a.trim().is_empty() && a.chars().count() <= MAX_APPLICATION_LEN && !a.chars().any(char::is_control) => {
        }
        _ => {
            return Err(ApiError::field(
                at("application"),
                format!("must be 1-{MAX_APPLICATION_LEN} printable characters"),
            ));
        }
    }
    if s.secret.as_deref().is_some_and(|x| !x.is_empty() && x.bytes().all(|b| b == b'*')) {
        // What a read shows in place of the secret, sent back by a client that deletes and
        // creates again to change a subscription (XIQ has no update): signing with it
        // would sign with a key anyone can read.
        return Err(ApiError::field(
            at("secret"),
            "is the mask reads show in place of the secret: send the secret itself",
        ));
    }
    match s.message_type.as_deref() {
        Some(t) if MESSAGE_TYPES.contains(&t) => Ok(()),
        _ => Err(ApiError::field(at("message_type"), format!("must be one of {}", MESSAGE_TYPES.join(", ")))),
    }
}

async fn create(State(api): State<Api>, caller: Result<Caller, ApiError>, body: Body) -> Answer {
    let caller = authorised(caller, Scope::HooksWrite)?;
    let bytes = read_body(body).await?;
    let too_many = || ApiError::field("body", format!("must be an array of 1-{MAX_BATCH} subscriptions"));
    if crate::body::more_items_than(&bytes, MAX_BATCH) {
        return Err(too_many().into());
    }
    let items: Vec<SubscriptionIn> = parse_objects(&bytes)?;
    if items.is_empty() || items.len() > MAX_BATCH {
        return Err(too_many().into());
    }
    let mut drafts = Vec::with_capacity(items.len());
    for (i, s) in items.iter().enumerate() {
        check(i, s)?;
        let signing = super::client_secret(s.secret.as_deref()).map_err(|_| {
            ApiError::field(format!("[{i}].secret"), "must be 8-256 printable characters, not starting with \"whsec_\"")
        })?;
        let draft = super::draft(json!({
            "name": super::generated_name(PREFIX),
            "description": s.application,
            "url": s.url,
            "event_types": [s.message_type],
            "payload": "detail_array",
        }))?;
        // Every subscription is checked before any is created: one at fault would
        // otherwise make, tell of (`hook.created`) and undo those before it.
        let ctx = ValidationContext { network: &api.settings().network };
        draft.clone().validate(ctx, None).map_err(|e| at_index(i, ApiError::fields(e)))?;
        drafts.push((draft, signing));
    }
    // All or nothing: one that still cannot be created (the tenant's quota reached, the
    // store failing) undoes the ones before it. So does a store too slow for all of them
    // to be made in the request's time (`/v1/hooks`' bulk time): made to the end, and
    // undone, they could outlast the API function, which Lambda would end half way.
    let mut created: Vec<Hook> = Vec::with_capacity(drafts.len());
    let mut counted = TenantBytes::default();
    let began = tokio::time::Instant::now();
    for (i, (draft, signing)) in drafts.into_iter().enumerate() {
        let made = if began.elapsed() >= crate::hooks::BULK_BEGUN_WITHIN {
            Err(ApiError::Unavailable("none made: the subscriptions took the request's time; send them again"))
        } else {
            create_hook(&api, &caller, draft, signing, &mut counted).await.map_err(|e| at_index(i, e))
        };
        match made {
            Ok((hook, _)) => created.push(hook),
            Err(e) if undo(&api, &caller, &created).await => return Err(e.into()),
            // Not all or nothing after all: the caller must not be told that none was made.
            Err(_) => {
                let e = hookbridge_core::Error::backend("xiq.create", "subscriptions made could not all be undone");
                return Err(ApiError::Internal(e).into());
            }
        }
    }
    // Made from checked message types, so each shows.
    let out: Vec<SubscriptionOut> = created.iter().filter_map(SubscriptionOut::of).collect();
    Ok((StatusCode::ACCEPTED, Json(out)).into_response())
}

/// Deletes the subscriptions `created`, [`UNDONE_AT_ONCE`] at a time, then one at a time
/// those that failed; says whether all are gone. One after another, a hundred of them on a
/// slow store took longer than the request has.
async fn undo(api: &Api, caller: &Caller, created: &[Hook]) -> bool {
    // Made first (a future starts only when polled): a lazy iterator here is not `Send`
    // for every lifetime, as axum's handlers must be.
    let deletes: Vec<_> = created
        .iter()
        .map(|h| h.id.to_string())
        .map(|id| async move {
            let r = delete_hook(api, caller, &id).await;
            (id, r)
        })
        .collect();
    let tried: Vec<(String, Result<(), ApiError>)> =
        futures::stream::iter(deletes).buffer_unordered(UNDONE_AT_ONCE).collect().await;
    let mut all = true;
    for (id, _) in tried.into_iter().filter(|(_, r)| !matches!(r, Ok(()) | Err(ApiError::NotFound(_)))) {
        // Again alone: together they may have met on the tenant's counts and run out of
        // rounds. A delete cut short after marking the hook finishes now.
        match delete_hook(api, caller, &id).await {
            Ok(()) | Err(ApiError::NotFound(_)) => {}
            Err(e) => {
                tracing::error!(hook_id = %id, error = %super::message(&e), "could not undo a subscription");
                all = false;
            }
        }
    }
    all
}

/// The error of the `i`-th subscription, its fields prefixed with `[i].`.
fn at_index(i: usize, e: ApiError) -> ApiError {
    match e {
        ApiError::Invalid { detail, errors } => ApiError::Invalid {
            detail,
            errors: errors
                .into_iter()
                .map(|f| hookbridge_core::validation::FieldError::new(format!("[{i}].{}", f.field), f.message))
                .collect(),
        },
        other => other,
    }
}

async fn remove(
    State(api): State<Api>,
    caller: Result<Caller, ApiError>,
    path: Result<Path<String>, PathRejection>,
) -> Answer {
    let caller = authorised(caller, Scope::HooksWrite)?;
    let id = super::segments(path).unwrap_or_default();
    let wanted: i64 = id.parse().map_err(|_| ApiError::NotFound("no such subscription"))?;
    let hooks = api.ports().hooks.list_all(&caller.tenant).await.map_err(ApiError::from)?;
    let hook = hooks
        .iter()
        .find(|h| made_here(h) && (h.id.integer() == wanted || h.id.low_bits() == wanted))
        .ok_or(ApiError::NotFound("no such subscription"))?;
    delete_hook(&api, &caller, &hook.id.to_string()).await?;
    Ok(StatusCode::ACCEPTED.into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn named(application: String) -> SubscriptionIn {
        SubscriptionIn {
            application: Some(application),
            url: None,
            secret: None,
            message_type: Some("AUDIT_LOG_ALL".into()),
        }
    }

    #[test]
    fn an_application_is_held_to_255_characters_not_bytes() {
        // 255 characters of three bytes each: the rule says characters.
        assert!(check(0, &named("監".repeat(MAX_APPLICATION_LEN))).is_ok());
        assert!(check(0, &named("a".repeat(MAX_APPLICATION_LEN + 1))).is_err());
    }
}
