//! Replay jobs, one row each, saved with a check on the step they were read at.

use async_trait::async_trait;
use hookbridge_core::ids::{HookId, ReplayId};
use hookbridge_core::ports::{Page, ReplayStore};
use hookbridge_core::replay::{ReplayJob, listed_after, listed_job};
use hookbridge_core::{Error, Result};
use rusqlite::{OptionalExtension, params};

use crate::db::Db;
use crate::error::sql;

pub(crate) struct SqliteReplayStore {
    db: Db,
}

impl SqliteReplayStore {
    pub(crate) fn new(db: Db) -> Self {
        Self { db }
    }
}

fn encode(job: &ReplayJob) -> Result<String> {
    serde_json::to_string(job).map_err(|e| Error::backend("replays.encode", e))
}

#[async_trait]
impl ReplayStore for SqliteReplayStore {
    async fn create(&self, job: &ReplayJob) -> Result<()> {
        let doc = encode(job)?;
        let (h, id, step, exp) =
            (job.hook_id.to_string(), job.id.to_string(), job.step as i64, job.expires_at().timestamp_millis());
        self.db
            .write(move |c| {
                // The same job created again is the same create, as on DynamoDB; another
                // job under its id is refused.
                let n = c
                    .execute(
                        "INSERT INTO replays (hook_id, id, step, doc, expires_at) VALUES (?1, ?2, ?3, ?4, ?5)
                         ON CONFLICT (hook_id, id) DO UPDATE SET doc = excluded.doc WHERE replays.doc = excluded.doc",
                        params![h, id, step, doc, exp],
                    )
                    .map_err(sql("replays.create"))?;
                if n == 1 { Ok(()) } else { Err(Error::backend("replays.create", "a replay job with this id exists")) }
            })
            .await
    }

    async fn get(&self, hook_id: HookId, id: ReplayId) -> Result<Option<ReplayJob>> {
        let (h, id, now) = (hook_id.to_string(), id.to_string(), chrono::Utc::now().timestamp_millis());
        let doc: Option<String> = self
            .db
            .read(move |c| {
                // Past its time a job is gone, whether or not the sweep has come by yet.
                c.query_row(
                    "SELECT doc FROM replays WHERE hook_id = ?1 AND id = ?2 AND expires_at > ?3",
                    params![h, id, now],
                    |r| r.get(0),
                )
                .optional()
                .map_err(sql("replays.get"))
            })
            .await?;
        doc.map(|d| serde_json::from_str(&d).map_err(|e| Error::corrupt("a replay job", e))).transpose()
    }

    async fn list(&self, hook_id: HookId, limit: usize, cursor: Option<&str>) -> Result<Page<ReplayJob>> {
        // Ids are ULIDs, so their text sorts as the times they were asked for; `~` sorts
        // above every one.
        let below = listed_after(cursor)?.map_or_else(|| "~".to_owned(), |id| id.to_string());
        let (h, now) = (hook_id.to_string(), chrono::Utc::now().timestamp_millis());
        let docs: Vec<(String, String)> = self
            .db
            .read(move |c| {
                let mut stmt = c
                    .prepare_cached(
                        "SELECT id, doc FROM replays WHERE hook_id = ?1 AND id < ?2 AND expires_at > ?3
                         ORDER BY id DESC LIMIT ?4",
                    )
                    .map_err(sql("replays.list"))?;
                let rows = stmt
                    .query_map(params![h, below, now, limit as i64 + 1], |r| Ok((r.get(0)?, r.get(1)?)))
                    .map_err(sql("replays.list"))?;
                rows.collect::<rusqlite::Result<Vec<(String, String)>>>().map_err(sql("replays.list"))
            })
            .await?;
        let rows = docs.into_iter().map(|(id, doc)| {
            let job = listed_job(&hook_id, &id, serde_json::from_str::<ReplayJob>(&doc));
            (id, job)
        });
        Ok(Page::cut_readable(rows.collect(), limit))
    }

    async fn save(&self, job: &ReplayJob, read_step: u64) -> Result<bool> {
        let doc = encode(job)?;
        let (h, id, step, exp) =
            (job.hook_id.to_string(), job.id.to_string(), job.step as i64, job.expires_at().timestamp_millis());
        self.db
            .write(move |c| {
                c.execute(
                    // Or the very document it writes: a save sent again is the same save.
                    "UPDATE replays SET doc = ?3, step = ?4, expires_at = ?6
                     WHERE hook_id = ?1 AND id = ?2 AND (step = ?5 OR doc = ?3)",
                    params![h, id, doc, step, read_step as i64, exp],
                )
                .map(|n| n == 1)
                .map_err(sql("replays.save"))
            })
            .await
    }
}
