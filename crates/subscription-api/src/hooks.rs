//! `/v1/hooks`: create (one or many), list, get, replace, delete.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use chrono::Utc;
use hookbridge_core::hook::HookSecrets;
use hookbridge_core::hook::{
    ConnectionState, DestinationState, Health, Hook, HookConfig, HookDraft, HookState, Modified, SecretsOwner,
    UPDATE_ROUNDS, ValidationContext, VerificationStatus, modify,
};
use hookbridge_core::ids::{HookId, TenantId};
use hookbridge_core::message::{PlatformDetail, event_type};
use hookbridge_core::rate::{hook_key, schedule_of};
use hookbridge_core::secret::SigningSecret;
use hookbridge_core::validation::FieldError;
use serde::Deserialize;
use serde_json::{Value, json};

use crate::auth::{Caller, Reader, Writer};
use crate::body::{ApiQuery, JsonBody, Unique, from_value, parse};
use crate::dto::HookOut;
use crate::error::ApiError;
use crate::{Api, lifecycle};

/// Most hooks one create call may carry.
pub const MAX_BULK: usize = 100;
/// How long a bulk create goes on beginning hooks. Each is made one after another, a few
/// AWS calls each (tens of milliseconds when AWS answers as usual, up to seconds when it
/// is slow); past this the rest are answered `503`, not attempted, so the request answers
/// with what it made, secrets included, before the API function's 10 s timeout (unless
/// the one hook begun last is slower than the rest of it: each of its calls may take 4 s).
/// Ended by Lambda instead, the caller got the gateway's own error, and the secrets of the
/// hooks made were never shown.
pub const BULK_BEGUN_WITHIN: std::time::Duration = std::time::Duration::from_secs(5);
/// Default and largest page sizes for listing.
const DEFAULT_PAGE: usize = 50;
const MAX_PAGE: usize = 100;

/// Parses a hook id from the path; a malformed id is simply a hook that does not exist.
pub(crate) fn hook_id(raw: &str) -> Result<HookId, ApiError> {
    raw.parse().map_err(|_| ApiError::NotFound("no such hook"))
}

/// The caller's hook, or 404 (whether absent or another tenant's).
pub(crate) async fn load(api: &Api, caller: &Caller, raw_id: &str) -> Result<Hook, ApiError> {
    load_any(api, caller, raw_id)
        .await?
        .filter(|h| h.state.connection_state != ConnectionState::Deleting)
        .ok_or(ApiError::NotFound("no such hook"))
}

/// The caller's hook, including one left `DELETING` by an interrupted delete.
/// [`ApiError::UnreadableHook`] when this version cannot read it, to a caller who may see
/// every hook of the tenant; to one held to some sites it is not there (its sites are
/// unknown).
async fn load_any(api: &Api, caller: &Caller, raw_id: &str) -> Result<Option<Hook>, ApiError> {
    let id = hook_id(raw_id)?;
    match api.ports().hooks.get(&caller.tenant, id).await {
        Ok(hook) => Ok(hook.filter(|h| caller.sees(h))),
        Err(e @ hookbridge_core::Error::Corrupt { .. }) => {
            tracing::error!(tenant = %caller.tenant, hook_id = %id, error = %e, "cannot read this hook (a newer version wrote it?)");
            if caller.sites.is_empty() { Err(ApiError::UnreadableHook) } else { Ok(None) }
        }
        Err(e) => Err(e.into()),
    }
}

/// `400` unless `config` stays within the sites a site-held caller (a portal session) may use.
fn within_sites(caller: &Caller, config: &HookConfig) -> Result<(), ApiError> {
    outside_sites(caller, &config.sites).map_or(Ok(()), |e| Err(ApiError::fields(vec![e])))
}

/// Why `sites` is not for a site-held caller (a portal session), if it is not.
fn outside_sites(caller: &Caller, sites: &[String]) -> Option<FieldError> {
    let within = caller.sites.is_empty() || (!sites.is_empty() && sites.iter().all(|s| caller.sites.contains(s)));
    (!within)
        .then(|| FieldError::new("sites", format!("must list only some of these sites: {}", caller.sites.join(", "))))
}

/// A draft's validation errors, and its `sites` error for a site-held caller among them:
/// every field at fault at once, not the sites only once the rest is put right.
fn invalid_draft(caller: &Caller, sites: Option<&[String]>, mut errors: Vec<FieldError>) -> ApiError {
    if !errors.iter().any(|e| e.field == "sites")
        && let Some(e) = outside_sites(caller, sites.unwrap_or_default())
    {
        errors.push(e);
    }
    ApiError::fields(errors)
}

