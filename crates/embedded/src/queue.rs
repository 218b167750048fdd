//! Durable queues with SQS's semantics, on the `messages` table.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use hookbridge_core::ports::{
    MAX_BATCH, MAX_MESSAGE_BYTES, MAX_SEND_DELAY, OutgoingMessage, Queue, QueueDepth, Receipt, ReceivedMessage, Unsent,
};
use hookbridge_core::topology::QueueSpec;
use hookbridge_core::{Error, Result};
use rusqlite::{OptionalExtension, params};

use crate::db::{Db, now_ms};
use crate::error::sql;

/// Creates a queue and its DLQ, or updates their settings.
pub(crate) async fn create(db: &Db, spec: &QueueSpec) -> Result<()> {
    let spec = spec.clone();
    db.write(move |c| {
        c.execute(
            "INSERT INTO queues (name, visibility_ms, max_receive, dlq) VALUES (?1, ?2, 0, NULL)
             ON CONFLICT(name) DO UPDATE SET visibility_ms = excluded.visibility_ms",
            params![spec.dlq, spec.visibility_timeout.as_millis() as i64],
        )
        .map_err(sql("queues.create"))?;
        c.execute(
            "INSERT INTO queues (name, visibility_ms, max_receive, dlq) VALUES (?1, ?2, ?3, ?4)
             ON CONFLICT(name) DO UPDATE SET visibility_ms = excluded.visibility_ms,
                 max_receive = excluded.max_receive, dlq = excluded.dlq",
            params![spec.name, spec.visibility_timeout.as_millis() as i64, spec.max_receive_count, spec.dlq],
        )
        .map_err(sql("queues.create"))?;
        Ok(())
    })
    .await
}

/// Inserts messages into a queue inside an open transaction (shared with the bus, which
/// routes an event to its queues in the same transaction that accepts it).
pub(crate) fn insert<'m>(
    c: &rusqlite::Connection,
    queue: &str,
    messages: impl IntoIterator<Item = &'m OutgoingMessage>,
) -> Result<()> {
    let now = now_ms();
    let mut stmt = c
        .prepare_cached(
            "INSERT INTO messages (queue, id, body, visible_at, receive_count, sent_at, grp)
             VALUES (?1, ?2, ?3, ?4, 0, ?5, ?6)",
        )
        .map_err(sql("messages.insert"))?;
    for m in messages {
        let id = ulid::Ulid::new().to_string();
        let grp = m.group.as_deref().unwrap_or_default();
        stmt.execute(params![queue, id, m.body, now + m.delay.as_millis() as i64, now, grp])
            .map_err(sql("messages.insert"))?;
    }
    Ok(())
}

/// Whether a queue (`?1`) holds a message visible at `?2`: one a receive would choose
/// before any sent now.
const ANY_VISIBLE: &str = "SELECT EXISTS (SELECT 1 FROM messages WHERE queue = ?1 AND visible_at <= ?2)";

/// Inserts messages inside an open transaction, handing some straight to the receives
/// waiting on the queue (`hand_to`: how many each takes, from [`crate::handoff::Claim`]):
/// those are written already received, as the receive would have written them, and
/// returned per receive. Only when the queue has no visible message: a message waiting
/// there is owed the next receive before these (decision 0012's fairness), so then all
/// are inserted as usual and every receive is handed nothing, and looks for itself. The
/// messages handed are chosen as a receive chooses: the first of each group, then the
/// second of each, and so on; a delayed message is never handed.
pub(crate) fn insert_handing(
    c: &rusqlite::Connection,
    queue: &str,
    messages: &[OutgoingMessage],
    hand_to: &[usize],
) -> Result<Vec<Vec<ReceivedMessage>>> {
    let mut handed = vec![Vec::new(); hand_to.len()];
    let now = now_ms();
    let places: usize = hand_to.iter().sum();
    let backlog = || {
        c.prepare_cached(ANY_VISIBLE)
            .and_then(|mut stmt| stmt.query_row(params![queue, now], |r| r.get::<_, bool>(0)))
            .map_err(sql("messages.insert"))
    };
    if places == 0 || backlog()? {
        insert(c, queue, messages)?;
        return Ok(handed);
    }
    // Which receive each message goes to, if any.
    let mut to: Vec<Option<usize>> = vec![None; messages.len()];
    let mut in_group: std::collections::HashMap<&str, usize> = std::collections::HashMap::new();
    let mut turns: Vec<(usize, usize)> = Vec::new();
    for (i, m) in messages.iter().enumerate().filter(|(_, m)| m.delay.is_zero()) {
        let turn = in_group.entry(m.group.as_deref().unwrap_or_default()).or_default();
        turns.push((*turn, i));
        *turn += 1;
    }
    turns.sort_unstable();
    let receives = hand_to.iter().enumerate().flat_map(|(r, &max)| std::iter::repeat_n(r, max));
    for ((_, i), r) in turns.into_iter().zip(receives) {
        to[i] = Some(r);
    }
    let visibility_ms = settings(c, queue)?.visibility_ms;
    let mut received = c
        .prepare_cached(
            "INSERT INTO messages (queue, id, body, visible_at, receive_count, sent_at, grp, received_at, receipt)
             VALUES (?1, ?2, ?3, ?4, 1, ?5, ?6, ?5, ?7)",
        )
        .map_err(sql("messages.insert"))?;
    for (m, to) in messages.iter().zip(to) {
        let Some(r) = to else {
            insert(c, queue, std::iter::once(m))?;
            continue;
        };
        let id = ulid::Ulid::new().to_string();
        let grp = m.group.as_deref().unwrap_or_default();
        // The row keeps the receipt's own part; the whole receipt begins with the seq,
        // known once the row is in (one statement, not an insert and an update).
        let own = ulid::Ulid::new().to_string();
        received
            .execute(params![queue, id, m.body, now + visibility_ms, now, grp, own])
            .map_err(sql("messages.insert"))?;
        let receipt = receipt_of(c.last_insert_rowid(), &own);
        handed[r].push(ReceivedMessage {
            id,
            body: m.body.clone(),
            receipt: Receipt(receipt),
            receive_count: 1,
            sent_at: chrono::DateTime::from_timestamp_millis(now).unwrap_or_default(),
        });
    }
    Ok(handed)
}

