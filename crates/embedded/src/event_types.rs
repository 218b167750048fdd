//! Declared and seen event types (seen ones are written by the event store).

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use hookbridge_core::catalog::DeclaredType;
use hookbridge_core::ids::TenantId;
use hookbridge_core::ports::EventTypeStore;
use hookbridge_core::{Error, Result};
use rusqlite::params;

use crate::db::Db;
use crate::error::sql;

pub(crate) struct SqliteEventTypeStore {
    db: Db,
}

impl SqliteEventTypeStore {
    pub(crate) fn new(db: Db) -> Self {
        Self { db }
    }
}

#[async_trait]
impl EventTypeStore for SqliteEventTypeStore {
    async fn declare(&self, tenant: &TenantId, declared: &DeclaredType) -> Result<()> {
        let doc = serde_json::to_string(declared).map_err(|e| Error::backend("event_types.encode", e))?;
        let (tenant, name) = (tenant.to_string(), declared.name.clone());
        self.db
            .write(move |c| {
                c.execute(
                    "INSERT INTO event_types (tenant, name, doc) VALUES (?1, ?2, ?3)
                     ON CONFLICT(tenant, name) DO UPDATE SET doc = excluded.doc",
                    params![tenant, name, doc],
                )
                .map(|_| ())
                .map_err(sql("event_types.declare"))
            })
            .await
    }

    async fn undeclare(&self, tenant: &TenantId, name: &str) -> Result<bool> {
        let (tenant, name) = (tenant.to_string(), name.to_owned());
        let n = self
            .db
            .write(move |c| {
                c.execute("DELETE FROM event_types WHERE tenant = ?1 AND name = ?2", [&tenant, &name])
                    .map_err(sql("event_types.undeclare"))
            })
            .await?;
        Ok(n == 1)
    }

    async fn declared(&self, tenant: &TenantId) -> Result<Vec<DeclaredType>> {
        let tenant = tenant.to_string();
        let docs: Vec<String> = self
            .db
            .read(move |c| {
                let mut stmt = c
                    .prepare_cached("SELECT doc FROM event_types WHERE tenant = ?1 ORDER BY name")
                    .map_err(sql("event_types.declared"))?;
                stmt.query_map([tenant], |r| r.get(0))
                    .map_err(sql("event_types.declared"))?
                    .collect::<rusqlite::Result<Vec<String>>>()
                    .map_err(sql("event_types.declared"))
            })
            .await?;
        docs.iter().map(|d| serde_json::from_str(d).map_err(|e| Error::corrupt("an event type", e))).collect()
    }

    async fn seen(&self, tenant: &TenantId, since: DateTime<Utc>, max: usize) -> Result<Vec<(String, DateTime<Utc>)>> {
        let (tenant, since, max) = (tenant.to_string(), since.timestamp_millis(), max.min(i64::MAX as usize) as i64);
        let rows: Vec<(String, i64)> = self
            .db
            .read(move |c| {
                let mut stmt = c
                    .prepare_cached(
                        "SELECT name, last_seen FROM seen_types WHERE tenant = ?1 AND last_seen >= ?2
                         ORDER BY name LIMIT ?3",
                    )
                    .map_err(sql("event_types.seen"))?;
                stmt.query_map(params![tenant, since, max], |r| Ok((r.get(0)?, r.get(1)?)))
                    .map_err(sql("event_types.seen"))?
                    .collect::<rusqlite::Result<Vec<(String, i64)>>>()
                    .map_err(sql("event_types.seen"))
            })
            .await?;
        Ok(rows.into_iter().map(|(n, at)| (n, DateTime::from_timestamp_millis(at).unwrap_or_default())).collect())
    }
}
