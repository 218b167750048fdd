//! The subscription API: one axum router for hooks, deliveries and publishing, the same
//! under `lambda_http` on AWS and on 127.0.0.1 locally.

mod actions;
mod auth;
mod body;
mod catalog;
pub mod compat;
pub mod console;
mod declared_schema;
mod deliveries;
mod dto;
mod error;
mod events;
mod hooks;
mod lifecycle;
pub mod meter;
mod portal;
pub mod properties;
mod redeliver;
mod request_log;
mod schema_cost;

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::routing::{get, post};
use hookbridge_core::hook::NetworkPolicy;
use hookbridge_core::ports::{
    Backend, Bus, DeliveryStore, EventStore, EventTypeStore, HookStore, IdempotencyStore, Lanes, PortalStore, Queue,
    RateLimiter, ReplayStore, Resource, Sealer,
};

pub use auth::{Claims, JwtKey, REFRESH_AT_MOST_EVERY, Scope, Tokens, TokensError, mint_token};
pub use catalog::SCHEMAS_KEPT_FOR;
pub use dto::{DeliveryOut, HookOut};
pub use error::ApiError;
pub use events::{CLAIM_PENDING_FOR, IDEMPOTENCY_WINDOW, request_claim_key};
pub use hooks::BULK_BEGUN_WITHIN;

/// What the API needs to know about the deployment.
#[derive(Debug, Clone)]
pub struct ApiSettings {
    /// What tokens are checked with.
    pub tokens: Tokens,
    /// Which hook URLs are acceptable.
    pub network: NetworkPolicy,
    /// How long envelopes are kept for replay and delivery detail.
    pub event_retention: Duration,
    /// The `account` of envelopes the API makes itself (test events).
    pub account: String,
    /// The `region` of envelopes the API makes itself.
    pub region: String,
    /// What one tenant may use.
    pub quotas: hookbridge_core::settings::Quotas,
    /// The console's OpenID Connect client, when it signs people in through the issuer.
    pub console_client_id: Option<String>,
    /// The scopes the console asks the issuer for, space-separated.
    pub console_scopes: String,
    /// The audience the issuer's tokens must name, which the console asks for too (some
    /// issuers give a token for their own API unless asked for another).
    pub console_audience: Option<String>,
    /// The API's public base URL, when requests' own `Host` is not it.
    pub public_url: Option<String>,
    /// Where published events go.
    pub publish_to: hookbridge_core::settings::PublishTo,
}

impl ApiSettings {
    /// The API's part of the deployment settings, checking tokens with `tokens`.
    pub fn from_settings(s: &hookbridge_core::settings::Settings, tokens: Tokens) -> Self {
        Self {
            tokens,
            network: s.network.clone(),
            event_retention: s.event_retention,
            account: s.account.clone(),
            region: s.region.clone(),
            quotas: s.quotas,
            console_client_id: s.console_client_id.clone(),
            console_scopes: s.console_scopes.clone(),
            console_audience: s.tokens.audience.clone(),
            public_url: s.public_url.clone(),
            publish_to: s.publish_to,
        }
    }

    /// Settings for a local or test deployment: this key, this network policy, defaults
    /// for the rest.
    pub fn local(jwt: JwtKey, network: NetworkPolicy) -> Self {
        Self {
            tokens: Tokens::hs256(jwt),
            network,
            event_retention: Duration::from_secs(14 * 86_400),
            account: "000000000000".to_owned(),
            region: "local".to_owned(),
            quotas: hookbridge_core::settings::Quotas::default(),
            console_client_id: None,
            console_scopes: "openid".to_owned(),
            console_audience: None,
            public_url: None,
            publish_to: hookbridge_core::settings::PublishTo::Queue,
        }
    }
}

/// The ports the API uses, and no others.
#[derive(Clone)]
pub struct ApiPorts {
    /// Hooks.
    pub hooks: Arc<dyn HookStore>,
    /// Deliveries, read and re-sent.
    pub deliveries: Arc<dyn DeliveryStore>,
    /// Envelopes, for delivery detail, replay and test events.
    pub events: Arc<dyn EventStore>,
    /// Publish de-duplication.
    pub idempotency: Arc<dyn IdempotencyStore>,
    /// Declared and seen event types.
    pub event_types: Arc<dyn EventTypeStore>,
    /// Where published events and lifecycle events go.
    pub bus: Arc<dyn Bus>,
    /// Where test events, retries and replays go, on the hook's lane.
    pub lanes: Lanes,
    /// Seals and opens hook secrets.
    pub sealer: Arc<dyn Sealer>,
    /// Tenants' publish rates.
    pub limiter: Arc<dyn RateLimiter>,
    /// Portal links and console sessions.
    pub portal: Arc<dyn PortalStore>,
    /// Replay jobs.
    pub replays: Arc<dyn ReplayStore>,
    /// Where replay jobs are poked (ingest works through them).
    pub ingest: Arc<dyn Queue>,
}