/// `$statement` on the message a receipt was given for, while it still holds that receipt:
/// `?1` is the seq the receipt begins with and `?2` the receipt's own part, which the row
/// keeps ([`held_by`]). Found by the table's key, so no index by receipt is kept up on
/// every receive and delete. A literal, so the hot statements are not formatted again on
/// every call.
macro_rules! held {
    ($statement:literal) => {
        concat!($statement, " WHERE seq = ?1 AND receipt = ?2")
    };
}

/// Deletes the message a receipt holds ([`held!`]).
pub(crate) const DELETE_HELD: &str = held!("DELETE FROM messages");

/// A receipt: its message's seq, then its own part (a ULID), which the message's row keeps
/// while the receipt holds it. A row written by a release before kept the whole receipt;
/// no receipt outlives the process that gave it, so none of those is ever presented.
fn receipt_of(seq: i64, own: &str) -> String {
    format!("{seq}.{own}")
}

/// The seq a receipt begins with and its own part ([`receipt_of`]); `None` for a receipt
/// never given, which holds nothing.
fn held_by(receipt: &str) -> Option<(i64, &str)> {
    receipt.split_once('.').and_then(|(seq, own)| Some((seq.parse().ok()?, own)))
}

/// Deletes received messages inside an open transaction; a stale receipt deletes nothing.
/// Whether each receipt still held its message, in order.
pub(crate) fn delete(c: &rusqlite::Connection, receipts: &[Receipt]) -> Result<Vec<bool>> {
    let mut del = c.prepare_cached(DELETE_HELD).map_err(sql("messages.delete"))?;
    let mut held = Vec::with_capacity(receipts.len());
    for r in receipts {
        let deleted = match held_by(&r.0) {
            Some((seq, own)) => del.execute(params![seq, own]).map_err(sql("messages.delete"))?,
            None => 0,
        };
        held.push(deleted > 0);
    }
    Ok(held)
}

/// Groups looked at per receive, taking turns, whether they have a message to give or
/// not. Most groups of a slow lane hold only messages waiting out a delay (failing hooks'
/// retries); each costs one look at the index, and a quiet group's message must not wait
/// behind many receives' worth of them. Bounded, so that thousands of waiting groups cost
/// a receive little.
const GROUPS_LOOKED_AT: usize = 256;

/// The next group after `?2`, and when its soonest message is visible: its first entry in
/// the index, which is ordered by group, then visibility.
const NEXT_GROUP: &str =
    "SELECT grp, visible_at FROM messages WHERE queue = ?1 AND grp > ?2 ORDER BY grp, visible_at LIMIT 1";
/// The first group, as [`NEXT_GROUP`].
const FIRST_GROUP: &str = "SELECT grp, visible_at FROM messages WHERE queue = ?1 ORDER BY grp, visible_at LIMIT 1";

/// A candidate row: seq, id, body, receive count, sent at.
type Row = (i64, String, String, u32, i64);

fn row(r: &rusqlite::Row<'_>) -> rusqlite::Result<Row> {
    Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?))
}

/// Up to `max` visible messages, fairly: first the oldest visible message of each group in
/// turn (from after `cursor`, the last group served), then, if there is room, the oldest
/// visible messages of any group. A group with a backlog therefore gets one place per
/// receive like any other, and a lone group still gets whole batches.
fn candidates(
    c: &rusqlite::Connection,
    queue: &str,
    now: i64,
    max: usize,
    cursor: &mut Option<String>,
) -> rusqlite::Result<Vec<Row>> {
    let mut chosen: Vec<Row> = Vec::with_capacity(max);
    let mut looked_at = std::collections::HashSet::new();
    let mut after = cursor.clone();
    let mut wrapped = false;
    let mut next_from = c.prepare_cached(NEXT_GROUP)?;
    let mut first = c.prepare_cached(FIRST_GROUP)?;
    let mut head = c.prepare_cached(
        "SELECT seq, id, body, receive_count, sent_at FROM messages
         WHERE queue = ?1 AND grp = ?2 AND visible_at <= ?3 ORDER BY visible_at, seq LIMIT 1",
    )?;
    let pair = |r: &rusqlite::Row<'_>| Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?));
    while chosen.len() < max && looked_at.len() < GROUPS_LOOKED_AT {
        let next = match &after {
            Some(a) => next_from.query_row(params![queue, a], pair).optional()?,
            None => first.query_row([queue], pair).optional()?,
        };
        let Some((g, soonest)) = next else {
            if wrapped || after.is_none() {
                break;
            }
            wrapped = true;
            after = None;
            continue;
        };
        if !looked_at.insert(g.clone()) {
            break;
        }
        if soonest <= now
            && let Some(r) = head.query_row(params![queue, g, now], row).optional()?
        {
            chosen.push(r);
        }
        after = Some(g);
    }
    *cursor = after;
    if chosen.len() < max {
        let mut oldest = c.prepare_cached(OLDEST_VISIBLE)?;
        let mut rows = oldest.query(params![queue, now])?;
        while chosen.len() < max {
            let Some(r) = rows.next()? else { break };
            let r = row(r)?;
            if !chosen.iter().any(|c| c.0 == r.0) {
                chosen.push(r);
            }
        }
    }
    Ok(chosen)
}