/// `POST /v1/hooks`: one hook (`201`) or an array of up to 100 (`200`, one result each).
pub async fn create(
    State(api): State<Api>,
    Writer(caller): Writer,
    JsonBody(bytes): JsonBody,
) -> Result<Response, ApiError> {
    if bytes.trim_ascii_start().first() == Some(&b'[') {
        return create_many(&api, &caller, &bytes).await;
    }
    match parse::<Unique>(&bytes)?.0 {
        item @ Value::Object(_) => {
            let out = create_one(&api, &caller, hook_draft(item, "")?, &mut TenantBytes::default()).await?;
            let location = format!("/v1/hooks/{}", out.id);
            Ok((StatusCode::CREATED, [(header::LOCATION, location)], Json(out)).into_response())
        }
        _ => Err(ApiError::field("body", "must be a hook object or an array of hooks")),
    }
}

/// `POST /v1/hooks` with an array: each hook succeeds or fails on its own, one result each.
async fn create_many(api: &Api, caller: &Caller, bytes: &[u8]) -> Result<Response, ApiError> {
    // Each item read on its own: a key given twice in one fails that hook alone, as every
    // other fault of an item does, not the whole request.
    let too_many = || ApiError::field("body", format!("must hold 1-{MAX_BULK} hooks"));
    if crate::body::more_items_than(bytes, MAX_BULK) {
        return Err(too_many());
    }
    let items: Vec<Box<serde_json::value::RawValue>> = parse(bytes)?;
    if items.is_empty() || items.len() > MAX_BULK {
        return Err(too_many());
    }
    let mut results = Vec::with_capacity(items.len());
    let mut counted = TenantBytes::default();
    let began = tokio::time::Instant::now();
    for item in items {
        // Read first: a malformed item is refused as such whenever it comes.
        let made = match parse::<Unique>(item.get().as_bytes()).and_then(|Unique(item)| hook_draft(item, "")) {
            Ok(_) if began.elapsed() >= BULK_BEGUN_WITHIN => {
                Err(ApiError::Unavailable("not attempted: the hooks before it took the request's time; send it again"))
            }
            Ok(draft) => create_one(api, caller, draft, &mut counted).await,
            Err(e) => Err(e),
        };
        results.push(match made {
            Ok(out) => json!({ "status": 201, "hook": out }),
            Err(e) => {
                if let ApiError::Internal(cause) = &e {
                    tracing::error!(error = %cause, "creating one hook of a bulk request failed");
                }
                let p = e.problem();
                json!({ "status": p.status, "error": p })
            }
        });
    }
    Ok(Json(json!({ "results": results })).into_response())
}

async fn create_one(
    api: &Api,
    caller: &Caller,
    draft: HookDraft,
    counted: &mut TenantBytes,
) -> Result<HookOut, ApiError> {
    let (hook, secrets) = create_hook(api, caller, draft, None, counted).await?;
    let mut out = HookOut::from(&hook);
    out.secret = Some(crate::dto::ShownOnce(secrets.signing.expose().to_owned()));
    Ok(out)
}

/// A hook as written, read into its draft. serde reads a struct from an array too, by
/// position, so an array is refused wherever a hook is or holds an object (its auth,
/// verification and rate limit, each header and OAuth parameter): `"rate_limit": [5]` was a
/// limit of 5 a second. Each such place is named.
fn hook_draft(hook: Value, at: &str) -> Result<HookDraft, ApiError> {
    if !hook.is_object() {
        return Err(ApiError::field("body", "must be a hook object"));
    }
    let mut errors = Vec::new();
    for field in ["auth", "verification", "rate_limit"] {
        if hook.get(field).is_some_and(|v| !v.is_object() && !v.is_null()) {
            errors.push(FieldError::new(field, "must be an object"));
        }
    }
    let auth = &hook["auth"];
    let (headers, params) = (hookbridge_core::hook::MAX_HEADERS, hookbridge_core::hook::MAX_PARAMS);
    let lists = [
        ("headers", &hook["headers"], headers, "headers"),
        ("auth.header_params", &auth["header_params"], params, "parameters"),
        ("auth.query_params", &auth["query_params"], params, "parameters"),
        ("auth.body_params", &auth["body_params"], params, "parameters"),
    ];
    for (name, list, most, what) in lists {
        match list.as_array() {
            // Refused whole, its items not looked at, as the draft's check would.
            Some(items) if items.len() > most => {
                errors.push(FieldError::new(name, format!("must list at most {most} {what}")));
            }
            Some(items) => {
                for (i, _) in items.iter().enumerate().filter(|(_, item)| !item.is_object()) {
                    errors.push(FieldError::new(format!("{name}[{i}]"), "must be an object"));
                }
            }
            None => {}
        }
    }
    if !errors.is_empty() {
        return Err(ApiError::fields(errors));
    }
    from_value(hook, at)
}

