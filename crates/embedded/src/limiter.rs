//! Rate state in SQLite: one row per key, read and written in one transaction.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use hookbridge_core::Result;
use hookbridge_core::ports::{Admission, RateLimiter};
use hookbridge_core::rate::{self, Rate, from_micros, micros};
use rusqlite::{OptionalExtension, TransactionBehavior, params};

use crate::db::Db;
use crate::error::sql;

pub(crate) struct SqliteRateLimiter {
    db: Db,
}

impl SqliteRateLimiter {
    pub(crate) fn new(db: Db) -> Self {
        Self { db }
    }

    /// Runs `step` on the key's state inside one write transaction and stores what it returns.
    async fn update<T: Send + 'static>(
        &self,
        key: &str,
        step: impl FnOnce(Option<i64>) -> (Option<i64>, T) + Send + 'static,
    ) -> Result<T> {
        let key = key.to_owned();
        self.db
            .write(move |c| {
                let tx = c.transaction_with_behavior(TransactionBehavior::Immediate).map_err(sql("rates.update"))?;
                let next: Option<i64> = tx
                    .query_row("SELECT next_us FROM rates WHERE key = ?1", [&key], |r| r.get(0))
                    .optional()
                    .map_err(sql("rates.update"))?;
                let (store, out) = step(next);
                if let Some(n) = store {
                    tx.execute(
                        "INSERT INTO rates (key, next_us) VALUES (?1, ?2)
                         ON CONFLICT(key) DO UPDATE SET next_us = excluded.next_us",
                        params![key, n],
                    )
                    .map_err(sql("rates.update"))?;
                }
                tx.commit().map_err(sql("rates.update"))?;
                Ok(out)
            })
            .await
    }
}

#[async_trait]
impl RateLimiter for SqliteRateLimiter {
    async fn pace(&self, key: &str, rate: Rate, count: u32, now: DateTime<Utc>) -> Result<DateTime<Utc>> {
        let now = micros(now);
        let first = self
            .update(key, move |next| {
                let (first, new) = rate::pace(next, now, rate, count);
                (Some(new), first)
            })
            .await?;
        Ok(from_micros(first))
    }

    async fn admit(&self, key: &str, rate: Rate, burst: u32, count: u32, now: DateTime<Utc>) -> Result<Admission> {
        let now = micros(now);
        self.update(key, move |next| match rate::admit(next, now, rate, burst, count) {
            Ok(new) => (Some(new), Admission::Admitted),
            Err(wait) => (None, Admission::RetryAfter(wait)),
        })
        .await
    }
}