/// The oldest visible messages of a queue. Its `LIMIT` is written out, not bound: SQLite's
/// planner reads a bound limit's value, so a statement whose limit is bound again is
/// compiled again at its next step, which was every receive. Twice a batch is as many as
/// a receive can need (up to a batch of them are already chosen, and are skipped).
const OLDEST_VISIBLE: &str = "SELECT seq, id, body, receive_count, sent_at FROM messages
     WHERE queue = ?1 AND visible_at <= ?2 ORDER BY visible_at, seq LIMIT 20";
const _: () = assert!(2 * MAX_BATCH <= 20);

/// The longest a received message can be kept invisible, counted from its receive, as
/// on SQS (whose `ChangeMessageVisibility` refuses more).
pub const MAX_VISIBILITY: Duration = hookbridge_core::retry::MAX_QUEUE_DELAY;

/// The longest a receive waits for a message, as on SQS (whose long poll is 20 s at most).
pub const MAX_WAIT: Duration = Duration::from_secs(20);

/// Whether a queue (`?1`) holds as many messages in flight at `?2` as it allows. In flight
/// is received and not visible again; `received_at` is set exactly while a message holds a
/// receipt, and is in the index the count reads, so the count reads no message's row
/// however many are delayed.
pub(crate) const IN_FLIGHT_OVER_LIMIT: &str = "SELECT (SELECT COUNT(*) FROM messages
         WHERE queue = ?1 AND visible_at > ?2 AND received_at IS NOT NULL)
      >= (SELECT max_in_flight FROM queues WHERE name = ?1)";

/// A queue's (`?1`) messages at `?2`: visible, in flight, delayed. Read from the index
/// alone, as [`IN_FLIGHT_OVER_LIMIT`] is.
const DEPTH: &str = "SELECT
        COALESCE(SUM(visible_at <= ?2), 0),
        COALESCE(SUM(visible_at > ?2 AND received_at IS NOT NULL), 0),
        COALESCE(SUM(visible_at > ?2 AND received_at IS NULL), 0)
     FROM messages WHERE queue = ?1";

/// How often the in-flight count is read again: counting is a range scan, too dear for
/// every receive, and SQS's own count is approximate too.
const IN_FLIGHT_RECOUNT: Duration = Duration::from_secs(1);

/// One queue of the embedded backend.
#[derive(Debug, Clone)]
pub struct EmbeddedQueue {
    db: Db,
    name: String,
    in_flight: Arc<Mutex<Option<(std::time::Instant, bool)>>>,
    /// The group served last, so the next receive starts after it.
    cursor: Arc<Mutex<Option<String>>>,
    /// Woken whenever a message may have become receivable (the database's, for this
    /// queue: every handle to the queue shares it). Kept on the handle, so that every
    /// send and receive does not look it up in the database's map, under its lock.
    waker: Arc<tokio::sync::Notify>,
    /// The receives waiting for a send to hand them messages (shared and kept as `waker`
    /// is).
    waiting: Arc<crate::handoff::Waiting>,
}

impl EmbeddedQueue {
    /// A handle to the queue `name` (created by `init`).
    pub fn new(db: Db, name: &str) -> Self {
        Self {
            waker: db.waker(name),
            waiting: db.waiting(name),
            db,
            name: name.to_owned(),
            in_flight: Arc::default(),
            cursor: Arc::default(),
        }
    }

    /// Sets how many received, unacknowledged messages the queue allows before it refuses
    /// receives (120,000 by default, SQS's limit for a standard queue). Tests lower it to
    /// prove that nothing waits in flight.
    pub async fn set_max_in_flight(&self, max: u32) -> Result<()> {
        let name = self.name.clone();
        self.db
            .write(move |c| {
                c.execute("UPDATE queues SET max_in_flight = ?1 WHERE name = ?2", params![max, name])
                    .map_err(sql("queues.update"))
            })
            .await?;
        *self.in_flight.lock().unwrap_or_else(std::sync::PoisonError::into_inner) = None;
        Ok(())
    }

    /// Whether the queue holds as many messages in flight as it allows, as of at most
    /// [`IN_FLIGHT_RECOUNT`] ago.
    async fn over_limit(&self) -> Result<bool> {
        let cached = *self.in_flight.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some((_, over)) = cached.filter(|(at, _)| at.elapsed() < IN_FLIGHT_RECOUNT) {
            return Ok(over);
        }
        let queue = self.name.clone();
        let over = self
            .db
            .read(move |c| {
                c.query_row(IN_FLIGHT_OVER_LIMIT, params![queue, now_ms()], |r| r.get::<_, Option<bool>>(0))
                    .map_err(sql("messages.in_flight"))
            })
            .await?
            .unwrap_or(false);
        *self.in_flight.lock().unwrap_or_else(std::sync::PoisonError::into_inner) =
            Some((std::time::Instant::now(), over));
        Ok(over)
    }

    fn wake(&self) {
        self.waker.notify_waiters();
    }
}

struct Settings {
    visibility_ms: i64,
    max_receive: u32,
    dlq: Option<String>,
}

