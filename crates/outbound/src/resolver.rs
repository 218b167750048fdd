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

/// Resolves names and keeps only allowed addresses.
///
/// Lookups are asynchronous (hickory, configured from `/etc/resolv.conf` and `/etc/hosts`),
/// so one given up with its request ends there. The system's `getaddrinfo` runs on tokio's
/// blocking pool and cannot be stopped: a tenant whose names answer slowly held a pool
/// thread per lookup long after its requests were given up, until the pool was full and
/// every other tenant's lookups (and the embedded backend's SQLite reads, on the same pool)
/// waited behind them.
pub(crate) struct GuardedResolver {
    policy: NetworkPolicy,
    /// `None` when the system's resolver configuration could not be read: lookups then go
    /// to `getaddrinfo`, as before.
    dns: Option<hickory_resolver::TokioResolver>,
}

impl GuardedResolver {
    pub(crate) fn new(policy: NetworkPolicy) -> Self {
        let dns = hickory_resolver::TokioResolver::builder_tokio().and_then(|b| b.build());
        let dns = match dns {
            Ok(r) => Some(r),
            Err(e) => {
                tracing::warn!(error = %e, "cannot read the system's resolver configuration; names are looked up with getaddrinfo");
                None
            }
        };
        Self { policy, dns }
    }

    /// The addresses `host` has, allowed or not.
    async fn lookup(dns: Option<&hickory_resolver::TokioResolver>, host: &str) -> Result<Vec<IpAddr>, Unresolved> {
        let unresolved = |source: std::io::Error| Unresolved { host: host.to_owned(), source };
        match dns {
            Some(r) => match r.lookup_ip(host).await {
                Ok(found) => Ok(found.iter().collect()),
                // No record is an answer: the name has no address.
                Err(e) if e.is_no_records_found() => Ok(Vec::new()),
                Err(e) => Err(unresolved(std::io::Error::other(e.to_string()))),
            },
            None => Ok(tokio::net::lookup_host((host, 0)).await.map_err(unresolved)?.map(|a| a.ip()).collect()),
        }
    }
}

impl Resolve for GuardedResolver {
    fn resolve(&self, name: Name) -> Resolving {
        let policy = self.policy.clone();
        let dns = self.dns.clone();
        let host = name.as_str().to_owned();
        Box::pin(async move {
            let found = Self::lookup(dns.as_ref(), &host).await?;
            if found.is_empty() {
                // A name with no address is a DNS failure (retried), not a refused address.
                let source = std::io::Error::new(std::io::ErrorKind::NotFound, "no address");
                return Err(Box::new(Unresolved { host, source }) as Box<dyn std::error::Error + Send + Sync>);
            }
            let (allowed, blocked): (Vec<_>, Vec<_>) =
                found.into_iter().partition(|ip| policy.check(*ip) == AddressVerdict::Allowed);
            if allowed.is_empty() {
                let block = blocked
                    .first()
                    .and_then(|ip| match policy.check(*ip) {
                        AddressVerdict::Blocked(b) => Some(b),
                        AddressVerdict::Allowed => None,
                    })
                    .unwrap_or("none allowed");
                return Err(Box::new(Blocked { host, block }) as Box<dyn std::error::Error + Send + Sync>);
            }
            Ok(Box::new(allowed.into_iter().map(|ip| SocketAddr::new(ip, 0))) as Addrs)
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

    /// A lookup needs no thread of tokio's blocking pool: with that pool held by other
    /// work (lookups a tenant's slow names left behind, SQLite reads), a name still
    /// resolves. `getaddrinfo` ran there, so it waited for as long as the pool was held.
    #[test]
    fn a_lookup_does_not_wait_for_the_blocking_pool() {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .max_blocking_threads(1)
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            let resolver = GuardedResolver::new(NetworkPolicy::local());
            let (release, held) = std::sync::mpsc::channel::<()>();
            let holder = tokio::task::spawn_blocking(move || held.recv());
            let name: Name = "localhost".parse().unwrap();
            let found = tokio::time::timeout(std::time::Duration::from_secs(5), resolver.resolve(name)).await;
            release.send(()).unwrap();
            holder.await.unwrap().unwrap();
            let addrs: Vec<SocketAddr> = found.expect("resolved with the blocking pool held").unwrap().collect();
            assert!(addrs.iter().any(|a| a.ip().is_loopback()), "{addrs:?}");
        });
    }
}
