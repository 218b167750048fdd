//! The delivery worker. A batch from the delivery queue goes through three phases, each
//! its own module and type: [`prepare`] (parse, load hooks and secrets, decide what may
//! be sent), [`send`] (every request of the batch concurrently), [`record`] (one store
//! write for the whole batch, hook health, retries, operational events).

pub mod metrics;
mod prepare;
mod record;
mod send;

use hookbridge_core::health::DisableRule;
use hookbridge_core::ports::{Backend, BatchOutcome, ReceivedMessage};
use hookbridge_core::retry::RetrySchedule;
use hookbridge_outbound::Outbound;

/// What the worker needs besides the ports.
#[derive(Debug, Clone, Default)]
pub struct WorkerSettings {
    /// Delays between attempts.
    pub schedule: RetrySchedule,
    /// When a failing hook is warned about and disabled.
    pub disable_rule: DisableRule,
    /// Write delivery metrics to stdout as CloudWatch Embedded Metric Format (the Lambda
    /// function does; the local runner does not).
    pub emf_metrics: bool,
}

impl WorkerSettings {
    /// The worker's part of the deployment settings.
    pub fn from_settings(s: &hookbridge_core::settings::Settings) -> Self {
        Self { schedule: s.schedule.clone(), disable_rule: s.disable_rule, emf_metrics: false }
    }
}

/// The worker's dependencies.
#[derive(Debug, Clone)]
pub struct Worker {
    /// The ports.
    pub backend: Backend,
    /// The HTTP client.
    pub outbound: Outbound,
    /// Settings.
    pub settings: WorkerSettings,
}

/// Handles a batch from the delivery queue.
pub async fn handle(worker: &Worker, messages: &[ReceivedMessage]) -> BatchOutcome {
    let jobs = match prepare::prepare(worker, messages).await {
        Ok(jobs) => jobs,
        Err(e) => {
            tracing::error!(error = %e, "cannot load what the batch needs; it will be retried");
            return BatchOutcome { failed: messages.iter().map(|m| m.id.clone()).collect() };
        }
    };
    let done = send::send_all(worker, jobs).await;
    record::record(worker, done).await
}
