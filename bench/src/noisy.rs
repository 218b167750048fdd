//! Noisy neighbour: a healthy tenant's latency alone, beside another tenant flooding a hook
//! whose endpoint accepts connections and never answers (the scenario Svix stalls on), and
//! beside several tenants each flooding a hook that answers, slowly; and a rate-limited
//! hook's measured rate.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use futures::StreamExt;
use serde_json::{Value, json};

use crate::embedded::{Rig, quantile, token};
use crate::receiver::now_ns;

/// What a flooding tenant's hook does with a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Endpoint {
    /// Accepts the connection and never answers.
    BlackHole,
    /// Answers `200` this long after the request came.
    Slow(Duration),
}

/// The flood a healthy tenant is measured beside: `tenants` tenants, each publishing
/// `events` events at once to `hooks` hooks of its own (each event to every one of them),
/// on an endpoint of its own.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Flood {
    pub events: usize,
    pub tenants: usize,
    pub hooks: usize,
    pub endpoint: Endpoint,
}

impl Flood {
    /// No flood: the healthy tenant alone.
    pub const NONE: Flood = Flood { events: 0, tenants: 0, hooks: 1, endpoint: Endpoint::BlackHole };

    /// One tenant flooding a black hole with `events` events.
    pub fn black_hole(events: usize) -> Self {
        Self { events, tenants: 1, hooks: 1, endpoint: Endpoint::BlackHole }
    }

    /// One tenant with `hooks` hooks on a black hole, `events` events for each: many hooks
    /// with a few requests each rather than one with many (decision 0039).
    pub fn many_hooks(hooks: usize, events: usize) -> Self {
        Self { events, tenants: 1, hooks, endpoint: Endpoint::BlackHole }
    }
}

/// One healthy tenant's latencies, next to a flood (or alone).
#[derive(Debug, Clone)]
pub struct Figures {
    pub flood: Flood,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
    pub healthy_events: usize,
    pub delivered: usize,
    pub flood_seconds: f64,
}

/// The healthy tenant publishes one event every 50 ms, as in Svix's run.
const CALM_EVERY: Duration = Duration::from_millis(50);
/// And keeps publishing this long after the flood was published: past the flood's first
/// attempts timing out (the default request timeout, 10 s) and being recorded, and past
/// its first retries timing out too. Stopped at 5 s, the healthy tenant's last event was
/// published before the flood's first failure, so the busiest phase was never measured.
const AFTER_FLOOD: Duration = Duration::from_secs(30);

/// An endpoint that accepts TCP connections and never answers.
async fn black_hole() -> anyhow::Result<(String, tokio::task::JoinHandle<()>)> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let url = format!("http://{}/", listener.local_addr()?);
    let task = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((stream, _)) = listener.accept().await {
            held.push(stream);
        }
    });
    Ok((url, task))
}

/// An endpoint that answers `200` to every request `after` it came.
async fn slow(after: Duration) -> anyhow::Result<(String, tokio::task::JoinHandle<()>)> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let url = format!("http://{}/", listener.local_addr()?);
    let app = axum::Router::new().fallback(move || async move {
        tokio::time::sleep(after).await;
        "ok"
    });
    let task = tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    Ok((url, task))
}

/// `events` events published by `tenant`, ten per call, four calls at a time.
async fn publish_flood(rig: Arc<Rig>, tenant: String, events: usize) -> anyhow::Result<()> {
    let noisy = token(&tenant)?;
    futures::stream::iter(0..events.div_ceil(10))
        .map(|c| {
            let (rig, noisy) = (rig.clone(), noisy.clone());
            async move {
                let batch: Vec<Value> = (0..10)
                    .map(|i| json!({"detail-type": "bench.flood", "source": "bench", "detail": {"n": c * 10 + i}}))
                    .collect();
                rig.publish(&noisy, &json!(batch)).await
            }
        })
        .buffer_unordered(4)
        .collect::<Vec<_>>()
        .await
        .into_iter()
        .collect::<anyhow::Result<Vec<()>>>()
        .map(|_| ())
}

