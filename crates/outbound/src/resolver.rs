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
            let (allowed, blocked): (Vec<_>, Vec<_>) =
                found.into_iter().partition(|a| policy.check(a.ip()) == AddressVerdict::Allowed);
            if allowed.is_empty() {
                let block = blocked
                    .first()
                    .and_then(|a| match policy.check(a.ip()) {
                        AddressVerdict::Blocked(b) => Some(b),
                        AddressVerdict::Allowed => None,
                    })
                    .unwrap_or("no address");
                return Err(Box::new(Blocked { host, block }) as Box<dyn std::error::Error + Send + Sync>);
            }
            Ok(Box::new(allowed.into_iter()) as Addrs)
        })
    }
}

/// Checks an IP-literal host (which the client connects to without resolving).
pub(crate) fn check_literal(policy: &NetworkPolicy, url: &url::Url) -> Result<(), Blocked> {
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
