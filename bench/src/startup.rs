//! The Lambda binaries: their size, and the time from process start to asking the Lambda
//! Runtime API for the first event (cold-start work: configuration, SDK clients, TLS).

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use axum::routing::get;
use tokio::sync::mpsc;

/// The four functions.
pub const FUNCTIONS: [&str; 4] = ["subscription-api", "ingest", "delivery-worker", "verifier"];

/// One function's figures.
#[derive(Debug, Clone)]
pub struct Binary {
    pub name: &'static str,
    pub native_bytes: u64,
    pub lambda: Option<(String, u64)>,
    pub start_ms: f64,
}

async fn time_to_first_poll(bin: &Path) -> anyhow::Result<Duration> {
    let (tx, mut rx) = mpsc::channel::<Instant>(1);
    let app = axum::Router::new().route(
        "/2018-06-01/runtime/invocation/next",
        get(move || {
            let tx = tx.clone();
            async move {
                let _ = tx.send(Instant::now()).await;
                // Hold the poll, as the Runtime API does while no event is waiting.
                std::future::pending::<()>().await;
                ""
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let server = tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    let started = Instant::now();
    let mut child = Command::new(bin)
        .env_clear()
        .env("AWS_LAMBDA_RUNTIME_API", addr.to_string())
        .env("AWS_LAMBDA_FUNCTION_NAME", "bench")
        .env("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "256")
        .env("AWS_LAMBDA_FUNCTION_VERSION", "$LATEST")
        .env("AWS_LAMBDA_LOG_STREAM_NAME", "bench")
        .env("AWS_LAMBDA_LOG_GROUP_NAME", "bench")
        .env("AWS_REGION", "us-east-1")
        .env("AWS_ACCESS_KEY_ID", "bench")
        .env("AWS_SECRET_ACCESS_KEY", "bench")
        .env("HOOKBRIDGE_JWT_SECRET", "bench-secret-of-at-least-thirty-two-bytes")
        .env("HOOKBRIDGE_TABLE", "hookbridge-table")
        .env("HOOKBRIDGE_BUS", "hookbridge-bus")
        .env("HOOKBRIDGE_INGEST_QUEUE_URL", "https://sqs.us-east-1.amazonaws.com/123456789012/hookbridge-ingest")
        .env("HOOKBRIDGE_DELIVERY_QUEUE_URL", "https://sqs.us-east-1.amazonaws.com/123456789012/hookbridge-delivery")
        .env("HOOKBRIDGE_SLOW_QUEUE_URL", "https://sqs.us-east-1.amazonaws.com/123456789012/hookbridge-delivery-slow")
        .env("HOOKBRIDGE_VERIFY_QUEUE_URL", "https://sqs.us-east-1.amazonaws.com/123456789012/hookbridge-verify")
        .env("HOOKBRIDGE_KMS_KEY", "alias/hookbridge-secrets")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()?;
    let polled = tokio::time::timeout(Duration::from_secs(10), rx.recv()).await;
    let _ = child.kill();
    let _ = child.wait();
    server.abort();
    match polled {
        Ok(Some(at)) => Ok(at - started),
        _ => anyhow::bail!("{} never polled for an event", bin.display()),
    }
}

/// Sizes and start-up times of the release binaries in `bin_dir` (and of `make build`'s
/// bootstraps under `lambda_dir`, when present).
pub async fn run(bin_dir: &Path, lambda_dir: &Path) -> anyhow::Result<Vec<Binary>> {
    let arch = std::fs::read_to_string(lambda_dir.join(".architecture")).ok().map(|s| s.trim().to_owned());
    let mut out = Vec::new();
    for name in FUNCTIONS {
        let bin = bin_dir.join(name);
        let native_bytes = std::fs::metadata(&bin)?.len();
        let mut times = Vec::new();
        for _ in 0..7 {
            times.push(time_to_first_poll(&bin).await?.as_secs_f64() * 1e3);
        }
        times.sort_by(f64::total_cmp);
        let bootstrap: PathBuf = lambda_dir.join(name).join("bootstrap");
        let lambda = match (std::fs::metadata(&bootstrap), &arch) {
            (Ok(m), Some(a)) => Some((a.clone(), m.len())),
            _ => None,
        };
        out.push(Binary { name, native_bytes, lambda, start_ms: times[times.len() / 2] });
    }
    Ok(out)
}
