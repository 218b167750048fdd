//! How many receivers' connections are kept open between requests.
//!
//! The client keeps a connection to each receiver open after its request (for
//! [`POOL_IDLE`]), and nothing in the client bounds how many receivers that is. A worker
//! that reaches a thousand endpoints within that time would hold a thousand sockets: past
//! the open-file limit (1,024 on Lambda, and often the soft limit on a server), every new
//! connection, every accepted API request and every database file open would fail, and
//! the deliveries failed so would count against healthy endpoints' circuits. So only
//! [`KEPT_HOSTS_MOST`] receivers (by scheme, host and port) have their connections kept;
//! a request to any other, while that many were used within the idle time, goes through
//! a client that keeps nothing, and its connection is closed when it is done.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// How long a connection is kept open after its last request.
pub(crate) const POOL_IDLE: Duration = Duration::from_secs(90);

/// The most receivers whose connections are kept open between requests. Most keep one
/// connection (HTTP/2 carries every request in one; HTTP/1 opens more only for requests
/// at the same moment), so this bounds the idle sockets to a few hundred: room beside
/// Lambda's 1,024 open files for the requests in flight and the AWS clients' own.
pub const KEPT_HOSTS_MOST: usize = 256;

/// The receivers whose connections may be open in the pool, with when each was last used.
#[derive(Debug)]
pub(crate) struct KeptHosts {
    most: usize,
    /// How long after its last use a receiver may still have a connection in the pool:
    /// [`POOL_IDLE`] after the longest request could have finished.
    open_for: Duration,
    used: Mutex<HashMap<String, Instant>>,
}

impl KeptHosts {
    pub(crate) fn new(most: usize, request_timeout: Duration) -> Self {
        Self { most, open_for: POOL_IDLE + request_timeout, used: Mutex::new(HashMap::new()) }
    }

    /// Whether a request to `url` may leave its connection open: its receiver's connections
    /// are kept already, or fewer than the most are.
    pub(crate) fn keep(&self, url: &url::Url) -> bool {
        let key = format!(
            "{}://{}:{}",
            url.scheme(),
            url.host_str().unwrap_or_default(),
            url.port_or_known_default().unwrap_or(0)
        );
        let now = Instant::now();
        let mut used = self.used.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(at) = used.get_mut(&key) {
            *at = now;
            return true;
        }
        if used.len() >= self.most {
            // Those unused for longer than a connection is kept have none open any more.
            used.retain(|_, at| now.duration_since(*at) < self.open_for);
        }
        if used.len() >= self.most {
            return false;
        }
        used.insert(key, now);
        true
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)] // Tests fail loudly on purpose.

    use super::*;

    fn url(s: &str) -> url::Url {
        url::Url::parse(s).unwrap()
    }

    #[test]
    fn receivers_past_the_most_are_not_kept_until_one_has_been_idle_long_enough() {
        let kept = KeptHosts::new(2, Duration::ZERO);
        assert!(kept.keep(&url("https://a.example/x")));
        assert!(kept.keep(&url("https://b.example/y")));
        assert!(!kept.keep(&url("https://c.example/")), "a third receiver while two are kept");
        // A kept receiver stays kept, whatever its path, and with its default port named.
        assert!(kept.keep(&url("https://a.example:443/other")));
        // Another port or scheme is another receiver (another connection).
        assert!(!kept.keep(&url("https://a.example:8443/")));
        assert!(!kept.keep(&url("http://a.example/")));
        // Once a receiver's connection can no longer be open, its place is taken.
        kept.used.lock().unwrap().insert("https://b.example:443".into(), Instant::now() - POOL_IDLE);
        assert!(kept.keep(&url("https://c.example/")));
        assert!(!kept.keep(&url("https://b.example/")));
    }
}
