//! The hook as a client writes it, and its validation into a [`HookConfig`] and
//! [`HookSecrets`]. Every field error is collected and named by its path.

use std::collections::BTreeMap;
use std::net::IpAddr;

use chrono::{DateTime, Utc};
use serde::Deserialize;
use serde::de::IgnoredAny;

use crate::ids::HookName;
use crate::pattern::EventTypePattern;
use crate::secret::{Secret, SigningSecret};
use crate::validation::{Errors, FieldError};

use super::model::*;
use super::network::{AddressVerdict, NetworkPolicy};

/// Longest description.
const MAX_DESCRIPTION_LEN: usize = 1024;
/// Most sites a hook may list.
const MAX_SITES: usize = 100;
/// Longest site id.
const MAX_SITE_LEN: usize = 128;
/// Longest header value or parameter value.
const MAX_VALUE_LEN: usize = 4096;
/// Most parameters in each OAuth parameter list.
const MAX_PARAMS: usize = 20;

/// Headers the platform sets itself; a hook may not override them.
const RESERVED_HEADERS: &[&str] = &[
    "host",
    "content-length",
    "content-type",
    "transfer-encoding",
    "connection",
    "te",
    "upgrade",
    "webhook-id",
    "webhook-timestamp",
    "webhook-signature",
    "x-keycloak-signature",
];

/// A hook as a client writes it (`POST /v1/hooks`, `PUT /v1/hooks/{id}`).
///
/// Fields are loose (`Option<String>`) so validation, not the JSON parser, names what is
/// wrong. Read-only fields of a hook as read are accepted and ignored, so a client can
/// `GET`, edit and `PUT` the same document.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HookDraft {
    /// See API.md.
    pub name: Option<String>,
    /// See API.md.
    pub description: Option<String>,
    /// See API.md.
    pub url: Option<String>,
    /// See API.md.
    pub method: Option<String>,
    /// See API.md.
    pub event_types: Option<Vec<String>>,
    /// See API.md.
    pub sites: Option<Vec<String>>,
    /// See API.md.
    pub enabled: Option<bool>,
    /// See API.md.
    pub auth: Option<AuthDraft>,
    /// See API.md.
    pub headers: Option<Vec<HeaderDraft>>,
    /// See API.md.
    pub secret: Option<String>,
    /// See API.md.
    pub signature_formats: Option<Vec<String>>,
    /// See API.md.
    pub verification: Option<VerificationDraft>,
    /// `{"per_second": N}`: at most N deliveries a second; `null` or absent for none.
    pub rate_limit: Option<RateLimitDraft>,
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
#[derive(Debug, Clone, Default, Deserialize)]
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
    /// OAuth.
    pub token_url: Option<String>,
    /// OAuth.
    pub client_id: Option<String>,
    /// OAuth, write-only.
    pub client_secret: Option<String>,
    /// OAuth token request method.
    pub http_method: Option<String>,
    /// OAuth.
    pub header_params: Option<Vec<ParamDraft>>,
    /// OAuth.
    pub query_params: Option<Vec<ParamDraft>>,
    /// OAuth.
    pub body_params: Option<Vec<ParamDraft>>,
}

/// An OAuth parameter as written.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ParamDraft {
    /// The name.
    pub key: Option<String>,
    /// The value; may be left out on replace to keep a secret value (`Some(None)` is an
    /// explicit `null`, which is refused: a value is a string or absent).
    #[serde(default, deserialize_with = "present")]
    pub value: Option<Option<String>>,
    /// Whether the value is write-only.
    pub secret: Option<bool>,
}

/// An extra header as written.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HeaderDraft {
    /// The header name.
    pub name: Option<String>,
    /// The value; may be left out on replace to keep a secret value (`Some(None)` is an
    /// explicit `null`, which is refused: a value is a string or absent).
    #[serde(default, deserialize_with = "present")]
    pub value: Option<Option<String>>,
    /// Whether the value is write-only.
    pub secret: Option<bool>,
}

/// Tells a field that is present (even as `null`) from one left out, which `Option` alone
/// cannot: left out is `None` (through `default`), `null` is `Some(None)`.
fn present<'de, D: serde::Deserializer<'de>, T: Deserialize<'de>>(d: D) -> Result<Option<Option<T>>, D::Error> {
    Option::<T>::deserialize(d).map(Some)
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
    /// The time, for secrets' timestamps.
    pub now: DateTime<Utc>,
}

