//! The floor: a bare HTTP client POSTing the same signed body to the same receiver, so the
//! platform's CPU per delivery can be read as a multiple of the least any sender must spend.

use std::time::Duration;

use futures::StreamExt;
use hookbridge_core::secret::SigningSecret;
use hookbridge_core::signing;

use hookbridge_e2e::proc;

/// CPU per request of signing and POSTing `n` envelopes, `concurrency` at a time, in µs.
pub async fn cpu_us_per_request(receiver_url: &str, n: usize, concurrency: usize) -> anyhow::Result<f64> {
    let client =
        reqwest::Client::builder().pool_max_idle_per_host(concurrency).timeout(Duration::from_secs(10)).build()?;
    let secret = SigningSecret::generate();
    let run = chrono::Utc::now().timestamp_nanos_opt().unwrap_or_default();
    let body = r#"{"version":"0","id":"9b1c2d3e-0000-4000-8000-000000000001","detail-type":"bench.load","source":"bench","account":"000000000000","time":"2026-11-23T10:00:00Z","region":"local","resources":[],"detail":{"tenant":"sat1","n":1}}"#;
    let cpu0 = proc::cpu_time(proc::me())?;
    let results: Vec<anyhow::Result<()>> = futures::stream::iter(0..n)
        .map(|i| {
            let (client, secret) = (&client, &secret);
            async move {
                // Unique across runs, as a platform's would be: the receiver counts an
                // id seen before as a copy.
                let id = format!("msg_{run}_{i}");
                let ts = chrono::Utc::now().timestamp();
                let sig = signing::standard_signature_header([secret], &id, ts, body.as_bytes());
                let r = client
                    .post(receiver_url)
                    .header("content-type", "application/json")
                    .header(signing::HEADER_ID, &id)
                    .header(signing::HEADER_TIMESTAMP, ts)
                    .header(signing::HEADER_SIGNATURE, sig)
                    .body(body)
                    .send()
                    .await?;
                anyhow::ensure!(r.status().is_success(), "receiver answered {}", r.status());
                Ok(())
            }
        })
        .buffer_unordered(concurrency)
        .collect()
        .await;
    results.into_iter().collect::<anyhow::Result<Vec<()>>>()?;
    let cpu = proc::cpu_time(proc::me())? - cpu0;
    Ok(cpu.as_secs_f64() * 1e6 / n as f64)
}

/// The median of `runs` floor measurements: one run swings with the machine's moment as
/// much as the server's figure does, and the ratio between them carries both swings.
pub async fn median_cpu_us(receiver_url: &str, n: usize, concurrency: usize, runs: usize) -> anyhow::Result<f64> {
    let mut each = Vec::with_capacity(runs);
    for _ in 0..runs.max(1) {
        each.push(cpu_us_per_request(receiver_url, n, concurrency).await?);
    }
    each.sort_by(f64::total_cmp);
    Ok(each[each.len() / 2])
}
