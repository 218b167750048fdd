//! Sending deliveries again: one (`retry`, at once) or a time window (`replay`, as a job
//! that ingest works through a page at a time; see `hookbridge_core::replay`). A re-send
//! is a new round of the same delivery: same `webhook-id`, the full retry schedule again.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, Duration, Utc};
use hookbridge_core::delivery::DeliveryStatus;
use hookbridge_core::hook::Hook;
use hookbridge_core::ids::{DeliveryId, ReplayId};
use hookbridge_core::ports::StoredResponse;
use hookbridge_core::replay::{ReplayJob, ReplayState};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::Api;
use crate::auth::{Caller, Reader, Writer};
use crate::body::{ApiQuery, JsonBody, parse_object};
use crate::error::ApiError;
use crate::events::once::{self, Once};
use crate::hooks::{ListQuery, limit, load};

/// Deliveries are kept this long, so a replay cannot reach further back.
const MAX_REPLAY_AGE: Duration = Duration::days(hookbridge_core::delivery::DELIVERY_RETENTION_DAYS);
/// Replay jobs listed per page, by default and at most.
const JOBS_PAGE: usize = 20;
const MAX_JOBS_PAGE: usize = 100;
/// Store pages one listing reads at most, passing over jobs the caller may not see.
const PASSED_OVER_PAGES: usize = 10;

/// `POST /v1/hooks/{id}/deliveries/{delivery_id}/retry`: sent again now.
pub async fn retry(
    State(api): State<Api>,
    Writer(caller): Writer,
    Path((id, delivery_id)): Path<(String, String)>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let delivery_id = retry_one(&api, &caller, &id, &delivery_id).await?;
    Ok((StatusCode::ACCEPTED, Json(json!({ "delivery_id": delivery_id }))))
}

/// Sends the caller's finished delivery again now, as a new round; its id. `404` if the
/// hook or delivery is not the caller's, `409` if it is not finished, the hook cannot
/// receive, its event is no longer kept, or the hook no longer subscribes to it.
pub(crate) async fn retry_one(
    api: &Api,
    caller: &Caller,
    hook_id: &str,
    delivery_id: &str,
) -> Result<DeliveryId, ApiError> {
    let (hook, delivery) = crate::deliveries::load_delivery(api, caller, hook_id, delivery_id).await?;
    receiving(&hook)?;
    if !delivery.status.is_final() {
        return Err(ApiError::Conflict(format!(
            "the delivery is {:?} and will be attempted again anyway; retry a finished one",
            delivery.status
        )));
    }
    let p = api.ports();
    let resent = ingest::replay::resend(
        p.events.as_ref(),
        p.deliveries.as_ref(),
        &p.lanes,
        &hook,
        std::slice::from_ref(&delivery),
        "retry requested",
    )
    .await?;
    if resent.unroutable > 0 {
        return Err(ApiError::Conflict(
            "the delivery's kept event cannot be routed (its tenant or site do not read), so it cannot be checked \
             against the hook and is not sent again"
                .to_owned(),
        ));
    }
    if resent.unwanted > 0 {
        return Err(ApiError::Conflict(
            "the hook no longer subscribes to the delivery's event (its event_types or sites changed), so it is not sent again"
                .to_owned(),
        ));
    }
    if resent.queued == 0 {
        return Err(ApiError::Conflict(
            "the delivery's event is no longer kept, so it cannot be sent again".to_owned(),
        ));
    }
    tracing::info!(tenant = %hook.tenant, hook_id = %hook.id, delivery_id = %delivery.id, "delivery retried");
    Ok(delivery.id)
}

/// `409` unless the hook can receive: what is sent to one that cannot (disabled, made
/// inactive by its failures, awaiting verification) would only be cancelled, its status
/// overwritten, and a later replay of `FAILED` would no longer find it.
fn receiving(hook: &Hook) -> Result<(), ApiError> {
    hook.deliverable().map_err(|why| {
        ApiError::Conflict(format!("the hook cannot receive deliveries ({why}); enable it (or verify it) first"))
    })
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
    let mut wanted: Vec<DeliveryStatus> = Vec::new();
    for name in names {
        let status = serde_json::from_value(Value::String(name)).map_err(|_| {
            ApiError::field("status", "must be ALL or one or more of PENDING, RETRYING, SUCCEEDED, FAILED, CANCELLED")
        })?;
        // Each once: the job keeps the list, and a long list of repeats would be kept whole.
        if !wanted.contains(&status) {
            wanted.push(status);
        }
    }
    Ok(Some(wanted))
}