/// Validates and stores a new hook of the caller's, signing with `signing` when given (a
/// secret a compatibility route's client chose) instead of the draft's or a generated one.
pub(crate) async fn create_hook(
    api: &Api,
    caller: &Caller,
    draft: HookDraft,
    signing: Option<SigningSecret>,
    counted: &mut TenantBytes,
) -> Result<(Hook, HookSecrets), ApiError> {
    let now = Utc::now();
    let ctx = ValidationContext { network: &api.settings().network };
    let sites = draft.sites.clone();
    let (config, mut secrets) =
        draft.validate(ctx, None).map_err(|errors| invalid_draft(caller, sites.as_deref(), errors))?;
    within_sites(caller, &config)?;
    if let Some(s) = signing {
        secrets.signing = s;
    }
    let id = HookId::generate();
    let owner = SecretsOwner { tenant: &caller.tenant, hook: id };
    let sealed = api.ports().sealer.seal(owner, &secrets).await?;
    let hook = Hook {
        newer: Default::default(),
        id,
        tenant: caller.tenant.clone(),
        state: HookState::new_for(&config),
        config,
        sealed,
        created_by: caller.sub.clone(),
        created_at: now,
        updated_at: now,
        version: 1,
        revision: 1,
    };
    hook.check_stored_size(&secrets).map_err(|e| ApiError::fields(vec![e]))?;
    let size = hook.stored_size();
    let max_hooks = api.settings().quotas.max_hooks;
    let mut finished = false;
    loop {
        let others = counted.read(api, &hook.tenant).await?;
        let refused = match within_tenant_bytes(api, size, others) {
            Err(e) => e,
            Ok(()) => match api.ports().hooks.create(&hook, max_hooks).await {
                Ok(()) => break,
                Err(e @ (hookbridge_core::Error::NameTaken | hookbridge_core::Error::QuotaReached { .. })) => e.into(),
                Err(e) => return Err(e.into()),
            },
        };
        // Refused for its name or for room: perhaps held by deletes cut off half way.
        if finished || !finish_interrupted_deletes(api, &hook.tenant).await {
            return Err(refused);
        }
        finished = true;
        // What the finished hooks took stored is the tenant's no more.
        *counted = TenantBytes::default();
    }
    counted.add(size);
    tracing::info!(tenant = %hook.tenant, hook_id = %hook.id, "hook created");
    lifecycle::emit(api, event_type::HOOK_CREATED, &hook, None).await;
    Ok((hook, secrets))
}

/// Finishes the tenant's deletes that were interrupted after marking their hook
/// `DELETING` (a failed write, a timeout): such a hook reads as gone (`404`, left out of
/// lists, so the console offers no delete to retry), yet it held its name and counted
/// against the quota (its count and its bytes), and a create was refused `409` or `422`
/// for good. Whether any was finished, for the create to be tried again; read only when a
/// create is refused, and a failure here leaves the refusal as it was.
async fn finish_interrupted_deletes(api: &Api, tenant: &TenantId) -> bool {
    let hooks = match api.ports().hooks.list_all(tenant).await {
        Ok(hooks) => hooks,
        Err(e) => {
            tracing::warn!(%tenant, error = %e, "could not look for interrupted deletes");
            return false;
        }
    };
    let mut finished = false;
    for hook in hooks.iter().filter(|h| h.state.connection_state == ConnectionState::Deleting) {
        match api.ports().hooks.delete(tenant, hook.id).await {
            Ok(true) => {
                tracing::info!(tenant = %hook.tenant, hook_id = %hook.id, "an interrupted delete finished");
                lifecycle::emit(api, event_type::HOOK_DELETED, hook, None).await;
                finished = true;
            }
            // Finished meanwhile by its own request.
            Ok(false) => finished = true,
            Err(e) => {
                tracing::warn!(tenant = %hook.tenant, hook_id = %hook.id, error = %e, "could not finish an interrupted delete")
            }
        }
    }
    finished
}

/// What the tenant's other hooks take stored, as a request that creates hooks counts it:
/// read from the store for its first hook, then added to as it creates each, so a bulk
/// create reads the tenant's hooks once, not once an item.
#[derive(Debug, Default)]
pub(crate) struct TenantBytes(Option<usize>);

impl TenantBytes {
    async fn read(&mut self, api: &Api, tenant: &TenantId) -> Result<usize, ApiError> {
        if let Some(bytes) = self.0 {
            return Ok(bytes);
        }
        let bytes = api.ports().hooks.stored_bytes(tenant, None, quota(api)).await?;
        self.0 = Some(bytes);
        Ok(bytes)
    }