fn settings(c: &rusqlite::Connection, queue: &str) -> Result<Settings> {
    c.prepare_cached("SELECT visibility_ms, max_receive, dlq FROM queues WHERE name = ?1")
        .and_then(|mut stmt| {
            stmt.query_row([queue], |r| {
                Ok(Settings { visibility_ms: r.get(0)?, max_receive: r.get(1)?, dlq: r.get(2)? })
            })
        })
        .optional()
        .map_err(sql("queues.get"))?
        .ok_or_else(|| Error::backend("queues.get", format!("queue {queue} does not exist; run `hookbridge init`")))
}

/// Hands out up to `max` visible messages, moving those received too often to the DLQ.
/// Returns the messages and, when none was visible, when the next one becomes visible.
fn take(
    c: &mut rusqlite::Connection,
    queue: &str,
    max: usize,
    cursor: &mut Option<String>,
) -> Result<(Vec<ReceivedMessage>, Option<i64>)> {
    let s = settings(c, queue)?;
    let now = now_ms();
    let mut out = Vec::new();
    let mut dead = 0u32;
    {
        let rows = candidates(c, queue, now, max, cursor).map_err(sql("messages.receive"))?;
        for (seq, id, body, count, sent_at) in rows {
            match &s.dlq {
                // As on SQS: received maxReceiveCount times, the next receive moves it.
                Some(dlq) if s.max_receive > 0 && count >= s.max_receive => {
                    c.prepare_cached(
                        "UPDATE messages SET queue = ?1, visible_at = ?2, receive_count = 0, receipt = NULL,
                             received_at = NULL
                         WHERE seq = ?3",
                    )
                    .and_then(|mut stmt| stmt.execute(params![dlq, now, seq]))
                    .map_err(sql("messages.dead_letter"))?;
                    dead += 1;
                }
                _ => {
                    let own = ulid::Ulid::new().to_string();
                    c.prepare_cached(
                        "UPDATE messages SET receive_count = receive_count + 1, visible_at = ?1, receipt = ?2,
                             received_at = ?4
                         WHERE seq = ?3",
                    )
                    .and_then(|mut stmt| stmt.execute(params![now + s.visibility_ms, own, seq, now]))
                    .map_err(sql("messages.receive"))?;
                    let receipt = receipt_of(seq, &own);
                    out.push(ReceivedMessage {
                        id,
                        body,
                        receipt: Receipt(receipt),
                        receive_count: count + 1,
                        sent_at: chrono::DateTime::from_timestamp_millis(sent_at).unwrap_or_default(),
                    });
                }
            }
        }
    }
    let next = if out.is_empty() {
        c.prepare_cached("SELECT MIN(visible_at) FROM messages WHERE queue = ?1")
            .and_then(|mut stmt| stmt.query_row([queue], |r| r.get::<_, Option<i64>>(0)))
            .map_err(sql("messages.receive"))?
    } else {
        None
    };
    if dead > 0 {
        tracing::warn!(
            queue,
            count = dead,
            "messages moved to the dead-letter queue; `hookbridge dead-letters` lists them and sends them back"
        );
    }
    Ok((out, next))
}

#[async_trait]
impl Queue for EmbeddedQueue {
    fn name(&self) -> &str {
        &self.name
    }

    async fn send_each(&self, messages: &[OutgoingMessage]) -> Result<(), Unsent> {
        // What SQS refuses, message by message: a delay past 15 minutes, a body past
        // its size limit.
        let (valid, refused): (Vec<usize>, Vec<usize>) = (0..messages.len())
            .partition(|&i| messages[i].delay <= MAX_SEND_DELAY && messages[i].body.len() <= MAX_MESSAGE_BYTES);
        let too_long = || {
            Error::TooLarge(format!(
                "a send delay is longer than 15 minutes, or a body longer than {MAX_MESSAGE_BYTES} bytes"
            ))
        };
        if !valid.is_empty() {
            let queue = self.name.clone();
            let batch: Vec<OutgoingMessage> = valid.iter().map(|&i| messages[i].clone()).collect();
            let batch_len = batch.len();
            let claim = self.waiting.claim(batch.iter().filter(|m| m.delay.is_zero()).count());
            let hand_to = claim.maxes.clone();
            let waker = self.waker.clone();
            // Handed over and woken on the writer thread as soon as the write is committed,
            // so that a caller gone meanwhile leaves no receive waiting for messages that
            // were written received for it.
            let hand_over = move |handed: Vec<Vec<ReceivedMessage>>| {
                // The receives still waiting are woken only for what was not handed over.
                let all_handed = handed.iter().map(Vec::len).sum::<usize>() == batch_len;
                claim.hand(handed);
                if !all_handed {
                    waker.notify_waiters();
                }
            };
            // One transaction: the valid messages are all sent or none is. A failed one
            // drops the claim, and its receives go back to looking for themselves.
            let write = move |c: &mut rusqlite::Connection| insert_handing(c, &queue, &batch, &hand_to);
            if let Err(error) = self.db.write_then(write, hand_over).await {
                return Err(Unsent { indices: (0..messages.len()).collect(), error });
            }
        }
        if refused.is_empty() { Ok(()) } else { Err(Unsent { indices: refused, error: too_long() }) }
    }

