//! Retention on the embedded backend: what DynamoDB's TTL and SQS's retention period do on
//! AWS. Expired deliveries, envelopes and idempotency keys, messages (dead letters
//! included) older than SQS keeps them, and rate state nobody used for an hour are deleted,
//! a batch at a time so the writer is never held for long. The database's size is then
//! bounded by retention × traffic: SQLite reuses the freed pages.

use std::time::Duration;

use chrono::{DateTime, Utc};
use hookbridge_core::Result;
use hookbridge_core::catalog::SEEN_FOR;
use hookbridge_core::topology::QUEUE_RETENTION;
use rusqlite::{OptionalExtension, params};

use crate::db::Db;
use crate::error::sql;

/// How often the stack sweeps.
pub const SWEEP_EVERY: Duration = Duration::from_secs(60);
/// Rows deleted per statement: small enough that other writes wait only briefly.
const BATCH: i64 = 2000;
/// Rate state unused this long is forgotten (a limiter starts afresh, which is safe).
const RATE_STATE_KEPT: Duration = hookbridge_core::rate::STATE_KEPT;

/// What one sweep deleted.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Swept {
    /// Deliveries past their retention.
    pub deliveries: usize,
    /// Envelopes past the replay window.
    pub events: usize,
    /// Idempotency keys and event-id claims past their window.
    pub idempotency_keys: usize,
    /// Queue messages (dead letters included) older than SQS keeps them.
    pub messages: usize,
    /// Idle rate-limiter state.
    pub rates: usize,
    /// Event types not seen for 30 days.
    pub seen_types: usize,
    /// Portal links and console sessions past their expiry.
    pub portal: usize,
    /// Replay jobs past the time they stay readable.
    pub replays: usize,
}

impl Swept {
    /// Rows deleted in all.
    pub fn total(&self) -> usize {
        self.deliveries
            + self.events
            + self.idempotency_keys
            + self.messages
            + self.rates
            + self.seen_types
            + self.portal
            + self.replays
    }
}

/// Messages older than SQS keeps them, looked for among the oldest only. `messages` has no
/// index on `sent_at` (one would be a page more written by every send and delete), and
/// looking for expired rows among all of them read the whole queue, bodies included,
/// every sweep, while the writer waited: a backlog or a full dead-letter queue made that
/// hundreds of megabytes a minute. Messages are numbered in the order they are sent, so
/// the oldest batch by number holds every expired one there is (a batch of them at most
/// per statement; `drain` comes back for more).
///
/// Only once the oldest of all has expired ([`OLDEST_MESSAGE_SENT`]): a row's `sent_at`
/// comes after its body, so reading it walks the body's overflow pages, and the oldest
/// messages are mostly dead letters (an event refused by ingest may be 256 KiB). Looking
/// at the oldest batch every minute with nothing expired held the writer for over 100 ms
/// when it was 2,000 large dead letters.
const EXPIRED_MESSAGES: &str = "DELETE FROM messages WHERE seq IN
    (SELECT seq FROM (SELECT seq, sent_at FROM messages ORDER BY seq LIMIT ?2) WHERE sent_at <= ?1)";

/// When the oldest message was sent, if there is one.
const OLDEST_MESSAGE_SENT: &str = "SELECT sent_at FROM messages ORDER BY seq LIMIT 1";

/// Event types not seen for [`SEEN_FOR`], found through their own index: a tenant whose
/// producer puts ids in `detail-type` has millions, and without it every sweep read them all
/// while holding the writer.
const EXPIRED_SEEN_TYPES: &str = "DELETE FROM seen_types WHERE (tenant, name) IN
    (SELECT tenant, name FROM seen_types WHERE last_seen <= ?1 LIMIT ?2)";