/// A job as the API shows it.
fn job_out(job: &ReplayJob) -> Value {
    json!({
        "id": job.id,
        "hook_id": job.hook_id,
        "state": job.state,
        "since": job.since,
        "until": job.until,
        "status": job.statuses.as_ref().map_or_else(|| json!("ALL"), |s| json!(s)),
        "queued": job.queued,
        "skipped": job.skipped,
        "created_at": job.created_at,
        "updated_at": job.updated_at,
        "finished_at": job.finished_at,
    })
}

/// `POST /v1/hooks/{id}/replay`: starts a job that re-sends the window's finished
/// deliveries, oldest first, and answers at once with it. With an `Idempotency-Key`, a
/// repeat of the request (a double submit, a client's retry after a timeout) gets the first
/// job back instead of starting a second that would send every delivery again.
pub async fn replay(
    State(api): State<Api>,
    Writer(caller): Writer,
    Path(id): Path<String>,
    headers: HeaderMap,
    JsonBody(bytes): JsonBody,
) -> Result<Response, ApiError> {
    let request = Once::of_request(&headers)?;
    let body: ReplayIn = parse_object(&bytes)?;
    let now = Utc::now();
    let since = time("since", body.since.as_deref())?.ok_or_else(|| ApiError::field("since", "is required"))?;
    let until = match time("until", body.until.as_deref())? {
        Some(until) if since >= until => return Err(ApiError::field("until", "must be later than since")),
        // No delivery is later than now, and the job must not take in ones made after it
        // was asked for: a later `until` means now.
        Some(until) => until.min(now),
        None => now,
    };
    if since >= now {
        return Err(ApiError::field("since", "must be in the past"));
    }
    // Nothing older than the retention is kept, so an earlier `since` means "all of it".
    let since = since.max(now - MAX_REPLAY_AGE);
    if since >= until {
        return Err(ApiError::field("until", "must be within the last 14 days: no older delivery is kept"));
    }
    let wanted = statuses(body.status)?;
    let hook = load(&api, &caller, &id).await?;
    let store = api.ports().idempotency.as_ref();
    // The same body to another hook, or from a caller that sees another part of the
    // hook's history (a portal session), is another request.
    let mut request_bytes =
        format!("POST /v1/hooks/{}/replay {:?}\n", hook.id, caller.history_since(&hook)).into_bytes();
    request_bytes.extend_from_slice(&bytes);
    let fingerprint = once::fingerprint(&request_bytes);
    if let Some(r) = &request
        && let Some(first) =
            once::settle_request_claim(r.claim(store, &hook.tenant, &fingerprint, now).await?, &fingerprint)?
    {
        let job_id = serde_json::from_str::<Value>(&first.body).ok().and_then(|j| j["id"].as_str().map(str::to_owned));
        let mut answer = once::replayed(first);
        if let Some(location) = job_id.and_then(|j| HeaderValue::try_from(location(&hook, &j)).ok()) {
            answer.headers_mut().insert(header::LOCATION, location);
        }
        return Ok(answer);
    }
    // The key first: a repeat of an answered request gets its answer, though the hook may
    // have stopped receiving since (the first job's own failures can disable it).
    let checked = match receiving(&hook).and_then(|()| window_seen(&caller, &hook, since, until)) {
        Ok(since) => room_for_a_job(&api, &hook, now).await.map(|()| since),
        Err(refused) => Err(refused),
    };
    let since = match checked {
        Ok(since) => since,
        Err(refused) => {
            if let Some(r) = &request {
                r.release(store, &hook.tenant).await;
            }
            return Err(refused);
        }
    };
    let job = ReplayJob::new(hook.tenant.clone(), hook.id, since, until, wanted, now);
    let started = start(&api, &hook, &job).await;
    if let Some(r) = &request {
        match &started {
            Ok(()) => {
                r.complete(store, &hook.tenant, StoredResponse { status: 202, body: job_out(&job).to_string() }).await
            }
            Err(_) => r.release(store, &hook.tenant).await,
        }
    }
    started?;
    let mut answer = (StatusCode::ACCEPTED, Json(job_out(&job))).into_response();
    if let Ok(location) = HeaderValue::try_from(location(&hook, &job.id.to_string())) {
        answer.headers_mut().insert(header::LOCATION, location);
    }
    Ok(answer)
}

/// The most replay jobs of one hook running at once. Each re-sends up to 14 days of the
/// hook's deliveries outside the tenant's publish rate, and two over one window send it
/// twice: without a bound, a request repeated without an `Idempotency-Key` (a script's
/// loop) sent the hook's whole history again each time.
const MAX_RUNNING_REPLAYS: usize = 4;

