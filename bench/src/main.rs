//! `make bench`: measures Hookbridge and writes the results into BENCHMARKS.md.

mod aws;
mod embedded;
mod fanout;
mod floor;
mod noisy;
mod plot;
mod receiver;
mod replay;
mod report;
mod retention;
mod startup;

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Parser, Subcommand};

/// The server's allocator (decision 0029) for the whole bench: the floor's client
/// allocates as the server does; so do the AWS stages and the fan-out run here (the Lambda
/// functions use the system allocator), the load generator and the receiver process.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Debug, Parser)]
#[command(name = "hookbridge-bench")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run every benchmark and write BENCHMARKS.md.
    Run {
        /// Where the release binaries are (`hookbridge` and the four functions).
        #[arg(long, default_value = "target/release")]
        bin_dir: PathBuf,
        /// Where `make build` puts the Lambda bootstraps.
        #[arg(long, default_value = "target/lambda")]
        lambda_dir: PathBuf,
        /// The report to update.
        #[arg(long, default_value = "BENCHMARKS.md")]
        out: PathBuf,
        /// Smaller volumes, for a smoke run.
        #[arg(long)]
        quick: bool,
    },
    /// Only the noisy-neighbour and rate-limit runs, printed (BENCHMARKS.md is left alone).
    Noisy {
        /// Where the release binaries are.
        #[arg(long, default_value = "target/release")]
        bin_dir: PathBuf,
        /// Flood sizes, each one tenant's to a black hole.
        #[arg(long, value_delimiter = ',', default_value = "200,2000,20000")]
        floods: Vec<usize>,
        /// Tenants flooding hooks that answer a second late, [`SLOW_EVENTS`] events each,
        /// measured after the black holes (0: none).
        #[arg(long, default_value_t = SLOW_TENANTS)]
        slow_tenants: usize,
        /// Hooks of one tenant on a black hole, [`MANY_HOOKS_EVENTS`] events for each,
        /// measured last (0: none).
        #[arg(long, default_value_t = MANY_HOOKS)]
        many_hooks: usize,
    },
    /// Only the embedded end-to-end and noisy-neighbour runs, printed.
    Embedded {
        /// Where the release binaries are.
        #[arg(long, default_value = "target/release")]
        bin_dir: PathBuf,
    },
    /// Only publish → receive and publish → `202` at fixed rates on the embedded backend,
    /// printed as quantiles: the quick way to compare two binaries' tails.
    Latency {
        /// Where the release binaries are.
        #[arg(long, default_value = "target/release")]
        bin_dir: PathBuf,
        /// Events a second, one run each.
        #[arg(long, value_delimiter = ',', default_value = "200,1000")]
        rates: Vec<u32>,
        /// Seconds each rate runs.
        #[arg(long, default_value_t = 10)]
        seconds: u32,
    },
    /// Only the one-hook saturation run, on a fresh server each time, printed: the quick
    /// way to compare two binaries' CPU per delivery.
    Cpu {
        /// Where the release binaries are.
        #[arg(long, default_value = "target/release")]
        bin_dir: PathBuf,
        /// Runs, each on a fresh server and database.
        #[arg(long, default_value_t = 3)]
        runs: u32,
        /// Events published in each run (one delivery each).
        #[arg(long, default_value_t = 20_000)]
        events: usize,
        /// Also publish as many events to a tenant with no hooks in each run: the CPU of
        /// publishing and ingest alone, before any delivery is queued.
        #[arg(long)]
        unrouted: bool,
    },
    /// Only the embedded database's size under traffic with retention, printed.
    Retention {
        /// Events an hour.
        #[arg(long, default_value_t = 500)]
        per_hour: usize,
        /// Simulated weeks.
        #[arg(long, default_value_t = 4)]
        weeks: u32,
    },
    /// Only the replay of many deliveries on the embedded backend, printed.
    Replay {
        /// Where the release binaries are.
        #[arg(long, default_value = "target/release")]
        bin_dir: PathBuf,
        /// Deliveries to replay.
        #[arg(long, default_value_t = 100_000)]
        deliveries: usize,
        /// Also draw the replay's course (SVG) here.
        #[arg(long)]
        plot: Option<PathBuf>,
        /// How late the receiver answers each delivery, in milliseconds.
        #[arg(long, default_value_t = 0)]
        receiver_delay_ms: u64,
    },
    /// Only the fan-out of one event to many hooks, on both backends, printed.
    Fanout {
        /// Hooks on the embedded backend.
        #[arg(long, default_value_t = 10_000)]
        embedded: usize,
        /// Hooks on the AWS backend (the emulator).
        #[arg(long, default_value_t = 10_000)]
        aws: usize,
    },
    /// The receiver process the embedded run delivers to.
    Receiver {
        #[arg(long)]
        listen: SocketAddr,
    },
}

