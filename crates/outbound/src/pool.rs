//! How many connections to receivers are kept open between requests.
//!
//! The client keeps a connection open after its request (for [`POOL_IDLE`]), to be used
//! again, and nothing in the client bounds how many it keeps across receivers. A worker
//! that reaches a thousand endpoints within that time would hold a thousand sockets: past
//! the open-file limit (1,024 on Lambda, and often the soft limit on a server), every new
//! connection, every accepted API request and every database file open would fail, and
//! the deliveries failed so would count against healthy endpoints' circuits. So about
//! [`KEPT_CONNECTIONS_MOST`] connections at most are kept (the count is of requests at
//! once; in a race the HTTP client may keep one more): a receiver's requests go through the
//! pooled client while they can reuse its kept connections or a new one fits in the
//! budget, and otherwise through a client that keeps nothing, whose connection is closed
//! when the request is done.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

/// How long a connection is kept open after its last request.
pub(crate) const POOL_IDLE: Duration = Duration::from_secs(90);

/// When a receiver whose requests are all done has no connection left open: the pool
/// looks for connections idle longer than [`POOL_IDLE`] only every [`POOL_IDLE`], so one
/// may stay open up to twice that (and a second more, for the sweep's own time).
const CLOSED_AFTER: Duration = Duration::from_secs(2 * POOL_IDLE.as_secs() + 1);

/// The most connections kept open between requests, across every receiver: room beside
/// Lambda's 1,024 open files for the requests in flight (through either client) and the
/// AWS clients' own connections.
pub const KEPT_CONNECTIONS_MOST: usize = 512;

/// A receiver's requests through the pooled client: those in flight, and the most there
/// have been at once since it was last idle long enough for its connections to close.
/// That most is how many connections the pool may hold for it (HTTP/1 opens one per
/// request at the same moment; HTTP/2 needs one, so it is counted high there).
#[derive(Debug)]
struct Receiver {
    in_flight: usize,
    most_at_once: usize,
    idle_since: Instant,
    /// It has answered over HTTP/2, where a request given up leaves its connection open
    /// (the other requests on it go on).
    multiplexed: bool,
}

#[derive(Debug, Default)]
struct State {
    receivers: HashMap<String, Receiver>,
    /// The sum of the receivers' `most_at_once`: the connections the pool may hold.
    kept: usize,
}

impl State {
    /// Counts a request to `key` against the pool, if it needs no connection beyond the
    /// budget; whether it was counted.
    fn take(&mut self, key: &str, most: usize, now: Instant) -> bool {
        let room = self.kept < most;
        match self.receivers.get_mut(key) {
            Some(r) if r.in_flight < r.most_at_once => r.in_flight += 1,
            Some(r) if room => {
                r.in_flight += 1;
                r.most_at_once += 1;
                self.kept += 1;
            }
            None if room => {
                let r = Receiver { in_flight: 1, most_at_once: 1, idle_since: now, multiplexed: false };
                self.receivers.insert(key.to_owned(), r);
                self.kept += 1;
            }
            _ => return false,
        }
        true
    }

    /// Forgets the receivers whose connections have all been closed by the pool.
    fn forget_closed(&mut self, now: Instant) {
        let mut freed = 0;
        self.receivers.retain(|_, r| {
            let open = r.in_flight > 0 || now.duration_since(r.idle_since) < CLOSED_AFTER;
            if !open {
                freed += r.most_at_once;
            }
            open
        });
        self.kept -= freed;
    }
}

/// The connections the pooled client may hold, by receiver.
#[derive(Debug)]
pub(crate) struct KeptConnections {
    most: usize,
    state: Mutex<State>,
}

/// A request counted against the pool until it is done (its answer read or dropped):
/// dropped, its receiver's connection is idle from then on.
#[derive(Debug)]
pub(crate) struct InUse {
    kept: Arc<KeptConnections>,
    key: String,
    answered: Option<http::Version>,
}

impl InUse {
    /// The receiver answered, over `version`: its connection may go back to the pool. One
    /// dropped without an answer (refused, timed out, given up) had its HTTP/1 connection
    /// closed, and gives its place in the budget back: a receiver that never answers, with
    /// many requests waiting on it, holds places only while they wait. (Not a receiver
    /// that has answered over HTTP/2: its connection outlives a request given up.)
    pub(crate) fn answered(&mut self, version: http::Version) {
        self.answered = Some(version);
    }
}