/// `409` when the hook already has [`MAX_RUNNING_REPLAYS`] jobs running (a stalled one,
/// which nothing moves, is not counted).
async fn room_for_a_job(api: &Api, hook: &Hook, now: DateTime<Utc>) -> Result<(), ApiError> {
    // Running jobs are the newest: the list is newest first, and one older than the last
    // hundred has long stalled.
    let recent = api.ports().replays.list(hook.id, 100, None).await?;
    let running = recent.items.iter().filter(|j| j.state == ReplayState::Running && !j.stalled(now)).count();
    if running >= MAX_RUNNING_REPLAYS {
        return Err(ApiError::Conflict(format!(
            "{running} replay jobs of this hook are running, the most at once: cancel one (`POST …/replays/{{replay_id}}/cancel`) or wait for one to end"
        )));
    }
    Ok(())
}

/// Where the replay's window begins for `caller`: no earlier than the part of the hook's
/// history it sees ([`Caller::history_since`]); refused when that part begins after
/// `until`.
fn window_seen(
    caller: &Caller,
    hook: &Hook,
    since: DateTime<Utc>,
    until: DateTime<Utc>,
) -> Result<DateTime<Utc>, ApiError> {
    match caller.history_since(hook) {
        Some(from) if from >= until => {
            let why = format!(
                "this session sees the hook's deliveries only from {} ({} s after its sites last changed): it has none to replay before then",
                from.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
                crate::auth::HISTORY_AFTER_CHANGE.num_seconds()
            );
            Err(ApiError::field("since", why))
        }
        Some(from) => Ok(since.max(from)),
        None => Ok(since),
    }
}

/// Where a replay job of `hook` is read.
fn location(hook: &Hook, job_id: &str) -> String {
    format!("/v1/hooks/{}/replays/{job_id}", hook.id)
}

/// Stores `job` and pokes ingest to work on it.
async fn start(api: &Api, hook: &Hook, job: &ReplayJob) -> Result<(), ApiError> {
    let p = api.ports();
    p.replays.create(job).await?;
    if let Err(e) = ingest::replay::poke(p.ingest.as_ref(), job).await {
        // Nothing will work on it: it must not read as running. The caller may ask again.
        match p.replays.save(&job.stopped(ReplayState::Failed, Utc::now()), job.step).await {
            Ok(true) => {}
            // A page was saved meanwhile: the poke went after all (its answer was lost), and
            // the job runs. Answered `500`, the caller would ask again and have the window
            // sent twice.
            Ok(false) => {
                tracing::warn!(tenant = %hook.tenant, hook_id = %hook.id, replay_id = %job.id, error = %e,
                    "a replay's poke seemed to fail, but the job is moving: it started");
                return Ok(());
            }
            Err(unsaved) => {
                tracing::error!(tenant = %hook.tenant, hook_id = %hook.id, replay_id = %job.id, error = %unsaved,
                    "a replay that could not start could not be marked failed: it reads as running until it stalls");
            }
        }
        return Err(e.into());
    }
    tracing::info!(tenant = %hook.tenant, hook_id = %hook.id, replay_id = %job.id, "replay started");
    Ok(())
}

/// Whether `caller` may see `job` of `hook`: a caller held to some sites, only a job whose
/// window begins where its history of the hook begins ([`Caller::history_since`]). An
/// earlier window re-sent, and counts, deliveries for the sites the hook had then, perhaps
/// another customer's.
fn shown(caller: &Caller, hook: &Hook, job: &ReplayJob) -> bool {
    caller.history_since(hook).is_none_or(|from| job.since >= from)
}

/// The caller's replay job. A job outlives its hook: one stopped because its hook was
/// deleted stays readable, as every job does, for [`hookbridge_core::replay::JOB_KEPT`], to
/// the callers who saw all of the tenant's hooks (a portal session held to some sites
/// cannot tell whether the deleted hook was one of its).
async fn load_job(api: &Api, caller: &Caller, id: &str, replay_id: &str) -> Result<ReplayJob, ApiError> {
    let replay_id: ReplayId = replay_id.parse().map_err(|_| ApiError::NotFound("no such replay"))?;
    let job = match load(api, caller, id).await {
        Ok(hook) => api.ports().replays.get(hook.id, replay_id).await?.filter(|j| shown(caller, &hook, j)),
        Err(ApiError::NotFound(what)) => {
            let hook_id = crate::hooks::hook_id(id)?;
            if !caller.sites.is_empty() {
                return Err(ApiError::NotFound(what));
            }
            let job = api.ports().replays.get(hook_id, replay_id).await?.filter(|j| j.tenant == caller.tenant);
            if job.is_none() {
                return Err(ApiError::NotFound(what));
            }
            job
        }
        Err(e) => return Err(e),
    };
    job.ok_or(ApiError::NotFound("no such replay"))
}

