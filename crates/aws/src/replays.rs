//! Replay jobs, beside the hook's deliveries (`H#{hook}`/`R#{id}`), deleted by TTL once
//! they stop being readable. A save is a put conditioned on the step it read (or on the
//! stored job being the one it writes: a request sent again is the same save).

use async_trait::async_trait;
use hookbridge_core::ids::{HookId, ReplayId};
use hookbridge_core::ports::{Page, ReplayStore};
use hookbridge_core::replay::{ReplayJob, listed_after, listed_job};
use hookbridge_core::{Error, Result};

use crate::dynamo::Table;
use crate::keys::{DOC, EXPIRES_AT, Item, SK, doc, expired, get_s, hook_pk, key, n, to_doc};

const STEP: &str = "step";

fn item_key(hook_id: HookId, id: ReplayId) -> Item {
    key(hook_pk(&hook_id), format!("R#{id}"))
}

fn item(job: &ReplayJob) -> Result<Item> {
    let mut item = item_key(job.hook_id, job.id);
    item.insert(DOC.to_owned(), to_doc(job)?);
    item.insert(STEP.to_owned(), n(job.step as i64));
    item.insert(EXPIRES_AT.to_owned(), n(job.expires_at().timestamp()));
    Ok(item)
}

pub(crate) struct DynamoReplayStore {
    table: Table,
}

impl DynamoReplayStore {
    pub(crate) fn new(table: Table) -> Self {
        Self { table }
    }
}

#[async_trait]
impl ReplayStore for DynamoReplayStore {
    async fn create(&self, job: &ReplayJob) -> Result<()> {
        let item = item(job)?;
        let written = item.get(DOC).cloned().ok_or_else(|| Error::corrupt_as("a replay job's document"))?;
        // Or this very job, when the SDK sends the request again after a lost answer.
        self.table
            .client
            .put_item()
            .table_name(&self.table.name)
            .set_item(Some(item))
            .condition_expression("attribute_not_exists(PK) OR #doc = :doc")
            .expression_attribute_names("#doc", DOC)
            .expression_attribute_values(":doc", written)
            .send()
            .await
            .map(|_| ())
            .map_err(|e| Error::backend("dynamodb.PutItem", e))
    }

    async fn get(&self, hook_id: HookId, id: ReplayId) -> Result<Option<ReplayJob>> {
        let out = self
            .table
            .client
            .get_item()
            .table_name(&self.table.name)
            .set_key(Some(item_key(hook_id, id)))
            .consistent_read(true)
            .send()
            .await
            .map_err(|e| Error::backend("dynamodb.GetItem", e))?;
        // DynamoDB deletes late (the emulator never): past its time a job is gone, as on SQLite.
        out.item.filter(|i| !expired(i, chrono::Utc::now().timestamp())).map(|i| doc(&i, "a replay job")).transpose()
    }

    async fn list(&self, hook_id: HookId, limit: usize, cursor: Option<&str>) -> Result<Page<ReplayJob>> {
        // Newest first, down from the cursor's job (itself left out) or from the top of the
        // hook's `R#` keys (`$` sorts just above `#`). A range, not an exclusive start key:
        // the cursor's job may be gone by TTL, and the range needs no item to start from.
        let top = listed_after(cursor)?.map_or_else(|| "R$".to_owned(), |id| format!("R#{id}"));
        let now = chrono::Utc::now().timestamp();
        let mut jobs = Vec::new();
        let mut start: Option<Item> = None;
        loop {
            // One more than the page, and the cursor's own job.
            let read = (limit + 2).min(1000) as i32;
            let range = ("R#".to_owned(), top.clone());
            let (items, next) =
                self.table.query_range_page(&hook_pk(&hook_id), range, true, read, start.take()).await?;
            for item in items {
                // DynamoDB deletes late (the emulator never): past its time a job is gone.
                let sk = get_s(&item, SK)?;
                if sk == top || expired(&item, now) {
                    continue;
                }
                let id = sk.strip_prefix("R#").unwrap_or(sk).to_owned();
                let job = listed_job(&hook_id, &id, doc::<ReplayJob>(&item, "a replay job"));
                jobs.push((id, job));
            }
            match next {
                Some(k) if jobs.len() <= limit => start = Some(k),
                _ => break,
            }
        }
        Ok(Page::cut_readable(jobs, limit))
    }

    async fn save(&self, job: &ReplayJob, read_step: u64) -> Result<bool> {
        let item = item(job)?;
        let written = item.get(DOC).cloned().ok_or_else(|| Error::corrupt_as("a replay job's document"))?;
        // Or the very document this writes: the SDK sends a request again when its answer
        // was lost, and the first may have been applied. Without this, that save would
        // read as someone else's, and the poke that made it would stop the job for good.
        let put = self
            .table
            .client
            .put_item()
            .table_name(&self.table.name)
            .set_item(Some(item))
            .condition_expression("#step = :read OR #doc = :doc")
            .expression_attribute_names("#step", STEP)
            .expression_attribute_names("#doc", DOC)
            .expression_attribute_values(":read", n(read_step as i64))
            .expression_attribute_values(":doc", written)
            .send()
            .await;
        match put {
            Ok(_) => Ok(true),
            Err(e) if e.as_service_error().is_some_and(|s| s.is_conditional_check_failed_exception()) => Ok(false),
            Err(e) => Err(Error::backend("dynamodb.PutItem", e)),
        }
    }
}
