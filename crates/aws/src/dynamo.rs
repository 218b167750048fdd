//! Shared DynamoDB mechanics: batch writes chunked at 25 with `UnprocessedItems` retried,
//! and paginated queries.

use std::time::Duration;

use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::types::{PutRequest, WriteRequest};
use futures::StreamExt;
use hookbridge_core::{Error, Result};

use crate::keys::{Item, s};

/// BatchWriteItem's limit.
const BATCH_WRITE_MAX: usize = 25;
/// Rounds of `UnprocessedItems` retries before giving up (with backoff, about 9.5 s of
/// waiting in all: 0.1, 0.2, 0.4, 0.8, 1.6, 3.2 and 3.2 s).
const UNPROCESSED_ROUNDS: u32 = 8;

/// The table and its client.
#[derive(Debug, Clone)]
pub struct Table {
    pub(crate) client: Client,
    pub(crate) name: String,
}

impl Table {
    /// A table handle.
    pub fn new(client: Client, name: impl Into<String>) -> Self {
        Self { client, name: name.into() }
    }

    /// Every item of partition `pk` whose sort key starts with `prefix`, all pages, read
    /// consistently.
    pub(crate) async fn query_prefix(&self, pk: String, prefix: String) -> Result<Vec<Item>> {
        let mut out = Vec::new();
        let mut start: Option<Item> = None;
        loop {
            let (items, next) = self.query_prefix_page(&pk, &prefix, None, start.take()).await?;
            out.extend(items);
            match next {
                Some(k) => start = Some(k),
                None => return Ok(out),
            }
        }
    }

    /// One page of those items, in sort-key order: at most `limit` (DynamoDB's 1 MB page
    /// when `None`) after `start`; and where the next page starts, if any is left.
    pub(crate) async fn query_prefix_page(
        &self,
        pk: &str,
        prefix: &str,
        limit: Option<usize>,
        start: Option<Item>,
    ) -> Result<(Vec<Item>, Option<Item>)> {
        self.query_prefix_page_read(pk, prefix, limit, start, true).await
    }

    /// [`Table::query_prefix_page`], read `consistent`ly or not: an eventually consistent
    /// read costs half the read units, for a count that is only a check.
    pub(crate) async fn query_prefix_page_read(
        &self,
        pk: &str,
        prefix: &str,
        limit: Option<usize>,
        start: Option<Item>,
        consistent: bool,
    ) -> Result<(Vec<Item>, Option<Item>)> {
        let page = self
            .client
            .query()
            .table_name(&self.name)
            .key_condition_expression("PK = :pk AND begins_with(SK, :p)")
            .expression_attribute_values(":pk", s(pk.to_owned()))
            .expression_attribute_values(":p", s(prefix.to_owned()))
            .consistent_read(consistent)
            .set_limit(limit.map(|l| l.clamp(1, 1000) as i32))
            .set_exclusive_start_key(start)
            .send()
            .await
            .map_err(|e| Error::backend("dynamodb.Query", e))?;
        Ok((page.items.unwrap_or_default(), page.last_evaluated_key))
    }

    /// One page of partition `pk`'s items whose sort key lies in `lo..=hi` (`BETWEEN` takes
    /// both ends), read consistently, highest key first when `descending`: at most `limit`
    /// after `start`; and where the next page starts, if any is left.
    pub(crate) async fn query_range_page(
        &self,
        pk: &str,
        (lo, hi): (String, String),
        descending: bool,
        limit: i32,
        start: Option<Item>,
    ) -> Result<(Vec<Item>, Option<Item>)> {
        let page = self
            .client
            .query()
            .table_name(&self.name)
            .key_condition_expression("PK = :pk AND SK BETWEEN :lo AND :hi")
            .expression_attribute_values(":pk", s(pk.to_owned()))
            .expression_attribute_values(":lo", s(lo))
            .expression_attribute_values(":hi", s(hi))
            .scan_index_forward(!descending)
            .consistent_read(true)
            .limit(limit)
            .set_exclusive_start_key(start)
            .send()
            .await
            .map_err(|e| Error::backend("dynamodb.Query", e))?;
        Ok((page.items.unwrap_or_default(), page.last_evaluated_key))
    }

    /// Puts items, 25 per request, retrying whatever DynamoDB leaves unprocessed.
    pub(crate) async fn put_all(&self, items: Vec<Item>) -> Result<()> {
        let mut chunks: Vec<Vec<WriteRequest>> = Vec::new();
        for chunk in items.chunks(BATCH_WRITE_MAX) {
            let reqs = chunk
                .iter()
                .map(|item| {
                    PutRequest::builder()
                        .set_item(Some(item.clone()))
                        .build()
                        .map(|p| WriteRequest::builder().put_request(p).build())
                        .map_err(|e| Error::backend("dynamodb.BatchWriteItem", e))
                })
                .collect::<Result<Vec<_>>>()?;
            chunks.push(reqs);
        }
        let writes: Vec<_> = chunks.into_iter().map(|c| self.write_chunk(c)).collect();
        let results: Vec<Result<()>> =
            futures::stream::iter(writes).buffer_unordered(crate::REQUESTS_IN_FLIGHT).collect().await;
        results.into_iter().collect()
    }

    async fn write_chunk(&self, mut pending: Vec<WriteRequest>) -> Result<()> {
        for round in 0..UNPROCESSED_ROUNDS {
            if pending.is_empty() {
                return Ok(());
            }
            if round > 0 {
                tokio::time::sleep(Duration::from_millis(50 << round.min(6))).await;
            }
            let out = self
                .client
                .batch_write_item()
                .request_items(&self.name, std::mem::take(&mut pending))
                .send()
                .await
                .map_err(|e| Error::backend("dynamodb.BatchWriteItem", e))?;
            pending = out.unprocessed_items.and_then(|mut m| m.remove(&self.name)).unwrap_or_default();
        }
        if pending.is_empty() {
            Ok(())
        } else {
            Err(Error::backend("dynamodb.BatchWriteItem", format!("{} items stayed unprocessed", pending.len())))
        }
    }
}
