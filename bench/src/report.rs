//! The results table, written between markers in BENCHMARKS.md (the rest of the file is
//! prose kept by hand).

use std::collections::BTreeSet;
use std::fmt::Write as _;
use std::path::Path;

use crate::{aws, embedded, fanout, noisy, startup};

const START: &str = "<!-- results:start -->";
const END: &str = "<!-- results:end -->";

/// Everything one run measured; `None` where a part was skipped.
#[derive(Debug, Default)]
pub struct Results {
    pub embedded: Option<embedded::Figures>,
    pub floor_cpu_us: Option<f64>,
    pub aws: Option<aws::Figures>,
    pub fanout: Vec<(&'static str, fanout::Figures)>,
    pub binaries: Vec<startup::Binary>,
    pub noisy: Vec<noisy::Figures>,
    pub rate: Option<noisy::RateFigures>,
    pub retention: Option<crate::retention::Figures>,
    pub replay: Option<crate::replay::Figures>,
    /// A replay to a receiver answering late, and how late (ms).
    pub replay_late: Option<(u64, crate::replay::Figures)>,
}

/// Where the Svix figures come from.
const SVIX: &str = "Svix 1.100.0 with Postgres 15 and Redis 7 on the same kind of machine, measured 2026-11-30";

fn machine() -> String {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|c| {
            c.lines()
                .find_map(|l| l.strip_prefix("model name").map(|v| v.trim_start_matches([' ', '\t', ':']).to_owned()))
        })
        .unwrap_or_else(|| "unknown CPU".into());
    let cores = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0);
    let mem = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| m.lines().find_map(|l| l.strip_prefix("MemTotal:").map(|v| v.trim().to_owned())))
        .unwrap_or_default();
    format!("{cores} cores ({cpu}), {mem} memory")
}

fn commit() -> String {
    std::process::Command::new("git")
        .args(["rev-parse", "--short", "HEAD"])
        .output()
        .ok()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        .unwrap_or_else(|| "unknown".into())
}

fn mb(bytes: u64) -> String {
    format!("{:.1} MB", bytes as f64 / 1e6)
}

