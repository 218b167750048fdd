//! One queue driven into one stage, as an SQS event source mapping would: receive a batch,
//! hand it to the handler, delete what succeeded, leave the failures to the queue.

use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use delivery_worker::{BatchContext, Settle, Worker};
use futures::FutureExt;
use hookbridge_core::hook::Lane;
use hookbridge_core::ports::{BatchOutcome, MAX_BATCH, Queue, Receipt, ReceivedMessage};
use tokio::sync::{Semaphore, watch};
use tokio::task::JoinSet;

/// How long one receive waits for messages. Short, so a shutdown is never kept waiting.
const POLL_WAIT: Duration = Duration::from_secs(1);
/// The pause after the queue itself failed, so a broken backend is not hammered.
const ERROR_BACKOFF: Duration = Duration::from_secs(1);
/// Receive loops per delivery lane: two, so one waiting on a long poll or a slow commit
/// never leaves the lane idle.
const RECEIVERS: usize = 2;

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
        // A panic fails the batch, as a crashed Lambda invocation does: its messages come
        // back after their visibility timeout, and the loop goes on. Unwinding out of this
        // task would have stopped the stage for good while the API kept accepting.
        let outcome = match AssertUnwindSafe(handler(batch)).catch_unwind().await {
            Ok(outcome) => outcome,
            Err(_) => {
                tracing::error!(
                    queue = queue.name(),
                    "the batch's handler panicked; its messages will be handled again"
                );
                BatchOutcome { failed: receipts.iter().map(|(id, _)| id.clone()).collect() }
            }
        };
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

/// Deletes settled messages and gives their places back, as the worker tells of them.
struct Settler {
    queue: Arc<dyn Queue>,
    places: Arc<Semaphore>,
}

#[async_trait::async_trait]
impl Settle for Settler {
    async fn settled(&self, done: Vec<Receipt>, count: usize) {
        if !done.is_empty()
            && let Err(e) = self.queue.ack(&done).await
        {
            // Not deleted means delivered again later: at least once, never lost.
            tracing::error!(queue = self.queue.name(), error = %e, "delete failed; the messages will be handled again");
        }
        self.places.add_permits(count);
    }
}

/// A batch's view of the settler, counting what it settled, so that a batch that panics
/// gives back the places of the messages it did not.
struct Counted {
    inner: Arc<Settler>,
    settled: AtomicUsize,
}

#[async_trait::async_trait]
impl Settle for Counted {
    async fn settled(&self, done: Vec<Receipt>, count: usize) {
        self.inner.settled(done, count).await;
        self.settled.fetch_add(count, Ordering::Relaxed);
    }
}

