//! Declared event types (`Y#` items, the declaration as JSON) and seen ones (`S#` items with
//! `last_seen`, deleted by TTL 30 days after it; written by the event store).

use async_trait::async_trait;
use aws_sdk_dynamodb::types::ReturnValue;
use chrono::{DateTime, Utc};
use hookbridge_core::catalog::{DeclaredType, SEEN_FOR};
use hookbridge_core::ids::TenantId;
use hookbridge_core::ports::EventTypeStore;
use hookbridge_core::{Error, Result};

use crate::dynamo::Table;
use crate::keys::{DOC, EXPIRES_AT, Item, SK, doc, expired, get_n, get_s, key, n, tenant_pk, to_doc};

const DECLARED: &str = "Y#";
const SEEN: &str = "S#";
const LAST_SEEN: &str = "last_seen";

/// The item saying `tenant`'s events of type `name` were seen at `at`.
pub(crate) fn seen_item(tenant: &TenantId, name: &str, at: DateTime<Utc>) -> Item {
    let mut item = key(tenant_pk(tenant), format!("{SEEN}{name}"));
    item.insert(LAST_SEEN.to_owned(), n(at.timestamp_millis()));
    item.insert(EXPIRES_AT.to_owned(), n((at + SEEN_FOR).timestamp()));
    item
}

pub(crate) struct DynamoEventTypeStore {
    table: Table,
}

impl DynamoEventTypeStore {
    pub(crate) fn new(table: Table) -> Self {
        Self { table }
    }

    /// Every item of the tenant whose sort key starts with `prefix`.
    async fn query(&self, tenant: &TenantId, prefix: &str) -> Result<Vec<Item>> {
        self.table.query_prefix(tenant_pk(tenant), prefix.to_owned()).await
    }
}

#[async_trait]
impl EventTypeStore for DynamoEventTypeStore {
    async fn declare(&self, tenant: &TenantId, declared: &DeclaredType) -> Result<()> {
        let mut item = key(tenant_pk(tenant), format!("{DECLARED}{}", declared.name));
        item.insert(DOC.to_owned(), to_doc(declared)?);
        self.table
            .client
            .put_item()
            .table_name(&self.table.name)
            .set_item(Some(item))
            .send()
            .await
            .map(|_| ())
            .map_err(|e| Error::backend("dynamodb.PutItem", e))
    }

    async fn undeclare(&self, tenant: &TenantId, name: &str) -> Result<bool> {
        let out = self
            .table
            .client
            .delete_item()
            .table_name(&self.table.name)
            .set_key(Some(key(tenant_pk(tenant), format!("{DECLARED}{name}"))))
            .return_values(ReturnValue::AllOld)
            .send()
            .await
            .map_err(|e| Error::backend("dynamodb.DeleteItem", e))?;
        Ok(out.attributes.is_some_and(|a| !a.is_empty()))
    }

    async fn declared(&self, tenant: &TenantId) -> Result<Vec<DeclaredType>> {
        self.query(tenant, DECLARED).await?.iter().map(|i| doc(i, "an event type")).collect()
    }

    async fn seen(&self, tenant: &TenantId, since: DateTime<Utc>, max: usize) -> Result<Vec<(String, DateTime<Utc>)>> {
        let now = Utc::now().timestamp();
        let mut out = Vec::new();
        let mut start = None;
        // In name order (the sort key), a page at a time, until `max` are found.
        let pk = tenant_pk(tenant);
        while out.len() < max {
            let (items, next) = self.table.query_prefix_page(&pk, SEEN, Some(max - out.len()), start.take()).await?;
            for item in &items {
                let at = get_n(item, LAST_SEEN).and_then(DateTime::from_timestamp_millis).unwrap_or_default();
                if !expired(item, now) && at >= since && out.len() < max {
                    let sk = get_s(item, SK)?;
                    out.push((sk.strip_prefix(SEEN).unwrap_or(sk).to_owned(), at));
                }
            }
            match next {
                Some(k) => start = Some(k),
                None => break,
            }
        }
        Ok(out)
    }
}