    fn add(&mut self, size: usize) {
        self.0 = self.0.map(|b| b.saturating_add(size));
    }
}

/// The most a tenant's hooks may take stored together (`HOOKBRIDGE_MAX_HOOK_MIB_PER_TENANT`).
fn quota(api: &Api) -> usize {
    api.settings().quotas.max_hook_bytes
}

/// What the tenant configured of a hook, as stored: its configuration and sealed secrets,
/// not the platform's state.
fn configured_size(hook: &Hook) -> usize {
    serde_json::to_vec(&hook.config).map_or(usize::MAX, |v| v.len()).saturating_add(hook.sealed.0.len())
}

/// Refuses a hook taking `size` stored beside `others` (what the tenant's other hooks take,
/// or more when counting stopped past the quota) past the tenant's quota of stored bytes.
///
/// Checked before the write, not in its transaction, so two writes at once may both pass:
/// ingest reads up to twice the quota ([`Quotas::routing_most_bytes`]), which covers a few.
///
/// [`Quotas::routing_most_bytes`]: hookbridge_core::settings::Quotas::routing_most_bytes
fn within_tenant_bytes(api: &Api, size: usize, others: usize) -> Result<(), ApiError> {
    let most = quota(api);
    if others.saturating_add(size) <= most {
        return Ok(());
    }
    Err(ApiError::QuotaReached {
        detail: format!(
            "the tenant's hooks would take more than {} KiB stored together, the most they may (this one {} KiB, the others at least {} KiB); make hooks smaller, delete one, or raise HOOKBRIDGE_MAX_HOOK_MIB_PER_TENANT",
            most / 1024,
            size.div_ceil(1024),
            others / 1024,
        ),
        limit: u32::try_from(most).unwrap_or(u32::MAX),
    })
}

/// Query of a listing by cursor: `GET /v1/hooks`, `GET /v1/hooks/{id}/replays`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListQuery {
    pub(crate) limit: Option<String>,
    pub(crate) cursor: Option<String>,
}

/// Parses a `limit` query parameter.
pub(crate) fn limit(raw: Option<&str>, default: usize, max: usize) -> Result<usize, ApiError> {
    match raw {
        None => Ok(default),
        Some(s) => match s.parse::<usize>() {
            Ok(n) if (1..=max).contains(&n) => Ok(n),
            _ => Err(ApiError::field("limit", format!("must be an integer from 1 to {max}"))),
        },
    }
}

/// `GET /v1/hooks?limit=&cursor=`.
pub async fn list(
    State(api): State<Api>,
    Reader(caller): Reader,
    ApiQuery(q): ApiQuery<ListQuery>,
) -> Result<Json<Value>, ApiError> {
    let limit = limit(q.limit.as_deref(), DEFAULT_PAGE, MAX_PAGE)?;
    let page = api.ports().hooks.list(&caller.tenant, limit, q.cursor.as_deref()).await?;
    let mut next_cursor = page.next_cursor;
    let (mut hooks, mut size) = (Vec::new(), 0);
    for (i, h) in page.items.iter().enumerate() {
        if h.state.connection_state == ConnectionState::Deleting || !caller.sees(h) {
            continue;
        }
        let out = HookOut::from(h);
        let len = serde_json::to_string(&out).map_or(0, |v| crate::body::as_answered(&v));
        if !hooks.is_empty() && size + len > MAX_PAGE_BYTES {
            // The rest on the next page, which starts after the last hook looked at here.
            next_cursor = i.checked_sub(1).and_then(|j| page.items.get(j)).map(|h| h.id.to_string());
            break;
        }
        size += len;
        hooks.push(out);
    }
    Ok(Json(json!({ "hooks": hooks, "next_cursor": next_cursor })))
}

/// The most a page of hooks holds, as answered ([`crate::body::as_answered`]), however
/// many `limit` allows: a Lambda function answers at most 6 MB (API Gateway turns more into
/// a `500`), and one hook may be up to 350 KiB as written.
pub const MAX_PAGE_BYTES: usize = 4 * 1024 * 1024;

/// `GET /v1/hooks/{id}`.
pub async fn get(
    State(api): State<Api>,
    Reader(caller): Reader,
    Path(id): Path<String>,
) -> Result<Json<HookOut>, ApiError> {
    Ok(Json(HookOut::from(&load(&api, &caller, &id).await?)))
}

