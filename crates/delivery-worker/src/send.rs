//! Phase two: every request of the batch at once. The batch takes as long as its slowest
//! receiver (at most the timeout), not the sum of them.

use futures::future::join_all;
use hookbridge_outbound::{AttemptReport, DeliveryRequest};
use tracing::Instrument;

use crate::Worker;
use crate::prepare::{Job, Ready};

/// A job after the send phase.
pub(crate) enum Done<'a> {
    /// Untouched jobs that needed no request.
    Skipped(Job<'a>),
    /// A request was made.
    Attempted { ready: Box<Ready<'a>>, report: AttemptReport },
}

pub(crate) async fn send_all<'a>(w: &Worker, jobs: Vec<Job<'a>>) -> Vec<Done<'a>> {
    join_all(jobs.into_iter().map(|job| async move {
        match job {
            Job::Send(ready) => {
                // Every line logged while sending (the client's included) carries the ids.
                let span = tracing::info_span!(
                    "delivery",
                    tenant = %ready.key.tenant,
                    hook_id = %ready.key.hook_id,
                    delivery_id = %ready.key.delivery_id
                );
                let report = w
                    .outbound
                    .deliver(DeliveryRequest {
                        hook: &ready.hook,
                        secrets: &ready.secrets,
                        delivery_id: ready.key.delivery_id,
                        body: &ready.body,
                    })
                    .instrument(span)
                    .await;
                Done::Attempted { ready, report }
            }
            other => Done::Skipped(other),
        }
    }))
    .await
}
