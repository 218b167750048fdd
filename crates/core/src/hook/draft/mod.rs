//! The hook as a client writes it, and its validation into a [`HookConfig`] and
//! [`HookSecrets`]. Every field error is collected and named by its path.

use serde::Deserialize;
use serde::de::IgnoredAny;

use crate::ids::HookName;
use crate::pattern::{EventTypePattern, MAX_STARS_PER_HOOK};
use crate::secret::{Secret, SigningSecret};
use crate::validation::{Errors, FieldError};

use super::model::*;
use super::network::NetworkPolicy;

mod auth;
mod debug;
mod headers;
mod url;

use auth::check_auth;
use headers::{check_headers, is_header_name};
use url::{check_url, origin_of};

/// Longest description.
const MAX_DESCRIPTION_LEN: usize = 1024;
/// The most sites a hook (or a portal link) may be held to.
pub const MAX_SITES: usize = 100;
/// Longest site id.
const MAX_SITE_LEN: usize = 128;

/// What a site must be, as an error says it.
pub const SITE_RULE: &str = "must be 1-128 printable characters";

/// Why a challenge header is refused that the challenge request carries already: sent
/// twice, a receiver reading the first value fails either the credential or the challenge.
const CHALLENGE_CARRIES_IT: &str = "is a header the challenge carries already; choose another";

/// Whether `s` can be a site (of a hook, or of a portal session held to some).
pub fn is_site(s: &str) -> bool {
    !s.is_empty() && s.len() <= MAX_SITE_LEN && !s.chars().any(char::is_control)
}
/// Longest header value or parameter value.
pub(super) const MAX_VALUE_LEN: usize = 4096;
/// Most parameters in each OAuth parameter list.
pub const MAX_PARAMS: usize = 20;

/// Headers the platform sets itself; a hook may not override them.
pub(super) const RESERVED_HEADERS: &[&str] = &[
    "host",
    "content-length",
    "content-type",
    // The body is sent as it is, never compressed: a receiver told otherwise fails to read it.
    "content-encoding",
    "transfer-encoding",
    "connection",
    "te",
    "upgrade",
    "webhook-id",
    "webhook-timestamp",
    "webhook-signature",
    "x-keycloak-signature",
];

/// Hop-by-hop and request-control headers, refused as a hook's own headers:
/// `Expect` made receivers answer 417 to every delivery, and the rest are for the client
/// to send, or no one. A hook stored with one before keeps saving as it was.
pub(super) const TRANSPORT_HEADERS: &[&str] = &["expect", "keep-alive", "proxy-connection", "trailer"];

/// Whether `name` may not be sent as a hook's auth header, its challenge header or an
/// OAuth header parameter: one the platform sets, or a hop-by-hop or request-control one.
pub(super) fn refused_header(name: &str) -> bool {
    let lower = name.to_ascii_lowercase();
    RESERVED_HEADERS.contains(&lower.as_str()) || TRANSPORT_HEADERS.contains(&lower.as_str())
}

/// A hook as a client writes it (`POST /v1/hooks`, `PUT /v1/hooks/{id}`).
///
/// Fields are loose (`Option<String>`) so validation, not the JSON parser, names what is
/// wrong. Read-only fields of a hook as read are accepted and ignored, so a client can
/// `GET`, edit and `PUT` the same document.
#[derive(Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HookDraft {
    /// Unique in the tenant, 1-64 of `[A-Za-z0-9._-]`; required on create, immutable after.
    pub name: Option<String>,
    /// Free text, at most 1024 characters.
    pub description: Option<String>,
    /// Where requests go: absolute, `https` unless the deployment allows `http`, at most 2048 characters.
    pub url: Option<String>,
    /// `POST` (default), `PUT`, `PATCH`, `GET` or `DELETE`.
    pub method: Option<String>,
    /// Glob patterns over the event type; `["*"]` when absent.
    pub event_types: Option<Vec<String>>,
    /// Sites whose events it wants; empty or absent is the whole workspace.
    pub sites: Option<Vec<String>>,
    /// Whether deliveries are wanted; `true` when absent.
    pub enabled: Option<bool>,
    /// How requests authenticate; `NONE` when absent.
    pub auth: Option<AuthDraft>,
    /// Extra request headers, secret ones write-only.
    pub headers: Option<Vec<HeaderDraft>>,
    /// The signing secret (`whsec_…`); generated on create when absent, kept on replace.
    pub secret: Option<String>,
    /// Signature headers besides Standard Webhooks (`keycloak`).
    pub signature_formats: Option<Vec<String>>,
    /// The ownership challenge.
    pub verification: Option<VerificationDraft>,
    /// `{"per_second": N}`: at most N deliveries a second; `null` or absent for none.
    pub rate_limit: Option<RateLimitDraft>,
    /// `envelope` (default), `detail` or `detail_array`: what a delivery's body is.
    pub payload: Option<String>,
    /// Whether every non-2xx answer is tried again (Keycloak's rule); `false` when absent.
    pub retry_non_2xx: Option<bool>,
    /// The version a replace expects to overwrite (optimistic locking).
    pub version: Option<u64>,
    /// Read-only; ignored.
    pub id: Option<IgnoredAny>,
    /// Read-only; ignored.
    pub connection_state: Option<IgnoredAny>,
    /// Read-only; ignored.
    pub destination_state: Option<IgnoredAny>,
    /// Read-only; ignored.
    pub disabled_reason: Option<IgnoredAny>,
    /// Read-only; ignored.
    pub connection_error: Option<IgnoredAny>,
    /// Read-only; ignored.
    pub health: Option<IgnoredAny>,
    /// Read-only; ignored.
    pub created_by: Option<IgnoredAny>,
    /// Read-only; ignored.
    pub created_at: Option<IgnoredAny>,
    /// Read-only; ignored.
    pub updated_at: Option<IgnoredAny>,
}

