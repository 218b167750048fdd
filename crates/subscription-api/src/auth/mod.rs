//! Bearer JWTs: who calls, for which tenant, with which scopes. Tokens are HS256 with the
//! deployment's key ([`hs256`]), or RS256/ES256/EdDSA from an OpenID Connect issuer whose
//! keys come from its JWKS ([`jwks`]); [`tokens`] checks either and reads the caller from
//! the claims.

mod hs256;
mod jwks;
mod tokens;

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use hookbridge_core::ids::TenantId;
use hookbridge_core::ports::ROUTING_LIST_STALE_AT_MOST;

use crate::Api;
use crate::error::ApiError;
use crate::request_log::LogNote;

pub use hs256::{Claims, JwtKey, mint_token};
pub use jwks::REFRESH_AT_MOST_EVERY;
pub use tokens::{Tokens, TokensError};

/// A permission a call needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    /// Read hooks and deliveries.
    HooksRead,
    /// Change hooks, retry and replay.
    HooksWrite,
    /// Publish events.
    EventsPublish,
    /// Make portal links for the tenant's customers.
    PortalCreate,
}

impl Scope {
    /// The scope's name in tokens.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::HooksRead => "hooks:read",
            Self::HooksWrite => "hooks:write",
            Self::EventsPublish => "events:publish",
            Self::PortalCreate => "portal:create",
        }
    }
}

/// The authenticated caller of a request.
#[derive(Debug, Clone)]
pub struct Caller {
    /// The tenant every read and write is scoped to.
    pub tenant: TenantId,
    /// The subject, for `created_by`.
    pub sub: String,
    pub(crate) scopes: Vec<String>,
    /// Keycloak's roles of its `realm-management` client the token grants (`view-events`,
    /// `manage-events`), which Keycloak's webhooks API takes as Phase Two does, in place of
    /// scopes (`compat::keycloak`).
    pub(crate) realm_roles: Vec<String>,
    /// When not empty, the caller (a portal session) sees only hooks scoped to these
    /// sites, and may only make such hooks.
    pub(crate) sites: Vec<String>,
}

/// A caller the console authenticated itself (a portal session, or a token in its session
/// cookie), handed to the API's handlers in-process. Only the console can set it: a
/// request extension cannot come from the network.
#[derive(Debug, Clone)]
pub(crate) struct ConsoleCaller(pub(crate) Caller);

/// How long after a hook's `sites` change a caller held to sites begins to see its
/// deliveries. A delivery is dated by its event's own time, which may be up to
/// [`ingest::EVENT_TIME_AHEAD`] after it was published, and ingest may route by a list of
/// the tenant's hooks up to [`ROUTING_LIST_STALE_AT_MOST`] older than the change (when the
/// change's marker could not be written): a delivery routed under the old sites, perhaps
/// another customer's, can be dated that much after the change.
pub(crate) const HISTORY_AFTER_CHANGE: chrono::Duration = ingest::DATED_AHEAD_AT_MOST
    .checked_add(&chrono::Duration::seconds(ROUTING_LIST_STALE_AT_MOST.as_secs() as i64))
    .expect("seconds");

/// Where a site-held caller's history of a hook begins, given when its `sites` last changed.
fn history_begins(sites_since: Option<chrono::DateTime<chrono::Utc>>) -> Option<chrono::DateTime<chrono::Utc>> {
    sites_since.map(|t| t + HISTORY_AFTER_CHANGE)
}

impl Caller {
    /// Whether the caller may see `hook` (always, unless it is held to some sites).
    pub(crate) fn sees(&self, hook: &hookbridge_core::hook::Hook) -> bool {
        self.sites.is_empty()
            || (!hook.config.sites.is_empty() && hook.config.sites.iter().all(|s| self.sites.contains(s)))
    }

    /// From when the caller may read and replay `hook`'s deliveries: a caller held to some
    /// sites, only since the hook's `sites` last changed (before, its deliveries were for
    /// other sites, perhaps another customer's); any other caller, all of them.
    ///
    /// The history begins [`HISTORY_AFTER_CHANGE`] after the change.
    pub(crate) fn history_since(&self, hook: &hookbridge_core::hook::Hook) -> Option<chrono::DateTime<chrono::Utc>> {
        if self.sites.is_empty() { None } else { history_begins(hook.state.sites_since) }
    }

    /// `403` unless the token has `scope`.
    pub fn require(&self, scope: Scope) -> Result<(), ApiError> {
        if self.scopes.iter().any(|s| s == scope.as_str()) { Ok(()) } else { Err(ApiError::Forbidden(scope.as_str())) }
    }
}

