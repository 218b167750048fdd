//! A real HTTP receiver on 127.0.0.1 that records what it gets and answers from a script.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use tokio::net::TcpListener;
use tokio::sync::{Notify, watch};

/// One request as the receiver got it.
#[derive(Debug, Clone)]
pub struct Received {
    /// The method.
    pub method: Method,
    /// Path and query.
    pub uri: Uri,
    /// Every header.
    pub headers: HeaderMap,
    /// The body, byte for byte.
    pub body: Bytes,
    /// When it arrived.
    pub at: tokio::time::Instant,
}

impl Received {
    /// A header's value as text.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// The body parsed as JSON.
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or(serde_json::Value::Null)
    }
}

/// How the receiver answers one request.
#[derive(Debug, Clone)]
pub enum Reply {
    /// This status, this body, these headers, after this delay.
    Status {
        /// Status code.
        status: u16,
        /// Response body.
        body: String,
        /// Extra response headers.
        headers: Vec<(String, String)>,
        /// Wait before answering.
        delay: Duration,
    },
    /// Answers the ownership challenge: `{"verification": <value of this header>}`.
    EchoChallenge {
        /// The challenge header.
        header: String,
    },
    /// A receiver that guards every request with a credential header (UniFi's auth header)
    /// and answers the challenge with a key of its own beside the value; `401` to a request
    /// without the credential.
    GuardedChallenge {
        /// The challenge header.
        header: String,
        /// The credential header's name and the value it must have.
        credential: (String, String),
    },
    /// Answers this status with the request's line (method and target, query and all), its
    /// headers (`name: value` lines) and then its body, as echo services and debug endpoints
    /// do: what a receiver repeats of a request's credentials must be redacted from the
    /// attempt's excerpt.
    Echo {
        /// Status code.
        status: u16,
    },
    /// Holds the request open, answering nothing, until the receiver is dropped; then
    /// answers 503. An endpoint that goes dark mid-stream, whose held requests end when the
    /// test does (a delayed [`Reply::Status`] would outlive the receiver).
    Hold,
    /// Another reply, after a delay (for the replies that carry none of their own).
    Delayed(Box<Reply>, Duration),
}

impl Reply {
    /// A plain status with an empty body.
    pub fn status(status: u16) -> Self {
        Self::Status { status, body: String::new(), headers: Vec::new(), delay: Duration::ZERO }
    }

    /// A status with a body.
    pub fn body(status: u16, body: impl Into<String>) -> Self {
        Self::Status { status, body: body.into(), headers: Vec::new(), delay: Duration::ZERO }
    }

    /// Adds a response header.
    pub fn with_header(mut self, name: &str, value: &str) -> Self {
        if let Self::Status { headers, .. } = &mut self {
            headers.push((name.to_owned(), value.to_owned()));
        }
        self
    }

    /// Answers only after `delay`.
    pub fn after(mut self, d: Duration) -> Self {
        if let Self::Status { delay, .. } = &mut self {
            *delay = d;
            return self;
        }
        Self::Delayed(Box::new(self), d)
    }
}

#[derive(Default)]
struct Inner {
    received: Vec<Received>,
    script: VecDeque<Reply>,
    default: Option<Reply>,
}

struct Shared {
    inner: Mutex<Inner>,
    arrived: Notify,
    /// Ends with the receiver: its sender is the receiver's.
    open: watch::Receiver<()>,
}

/// A running receiver. Stops when dropped.
pub struct Receiver {
    addr: SocketAddr,
    shared: Arc<Shared>,
    task: tokio::task::JoinHandle<()>,
    /// Dropped with the receiver, which ends every held request.
    _open: watch::Sender<()>,
}