async fn scenario(bin_dir: &Path, flood: Flood) -> anyhow::Result<Figures> {
    let rig = Arc::new(Rig::start(bin_dir).await?);
    rig.create_hook("calm", &json!({"name": "fine", "url": rig.receiver_url()})).await?;
    let mut endpoints = Vec::new();
    for t in 0..flood.tenants {
        let (url, task) = match flood.endpoint {
            Endpoint::BlackHole => black_hole().await?,
            Endpoint::Slow(after) => slow(after).await?,
        };
        for h in 0..flood.hooks {
            rig.create_hook(&format!("noisy{t}"), &json!({"name": format!("struggling{h}"), "url": url})).await?;
        }
        endpoints.push(task);
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    rig.reset().await?;
    let calm = token("calm")?;
    let flood_done = Arc::new(AtomicBool::new(flood.events == 0));

    let started = Instant::now();
    let flooding = {
        let (rig, done) = (rig.clone(), flood_done.clone());
        tokio::spawn(async move {
            let tenants = (0..flood.tenants).map(|t| publish_flood(rig.clone(), format!("noisy{t}"), flood.events));
            let r = futures::future::try_join_all(tenants).await;
            done.store(true, Ordering::Relaxed);
            r.map(|_| started.elapsed())
        })
    };
    // The healthy tenant: one event every 50 ms, at least 200, until a while after the
    // flood was published.
    let mut sent = 0usize;
    let mut tick = tokio::time::interval(CALM_EVERY);
    let mut done_at: Option<Instant> = None;
    let mut publishing = Vec::new();
    loop {
        tick.tick().await;
        if done_at.is_none() && flood_done.load(Ordering::Relaxed) {
            done_at = Some(Instant::now());
        }
        if sent >= 200 && done_at.is_some_and(|d| d.elapsed() >= AFTER_FLOOD) {
            break;
        }
        let (rig, calm) = (rig.clone(), calm.clone());
        let ev = json!({"detail-type": "bench.calm", "source": "bench", "detail": {"sent_ns": now_ns(), "n": sent}});
        publishing.push(tokio::spawn(async move { rig.publish(&calm, &ev).await }));
        sent += 1;
    }
    for p in publishing {
        p.await??;
    }
    let flood_took = flooding.await??;
    let stats = rig.wait_for(sent as u64, Duration::from_secs(120)).await?;
    let mut ms: Vec<f64> = stats["latencies_ns"]
        .as_array()
        .map(|a| a.iter().filter_map(Value::as_u64).map(|ns| ns as f64 / 1e6).collect())
        .unwrap_or_default();
    ms.sort_by(f64::total_cmp);
    endpoints.iter().for_each(tokio::task::JoinHandle::abort);
    Ok(Figures {
        flood,
        p50_ms: quantile(&ms, 0.50),
        p99_ms: quantile(&ms, 0.99),
        max_ms: ms.last().copied().unwrap_or(f64::NAN),
        healthy_events: sent,
        delivered: ms.len(),
        flood_seconds: flood_took.as_secs_f64(),
    })
}

/// The healthy tenant alone, then beside each flood; a fresh platform for each.
pub async fn run(bin_dir: &Path, floods: &[Flood]) -> anyhow::Result<Vec<Figures>> {
    let mut out = vec![scenario(bin_dir, Flood::NONE).await?];
    for &f in floods {
        eprintln!("bench: noisy neighbour, {}", f.label());
        out.push(scenario(bin_dir, f).await?);
    }
    Ok(out)
}

impl Flood {
    /// What the report calls it.
    pub fn label(&self) -> String {
        let to = match self.endpoint {
            Endpoint::BlackHole if self.tenants == 1 => "a black hole".to_owned(),
            Endpoint::BlackHole => "black holes".to_owned(),
            Endpoint::Slow(after) if self.tenants == 1 => format!("a hook answering in {} s", after.as_secs_f64()),
            Endpoint::Slow(after) => format!("hooks answering in {} s", after.as_secs_f64()),
        };
        match self.tenants {
            0 => "none (alone)".to_owned(),
            1 if self.hooks > 1 => format!("{} events to each of {} hooks on {to}", thousands(self.events), self.hooks),
            1 => format!("{} events to {to}", thousands(self.events)),
            n => format!("{n} tenants × {} events to {to}", thousands(self.events)),
        }
    }
}

fn thousands(n: usize) -> String {
    let digits = n.to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// A rate-limited hook's measured rate.
#[derive(Debug, Clone)]
pub struct RateFigures {
    pub limit: u32,
    pub events: usize,
    /// Deliveries a second over each whole 10 s window, lowest and highest.
    pub per_10s: (f64, f64),
    /// The most deliveries that arrived within any one second.
    pub max_in_1s: usize,
}

/// Publishes `events` at once to a hook limited to `limit` a second and reads the arrival times.
pub async fn rate_limit(bin_dir: &Path, limit: u32, events: usize) -> anyhow::Result<RateFigures> {
    let rig = Rig::start(bin_dir).await?;
    rig.create_hook("paced", &json!({"name": "paced", "url": rig.receiver_url(), "rate_limit": {"per_second": limit}}))
        .await?;
    tokio::time::sleep(Duration::from_millis(500)).await;
    rig.reset().await?;
    let t = token("paced")?;
    for c in 0..events.div_ceil(10) {
        let batch: Vec<Value> = (0..10)
            .map(|i| json!({"detail-type": "bench.paced", "source": "bench", "detail": {"n": c * 10 + i}}))
            .collect();
        rig.publish(&t, &json!(batch)).await?;
    }
    let timeout = Duration::from_secs(events as u64 / u64::from(limit) + 60);
    let stats = rig.wait_for(events as u64, timeout).await?;
    let mut at: Vec<u64> =
        stats["arrivals_ns"].as_array().map(|a| a.iter().filter_map(Value::as_u64).collect()).unwrap_or_default();
    at.sort_unstable();
    let second = 1_000_000_000u64;
    let max_in_1s =
        (0..at.len()).map(|i| at[i..].iter().take_while(|t| **t < at[i] + second).count()).max().unwrap_or(0);
    let mut windows = Vec::new();
    let mut start = at.first().copied().unwrap_or(0);
    while start + 10 * second <= at.last().copied().unwrap_or(0) {
        let n = at.iter().filter(|t| **t >= start && **t < start + 10 * second).count();
        windows.push(n as f64 / 10.0);
        start += 10 * second;
    }
    let lo = windows.iter().copied().fold(f64::INFINITY, f64::min);
    let hi = windows.iter().copied().fold(0.0, f64::max);
    Ok(RateFigures { limit, events, per_10s: (lo, hi), max_in_1s })
}