impl ApiPorts {
    /// What these ports reach (the template's permissions for the function are held to it).
    pub const RESOURCES: &'static [Resource] = &[
        Resource::Table,
        Resource::Bus,
        Resource::IngestQueue,
        Resource::DeliveryQueue,
        Resource::SlowQueue,
        Resource::Key,
        Resource::TokenKey,
    ];

    /// The API's ports of a backend.
    pub fn of(b: &Backend) -> Self {
        Self {
            hooks: b.hooks.clone(),
            deliveries: b.deliveries.clone(),
            events: b.events.clone(),
            idempotency: b.idempotency.clone(),
            event_types: b.event_types.clone(),
            portal: b.portal.clone(),
            replays: b.replays.clone(),
            ingest: b.ingest_queue.clone(),
            bus: b.bus.clone(),
            lanes: b.lanes(),
            sealer: b.sealer.clone(),
            limiter: b.limiter.clone(),
        }
    }
}

impl std::fmt::Debug for ApiPorts {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ApiPorts").finish_non_exhaustive()
    }
}

/// The router's state: the ports and the settings.
#[derive(Clone)]
pub struct Api {
    inner: Arc<ApiInner>,
}

struct ApiInner {
    ports: ApiPorts,
    settings: ApiSettings,
    meter: meter::Meter,
    schemas: catalog::Schemas,
}

impl std::fmt::Debug for Api {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Api").field("settings", &self.inner.settings).finish_non_exhaustive()
    }
}

impl Api {
    /// The API over a backend's ports.
    pub fn new(ports: ApiPorts, settings: ApiSettings) -> Self {
        Self {
            inner: Arc::new(ApiInner {
                ports,
                settings,
                meter: meter::Meter::default(),
                schemas: catalog::Schemas::default(),
            }),
        }
    }

    pub(crate) fn ports(&self) -> &ApiPorts {
        &self.inner.ports
    }

    pub(crate) fn settings(&self) -> &ApiSettings {
        &self.inner.settings
    }

    pub(crate) fn meter(&self) -> &meter::Meter {
        &self.inner.meter
    }

    pub(crate) fn schemas(&self) -> &catalog::Schemas {
        &self.inner.schemas
    }
}

/// The whole API.
pub fn router(api: Api) -> Router {
    Router::new().merge(console::routes().with_state(api.clone())).merge(api_router(api))
}

/// The API's own routes (what the console calls in-process).
pub(crate) fn api_router(api: Api) -> Router {
    Router::new()
        .route("/v1/health", get(health))
        .route("/v1/openapi.json", get(openapi))
        .route("/v1/hooks", post(hooks::create).get(hooks::list))
        .route("/v1/hooks/{id}", get(hooks::get).put(hooks::replace).delete(hooks::delete))
        .route("/v1/hooks/{id}/verify", post(actions::verify))
        .route("/v1/hooks/{id}/secret/rotate", post(actions::rotate_secret))
        .route("/v1/hooks/{id}/test", post(actions::test_event))
        .route("/v1/hooks/{id}/events", get(deliveries::list))
        .route("/v1/hooks/{id}/deliveries/{delivery_id}", get(deliveries::get))
        .route("/v1/hooks/{id}/deliveries/{delivery_id}/retry", post(redeliver::retry))
        .route("/v1/hooks/{id}/replay", post(redeliver::replay))
        .route("/v1/hooks/{id}/replays", get(redeliver::replay_jobs))
        .route("/v1/hooks/{id}/replays/{replay_id}", get(redeliver::replay_job))
        .route("/v1/hooks/{id}/replays/{replay_id}/cancel", post(redeliver::cancel))
        .route("/v1/events", post(events::publish))
        .route("/v1/portal/sessions", post(portal::create))
        .route("/v1/event-types", get(catalog::list))
        // A type may be named `match` or `catalogs`: these routes, which the router
        // prefers to `{name}`, declare and forget it too.
        .route(
            "/v1/event-types/match",
            get(catalog::matching).put(catalog::declare_match).delete(catalog::undeclare_match),
        )
        .route(
            "/v1/event-types/catalogs",
            get(catalog::catalogs).put(catalog::declare_catalogs).delete(catalog::undeclare_catalogs),
        )
        .route("/v1/event-types/catalogs/{catalog}", post(catalog::load_catalog))
        .route("/v1/event-types/{name}", axum::routing::put(catalog::declare).delete(catalog::undeclare))
        .merge(compat::keycloak::routes())
        .merge(compat::xiq::routes())
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(axum::middleware::from_fn(path_is_text))
        .layer(axum::middleware::from_fn(path_arrived_whole))
        .layer(axum::middleware::from_fn(request_log::log_request))
        .layer(axum::middleware::from_fn(run_to_end))
        .with_state(api)
}

