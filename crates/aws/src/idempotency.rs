//! Publish de-duplication keys: a conditional put claims a key unless an unexpired claim
//! exists.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use hookbridge_core::ids::{DeliveryId, TenantId};
use hookbridge_core::ports::{Claim, IdempotencyStore, StoredResponse};
use hookbridge_core::{Error, Result};

use crate::dynamo::Table;
use crate::keys::{EXPIRES_AT, Item, get_n, get_s, key, n, s, tenant_pk};

pub(crate) struct DynamoIdempotencyStore {
    table: Table,
}

impl DynamoIdempotencyStore {
    pub(crate) fn new(table: Table) -> Self {
        Self { table }
    }
}

/// The attribute naming the call that made a claim.
const CLAIMED_BY: &str = "claimed_by";

fn item_key(tenant: &TenantId, k: &str) -> Item {
    key(tenant_pk(tenant), format!("I#{k}"))
}

#[async_trait]
impl IdempotencyStore for DynamoIdempotencyStore {
    async fn claim(
        &self,
        tenant: &TenantId,
        k: &str,
        fingerprint: &str,
        now: DateTime<Utc>,
        expires_at: DateTime<Utc>,
    ) -> Result<Claim> {
        let mut item = item_key(tenant, k);
        item.insert("fingerprint".to_owned(), s(fingerprint));
        item.insert(EXPIRES_AT.to_owned(), n(expires_at.timestamp()));
        // This call's own mark: when DynamoDB applied the put and its answer was lost, the
        // SDK sends it again, and the repeat must find the claim its own, not another
        // request's (which answered the only caller there was `409` for five minutes).
        let mine = DeliveryId::generate().to_string();
        item.insert(CLAIMED_BY.to_owned(), s(mine.clone()));
        let r = self
            .table
            .client
            .put_item()
            .table_name(&self.table.name)
            .set_item(Some(item))
            .condition_expression("attribute_not_exists(PK) OR #e <= :now OR #c = :mine")
            .expression_attribute_names("#e", EXPIRES_AT)
            .expression_attribute_names("#c", CLAIMED_BY)
            .expression_attribute_values(":now", n(now.timestamp()))
            .expression_attribute_values(":mine", s(mine))
            .send()
            .await;
        match r {
            Ok(_) => Ok(Claim::Claimed),
            Err(e) if e.as_service_error().is_some_and(|s| s.is_conditional_check_failed_exception()) => {
                let out = self
                    .table
                    .client
                    .get_item()
                    .table_name(&self.table.name)
                    .set_key(Some(item_key(tenant, k)))
                    .consistent_read(true)
                    .send()
                    .await
                    .map_err(|e| Error::backend("dynamodb.GetItem", e))?;
                let Some(existing) = out.item else {
                    // Released between our put and our read: try once more.
                    return Box::pin(self.claim(tenant, k, fingerprint, now, expires_at)).await;
                };
                let response = match (get_n(&existing, "status"), get_s(&existing, "body")) {
                    (Some(status), Ok(body)) => Some(StoredResponse { status: status as u16, body: body.to_owned() }),
                    _ => None,
                };
                Ok(Claim::Existing { fingerprint: get_s(&existing, "fingerprint")?.to_owned(), response })
            }
            Err(e) => Err(Error::backend("dynamodb.PutItem", e)),
        }
    }

    async fn complete(
        &self,
        tenant: &TenantId,
        k: &str,
        response: &StoredResponse,
        expires_at: DateTime<Utc>,
    ) -> Result<()> {
        self.table
            .client
            .update_item()
            .table_name(&self.table.name)
            .set_key(Some(item_key(tenant, k)))
            .update_expression("SET #s = :s, #b = :b, #e = :e")
            .expression_attribute_names("#s", "status")
            .expression_attribute_names("#b", "body")
            .expression_attribute_names("#e", EXPIRES_AT)
            .expression_attribute_values(":s", n(response.status))
            .expression_attribute_values(":b", s(response.body.clone()))
            .expression_attribute_values(":e", n(expires_at.timestamp()))
            .send()
            .await
            .map(|_| ())
            .map_err(|e| Error::backend("dynamodb.UpdateItem", e))
    }

    async fn release(&self, tenant: &TenantId, k: &str) -> Result<()> {
        let r = self
            .table
            .client
            .delete_item()
            .table_name(&self.table.name)
            .set_key(Some(item_key(tenant, k)))
            .condition_expression("attribute_not_exists(#s)")
            .expression_attribute_names("#s", "status")
            .send()
            .await;
        match r {
            Ok(_) => Ok(()),
            Err(e) if e.as_service_error().is_some_and(|s| s.is_conditional_check_failed_exception()) => Ok(()),
            Err(e) => Err(Error::backend("dynamodb.DeleteItem", e)),
        }
    }
}