/// Deletes everything expired at `now`.
pub async fn sweep(db: &Db, now: DateTime<Utc>) -> Result<Swept> {
    let ms = now.timestamp_millis();
    let old_messages = ms - QUEUE_RETENTION.as_millis() as i64;
    let idle_rates = now.timestamp_micros() - RATE_STATE_KEPT.as_micros() as i64;
    Ok(Swept {
        deliveries: drain(
            db,
            "DELETE FROM deliveries WHERE (hook_id, id) IN
               (SELECT hook_id, id FROM deliveries WHERE expires_at <= ?1 LIMIT ?2)",
            ms,
        )
        .await?,
        events: drain(
            db,
            "DELETE FROM events WHERE (tenant, id) IN (SELECT tenant, id FROM events WHERE expires_at <= ?1 LIMIT ?2)",
            ms,
        )
        .await?,
        idempotency_keys: drain(
            db,
            "DELETE FROM idempotency WHERE (tenant, key) IN
               (SELECT tenant, key FROM idempotency WHERE expires_at <= ?1 LIMIT ?2)",
            ms,
        )
        .await?,
        messages: drain_messages(db, old_messages).await?,
        rates: drain(
            db,
            "DELETE FROM rates WHERE key IN (SELECT key FROM rates WHERE next_us <= ?1 LIMIT ?2)",
            idle_rates,
        )
        .await?,
        seen_types: drain(db, EXPIRED_SEEN_TYPES, (now - SEEN_FOR).timestamp_millis()).await?,
        portal: drain(
            db,
            "DELETE FROM portal WHERE (kind, hash) IN (SELECT kind, hash FROM portal WHERE expires_at <= ?1 LIMIT ?2)",
            ms,
        )
        .await?,
        replays: drain(
            db,
            "DELETE FROM replays WHERE (hook_id, id) IN (SELECT hook_id, id FROM replays WHERE expires_at <= ?1 LIMIT ?2)",
            ms,
        )
        .await?,
    })
}

/// [`EXPIRED_MESSAGES`] until it deletes nothing, or the oldest message is not expired.
async fn drain_messages(db: &Db, cutoff: i64) -> Result<usize> {
    drain_past(db, Some(OLDEST_MESSAGE_SENT), EXPIRED_MESSAGES, cutoff).await
}

/// Runs `statement` (bound to the cut-off and the batch size) until it deletes nothing.
async fn drain(db: &Db, statement: &'static str, cutoff: i64) -> Result<usize> {
    drain_past(db, None, statement, cutoff).await
}

/// [`drain`], each batch only while `oldest` (a statement answering the oldest row's time,
/// if any) says some row is past the cut-off.
async fn drain_past(db: &Db, oldest: Option<&'static str>, statement: &'static str, cutoff: i64) -> Result<usize> {
    let mut total = 0;
    loop {
        let n = db
            .write(move |c| {
                if let Some(oldest) = oldest {
                    let at: Option<i64> = c
                        .prepare_cached(oldest)
                        .and_then(|mut s| s.query_row([], |r| r.get(0)).optional())
                        .map_err(sql("retention.sweep"))?;
                    if at.is_none_or(|at| at > cutoff) {
                        return Ok(0);
                    }
                }
                c.execute(statement, params![cutoff, BATCH]).map_err(sql("retention.sweep"))
            })
            .await?;
        total += n;
        if (n as i64) < BATCH {
            return Ok(total);
        }
    }
}

