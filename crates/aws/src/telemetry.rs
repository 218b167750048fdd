//! Logs as JSON lines for CloudWatch: one object per event, with the fields each stage
//! attaches and those of the span it runs in (tenant, hook_id, delivery_id), so every line
//! about a delivery names it. `RUST_LOG` filters (default `info`).

/// Installs the JSON subscriber; call once at the top of `main`.
pub fn init() {
    tracing_subscriber::fmt()
        .json()
        .with_ansi(false)
        .with_current_span(true)
        .with_span_list(false)
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()))
        .init();
}
