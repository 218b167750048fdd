//! A group's records, sends and deletions in one write: the store and the queues are
//! tables of one database.

use std::collections::HashSet;

use async_trait::async_trait;
use hookbridge_core::ports::{CarriedOn, MAX_MESSAGE_BYTES, MAX_SEND_DELAY, Settled, Settlement};
use hookbridge_core::{Error, Result};

use crate::db::Db;
use crate::{deliveries, queue};

pub(crate) struct SqliteSettlement {
    db: Db,
}

impl SqliteSettlement {
    pub(crate) fn new(db: Db) -> Self {
        Self { db }
    }
}

#[async_trait]
impl Settlement for SqliteSettlement {
    async fn settle(&self, settled: Settled<'_>) -> Result<()> {
        let carried = settled.sends.iter().flat_map(|(_, m)| m).map(|c| &c.message);
        for m in carried {
            if m.delay > MAX_SEND_DELAY {
                return Err(Error::TooLarge("a send delay is longer than 15 minutes".to_owned()));
            }
            if m.body.len() > MAX_MESSAGE_BYTES {
                return Err(Error::TooLarge(format!("a message is larger than {MAX_MESSAGE_BYTES} bytes")));
            }
        }
        let updates = settled.updates.to_vec();
        let sends: Vec<(String, Vec<CarriedOn>)> =
            settled.sends.iter().map(|(q, m)| ((*q).to_owned(), m.clone())).collect();
        let acks = settled.acks.to_vec();
        let woken: Vec<String> = sends.iter().filter(|(_, m)| !m.is_empty()).map(|(q, _)| q.clone()).collect();
        self.db
            .write(move |c| {
                // The deletions first: they say which messages this group still held.
                let held = queue::delete(c, &acks)?;
                let held: HashSet<&str> =
                    acks.iter().zip(held).filter(|(_, h)| *h).map(|(r, _)| r.0.as_str()).collect();
                // A delivery whose message another holder received again is carried on by
                // that one, which records where it stands: of this group's record only the
                // attempt is kept (its `RETRYING` promised a retry it does not send).
                let carried_elsewhere: HashSet<usize> = sends
                    .iter()
                    .flat_map(|(_, m)| m)
                    .filter(|c| !held.contains(c.replaces.0.as_str()))
                    .filter_map(|c| c.record)
                    .collect();
                deliveries::record_in(c, &updates, &carried_elsewhere)?;
                for (q, carried) in &sends {
                    let still_held = carried.iter().filter(|c| held.contains(c.replaces.0.as_str()));
                    queue::insert(c, q, still_held.map(|c| &c.message))?;
                }
                Ok(())
            })
            .await?;
        for q in woken {
            self.db.waker(&q).notify_waiters();
        }
        Ok(())
    }
}