/// Sweeps every [`SWEEP_EVERY`] until `stop` says so, even in the middle of a sweep (after
/// a long time stopped, the first one may have millions of rows to delete, a batch per
/// transaction; what it leaves, the next start's sweep deletes). A failed sweep is logged
/// and tried again next time.
pub async fn run(db: Db, mut stop: tokio::sync::watch::Receiver<bool>) {
    loop {
        let swept = tokio::select! {
            biased;
            _ = stop.wait_for(|s| *s) => return,
            swept = sweep(&db, Utc::now()) => swept,
        };
        match swept {
            Ok(s) if s.total() > 0 => tracing::info!(
                deliveries = s.deliveries,
                events = s.events,
                idempotency_keys = s.idempotency_keys,
                messages = s.messages,
                rates = s.rates,
                seen_types = s.seen_types,
                "expired data deleted"
            ),
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, "the retention sweep failed; trying again later"),
        }
        tokio::select! {
            _ = tokio::time::sleep(SWEEP_EVERY) => {}
            _ = stop.wait_for(|s| *s) => return,
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)] // Tests fail loudly on purpose.

    use hookbridge_core::ports::OutgoingMessage;
    use rusqlite::StatementStatus;

    use super::*;

    /// One batch of a sweep's `statement` with `cutoff`: what it deleted, and how many rows
    /// it stepped through in full scans.
    async fn one_batch(db: &Db, statement: &'static str, cutoff: i64) -> (usize, i32) {
        db.write(move |c| {
            let mut stmt = c.prepare(statement).map_err(sql("test"))?;
            let n = stmt.execute(params![cutoff, BATCH]).map_err(sql("test"))?;
            Ok((n, stmt.get_status(StatementStatus::FullscanStep)))
        })
        .await
        .unwrap()
    }

    /// With a long queue and nothing in it expired, the sweep reads a batch of messages,
    /// not the whole queue.
    #[tokio::test]
    async fn looking_for_expired_messages_reads_a_batch_not_the_queue() {
        let dir = tempfile::tempdir().unwrap();
        let db = Db::open(&dir.path().join("hb.db")).unwrap();
        let queued = 3 * BATCH as usize;
        let messages: Vec<OutgoingMessage> = (0..queued).map(|i| OutgoingMessage::now(format!("m{i}"))).collect();
        db.write(move |c| crate::queue::insert(c, "q", &messages)).await.unwrap();
        let cutoff = Utc::now().timestamp_millis() - QUEUE_RETENTION.as_millis() as i64;
        let (deleted, scanned) = one_batch(&db, EXPIRED_MESSAGES, cutoff).await;
        assert_eq!(deleted, 0);
        assert!(scanned <= BATCH as i32, "read {scanned} of {queued} queued messages");
    }

    #[tokio::test]
    async fn looking_for_event_types_not_seen_lately_reads_no_recent_one() {
        let dir = tempfile::tempdir().unwrap();
        let db = Db::open(&dir.path().join("hb.db")).unwrap();
        let seen = 3 * BATCH;
        let now = Utc::now().timestamp_millis();
        db.write(move |c| {
            for i in 0..seen {
                c.execute(
                    "INSERT INTO seen_types (tenant, name, last_seen) VALUES ('t', ?1, ?2)",
                    params![format!("type.{i}"), now],
                )
                .map_err(sql("test"))?;
            }
            Ok(())
        })
        .await
        .unwrap();
        let (deleted, scanned) = one_batch(&db, EXPIRED_SEEN_TYPES, (Utc::now() - SEEN_FOR).timestamp_millis()).await;
        assert_eq!(deleted, 0);
        assert_eq!(scanned, 0, "read {scanned} of {seen} event types seen just now");
    }

    /// A stop asked for in the middle of a sweep ends it there: the first sweep after a
    /// long time stopped may have millions of rows to delete, and shutdown waited for all.
    #[tokio::test]
    async fn a_stop_ends_a_sweep_in_progress() {
        let dir = tempfile::tempdir().unwrap();
        let db = Db::open(&dir.path().join("hb.db")).unwrap();
        let expired = 20 * BATCH as usize;
        let messages: Vec<OutgoingMessage> = (0..expired).map(|i| OutgoingMessage::now(format!("m{i}"))).collect();
        db.write(move |c| crate::queue::insert(c, "q", &messages)).await.unwrap();
        db.write(|c| c.execute("UPDATE messages SET sent_at = 0", []).map_err(sql("test"))).await.unwrap();
        let (stop, stopped) = tokio::sync::watch::channel(false);
        let sweeper = tokio::spawn(run(db.clone(), stopped));
        // Stopped once the sweep has begun deleting, well before it is done.
        let left = || {
            db.read(|c| c.query_row("SELECT COUNT(*) FROM messages", [], |r| r.get::<_, i64>(0)).map_err(sql("test")))
        };
        while left().await.unwrap() == expired as i64 {
            tokio::task::yield_now().await;
        }
        stop.send(true).unwrap();
        sweeper.await.unwrap();
        let remaining = left().await.unwrap();
        assert!(remaining > 0, "the sweep went on to the end after the stop");
    }
}
