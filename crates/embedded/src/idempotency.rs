//! Publish de-duplication keys.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use hookbridge_core::Result;
use hookbridge_core::ids::TenantId;
use hookbridge_core::ports::{Claim, IdempotencyStore, StoredResponse};
use rusqlite::{OptionalExtension, params};

use crate::db::Db;
use crate::error::sql;

pub(crate) struct SqliteIdempotencyStore {
    db: Db,
}

impl SqliteIdempotencyStore {
    pub(crate) fn new(db: Db) -> Self {
        Self { db }
    }
}

#[async_trait]
impl IdempotencyStore for SqliteIdempotencyStore {
    async fn claim(
        &self,
        tenant: &TenantId,
        key: &str,
        fingerprint: &str,
        now: DateTime<Utc>,
        expires_at: DateTime<Utc>,
    ) -> Result<Claim> {
        let (tenant, key, fp) = (tenant.to_string(), key.to_owned(), fingerprint.to_owned());
        let (now, exp) = (now.timestamp_millis(), expires_at.timestamp_millis());
        self.db
            .write(move |c| {
                let existing = c
                    .query_row(
                        "SELECT fingerprint, status, body FROM idempotency
                         WHERE tenant = ?1 AND key = ?2 AND expires_at > ?3",
                        params![tenant, key, now],
                        |r| Ok((r.get::<_, String>(0)?, r.get::<_, Option<u16>>(1)?, r.get::<_, Option<String>>(2)?)),
                    )
                    .optional()
                    .map_err(sql("idempotency.claim"))?;
                let claim = match existing {
                    Some((fingerprint, status, body)) => Claim::Existing {
                        fingerprint,
                        response: status.zip(body).map(|(status, body)| StoredResponse { status, body }),
                    },
                    None => {
                        c.execute(
                            "INSERT INTO idempotency (tenant, key, fingerprint, status, body, expires_at)
                             VALUES (?1, ?2, ?3, NULL, NULL, ?4)
                             ON CONFLICT(tenant, key) DO UPDATE SET fingerprint = excluded.fingerprint,
                                 status = NULL, body = NULL, expires_at = excluded.expires_at",
                            params![tenant, key, fp, exp],
                        )
                        .map_err(sql("idempotency.claim"))?;
                        Claim::Claimed
                    }
                };
                Ok(claim)
            })
            .await
    }

    async fn complete(
        &self,
        tenant: &TenantId,
        key: &str,
        response: &StoredResponse,
        expires_at: DateTime<Utc>,
    ) -> Result<()> {
        let (tenant, key, status, body) = (tenant.to_string(), key.to_owned(), response.status, response.body.clone());
        let expires = expires_at.timestamp_millis();
        self.db
            .write(move |c| {
                c.execute(
                    "UPDATE idempotency SET status = ?1, body = ?2, expires_at = ?5 WHERE tenant = ?3 AND key = ?4",
                    params![status, body, tenant, key, expires],
                )
                .map(|_| ())
                .map_err(sql("idempotency.complete"))
            })
            .await
    }

    async fn release(&self, tenant: &TenantId, key: &str) -> Result<()> {
        let (tenant, key) = (tenant.to_string(), key.to_owned());
        self.db
            .write(move |c| {
                c.execute("DELETE FROM idempotency WHERE tenant = ?1 AND key = ?2 AND status IS NULL", [&tenant, &key])
                    .map(|_| ())
                    .map_err(sql("idempotency.release"))
            })
            .await
    }
}
