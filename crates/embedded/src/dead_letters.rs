//! The dead-letter queues, for an operator: what each holds, and sending it back to the
//! queue it came from once the cause is fixed. On AWS the SQS console and
//! `StartMessageMoveTask` do this; on the embedded backend a message that went to a
//! dead-letter queue was only logged, and the retention sweep deleted it after 14 days.

use chrono::{DateTime, Utc};
use hookbridge_core::Result;
use rusqlite::params;

use crate::db::{Db, now_ms};
use crate::error::sql;

/// One queue's dead-letter queue and the messages in it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeadLetters {
    /// The queue the messages came from.
    pub queue: String,
    /// Its dead-letter queue.
    pub dlq: String,
    /// How many messages the dead-letter queue holds.
    pub count: u64,
    /// The oldest of them, up to the number asked for, oldest first.
    pub oldest: Vec<DeadLetter>,
}

/// A message in a dead-letter queue.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeadLetter {
    /// The message's id.
    pub id: String,
    /// When it was first sent to its queue (a redrive keeps it).
    pub sent_at: DateTime<Utc>,
    /// Its body, as sent.
    pub body: String,
}

/// Each queue that has a dead-letter queue, and that queue's name, in name order.
fn with_dead_letters(c: &rusqlite::Connection) -> Result<Vec<(String, String)>> {
    c.prepare_cached("SELECT name, dlq FROM queues WHERE dlq IS NOT NULL ORDER BY name")
        .and_then(|mut stmt| {
            stmt.query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?)))?.collect::<Result<Vec<_>, _>>()
        })
        .map_err(sql("dead_letters.queues"))
}

/// Every queue that has a dead-letter queue, in name order, with its count and up to
/// `show` of its oldest messages.
pub async fn list(db: &Db, show: usize) -> Result<Vec<DeadLetters>> {
    let show = i64::try_from(show).unwrap_or(i64::MAX);
    db.read(move |c| {
        let pairs = with_dead_letters(c)?;
        let mut out = Vec::with_capacity(pairs.len());
        for (queue, dlq) in pairs {
            let count: i64 = c
                .query_row("SELECT COUNT(*) FROM messages WHERE queue = ?1", [&dlq], |r| r.get(0))
                .map_err(sql("dead_letters.count"))?;
            let oldest = c
                .prepare("SELECT id, sent_at, body FROM messages WHERE queue = ?1 ORDER BY seq LIMIT ?2")
                .and_then(|mut stmt| {
                    stmt.query_map(params![dlq, show], |r| {
                        Ok(DeadLetter {
                            id: r.get(0)?,
                            sent_at: DateTime::from_timestamp_millis(r.get(1)?).unwrap_or_default(),
                            body: r.get(2)?,
                        })
                    })?
                    .collect::<Result<Vec<_>, _>>()
                })
                .map_err(sql("dead_letters.list"))?;
            out.push(DeadLetters { queue, dlq, count: u64::try_from(count).unwrap_or(0), oldest });
        }
        Ok(out)
    })
    .await
}

/// Dead letters moved back in one write: a backlog of hundreds of thousands moved in one
/// transaction held the database's one writer past a running `serve`'s 10 s wait for it
/// (its receives, acks and records failing meanwhile), and grew the log by all of it. A
/// redrive stopped between batches leaves the rest where they were, to move on a re-run.
const REDRIVE_BATCH: i64 = 500;