/// `job` poked again if it has stalled ([`ReplayJob::stalled`]): read, it would say
/// `RUNNING` for its seven days with nothing working on it. It is saved a step on first,
/// so that of two reads at once only one pokes it, and the reads after it do not. A poke
/// of it still on its way (a queue backed up for that long) then finds its page saved by
/// someone else and stops; the new poke reads that page again, counting what was re-sent
/// rather than sending it twice.
async fn revive(api: &Api, job: ReplayJob) -> ReplayJob {
    let now = Utc::now();
    if !job.stalled(now) {
        return job;
    }
    let p = api.ports();
    let touched = ReplayJob { updated_at: now, step: job.step + 1, ..job.clone() };
    match p.replays.save(&touched, job.step).await {
        Ok(true) => {}
        // A page was saved meanwhile (it is moving after all), or another read poked it.
        Ok(false) => return job,
        Err(e) => {
            tracing::warn!(replay_id = %job.id, error = %e, "could not mark a stalled replay to poke it again");
            return job;
        }
    }
    match ingest::replay::poke(p.ingest.as_ref(), &touched).await {
        Ok(()) => tracing::warn!(tenant = %job.tenant, hook_id = %job.hook_id, replay_id = %job.id,
            "a replay with no page saved for a while was poked again"),
        Err(e) => tracing::error!(replay_id = %job.id, error = %e, "could not poke a stalled replay again"),
    }
    touched
}

/// `GET /v1/hooks/{id}/replays/{replay_id}`: where a replay is.
pub async fn replay_job(
    State(api): State<Api>,
    Reader(caller): Reader,
    Path((id, replay_id)): Path<(String, String)>,
) -> Result<Json<Value>, ApiError> {
    let job = load_job(&api, &caller, &id, &replay_id).await?;
    Ok(Json(job_out(&revive(&api, job).await)))
}

/// `GET /v1/hooks/{id}/replays`: the hook's replay jobs still kept, newest first, so one
/// whose id was not kept can be found, followed and cancelled.
pub async fn replay_jobs(
    State(api): State<Api>,
    Reader(caller): Reader,
    Path(id): Path<String>,
    ApiQuery(q): ApiQuery<ListQuery>,
) -> Result<Json<Value>, ApiError> {
    let limit = limit(q.limit.as_deref(), JOBS_PAGE, MAX_JOBS_PAGE)?;
    let hook = load(&api, &caller, &id).await?;
    // Jobs a caller held to some sites may not see are passed over, reading on (a few store
    // pages at most) so that they do not crowd out the ones it may.
    let mut jobs = Vec::new();
    let mut cursor = q.cursor.clone();
    for _ in 0..PASSED_OVER_PAGES {
        let page = api.ports().replays.list(hook.id, limit - jobs.len(), cursor.as_deref()).await?;
        jobs.extend(page.items.into_iter().filter(|j| shown(&caller, &hook, j)));
        cursor = page.next_cursor;
        if cursor.is_none() || jobs.len() == limit {
            break;
        }
    }
    let mut replays = Vec::with_capacity(jobs.len());
    for job in jobs {
        replays.push(job_out(&revive(&api, job).await));
    }
    Ok(Json(json!({ "replays": replays, "next_cursor": cursor })))
}

/// `POST /v1/hooks/{id}/replays/{replay_id}/cancel`: stops a running replay after the page
/// under way; what it re-sent stays sent. Cancelling a stopped one changes nothing.
pub async fn cancel(
    State(api): State<Api>,
    Writer(caller): Writer,
    Path((id, replay_id)): Path<(String, String)>,
) -> Result<Json<Value>, ApiError> {
    let mut job = load_job(&api, &caller, &id, &replay_id).await?;
    // A page may be saved between the read and the save; read again and retry.
    for _ in 0..10 {
        if job.state.is_final() {
            return Ok(Json(job_out(&job)));
        }
        let cancelled = job.stopped(ReplayState::Cancelled, Utc::now());
        if api.ports().replays.save(&cancelled, job.step).await? {
            tracing::info!(tenant = %job.tenant, hook_id = %job.hook_id, replay_id = %job.id, "replay cancelled");
            return Ok(Json(job_out(&cancelled)));
        }
        job = load_job(&api, &caller, &id, &replay_id).await?;
    }
    Err(ApiError::Conflict("the replay kept moving; try cancelling again".to_owned()))
}
