//! A hook's extra headers, and what makes a header name or value acceptable.

use std::collections::BTreeMap;

use crate::secret::Secret;
use crate::validation::Errors;

use super::super::model::*;
use super::{HeaderDraft, MAX_VALUE_LEN, RESERVED_HEADERS, TRANSPORT_HEADERS, Written, written};

/// RFC 9110 token characters.
pub(super) fn is_header_name(s: &str) -> bool {
    !s.is_empty() && s.len() <= 256 && s.bytes().all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}

/// Visible ASCII, spaces and tabs; no line breaks that could split a header.
pub(super) fn is_header_value(s: &str) -> bool {
    s.len() <= MAX_VALUE_LEN && s.bytes().all(|b| b == b'\t' || (b' '..=b'~').contains(&b))
}

pub(super) fn check_headers(
    list: Vec<HeaderDraft>,
    auth: &AuthConfig,
    keep: Option<(&HookConfig, &HookSecrets)>,
    stored_config: Option<&HookConfig>,
    e: &mut Errors,
) -> (Vec<HeaderConfig>, BTreeMap<String, Secret>) {
    let old = keep.map(|(_, s)| s);
    // Whether the stored hook has a header of this name, wherever the hook now goes.
    let stored =
        |name: &str| stored_config.is_some_and(|c| c.headers.iter().any(|h| h.name.eq_ignore_ascii_case(name)));
    if list.len() > MAX_HEADERS {
        // Refused whole, its items not looked at (each is told apart from those before it).
        e.push("headers", format!("must list at most {MAX_HEADERS} headers"));
        return (Vec::new(), BTreeMap::new());
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
        if TRANSPORT_HEADERS.contains(&lower.as_str()) && !stored(&lower) {
            e.push(format!("{at}.name"), "is a hop-by-hop or request-control header and cannot be used");
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
        match written(h.value, is_secret, old.and_then(|o| o.headers.get(&lower)), &at, e) {
            Some(Written::Plain(v)) => out.push(HeaderConfig { name, value: Some(v), secret: false }),
            Some(Written::Secret(s)) => {
                secrets.insert(lower, s);
                out.push(HeaderConfig { name, value: None, secret: true });
            }
            None => {}
        }
    }
    (out, secrets)
}