/// `rate_limit` as written.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RateLimitDraft {
    /// Deliveries a second, 1 to [`MAX_RATE_LIMIT`].
    pub per_second: Option<u64>,
}

/// The highest per-hook rate limit: above it a limit protects no receiver, and each
/// delivery would cost a rate-state write for nothing.
pub const MAX_RATE_LIMIT: u64 = 1000;

/// `auth` as written; which fields apply depends on `type`.
#[derive(Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuthDraft {
    /// `NONE`, `BASIC`, `API_KEY`, `HEADER`, `OAUTH_CLIENT_CREDENTIALS`.
    #[serde(rename = "type")]
    pub auth_type: Option<String>,
    /// BASIC.
    pub username: Option<String>,
    /// BASIC, write-only.
    pub password: Option<String>,
    /// API_KEY label.
    pub key_name: Option<String>,
    /// API_KEY, write-only.
    pub key_value: Option<String>,
    /// HEADER name.
    pub name: Option<String>,
    /// HEADER, write-only.
    pub value: Option<String>,
    /// OAUTH_CLIENT_CREDENTIALS: where tokens come from.
    pub token_url: Option<String>,
    /// OAUTH_CLIENT_CREDENTIALS: the client id, sent with the secret as Basic auth.
    pub client_id: Option<String>,
    /// OAuth, write-only.
    pub client_secret: Option<String>,
    /// OAuth token request method.
    pub http_method: Option<String>,
    /// OAUTH_CLIENT_CREDENTIALS: extra headers of the token request.
    pub header_params: Option<Vec<ParamDraft>>,
    /// OAUTH_CLIENT_CREDENTIALS: extra query parameters of the token request.
    pub query_params: Option<Vec<ParamDraft>>,
    /// OAUTH_CLIENT_CREDENTIALS: extra form fields of the token request.
    pub body_params: Option<Vec<ParamDraft>>,
}

/// An OAuth parameter as written.
#[derive(Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ParamDraft {
    /// The parameter's name (a header name, for `header_params`).
    pub key: Option<String>,
    /// The value; may be left out on replace to keep a secret value (`Some(None)` is an
    /// explicit `null`, which is refused: a value is a string or absent).
    #[serde(default, deserialize_with = "crate::validation::present")]
    pub value: Option<Option<String>>,
    /// Whether the value is write-only.
    pub secret: Option<bool>,
}

/// An extra header as written.
#[derive(Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HeaderDraft {
    /// The header name.
    pub name: Option<String>,
    /// The value; may be left out on replace to keep a secret value (`Some(None)` is an
    /// explicit `null`, which is refused: a value is a string or absent).
    #[serde(default, deserialize_with = "crate::validation::present")]
    pub value: Option<Option<String>>,
    /// Whether the value is write-only.
    pub secret: Option<bool>,
}

/// A header's or OAuth parameter's value, as validated.
pub(super) enum Written {
    /// Stored and returned in clear.
    Plain(String),
    /// Sealed, write-only: newly given, or kept from the hook being replaced.
    Secret(Secret),
}

/// Reads the `value` of a header or parameter at `at`: a string (a secret one when
/// `secret`), or left out to keep the stored secret `old`; `None` (with the error pushed)
/// when it is `null`, not a printable header value, or missing with nothing to keep.
pub(super) fn written(
    value: Option<Option<String>>,
    secret: bool,
    old: Option<&Secret>,
    at: &str,
    e: &mut Errors,
) -> Option<Written> {
    match value {
        Some(None) => e.push(format!("{at}.value"), "must be a string, or left out to keep a stored secret value"),
        Some(Some(v)) if !headers::is_header_value(&v) => {
            e.push(format!("{at}.value"), format!("must be at most {MAX_VALUE_LEN} printable characters"))
        }
        Some(Some(v)) if secret => return Some(Written::Secret(Secret::new(v))),
        Some(Some(v)) => return Some(Written::Plain(v)),
        None => match old.filter(|_| secret) {
            Some(kept) => return Some(Written::Secret(kept.clone())),
            None => e.push(format!("{at}.value"), "is required"),
        },
    }
    None
}

/// `verification` as written; the read-only status fields are accepted and ignored.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VerificationDraft {
    /// Whether deliveries wait for the challenge.
    pub required: Option<bool>,
    /// The challenge header.
    pub header: Option<String>,
    /// Read-only; ignored.
    pub status: Option<IgnoredAny>,
    /// Read-only; ignored.
    pub verified_at: Option<IgnoredAny>,
    /// Read-only; ignored.
    pub last_error: Option<IgnoredAny>,
}

/// What validation needs to know about the deployment.
#[derive(Debug, Clone, Copy)]
pub struct ValidationContext<'a> {
    /// Which URLs are acceptable.
    pub network: &'a NetworkPolicy,
}

