//! Portal links (`P#{hash}`/`L`) and console sessions (`P#{hash}`/`S`), deleted by TTL after
//! they expire (and filtered on read before that).

use async_trait::async_trait;
use aws_sdk_dynamodb::types::ReturnValue;
use chrono::{DateTime, Utc};
use hookbridge_core::ids::DeliveryId;
use hookbridge_core::portal::PortalGrant;
use hookbridge_core::ports::PortalStore;
use hookbridge_core::{Error, Result};

use crate::dynamo::Table;
use crate::keys::{DOC, EXPIRES_AT, Item, doc, expired, key, n, s, to_doc};

const LINK: &str = "L";
const SESSION: &str = "S";
/// The attribute naming the call that redeemed a link.
const REDEEMED_BY: &str = "redeemed_by";

fn item_key(hash: &str, kind: &str) -> Item {
    key(format!("P#{hash}"), kind.to_owned())
}

pub(crate) struct DynamoPortalStore {
    table: Table,
}

impl DynamoPortalStore {
    pub(crate) fn new(table: Table) -> Self {
        Self { table }
    }

    async fn put(&self, hash: &str, kind: &str, grant: &PortalGrant) -> Result<()> {
        let mut item = item_key(hash, kind);
        item.insert(DOC.to_owned(), to_doc(grant)?);
        item.insert(EXPIRES_AT.to_owned(), n(grant.expires_at.timestamp()));
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
}

#[async_trait]
impl PortalStore for DynamoPortalStore {
    async fn put_link(&self, code_hash: &str, grant: &PortalGrant) -> Result<()> {
        self.put(code_hash, LINK, grant).await
    }

    async fn redeem_link(&self, code_hash: &str, now: DateTime<Utc>) -> Result<Option<PortalGrant>> {
        // Marking the link with this call's own id gives it to exactly one of two racing
        // redeemers, and to this one again when DynamoDB applied the mark, its answer was
        // lost and the SDK sent it again. (A delete returning the item gave the repeat
        // nothing: the link was spent and its visitor told it was not valid.)
        let mine = DeliveryId::generate().to_string();
        let out = self
            .table
            .client
            .update_item()
            .table_name(&self.table.name)
            .set_key(Some(item_key(code_hash, LINK)))
            .update_expression("SET #r = :mine")
            .condition_expression("attribute_exists(PK) AND (attribute_not_exists(#r) OR #r = :mine)")
            .expression_attribute_names("#r", REDEEMED_BY)
            .expression_attribute_values(":mine", s(mine))
            .return_values(ReturnValue::AllNew)
            .send()
            .await;
        let item = match out {
            Ok(out) => out.attributes.unwrap_or_default(),
            Err(e) if e.as_service_error().is_some_and(|s| s.is_conditional_check_failed_exception()) => {
                return Ok(None);
            }
            Err(e) => return Err(Error::backend("dynamodb.UpdateItem", e)),
        };
        // Spent either way: a link left behind by a failed delete is marked, opens for no
        // one, and expires.
        if let Err(e) = self
            .table
            .client
            .delete_item()
            .table_name(&self.table.name)
            .set_key(Some(item_key(code_hash, LINK)))
            .send()
            .await
        {
            tracing::warn!(error = %Error::backend("dynamodb.DeleteItem", e), "a redeemed portal link was not deleted");
        }
        let grant: PortalGrant = doc(&item, "a portal grant")?;
        Ok((grant.expires_at > now && !expired(&item, now.timestamp())).then_some(grant))
    }

    async fn put_session(&self, id_hash: &str, grant: &PortalGrant) -> Result<()> {
        self.put(id_hash, SESSION, grant).await
    }

    async fn session(&self, id_hash: &str, now: DateTime<Utc>) -> Result<Option<PortalGrant>> {
        let out = self
            .table
            .client
            .get_item()
            .table_name(&self.table.name)
            .set_key(Some(item_key(id_hash, SESSION)))
            .consistent_read(true)
            .send()
            .await
            .map_err(|e| Error::backend("dynamodb.GetItem", e))?;
        let Some(item) = out.item else { return Ok(None) };
        let grant: PortalGrant = doc(&item, "a portal grant")?;
        Ok((grant.expires_at > now).then_some(grant))
    }

    async fn end_session(&self, id_hash: &str) -> Result<()> {
        self.table
            .client
            .delete_item()
            .table_name(&self.table.name)
            .set_key(Some(item_key(id_hash, SESSION)))
            .send()
            .await
            .map(|_| ())
            .map_err(|e| Error::backend("dynamodb.DeleteItem", e))
    }
}
