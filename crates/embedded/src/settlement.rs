//! A group's records, sends and deletions in one write: the store and the queues are
//! tables of one database.

use async_trait::async_trait;
use hookbridge_core::ports::{MAX_SEND_DELAY, OutgoingMessage, Settled, Settlement};
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
        if settled.sends.iter().flat_map(|(_, m)| m).any(|m| m.delay > MAX_SEND_DELAY) {
            return Err(Error::TooLarge("a send delay is longer than 15 minutes".to_owned()));
        }
        let updates = settled.updates.to_vec();
        let sends: Vec<(String, Vec<OutgoingMessage>)> =
            settled.sends.iter().map(|(q, m)| ((*q).to_owned(), m.clone())).collect();
        let acks = settled.acks.to_vec();
        let woken: Vec<String> = sends.iter().filter(|(_, m)| !m.is_empty()).map(|(q, _)| q.clone()).collect();
        self.db
            .write(move |c| {
                deliveries::record_in(c, &updates)?;
                for (q, messages) in &sends {
                    queue::insert(c, q, messages)?;
                }
                queue::delete(c, &acks)
            })
            .await?;
        for q in woken {
            self.db.waker(&q).notify_waiters();
        }
        Ok(())
    }
}