/// The hook being replaced, whose secret values a replace may keep.
type Existing<'a> = Option<(&'a HookConfig, &'a HookSecrets)>;

impl HookDraft {
    /// Validates a create (`existing` = `None`) or a replace of `existing`.
    ///
    /// On replace, `name` may be left out (it cannot change; the caller answers `409` if a
    /// different one is given), and every secret value left out keeps its stored value —
    /// unless the replace moves the hook's `url` or its `auth.token_url` to another origin:
    /// stored credentials were given for the old host and do not follow the hook, so each
    /// one must be given again (an error names each that is not).
    pub fn validate(
        self,
        ctx: ValidationContext<'_>,
        existing: Existing<'_>,
    ) -> Result<(HookConfig, HookSecrets), Vec<FieldError>> {
        let Some(moved) = existing.and_then(|(cfg, _)| self.moves(cfg)) else {
            return self.check(ctx, existing, existing);
        };
        let lenient = self.clone().check(ctx, existing, existing).err().unwrap_or_default();
        self.check(ctx, existing, None).map_err(|errors| {
            // What fails only because stored values are not kept is a credential to resend.
            errors
                .into_iter()
                .map(|f| {
                    if lenient.contains(&f) {
                        f
                    } else {
                        FieldError::new(
                            f.field,
                            format!("must be given again: {moved}, and stored credentials do not follow it"),
                        )
                    }
                })
                .collect()
        })
    }

    /// How a replace moves the hook to another origin (scheme, host or port), if it does.
    fn moves(&self, old: &HookConfig) -> Option<String> {
        let moved = |what: &str, from: &str, to: &str| match (origin_of(from), origin_of(to)) {
            (Some(a), Some(b)) if a != b => Some(format!("{what} moves from {a} to {b}")),
            _ => None,
        };
        let url = self.url.as_deref().and_then(|to| moved("the hook", &old.url, to));
        let token_url = match (&old.auth, self.auth.as_ref().and_then(|a| a.token_url.as_deref())) {
            (AuthConfig::OauthClientCredentials(o), Some(to)) => moved("the token endpoint", &o.token_url, to),
            _ => None,
        };
        url.or(token_url)
    }