impl std::fmt::Debug for Receiver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Receiver").field("addr", &self.addr).finish()
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn handle(
    State(shared): State<Arc<Shared>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let reply = {
        let mut inner = shared.inner.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        inner.received.push(Received {
            method: method.clone(),
            uri: uri.clone(),
            headers: headers.clone(),
            body: body.clone(),
            at: tokio::time::Instant::now(),
        });
        inner.script.pop_front().or_else(|| inner.default.clone()).unwrap_or_else(|| Reply::status(200))
    };
    shared.arrived.notify_waiters();
    let mut reply = reply;
    while let Reply::Delayed(inner, delay) = reply {
        tokio::time::sleep(delay).await;
        reply = *inner;
    }
    match reply {
        Reply::Status { status, body, headers: extra, delay } => {
            tokio::time::sleep(delay).await;
            let mut resp =
                (StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR), body).into_response();
            for (k, v) in extra {
                if let (Ok(k), Ok(v)) = (k.parse::<axum::http::HeaderName>(), v.parse()) {
                    resp.headers_mut().insert(k, v);
                }
            }
            resp
        }
        Reply::EchoChallenge { header } => {
            let value = headers.get(&header).and_then(|v| v.to_str().ok()).unwrap_or_default();
            axum::Json(serde_json::json!({ "verification": value })).into_response()
        }
        Reply::GuardedChallenge { header, credential: (name, expected) } => {
            if headers.get(&name).and_then(|v| v.to_str().ok()) != Some(expected.as_str()) {
                return StatusCode::UNAUTHORIZED.into_response();
            }
            let value = headers.get(&header).and_then(|v| v.to_str().ok()).unwrap_or_default();
            axum::Json(serde_json::json!({ "verification": value, "status": "ok" })).into_response()
        }
        Reply::Echo { status } => {
            let mut text = format!("{method} {uri}\n");
            text.extend(headers.iter().map(|(k, v)| format!("{k}: {}\n", String::from_utf8_lossy(v.as_bytes()))));
            text.push('\n');
            text.push_str(&String::from_utf8_lossy(&body));
            (StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR), text).into_response()
        }
        Reply::Hold => {
            // Nothing is ever sent on it: this ends only when the sender is dropped.
            let _ = shared.open.clone().changed().await;
            StatusCode::SERVICE_UNAVAILABLE.into_response()
        }
        // Taken apart above.
        Reply::Delayed(..) => unreachable!("delays are waited out before the match"),
    }
}

impl Receiver {
    /// Starts a receiver on a free port of 127.0.0.1 answering 200 to everything.
    pub async fn start() -> Self {
        Self::start_on("127.0.0.1:0".parse().expect("address")).await
    }