/// The hook being replaced, whose secret values a replace may keep.
type Existing<'a> = Option<(&'a HookConfig, &'a HookSecrets)>;

impl HookDraft {
    /// Validates a create (`existing` = `None`) or a replace of `existing`.
    ///
    /// On replace, `name` may be left out (it cannot change; the caller answers `409` if a
    /// different one is given), and every secret value left out keeps its stored value.
    pub fn validate(
        self,
        ctx: ValidationContext<'_>,
        existing: Existing<'_>,
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
                if list.is_empty() || list.len() > MAX_EVENT_TYPES {
                    e.push("event_types", format!("must list 1-{MAX_EVENT_TYPES} patterns"));
                }
                let mut out: Vec<EventTypePattern> = Vec::with_capacity(list.len());
                for (i, p) in list.iter().enumerate() {
                    match p.parse::<EventTypePattern>() {
                        Ok(p) if !out.contains(&p) => out.push(p),
                        Ok(_) => {}
                        Err(err) => e.push(format!("event_types[{i}]"), err.to_string()),
                    }
                }
                out
            }
        };

        let sites = self.sites.unwrap_or_default();
        if sites.len() > MAX_SITES {
            e.push("sites", format!("must list at most {MAX_SITES} sites"));
        }
        for (i, s) in sites.iter().enumerate() {
            if s.is_empty() || s.len() > MAX_SITE_LEN || s.chars().any(char::is_control) {
                e.push(format!("sites[{i}]"), format!("must be 1-{MAX_SITE_LEN} printable characters"));
            }
        }

        let old_secrets = existing.map(|(_, s)| s);
        let old_auth = existing.map(|(c, s)| (&c.auth, s));
        let (auth, auth_secret, params) = check_auth(self.auth, ctx.network, old_auth, &mut e);

        let (headers, header_secrets) = check_headers(self.headers.unwrap_or_default(), &auth, old_secrets, &mut e);

        let (signing, retiring) = match (self.secret, old_secrets) {
            (Some(s), _) => match SigningSecret::parse(&s) {
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

        let verification = match self.verification {
            None => VerificationConfig::default(),
            Some(v) => {
                let header = match v.header {
                    None => VerificationConfig::default().header,
                    Some(h) => {
                        if !is_header_name(&h) {
                            e.push("verification.header", "must be a valid HTTP header name");
                        } else if RESERVED_HEADERS.contains(&h.to_ascii_lowercase().as_str()) {
                            e.push("verification.header", "is a header the platform sets itself; choose another");
                        }
                        h.to_ascii_lowercase()
                    }
                };
                VerificationConfig { required: v.required.unwrap_or(false), header }
            }
        };

        let rate_limit = match self.rate_limit.map(|r| r.per_second) {
            None => None,
            Some(Some(n)) if (1..=MAX_RATE_LIMIT).contains(&n) => Some(RateLimit { per_second: n as u32 }),
            Some(_) => {
                e.push("rate_limit.per_second", format!("must be a whole number from 1 to {MAX_RATE_LIMIT}"));
                None
            }
        };

        let _ = ctx.now;
        match (e.is_empty(), name, url, signing) {
            (true, Some(name), Some(url), Some(signing)) => Ok((
                HookConfig {
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
                },
                HookSecrets { signing, retiring, auth: auth_secret, params, headers: header_secrets },
            )),
            _ => Err(e.into_vec()),
        }
    }
}

/// Checks an outbound URL: absolute, `https` (or `http` where allowed), no credentials,
/// and no IP literal in a blocked block. Names are checked again at connect time.
fn check_url(raw: &str, policy: &NetworkPolicy, field: &str, e: &mut Errors) -> Option<String> {
    if raw.len() > MAX_URL_LEN {
        e.push(field, format!("must be at most {MAX_URL_LEN} characters"));
        return None;
    }
    let url = match url::Url::parse(raw) {
        Ok(u) => u,
        Err(err) => {
            e.push(field, format!("must be an absolute URL: {err}"));
            return None;
        }
    };
    match url.scheme() {
        "https" => {}
        "http" if policy.allow_http => {}
        "http" => {
            e.push(field, "must use https");
            return None;
        }
        _ => {
            e.push(field, "must be an https URL");
            return None;
        }
    }
    if !url.username().is_empty() || url.password().is_some() {
        e.push(field, "must not carry credentials; use auth instead");
        return None;
    }
    if url.fragment().is_some() {
        e.push(field, "must not have a fragment");
        return None;
    }
    let ip: Option<IpAddr> = match url.host() {
        Some(url::Host::Ipv4(v4)) => Some(v4.into()),
        Some(url::Host::Ipv6(v6)) => Some(v6.into()),
        Some(url::Host::Domain(_)) => None,
        None => {
            e.push(field, "must have a host");
            return None;
        }
    };
    if let Some(ip) = ip
        && let AddressVerdict::Blocked(block) = policy.check(ip)
    {
        e.push(field, format!("must not point at a {block} address"));
        return None;
    }
    Some(url.to_string())
}

