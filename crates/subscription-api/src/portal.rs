//! `POST /v1/portal/sessions`: a single-use link, valid for minutes, that opens the console
//! for the caller's tenant (optionally held to some sites, optionally read-only) without any
//! other login — what a SaaS product hands its own customers.

use axum::Json;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use chrono::{Duration, Utc};
use hookbridge_core::hook::{MAX_SITES, SITE_RULE, is_site};
use hookbridge_core::portal::{LINK_VALID_AT_MOST, LINK_VALID_FOR, PortalGrant, fresh_code, hashed};
use hookbridge_core::validation::FieldError;
use serde::Deserialize;
use serde_json::json;

use crate::Api;
use crate::auth::PortalMaker;
use crate::body::{OptionalJsonBody, parse_object};
use crate::error::ApiError;

/// The request.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct PortalIn {
    /// Left out is the whole tenant; `null` is refused (below), not read as left out.
    #[serde(default, deserialize_with = "hookbridge_core::validation::present")]
    sites: Option<Option<Vec<String>>>,
    #[serde(default, deserialize_with = "hookbridge_core::validation::present")]
    read_only: Option<Option<bool>>,
    expires_in: Option<i64>,
}

/// `POST /v1/portal/sessions` (scope `portal:create`).
pub async fn create(
    State(api): State<Api>,
    PortalMaker(caller): PortalMaker,
    headers: HeaderMap,
    OptionalJsonBody(bytes): OptionalJsonBody,
) -> Result<Response, ApiError> {
    let p: PortalIn = match bytes {
        None => PortalIn::default(),
        Some(b) => parse_object(&b)?,
    };
    let ttl = match p.expires_in {
        None => LINK_VALID_FOR,
        Some(n) if (30..=LINK_VALID_AT_MOST.num_seconds()).contains(&n) => Duration::seconds(n),
        Some(_) => {
            return Err(ApiError::field(
                "expires_in",
                format!("must be 30 to {} seconds", LINK_VALID_AT_MOST.num_seconds()),
            ));
        }
    };
    // A `null` is how a client writes an empty list (Go's nil slice) or an unset flag: read
    // as left out, it would open the whole tenant, or open it for writing.
    let null = |field: &str| ApiError::field(field, "must not be null: leave it out, or give a value");
    let sites = match p.sites {
        None => Vec::new(),
        Some(None) => return Err(null("sites")),
        Some(Some(s)) if s.is_empty() => {
            // A session with no sites is held to none, so it sees the whole tenant: asked
            // for with a list, it was meant to be held to one (a customer with no sites yet).
            return Err(ApiError::field("sites", "must list at least one site, or be left out for the whole tenant"));
        }
        Some(Some(s)) => s,
    };
    let read_only = match p.read_only {
        None => false,
        Some(None) => return Err(null("read_only")),
        Some(Some(r)) => r,
    };
    if sites.len() > MAX_SITES {
        // Each page of the console shows them.
        return Err(ApiError::field("sites", format!("must list at most {MAX_SITES} sites, as a hook may")));
    }
    let bad: Vec<FieldError> = sites
        .iter()
        .enumerate()
        .filter(|(_, s)| !is_site(s))
        .map(|(i, _)| FieldError::new(format!("sites[{i}]"), SITE_RULE))
        .collect();
    if !bad.is_empty() {
        return Err(ApiError::fields(bad));
    }
    let expires_at = Utc::now() + ttl;
    let grant = PortalGrant { tenant: caller.tenant.clone(), sites, read_only, expires_at };
    let code = fresh_code();
    api.ports().portal.put_link(&hashed(&code), &grant).await?;
    tracing::info!(tenant = %caller.tenant, sub = %caller.sub, read_only = grant.read_only, "portal link made");
    // The code in the query, never the path, which access logs write (the code is URL-safe).
    let url = format!("{}/console/portal?code={code}", crate::console::origin(&api, &headers));
    Ok((StatusCode::CREATED, Json(json!({ "url": url, "expires_at": expires_at }))).into_response())
}