    /// A free port of 127.0.0.1 with nothing listening on it (yet).
    pub fn free_addr() -> SocketAddr {
        std::net::TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).expect("a free port")
    }

    /// Starts a receiver on `addr` (e.g. one a hook already points at).
    pub async fn start_on(addr: SocketAddr) -> Self {
        let listener = TcpListener::bind(addr).await.expect("bind receiver");
        let addr = listener.local_addr().expect("receiver address");
        let (open_tx, open) = watch::channel(());
        let shared = Arc::new(Shared { inner: Mutex::new(Inner::default()), arrived: Notify::new(), open });
        let app = axum::Router::new().fallback(handle).with_state(shared.clone());
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Self { addr, shared, task, _open: open_tx }
    }

    /// `http://127.0.0.1:<port><path>`.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// The address it listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Queues replies for the next requests, in order.
    pub fn script(&self, replies: impl IntoIterator<Item = Reply>) {
        let mut inner = self.shared.inner.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        inner.script.extend(replies);
    }

    /// The reply once the script is used up.
    pub fn always(&self, reply: Reply) {
        let mut inner = self.shared.inner.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        inner.default = Some(reply);
    }

    /// Everything received so far.
    pub fn received(&self) -> Vec<Received> {
        let inner = self.shared.inner.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        inner.received.clone()
    }

    /// When each request arrived, in order.
    pub fn arrivals(&self) -> Vec<tokio::time::Instant> {
        self.received().iter().map(|r| r.at).collect()
    }

    /// Waits until at least `n` requests arrived or `timeout` passed; returns all received.
    pub async fn wait_for(&self, n: usize, timeout: Duration) -> Vec<Received> {
        self.wait_until(timeout, |got| got.len() >= n).await
    }

    /// Waits until a request arrived at each of `paths` or `timeout` passed; returns all
    /// received. Delivery is at least once (SQS can hand one message to two receivers, and
    /// the SDK sends a `PutEvents` again when its answer is late), so a test expecting one
    /// delivery per path waits for the paths, not for a count that a duplicate would reach
    /// early.
    pub async fn wait_for_paths(&self, paths: &[&str], timeout: Duration) -> Vec<Received> {
        self.wait_until(timeout, |got| paths.iter().all(|p| got.iter().any(|g| g.uri.path() == *p))).await
    }

    /// Waits until `done` holds for everything received or `timeout` passed; returns all
    /// received.
    pub async fn wait_until(&self, timeout: Duration, done: impl Fn(&[Received]) -> bool) -> Vec<Received> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let arrived = self.shared.arrived.notified();
            tokio::pin!(arrived);
            arrived.as_mut().enable();
            let got = self.received();
            if done(&got) || tokio::time::Instant::now() >= deadline {
                return got;
            }
            let _ = tokio::time::timeout_at(deadline, arrived).await;
        }
    }
}

/// An endpoint that accepts TCP connections and never answers: the worst a receiver can
/// do, short of being unreachable. Every connection it took is closed when it is dropped.
pub struct BlackHole {
    addr: SocketAddr,
    accepted: Arc<std::sync::atomic::AtomicUsize>,
    first_accepted: Arc<std::sync::OnceLock<tokio::time::Instant>>,
    task: tokio::task::JoinHandle<()>,
}

impl std::fmt::Debug for BlackHole {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BlackHole").field("addr", &self.addr).finish()
    }
}

impl Drop for BlackHole {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl BlackHole {
    /// Starts one on a free port of 127.0.0.1.
    pub async fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind black hole");
        let addr = listener.local_addr().expect("black hole address");
        let accepted = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let first_accepted = Arc::new(std::sync::OnceLock::new());
        let (count, first) = (accepted.clone(), first_accepted.clone());
        let task = tokio::spawn(async move {
            // Held, never read or written, until the task is aborted.
            let mut held = Vec::new();
            while let Ok((stream, _)) = listener.accept().await {
                first.get_or_init(tokio::time::Instant::now);
                count.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                held.push(stream);
            }
        });
        Self { addr, accepted, first_accepted, task }
    }

    /// `http://127.0.0.1:<port><path>`.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// How many connections it has taken.
    pub fn accepted(&self) -> usize {
        self.accepted.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// When it took its first connection: no request to it can have run out a timeout of
    /// `t` before this plus `t`.
    pub fn first_accepted_at(&self) -> Option<tokio::time::Instant> {
        self.first_accepted.get().copied()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_held_request_is_answered_only_when_its_receiver_is_dropped() {
        let r = Receiver::start().await;
        r.script([Reply::status(204)]);
        r.always(Reply::Hold);
        let client = reqwest::Client::new();
        let first = client.post(r.url("/a")).send().await.expect("first request");
        assert_eq!(first.status(), 204, "the script comes first");

        let held = tokio::spawn(client.post(r.url("/b")).send());
        assert_eq!(r.wait_for(2, Duration::from_secs(10)).await.len(), 2, "the held request arrived");
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert!(!held.is_finished(), "a held request was answered while its receiver ran");

        drop(r);
        let answer = tokio::time::timeout(Duration::from_secs(10), held).await;
        let answer = answer.expect("held past the drop").expect("task").expect("an answer");
        assert_eq!(answer.status(), 503);
    }
}
