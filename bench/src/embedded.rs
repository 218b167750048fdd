//! The embedded backend end to end: `hookbridge serve` and a receiver, each in its own
//! process, and a load generator publishing through the API.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use futures::StreamExt;
use serde_json::{Value, json};
use subscription_api::{Claims, JwtKey, mint_token};

use crate::receiver::now_ns;
use hookbridge_e2e::proc;

/// The running processes.
pub struct Rig {
    serve: Child,
    receiver: Child,
    api: String,
    recv: String,
    http: reqwest::Client,
    _dir: tempfile::TempDir,
}

impl Drop for Rig {
    fn drop(&mut self) {
        let _ = self.serve.kill();
        let _ = self.receiver.kill();
        let _ = self.serve.wait();
        let _ = self.receiver.wait();
    }
}

/// Two ports free now and different from each other: both listeners are held until both
/// are known (one after the other, the second could be the first again).
fn two_free_ports() -> anyhow::Result<(u16, u16)> {
    let a = std::net::TcpListener::bind("127.0.0.1:0")?;
    let b = std::net::TcpListener::bind("127.0.0.1:0")?;
    Ok((a.local_addr()?.port(), b.local_addr()?.port()))
}

pub fn token(tenant: &str) -> anyhow::Result<String> {
    let claims = Claims {
        sub: "bench".into(),
        tenant: tenant.into(),
        scope: "hooks:read hooks:write events:publish".into(),
        exp: u64::MAX / 2,
    };
    Ok(mint_token(&JwtKey::new(hookbridge_core::settings::LOCAL_DEV_SECRET), &claims)?)
}

/// One steady-rate run.
pub struct Latency {
    /// Publish → receive, in milliseconds, sorted.
    pub received: Vec<f64>,
    /// Publish → the API's `202`, in milliseconds, sorted: the API's share of the above
    /// (it answers once the event's delivery is queued: the embedded backend routes it in
    /// the request).
    pub answered: Vec<f64>,
    /// KiB the server wrote per delivery.
    pub kib_written: f64,
    /// Deliveries received more than once.
    pub duplicates: u64,
}

/// What one saturation run measured.
#[derive(Debug, Clone, Copy)]
pub struct Saturation {
    /// Deliveries per second, from the first publish to the last arrival.
    pub per_second: f64,
    /// The server's CPU per delivery, in µs.
    pub cpu_us: f64,
    pub deliveries: u64,
    /// The server's context switches per delivery.
    pub switches: f64,
    /// Deliveries received more than once.
    pub duplicates: u64,
}

/// What the embedded run measured.
#[derive(Debug, Clone, Default)]
pub struct Figures {
    pub saturation_1: f64,
    pub saturation_10: f64,
    pub p50_ms: f64,
    pub p95_ms: f64,
    pub p99_ms: f64,
    pub latency_events: usize,
    /// Publish → receive latencies at 200 and 1,000 events a second, sorted (ms).
    pub latency_200: Vec<f64>,
    pub latency_1000: Vec<f64>,
    /// Publish → `202` at 200 and 1,000 events a second (ms, sorted).
    pub answered_200: Vec<f64>,
    pub answered_1000: Vec<f64>,
    /// CPU per delivery publishing to one hook: one event, one delivery, as the floor and
    /// Svix's figure are.
    pub cpu_us_per_delivery: f64,
    /// CPU per delivery publishing to ten hooks: publishing and routing each event are
    /// shared by its ten deliveries.
    pub cpu_us_fanout_10: f64,
    /// Extra copies of deliveries (a `webhook-id` received again) in these runs, up to
    /// the last awaited arrival; each delivery is counted once in every other figure.
    pub duplicates: u64,
    /// The server's threads' context switches per delivery in the one-hook saturation run: the
    /// hand-offs between threads that the CPU figure pays for.
    pub context_switches_per_delivery: f64,
    /// KiB `hookbridge serve` wrote per delivery at 200 and 1,000 events a second: SQLite's
    /// log, mostly (the HTTP answers and requests and the log lines are a few KiB of it).
    pub kib_written_per_delivery: (f64, f64),
    pub peak_rss_mb: f64,
    pub deliveries_measured: u64,
}

