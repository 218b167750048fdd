//! Deliveries in SQLite, keyed by hook and delivery id (a ULID, so a time window is a
//! key range), with their attempts inline.

use std::collections::HashSet;

use async_trait::async_trait;
use hookbridge_core::delivery::{Delivery, DeliveryUpdate};
use hookbridge_core::ids::{DeliveryId, HookId};
use hookbridge_core::ports::{DeliveryStore, Order, Page, Window};
use hookbridge_core::{Error, Result};
use rusqlite::{OptionalExtension, params};

use crate::db::{Db, now_ms};
use crate::error::sql;

pub(crate) struct SqliteDeliveryStore {
    db: Db,
}

impl SqliteDeliveryStore {
    pub(crate) fn new(db: Db) -> Self {
        Self { db }
    }
}

fn from_doc(doc: &str) -> Result<Delivery> {
    serde_json::from_str(doc).map_err(|e| Error::corrupt("a delivery", e))
}

/// Whether a kept envelope is written into its delivery's row as the JSON it is, rather
/// than as a string of it (decision 0036). Not in this release: the release before it
/// reads the envelope only as a string, and an older release must open the database again
/// (README). This release reads both; the next one turns this on.
const ENVELOPE_AS_JSON: bool = false;

/// A delivery as stored, as this release writes it ([`ENVELOPE_AS_JSON`]).
fn to_doc(d: Delivery) -> Result<String> {
    doc_of(d, ENVELOPE_AS_JSON)
}

