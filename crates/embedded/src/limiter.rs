//! Rate state in SQLite: one row per key, read and written in one transaction.

use async_trait::async_trait;
use hookbridge_core::Result;
use hookbridge_core::ports::{RateLimiter, Step};
use rusqlite::{OptionalExtension, params};

use crate::db::Db;
use crate::error::sql;

pub(crate) struct SqliteRateLimiter {
    db: Db,
}

impl SqliteRateLimiter {
    pub(crate) fn new(db: Db) -> Self {
        Self { db }
    }
}

#[async_trait]
impl RateLimiter for SqliteRateLimiter {
    async fn update(&self, key: &str, step: Step) -> Result<Option<i64>> {
        let key = key.to_owned();
        self.db
            .write(move |c| {
                let seen: Option<i64> = c
                    .prepare_cached("SELECT next_us FROM rates WHERE key = ?1")
                    .and_then(|mut stmt| stmt.query_row([&key], |r| r.get(0)).optional())
                    .map_err(sql("rates.update"))?;
                if let Some(n) = step(seen) {
                    c.prepare_cached(
                        "INSERT INTO rates (key, next_us) VALUES (?1, ?2)
                         ON CONFLICT(key) DO UPDATE SET next_us = excluded.next_us",
                    )
                    .and_then(|mut stmt| stmt.execute(params![key, n]))
                    .map_err(sql("rates.update"))?;
                }
                Ok(seen)
            })
            .await
    }
}