/// The markdown of the results.
pub fn render(r: &Results) -> String {
    let mut s = String::new();
    let _ = writeln!(s, "{START}");
    let _ = writeln!(s, "## Latest results\n");
    let _ = writeln!(
        s,
        "Machine: {}. Commit `{}`, {}, `make bench`.\n",
        machine(),
        commit(),
        chrono::Utc::now().format("%Y-%m-%d %H:%M UTC")
    );
    if let Some(e) = &r.embedded {
        let _ = writeln!(s, "### Embedded backend, end to end\n");
        let _ = writeln!(
            s,
            "`hookbridge serve` (release) with the tenant publish limit lifted, so the load generator, not the limiter, sets the pace.\n"
        );
        let _ = writeln!(s, "| figure | Hookbridge | target | Svix |\n| --- | --- | --- | --- |");
        let _ = writeln!(s, "| deliveries/s at saturation, 1 hook | {:.0} | ≥ 2,000 | 779 |", e.saturation_1);
        let _ = writeln!(s, "| deliveries/s at saturation, 10 hooks | {:.0} | | |", e.saturation_10);
        let _ = writeln!(
            s,
            "| publish → receive at 200 events/s, p50 / p95 / p99 | {:.1} / {:.1} / {:.1} ms | p99 ≤ 3 ms | 2.4 / – / 6.0 ms |",
            e.p50_ms, e.p95_ms, e.p99_ms
        );
        let q = |p| embedded::quantile(&e.latency_1000, p);
        let _ = writeln!(
            s,
            "| publish → receive at 1,000 events/s, p50 / p95 / p99 | {:.1} / {:.1} / {:.1} ms | | |",
            q(0.50),
            q(0.95),
            q(0.99)
        );
        for (rate, answered) in [("200", &e.answered_200), ("1,000", &e.answered_1000)] {
            let a = |p| embedded::quantile(answered, p);
            let _ = writeln!(
                s,
                "| publish → `202` at {rate} events/s, p50 / p95 / p99 | {:.1} / {:.1} / {:.1} ms | | |",
                a(0.50),
                a(0.95),
                a(0.99)
            );
        }
        let _ = writeln!(
            s,
            "| CPU per delivery, `hookbridge serve` (SQLite included), 1 hook | {:.0} µs | ≤ 250 µs | 2,365 µs (svix + Postgres + Redis) |",
            e.cpu_us_per_delivery
        );
        let _ = writeln!(
            s,
            "| CPU per delivery, one event to 10 hooks (publishing and routing shared) | {:.0} µs | | |",
            e.cpu_us_fanout_10
        );
        if let Some(f) = r.floor_cpu_us {
            let _ = writeln!(
                s,
                "| the floor: a bare client signing and POSTing the same body | {f:.0} µs | | |\n| Hookbridge ÷ floor | {:.1}× | | |",
                e.cpu_us_per_delivery / f
            );
        }
        let _ = writeln!(
            s,
            "| context switches per delivery, threads of `hookbridge serve`, 1 hook | {:.1} | | |",
            e.context_switches_per_delivery
        );
        let _ = writeln!(
            s,
            "| written per delivery at 200 / 1,000 events/s (SQLite's log, mostly) | {:.0} / {:.0} KiB | | |",
            e.kib_written_per_delivery.0, e.kib_written_per_delivery.1
        );
        let _ = writeln!(s, "| peak RSS | {:.1} MiB | ≤ 50 MB | 44.6–52.6 MB |\n", e.peak_rss_mb);
        let _ = writeln!(
            s,
            "{} deliveries in the saturation runs; {} latency samples; {} extra copies of deliveries (each delivery counted once). Svix: {SVIX}.\n",
            e.deliveries_measured, e.latency_events, e.duplicates
        );
        let _ = writeln!(s, "![Publish → receive latency, embedded, at 200 and 1,000 events/s]({LATENCY_PLOT})\n");
    }
    if let Some(alone) = r.noisy.first() {
        let _ = writeln!(s, "### Noisy neighbour (embedded backend)\n");
        let _ = writeln!(
            s,
            "A healthy tenant publishes one event every 50 ms; other tenants flood hooks of their own, whose endpoints accept TCP and never answer (request timeout 10 s), or answer a second late. A fresh platform for each row.\n"
        );
        let target = (3.0 * alone.p99_ms).max(100.0);
        let _ = writeln!(
            s,
            "| flood | healthy p50 / p99 / max | healthy delivered | flood published in | target p99 | Svix |\n| --- | --- | --- | --- | --- | --- |"
        );
        let svix = |flood: &noisy::Flood| match (flood.tenants, flood.endpoint, flood.events) {
            (0, _, _) => "p50 2.4 / p99 6.0 ms (at 200/s)",
            _ if flood.hooks > 1 => "not measured",
            (1, noisy::Endpoint::BlackHole, 200) => "p99 8.1 ms, all delivered",
            (1, noisy::Endpoint::BlackHole, 2_000) => "p50 84 s; none within 30 s of the last send",
            (1, noisy::Endpoint::BlackHole, _) => "stalls (already at 600: p99 29.8 s)",
            _ => "not measured",
        };
        for f in &r.noisy {
            let alone = f.flood.tenants == 0;
            let label = f.flood.label();
            let tgt = if alone { "–".to_owned() } else { format!("≤ {target:.0} ms") };
            let published = if alone { "–".to_owned() } else { format!("{:.1} s", f.flood_seconds) };
            let _ = writeln!(
                s,
                "| {label} | {:.1} / {:.1} / {:.1} ms | {} of {} | {published} | {tgt} | {} |",
                f.p50_ms,
                f.p99_ms,
                f.max_ms,
                f.delivered,
                f.healthy_events,
                svix(&f.flood)
            );
        }
        let _ = writeln!(s, "\nSvix: {SVIX} (request timeout 30 s, 500 concurrent deliveries).\n");
    }
    if let Some(rate) = &r.rate {
        let _ = writeln!(s, "### Per-hook rate limit (embedded backend)\n");
        let _ = writeln!(
            s,
            "{} events published at once to a hook limited to {} a second: measured over each whole 10 s window, {:.1}–{:.1} deliveries a second (target: within ±10 % of the limit, never above it); at most {} within any one second; none dropped.\n",
            rate.events, rate.limit, rate.per_10s.0, rate.per_10s.1, rate.max_in_1s
        );
    }
    if let Some(a) = &r.aws {
        let _ = writeln!(s, "### AWS backend: requests per delivery (our code)\n");
        let _ = writeln!(s, "| operation | happy path | every delivery retried once |\n| --- | --- | --- |");
        let ops: BTreeSet<&String> = a.happy.keys().chain(a.with_retry.keys()).collect();
        let (mut t1, mut t2) = (0.0, 0.0);
        for op in ops {
            let (h, w) = (a.happy.get(op).copied().unwrap_or(0.0), a.with_retry.get(op).copied().unwrap_or(0.0));
            t1 += h;
            t2 += w;
            let _ = writeln!(s, "| `{op}` | {h:.2} | {w:.2} |");
        }
        let _ = writeln!(s, "| **total** | **{t1:.2}** | **{t2:.2}** |\n");
        let _ = writeln!(
            s,
            "Stage code's own CPU per delivery (publish + ingest + worker, emulator excluded): {:.0} µs.\n",
            a.stage_cpu_us
        );
        let _ = writeln!(s, "### Cost per million deliveries\n");
        let _ = writeln!(
            s,
            "Each delivery of the happy path is one stored item of at most {} bytes here: {:.2} write units per delivery.\n",
            a.largest_item, a.delivery_write_units
        );
        let _ = writeln!(s, "| item | per delivery | unit price | per million deliveries |\n| --- | --- | --- | --- |");
        let mut total = 0.0;
        for l in aws::cost_model(a, aws::Publishing::TenPerCall) {
            let per_million = l.per_delivery * l.unit_price * 1e6;
            total += per_million;
            let _ = writeln!(s, "| {} | {:.4} | ${:.10} | ${per_million:.3} |", l.item, l.per_delivery, l.unit_price);
        }
        let _ = writeln!(s, "| **total** | | | **${total:.2}** |\n");
        let _ = writeln!(s, "| events | per million deliveries |\n| --- | --- |");
        for how in [
            aws::Publishing::TenPerCall,
            aws::Publishing::OnePerCall,
            aws::Publishing::OnePerCallFunctionUrl,
            aws::Publishing::ProducerOnTheBus,
        ] {
            let _ = writeln!(s, "| {} | ${:.2} |", how.label(), aws::cost_per_million(a, how));
        }
        let _ = writeln!(
            s,
            "\nOne event per call pays API Gateway's $1.00 and a Lambda request per event; the function URL takes away the $1.00. A producer on the bus pays EventBridge's $1.00 and the bus's SendMessage to the ingest queue per event. EventBridge API destinations costs $1.20 on that same bus path ($1.00 of it the event). Why neither one event per call nor the bus can reach $1.20: docs/decisions/0023.\n"
        );
        let _ = writeln!(s, "Prices: {}.\n", aws::price::AS_OF);
    }
    if !r.fanout.is_empty() {
        let _ = writeln!(s, "### Fan-out: one event, all of a tenant's hooks matching\n");
        let _ = writeln!(
            s,
            "| backend | hooks | ingest time | requests | requests per delivery |\n| --- | --- | --- | --- | --- |"
        );
        for (backend, f) in &r.fanout {
            let (req, per) = f.requests.as_ref().map_or(("–".to_owned(), "–".to_owned()), |m| {
                let total: u64 = m.values().sum();
                let parts: Vec<String> = m.iter().map(|(k, v)| format!("{k} {v}")).collect();
                (format!("{total} ({})", parts.join(", ")), format!("{:.3}", total as f64 / f.hooks.max(1) as f64))
            });
            let _ = writeln!(s, "| {backend} | {} | {:.2} s | {req} | {per} |", f.hooks, f.ingest.as_secs_f64());
        }
        let _ = writeln!(
            s,
            "\nOn the emulator the delivery queue is emptied every 200 ms while ingest fills it (`PurgeQueue`, not counted), as the worker's event source mapping keeps it short on AWS: the emulator rereads a whole queue on every send, so a queue left to reach 10,000 makes its time quadratic. Its time is the emulator's, not AWS's; the requests are the figure that carries over.\n"
        );
    }
    if let Some(rp) = &r.replay {
        let _ = writeln!(s, "### Replay as a job (embedded)\n");
        let _ = writeln!(
            s,
            "One `POST /v1/hooks/{{id}}/replay` over {} deliveries recorded while the hook was disabled; the job re-sends them 500 at a time.\n",
            rp.deliveries
        );
        let _ = writeln!(s, "| | |\n| --- | --- |");
        let _ = writeln!(s, "| every delivery queued again (job `SUCCEEDED`) | {:.1} s |", rp.job_secs);
        let _ = writeln!(
            s,
            "| every delivery received | {:.1} s ({:.0}/s) |",
            rp.delivered_secs,
            rp.deliveries as f64 / rp.delivered_secs
        );
        if let Some((late_ms, late)) = &r.replay_late {
            // What the hook's 96 fast-lane places allow at that answer time.
            let allowed = f64::from(delivery_worker::FAST_LANE_HOOK_CAP) * 1000.0 / *late_ms as f64;
            let _ = writeln!(
                s,
                "| {} deliveries replayed to a receiver answering {late_ms} ms late, every one received | {:.1} s ({:.0}/s; its fast-lane places allow {allowed:.0}/s) |",
                late.deliveries,
                late.delivered_secs,
                late.deliveries as f64 / late.delivered_secs
            );
        }
        let _ = writeln!(
            s,
            "| server peak memory, before → after the replay of {} | {:.0} → {:.0} MiB |\n",
            rp.deliveries, rp.peak_rss_before_mb, rp.peak_rss_after_mb
        );
        let _ = writeln!(
            s,
            "![Replay of {} deliveries: queued by the job and received, over time]({REPLAY_PLOT})\n",
            rp.deliveries
        );
    }
    if let Some(ret) = &r.retention {
        let _ = writeln!(s, "### Embedded database size with retention enforced\n");
        let _ = writeln!(
            s,
            "{} events an hour, each with one idempotency key and one delivery recorded as the worker records it (its first attempt, its envelope inline), written for {} simulated weeks; deliveries are kept 14 days, keys 24 hours, and the sweep runs every simulated hour ({} rows deleted in all).\n",
            ret.per_hour,
            ret.weekly_bytes.len(),
            ret.swept
        );
        let _ = writeln!(s, "| after week | database file |\n| --- | --- |");
        for (week, bytes) in &ret.weekly_bytes {
            let _ = writeln!(s, "| {week} | {} |", mb(*bytes));
        }
        let _ = writeln!(
            s,
            "\nThe file grows for one retention period, then stays flat: SQLite reuses the pages the sweep frees. Its size is about retention × traffic.\n"
        );
    }
    if !r.binaries.is_empty() {
        let _ = writeln!(s, "### Lambda binaries\n");
        let _ = writeln!(
            s,
            "| function | release binary (this machine) | `make build` bootstrap | start → first poll (median of 7) |\n| --- | --- | --- | --- |"
        );
        for b in &r.binaries {
            let lambda =
                b.lambda.as_ref().map_or("not built".to_owned(), |(arch, bytes)| format!("{} ({arch})", mb(*bytes)));
            let _ = writeln!(s, "| `{}` | {} | {lambda} | {:.1} ms |", b.name, mb(b.native_bytes), b.start_ms);
        }
        let _ = writeln!(s, "\nTargets: ≤ 8 MB and ≤ 20 ms each.\n");
    }
    let _ = writeln!(s, "{END}");
    s
}