/// Tenants in the run beside several slow hooks' backlogs.
const SLOW_TENANTS: usize = 4;
/// Events each of them publishes at once.
const SLOW_EVENTS: usize = 5_000;
/// How late their hooks answer.
const SLOW_ANSWER: std::time::Duration = std::time::Duration::from_secs(1);

/// `tenants` tenants, each with [`SLOW_EVENTS`] events for a hook answering [`SLOW_ANSWER`]
/// late: backlogs that drain, slowly, beside the healthy tenant.
/// The hooks of the many-hooks flood: with [`MANY_HOOKS_EVENTS`] each, more requests than
/// the local runner's 256 fast-lane places, each hook below the share of 8 a crowded lane
/// leaves it (decision 0039).
const MANY_HOOKS: usize = 40;
/// Events for each of [`MANY_HOOKS`] (one call of ten).
const MANY_HOOKS_EVENTS: usize = 10;

fn slow_floods(tenants: usize) -> noisy::Flood {
    noisy::Flood { events: SLOW_EVENTS, tenants, hooks: 1, endpoint: noisy::Endpoint::Slow(SLOW_ANSWER) }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    match Cli::parse().command {
        Command::Receiver { listen } => receiver::run(listen).await,
        Command::Embedded { bin_dir } => {
            let embedded = Some(embedded::run(&bin_dir, false).await?);
            let rig = embedded::Rig::start(&bin_dir).await?;
            let floor_cpu_us = Some(floor::median_cpu_us(&rig.receiver_url(), 20_000, 40, 3).await?);
            drop(rig);
            let r = report::Results {
                embedded,
                floor_cpu_us,
                noisy: noisy::run(&bin_dir, &[2_000, 20_000].map(noisy::Flood::black_hole)).await?,
                ..report::Results::default()
            };
            println!("{}", report::render(&r));
            Ok(())
        }
        Command::Cpu { bin_dir, runs, events, unrouted } => {
            for _ in 0..runs {
                let rig = embedded::Rig::start(&bin_dir).await?;
                let s = rig.saturation(1, events).await?;
                println!(
                    "{:.0} µs CPU per delivery, {:.0} deliveries/s, {:.2} context switches per delivery",
                    s.cpu_us, s.per_second, s.switches
                );
                if unrouted {
                    println!("{:.0} µs CPU per event routed to no hook", rig.unrouted(events).await?);
                }
            }
            Ok(())
        }
        Command::Latency { bin_dir, rates, seconds } => {
            let rig = embedded::Rig::start(&bin_dir).await?;
            for rate in rates {
                let l = rig.latency(rate, seconds).await?;
                let q =
                    |v: &[f64]| [0.5, 0.95, 0.99, 1.0].map(|q| format!("{:.1}", embedded::quantile(v, q))).join(" / ");
                println!(
                    "{rate}/s: receive p50/p95/p99/max {} ms; 202 {} ms; {:.0} KiB written per delivery",
                    q(&l.received),
                    q(&l.answered),
                    l.kib_written
                );
            }
            Ok(())
        }
        Command::Retention { per_hour, weeks } => {
            let r = report::Results {
                retention: Some(retention::run(per_hour, weeks).await?),
                ..report::Results::default()
            };
            println!("{}", report::render(&r));
            Ok(())
        }
        Command::Replay { bin_dir, deliveries, plot, receiver_delay_ms } => {
            let figures = replay::run(&bin_dir, deliveries, receiver_delay_ms).await?;
            if let Some(path) = plot {
                report::replay_plot(&path, &figures)?;
            }
            let r = report::Results { replay: Some(figures), ..report::Results::default() };
            println!("{}", report::render(&r));
            Ok(())
        }
        Command::Fanout { embedded, aws } => {
            let r = report::Results {
                fanout: vec![
                    ("embedded", fanout::embedded(embedded).await?),
                    ("aws (emulator)", fanout::aws(aws).await?),
                ],
                ..report::Results::default()
            };
            println!("{}", report::render(&r));
            Ok(())
        }
        Command::Noisy { bin_dir, floods, slow_tenants, many_hooks } => {
            let mut floods: Vec<noisy::Flood> = floods.into_iter().map(noisy::Flood::black_hole).collect();
            if slow_tenants > 0 {
                floods.push(slow_floods(slow_tenants));
            }
            if many_hooks > 0 {
                floods.push(noisy::Flood::many_hooks(many_hooks, MANY_HOOKS_EVENTS));
            }
            let r = report::Results {
                noisy: noisy::run(&bin_dir, &floods).await?,
                rate: Some(noisy::rate_limit(&bin_dir, 50, 1_000).await?),
                ..report::Results::default()
            };
            println!("{}", report::render(&r));
            Ok(())
        }
        Command::Run { bin_dir, lambda_dir, out, quick } => {
            let mut r = report::Results::default();
            eprintln!("bench: embedded backend, end to end");
            r.embedded = Some(embedded::run(&bin_dir, quick).await?);
            eprintln!("bench: noisy neighbour");
            let floods: Vec<noisy::Flood> = if quick {
                vec![noisy::Flood::black_hole(200)]
            } else {
                let mut f: Vec<noisy::Flood> = [200, 2_000, 20_000].map(noisy::Flood::black_hole).to_vec();
                f.push(slow_floods(SLOW_TENANTS));
                f.push(noisy::Flood::many_hooks(MANY_HOOKS, MANY_HOOKS_EVENTS));
                f
            };
            r.noisy = noisy::run(&bin_dir, &floods).await?;
            eprintln!("bench: per-hook rate limit");
            r.rate = Some(noisy::rate_limit(&bin_dir, 50, if quick { 300 } else { 1_000 }).await?);
            eprintln!("bench: the floor");
            let rig = embedded::Rig::start(&bin_dir).await?;
            r.floor_cpu_us =
                Some(floor::median_cpu_us(&rig.receiver_url(), if quick { 2_000 } else { 20_000 }, 40, 3).await?);
            drop(rig);
            eprintln!("bench: AWS backend on the emulator");
            r.aws = Some(aws::run(if quick { 3 } else { 10 }).await?);
            eprintln!("bench: fan-out");
            r.fanout.push(("embedded", fanout::embedded(if quick { 1_000 } else { 10_000 }).await?));
            r.fanout.push(("aws (emulator)", fanout::aws(if quick { 1_000 } else { 10_000 }).await?));
            eprintln!("bench: replay");
            r.replay = Some(replay::run(&bin_dir, if quick { 5_000 } else { 100_000 }, 0).await?);
            eprintln!("bench: replay to a receiver answering 75 ms late");
            r.replay_late = Some((75, replay::run(&bin_dir, if quick { 1_000 } else { 5_000 }, 75).await?));
            eprintln!("bench: embedded database size with retention");
            r.retention = Some(retention::run(if quick { 50 } else { 500 }, if quick { 3 } else { 4 }).await?);
            eprintln!("bench: Lambda binaries");
            r.binaries = startup::run(&bin_dir, &lambda_dir).await?;
            let table = report::write(&out, &r)?;
            println!("{table}");
            Ok(())
        }
    }
}
