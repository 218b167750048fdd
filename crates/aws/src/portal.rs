//! Portal links (`P#{hash}`/`L`) and console sessions (`P#{hash}`/`S`), deleted by TTL after
//! they expire (and filtered on read before that).

use async_trait::async_trait;
use aws_sdk_dynamodb::types::ReturnValue;
use chrono::{DateTime, Utc};
use hookbridge_core::portal::PortalGrant;
use hookbridge_core::ports::PortalStore;
use hookbridge_core::{Error, Result};

use crate::dynamo::Table;
use crate::keys::{DOC, EXPIRES_AT, Item, doc, expired, key, n, to_doc};

const LINK: &str = "L";
const SESSION: &str = "S";

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
        // Deleting returns the item to exactly one of two racing redeemers.
        let out = self
            .table
            .client
            .delete_item()
            .table_name(&self.table.name)
            .set_key(Some(item_key(code_hash, LINK)))
            .return_values(ReturnValue::AllOld)
            .send()
            .await
            .map_err(|e| Error::backend("dynamodb.DeleteItem", e))?;
        let Some(item) = out.attributes.filter(|a| !a.is_empty()) else { return Ok(None) };
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
