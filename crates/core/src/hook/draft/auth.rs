//! A hook's `auth`: its type's fields, the secret split out of them, and the OAuth
//! token request's parameters.

use std::collections::BTreeMap;

use crate::secret::Secret;
use crate::validation::Errors;

use super::super::model::*;
use super::super::network::NetworkPolicy;
use super::headers::{is_header_name, is_header_value};
use super::url::check_url;
use super::{AuthDraft, MAX_PARAMS, MAX_VALUE_LEN, ParamDraft, Written, refused_header, written};

/// Headers the token request carries of its own, beside the deliveries' reserved ones:
/// a parameter of one of these names would be sent twice, or replace the platform's.
const TOKEN_REQUEST_HEADERS: &[&str] = &["authorization", "accept", "user-agent"];

type AuthParts = (AuthConfig, Option<Secret>, BTreeMap<String, Secret>);

pub(super) fn check_auth(
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
            } else if refused_header(&name) {
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
            // It goes in HTTP Basic before a `:` and the secret; one of its own would move the
            // split, and the token endpoint would refuse every request.
            if client_id.contains(':') {
                e.push("auth.client_id", "must not contain ':'");
            }
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
                    newer: Default::default(),
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
        // Refused whole, its items not looked at (each is told apart from those before it).
        e.push(format!("auth.{group}"), format!("must list at most {MAX_PARAMS} parameters"));
        return Vec::new();
    }
    let mut out = Vec::with_capacity(list.len());
    for (i, p) in list.into_iter().enumerate() {
        let at = format!("auth.{group}[{i}]");
        // Header parameters are sent as headers of the token request, so their keys must
        // be header names, or every token fetch would fail after the hook was accepted.
        let key = match p.key {
            // Said how the body is written, not sent beside the platform's own.
            Some(k) if group == "header_params" && TokenBody::values_of(&k).is_some() => k,
            // The token request's own headers (its Basic authorization, its framing) are
            // the platform's: a parameter of the same name would be sent beside them.
            Some(k)
                if group == "header_params"
                    && (refused_header(&k) || TOKEN_REQUEST_HEADERS.iter().any(|h| k.eq_ignore_ascii_case(h))) =>
            {
                e.push(format!("{at}.key"), "is set by the platform and cannot be used");
                continue;
            }
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
        // Header names are one name whatever their case: two would both be sent.
        let same =
            |o: &ParamConfig| if group == "header_params" { o.key.eq_ignore_ascii_case(&key) } else { o.key == key };
        if out.iter().any(same) {
            e.push(format!("{at}.key"), "is listed twice");
            continue;
        }
        let is_secret = p.secret.unwrap_or(false);
        let slot = format!("{group}.{key}");
        if let Some(values) = TokenBody::values_of(&key).filter(|_| group == "header_params") {
            match written(p.value, is_secret, old.and_then(|o| o.get(&slot)), &at, e) {
                Some(Written::Plain(v)) if TokenBody::takes(&key, &v) => {
                    out.push(ParamConfig { key, value: Some(v), secret: false });
                }
                Some(Written::Plain(_)) => e.push(
                    format!("{at}.value"),
                    format!(
                        "must be one of {}: the platform writes the token request's body as it says",
                        values.join(", ")
                    ),
                ),
                Some(Written::Secret(_)) => {
                    e.push(format!("{at}.secret"), "must be false: it says how the body is written")
                }
                None => {}
            }
            continue;
        }
        match written(p.value, is_secret, old.and_then(|o| o.get(&slot)), &at, e) {
            Some(Written::Plain(v)) => out.push(ParamConfig { key, value: Some(v), secret: false }),
            Some(Written::Secret(s)) => {
                secrets.insert(slot, s);
                out.push(ParamConfig { key, value: None, secret: true });
            }
            None => {}
        }
    }
    out
}
