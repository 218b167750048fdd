//! `POST /v1/events`: producers publish events; the tenant comes from the token.
//! [`input`] turns the body into bus entries, [`once`] keeps repeats from publishing
//! twice, and this module puts them together: validate, hold the tenant to its rate,
//! claim, publish, answer. Publishing puts each event straight on the ingest queue as the
//! bus's rule would have (unless the deployment asks for the bus, or the event is large);
//! docs/decisions/0019 has the arithmetic.

mod input;
pub(crate) mod once;

pub use once::{CLAIM_PENDING_FOR, IDEMPOTENCY_WINDOW, request_claim_key};

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use chrono::{DateTime, Utc};
use hookbridge_core::envelope::{BusEntry, DIRECT_MAX_BYTES};
use hookbridge_core::ids::{EventId, TenantId};
use hookbridge_core::ports::{Claim, MAX_MESSAGE_BYTES, OutgoingMessage, StoredResponse};
use hookbridge_core::settings::PublishTo;
use hookbridge_core::validation::FieldError;
use serde_json::{Value, json};

use crate::Api;
use crate::auth::Publisher;
use crate::body::JsonBody;
use crate::error::ApiError;
use crate::request_log::LogNote;
use input::Accepted;
use once::Once;

/// `POST /v1/events`.
pub async fn publish(
    State(api): State<Api>,
    Publisher(caller): Publisher,
    note: Option<Extension<LogNote>>,
    headers: HeaderMap,
    JsonBody(bytes): JsonBody,
) -> Result<Response, ApiError> {
    let tenant = caller.tenant;
    let request = Once::of_request(&headers)?;
    let accepted = accept(&api, &bytes, &tenant)?;
    let now = Utc::now();
    let store = api.ports().idempotency.as_ref();
    let fingerprint = once::fingerprint(&bytes);
    // The key first: a repeat of an answered request gets its answer, and is not charged
    // to the tenant's rate (at its rate, it was a 429 instead of the answer promised).
    if let Some(r) = &request
        && let Some(answer) =
            once::settle_request_claim(r.claim(store, &tenant, &fingerprint, now).await?, &fingerprint)?
    {
        return Ok(once::replayed(answer));
    }
    // The tenant's rate is charged further in, once the events' own ids are claimed: a
    // repeat of one already published publishes nothing, so it costs nothing either.
    let result = publish_events(&api, &tenant, accepted, now).await;
    if let Some(r) = &request {
        match &result {
            Ok(body) => r.complete(store, &tenant, StoredResponse { status: 202, body: body.to_string() }).await,
            Err(_) => r.release(store, &tenant).await,
        }
    }
    let result = result?;
    if let (Some(Extension(note)), Some(events)) = (note, result["events"].as_array()) {
        note.events(events.len());
    }
    Ok((StatusCode::ACCEPTED, Json(result)).into_response())
}

/// The size of the envelope the bus would deliver for `entry`, when it is past what a queue
/// takes: the bus's limit counts the entry alone, and the envelope's own fields (its id,
/// account, region, time) could take an event at that limit past the ingest queue's, where
/// the bus's rule could never put it. Measured only where it could be: near the limit, or
/// with strings long enough that escaping them (each `"` and `\` written as two bytes in
/// the envelope, which the bus does not count) could take it there.
fn over_a_queue(api: &Api, entry: &BusEntry) -> Option<usize> {
    let strings = entry.detail_type.len() + entry.source.len() + entry.resources.iter().map(String::len).sum::<usize>();
    if entry.size() + strings + 1024 < MAX_MESSAGE_BYTES {
        return None;
    }
    let s = api.settings();
    let size = entry.clone().into_envelope(EventId::generate(), &s.account, &s.region, Utc::now()).to_body().len();
    (size > MAX_MESSAGE_BYTES).then_some(size)
}