/// RFC 9110 token characters.
fn is_header_name(s: &str) -> bool {
    !s.is_empty() && s.len() <= 256 && s.bytes().all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}

/// Visible ASCII, spaces and tabs; no line breaks that could split a header.
fn is_header_value(s: &str) -> bool {
    s.len() <= MAX_VALUE_LEN && s.bytes().all(|b| b == b'\t' || (b' '..=b'~').contains(&b))
}

type AuthParts = (AuthConfig, Option<Secret>, BTreeMap<String, Secret>);

fn check_auth(
    draft: Option<AuthDraft>,
    policy: &NetworkPolicy,
    old: Option<(&AuthConfig, &HookSecrets)>,
    e: &mut Errors,
) -> AuthParts {
    let Some(d) = draft else {
        return (AuthConfig::None, None, BTreeMap::new());
    };
    let ty = match d.auth_type.as_deref() {
        Some("NONE") => AuthType::None,
        Some("BASIC") => AuthType::Basic,
        Some("API_KEY") => AuthType::ApiKey,
        Some("HEADER") => AuthType::Header,
        Some("OAUTH_CLIENT_CREDENTIALS") => AuthType::OauthClientCredentials,
        Some(_) => {
            e.push("auth.type", "must be one of NONE, BASIC, API_KEY, HEADER, OAUTH_CLIENT_CREDENTIALS");
            return (AuthConfig::None, None, BTreeMap::new());
        }
        None => {
            e.push("auth.type", "is required");
            return (AuthConfig::None, None, BTreeMap::new());
        }
    };

    // Fields that belong to another type are refused rather than silently dropped.
    let present: [(&str, bool, &[AuthType]); 13] = [
        ("username", d.username.is_some(), &[AuthType::Basic]),
        ("password", d.password.is_some(), &[AuthType::Basic]),
        ("key_name", d.key_name.is_some(), &[AuthType::ApiKey]),
        ("key_value", d.key_value.is_some(), &[AuthType::ApiKey]),
        ("name", d.name.is_some(), &[AuthType::Header]),
        ("value", d.value.is_some(), &[AuthType::Header]),
        ("token_url", d.token_url.is_some(), &[AuthType::OauthClientCredentials]),
        ("client_id", d.client_id.is_some(), &[AuthType::OauthClientCredentials]),
        ("client_secret", d.client_secret.is_some(), &[AuthType::OauthClientCredentials]),
        ("http_method", d.http_method.is_some(), &[AuthType::OauthClientCredentials]),
        ("header_params", d.header_params.is_some(), &[AuthType::OauthClientCredentials]),
        ("query_params", d.query_params.is_some(), &[AuthType::OauthClientCredentials]),
        ("body_params", d.body_params.is_some(), &[AuthType::OauthClientCredentials]),
    ];
    for (field, is_set, types) in present {
        if is_set && !types.contains(&ty) {
            e.push(format!("auth.{field}"), format!("does not apply to auth type {}", type_name(ty)));
        }
    }

    // A replace keeps the stored auth secret when the type is unchanged and the value left out.
    let kept = old.filter(|(cfg, _)| cfg.auth_type() == ty).and_then(|(_, s)| s.auth.clone());
    let secret = |value: Option<String>, field: &str, e: &mut Errors| -> Option<Secret> {
        match value {
            Some(v) if v.is_empty() || !is_header_value(&v) => {
                e.push(format!("auth.{field}"), format!("must be 1-{MAX_VALUE_LEN} printable characters"));
                None
            }
            Some(v) => Some(Secret::new(v)),
            None => {
                if kept.is_none() {
                    e.push(format!("auth.{field}"), "is required");
                }
                kept.clone()
            }
        }
    };
    let required = |value: Option<String>, field: &str, e: &mut Errors| -> String {
        match value {
            Some(v) if !v.is_empty() && is_header_value(&v) && v.len() <= 256 => v,
            Some(_) => {
                e.push(format!("auth.{field}"), "must be 1-256 printable characters");
                String::new()
            }
            None => {
                e.push(format!("auth.{field}"), "is required");
                String::new()
            }
        }
    };

    match ty {
        AuthType::None => (AuthConfig::None, None, BTreeMap::new()),
        AuthType::Basic => {
            let username = required(d.username, "username", e);
            if username.contains(':') {
                e.push("auth.username", "must not contain ':'");
            }
            let password = secret(d.password, "password", e);
            (AuthConfig::Basic { username }, password, BTreeMap::new())
        }
        AuthType::ApiKey => {
            let key_name = required(d.key_name, "key_name", e);
            let key_value = secret(d.key_value, "key_value", e);
            (AuthConfig::ApiKey { key_name }, key_value, BTreeMap::new())
        }
        AuthType::Header => {
            let name = required(d.name, "name", e);
            if !name.is_empty() && !is_header_name(&name) {
                e.push("auth.name", "must be a valid HTTP header name");
            } else if RESERVED_HEADERS.contains(&name.to_ascii_lowercase().as_str()) {
                e.push("auth.name", "is set by the platform and cannot be used");
            }
            let value = secret(d.value, "value", e);
            (AuthConfig::Header { name }, value, BTreeMap::new())
        }
        AuthType::OauthClientCredentials => {
            let token_url = match d.token_url {
                Some(u) => check_url(&u, policy, "auth.token_url", e).unwrap_or_default(),
                None => {
                    e.push("auth.token_url", "is required");
                    String::new()
                }
            };
            let client_id = required(d.client_id, "client_id", e);
            let client_secret = secret(d.client_secret, "client_secret", e);
            let http_method = match d.http_method.as_deref() {
                None | Some("POST") => TokenMethod::Post,
                Some("GET") => TokenMethod::Get,
                Some(_) => {
                    e.push("auth.http_method", "must be POST or GET");
                    TokenMethod::Post
                }
            };
            let old_params = old.map(|(_, s)| &s.params);
            let mut params = BTreeMap::new();
            let header_params = check_params(d.header_params, "header_params", old_params, &mut params, e);
            let query_params = check_params(d.query_params, "query_params", old_params, &mut params, e);
            let body_params = check_params(d.body_params, "body_params", old_params, &mut params, e);
            (
                AuthConfig::OauthClientCredentials(OAuthConfig {
                    token_url,
                    client_id,
                    http_method,
                    header_params,
                    query_params,
                    body_params,
                }),
                client_secret,
                params,
            )
        }
    }
}

