//! A replay of 100,000 deliveries on the embedded backend: the events are published while
//! the hook is disabled (so each is recorded `CANCELLED`, nothing sent), the hook is
//! enabled, and one replay job re-sends them all. Times the job (every delivery queued
//! again) and the deliveries (every one received), and the server's peak memory before
//! and after; keeps both counts over time for the plot.

use std::path::Path;
use std::time::{Duration, Instant};

use futures::StreamExt;
use serde_json::{Value, json};

use crate::embedded::{Rig, token};
use hookbridge_e2e::proc;

/// What the replay run measured.
#[derive(Debug, Clone, Default)]
pub struct Figures {
    pub deliveries: u64,
    pub job_secs: f64,
    pub delivered_secs: f64,
    pub peak_rss_before_mb: f64,
    pub peak_rss_after_mb: f64,
    /// The job's `queued` count as it was read (every 100 ms), by seconds since the request.
    pub queued_over_time: Vec<(f64, u64)>,
    /// When each delivery arrived, in seconds since the request, in order.
    pub received_at_secs: Vec<f64>,
}

/// Replays `n` deliveries to a receiver that answers each `delay_ms` late.
pub async fn run(bin_dir: &Path, n: usize, delay_ms: u64) -> anyhow::Result<Figures> {
    let rig = Rig::start(bin_dir).await?;
    let tenant = "replay";
    let t = token(tenant)?;
    let url = if delay_ms == 0 { rig.receiver_url() } else { format!("{}/late/{delay_ms}", rig.receiver_url()) };
    rig.create_hook(tenant, &json!({"name": "later", "url": url, "enabled": false})).await?;
    let hooks = rig.get(&t, "/v1/hooks").await?;
    let id = hooks["hooks"][0]["id"].as_str().unwrap_or_default().to_owned();
    let since = chrono::Utc::now() - chrono::Duration::minutes(1);
    let results: Vec<anyhow::Result<()>> = futures::stream::iter((0..n).step_by(10))
        .map(|from| {
            let t = t.clone();
            let rig = &rig;
            async move {
                let batch: Vec<Value> = (from..from + 10)
                    .map(|i| json!({"detail-type": "bench.replay", "source": "bench", "detail": {"n": i}}))
                    .collect();
                rig.publish(&t, &json!(batch)).await
            }
        })
        .buffer_unordered(8)
        .collect()
        .await;
    results.into_iter().collect::<anyhow::Result<Vec<()>>>()?;
    // Wait until ingest has recorded every one.
    let deadline = Instant::now() + Duration::from_secs(600);
    while rig.count_deliveries(&t, &id).await? < n {
        anyhow::ensure!(Instant::now() < deadline, "ingest did not record {n} deliveries");
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
    let peak_rss_before_mb = rig.peak_rss_mb()?;
    let mut doc = rig.get(&t, &format!("/v1/hooks/{id}")).await?;
    doc["enabled"] = json!(true);
    rig.put(&t, &format!("/v1/hooks/{id}"), &doc).await?;
    rig.reset().await?;

    let start = Instant::now();
    let start_ns = crate::receiver::now_ns();
    let job = rig
        .post(&t, &format!("/v1/hooks/{id}/replay"), &json!({"since": since.to_rfc3339(), "status": "CANCELLED"}))
        .await?;
    let location = format!("/v1/hooks/{id}/replays/{}", job["id"].as_str().unwrap_or_default());
    let mut queued_over_time = Vec::new();
    let job_secs = loop {
        let j = rig.get(&t, &location).await?;
        queued_over_time.push((start.elapsed().as_secs_f64(), j["queued"].as_u64().unwrap_or(0)));
        if j["state"] != "RUNNING" {
            anyhow::ensure!(j["state"] == "SUCCEEDED" && j["queued"] == json!(n), "replay ended as {j}");
            break start.elapsed().as_secs_f64();
        }
        anyhow::ensure!(start.elapsed() < Duration::from_secs(900), "the replay did not finish");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let stats = rig.wait_for(n as u64, Duration::from_secs(900)).await?;
    let delivered_secs = start.elapsed().as_secs_f64();
    let mut received_at_secs: Vec<f64> = stats["arrivals_ns"]
        .as_array()
        .map(|a| a.iter().filter_map(Value::as_u64).map(|ns| ns.saturating_sub(start_ns) as f64 / 1e9).collect())
        .unwrap_or_default();
    received_at_secs.sort_by(f64::total_cmp);
    Ok(Figures {
        deliveries: n as u64,
        job_secs,
        delivered_secs,
        peak_rss_before_mb,
        peak_rss_after_mb: proc::peak_rss(rig.pid())? as f64 / (1024.0 * 1024.0),
        queued_over_time,
        received_at_secs,
    })
}
