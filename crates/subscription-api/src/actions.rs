//! Actions on one hook: run the ownership challenge, rotate its signing secret, send it a
//! test event.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use chrono::{Duration, Utc};
use hookbridge_core::delivery::{Delivery, DeliveryKey};
use hookbridge_core::envelope::BusEntry;
use hookbridge_core::hook::{SecretsOwner, VerificationStatus};
use hookbridge_core::ids::{DeliveryId, EventId};
use hookbridge_core::message::{PLATFORM_SOURCE, Task, event_type};
use hookbridge_core::secret::SigningSecret;
use serde::Deserialize;
use serde_json::{Value, json};

use crate::auth::Writer;
use crate::body::{OptionalJsonBody, parse_object};
use crate::dto::VerificationOut;
use crate::error::ApiError;
use crate::hooks::{Edit, load, update};
use crate::{Api, lifecycle};

/// How long a rotated-out secret keeps signing, so receivers can switch without a gap.
pub const ROTATION_OVERLAP: Duration = Duration::hours(24);

/// `POST /v1/hooks/{id}/verify`: queues the ownership challenge; the result shows in
/// `verification` once the verifier has run it.
pub async fn verify(
    State(api): State<Api>,
    Writer(caller): Writer,
    Path(id): Path<String>,
) -> Result<(StatusCode, Json<VerificationOut>), ApiError> {
    let (hook, ()) = update(&api, &caller, &id, Edit::State, |mut h| async move {
        // `last_error` stays until a check passes: it is what tells a hook whose last check
        // failed from a proven one re-checked, which keeps receiving while the check runs.
        h.state.verification.status = VerificationStatus::Pending;
        Ok((h, ()))
    })
    .await?;
    lifecycle::emit(&api, event_type::HOOK_VERIFICATION_REQUESTED, &hook, None).await;
    let out = VerificationOut::from(&hook);
    Ok((StatusCode::ACCEPTED, Json(out)))
}

/// Body of a rotation: a new secret of the caller's choosing, or none to have one made.
#[derive(Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RotateIn {
    secret: Option<String>,
}

/// `POST /v1/hooks/{id}/secret/rotate`: a new signing secret; the old one also signs for
/// 24 hours.
pub async fn rotate_secret(
    State(api): State<Api>,
    Writer(caller): Writer,
    Path(id): Path<String>,
    OptionalJsonBody(body): OptionalJsonBody,
) -> Result<Json<Value>, ApiError> {
    // The body is optional: none asks for a generated secret.
    let wanted: RotateIn = match body {
        Some(b) => parse_object(&b)?,
        None => RotateIn::default(),
    };
    let chosen = wanted.secret.is_some();
    let new = match wanted.secret {
        Some(s) => SigningSecret::parse(&s).map_err(|e| ApiError::field("secret", e.to_string()))?,
        None => SigningSecret::generate(),
    };
    let now = Utc::now();
    // A rotation to the secret already signing writes nothing: a client repeating one whose
    // answer it lost gets the first answer, and no one's version moves under them. (A
    // generated secret is never the current one: no need to open the secrets for it.)
    if chosen {
        let current = load(&api, &caller, &id).await?;
        let mut secrets = api.ports().sealer.open(SecretsOwner::of(&current), &current.sealed).await?;
        if secrets.signing == new {
            let previous_until = secrets.rotate(new.clone(), now + ROTATION_OVERLAP, now);
            return Ok(Json(json!({ "secret": new.expose(), "previous_valid_until": previous_until })));
        }
    }
    let (api2, new2) = (&api, &new);
    let (hook, previous_until) =
        update(&api, &caller, &id, Edit::Config { expected_version: None }, |mut h| async move {
            let sealer = &api2.ports().sealer;
            let mut secrets = sealer.open(SecretsOwner::of(&h), &h.sealed).await?;
            let previous_until = secrets.rotate(new2.clone(), now + ROTATION_OVERLAP, now);
            h.sealed = sealer.seal(SecretsOwner::of(&h), &secrets).await?;
            Ok((h, previous_until))
        })
        .await?;
    tracing::info!(tenant = %hook.tenant, hook_id = %hook.id, "signing secret rotated");
    Ok(Json(json!({ "secret": new.expose(), "previous_valid_until": previous_until })))
}

/// `POST /v1/hooks/{id}/test`: a `hook.test` event to this hook only.
pub async fn test_event(
    State(api): State<Api>,
    Writer(caller): Writer,
    Path(id): Path<String>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let hook = load(&api, &caller, &id).await?;
    let now = Utc::now();
    let detail = json!({
        "tenant": hook.tenant,
        "hook_id": hook.id,
        "message": "A test event from Hookbridge: this hook is set up and reachable.",
    });
    let entry = BusEntry {
        detail_type: event_type::HOOK_TEST.to_owned(),
        source: PLATFORM_SOURCE.to_owned(),
        time: Some(now),
        resources: Vec::new(),
        detail: serde_json::value::to_raw_value(&detail)
            .map_err(|e| ApiError::Internal(hookbridge_core::Error::backend("encode", e)))?,
    };
    let settings = api.settings();
    let envelope = entry.into_envelope(EventId::generate_at(now), &settings.account, &settings.region, now);
    let key = DeliveryKey {
        tenant: hook.tenant.clone(),
        hook_id: hook.id,
        delivery_id: DeliveryId::generate(),
        event_id: envelope.id.clone(),
        event_type: envelope.detail_type.clone(),
    };
    let retention = Duration::from_std(settings.event_retention).unwrap_or(Duration::days(14));
    let b = api.ports();
    b.events.put(&hook.tenant, std::slice::from_ref(&envelope), now + retention).await?;
    // Queued before it is recorded: a record with nothing queued behind it would stay
    // PENDING, which a retry refuses. The worker's own record makes it, should this
    // insert fail, and an insert after the worker's outcome changes nothing.
    let task = Task::new(key.clone(), 0, &envelope.to_body());
    b.lanes.get(hook.state.health.lane(now)).send_batch(&[task.message(now)]).await?;
    b.deliveries.insert(&[Delivery::pending_for(&key, now)]).await?;
    Ok((StatusCode::ACCEPTED, Json(json!({ "delivery_id": key.delivery_id, "event_id": key.event_id }))))
}