/// `PUT /v1/hooks/{id}`: replaces the mutable fields; secrets left out keep their values.
pub async fn replace(
    State(api): State<Api>,
    Writer(caller): Writer,
    Path(id): Path<String>,
    headers: HeaderMap,
    JsonBody(bytes): JsonBody,
) -> Result<Json<HookOut>, ApiError> {
    let draft = hook_draft(parse::<Unique>(&bytes)?.0, "")?;
    let expected = match (draft.version, if_match(&headers)?) {
        (Some(a), Some(b)) if a != b => {
            return Err(ApiError::field("version", "differs from the If-Match header"));
        }
        (v, m) => v.or(m),
    };
    let hook = replace_hook(&api, &caller, &id, draft, None, expected).await?;
    Ok(Json(HookOut::from(&hook)))
}

/// Replaces the caller's hook's configuration with `draft` (secrets left out kept), and
/// its signing secret with `signing` when given.
pub(crate) async fn replace_hook(
    api: &Api,
    caller: &Caller,
    id: &str,
    draft: HookDraft,
    signing: Option<SigningSecret>,
    expected: Option<u64>,
) -> Result<Hook, ApiError> {
    replace_hook_from(api, caller, id, |_| Ok(draft.clone()), signing, expected).await
}

/// [`replace_hook`] with the replacement made from the hook as stored, afresh each time a
/// concurrent write makes it read the hook again: an edit of some fields (another
/// product's API changing only what its webhooks have) then keeps the others as they are
/// now, not as they were when first read.
pub(crate) async fn replace_hook_from(
    api: &Api,
    caller: &Caller,
    id: &str,
    draft_of: impl Fn(&Hook) -> Result<HookDraft, ApiError>,
    signing: Option<SigningSecret>,
    expected: Option<u64>,
) -> Result<Hook, ApiError> {
    let (api2, draft_of, signing) = (api, &draft_of, &signing);
    let (hook, (reset, left)) =
        update(api, caller, id, Edit::Config { expected_version: expected }, |existing| async move {
            let draft = &draft_of(&existing)?;
            if let Some(name) = &draft.name
                && name != existing.config.name.as_str()
            {
                return Err(ApiError::Conflict("a hook's name cannot be changed".to_owned()));
            }
            let sealer = &api2.ports().sealer;
            let owner = SecretsOwner::of(&existing);
            let old_secrets = sealer.open(owner, &existing.sealed).await?;
            let ctx = ValidationContext { network: &api2.settings().network };
            let (config, mut secrets) = draft
                .clone()
                .validate(ctx, Some((&existing.config, &old_secrets)))
                .map_err(|errors| invalid_draft(caller, draft.sites.as_deref(), errors))?;
            within_sites(caller, &config)?;
            if let Some(s) = signing.as_ref().filter(|s| **s != secrets.signing) {
                secrets.signing = s.clone();
                secrets.retiring.clear();
            }
            let state = replaced_state(&existing, &config);
            let unchanged = secrets == old_secrets && sealer.is_current(&existing.sealed);
            let sealed = if unchanged { existing.sealed.clone() } else { sealer.seal(owner, &secrets).await? };
            // Which circuit it closed by starting the health over, if one was open: told below,
            // as the worker tells one it closes, so an `opened` is always followed by a `closed`.
            let reset = (!existing.state.health.circuit.is_closed() && state.health.circuit.is_closed())
                .then(|| if config.url != existing.config.url { "its URL changed" } else { "it was re-enabled" });
            // The schedule its limit had, when the limit is set again (a new one begins).
            let left = (state.paced_since != existing.state.paced_since).then(|| schedule_of(&existing));
            let before = configured_size(&existing);
            // What a newer release configured that this one cannot is left as it was: a
            // replacement here could not have said anything of it (decision 0044).
            let config = config.keeping_newer_of(&existing.config);
            let hook = Hook { config, state, sealed, ..existing };
            hook.check_stored_size(&secrets).map_err(|e| ApiError::fields(vec![e]))?;
            // Only a replacement that grows what the tenant configured is held to the
            // quota: one over it (the quota lowered since) can still edit its hooks, and
            // down, whatever the platform's state in them (a health reset) did meanwhile.
            if configured_size(&hook) > before {
                let others = api2.ports().hooks.stored_bytes(&hook.tenant, Some(hook.id), quota(api2)).await?;
                within_tenant_bytes(api2, hook.stored_size(), others)?;
            }
            Ok((hook, (reset, left)))
        })
        .await?;
    tracing::info!(tenant = %hook.tenant, hook_id = %hook.id, version = hook.version, "hook replaced");
    if let Some(schedule) = left {
        // Nothing paces by it now. Forgotten, its turns (perhaps days of them) do not come
        // back into force if the hook falls back to it: a release before this one, beside
        // it in a deploy or after a rollback, writes hooks without their schedule.
        let key = hook_key(hook.id, schedule);
        if let Err(e) = api.ports().limiter.forget(&key, Utc::now()).await {
            tracing::warn!(tenant = %hook.tenant, hook_id = %hook.id, error = %e, "the hook's old rate-limit schedule could not be forgotten");
        }
    }
    lifecycle::emit(api, event_type::HOOK_UPDATED, &hook, None).await;
    if let Some(why) = reset {
        lifecycle::emit(
            api,
            event_type::HOOK_CIRCUIT_CLOSED,
            &hook,
            Some(format!("the hook's health started over: {why}")),
        )
        .await;
    }
    Ok(hook)
}