impl FromRequestParts<Api> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, api: &Api) -> Result<Self, Self::Rejection> {
        let caller = Self::authenticate(parts, api).await?;
        if let Some(note) = parts.extensions.get::<LogNote>() {
            note.tenant(&caller.tenant);
        }
        Ok(caller)
    }
}

impl Caller {
    /// The console's caller, or the one the bearer token stands for.
    async fn authenticate(parts: &Parts, api: &Api) -> Result<Self, ApiError> {
        if let Some(ConsoleCaller(c)) = parts.extensions.get::<ConsoleCaller>() {
            return Ok(c.clone());
        }
        let header = parts
            .headers
            .get(axum::http::header::AUTHORIZATION)
            .ok_or(ApiError::Unauthorized("missing Authorization: Bearer <token>"))?;
        let token = header
            .to_str()
            .ok()
            .and_then(bearer_token)
            .ok_or(ApiError::Unauthorized("the Authorization header must be Bearer <token>"))?;
        api.settings().tokens.check(token).await
    }
}

/// The token of an `Authorization: Bearer <token>` header. The scheme's case is not
/// significant (RFC 9110 §11.1): `BEARER` is as good as `Bearer`.
fn bearer_token(header: &str) -> Option<&str> {
    let (scheme, token) = header.trim_start().split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then_some(token.trim()).filter(|t| !t.is_empty())
}

/// Extractors that authenticate and check one scope, before the body is read: a caller
/// without the scope gets `403` whatever the body holds.
macro_rules! scoped {
    ($(#[$doc:meta])* $name:ident, $scope:expr) => {
        $(#[$doc])*
        #[derive(Debug, Clone)]
        pub struct $name(pub Caller);

        impl FromRequestParts<Api> for $name {
            type Rejection = ApiError;

            async fn from_request_parts(parts: &mut Parts, api: &Api) -> Result<Self, Self::Rejection> {
                let caller = Caller::from_request_parts(parts, api).await?;
                caller.require($scope)?;
                Ok(Self(caller))
            }
        }
    };
}

scoped!(
    /// A caller with `hooks:read`.
    Reader,
    Scope::HooksRead
);
scoped!(
    /// A caller with `hooks:write`.
    Writer,
    Scope::HooksWrite
);
scoped!(
    /// A caller with `events:publish`.
    Publisher,
    Scope::EventsPublish
);
scoped!(
    /// A caller with `portal:create`.
    PortalMaker,
    Scope::PortalCreate
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_bearer_scheme_is_read_in_any_case() {
        for header in ["Bearer abc", "bearer abc", "BEARER abc", "BeArEr  abc "] {
            assert_eq!(bearer_token(header), Some("abc"), "{header:?}");
        }
        for header in ["Basic abc", "Bearerabc", "Bearer ", "abc", "Token abc"] {
            assert_eq!(bearer_token(header), None, "{header:?}");
        }
    }

    /// A delivery routed under a hook's old sites can be dated as late as its event may
    /// run ahead of its publishing plus how stale ingest's list of hooks may be: a caller
    /// held to the new sites must not see it (it may be another customer's).
    #[test]
    fn a_site_held_history_begins_after_anything_routed_under_the_old_sites() {
        let changed = chrono::Utc::now();
        let begins = history_begins(Some(changed)).unwrap();
        assert_eq!(begins - changed, chrono::Duration::seconds(16), "as the docs say");
        // The latest a delivery routed under the old sites can be dated: published just
        // before the list ingest kept stops being trusted, its time as far ahead as allowed,
        // and its id's own time at the end of that second (`ingest::dated`): 15 s left out
        // that last second, and a site-held session saw up to a second of the old sites'.
        let stale = chrono::Duration::from_std(ROUTING_LIST_STALE_AT_MOST).unwrap();
        // Published a moment before the list stops being trusted; its `time` (whole seconds)
        // as far ahead as trusted; its id made at the end of that second.
        let latest_old = changed + stale - chrono::Duration::milliseconds(1)
            + ingest::EVENT_TIME_AHEAD
            + chrono::Duration::milliseconds(999);
        assert!(latest_old < begins, "{latest_old} is not before {begins}");
        assert!(ingest::EVENT_TIME_AHEAD + chrono::Duration::milliseconds(999) <= ingest::DATED_AHEAD_AT_MOST);
        assert_eq!(history_begins(None), None, "sites never changed: all of it");
    }
}
