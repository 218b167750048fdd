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
    // Stored as parsed, which percent-encodes what was sent raw (an `é` is six bytes), so
    // the stored form is held to the limit too: a hook read back must be writable as read.
    let stored = url.to_string();
    if stored.len() > MAX_URL_LEN {
        e.push(field, format!("must be at most {MAX_URL_LEN} characters once percent-encoded ({})", stored.len()));
        return None;
    }
    Some(stored)
}

/// The origin of a URL (scheme, host and port, the default port left out), as credentials
/// are given for it: another port on a shared host can be another party's (tunnels hand out
/// one port each on one name), and `http` sends them in the clear. `None` when it does not
/// parse or has no host.
pub(super) fn origin_of(raw: &str) -> Option<String> {
    let u = url::Url::parse(raw).ok()?;
    u.host_str()?;
    Some(u.origin().ascii_serialization())
}