    async fn receive(&self, max: usize, wait: Duration) -> Result<Vec<ReceivedMessage>> {
        let max = max.clamp(1, MAX_BATCH);
        let deadline = tokio::time::Instant::now() + wait.min(MAX_WAIT);
        let waker = &self.waker;
        if self.over_limit().await? {
            // As SQS answers `OverLimit`: nothing more is handed out until some in-flight
            // messages are deleted or become visible again.
            return Err(Error::backend(
                "messages.receive",
                format!("queue {} has as many messages in flight as it allows (OverLimit)", self.name),
            ));
        }
        loop {
            // Register for a wake-up before looking, so a send between the look and the
            // wait is not missed.
            let notified = waker.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();

            let queue = self.name.clone();
            let cursor = self.cursor.clone();
            let (got, next_visible) = self
                .db
                .write(move |c| {
                    let mut cursor = cursor.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
                    take(c, &queue, max, &mut cursor)
                })
                .await?;
            if !got.is_empty() {
                return Ok(got);
            }
            let now = tokio::time::Instant::now();
            if now >= deadline {
                return Ok(Vec::new());
            }
            let until_visible =
                next_visible.map(|at| Duration::from_millis((at - now_ms()).max(1) as u64)).unwrap_or(Duration::MAX);
            // While it waits, a send may hand it its messages (see `insert_handing`).
            let mut offered = self.waiting.offer(max);
            let handed = tokio::select! {
                handed = &mut offered.handed => Some(handed.ok()),
                () = &mut notified => None,
                () = tokio::time::sleep(until_visible.min(deadline - now)) => None,
            };
            let handed = match handed {
                Some(handed) => handed,
                None if self.waiting.withdraw(offered.ticket) => None,
                // Claimed meanwhile: its messages are written received for this receive.
                None => offered.handed.await.ok(),
            };
            if let Some(got) = handed.filter(|got| !got.is_empty()) {
                return Ok(got);
            }
        }
    }

    async fn ack(&self, receipts: &[Receipt]) -> Result<()> {
        let receipts = receipts.to_vec();
        self.db.write(move |c| delete(c, &receipts).map(drop)).await
    }

    async fn retry_after(&self, receipt: &Receipt, delay: Duration) -> Result<()> {
        let receipt = receipt.0.clone();
        let delay_ms = delay.as_millis().min(i64::MAX as u128) as i64;
        self.db
            .write(move |c| {
                let now = now_ms();
                // A receipt never given holds nothing (NULL matches no row), but the delay is
                // still checked.
                let (seq, own) = held_by(&receipt).map_or((None, None), |(seq, own)| (Some(seq), Some(own)));
                let received: Option<Option<i64>> = c
                    .query_row(held!("SELECT received_at FROM messages"), params![seq, own], |r| r.get(0))
                    .optional()
                    .map_err(sql("messages.change_visibility"))?;
                let since = now - received.flatten().unwrap_or(now);
                if delay_ms.saturating_add(since) > MAX_VISIBILITY.as_millis() as i64 {
                    return Err(Error::TooLarge(
                        "a visibility timeout may not reach more than 12 hours past the message's receive".to_owned(),
                    ));
                }
                c.execute(held!("UPDATE messages SET visible_at = ?3"), params![seq, own, now + delay_ms])
                    .map_err(sql("messages.change_visibility"))
            })
            .await?;
        self.wake();
        Ok(())
    }

