//! Name resolution that refuses forbidden addresses at connect time: the client connects
//! only to the addresses this resolver returns, so a name cannot be re-pointed between a
//! check and the connection (DNS rebinding).

use std::net::{IpAddr, SocketAddr};

use hookbridge_core::hook::{AddressVerdict, NetworkPolicy};
use reqwest::dns::{Addrs, Name, Resolve, Resolving};

/// The resolved name has only forbidden addresses.
#[derive(Debug, thiserror::Error)]
#[error("{host} resolves only to forbidden addresses ({block})")]
pub(crate) struct Blocked {
    pub(crate) host: String,
    pub(crate) block: &'static str,
}

/// The name did not resolve.
#[derive(Debug, thiserror::Error)]
#[error("cannot resolve {host}: {source}")]
pub(crate) struct Unresolved {
    host: String,
    #[source]
    source: std::io::Error,
}

/// Resolves with the system resolver and keeps only allowed addresses.
pub(crate) struct GuardedResolver {
    policy: NetworkPolicy,
}

impl GuardedResolver {
    pub(crate) fn new(policy: NetworkPolicy) -> Self {
        Self { policy }
    }
}

impl Resolve for GuardedResolver {
    fn resolve(&self, name: Name) -> Resolving {
        let policy = self.policy.clone();
        let host = name.as_str().to_owned();
        Box::pin(async move {
            let found: Vec<SocketAddr> = tokio::net::lookup_host((host.as_str(), 0))
                .await
                .map_err(|source| Unresolved { host: host.clone(), source })?
                .collect();
            if found.is_empty() {
                // A name with no address is a DNS failure (retried), not a refused address.
                let source = std::io::Error::new(std::io::ErrorKind::NotFound, "no address");
                return Err(Box::new(Unresolved { host, source }) as Box<dyn std::error::Error + Send + Sync>);
            }
            let (allowed, blocked): (Vec<_>, Vec<_>) =
                found.into_iter().partition(|a| policy.check(a.ip()) == AddressVerdict::Allowed);
            if allowed.is_empty() {
                let block = blocked
                    .first()
                    .and_then(|a| match policy.check(a.ip()) {
                        AddressVerdict::Blocked(b) => Some(b),
                        AddressVerdict::Allowed => None,
                    })
                    .unwrap_or("none allowed");
                return Err(Box::new(Blocked { host, block }) as Box<dyn std::error::Error + Send + Sync>);
            }
            Ok(Box::new(allowed.into_iter()) as Addrs)
        })
    }
}

/// Why a URL is not sent to, before any connection.
#[derive(Debug, thiserror::Error)]
pub(crate) enum Refused {
    /// `http` where the deployment allows only `https`.
    #[error("plain http is not allowed in this deployment")]
    PlainHttp,
    /// An IP-literal host in a forbidden block.
    #[error(transparent)]
    Blocked(#[from] Blocked),
}

/// Checks what can be checked of a URL before connecting: its scheme against the
/// deployment's policy, and an IP-literal host (which the client connects to without
/// resolving). Every outbound request (deliveries, token fetches, challenges, key fetches)
/// goes through it at send time, so a stored URL the policy no longer allows is not sent to.
pub(crate) fn check_target(policy: &NetworkPolicy, url: &url::Url) -> Result<(), Refused> {
    check_literal(policy, url)?;
    if url.scheme() == "http" && !policy.allow_http {
        return Err(Refused::PlainHttp);
    }
    Ok(())
}

/// Checks an IP-literal host (which the client connects to without resolving).
fn check_literal(policy: &NetworkPolicy, url: &url::Url) -> Result<(), Blocked> {
    let ip: Option<IpAddr> = match url.host() {
        Some(url::Host::Ipv4(v4)) => Some(v4.into()),
        Some(url::Host::Ipv6(v6)) => Some(v6.into()),
        _ => None,
    };
    match ip.map(|ip| policy.check(ip)) {
        Some(AddressVerdict::Blocked(block)) => {
            Err(Blocked { host: url.host_str().unwrap_or_default().to_owned(), block })
        }
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)] // Tests fail loudly on purpose.

    use super::*;

    #[test]
    fn a_target_is_checked_for_its_scheme_and_its_literal_address() {
        let https_only = NetworkPolicy::default();
        let url = |u: &str| url::Url::parse(u).unwrap();
        assert!(check_target(&https_only, &url("https://receiver.example/")).is_ok());
        assert!(matches!(check_target(&https_only, &url("http://receiver.example/")), Err(Refused::PlainHttp)));
        assert!(matches!(check_target(&https_only, &url("https://169.254.169.254/")), Err(Refused::Blocked(_))));
        let local = NetworkPolicy::local();
        assert!(check_target(&local, &url("http://127.0.0.1:9000/")).is_ok());
    }
}