/// The state after the tenant replaced the configuration with `config`.
fn replaced_state(existing: &Hook, config: &HookConfig) -> HookState {
    let mut state = existing.state.clone();
    state.connection_state = ConnectionState::Updating;
    state.checked_from = None;
    if config.sites != existing.config.sites {
        state.sites_since = Some(chrono::Utc::now());
    }
    if config.rate_limit != existing.config.rate_limit {
        // A schedule of its own: not behind the turns the old setting gave out.
        state.paced_since = Some(chrono::Utc::now());
    }
    let url_changed = config.url != existing.config.url;
    // Replacing a hook is how its owner re-enables it after the failure rule disabled it;
    // and a new URL is a new endpoint. Either way the failures, the breaker and the slow
    // lane were about what it was, and start over: a new endpoint's first failures would
    // otherwise count towards the old one's disabling, without its own warning.
    if url_changed || (config.enabled && state.destination_state == DestinationState::Inactive) {
        state.health = Health { since: Some(chrono::Utc::now()), ..Health::default() };
    }
    if config.enabled {
        state.destination_state = DestinationState::Active;
        state.disabled_reason = None;
    } else {
        state.destination_state = DestinationState::Inactive;
        state.disabled_reason = Some("disabled by the tenant".to_owned());
    }
    let newly_required = config.verification.required && !existing.config.verification.required;
    if config.verification.required && (url_changed || newly_required) {
        state.verification.status = VerificationStatus::Pending;
        state.verification.verified_at = None;
        state.verification.last_error = None;
    } else if url_changed {
        // A new endpoint, not challenged: what the old one proved (or failed) is not
        // about it. A hook that does not require proof read `VERIFIED` for the new URL.
        state.verification.status = VerificationStatus::Unverified;
        state.verification.verified_at = None;
        state.verification.last_error = None;
    } else if !config.verification.required && state.verification.status == VerificationStatus::Pending {
        state.verification.status = VerificationStatus::Unverified;
    }
    state
}

/// What kind of write [`update`] makes.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Edit {
    /// A change of the tenant's configuration: bumps the visible `version`, and fails with
    /// 409 when the client's expected version is not the stored one.
    Config {
        /// The version the client read, if it asked for optimistic locking.
        expected_version: Option<u64>,
    },
    /// A change of the hook's state only (verification requested, deleting).
    State,
}

/// How many more times a tenant's change is tried when every round of [`modify`] found the
/// hook written under it, and how long it waits before the first (then longer, at random).
/// The workers write a hook's health once per batch, so a hook failing a flood of
/// deliveries on AWS is written as often as a read and a write take: five rounds in a row
/// lost, and the owner's fix (a `PUT`), `DELETE`, verify or rotation was `409` just when it
/// was needed.
const CONTENDED_TRIES: u32 = 6;
const CONTENDED_WAIT: std::time::Duration = std::time::Duration::from_millis(20);

/// Why [`modify`] gave up on a tenant's change.
enum Contended {
    /// Every round found the hook written under it.
    Busy,
    /// The change itself, or the store, refused.
    Refused(ApiError),
}

impl From<hookbridge_core::Error> for Contended {
    fn from(e: hookbridge_core::Error) -> Self {
        match e {
            hookbridge_core::Error::VersionConflict => Self::Busy,
            e => Self::Refused(e.into()),
        }
    }
}

