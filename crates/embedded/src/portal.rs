//! Portal links and console sessions, by the hash of their secret.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use hookbridge_core::portal::PortalGrant;
use hookbridge_core::ports::PortalStore;
use hookbridge_core::{Error, Result};
use rusqlite::{OptionalExtension, params};

use crate::db::Db;
use crate::error::sql;

const LINK: &str = "link";
const SESSION: &str = "session";

pub(crate) struct SqlitePortalStore {
    db: Db,
}

impl SqlitePortalStore {
    pub(crate) fn new(db: Db) -> Self {
        Self { db }
    }

    async fn put(&self, kind: &'static str, hash: &str, grant: &PortalGrant) -> Result<()> {
        let doc = serde_json::to_string(grant).map_err(|e| Error::backend("portal.encode", e))?;
        let (hash, exp) = (hash.to_owned(), grant.expires_at.timestamp_millis());
        self.db
            .write(move |c| {
                c.execute(
                    "INSERT INTO portal (kind, hash, doc, expires_at) VALUES (?1, ?2, ?3, ?4)
                     ON CONFLICT(kind, hash) DO UPDATE SET doc = excluded.doc, expires_at = excluded.expires_at",
                    params![kind, hash, doc, exp],
                )
                .map(|_| ())
                .map_err(sql("portal.put"))
            })
            .await
    }
}

fn grant(doc: Option<String>) -> Result<Option<PortalGrant>> {
    doc.map(|d| serde_json::from_str(&d).map_err(|e| Error::corrupt("a portal grant", e))).transpose()
}

#[async_trait]
impl PortalStore for SqlitePortalStore {
    async fn put_link(&self, code_hash: &str, grant: &PortalGrant) -> Result<()> {
        self.put(LINK, code_hash, grant).await
    }

    async fn redeem_link(&self, code_hash: &str, now: DateTime<Utc>) -> Result<Option<PortalGrant>> {
        let (hash, now) = (code_hash.to_owned(), now.timestamp_millis());
        // One statement: of two redeemers, one deletes it and gets it, the other neither.
        let doc: Option<String> = self
            .db
            .write(move |c| {
                c.query_row(
                    "DELETE FROM portal WHERE kind = ?1 AND hash = ?2 AND expires_at > ?3 RETURNING doc",
                    params![LINK, hash, now],
                    |r| r.get(0),
                )
                .optional()
                .map_err(sql("portal.redeem"))
            })
            .await?;
        grant(doc)
    }

    async fn put_session(&self, id_hash: &str, grant: &PortalGrant) -> Result<()> {
        self.put(SESSION, id_hash, grant).await
    }

    async fn session(&self, id_hash: &str, now: DateTime<Utc>) -> Result<Option<PortalGrant>> {
        let (hash, now) = (id_hash.to_owned(), now.timestamp_millis());
        let doc: Option<String> = self
            .db
            .read(move |c| {
                c.query_row(
                    "SELECT doc FROM portal WHERE kind = ?1 AND hash = ?2 AND expires_at > ?3",
                    params![SESSION, hash, now],
                    |r| r.get(0),
                )
                .optional()
                .map_err(sql("portal.session"))
            })
            .await?;
        grant(doc)
    }

    async fn end_session(&self, id_hash: &str) -> Result<()> {
        let hash = id_hash.to_owned();
        self.db
            .write(move |c| {
                c.execute("DELETE FROM portal WHERE kind = ?1 AND hash = ?2", params![SESSION, hash])
                    .map(|_| ())
                    .map_err(sql("portal.end_session"))
            })
            .await
    }
}