/// The latency plot, beside the report.
const LATENCY_PLOT: &str = "BENCHMARKS-latency.svg";

/// The replay's course, beside the report.
const REPLAY_PLOT: &str = "BENCHMARKS-replay.svg";

/// Draws the replay's course to `path`: how many deliveries the job had queued, and how
/// many the endpoint had received, over time.
pub fn replay_plot(path: &Path, rp: &crate::replay::Figures) -> anyhow::Result<()> {
    let lines = [
        crate::plot::Line {
            label: "queued by the job".into(),
            points: rp.queued_over_time.iter().map(|&(t, n)| (t, n as f64)).collect(),
        },
        crate::plot::Line {
            label: "received by the endpoint".into(),
            points: crate::plot::cumulative(&rp.received_at_secs, 0.25),
        },
    ];
    crate::plot::over_time(
        path,
        &format!("Embedded: one replay job over {} deliveries", rp.deliveries),
        "deliveries",
        &lines,
    )
}

/// Replaces the results section of `path` (or appends one), and draws the plots beside it.
pub fn write(path: &Path, r: &Results) -> anyhow::Result<String> {
    if let Some(rp) = &r.replay {
        replay_plot(&path.with_file_name(REPLAY_PLOT), rp)?;
    }
    if let Some(e) = &r.embedded {
        let series = [
            crate::plot::Series { label: "200 events/s".into(), sorted_ms: &e.latency_200 },
            crate::plot::Series { label: "1,000 events/s".into(), sorted_ms: &e.latency_1000 },
        ];
        crate::plot::latency_cdf(
            &path.with_file_name(LATENCY_PLOT),
            "Embedded: publish → receive, one event per call",
            &series,
        )?;
    }
    let rendered = render(r);
    let old = std::fs::read_to_string(path).unwrap_or_else(|_| "# Benchmarks\n\n".to_owned());
    let new = match (old.find(START), old.find(END)) {
        (Some(a), Some(b)) if b > a => format!("{}{}{}", &old[..a], rendered.trim_end(), &old[b + END.len()..]),
        _ => format!("{}\n{rendered}", old.trim_end()),
    };
    std::fs::write(path, new)?;
    Ok(rendered)
}