/// Where `hookbridge serve`'s log goes: nowhere, unless `HOOKBRIDGE_BENCH_SERVE_LOG` names
/// a file (appended to), for finding out why a run went slow.
fn serve_log() -> anyhow::Result<Stdio> {
    Ok(match std::env::var_os("HOOKBRIDGE_BENCH_SERVE_LOG") {
        Some(path) => std::fs::OpenOptions::new().create(true).append(true).open(path)?.into(),
        None => Stdio::null(),
    })
}

impl Rig {
    /// Starts `bin_dir/hookbridge serve` on a fresh database and a receiver process.
    pub async fn start(bin_dir: &Path) -> anyhow::Result<Self> {
        let dir = tempfile::tempdir()?;
        let (api_port, recv_port) = two_free_ports()?;
        let receiver = Command::new(std::env::current_exe()?)
            .args(["receiver", "--listen", &format!("127.0.0.1:{recv_port}")])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()?;
        let serve = Command::new(bin_dir.join("hookbridge"))
            .args(["serve", "--listen", &format!("127.0.0.1:{api_port}")])
            .arg("--database")
            .arg(dir.path().join("hb.db"))
            .env("RUST_LOG", "info")
            // The runs measure delivery, not the publish limiter: its default (1,000 events
            // a second per tenant) would throttle the load generator.
            .env("HOOKBRIDGE_TENANT_PUBLISH_RATE", "1000000")
            .env("HOOKBRIDGE_TENANT_PUBLISH_BURST", "1000000")
            .stdout(Stdio::null())
            .stderr(serve_log()?)
            .spawn()?;
        let mut rig = Self {
            serve,
            receiver,
            api: format!("http://127.0.0.1:{api_port}"),
            recv: format!("http://127.0.0.1:{recv_port}"),
            http: reqwest::Client::builder().pool_max_idle_per_host(64).build()?,
            _dir: dir,
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        while rig.http.get(format!("{}/v1/health", rig.api)).send().await.is_err()
            || rig.http.get(format!("{}/stats", rig.recv)).send().await.is_err()
        {
            // A port taken by someone else in the meantime: said at once, not as a strange
            // answer to the first request.
            if let Some(status) = rig.serve.try_wait()? {
                anyhow::bail!("hookbridge serve exited at start ({status}); set HOOKBRIDGE_BENCH_SERVE_LOG to see why");
            }
            anyhow::ensure!(Instant::now() < deadline, "hookbridge serve or the receiver did not start");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Ok(rig)
    }

    /// The receiver's URL for hooks.
    pub fn receiver_url(&self) -> String {
        format!("{}/hook", self.recv)
    }

    pub async fn stats(&self) -> anyhow::Result<Value> {
        Ok(self.http.get(format!("{}/stats", self.recv)).send().await?.json().await?)
    }

    pub async fn reset(&self) -> anyhow::Result<()> {
        self.http.post(format!("{}/reset", self.recv)).send().await?;
        Ok(())
    }

    /// Creates a hook for `tenant` from `hook` (a JSON object).
    pub async fn create_hook(&self, tenant: &str, hook: &Value) -> anyhow::Result<()> {
        let r = self.http.post(format!("{}/v1/hooks", self.api)).bearer_auth(token(tenant)?).json(hook).send().await?;
        let status = r.status();
        anyhow::ensure!(status == 201, "create hook: {status} {}", r.text().await?);
        Ok(())
    }

    /// Publishes `events` (an event or an array) for `tenant`, waiting out any `429`, so
    /// nothing the load generator means to send is dropped.
    pub async fn publish(&self, tenant_token: &str, events: &Value) -> anyhow::Result<()> {
        loop {
            let r =
                self.http.post(format!("{}/v1/events", self.api)).bearer_auth(tenant_token).json(events).send().await?;
            match r.status().as_u16() {
                202 => return Ok(()),
                429 => {
                    let wait = r
                        .headers()
                        .get("retry-after")
                        .and_then(|v| v.to_str().ok())
                        .and_then(|v| v.parse().ok())
                        .unwrap_or(1);
                    tokio::time::sleep(Duration::from_secs(wait)).await;
                }
                other => anyhow::bail!("publish answered {other}: {}", r.text().await?),
            }
        }
    }

    async fn create_hooks(&self, tenant: &str, n: usize) -> anyhow::Result<()> {
        let t = token(tenant)?;
        for i in 0..n {
            let r = self
                .http
                .post(format!("{}/v1/hooks", self.api))
                .bearer_auth(&t)
                .json(&json!({"name": format!("h{i}"), "url": self.receiver_url()}))
                .send()
                .await?;
            let status = r.status();
            anyhow::ensure!(status == 201, "create hook: {status} {}", r.text().await?);
        }
        Ok(())
    }

    /// Waits until the receiver has had `n` distinct deliveries; returns its full stats.
    pub async fn wait_for(&self, n: u64, timeout: Duration) -> anyhow::Result<Value> {
        self.wait_for_count("count", n, timeout).await
    }

    /// Waits until the receiver's `field` of `/count` (`count`: distinct deliveries;
    /// `samples`: those carrying a send time) reaches `n`; returns its full stats.
    async fn wait_for_count(&self, field: &str, n: u64, timeout: Duration) -> anyhow::Result<Value> {
        let deadline = Instant::now() + timeout;
        loop {
            let s: Value = self.http.get(format!("{}/count", self.recv)).send().await?.json().await?;
            if s[field].as_u64().unwrap_or(0) >= n {
                return self.stats().await;
            }
            anyhow::ensure!(Instant::now() < deadline, "only {} of {n} deliveries arrived ({field})", s[field]);
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Publishes `events` events (ten per call, a few calls in flight) to a tenant with
    /// `hooks` hooks.
    pub async fn saturation(&self, hooks: usize, events: usize) -> anyhow::Result<Saturation> {
        let tenant = format!("sat{hooks}");
        self.create_hooks(&tenant, hooks).await?;
        // Let the verifier finish with the new hooks before measuring.
        tokio::time::sleep(Duration::from_millis(500)).await;
        self.reset().await?;
        let t = token(&tenant)?;
        let pid = self.serve.id();
        let cpu0 = proc::cpu_time(pid)?;
        let switches0 = proc::context_switches(pid)?;
        let start = now_ns();
        let calls = events.div_ceil(10);
        self.flood(&t, calls).await?;
        let expected = (calls * 10 * hooks) as u64;
        let s = self.wait_for(expected, Duration::from_secs(300)).await?;
        // Let the last batch's attempts be recorded before reading the CPU counter.
        tokio::time::sleep(Duration::from_millis(300)).await;
        let cpu = proc::cpu_time(pid)? - cpu0;
        let switches = proc::context_switches(pid)?.saturating_sub(switches0);
        let elapsed_ns = s["last_arrival_ns"].as_u64().unwrap_or(start).saturating_sub(start).max(1);
        let rate = expected as f64 / (elapsed_ns as f64 / 1e9);
        Ok(Saturation {
            per_second: rate,
            cpu_us: cpu.as_secs_f64() * 1e6 / expected as f64,
            deliveries: expected,
            switches: switches as f64 / expected as f64,
            duplicates: s["duplicates"].as_u64().unwrap_or(0),
        })
    }

    /// Publishes `calls` calls of ten events each, four calls in flight.
    async fn flood(&self, token: &str, calls: usize) -> anyhow::Result<()> {
        let results: Vec<anyhow::Result<()>> = futures::stream::iter(0..calls)
            .map(|c| async move {
                let batch: Vec<Value> = (0..10)
                    .map(|i| json!({"detail-type": "bench.load", "source": "bench", "detail": {"n": c * 10 + i}}))
                    .collect();
                let r =
                    self.http.post(format!("{}/v1/events", self.api)).bearer_auth(token).json(&batch).send().await?;
                anyhow::ensure!(r.status() == 202, "publish: {}", r.status());
                Ok(())
            })
            .buffer_unordered(4)
            .collect()
            .await;
        results.into_iter().collect::<anyhow::Result<Vec<()>>>()?;
        Ok(())
    }

    /// The server's CPU per event, in µs, for `events` published as the saturation run
    /// publishes them to a tenant with no hooks: publishing and ingest (the event routed to
    /// nobody) without any delivery, the share of a delivery's CPU spent before it is queued.
    pub async fn unrouted(&self, events: usize) -> anyhow::Result<f64> {
        let t = token("unrouted")?;
        let pid = self.serve.id();
        let cpu0 = proc::cpu_time(pid)?;
        self.flood(&t, events.div_ceil(10)).await?;
        // Ingest is done when the server goes quiet: no route to wait for at a receiver.
        let mut last = proc::cpu_time(pid)?;
        loop {
            tokio::time::sleep(Duration::from_millis(300)).await;
            let now = proc::cpu_time(pid)?;
            if now - last < Duration::from_millis(5) {
                return Ok((last - cpu0).as_secs_f64() * 1e6 / (events.div_ceil(10) * 10) as f64);
            }
            last = now;
        }
    }

    /// Publishes one event at a time at `rate` per second for `seconds`.
    pub async fn latency(&self, rate: u32, seconds: u32) -> anyhow::Result<Latency> {
        // A tenant of its own per run: one hook, so one delivery per event.
        let tenant = format!("latency-{rate}");
        let tenant = tenant.as_str();
        self.create_hooks(tenant, 1).await?;
        tokio::time::sleep(Duration::from_millis(500)).await;
        self.reset().await?;
        let t = token(tenant)?;
        let total = (rate * seconds) as usize;
        let written0 = proc::bytes_written(self.serve.id())?;
        let mut tick = tokio::time::interval(Duration::from_secs_f64(1.0 / f64::from(rate)));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
        let mut inflight = Vec::with_capacity(total);
        for n in 0..total {
            tick.tick().await;
            let (http, api, t) = (self.http.clone(), self.api.clone(), t.clone());
            inflight.push(tokio::spawn(async move {
                let sent = now_ns();
                let ev =
                    json!({"detail-type": "bench.latency", "source": "bench", "detail": {"sent_ns": sent, "n": n}});
                let status =
                    http.post(format!("{api}/v1/events")).bearer_auth(&t).json(&ev).send().await?.status().as_u16();
                anyhow::Ok((status, now_ns().saturating_sub(sent) as f64 / 1e6))
            }));
        }
        let mut answered = Vec::with_capacity(total);
        for f in inflight {
            let (status, ms) = f.await??;
            anyhow::ensure!(status == 202, "publish answered {status}");
            answered.push(ms);
        }
        answered.sort_by(f64::total_cmp);
        // Waited for by samples: a stray copy of an earlier run's delivery is no sample
        // (the receiver keeps the ids it saw across resets).
        let s = self.wait_for_count("samples", total as u64, Duration::from_secs(120)).await?;
        // Let the last attempts be recorded and their messages deleted.
        tokio::time::sleep(Duration::from_millis(300)).await;
        let written = proc::bytes_written(self.serve.id())?.saturating_sub(written0);
        let mut ms: Vec<f64> = s["latencies_ns"]
            .as_array()
            .map(|a| a.iter().filter_map(Value::as_u64).map(|ns| ns as f64 / 1e6).collect())
            .unwrap_or_default();
        // Every event's first arrival, no more and no fewer: a missing one would cut the
        // tail short.
        anyhow::ensure!(ms.len() == total, "{} latency samples for {total} events", ms.len());
        ms.sort_by(f64::total_cmp);
        Ok(Latency {
            received: ms,
            answered,
            kib_written: written as f64 / 1024.0 / total as f64,
            duplicates: s["duplicates"].as_u64().unwrap_or(0),
        })
    }

    /// `GET` an API path as `tenant_token`.
    pub async fn get(&self, tenant_token: &str, path: &str) -> anyhow::Result<Value> {
        let r = self.http.get(format!("{}{path}", self.api)).bearer_auth(tenant_token).send().await?;
        anyhow::ensure!(r.status() == 200, "GET {path}: {}", r.text().await?);
        Ok(r.json().await?)
    }

    /// `POST` to an API path; the answer's body (any 2xx).
    pub async fn post(&self, tenant_token: &str, path: &str, body: &Value) -> anyhow::Result<Value> {
        let r = self.http.post(format!("{}{path}", self.api)).bearer_auth(tenant_token).json(body).send().await?;
        anyhow::ensure!(r.status().is_success(), "POST {path}: {}", r.text().await?);
        Ok(r.json().await?)
    }

    /// `PUT` to an API path.
    pub async fn put(&self, tenant_token: &str, path: &str, body: &Value) -> anyhow::Result<()> {
        let r = self.http.put(format!("{}{path}", self.api)).bearer_auth(tenant_token).json(body).send().await?;
        anyhow::ensure!(r.status() == 200, "PUT {path}: {}", r.text().await?);
        Ok(())
    }

    /// How many deliveries a hook has in the last 24 hours.
    pub async fn count_deliveries(&self, tenant_token: &str, hook_id: &str) -> anyhow::Result<usize> {
        let mut n = 0;
        let mut cursor = String::new();
        loop {
            let page = self.get(tenant_token, &format!("/v1/hooks/{hook_id}/events?limit=500{cursor}")).await?;
            n += page["deliveries"].as_array().map_or(0, Vec::len);
            match page["next_cursor"].as_str() {
                Some(c) => cursor = format!("&cursor={c}"),
                None => return Ok(n),
            }
        }
    }

    /// The server's process id.
    pub fn pid(&self) -> u32 {
        self.serve.id()
    }

    /// Peak resident memory of `hookbridge serve`, in MiB.
    pub fn peak_rss_mb(&self) -> anyhow::Result<f64> {
        Ok(proc::peak_rss(self.serve.id())? as f64 / (1024.0 * 1024.0))
    }
}

/// The `q`-quantile of sorted values.
pub fn quantile(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((sorted.len() as f64 - 1.0) * q).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

/// Runs every embedded scenario.
pub async fn run(bin_dir: &Path, quick: bool) -> anyhow::Result<Figures> {
    let rig = Rig::start(bin_dir).await?;
    let n = if quick { 2_000 } else { 20_000 };
    let one = rig.saturation(1, n).await?;
    let ten = rig.saturation(10, n / 10).await?;
    let at_200 = rig.latency(200, if quick { 3 } else { 10 }).await?;
    let at_1000 = rig.latency(1_000, if quick { 2 } else { 10 }).await?;
    let (lat, lat_1000) = (at_200.received, at_1000.received);
    Ok(Figures {
        saturation_1: one.per_second,
        saturation_10: ten.per_second,
        p50_ms: quantile(&lat, 0.50),
        p95_ms: quantile(&lat, 0.95),
        p99_ms: quantile(&lat, 0.99),
        latency_200: lat.clone(),
        latency_events: lat.len() + lat_1000.len(),
        latency_1000: lat_1000,
        cpu_us_per_delivery: one.cpu_us,
        cpu_us_fanout_10: ten.cpu_us,
        duplicates: one.duplicates + ten.duplicates + at_200.duplicates + at_1000.duplicates,
        context_switches_per_delivery: one.switches,
        kib_written_per_delivery: (at_200.kib_written, at_1000.kib_written),
        answered_200: at_200.answered,
        answered_1000: at_1000.answered,
        peak_rss_mb: rig.peak_rss_mb()?,
        deliveries_measured: one.deliveries + ten.deliveries,
    })
}
