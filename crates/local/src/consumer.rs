//! One queue driven into one stage, as an SQS event source mapping would: receive a batch,
//! hand it to the handler, delete what succeeded, leave the failures to the queue.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use hookbridge_core::ports::{BatchOutcome, MAX_BATCH, Queue, ReceivedMessage};
use tokio::sync::watch;

/// How long one receive waits for messages. Short, so a shutdown is never kept waiting.
const POLL_WAIT: Duration = Duration::from_secs(1);
/// The pause after the queue itself failed, so a broken backend is not hammered.
const ERROR_BACKOFF: Duration = Duration::from_secs(1);

/// Runs until `stop` turns true; a batch in progress is finished first.
pub(crate) async fn drive<F, Fut>(queue: Arc<dyn Queue>, mut stop: watch::Receiver<bool>, handler: F)
where
    F: Fn(Vec<ReceivedMessage>) -> Fut,
    Fut: Future<Output = BatchOutcome>,
{
    while !*stop.borrow() {
        let batch = match queue.receive(MAX_BATCH, POLL_WAIT).await {
            Ok(b) => b,
            Err(e) => {
                tracing::error!(queue = queue.name(), error = %e, "receive failed");
                tokio::select! {
                    _ = tokio::time::sleep(ERROR_BACKOFF) => {}
                    _ = stop.changed() => {}
                }
                continue;
            }
        };
        if batch.is_empty() {
            continue;
        }
        let receipts: Vec<(String, hookbridge_core::ports::Receipt)> =
            batch.iter().map(|m| (m.id.clone(), m.receipt.clone())).collect();
        let outcome = handler(batch).await;
        let done: Vec<_> =
            receipts.into_iter().filter(|(id, _)| !outcome.failed.contains(id)).map(|(_, r)| r).collect();
        if !done.is_empty()
            && let Err(e) = queue.ack(&done).await
        {
            // Not deleted means delivered again later: at least once, never lost.
            tracing::error!(queue = queue.name(), error = %e, "delete failed; the batch will be handled again");
        }
    }
}