    /// Validates, keeping the secret values of `keep` that are left out.
    fn check(
        self,
        ctx: ValidationContext<'_>,
        existing: Existing<'_>,
        keep: Existing<'_>,
    ) -> Result<(HookConfig, HookSecrets), Vec<FieldError>> {
        let mut e = Errors::default();

        let name = match (self.name, existing) {
            (Some(n), _) => match n.parse::<HookName>() {
                Ok(n) => Some(n),
                Err(err) => {
                    e.push("name", err.to_string());
                    None
                }
            },
            (None, Some((cfg, _))) => Some(cfg.name.clone()),
            (None, None) => {
                e.push("name", "is required");
                None
            }
        };

        if let Some(d) = &self.description
            && d.chars().count() > MAX_DESCRIPTION_LEN
        {
            e.push("description", format!("must be at most {MAX_DESCRIPTION_LEN} characters"));
        }

        let url = match &self.url {
            Some(u) => check_url(u, ctx.network, "url", &mut e),
            None => {
                e.push("url", "is required");
                None
            }
        };

        let method = match self.method.as_deref() {
            None => HttpMethod::Post,
            Some(m) => match m {
                "POST" => HttpMethod::Post,
                "PUT" => HttpMethod::Put,
                "PATCH" => HttpMethod::Patch,
                "GET" => HttpMethod::Get,
                "DELETE" => HttpMethod::Delete,
                _ => {
                    e.push("method", "must be one of POST, PUT, PATCH, GET, DELETE");
                    HttpMethod::Post
                }
            },
        };

        let event_types = match self.event_types {
            None => vec![EventTypePattern::any()],
            Some(list) => {
                let over = list.len() > MAX_EVENT_TYPES;
                if list.is_empty() || over {
                    e.push("event_types", format!("must list 1-{MAX_EVENT_TYPES} patterns"));
                }
                // A list over its bound is refused whole, its items not looked at: told apart
                // one by one, a few hundred thousand took minutes of the CPU.
                let list = if over { &[][..] } else { &list[..] };
                let mut out: Vec<EventTypePattern> = Vec::with_capacity(list.len());
                for (i, p) in list.iter().enumerate() {
                    match p.parse::<EventTypePattern>() {
                        Ok(p) if !out.contains(&p) => out.push(p),
                        Ok(_) => {}
                        Err(err) => e.push(format!("event_types[{i}]"), err.to_string()),
                    }
                }
                // A hook stored before the bound keeps as many as it has, so it can still be
                // disabled or moved (a change re-sends every field) without its patterns
                // being rewritten.
                let stars = |list: &[EventTypePattern]| list.iter().map(EventTypePattern::stars).sum::<usize>();
                let had = existing.map_or(0, |(c, _)| stars(&c.event_types));
                if stars(&out) > MAX_STARS_PER_HOOK.max(had) {
                    e.push(
                        "event_types",
                        format!(
                            "must hold at most {MAX_STARS_PER_HOOK} `*` in all (every event is matched against them)"
                        ),
                    );
                }
                out
            }
        };

        let mut sites = self.sites.unwrap_or_default();
        if sites.len() > MAX_SITES {
            e.push("sites", format!("must list at most {MAX_SITES} sites"));
            sites.clear();
        }
        for (i, s) in sites.iter().enumerate() {
            if !is_site(s) {
                e.push(format!("sites[{i}]"), SITE_RULE);
            }
        }

        let old_auth = keep.map(|(c, s)| (&c.auth, s));
        let (auth, auth_secret, params) = check_auth(self.auth, ctx.network, old_auth, &mut e);

        let (headers, header_secrets) =
            check_headers(self.headers.unwrap_or_default(), &auth, keep, existing.map(|(c, _)| c), &mut e);

        // The signing secret stays wherever the hook goes: it is never sent, only used to sign.
        let (signing, retiring) = match (self.secret, existing.map(|(_, s)| s)) {
            (Some(s), old) => match SigningSecret::parse(&s) {
                // The secret as read back (a document stored after a rotation, sent again):
                // no change, so the rotation's overlap goes on. Cleared, receivers still on
                // the previous secret began refusing at once.
                Ok(s) if old.is_some_and(|o| o.signing == s) => {
                    (Some(s), old.map(|o| o.retiring.clone()).unwrap_or_default())
                }
                Ok(s) => (Some(s), Vec::new()),
                Err(err) => {
                    e.push("secret", err.to_string());
                    (None, Vec::new())
                }
            },
            (None, Some(old)) => (Some(old.signing.clone()), old.retiring.clone()),
            (None, None) => (Some(SigningSecret::generate()), Vec::new()),
        };

        let mut signature_formats = vec![SignatureFormat::StandardWebhooks];
        for (i, f) in self.signature_formats.unwrap_or_default().iter().enumerate() {
            match f.as_str() {
                "standard-webhooks" => {}
                "keycloak" => {
                    if !signature_formats.contains(&SignatureFormat::Keycloak) {
                        signature_formats.push(SignatureFormat::Keycloak);
                    }
                }
                _ => e.push(format!("signature_formats[{i}]"), "must be \"standard-webhooks\" or \"keycloak\""),
            }
        }

        let (required, given) = match self.verification {
            None => (false, None),
            Some(v) => (v.required.unwrap_or(false), v.header),
        };
        let header = match given {
            None => VerificationConfig::default().header,
            Some(h) => {
                if !is_header_name(&h) {
                    e.push("verification.header", "must be a valid HTTP header name");
                } else if refused_header(&h) {
                    e.push("verification.header", "is a header the platform sets itself; choose another");
                } else if ["authorization", "accept"].iter().any(|x| h.eq_ignore_ascii_case(x)) {
                    e.push("verification.header", CHALLENGE_CARRIES_IT);
                }
                h.to_ascii_lowercase()
            }
        };
        // The default header too: a `HEADER` auth named like it would be sent twice. A hook
        // stored so before this rule keeps saving as it was (its owner may not know why).
        let stored_so = existing.is_some_and(|(old, _)| {
            old.verification.header == header
                && matches!(&old.auth, AuthConfig::Header { name } if name.eq_ignore_ascii_case(&header))
        });
        if !stored_so && matches!(&auth, AuthConfig::Header { name } if name.eq_ignore_ascii_case(&header)) {
            e.push("verification.header", format!("is `{header}`, the HEADER auth's name: {CHALLENGE_CARRIES_IT}"));
        }
        let verification = VerificationConfig { newer: Default::default(), required, header };

        let rate_limit = match self.rate_limit.map(|r| r.per_second) {
            None => None,
            Some(Some(n)) if (1..=MAX_RATE_LIMIT).contains(&n) => Some(RateLimit { per_second: n as u32 }),
            Some(_) => {
                e.push("rate_limit.per_second", format!("must be a whole number from 1 to {MAX_RATE_LIMIT}"));
                None
            }
        };

        let payload = match self.payload.as_deref() {
            None | Some("envelope") => PayloadFormat::Envelope,
            Some("detail") => PayloadFormat::Detail,
            Some("detail_array") => PayloadFormat::DetailArray,
            Some(_) => {
                e.push("payload", "must be \"envelope\", \"detail\" or \"detail_array\"");
                PayloadFormat::Envelope
            }
        };

        match (e.is_empty(), name, url, signing) {
            (true, Some(name), Some(url), Some(signing)) => Ok((
                HookConfig {
                    newer: Default::default(),
                    name,
                    description: self.description,
                    url,
                    method,
                    event_types,
                    sites,
                    enabled: self.enabled.unwrap_or(true),
                    auth,
                    headers,
                    signature_formats,
                    verification,
                    rate_limit,
                    payload,
                    retry_non_2xx: self.retry_non_2xx.unwrap_or(false),
                },
                HookSecrets { signing, retiring, auth: auth_secret, params, headers: header_secrets },
            )),
            _ => Err(e.into_vec()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn draft(json: &str) -> HookDraft {
        serde_json::from_str(json).unwrap()
    }

    fn ctx(policy: &NetworkPolicy) -> ValidationContext<'_> {
        ValidationContext { network: policy }
    }

    /// An OAuth hook's draft whose token requests carry `params` (JSON) as header parameters.
    fn oauth_with_header_params(params: &str) -> HookDraft {
        draft(&format!(
            r#"{{"name":"o","url":"https://r.example/","auth":{{"type":"OAUTH_CLIENT_CREDENTIALS",
                "token_url":"https://idp.example/token","client_id":"c","client_secret":"s","header_params":{params}}}}}"#
        ))
    }

    fn fields(r: Result<(HookConfig, HookSecrets), Vec<FieldError>>) -> Vec<String> {
        r.err().unwrap_or_default().into_iter().map(|f| f.field).collect()
    }

    #[test]
    fn minimal_hook_gets_defaults_and_a_secret() {
        let p = NetworkPolicy::default();
        let (cfg, sec) = draft(r#"{"name":"siem","url":"https://example.com/h"}"#).validate(ctx(&p), None).unwrap();
        assert_eq!(cfg.method, HttpMethod::Post);
        assert_eq!(cfg.event_types, vec![EventTypePattern::any()]);
        assert!(cfg.enabled);
        assert_eq!(cfg.signature_formats, vec![SignatureFormat::StandardWebhooks]);
        assert_eq!(cfg.verification.header, "x-uid-challenge");
        assert!(sec.signing.expose().starts_with("whsec_"));
    }

    #[test]
    fn every_bad_field_is_named() {
        let p = NetworkPolicy::default();
        let r = draft(
            r#"{"name":"bad name","url":"http://example.com","method":"FETCH",
                "event_types":[],"signature_formats":["x"],"secret":"nope",
                "headers":[{"name":"Content-Type","value":"x"},{"name":"X-A"}],
                "auth":{"type":"BASIC","key_value":"k"}}"#,
        )
        .validate(ctx(&p), None);
        let f = fields(r);
        for want in [
            "name",
            "url",
            "method",
            "event_types",
            "signature_formats[0]",
            "secret",
            "headers[0].name",
            "headers[1].value",
            "auth.key_value",
            "auth.username",
            "auth.password",
        ] {
            assert!(f.contains(&want.to_owned()), "missing {want} in {f:?}");
        }
    }

    #[test]
    fn private_ip_literals_are_refused_unless_allowed() {
        let strict = NetworkPolicy::default();
        for url in [
            "https://169.254.169.254/latest",
            "https://10.0.0.1/",
            "https://[::ffff:127.0.0.1]/",
            "https://2130706433/",
            "https://0x7f000001/",
        ] {
            let r = draft(&format!(r#"{{"name":"a","url":"{url}"}}"#)).validate(ctx(&strict), None);
            assert_eq!(fields(r), vec!["url"], "{url}");
        }
        let local = NetworkPolicy::local();
        assert!(draft(r#"{"name":"a","url":"http://127.0.0.1:9/"}"#).validate(ctx(&local), None).is_ok());
    }

    #[test]
    fn oauth_is_validated_and_its_secrets_split_out() {
        let p = NetworkPolicy::default();
        let (cfg, sec) = draft(
            r#"{"name":"o","url":"https://r.example/","auth":{"type":"OAUTH_CLIENT_CREDENTIALS",
                "token_url":"https://idp.example/token","client_id":"c","client_secret":"s3cr3t",
                "query_params":[{"key":"scope","value":"api"}],
                "header_params":[{"key":"X-Tenant-Key","value":"hidden","secret":true}]}}"#,
        )
        .validate(ctx(&p), None)
        .unwrap();
        let AuthConfig::OauthClientCredentials(o) = &cfg.auth else { panic!("oauth expected") };
        assert_eq!(o.query_params[0].value.as_deref(), Some("api"));
        assert_eq!(o.header_params[0].value, None);
        assert_eq!(sec.auth.as_ref().map(Secret::expose), Some("s3cr3t"));
        assert_eq!(sec.params["header_params.X-Tenant-Key"].expose(), "hidden");
        let stored = serde_json::to_string(&cfg).unwrap();
        assert!(!stored.contains("s3cr3t") && !stored.contains("hidden"));
    }

    #[test]
    fn replace_keeps_secrets_left_out() {
        let p = NetworkPolicy::default();
        let (cfg, sec) = draft(
            r#"{"name":"h","url":"https://r.example/","auth":{"type":"HEADER","name":"X-Auth","value":"v1"},
                "headers":[{"name":"X-S","value":"sv","secret":true}]}"#,
        )
        .validate(ctx(&p), None)
        .unwrap();
        let (cfg2, sec2) = draft(
            r#"{"url":"https://r.example/v2/hooks","auth":{"type":"HEADER","name":"X-Auth"},
                "headers":[{"name":"X-S","secret":true}]}"#,
        )
        .validate(ctx(&p), Some((&cfg, &sec)))
        .unwrap();
        assert_eq!(cfg2.name, cfg.name);
        assert_eq!(sec2.auth, sec.auth);
        assert_eq!(sec2.headers["x-s"].expose(), "sv");
        assert_eq!(sec2.signing, sec.signing);

        let changed_type = draft(r#"{"url":"https://r.example/","auth":{"type":"BASIC","username":"u"}}"#)
            .validate(ctx(&p), Some((&cfg, &sec)));
        assert_eq!(fields(changed_type), vec!["auth.password"]);
    }

    #[test]
    fn read_only_fields_are_accepted_and_unknown_ones_refused() {
        let ok: Result<HookDraft, _> = serde_json::from_str(
            r#"{"name":"a","url":"https://x.example","id":"01J","connection_state":"AUTHORIZED",
                "verification":{"required":false,"status":"VERIFIED"}}"#,
        );
        assert!(ok.is_ok());
        let bad: Result<HookDraft, _> = serde_json::from_str(r#"{"name":"a","colour":"red"}"#);
        assert!(bad.is_err());
    }

    #[test]
    fn an_oauth_client_id_may_not_contain_a_colon() {
        let p = NetworkPolicy::default();
        let d = draft(
            r#"{"name":"o","url":"https://r.example/","auth":{"type":"OAUTH_CLIENT_CREDENTIALS",
                "token_url":"https://idp.example/token","client_id":"urn:acme:client","client_secret":"s"}}"#,
        );
        assert_eq!(fields(d.validate(ctx(&p), None)), ["auth.client_id"]);
    }

    #[test]
    fn a_url_is_held_to_its_length_as_stored() {
        let p = NetworkPolicy::default();
        // 2,018 bytes as sent, 6,018 once each `é` is percent-encoded.
        let long = format!("https://r.example/{}", "é".repeat(1000));
        assert!(long.len() <= MAX_URL_LEN);
        let d = draft(&format!(r#"{{"name":"u","url":"{long}"}}"#));
        assert_eq!(fields(d.validate(ctx(&p), None)), ["url"]);
        let fits = format!("https://r.example/{}", "é".repeat(300));
        let (cfg, _) = draft(&format!(r#"{{"name":"u","url":"{fits}"}}"#)).validate(ctx(&p), None).unwrap();
        assert!(cfg.url.len() <= MAX_URL_LEN && cfg.url.contains("%C3%A9"), "{}", cfg.url);
    }

    #[test]
    fn oauth_header_param_keys_must_be_header_names() {
        let policy = NetworkPolicy::default();
        let bad = draft(
            r#"{"name":"o","url":"https://r.example/","auth":{"type":"OAUTH_CLIENT_CREDENTIALS",
                "token_url":"https://idp.example/token","client_id":"c","client_secret":"s",
                "header_params":[{"key":"X Tenant","value":"a"},{"key":"ok-name","value":"b"}],
                "query_params":[{"key":"a b","value":"fine in a query"}]}}"#,
        );
        assert_eq!(fields(bad.validate(ctx(&policy), None)), ["auth.header_params[0].key"]);
    }

    #[test]
    fn oauth_header_params_may_not_be_the_token_requests_own_headers() {
        let policy = NetworkPolicy::default();
        let bad = draft(
            r#"{"name":"o","url":"https://r.example/","auth":{"type":"OAUTH_CLIENT_CREDENTIALS",
                "token_url":"https://idp.example/token","client_id":"c","client_secret":"s",
                "header_params":[{"key":"authorization","value":"a"},{"key":"Host","value":"b"},
                    {"key":"Content-Length","value":"1"},{"key":"X-Api-Key","value":"fine"},
                    {"key":"Accept","value":"application/xml"},{"key":"user-agent","value":"u"}]}}"#,
        );
        assert_eq!(
            fields(bad.validate(ctx(&policy), None)),
            [
                "auth.header_params[0].key",
                "auth.header_params[1].key",
                "auth.header_params[2].key",
                "auth.header_params[4].key",
                "auth.header_params[5].key"
            ]
        );
    }

    /// HYPR's own example sets `Content-Type: application/json` and `Content-Encoding:
    /// gzip` as header parameters of the token request: they say how its body is written,
    /// so only what the platform can write is taken, and never as a secret.
    #[test]
    fn oauth_header_params_may_say_how_the_token_requests_body_is_written() {
        let policy = NetworkPolicy::default();
        let with = |params: &str| oauth_with_header_params(params).validate(ctx(&policy), None);
        let hypr =
            with(r#"[{"key":"Content-Type","value":"application/json"},{"key":"Content-Encoding","value":"gzip"}]"#);
        let (config, _) = hypr.expect("HYPR's example is taken");
        let AuthConfig::OauthClientCredentials(oauth) = &config.auth else { panic!("{:?}", config.auth) };
        assert_eq!(TokenBody::of(oauth), TokenBody { json: true, gzip: true });
        let form = with(r#"[{"key":"content-type","value":"Application/X-WWW-Form-Urlencoded; charset=utf-8"}]"#);
        assert!(form.is_ok(), "{form:?}");
        let bad = with(
            r#"[{"key":"Content-Type","value":"text/plain"},{"key":"Content-Encoding","value":"br"},
                {"key":"Content-Type","value":"application/json","secret":true}]"#,
        );
        assert_eq!(
            fields(bad),
            ["auth.header_params[0].value", "auth.header_params[1].value", "auth.header_params[2].secret"]
        );
    }

    #[test]
    fn the_challenge_header_may_not_be_one_the_platform_sets() {
        let policy = NetworkPolicy::default();
        for h in ["Host", "content-length", "webhook-signature", "X-Keycloak-Signature"] {
            let d = draft(&format!(r#"{{"name":"v","url":"https://r.example/","verification":{{"header":"{h}"}}}}"#));
            assert_eq!(fields(d.validate(ctx(&policy), None)), ["verification.header"], "{h}");
        }
        let ok = draft(r#"{"name":"v","url":"https://r.example/","verification":{"header":"X-Challenge"}}"#);
        assert!(ok.validate(ctx(&policy), None).is_ok());
        // Nor one the challenge carries already: sent twice, a receiver reading the first
        // value fails either the credential or the challenge.
        for h in ["Authorization", "accept"] {
            let d = draft(&format!(r#"{{"name":"v","url":"https://r.example/","verification":{{"header":"{h}"}}}}"#));
            assert_eq!(fields(d.validate(ctx(&policy), None)), ["verification.header"], "{h}");
        }
        let same_as_auth = draft(
            r#"{"name":"v","url":"https://r.example/","auth":{"type":"HEADER","name":"X-Token","value":"v"},"verification":{"header":"x-token"}}"#,
        );
        assert_eq!(fields(same_as_auth.validate(ctx(&policy), None)), ["verification.header"]);
        // The default header (`x-uid-challenge`) is held to that too.
        let default_as_auth = draft(
            r#"{"name":"v","url":"https://r.example/","auth":{"type":"HEADER","name":"X-UID-Challenge","value":"v"},"verification":{"required":true}}"#,
        );
        assert_eq!(fields(default_as_auth.validate(ctx(&policy), None)), ["verification.header"]);
        // A hook stored so before the rule still saves as it was, and can move off it.
        let (mut cfg, sec) =
            draft(r#"{"name":"v","url":"https://r.example/","auth":{"type":"HEADER","name":"X-Token","value":"v"}}"#)
                .validate(ctx(&policy), None)
                .unwrap();
        cfg.auth = AuthConfig::Header { name: "X-UID-Challenge".into() };
        let as_read = draft(r#"{"url":"https://r.example/","auth":{"type":"HEADER","name":"X-UID-Challenge"}}"#);
        assert!(as_read.validate(ctx(&policy), Some((&cfg, &sec))).is_ok());
        let moved_off = draft(
            r#"{"url":"https://r.example/","auth":{"type":"HEADER","name":"X-UID-Challenge"},"verification":{"header":"x-other"}}"#,
        );
        assert!(moved_off.validate(ctx(&policy), Some((&cfg, &sec))).is_ok());
    }

    #[test]
    fn an_explicit_null_value_is_refused_and_left_out_keeps_a_stored_secret() {
        let policy = NetworkPolicy::default();
        let null = draft(r#"{"name":"h","url":"https://r.example/","headers":[{"name":"X-A","value":null}]}"#);
        assert_eq!(fields(null.validate(ctx(&policy), None)), ["headers[0].value"]);
        let null_secret =
            draft(r#"{"name":"h","url":"https://r.example/","headers":[{"name":"X-A","value":null,"secret":true}]}"#);
        assert_eq!(fields(null_secret.validate(ctx(&policy), None)), ["headers[0].value"]);
        let first =
            draft(r#"{"name":"h","url":"https://r.example/","headers":[{"name":"X-A","value":"v","secret":true}]}"#);
        let (cfg, stored) = first.validate(ctx(&policy), None).unwrap();
        let kept = draft(r#"{"name":"h","url":"https://r.example/","headers":[{"name":"X-A","secret":true}]}"#);
        let (_, secrets) = kept.validate(ctx(&policy), Some((&cfg, &stored))).unwrap();
        assert_eq!(secrets.headers.get("x-a").map(|s| s.expose().to_owned()), Some("v".to_owned()));
    }

    /// A replace that sends back the secret the hook signs with now (a document stored
    /// after a rotation, sent again) changes nothing: the rotation's previous secret keeps
    /// signing until its time. A different secret ends the overlap, as a new one should.
    #[test]
    fn sending_back_the_current_secret_keeps_a_rotations_overlap() {
        let policy = NetworkPolicy::default();
        let (cfg, mut stored) =
            draft(r#"{"name":"h","url":"https://r.example/"}"#).validate(ctx(&policy), None).unwrap();
        let previous = SigningSecret::generate();
        stored.retiring =
            vec![RetiringSecret { secret: previous, until: chrono::Utc::now() + chrono::Duration::hours(24) }];
        let current = stored.signing.expose().to_owned();
        let same = draft(&format!(r#"{{"name":"h","url":"https://r.example/","secret":"{current}"}}"#));
        let (_, kept) = same.validate(ctx(&policy), Some((&cfg, &stored))).unwrap();
        assert_eq!(kept.retiring, stored.retiring);
        let other = SigningSecret::generate();
        let new = draft(&format!(r#"{{"name":"h","url":"https://r.example/","secret":"{}"}}"#, other.expose()));
        let (_, replaced) = new.validate(ctx(&policy), Some((&cfg, &stored))).unwrap();
        assert!(replaced.retiring.is_empty());
    }

    /// A hook's requests are never compressed: a `Content-Encoding` header would tell its
    /// receiver to inflate a plain body, which it then fails to read.
    #[test]
    fn a_hook_header_may_not_say_the_body_is_compressed() {
        let policy = NetworkPolicy::default();
        let d =
            draft(r#"{"name":"h","url":"https://r.example/","headers":[{"name":"Content-Encoding","value":"gzip"}]}"#);
        assert_eq!(fields(d.validate(ctx(&policy), None)), ["headers[0].name"]);
    }

    /// Hop-by-hop and request-control headers are refused: `Expect: foo` made an
    /// HTTP/1.1 receiver answer `417` to every delivery, which failed at once. A hook
    /// stored with one keeps saving as it was, or it could not be written back.
    #[test]
    fn a_hook_header_may_not_be_one_about_the_connection() {
        let policy = NetworkPolicy::default();
        for name in ["Expect", "Keep-Alive", "Proxy-Connection", "Trailer"] {
            let text =
                format!(r#"{{"name":"h","url":"https://r.example/","headers":[{{"name":"{name}","value":"x"}}]}}"#);
            assert_eq!(fields(draft(&text).validate(ctx(&policy), None)), ["headers[0].name"], "{name}");
            let (stored, secrets) =
                draft(r#"{"name":"h","url":"https://r.example/"}"#).validate(ctx(&policy), None).unwrap();
            let stored = HookConfig {
                headers: vec![HeaderConfig { name: name.into(), value: Some("x".into()), secret: false }],
                ..stored
            };
            assert!(draft(&text).validate(ctx(&policy), Some((&stored, &secrets))).is_ok(), "{name} stored before");
            let moved = text.replace("r.example", "elsewhere.example");
            assert!(draft(&moved).validate(ctx(&policy), Some((&stored, &secrets))).is_ok(), "{name}, moved");
            // Nor as the auth header, the challenge header or a token request's header.
            let auth = format!(
                r#"{{"name":"h","url":"https://r.example/","auth":{{"type":"HEADER","name":"{name}","value":"v"}}}}"#
            );
            assert_eq!(fields(draft(&auth).validate(ctx(&policy), None)), ["auth.name"], "{name}");
            let challenge =
                format!(r#"{{"name":"h","url":"https://r.example/","verification":{{"header":"{name}"}}}}"#);
            assert_eq!(fields(draft(&challenge).validate(ctx(&policy), None)), ["verification.header"], "{name}");
            let param = oauth_with_header_params(&format!(r#"[{{"key":"{name}","value":"v"}}]"#));
            assert_eq!(fields(param.validate(ctx(&policy), None)), ["auth.header_params[0].key"], "{name}");
        }
    }

    /// OAuth header parameters are header names, one name whatever its case: two spellings
    /// were both accepted and the token request carried the header twice.
    #[test]
    fn an_oauth_header_parameter_listed_twice_in_two_cases_is_refused() {
        let p = NetworkPolicy::default();
        let twice = oauth_with_header_params(r#"[{"key":"X-Tenant","value":"a"},{"key":"x-tenant","value":"b"}]"#);
        assert_eq!(fields(twice.validate(ctx(&p), None)), ["auth.header_params[1].key"]);
        // Body and query parameters are case-sensitive names: both kept.
        let body = draft(
            r#"{"name":"h","url":"https://r.example/","auth":{"type":"OAUTH_CLIENT_CREDENTIALS",
                "token_url":"https://idp.example/token","client_id":"c","client_secret":"cs",
                "body_params":[{"key":"Aud","value":"a"},{"key":"aud","value":"b"}]}}"#,
        );
        assert!(body.validate(ctx(&p), None).is_ok());
    }

    #[test]
    fn a_replace_to_another_origin_must_resend_every_stored_credential() {
        let p = NetworkPolicy::default();
        let (cfg, sec) = draft(
            r#"{"name":"h","url":"https://r.example/","auth":{"type":"OAUTH_CLIENT_CREDENTIALS",
                "token_url":"https://idp.example/token","client_id":"c","client_secret":"cs",
                "body_params":[{"key":"aud","value":"a","secret":true}]},
                "headers":[{"name":"X-S","value":"sv","secret":true}]}"#,
        )
        .validate(ctx(&p), None)
        .unwrap();
        let moved = |json: &str| draft(json).validate(ctx(&p), Some((&cfg, &sec)));
        let body = |url: &str, token_url: &str| {
            format!(
                r#"{{"url":"{url}","auth":{{"type":"OAUTH_CLIENT_CREDENTIALS","token_url":"{token_url}","client_id":"c",
                    "body_params":[{{"key":"aud","secret":true}}]}},"headers":[{{"name":"X-S","secret":true}}]}}"#
            )
        };
        let expected = ["auth.client_secret", "auth.body_params[0].value", "headers[0].value"];
        for (url, token_url, says) in [
            ("https://evil.example/", "https://idp.example/token", "evil.example"),
            ("https://r.example/", "https://evil.example/token", "token endpoint"),
            // Another port on the same name, or the same host over http: another origin.
            ("https://r.example:8443/", "https://idp.example/token", "https://r.example:8443"),
            ("https://r.example/", "https://idp.example:444/token", "token endpoint"),
        ] {
            let errors = moved(&body(url, token_url)).unwrap_err();
            let fields: Vec<&str> = errors.iter().map(|f| f.field.as_str()).collect();
            assert_eq!(fields, expected, "{url} {token_url}");
            assert!(errors.iter().all(|f| f.message.contains("given again") && f.message.contains(says)), "{errors:?}");
        }
        // Same hosts: everything is kept. Moved with every credential given: accepted.
        assert!(moved(&body("https://r.example/other", "https://idp.example/t2")).is_ok());
        let resent = moved(
            r#"{"url":"https://new.example/","auth":{"type":"OAUTH_CLIENT_CREDENTIALS","token_url":"https://idp.example/token",
                "client_id":"c","client_secret":"cs2","body_params":[{"key":"aud","value":"a2","secret":true}]},
                "headers":[{"name":"X-S","value":"sv2","secret":true}]}"#,
        )
        .unwrap();
        assert_eq!((resent.1.auth.unwrap().expose(), resent.1.headers["x-s"].expose()), ("cs2", "sv2"));
        assert_eq!(resent.1.signing, sec.signing, "the signing secret is not a credential for the host");
    }
}