    async fn depth(&self) -> Result<QueueDepth> {
        let queue = self.name.clone();
        self.db
            .read(move |c| {
                let now = now_ms();
                c.query_row(DEPTH, params![queue, now], |r| {
                    Ok(QueueDepth { visible: r.get(0)?, in_flight: r.get(1)?, delayed: r.get(2)? })
                })
                .map_err(sql("messages.depth"))
            })
            .await
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)] // Tests fail loudly on purpose.

    use rusqlite::StatementStatus;

    use super::*;

    /// A database in `dir` and its queue `q` (30 s visibility, five receives).
    async fn queue_q(dir: &tempfile::TempDir) -> (Db, EmbeddedQueue) {
        let db = Db::open(&dir.path().join("hb.db")).unwrap();
        let spec = QueueSpec {
            name: "q".into(),
            dlq: "q-dlq".into(),
            visibility_timeout: Duration::from_secs(30),
            max_receive_count: 5,
        };
        create(&db, &spec).await.unwrap();
        let q = EmbeddedQueue::new(db.clone(), "q");
        (db, q)
    }

    /// Waits until `n` receives are waiting on `q` for a send to hand them messages.
    async fn until_offered(db: &Db, n: usize) {
        let offered = async {
            while db.waiting("q").offers() < n {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        };
        tokio::time::timeout(Duration::from_secs(10), offered).await.expect("the receives never waited");
    }

    /// A receive of up to `max` messages on `q`, spawned and left waiting, as the `nth` of
    /// the receives waiting there.
    async fn waiting_receive(
        db: &Db,
        q: &std::sync::Arc<EmbeddedQueue>,
        max: usize,
        nth: usize,
    ) -> tokio::task::JoinHandle<Result<Vec<ReceivedMessage>>> {
        let receiver = q.clone();
        let waited = tokio::spawn(async move { receiver.receive(max, Duration::from_secs(30)).await });
        until_offered(db, nth).await;
        waited
    }

    /// The bodies a spawned receive got; `stuck` says why if it did not finish within 10 s
    /// (a hang guard: it waits 30 s).
    async fn bodies_got(waited: tokio::task::JoinHandle<Result<Vec<ReceivedMessage>>>, stuck: &str) -> Vec<String> {
        let got = tokio::time::timeout(Duration::from_secs(10), waited).await.expect(stuck);
        got.unwrap().unwrap().into_iter().map(|m| m.body).collect()
    }

    /// How often the writer has looked for the first group of a queue: once per receive's
    /// own look for messages.
    async fn looks(db: &Db) -> i32 {
        db.write(|c| Ok(c.prepare_cached(FIRST_GROUP).map_err(sql("test"))?.get_status(StatementStatus::Run)))
            .await
            .unwrap()
    }

    /// A receive waiting on an empty queue is handed a send's messages, written received
    /// by the send: it does not look for them itself, and they act like any it received.
    /// A second receive waiting beside it is not woken for messages all handed over.
    #[tokio::test]
    async fn a_waiting_receive_is_handed_what_is_sent_without_looking_again() {
        let dir = tempfile::tempdir().unwrap();
        let (db, q) = queue_q(&dir).await;
        let q = std::sync::Arc::new(q);
        let waited = waiting_receive(&db, &q, 10, 1).await;
        let beside = waiting_receive(&db, &q, 10, 2).await;
        let looked = looks(&db).await;
        let sent: Vec<OutgoingMessage> = (0..3).map(|i| OutgoingMessage::now(format!("m{i}"))).collect();
        q.send_batch(&sent).await.unwrap();
        let got = waited.await.unwrap().unwrap();
        let bodies: Vec<&str> = got.iter().map(|m| m.body.as_str()).collect();
        assert_eq!(bodies, ["m0", "m1", "m2"]);
        // Time for the receive beside it to look, had it been woken.
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(got.iter().all(|m| m.receive_count == 1));
        assert_eq!(looks(&db).await, looked, "a receive looked for messages again");
        beside.abort();
        assert_eq!(q.depth().await.unwrap(), QueueDepth { visible: 0, in_flight: 3, delayed: 0 });
        q.ack(&got.iter().map(|m| m.receipt.clone()).collect::<Vec<_>>()).await.unwrap();
        assert_eq!(q.depth().await.unwrap(), QueueDepth { visible: 0, in_flight: 0, delayed: 0 });
    }

    /// A message handed to a waiting receive is written received in one statement, never
    /// updated after, and its receipt acts on it as any receipt does: it puts the message
    /// back, and once the message is received again it no longer holds it.
    #[tokio::test]
    async fn a_handed_message_is_written_in_one_statement_and_its_receipt_holds_it() {
        let dir = tempfile::tempdir().unwrap();
        let (db, q) = queue_q(&dir).await;
        let q = std::sync::Arc::new(q);
        let waited = waiting_receive(&db, &q, 1, 1).await;
        let no_update =
            "CREATE TEMP TRIGGER no_update BEFORE UPDATE ON messages BEGIN SELECT RAISE(ABORT, 'updated'); END";
        db.write(move |c| c.execute_batch(no_update).map_err(sql("test"))).await.unwrap();
        q.send_batch(&[OutgoingMessage::now("m".to_owned())]).await.unwrap();
        let handed = tokio::time::timeout(Duration::from_secs(10), waited).await.unwrap().unwrap().unwrap().remove(0);
        db.write(|c| c.execute_batch("DROP TRIGGER temp.no_update").map_err(sql("test"))).await.unwrap();
        assert_eq!(q.depth().await.unwrap(), QueueDepth { visible: 0, in_flight: 1, delayed: 0 });
        q.retry_after(&handed.receipt, Duration::ZERO).await.unwrap();
        assert_eq!(q.depth().await.unwrap(), QueueDepth { visible: 1, in_flight: 0, delayed: 0 }, "put back");
        let again = q.receive(1, Duration::ZERO).await.unwrap().remove(0);
        assert_eq!((again.body.as_str(), again.receive_count), ("m", 2));
        q.ack(std::slice::from_ref(&handed.receipt)).await.unwrap();
        assert_eq!(q.depth().await.unwrap().in_flight, 1, "the handed receipt no longer holds it");
        q.ack(std::slice::from_ref(&again.receipt)).await.unwrap();
        assert_eq!(q.depth().await.unwrap(), QueueDepth { visible: 0, in_flight: 0, delayed: 0 });
    }

    /// A message `db` writes received for a claimed receive, as `insert_handing` would.
    async fn written_received(db: &Db) -> Vec<ReceivedMessage> {
        let handed = db.write(|c| insert_handing(c, "q", &[OutgoingMessage::now("m".to_owned())], &[1])).await.unwrap();
        handed.into_iter().flatten().collect()
    }

    /// A receive woken while a send that claimed it is still writing waits for that send's
    /// messages, which are written received for it alone and no other receive would get
    /// before their visibility timeout.
    #[tokio::test]
    async fn a_claimed_receive_woken_meanwhile_waits_for_its_messages() {
        let dir = tempfile::tempdir().unwrap();
        let (db, q) = queue_q(&dir).await;
        let waited = waiting_receive(&db, &std::sync::Arc::new(q), 1, 1).await;
        let claim = db.waiting("q").claim(1);
        db.waker("q").notify_waiters();
        let messages = written_received(&db).await;
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(!waited.is_finished(), "the woken receive did not wait for its claim");
        claim.hand(vec![messages.clone()]);
        let got = waited.await.unwrap().unwrap();
        assert_eq!(
            got.iter().map(|m| &m.receipt).collect::<Vec<_>>(),
            messages.iter().map(|m| &m.receipt).collect::<Vec<_>>()
        );
    }

    /// A send whose caller went away once its write was on its way still hands over what
    /// it wrote received: the hand-over follows the commit, not the caller.
    #[tokio::test]
    async fn a_send_dropped_while_it_writes_still_hands_over() {
        use futures::FutureExt as _;
        let dir = tempfile::tempdir().unwrap();
        let (db, q) = queue_q(&dir).await;
        let q = std::sync::Arc::new(q);
        let waited = waiting_receive(&db, &q, 1, 1).await;
        // The writer held on a gate, so the send cannot be answered while it is polled.
        let gate = std::sync::Arc::new(std::sync::Mutex::new(()));
        let closed = gate.lock().unwrap();
        let held = gate.clone();
        let mut holding = Box::pin(db.write(move |_| {
            drop(held.lock());
            Ok(())
        }));
        assert!((&mut holding).now_or_never().is_none());
        // Polled once, which claims the receive and hands the write to the writer thread,
        // then dropped.
        assert!(q.send_batch(&[OutgoingMessage::now("m".to_owned())]).now_or_never().is_none());
        drop(closed);
        holding.await.unwrap();
        assert_eq!(bodies_got(waited, "the receive was left waiting").await, ["m"]);
    }

    /// A receive claimed by a send whose write failed looks for messages itself again.
    #[tokio::test]
    async fn a_receive_claimed_by_a_failed_send_looks_again() {
        let dir = tempfile::tempdir().unwrap();
        let (db, q) = queue_q(&dir).await;
        let q = std::sync::Arc::new(q);
        let waited = waiting_receive(&db, &q, 1, 1).await;
        let refuse = "CREATE TEMP TRIGGER refuse BEFORE INSERT ON messages BEGIN SELECT RAISE(ABORT, 'refused'); END";
        db.write(move |c| c.execute_batch(refuse).map_err(sql("test"))).await.unwrap();
        let looked = looks(&db).await;
        assert!(q.send_batch(&[OutgoingMessage::now("refused".to_owned())]).await.is_err());
        // The failed send woke no one; its claim, dropped, is what sends the receive
        // looking again, and then waiting anew.
        let looked_again = async {
            while looks(&db).await == looked {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        };
        tokio::time::timeout(Duration::from_secs(10), looked_again).await.expect("the receive never looked again");
        until_offered(&db, 1).await;
        db.write(|c| c.execute_batch("DROP TRIGGER temp.refuse").map_err(sql("test"))).await.unwrap();
        q.send_batch(&[OutgoingMessage::now("m".to_owned())]).await.unwrap();
        assert_eq!(bodies_got(waited, "the receive kept waiting").await, ["m"]);
    }

    /// A receive that went away while waiting is passed over: the send's message waits
    /// for the next receive, not for a visibility timeout.
    #[tokio::test]
    async fn a_receive_that_went_away_is_handed_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let (db, q) = queue_q(&dir).await;
        let q = std::sync::Arc::new(q);
        let waited = waiting_receive(&db, &q, 1, 1).await;
        waited.abort();
        let _ = waited.await;
        q.send_batch(&[OutgoingMessage::now("m".to_owned())]).await.unwrap();
        let got = q.receive(1, Duration::ZERO).await.unwrap();
        assert_eq!(got.len(), 1, "the message went to the receive that had gone");
    }

    /// A send hands over nothing while a message is visible in the queue (it is owed the
    /// next receive); otherwise it hands the first of each group before the second of any,
    /// and never a delayed message.
    #[tokio::test]
    async fn a_send_hands_over_fairly_and_only_to_an_empty_queue() {
        let dir = tempfile::tempdir().unwrap();
        let (db, _q) = queue_q(&dir).await;
        let handed = |messages: Vec<OutgoingMessage>, hand_to: Vec<usize>| {
            let db = db.clone();
            async move { db.write(move |c| insert_handing(c, "q", &messages, &hand_to)).await.unwrap() }
        };
        let bodies = |handed: &[Vec<ReceivedMessage>]| -> Vec<Vec<String>> {
            handed.iter().map(|r| r.iter().map(|m| m.body.clone()).collect()).collect()
        };
        let in_group = |body: &str, group: &str| OutgoingMessage::now(body.to_owned()).in_group(group.to_owned());
        let sent = vec![
            OutgoingMessage { delay: Duration::from_secs(60), ..in_group("later", "c") },
            in_group("a1", "a"),
            in_group("a2", "a"),
            in_group("a3", "a"),
            in_group("b1", "b"),
        ];
        let first = bodies(&handed(sent, vec![1, 2]).await);
        assert_eq!(first, [vec!["a1"], vec!["a2", "b1"]]);
        // a3 is still visible, so the next send hands nothing over.
        let second = bodies(&handed(vec![in_group("d1", "d")], vec![1]).await);
        assert_eq!(second, [Vec::<String>::new()]);
    }

    /// Receives of different sizes, some finding a message already chosen, run the
    /// oldest-visible query with the statement compiled once.
    #[tokio::test]
    async fn receives_of_any_size_never_compile_the_oldest_visible_query_again() {
        let dir = tempfile::tempdir().unwrap();
        let (db, q) = queue_q(&dir).await;
        let messages: Vec<OutgoingMessage> =
            (0..40).map(|i| OutgoingMessage::now(format!("m{i}")).in_group(format!("g{}", i % 3))).collect();
        q.send_batch(&messages).await.unwrap();
        let mut got = 0;
        for max in [1, 4, 10, 2, 7, 10] {
            got += q.receive(max, Duration::ZERO).await.unwrap().len();
        }
        assert_eq!(got, 34);
        let compiled_again = db
            .write(|c| {
                Ok(c.prepare_cached(OLDEST_VISIBLE).map_err(sql("test"))?.get_status(StatementStatus::RePrepare))
            })
            .await
            .unwrap();
        assert_eq!(compiled_again, 0);
    }

    /// The in-flight count and the depth read the index alone, so a queue holding many
    /// delayed messages (a dead endpoint's retries) costs each recount no row reads; and a
    /// receive still finds the oldest visible message through the same index.
    #[tokio::test]
    async fn the_in_flight_count_reads_no_message() {
        let dir = tempfile::tempdir().unwrap();
        let db = Db::open(&dir.path().join("hb.db")).unwrap();
        let plans = db
            .read(|c| {
                let plan = |sql_text: &str| -> rusqlite::Result<String> {
                    let mut stmt = c.prepare(&format!("EXPLAIN QUERY PLAN {sql_text}"))?;
                    let both: [&dyn rusqlite::ToSql; 2] = [&"q", &0];
                    let bound = &both[..stmt.parameter_count()];
                    let rows = stmt.query_map(bound, |r| r.get::<_, String>(3))?;
                    Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?.join("; "))
                };
                [IN_FLIGHT_OVER_LIMIT, DEPTH, ANY_VISIBLE, OLDEST_VISIBLE, NEXT_GROUP, FIRST_GROUP]
                    .map(plan)
                    .into_iter()
                    .collect::<rusqlite::Result<Vec<_>>>()
                    .map_err(sql("test"))
            })
            .await
            .unwrap();
        assert!(plans[0].contains("COVERING INDEX messages_due"), "{}", plans[0]);
        assert!(plans[1].contains("COVERING INDEX messages_due"), "{}", plans[1]);
        assert!(plans[2].contains("COVERING INDEX messages_due"), "{}", plans[2]);
        assert!(plans[3].contains("messages_due"), "{}", plans[3]);
        // Looking for the next group to serve reads no message either, so groups with only
        // delayed messages cost a receive one look at the index each.
        for plan in &plans[4..] {
            assert!(plan.contains("COVERING INDEX messages_group") && !plan.contains("TEMP B-TREE"), "{plan}");
        }
    }

    /// A receive asked to wait longer than SQS would (up to forever) waits as SQS would,
    /// and gets what is sent meanwhile: its deadline overflowed the clock and panicked the
    /// receiving task.
    #[tokio::test]
    async fn a_receive_may_ask_to_wait_forever() {
        let dir = tempfile::tempdir().unwrap();
        let (_db, q) = queue_q(&dir).await;
        let q = std::sync::Arc::new(q);
        let receiver = q.clone();
        let waited = tokio::spawn(async move { receiver.receive(1, Duration::MAX).await.map(|got| got.len()) });
        tokio::task::yield_now().await;
        q.send_batch(&[OutgoingMessage::now("m".to_owned())]).await.unwrap();
        assert_eq!(waited.await.unwrap().unwrap(), 1);
    }

    /// A receipt finds its message by the seq it begins with, and only while the message
    /// holds it: an earlier receive's receipt, or one never given, deletes and postpones
    /// nothing.
    #[tokio::test]
    async fn only_the_latest_receipt_acts_on_its_message() {
        let dir = tempfile::tempdir().unwrap();
        let (_db, q) = queue_q(&dir).await;
        q.send_batch(&[OutgoingMessage::now("m".to_owned())]).await.unwrap();
        let first = q.receive(1, Duration::ZERO).await.unwrap().remove(0);
        q.retry_after(&first.receipt, Duration::ZERO).await.unwrap();
        let second = q.receive(1, Duration::ZERO).await.unwrap().remove(0);
        assert_eq!((second.id.as_str(), second.receive_count), (first.id.as_str(), 2));
        let seq = first.receipt.0.split_once('.').unwrap().0.to_owned();
        for stale in [first.receipt.clone(), Receipt(format!("{seq}.not-given")), Receipt("not-given".into())] {
            q.retry_after(&stale, Duration::ZERO).await.unwrap();
            q.ack(std::slice::from_ref(&stale)).await.unwrap();
        }
        assert!(q.receive(1, Duration::ZERO).await.unwrap().is_empty(), "still held by the second receive");
        let held = QueueDepth { visible: 0, in_flight: 1, delayed: 0 };
        assert_eq!(q.depth().await.unwrap(), held, "neither deleted nor postponed");
        q.ack(std::slice::from_ref(&second.receipt)).await.unwrap();
        assert_eq!(q.depth().await.unwrap(), QueueDepth { visible: 0, in_flight: 0, delayed: 0 });
    }

    /// A statement kept by the writer is still the one compiled first after dozens of
    /// others ran between its runs, as the writer's hot paths run more than a dozen
    /// (queues, deliveries, events, rates, the commit's own). With rusqlite's default of 16
    /// kept, the least recently used was dropped and compiled again on every turn, and its
    /// run count started over.
    #[tokio::test]
    async fn the_writer_keeps_its_statements_between_turns() {
        const KEPT: &str = "SELECT 'kept'";
        let dir = tempfile::tempdir().unwrap();
        let db = Db::open(&dir.path().join("hb.db")).unwrap();
        let turns = 5;
        for _ in 0..turns {
            db.write(|c| {
                let run = |c: &rusqlite::Connection, sql_text: &str| {
                    c.prepare_cached(sql_text).map_err(sql("test"))?.query_row([], |_| Ok(())).map_err(sql("test"))
                };
                run(c, KEPT)?;
                (0..40).try_for_each(|i| run(c, &format!("SELECT {i}")))
            })
            .await
            .unwrap();
        }
        let runs = db
            .write(|c| Ok(c.prepare_cached(KEPT).map_err(sql("test"))?.get_status(StatementStatus::Run)))
            .await
            .unwrap();
        assert_eq!(runs, turns, "run by the same compiled statement every turn");
    }
}