/// Every event of the body validated for `tenant`: the bus entries, or every field at
/// fault (`413` first, for an event over the bus's limit).
fn accept(api: &Api, bytes: &[u8], tenant: &TenantId) -> Result<Vec<Accepted>, ApiError> {
    let (raw, array) = input::split(bytes)?;
    let mut accepted = Vec::with_capacity(raw.len());
    let mut errors = Vec::new();
    for (i, r) in raw.iter().enumerate() {
        match input::validate(r, array.then_some(i), tenant) {
            Ok(a) => {
                let which = || if array { format!("event [{i}]") } else { "the event".to_owned() };
                if let Err(hookbridge_core::Error::TooLarge(why)) = a.entry.fits() {
                    return Err(ApiError::TooLarge(format!("{} is {why}", which())));
                }
                if let Some(size) = over_a_queue(api, &a.entry) {
                    return Err(ApiError::TooLarge(format!(
                        "{} is {size} bytes in the envelope ingest reads; a queue takes at most {MAX_MESSAGE_BYTES}",
                        which()
                    )));
                }
                accepted.push(a);
            }
            Err(e) => errors.extend(e),
        }
    }
    let mut seen_ids = std::collections::HashSet::new();
    for a in &accepted {
        if let Some(pid) = &a.producer_id
            && !seen_ids.insert(pid.clone())
        {
            // Named by its place in the request (`accepted` leaves out the events at fault).
            let at = a.index.map_or_else(|| "id".to_owned(), |i| format!("[{i}].id"));
            errors.push(FieldError::new(at, "is given to another event of this request"));
        }
    }
    if !errors.is_empty() {
        return Err(ApiError::fields(errors));
    }
    Ok(accepted)
}