/// Sends every dead letter back to the queue it came from (visible now, never received),
/// and answers how many each queue got back, in name order, [`REDRIVE_BATCH`] at a time.
/// Consumers of a running `hookbridge serve` find them on their next poll.
///
/// Each keeps the time it was first sent: ingest dates an event's delivery ids by it, so
/// an event handled in part before it went to the dead-letter queue makes the same
/// deliveries again, not a second set with new ids its receivers could not tell apart.
/// (SQS's redrive sends moved messages as new ones, with a new send time: there, an event
/// redriven more than an hour after its own `time` gets new delivery ids.) The retention
/// sweep goes by it too, so a redriven message is kept 14 days from its first sending,
/// and the deliveries it makes 14 days from then.
pub async fn redrive(db: &Db) -> Result<Vec<(String, u64)>> {
    let now = now_ms();
    let pairs = db.read(with_dead_letters).await?;
    let mut moved = Vec::with_capacity(pairs.len());
    for (queue, dlq) in pairs.into_iter().filter(|(q, d)| q != d) {
        // No more than were there when it began: with `serve` running, a message its
        // consumer fails again can come back to the dead-letter queue meanwhile, and would
        // otherwise keep the loop going.
        let d = dlq.clone();
        let there: i64 = db
            .read(move |c| {
                c.query_row("SELECT COUNT(*) FROM messages WHERE queue = ?1", [d], |r| r.get(0))
                    .map_err(sql("dead_letters.count"))
            })
            .await?;
        let mut total = 0u64;
        while total < there as u64 {
            let batch = REDRIVE_BATCH.min(there - total as i64);
            let (q, d) = (queue.clone(), dlq.clone());
            let n = db
                .write(move |c| {
                    c.prepare_cached(
                        "UPDATE messages SET queue = ?1, visible_at = ?3, receive_count = 0,
                             receipt = NULL, received_at = NULL
                         WHERE seq IN (SELECT seq FROM messages WHERE queue = ?2 LIMIT ?4)",
                    )
                    .and_then(|mut stmt| stmt.execute(params![q, d, now, batch]))
                    .map_err(sql("dead_letters.redrive"))
                })
                .await?;
            total += n as u64;
            if (n as i64) < batch {
                break;
            }
        }
        moved.push((queue, total));
    }
    Ok(moved)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)] // Tests fail loudly on purpose.

    use std::time::Duration;

    use hookbridge_core::ports::{OutgoingMessage, Queue};
    use hookbridge_core::topology::QueueSpec;

    use super::*;
    use crate::EmbeddedQueue;

    /// A message received as often as its queue allows goes to the dead-letter queue,
    /// where it is listed (with its body) and, sent back, is received again from the start.
    #[tokio::test]
    async fn a_dead_letter_is_listed_and_sent_back_to_its_queue() {
        let dir = tempfile::tempdir().unwrap();
        let db = Db::open(&dir.path().join("hb.db")).unwrap();
        for name in ["q", "other"] {
            let spec = QueueSpec {
                name: name.into(),
                dlq: format!("{name}-dlq"),
                visibility_timeout: Duration::ZERO,
                max_receive_count: 2,
            };
            crate::queue::create(&db, &spec).await.unwrap();
        }
        let q = EmbeddedQueue::new(db.clone(), "q");
        q.send_batch(&[OutgoingMessage::now("poisoned".to_owned())]).await.unwrap();
        let first = q.receive(10, Duration::ZERO).await.unwrap();
        assert_eq!(q.receive(10, Duration::ZERO).await.unwrap().len(), 1);
        assert!(q.receive(10, Duration::ZERO).await.unwrap().is_empty(), "the third receive moved it");

        let listed = list(&db, 5).await.unwrap();
        assert_eq!(listed.iter().map(|d| (d.queue.as_str(), d.count)).collect::<Vec<_>>(), [("other", 0), ("q", 1)]);
        assert_eq!(listed[1].dlq, "q-dlq");
        assert_eq!(listed[1].oldest.iter().map(|m| m.body.as_str()).collect::<Vec<_>>(), ["poisoned"]);
        assert!(list(&db, 0).await.unwrap()[1].oldest.is_empty(), "counted, none shown");

        assert_eq!(redrive(&db).await.unwrap(), [("other".to_owned(), 0), ("q".to_owned(), 1)]);
        assert_eq!(list(&db, 5).await.unwrap()[1].count, 0);
        let back = q.receive(10, Duration::ZERO).await.unwrap();
        assert_eq!(back.len(), 1);
        assert_eq!((back[0].body.as_str(), back[0].receive_count), ("poisoned", 1), "received from the start");
        assert_eq!(back[0].sent_at, first[0].sent_at, "sent when it first was: ingest dates its deliveries by it");
        assert_eq!(redrive(&db).await.unwrap(), [("other".to_owned(), 0), ("q".to_owned(), 0)], "nothing twice");
    }

    /// More dead letters than one write moves all go back, a batch at a time, each once.
    #[tokio::test]
    async fn a_large_backlog_goes_back_in_batches() {
        let dir = tempfile::tempdir().unwrap();
        let db = Db::open(&dir.path().join("hb.db")).unwrap();
        let spec = QueueSpec {
            name: "q".into(),
            dlq: "q-dlq".into(),
            visibility_timeout: Duration::ZERO,
            max_receive_count: 1,
        };
        crate::queue::create(&db, &spec).await.unwrap();
        let q = EmbeddedQueue::new(db.clone(), "q");
        let n = 2 * REDRIVE_BATCH as usize + 7;
        let bodies: Vec<OutgoingMessage> = (0..n).map(|i| OutgoingMessage::now(format!("m{i}"))).collect();
        for chunk in bodies.chunks(10) {
            q.send_batch(chunk).await.unwrap();
        }
        db.write(|c| c.execute("UPDATE messages SET queue = 'q-dlq' WHERE queue = 'q'", []).map_err(sql("test")))
            .await
            .unwrap();
        assert_eq!(list(&db, 0).await.unwrap()[0].count, n as u64);
        assert_eq!(redrive(&db).await.unwrap(), [("q".to_owned(), n as u64)]);
        assert_eq!(list(&db, 0).await.unwrap()[0].count, 0);
        let rows: Vec<String> = db
            .read(|c| {
                let mut stmt = c.prepare("SELECT body FROM messages WHERE queue = 'q'").map_err(sql("test"))?;
                stmt.query_map([], |r| r.get(0)).and_then(|rows| rows.collect()).map_err(sql("test"))
            })
            .await
            .unwrap();
        let distinct: std::collections::BTreeSet<&String> = rows.iter().collect();
        assert_eq!((rows.len(), distinct.len()), (n, n), "each back once");
    }
}