fn type_name(t: AuthType) -> &'static str {
    match t {
        AuthType::None => "NONE",
        AuthType::Basic => "BASIC",
        AuthType::ApiKey => "API_KEY",
        AuthType::Header => "HEADER",
        AuthType::OauthClientCredentials => "OAUTH_CLIENT_CREDENTIALS",
    }
}

fn check_params(
    list: Option<Vec<ParamDraft>>,
    group: &str,
    old: Option<&BTreeMap<String, Secret>>,
    secrets: &mut BTreeMap<String, Secret>,
    e: &mut Errors,
) -> Vec<ParamConfig> {
    let list = list.unwrap_or_default();
    if list.len() > MAX_PARAMS {
        e.push(format!("auth.{group}"), format!("must list at most {MAX_PARAMS} parameters"));
    }
    let mut out = Vec::with_capacity(list.len());
    for (i, p) in list.into_iter().enumerate() {
        let at = format!("auth.{group}[{i}]");
        // Header parameters are sent as headers of the token request, so their keys must
        // be header names, or every token fetch would fail after the hook was accepted.
        let key = match p.key {
            Some(k) if group == "header_params" && is_header_name(&k) && k.len() <= 256 => k,
            Some(_) if group == "header_params" => {
                e.push(format!("{at}.key"), "must be a valid HTTP header name of at most 256 characters");
                continue;
            }
            Some(k) if !k.is_empty() && is_header_value(&k) && k.len() <= 256 => k,
            _ => {
                e.push(format!("{at}.key"), "must be 1-256 printable characters");
                continue;
            }
        };
        if out.iter().any(|o: &ParamConfig| o.key == key) {
            e.push(format!("{at}.key"), "is listed twice");
            continue;
        }
        let is_secret = p.secret.unwrap_or(false);
        let slot = format!("{group}.{key}");
        let value = match p.value {
            None => None,
            Some(Some(v)) => Some(v),
            Some(None) => {
                e.push(format!("{at}.value"), "must be a string, or left out to keep a stored secret value");
                continue;
            }
        };
        match value {
            Some(v) if !is_header_value(&v) => {
                e.push(format!("{at}.value"), format!("must be at most {MAX_VALUE_LEN} printable characters"));
            }
            Some(v) if is_secret => {
                secrets.insert(slot, Secret::new(v));
            }
            Some(v) => {
                out.push(ParamConfig { key, value: Some(v), secret: false });
                continue;
            }
            None if is_secret => match old.and_then(|o| o.get(&slot)) {
                Some(kept) => {
                    secrets.insert(slot, kept.clone());
                }
                None => e.push(format!("{at}.value"), "is required"),
            },
            None => e.push(format!("{at}.value"), "is required"),
        }
        out.push(ParamConfig { key, value: None, secret: is_secret });
    }
    out
}