/// Changes the caller's hook with `change`, which gets the hook as stored and returns its
/// successor and a value; re-applied on the hook as stored again when the platform changed
/// it meanwhile (the verifier recording a check, the worker recording health), so a
/// tenant's write neither clobbers platform state nor fails because of it. A tenant's
/// edit ([`Edit::Config`]) bumps `version` and is `409` when the client expected another;
/// a hook being deleted is `404`.
pub(crate) async fn update<T, F, Fut>(
    api: &Api,
    caller: &Caller,
    raw_id: &str,
    edit: Edit,
    mut change: F,
) -> Result<(Hook, T), ApiError>
where
    F: FnMut(Hook) -> Fut,
    Fut: Future<Output = Result<(Hook, T), ApiError>>,
{
    let mut existing = load(api, caller, raw_id).await?;
    let mut tries = 0;
    let r = loop {
        let r = modify(api.ports().hooks.as_ref(), existing, UPDATE_ROUNDS, |stored: Hook| {
            let changed = change(stored.clone());
            async move {
                // Read again after a concurrent write, it is judged again: deleted meanwhile, or
                // moved out of a portal session's sites, it is not this caller's to change.
                if stored.state.connection_state == ConnectionState::Deleting || !caller.sees(&stored) {
                    return Err(Contended::Refused(ApiError::NotFound("no such hook")));
                }
                if let Edit::Config { expected_version: Some(v) } = edit
                    && v != stored.version
                {
                    return Err(Contended::Refused(ApiError::Conflict(format!(
                        "the hook is at version {}, not {v}; read it again and retry",
                        stored.version
                    ))));
                }
                let (mut next, value) = changed.await.map_err(Contended::Refused)?;
                next.updated_at = Utc::now();
                if let Edit::Config { .. } = edit {
                    next.version = stored.version + 1;
                }
                Ok(Some((next, value)))
            }
        })
        .await;
        match r {
            Err(Contended::Busy) if tries < CONTENDED_TRIES => {
                // The platform writing the hook as often as it is read (its health, while a
                // flood of deliveries fails): wait a moment, at random, and read it again.
                tries += 1;
                let wait = CONTENDED_WAIT.mul_f64(f64::from(tries) * (0.5 + rand::random::<f64>()));
                tokio::time::sleep(wait).await;
                existing = load(api, caller, raw_id).await?;
            }
            Err(Contended::Busy) => return Err(hookbridge_core::Error::VersionConflict.into()),
            Err(Contended::Refused(e)) => return Err(e),
            Ok(r) => break r,
        }
    };
    match r {
        Modified::Written(hook, value) => Ok((hook, value)),
        Modified::Unchanged(_) | Modified::Deleted => Err(ApiError::NotFound("no such hook")),
    }
}

/// The version in an `If-Match` header (`"3"` or `3`); `*` asks only that the hook exist
/// (RFC 9110), which every replace does, so it locks nothing.
fn if_match(headers: &HeaderMap) -> Result<Option<u64>, ApiError> {
    match headers.get(header::IF_MATCH) {
        None => Ok(None),
        Some(v) if v.as_bytes().trim_ascii() == b"*" => Ok(None),
        Some(v) => v
            .to_str()
            .ok()
            .map(|s| s.trim().trim_start_matches("W/").trim_matches('"'))
            .and_then(|s| s.parse().ok())
            .map(Some)
            .ok_or_else(|| ApiError::field("If-Match", "must be the hook's version")),
    }
}