/// One delivery lane driven into the worker as a stream rather than batch by batch: up to
/// `concurrency` messages are in the worker's hands at once, and each place is given back
/// the moment its message is settled, so one slow request never holds up the next
/// receive. Runs until `stop` turns true; messages in progress are finished first.
pub(crate) async fn pump(
    queue: Arc<dyn Queue>,
    stop: watch::Receiver<bool>,
    worker: Arc<Worker>,
    lane: Lane,
    concurrency: usize,
) {
    let places = Arc::new(Semaphore::new(concurrency.max(1)));
    let settler = Arc::new(Settler { queue: queue.clone(), places: places.clone() });
    let mut batches = JoinSet::new();
    let mut receivers = JoinSet::new();
    let (batch_tx, mut batch_rx) = tokio::sync::mpsc::unbounded_channel::<Vec<ReceivedMessage>>();
    for _ in 0..RECEIVERS {
        let (queue, places, batch_tx, mut stop) = (queue.clone(), places.clone(), batch_tx.clone(), stop.clone());
        receivers.spawn(async move {
            while !*stop.borrow() {
                let first = tokio::select! {
                    p = places.clone().acquire_owned() => p,
                    _ = stop.changed() => break,
                };
                let Ok(first) = first else { break };
                first.forget();
                let mut n = 1;
                while n < MAX_BATCH && places.try_acquire().map(|p| p.forget()).is_ok() {
                    n += 1;
                }
                match queue.receive(n, POLL_WAIT).await {
                    Ok(batch) => {
                        places.add_permits(n - batch.len());
                        if !batch.is_empty() && batch_tx.send(batch).is_err() {
                            break;
                        }
                    }
                    Err(e) => {
                        places.add_permits(n);
                        tracing::error!(queue = queue.name(), error = %e, "receive failed");
                        tokio::select! {
                            _ = tokio::time::sleep(ERROR_BACKOFF) => {}
                            _ = stop.changed() => {}
                        }
                    }
                }
            }
        });
    }
    drop(batch_tx);
    // Every batch runs on its own; the loop ends when the receivers have stopped.
    while let Some(batch) = batch_rx.recv().await {
        let (worker, settler) = (worker.clone(), settler.clone());
        batches.spawn(async move {
            let counted = Counted { inner: settler, settled: AtomicUsize::new(0) };
            let ctx = BatchContext { lane, deadline: None, settle: Some(&counted) };
            if AssertUnwindSafe(delivery_worker::handle(&worker, &batch, ctx)).catch_unwind().await.is_err() {
                // Its unsettled messages come back after their visibility timeout; their
                // places are the lane's again now, or each panic would shrink the lane.
                let unsettled = batch.len().saturating_sub(counted.settled.load(Ordering::Relaxed));
                tracing::error!(
                    queue = counted.inner.queue.name(),
                    unsettled,
                    "a delivery batch panicked; its unsettled messages will be handled again"
                );
                counted.inner.places.add_permits(unsettled);
            }
        });
        while batches.try_join_next().is_some() {}
    }
    while receivers.join_next().await.is_some() {}
    while batches.join_next().await.is_some() {}
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)] // Tests fail loudly on purpose.

    use hookbridge_core::ports::OutgoingMessage;
    use hookbridge_testkit::{EmbeddedHarness, Harness};

    use super::*;

    /// A handler that panics fails its batch, and the loop goes on with the next: the
    /// message after it is handled, and the one it panicked on comes back.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_handler_that_panics_fails_its_batch_and_the_stage_goes_on() {
        let h = EmbeddedHarness::start().await;
        let queue = h.backend().verify_queue.clone();
        queue.send_batch(&[OutgoingMessage::now("boom".to_owned())]).await.unwrap();
        let (stop, stopped) = watch::channel(false);
        let (handled_tx, mut handled) = tokio::sync::mpsc::unbounded_channel::<String>();
        let loop_ = tokio::spawn(drive(queue.clone(), stopped, move |batch: Vec<ReceivedMessage>| {
            let handled_tx = handled_tx.clone();
            async move {
                for m in &batch {
                    assert_ne!(m.body, "boom", "a handler that panics");
                    handled_tx.send(m.body.clone()).unwrap();
                }
                BatchOutcome::default()
            }
        }));
        // Sent once the panic's batch was received, so the two do not share a batch.
        while queue.depth().await.unwrap().in_flight == 0 {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        queue.send_batch(&[OutgoingMessage::now("ok".to_owned())]).await.unwrap();
        let next = tokio::time::timeout(Duration::from_secs(10), handled.recv()).await;
        let _ = stop.send(true);
        loop_.await.unwrap();
        assert_eq!(next.ok().flatten().as_deref(), Some("ok"), "the stage stopped at the panic");
        assert_eq!(queue.depth().await.unwrap().in_flight, 1, "the message it panicked on was not deleted");
    }

    /// The guard above holds in the release build a self-hoster runs, not only in the test
    /// build: the workspace's release profile aborted on a panic, so one tenant's panic in
    /// `hookbridge serve` stopped its API and every stage, for every tenant.
    #[test]
    fn the_release_build_unwinds_a_panic_to_the_guards() {
        let manifest = include_str!("../../../Cargo.toml");
        let release = manifest.split("\n[profile.release]\n").nth(1).expect("a release profile");
        let release = release.split("\n[").next().unwrap_or(release);
        let aborts = release.lines().any(|l| {
            let l = l.split('#').next().unwrap_or_default();
            l.trim_start().starts_with("panic") && l.contains("abort")
        });
        assert!(!aborts, "the release profile aborts on a panic:\n{release}");
    }
}
