//! A hook's outbound URLs (its `url`, an OAuth `token_url`).

use std::net::IpAddr;

use crate::validation::Errors;

use super::super::model::MAX_URL_LEN;
use super::super::network::{AddressVerdict, NetworkPolicy};

/// Checks an outbound URL: absolute, `https` (or `http` where allowed), no credentials,
/// and no IP literal in a blocked block. Names are checked again at connect time.
pub(super) fn check_url(raw: &str, policy: &NetworkPolicy, field: &str, e: &mut Errors) -> Option<String> {
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

/// The host of a URL, lower-cased; `None` when it does not parse or has none.
pub(super) fn host_of(raw: &str) -> Option<String> {
    url::Url::parse(raw).ok().and_then(|u| u.host_str().map(str::to_ascii_lowercase))
}
