//! A fast receiver, run as its own process so its CPU is not counted as the platform's.
//! It answers 200 at once and records, per delivery, the time from the `sent_ns` the load
//! generator put in the event to its arrival. A delivery sent again (the same `webhook-id`,
//! which at-least-once allows) is counted as a duplicate, not as another delivery, so a
//! wait for n deliveries is not ended by copies while one is missing.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use axum::Json;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::HeaderMap;
use axum::routing::{get, post};
use serde_json::{Value, json};

#[derive(Default)]
struct Stats {
    /// Distinct deliveries (by `webhook-id`).
    count: u64,
    /// Requests repeating a `webhook-id` already received: the extra copies.
    duplicates: u64,
    seen: HashSet<String>,
    latencies_ns: Vec<u64>,
    last_arrival_ns: u64,
    arrivals_ns: Vec<u64>,
}

/// Nanoseconds since the Unix epoch (the clock both processes share).
pub fn now_ns() -> u64 {
    chrono::Utc::now().timestamp_nanos_opt().unwrap_or(0) as u64
}

async fn receive(State(s): State<Arc<Mutex<Stats>>>, headers: HeaderMap, body: Bytes) -> &'static str {
    let arrived = now_ns();
    // Only the events of the latency run carry a send time; parse just enough to find it.
    let sent = find_sent_ns(&body);
    let id = headers.get("webhook-id").and_then(|v| v.to_str().ok()).map(str::to_owned);
    let mut st = s.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    // A request without an id (none of ours) is counted as it comes.
    if let Some(id) = id
        && !st.seen.insert(id)
    {
        st.duplicates += 1;
        return "";
    }
    st.count += 1;
    st.last_arrival_ns = arrived;
    st.arrivals_ns.push(arrived);
    if let Some(sent) = sent {
        st.latencies_ns.push(arrived.saturating_sub(sent));
    }
    ""
}

/// As [`receive`], answering `ms` milliseconds late: an endpoint across the internet.
async fn receive_late(
    Path(ms): Path<u64>,
    state: State<Arc<Mutex<Stats>>>,
    headers: HeaderMap,
    body: Bytes,
) -> &'static str {
    tokio::time::sleep(std::time::Duration::from_millis(ms)).await;
    receive(state, headers, body).await
}

fn find_sent_ns(body: &[u8]) -> Option<u64> {
    let text = std::str::from_utf8(body).ok()?;
    let at = text.find("\"sent_ns\":")? + "\"sent_ns\":".len();
    text[at..].split(|c: char| !c.is_ascii_digit()).next()?.parse().ok()
}

async fn stats(State(s): State<Arc<Mutex<Stats>>>) -> Json<Value> {
    let st = s.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    Json(json!({
        "count": st.count,
        "duplicates": st.duplicates,
        "last_arrival_ns": st.last_arrival_ns,
        "latencies_ns": st.latencies_ns,
        "arrivals_ns": st.arrivals_ns,
    }))
}

/// The count alone: what a wait polls, twenty times a second. The full stats grow with
/// every delivery (about a megabyte by the end of a saturation run), and encoding and
/// parsing them at each poll loaded the machine beside the server being measured.
async fn count(State(s): State<Arc<Mutex<Stats>>>) -> Json<Value> {
    let st = s.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    Json(json!({ "count": st.count, "samples": st.latencies_ns.len(), "last_arrival_ns": st.last_arrival_ns }))
}

/// Starts the counts over; the ids seen are kept, so a late copy of an earlier run's
/// delivery is a copy, not a delivery (nor a latency sample) of the next run.
async fn reset(State(s): State<Arc<Mutex<Stats>>>) -> &'static str {
    let mut st = s.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    let seen = std::mem::take(&mut st.seen);
    *st = Stats { seen, ..Stats::default() };
    ""
}

/// Serves until killed.
pub async fn run(listen: SocketAddr) -> anyhow::Result<()> {
    let state = Arc::new(Mutex::new(Stats::default()));
    let app = axum::Router::new()
        .route("/hook", post(receive))
        .route("/hook/late/{ms}", post(receive_late))
        .route("/stats", get(stats))
        .route("/count", get(count))
        .route("/reset", post(reset))
        .with_state(state);
    let listener = tokio::net::TcpListener::bind(listen).await?;
    axum::serve(listener, app).await?;
    Ok(())
}