/// Runs each request to its end on a task of its own. A caller that goes away mid-request
/// (a client's timeout) drops the future serving it, and with it whatever was half done:
/// a publish's idempotency claims left unanswered (a repeat was `409` for minutes, then
/// published again), some of a batch of ExtremeCloud IQ subscriptions made and not others.
async fn run_to_end(req: axum::extract::Request, next: axum::middleware::Next) -> axum::response::Response {
    match tokio::spawn(next.run(req)).await {
        Ok(resp) => resp,
        Err(e) => axum::response::IntoResponse::into_response(ApiError::Internal(hookbridge_core::Error::backend(
            "request", e,
        ))),
    }
}

async fn health() -> axum::Json<serde_json::Value> {
    axum::Json(serde_json::json!({ "status": "ok" }))
}

/// The OpenAPI 3.1 document of this API, as committed in `openapi.json`.
pub const OPENAPI: &str = include_str!("../openapi.json");

async fn openapi() -> impl axum::response::IntoResponse {
    ([(axum::http::header::CONTENT_TYPE, "application/json")], OPENAPI)
}

/// A path whose percent-escapes are not UTF-8 names nothing: `404` as an unknown route is,
/// before any handler's `Path` would refuse it with axum's own plain-text `400`. The other
/// products' adapters answer it themselves, in their shape and after the caller is checked.
async fn path_is_text(req: axum::extract::Request, next: axum::middleware::Next) -> axum::response::Response {
    let path = req.uri().path();
    if !compat::owns(path) && percent_encoding::percent_decode_str(path).decode_utf8().is_err() {
        return axum::response::IntoResponse::into_response(ApiError::NotFound("no such route"));
    }
    next.run(req).await
}

/// A path API Gateway handed on decoded, which `lambda_http` did not route as it came: it
/// builds the request's URI from that path as a URL, reading a `#` as the start of a
/// fragment and a `?` as a query (the rest of the path cut off), dropping tabs and line
/// breaks, and resolving `..`. So `DELETE /v1/event-types/billing%23v2` reached its route
/// as `…/billing`, and forgot another declaration (a `PUT` replaced it). A path whose
/// routed form, decoded, is not the one handed on, decoded, names nothing here; an event
/// type's name is refused as such. (Where no such path was handed on, locally, there is
/// nothing to compare.)
async fn path_arrived_whole(req: axum::extract::Request, next: axum::middleware::Next) -> axum::response::Response {
    #[cfg(feature = "lambda")]
    {
        use lambda_http::RequestExt as _;
        let raw = req.extensions().raw_http_path();
        let decoded = |p: &str| percent_encoding::percent_decode_str(p).decode_utf8_lossy().into_owned();
        let path = req.uri().path();
        // Most paths arrive as routed: compared as they are first, decoded only if not.
        if !raw.is_empty() && raw != path && decoded(raw) != decoded(path) {
            let refused = if raw.starts_with("/v1/event-types/") {
                ApiError::field("name", hookbridge_core::catalog::NOT_A_PATH_SEGMENT)
            } else {
                ApiError::NotFound("no such route")
            };
            return compat::error_at(raw, refused);
        }
    }
    next.run(req).await
}

async fn not_found(uri: axum::http::Uri) -> axum::response::Response {
    compat::error_at(uri.path(), ApiError::NotFound("no such route"))
}

async fn method_not_allowed(uri: axum::http::Uri) -> axum::response::Response {
    compat::error_at(uri.path(), ApiError::MethodNotAllowed)
}