fn check_headers(
    list: Vec<HeaderDraft>,
    auth: &AuthConfig,
    old: Option<&HookSecrets>,
    e: &mut Errors,
) -> (Vec<HeaderConfig>, BTreeMap<String, Secret>) {
    if list.len() > MAX_HEADERS {
        e.push("headers", format!("must list at most {MAX_HEADERS} headers"));
    }
    let mut out: Vec<HeaderConfig> = Vec::with_capacity(list.len());
    let mut secrets = BTreeMap::new();
    for (i, h) in list.into_iter().enumerate() {
        let at = format!("headers[{i}]");
        let name = match h.name {
            Some(n) if is_header_name(&n) => n,
            _ => {
                e.push(format!("{at}.name"), "must be a valid HTTP header name");
                continue;
            }
        };
        let lower = name.to_ascii_lowercase();
        if RESERVED_HEADERS.contains(&lower.as_str()) || (lower == "authorization" && *auth != AuthConfig::None) {
            e.push(format!("{at}.name"), "is set by the platform and cannot be used");
            continue;
        }
        if let AuthConfig::Header { name: auth_name } = auth
            && auth_name.eq_ignore_ascii_case(&name)
        {
            e.push(format!("{at}.name"), "is already the auth header");
            continue;
        }
        if out.iter().any(|o| o.name.eq_ignore_ascii_case(&name)) {
            e.push(format!("{at}.name"), "is listed twice");
            continue;
        }
        let is_secret = h.secret.unwrap_or(false);
        let value = match h.value {
            None => None,
            Some(Some(v)) => Some(v),
            Some(None) => {
                e.push(format!("{at}.value"), "must be a string, or left out to keep a stored secret value");
                continue;
            }
        };
        match value {
            Some(v) if !is_header_value(&v) => {
                e.push(format!("{at}.value"), format!("must be at most {MAX_VALUE_LEN} printable characters"));
            }
            Some(v) if is_secret => {
                secrets.insert(lower, Secret::new(v));
                out.push(HeaderConfig { name, value: None, secret: true });
            }
            Some(v) => out.push(HeaderConfig { name, value: Some(v), secret: false }),
            None if is_secret => match old.and_then(|o| o.headers.get(&lower)) {
                Some(kept) => {
                    secrets.insert(lower, kept.clone());
                    out.push(HeaderConfig { name, value: None, secret: true });
                }
                None => e.push(format!("{at}.value"), "is required"),
            },
            None => e.push(format!("{at}.value"), "is required"),
        }
    }
    (out, secrets)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn draft(json: &str) -> HookDraft {
        serde_json::from_str(json).unwrap()
    }

    fn ctx(policy: &NetworkPolicy) -> ValidationContext<'_> {
        ValidationContext { network: policy, now: Utc::now() }
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
            r#"{"url":"https://r2.example/","auth":{"type":"HEADER","name":"X-Auth"},
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
    fn the_challenge_header_may_not_be_one_the_platform_sets() {
        let policy = NetworkPolicy::default();
        for h in ["Host", "content-length", "webhook-signature", "X-Keycloak-Signature"] {
            let d = draft(&format!(r#"{{"name":"v","url":"https://r.example/","verification":{{"header":"{h}"}}}}"#));
            assert_eq!(fields(d.validate(ctx(&policy), None)), ["verification.header"], "{h}");
        }
        let ok = draft(r#"{"name":"v","url":"https://r.example/","verification":{"header":"X-Challenge"}}"#);
        assert!(ok.validate(ctx(&policy), None).is_ok());
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
}