/// A delivery's JSON; with `envelope_as_json`, a kept envelope goes into it as the JSON it
/// is. Escaping each of the envelope's quotes was most of what encoding a record cost, on
/// the one writer (BENCHMARKS.md); `Delivery` reads either form to the same text. An
/// envelope that is not a JSON object (none is, but the record must read back as it was
/// written) stays a string.
fn doc_of(mut d: Delivery, envelope_as_json: bool) -> Result<String> {
    let object = |e: &str| {
        e.starts_with('{') && e.ends_with('}') && serde_json::from_str::<&serde_json::value::RawValue>(e).is_ok()
    };
    let kept = match d.envelope.take() {
        Some(e) if envelope_as_json && object(&e) => Some(e),
        not_json => {
            d.envelope = not_json;
            None
        }
    };
    let mut doc = serde_json::to_string(&d).map_err(|e| Error::backend("deliveries.encode", e))?;
    if let Some(envelope) = kept {
        // `{…}` becomes `{…,"envelope":…}`: a delivery's JSON is an object, never empty.
        doc.pop();
        doc.push_str(r#","envelope":"#);
        doc.push_str(&envelope);
        doc.push('}');
    }
    Ok(doc)
}

fn expiry(d: &Delivery) -> i64 {
    hookbridge_core::delivery::expires_at(d.id).timestamp_millis()
}

/// Applies `updates` inside an open transaction (shared with a settlement's sends and
/// deletions).
///
/// Most updates are a delivery's first record (its first attempt, on the happy path), so
/// each is inserted as a new delivery first and read back only when one is already there:
/// the read before every write was a sixth of the records' cost (BENCHMARKS.md).
pub(crate) fn record_in(
    c: &rusqlite::Connection,
    updates: &[DeliveryUpdate],
    carried_elsewhere: &HashSet<usize>,
) -> Result<()> {
    for (i, u) in updates.iter().enumerate() {
        let k = &u.delivery;
        let (h, id) = (k.hook_id.to_string(), k.delivery_id.to_string());
        let apply = |d: &mut Delivery| {
            if !carried_elsewhere.is_empty() && carried_elsewhere.contains(&i) { d.keep_attempt(u) } else { d.apply(u) }
        };
        let mut d = Delivery::opened_by(u);
        apply(&mut d);
        let expires_at = expiry(&d);
        let doc = to_doc(d)?;
        let opened = c
            .prepare_cached(
                "INSERT INTO deliveries (hook_id, id, doc, expires_at) VALUES (?1, ?2, ?3, ?4)
                 ON CONFLICT(hook_id, id) DO NOTHING",
            )
            .and_then(|mut stmt| stmt.execute(params![h, id, doc, expires_at]))
            .map_err(sql("deliveries.record"))?;
        if opened == 1 {
            continue;
        }
        let doc: String = c
            .prepare_cached("SELECT doc FROM deliveries WHERE hook_id = ?1 AND id = ?2")
            .and_then(|mut stmt| stmt.query_row([&h, &id], |r| r.get(0)))
            .map_err(sql("deliveries.record"))?;
        // A record this version cannot read must not fail the group it is written with (the
        // others' requests were sent; failing would send them again, round after round): it
        // starts again from this update, which keeps what this attempt did.
        let mut d = from_doc(&doc).unwrap_or_else(|e| {
            tracing::error!(hook_id = %h, delivery_id = %id, error = %e, "cannot read the stored delivery; recorded afresh");
            Delivery::opened_by(u)
        });
        apply(&mut d);
        let expires_at = expiry(&d);
        let doc = to_doc(d)?;
        c.prepare_cached("UPDATE deliveries SET doc = ?3, expires_at = ?4 WHERE hook_id = ?1 AND id = ?2")
            .and_then(|mut stmt| stmt.execute(params![h, id, doc, expires_at]))
            .map_err(sql("deliveries.record"))?;
    }
    Ok(())
}

#[async_trait]
impl DeliveryStore for SqliteDeliveryStore {
    async fn insert(&self, deliveries: &[Delivery]) -> Result<()> {
        let rows = deliveries
            .iter()
            .map(|d| Ok((d.hook_id.to_string(), d.id.to_string(), to_doc(d.clone())?, expiry(d))))
            .collect::<Result<Vec<_>>>()?;
        self.db
            .write(move |c| {
                let mut stmt = c
                    .prepare_cached(
                        "INSERT INTO deliveries (hook_id, id, doc, expires_at) VALUES (?1, ?2, ?3, ?4)
                         ON CONFLICT DO NOTHING",
                    )
                    .map_err(sql("deliveries.insert"))?;
                for (h, id, doc, exp) in &rows {
                    stmt.execute(params![h, id, doc, exp]).map_err(sql("deliveries.insert"))?;
                }
                Ok(())
            })
            .await
    }

    async fn record(&self, updates: &[DeliveryUpdate]) -> Result<()> {
        let updates = updates.to_vec();
        self.db.write(move |c| record_in(c, &updates, &HashSet::new())).await
    }

    async fn get(&self, hook_id: HookId, id: DeliveryId) -> Result<Option<Delivery>> {
        let (h, id) = (hook_id.to_string(), id.to_string());
        let doc: Option<String> = self
            .db
            .read(move |c| {
                c.query_row(
                    "SELECT doc FROM deliveries WHERE hook_id = ?1 AND id = ?2 AND expires_at > ?3",
                    params![h, id, now_ms()],
                    |r| r.get(0),
                )
                .optional()
                .map_err(sql("deliveries.get"))
            })
            .await?;
        doc.as_deref().map(from_doc).transpose()
    }

    async fn list(
        &self,
        hook_id: HookId,
        window: Window,
        order: Order,
        limit: usize,
        cursor: Option<&str>,
    ) -> Result<Page<Delivery>> {
        let (lo, hi) = window.id_range_in(order, cursor)?;
        let (lo, hi) = (lo.to_string(), hi.to_string());
        let h = hook_id.to_string();
        let limit = limit.max(1);
        let rows: Vec<(String, String)> = self
            .db
            .read(move |c| {
                let mut stmt = c
                    .prepare_cached(match order {
                        Order::NewestFirst => {
                            "SELECT id, doc FROM deliveries
                             WHERE hook_id = ?1 AND id >= ?2 AND id < ?3 AND expires_at > ?4
                             ORDER BY id DESC LIMIT ?5"
                        }
                        Order::OldestFirst => {
                            "SELECT id, doc FROM deliveries
                             WHERE hook_id = ?1 AND id >= ?2 AND id < ?3 AND expires_at > ?4
                             ORDER BY id ASC LIMIT ?5"
                        }
                    })
                    .map_err(sql("deliveries.list"))?;
                stmt.query_map(params![h, lo, hi, now_ms(), limit as i64 + 1], |r| Ok((r.get(0)?, r.get(1)?)))
                    .map_err(sql("deliveries.list"))?
                    .collect::<rusqlite::Result<Vec<(String, String)>>>()
                    .map_err(sql("deliveries.list"))
            })
            .await?;
        // Cut by the rows' ids, so that the cursor moves past a record left out below.
        let page = Page::cut(rows, limit, |(id, _)| id.clone());
        let items = page
            .items
            .iter()
            .filter_map(|(id, doc)| {
                from_doc(doc)
                    .inspect_err(|e| {
                        tracing::error!(hook_id = %hook_id, delivery_id = %id, error = %e, "cannot read the stored delivery; left out of the listing");
                    })
                    .ok()
            })
            .collect();
        Ok(Page { items, next_cursor: page.next_cursor })
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)] // Tests fail loudly on purpose.

    use chrono::Utc;
    use hookbridge_core::delivery::{DeliveryKey, Opening};

    use super::*;

    fn key() -> DeliveryKey {
        DeliveryKey {
            tenant: "acme".parse().unwrap(),
            hook_id: HookId::generate(),
            delivery_id: DeliveryId::generate(),
            event_id: "e-1".parse().unwrap(),
            event_type: "user.login".into(),
        }
    }

    const ENVELOPE: &str = r#"{"id": "e-1", "detail":{"say":"a \"quoted\" word","name":"Jos\u00e9"}}"#;

    /// The delivery `key` opened by a record that keeps [`ENVELOPE`].
    fn opened(key: &DeliveryKey) -> DeliveryUpdate {
        let mut u = DeliveryUpdate::cancelled(key.clone(), 0, "for the test".into(), Utc::now());
        u.opening = Some(Opening { created_at: Utc::now(), envelope: Some(ENVELOPE.to_owned()) });
        u
    }

    async fn stored_doc(db: &Db) -> String {
        db.write(|c| c.query_row("SELECT doc FROM deliveries", [], |r| r.get(0)).map_err(crate::error::sql("test")))
            .await
            .unwrap()
    }

    /// This release writes a kept envelope as a string of its JSON, which the release
    /// before it reads (decision 0036); it reads back as the same text.
    #[tokio::test]
    async fn this_release_writes_a_kept_envelope_as_the_release_before_reads_it() {
        let dir = tempfile::tempdir().unwrap();
        let db = Db::open(&dir.path().join("hb.db")).unwrap();
        let store = SqliteDeliveryStore::new(db.clone());
        let key = key();
        let u = opened(&key);
        db.write(move |c| record_in(c, std::slice::from_ref(&u), &HashSet::new())).await.unwrap();
        let doc = stored_doc(&db).await;
        assert!(doc.contains(&format!(r#""envelope":{}"#, serde_json::to_string(ENVELOPE).unwrap())), "{doc}");
        let read = store.get(key.hook_id, key.delivery_id).await.unwrap().unwrap();
        assert_eq!(read.envelope.as_deref(), Some(ENVELOPE));
    }

    /// A row whose kept envelope is the JSON it is (as the next release writes it) reads
    /// back as the same text, spaces and escapes and all, through `get` and through the
    /// next record of the same delivery; and the envelope is written so only as an object.
    #[tokio::test]
    async fn a_kept_envelope_written_as_its_json_reads_back_as_the_same_text() {
        let dir = tempfile::tempdir().unwrap();
        let db = Db::open(&dir.path().join("hb.db")).unwrap();
        let store = SqliteDeliveryStore::new(db.clone());
        let key = key();
        let mut d = Delivery::opened_by(&opened(&key));
        d.apply(&opened(&key));
        let doc = doc_of(d.clone(), true).unwrap();
        assert!(doc.contains(&format!(r#""envelope":{ENVELOPE}}}"#)), "{doc}");
        let (h, id, exp) = (key.hook_id.to_string(), key.delivery_id.to_string(), expiry(&d));
        db.write(move |c| {
            c.execute(
                "INSERT INTO deliveries (hook_id, id, doc, expires_at) VALUES (?1, ?2, ?3, ?4)",
                params![h, id, doc, exp],
            )
            .map_err(crate::error::sql("test"))
        })
        .await
        .unwrap();
        let read = store.get(key.hook_id, key.delivery_id).await.unwrap().unwrap();
        assert_eq!(read.envelope.as_deref(), Some(ENVELOPE));
        let again = DeliveryUpdate::cancelled(key.clone(), 1, "again".into(), Utc::now());
        db.write(move |c| record_in(c, std::slice::from_ref(&again), &HashSet::new())).await.unwrap();
        let read = store.get(key.hook_id, key.delivery_id).await.unwrap().unwrap();
        assert_eq!((read.round, read.envelope.as_deref()), (1, Some(ENVELOPE)));

        for not_an_object in [r#""a string""#, "null", " {\"padded\": 1} "] {
            d.envelope = Some(not_an_object.to_owned());
            let back = from_doc(&doc_of(d.clone(), true).unwrap()).unwrap();
            assert_eq!(back.envelope.as_deref(), Some(not_an_object));
        }
    }
}