/// `DELETE /v1/hooks/{id}`: nothing more is delivered to it.
///
/// The hook passes through `DELETING` first: a worker that read it a moment earlier finds
/// it so when it looks again, and from then on nothing is sent to it.
pub async fn delete(
    State(api): State<Api>,
    Writer(caller): Writer,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    delete_hook(&api, &caller, &id).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Deletes the caller's hook.
pub(crate) async fn delete_hook(api: &Api, caller: &Caller, id: &str) -> Result<(), ApiError> {
    let existing = match load_any(api, caller, id).await {
        Err(ApiError::UnreadableHook) => return delete_unreadable(api, caller, hook_id(id)?).await,
        found => found?.ok_or(ApiError::NotFound("no such hook"))?,
    };
    // A delete interrupted after marking the hook finishes now.
    let hook = if existing.state.connection_state == ConnectionState::Deleting {
        existing
    } else {
        update(api, caller, id, Edit::State, |mut h| async move {
            h.state.connection_state = ConnectionState::Deleting;
            Ok((h, ()))
        })
        .await?
        .0
    };
    if !api.ports().hooks.delete(&caller.tenant, hook.id).await? {
        // Gone meanwhile: another request finished it (a repeat of this one, or a create
        // its name or quota refused), and told `hook.deleted`.
        return Ok(());
    }
    tracing::info!(tenant = %hook.tenant, hook_id = %hook.id, "hook deleted");
    lifecycle::emit(api, event_type::HOOK_DELETED, &hook, None).await;
    Ok(())
}

/// Deletes a hook this version cannot read (a newer release wrote it), for a caller who
/// may see every hook of the tenant: deleting needs nothing of its document. It is not
/// marked `DELETING` first, which would mean writing a document this version cannot
/// write back whole; a worker that cannot read it sends it nothing anyway, and finds it
/// gone afterwards. `hook.deleted` carries no version (none could be read).
async fn delete_unreadable(api: &Api, caller: &Caller, id: HookId) -> Result<(), ApiError> {
    if !api.ports().hooks.delete(&caller.tenant, id).await? {
        return Err(ApiError::NotFound("no such hook"));
    }
    tracing::warn!(tenant = %caller.tenant, hook_id = %id, "hook deleted, unread: this version could not read it");
    let detail = PlatformDetail {
        tenant: caller.tenant.clone(),
        hook_id: id,
        hook_version: None,
        delivery_id: None,
        reason: None,
    };
    lifecycle::emit_detail(api, event_type::HOOK_DELETED, detail).await;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A new URL is a new endpoint: a hook that does not require proof does not read
    /// `VERIFIED` for it (with the old endpoint's `verified_at`), nor `FAILED` with the old
    /// one's error. A change that keeps the URL keeps what was found.
    #[test]
    fn a_new_url_is_not_proven_by_the_old_ones_challenge() {
        let (mut existing, _) = hookbridge_testkit::contract::unsealed_hook(
            "acme",
            hookbridge_core::ids::HookId::generate(),
            serde_json::json!({"name": "h", "url": "https://old.example/hook"}),
        );
        existing.state.verification.status = VerificationStatus::Verified;
        existing.state.verification.verified_at = Some(chrono::Utc::now());
        let moved = HookConfig { url: "https://new.example/hook".into(), ..existing.config.clone() };
        let state = replaced_state(&existing, &moved);
        assert_eq!(state.verification.status, VerificationStatus::Unverified);
        assert_eq!((state.verification.verified_at, state.verification.last_error), (None, None));

        let renamed = HookConfig { description: Some("renamed".into()), ..existing.config.clone() };
        assert_eq!(replaced_state(&existing, &renamed).verification, existing.state.verification);
    }

    /// A site-held caller (a portal session) hears of its hook's `sites` with the draft's
    /// other faults, in one answer: it heard only once the rest was put right.
    #[test]
    fn a_site_held_callers_sites_are_named_with_the_drafts_other_faults() {
        let caller = Caller {
            tenant: "acme".parse().expect("tenant"),
            sub: "portal".into(),
            scopes: vec![],
            realm_roles: vec![],
            sites: vec!["a".into()],
        };
        let url = vec![FieldError::new("url", "must be an https URL")];
        let fields = |e: ApiError| e.problem().errors.into_iter().map(|f| f.field).collect::<Vec<_>>();
        assert_eq!(fields(invalid_draft(&caller, Some(&["b".to_owned()]), url.clone())), ["url", "sites"]);
        assert_eq!(fields(invalid_draft(&caller, None, url.clone())), ["url", "sites"], "left out is no site");
        assert_eq!(fields(invalid_draft(&caller, Some(&["a".to_owned()]), url.clone())), ["url"]);
        let unrestricted = Caller { sites: vec![], ..caller };
        assert_eq!(fields(invalid_draft(&unrestricted, Some(&["b".to_owned()]), url)), ["url"]);
    }

    /// A hook this version cannot read is not there for a caller held to some sites (its
    /// sites cannot be read), who may neither read nor delete it; a caller who sees all of
    /// the tenant's hooks hears why it cannot be read, and may delete it.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_hook_no_one_can_read_is_not_a_site_held_callers() {
        use hookbridge_testkit::Harness;
        let h = hookbridge_testkit::EmbeddedHarness::start().await;
        let (hook, _) = hookbridge_testkit::contract::make_hook(&h, "acme", "unreadable").await;
        h.backend().hooks.create(&hook, 100).await.expect("created");
        h.make_unreadable(&hook.tenant, hook.id).await;
        let api = Api::new(
            crate::ApiPorts::of(h.backend()),
            crate::ApiSettings::local(crate::JwtKey::new("k"), hookbridge_core::hook::NetworkPolicy::default()),
        );
        let held = Caller {
            tenant: hook.tenant.clone(),
            sub: "portal".into(),
            scopes: vec![],
            realm_roles: vec![],
            sites: vec!["a".into()],
        };
        let id = hook.id.to_string();
        assert!(matches!(load(&api, &held, &id).await, Err(ApiError::NotFound(_))));
        assert!(matches!(delete_hook(&api, &held, &id).await, Err(ApiError::NotFound(_))));
        let everyone = Caller { sites: vec![], ..held };
        assert!(matches!(load(&api, &everyone, &id).await, Err(ApiError::UnreadableHook)));
        assert!(delete_hook(&api, &everyone, &id).await.is_ok());
        assert!(h.backend().hooks.list_all(&hook.tenant).await.expect("listed").is_empty());
    }
}