impl Drop for InUse {
    fn drop(&mut self) {
        let mut state = self.kept.state.lock().unwrap_or_else(PoisonError::into_inner);
        let State { receivers, kept } = &mut *state;
        let Some(r) = receivers.get_mut(&self.key) else { return };
        r.in_flight = r.in_flight.saturating_sub(1);
        r.idle_since = Instant::now();
        r.multiplexed |= self.answered == Some(http::Version::HTTP_2);
        if self.answered.is_none() && !r.multiplexed && r.most_at_once > r.in_flight {
            r.most_at_once -= 1;
            *kept -= 1;
        }
        if r.most_at_once == 0 {
            // Nothing of it left open: forgotten at once, so that receivers that never
            // answered do not pile up in the map while the budget has room.
            receivers.remove(&self.key);
        }
    }
}

impl KeptConnections {
    pub(crate) fn new(most: usize) -> Arc<Self> {
        Arc::new(Self { most, state: Mutex::new(State::default()) })
    }

    /// Counts a request to `url` against the pool when its connection may be kept open
    /// after it; `None` when that would take more connections than the budget.
    pub(crate) fn begin(self: &Arc<Self>, url: &url::Url) -> Option<InUse> {
        let key = format!(
            "{}://{}:{}",
            url.scheme(),
            url.host_str().unwrap_or_default(),
            url.port_or_known_default().unwrap_or(0)
        );
        let now = Instant::now();
        let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        let counted = state.take(&key, self.most, now) || {
            state.forget_closed(now);
            state.take(&key, self.most, now)
        };
        drop(state);
        counted.then(|| InUse { kept: self.clone(), key, answered: None })
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
    fn requests_past_the_budget_keep_nothing_until_a_receivers_connections_have_closed() {
        let kept = KeptConnections::new(3);
        let answered = |u: &str| {
            let mut in_use = kept.begin(&url(u)).unwrap();
            in_use.answered(http::Version::HTTP_11);
            in_use
        };
        let a1 = answered("https://a.example/x");
        let b1 = answered("https://b.example/y");
        // A second request to `a` at once needs a second connection: the last in the budget.
        let a2 = answered("https://a.example:443/other");
        assert!(kept.begin(&url("https://a.example/")).is_none(), "a third connection to a");
        assert!(kept.begin(&url("https://c.example/")).is_none(), "a connection to c");
        // Another port or scheme is another receiver.
        assert!(kept.begin(&url("https://a.example:8443/")).is_none());
        assert!(kept.begin(&url("http://a.example/")).is_none());
        // Done, a request's connection is there for the next to the same receiver.
        drop(a2);
        let a3 = answered("https://a.example/");
        drop((a1, a3, b1));
        assert!(kept.begin(&url("https://c.example/")).is_none(), "a's and b's connections are still open");
        // Once b's connection has surely been closed by the pool, its place is c's.
        kept.state.lock().unwrap().receivers.get_mut("https://b.example:443").unwrap().idle_since -= CLOSED_AFTER;
        let c = answered("https://c.example/");
        drop(c);
        assert_eq!(kept.state.lock().unwrap().kept, 3);
        assert!(kept.begin(&url("https://b.example/")).is_none());
    }

    #[test]
    fn a_request_given_up_without_an_answer_gives_its_place_back() {
        let kept = KeptConnections::new(2);
        // Two requests waiting on a receiver that does not answer hold both places...
        let waiting =
            [kept.begin(&url("https://hole.example/")).unwrap(), kept.begin(&url("https://hole.example/")).unwrap()];
        assert!(kept.begin(&url("https://calm.example/")).is_none());
        // ...only while they wait: given up, their connections are closed.
        drop(waiting);
        let mut calm = kept.begin(&url("https://calm.example/")).unwrap();
        calm.answered(http::Version::HTTP_11);
        drop(calm);
        assert_eq!(kept.state.lock().unwrap().kept, 1, "calm's connection, kept");
        assert!(!kept.state.lock().unwrap().receivers.contains_key("https://hole.example:443"), "nothing of hole left");
    }

    #[test]
    fn over_http2_a_request_given_up_leaves_its_place_taken() {
        let kept = KeptConnections::new(2);
        let mut first = kept.begin(&url("https://h2.example/")).unwrap();
        first.answered(http::Version::HTTP_2);
        drop(first);
        let waiting = kept.begin(&url("https://h2.example/")).unwrap();
        drop(waiting);
        // The connection it was sent on is still open (and kept): its place is still taken.
        assert_eq!(kept.state.lock().unwrap().kept, 1);
    }
}