/// Holds a tenant to its publish rate: every event the API publishes counts, so no one
/// tenant can queue more work for ingest than ingest clears, which is what would delay
/// everyone else's events.
async fn throttle(api: &Api, tenant: &TenantId, events: usize, now: DateTime<Utc>) -> Result<(), ApiError> {
    let q = api.settings().quotas;
    match api.meter().take(api.ports().limiter.as_ref(), q, tenant, events as u32, now).await? {
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

/// Publishes the events, skipping those whose producer id was already published in the
/// last 24 hours (answering with the id they got then).
async fn publish_events(
    api: &Api,
    tenant: &TenantId,
    events: Vec<Accepted>,
    now: DateTime<Utc>,
) -> Result<Value, ApiError> {
    let store = api.ports().idempotency.as_ref();
    let mut claimed: Vec<(usize, Once)> = Vec::new();
    let outcome = claim_and_publish(api, tenant, events, now, &mut claimed).await;
    if outcome.is_err() {
        // Whatever went wrong, the producer ids this request claimed are free again, so a
        // retry can publish them.
        for (_, c) in &claimed {
            c.release(store, tenant).await;
        }
    }
    outcome
}

async fn claim_and_publish(
    api: &Api,
    tenant: &TenantId,
    events: Vec<Accepted>,
    now: DateTime<Utc>,
    claimed: &mut Vec<(usize, Once)>,
) -> Result<Value, ApiError> {
    let store = api.ports().idempotency.as_ref();
    let mut ids: Vec<Option<EventId>> = Vec::with_capacity(events.len());
    let mut to_publish = Vec::new();
    // The events' claims are made side by side: each is a round trip or two to the store
    // (decision 0027), and one after another they added up across a call's events. Every
    // claim made is noted before any refusal is answered, so all of them are released.
    let claims = futures::future::join_all(events.iter().map(|a| async move {
        let pid = a.producer_id.as_ref()?;
        let c = Once::Event(pid.clone());
        Some((c.claim(store, tenant, pid, now).await, c))
    }))
    .await;
    let mut refused: Option<ApiError> = None;
    for ((i, a), claim) in events.into_iter().enumerate().zip(claims) {
        if let Some((claim, c)) = claim {
            let pid = a.producer_id.as_deref().unwrap_or_default();
            match claim {
                Ok(Claim::Claimed) => claimed.push((i, c)),
                Ok(Claim::Existing { response: Some(r), .. }) => {
                    ids.push(r.body.parse().ok());
                    continue;
                }
                Ok(Claim::Existing { response: None, .. }) => {
                    refused.get_or_insert_with(|| {
                        ApiError::Conflict(format!("event {pid} is being published by another request"))
                    });
                }
                Err(e) => {
                    refused.get_or_insert(e);
                }
            }
        }
        ids.push(None);
        to_publish.push((i, a.index, a.entry));
    }
    if let Some(e) = refused {
        return Err(e);
    }
    // Declared schemas are checked only now, on what is still to publish: they can change
    // between a request and its repeat, and a repeat (the same key, or an event id already
    // published) gets the answer it got then, not a 400 of today's schema.
    let typed: Vec<_> = to_publish.iter().map(|(_, at, e)| (*at, e.detail_type.as_str(), e.detail.as_ref())).collect();
    api.schemas().check(api, tenant, &typed).await?;
    // Charged only for what will be published (a throttled call's claims are released):
    // not for a repeat, nor for events a schema refuses.
    if !to_publish.is_empty() {
        // Against the clock as it is now, not at the request's start: the claims and the
        // schemas before it may have waited (on a busy store, on the tenant's turn), and a
        // call charged at its start time was refused room the rate had made since, and
        // told to wait that much longer.
        throttle(api, tenant, to_publish.len(), Utc::now()).await?;
    }
    let positions: Vec<usize> = to_publish.iter().map(|(i, _, _)| *i).collect();
    let (published, failed) = put(api, tenant, to_publish.into_iter().map(|(_, _, e)| e).collect(), now).await;
    let mut answered = Vec::new();
    for (pos, id) in positions.iter().zip(published) {
        // Out already, even when others of the request were not: its producer id answers
        // with it from now on, so the retry a failure calls for does not publish it twice.
        let Some(id) = id else { continue };
        if let Some(at) = claimed.iter().position(|(i, _)| i == pos) {
            let (_, c) = claimed.remove(at);
            answered.push((c, id.to_string()));
        }
        ids[*pos] = Some(id);
    }
    futures::future::join_all(
        answered
            .into_iter()
            .map(|(c, body)| async move { c.complete(store, tenant, StoredResponse { status: 202, body }).await }),
    )
    .await;
    if let Some(e) = failed {
        return Err(e);
    }
    // The request's own line says it at `info`, with the tenant and the count.
    tracing::debug!(tenant = %tenant, count = ids.len(), "events published");
    let events: Vec<Value> = ids.into_iter().map(|id| json!({ "id": id })).collect();
    Ok(json!({ "events": events }))
}

/// Puts the entries where ingest reads them: the event id of each that went out, in order,
/// and what stopped the others. Small events go straight onto the ingest queue (as the
/// bus's rule puts them, and in the tenant's group, which the rule cannot set), larger
/// ones, and all of them when the deployment asks for it, through the bus. The queue and
/// the bus each say which of what they were given went out.
async fn put(
    api: &Api,
    tenant: &TenantId,
    entries: Vec<BusEntry>,
    now: DateTime<Utc>,
) -> (Vec<Option<EventId>>, Option<ApiError>) {
    let ports = api.ports();
    let settings = api.settings();
    let count = entries.len();
    if settings.publish_to == PublishTo::Bus {
        return match ports.bus.publish_each(entries).await {
            Ok(ids) => (ids.into_iter().map(Some).collect(), None),
            Err(partly) => (partly.ids, Some(partly.error.into())),
        };
    }
    let mut ids: Vec<Option<EventId>> = vec![None; count];
    let (mut direct, mut direct_at) = (Vec::new(), Vec::new());
    let (mut large, mut large_at) = (Vec::new(), Vec::new());
    for (i, entry) in entries.into_iter().enumerate() {
        if entry.size() > DIRECT_MAX_BYTES {
            large.push(entry);
            large_at.push(i);
            continue;
        }
        let envelope = entry.into_envelope(EventId::generate_at(now), &settings.account, &settings.region, now);
        direct_at.push((i, envelope.id.clone()));
        direct.push(OutgoingMessage::now(envelope.to_body()).in_group(tenant.to_string()));
    }
    let mut failed = None;
    if !direct.is_empty() {
        let unsent = match ports.ingest.send_each(&direct).await {
            Ok(()) => Vec::new(),
            Err(unsent) => {
                failed = Some(unsent.error.into());
                unsent.indices
            }
        };
        for (n, (i, id)) in direct_at.into_iter().enumerate() {
            if !unsent.contains(&n) {
                ids[i] = Some(id);
            }
        }
    }
    if !large.is_empty() && failed.is_none() {
        let published = match ports.bus.publish_each(large).await {
            Ok(published) => published.into_iter().map(Some).collect(),
            Err(partly) => {
                failed = Some(partly.error.into());
                partly.ids
            }
        };
        for (i, id) in large_at.into_iter().zip(published) {
            ids[i] = id;
        }
    }
    (ids, failed)
}
