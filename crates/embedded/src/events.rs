//! Envelopes kept in the event store (large ones, and ones several hooks share), and the
//! event types seen.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use hookbridge_core::catalog::SeenMemo;
use hookbridge_core::envelope::Envelope;
use hookbridge_core::ids::{EventId, TenantId};
use hookbridge_core::ports::EventStore;
use hookbridge_core::{Error, Result};
use rusqlite::{OptionalExtension, params};

use crate::db::{Db, now_ms};
use crate::error::sql;

/// Records an event type as seen at a time.
const SEEN_UPSERT: &str = "INSERT INTO seen_types (tenant, name, last_seen) VALUES (?1, ?2, ?3)
     ON CONFLICT(tenant, name) DO UPDATE SET last_seen = max(last_seen, excluded.last_seen)";

pub(crate) struct SqliteEventStore {
    db: Db,
    seen: SeenMemo,
}

impl SqliteEventStore {
    pub(crate) fn new(db: Db) -> Self {
        Self { db, seen: SeenMemo::default() }
    }
}

#[async_trait]
impl EventStore for SqliteEventStore {
    async fn put(&self, tenant: &TenantId, envelopes: &[Envelope], expires_at: DateTime<Utc>) -> Result<()> {
        let now = Utc::now();
        let seen = self.seen.due(tenant.as_str(), envelopes.iter().map(|e| e.detail_type.as_str()), now);
        let names = seen.clone();
        let owner = tenant.to_string();
        let rows: Vec<(String, String)> = envelopes.iter().map(|e| (e.id.to_string(), e.to_body())).collect();
        let exp = expires_at.timestamp_millis();
        let at = now.timestamp_millis();
        let written = self
            .db
            .write(move |c| {
                let mut stmt = c
                    .prepare_cached(
                        // Stored again, an envelope is kept until the later expiry: one
                        // kept until the earlier (dropped behind a row about to expire, or
                        // past it and not yet swept) was swept with the old row, and its
                        // deliveries cancelled. A row already past its expiry is gone as far
                        // as every read is concerned, so its document is the new one.
                        "INSERT INTO events (tenant, id, doc, expires_at) VALUES (?1, ?2, ?3, ?4)
                         ON CONFLICT DO UPDATE SET
                             doc = CASE WHEN events.expires_at <= ?5 THEN excluded.doc ELSE events.doc END,
                             expires_at = max(events.expires_at, excluded.expires_at)",
                    )
                    .map_err(sql("events.put"))?;
                // As the write is made, not as it was queued behind others.
                let cutoff = crate::db::now_ms();
                for (id, doc) in &rows {
                    stmt.execute(params![owner, id, doc, exp, cutoff]).map_err(sql("events.put"))?;
                }
                let mut seen_stmt = c.prepare_cached(SEEN_UPSERT).map_err(sql("events.put"))?;
                for name in &seen {
                    seen_stmt.execute(params![owner, name, at]).map_err(sql("events.put"))?;
                }
                Ok(())
            })
            .await;
        self.seen.settled(tenant.as_str(), &names, now, written)
    }

    async fn record_seen(&self, tenant: &TenantId, types: &[&str]) -> Result<()> {
        let now = Utc::now();
        let seen = self.seen.due(tenant.as_str(), types.iter().copied(), now);
        if seen.is_empty() {
            return Ok(());
        }
        let names = seen.clone();
        let (owner, at) = (tenant.to_string(), now.timestamp_millis());
        let written = self
            .db
            .write(move |c| {
                let mut stmt = c.prepare_cached(SEEN_UPSERT).map_err(sql("events.seen"))?;
                for name in &seen {
                    stmt.execute(params![owner, name, at]).map_err(sql("events.seen"))?;
                }
                Ok(())
            })
            .await;
        self.seen.settled(tenant.as_str(), &names, now, written)
    }

    async fn get(&self, tenant: &TenantId, id: &EventId) -> Result<Option<Envelope>> {
        let (tenant, id) = (tenant.to_string(), id.to_string());
        let doc: Option<String> = self
            .db
            .read(move |c| {
                c.query_row(
                    "SELECT doc FROM events WHERE tenant = ?1 AND id = ?2 AND expires_at > ?3",
                    params![tenant, id, now_ms()],
                    |r| r.get(0),
                )
                .optional()
                .map_err(sql("events.get"))
            })
            .await?;
        doc.map(|d| serde_json::from_str(&d).map_err(|e| Error::corrupt("an event", e))).transpose()
    }
}
