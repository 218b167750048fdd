//! Envelopes kept in the event store (large ones, and ones several hooks share), one item
//! each; and the event types seen.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use hookbridge_core::catalog::SeenMemo;
use hookbridge_core::envelope::Envelope;
use hookbridge_core::ids::{EventId, TenantId};
use hookbridge_core::ports::EventStore;
use hookbridge_core::{Error, Result};

use crate::dynamo::Table;
use crate::keys::{DOC, EXPIRES_AT, expired, get_s, key, n, s, tenant_pk};

pub(crate) struct DynamoEventStore {
    table: Table,
    seen: SeenMemo,
}

impl DynamoEventStore {
    pub(crate) fn new(table: Table) -> Self {
        Self { table, seen: SeenMemo::default() }
    }
}

#[async_trait]
impl EventStore for DynamoEventStore {
    async fn put(&self, tenant: &TenantId, envelopes: &[Envelope], expires_at: DateTime<Utc>) -> Result<()> {
        let now = Utc::now();
        let mut items: Vec<_> = envelopes
            .iter()
            .map(|e| {
                let mut item = key(tenant_pk(tenant), format!("E#{}", e.id));
                item.insert(DOC.to_owned(), s(e.to_body()));
                item.insert(EXPIRES_AT.to_owned(), n(expires_at.timestamp()));
                item
            })
            .collect();
        // Types seen, in the same batch write: no request of their own.
        let seen = self.seen.due(tenant.as_str(), envelopes.iter().map(|e| e.detail_type.as_str()), now);
        for name in &seen {
            items.push(crate::event_types::seen_item(tenant, name, now));
        }
        let written = self.table.put_all(items).await;
        self.seen.settled(tenant.as_str(), &seen, now, written)
    }

    async fn record_seen(&self, tenant: &TenantId, types: &[&str]) -> Result<()> {
        let now = Utc::now();
        let seen = self.seen.due(tenant.as_str(), types.iter().copied(), now);
        if seen.is_empty() {
            return Ok(());
        }
        let items: Vec<_> = seen.iter().map(|name| crate::event_types::seen_item(tenant, name, now)).collect();
        let written = self.table.put_all(items).await;
        self.seen.settled(tenant.as_str(), &seen, now, written)
    }

    async fn get(&self, tenant: &TenantId, id: &EventId) -> Result<Option<Envelope>> {
        let out = self
            .table
            .client
            .get_item()
            .table_name(&self.table.name)
            .set_key(Some(key(tenant_pk(tenant), format!("E#{id}"))))
            // The worker reads it right after ingest wrote it: an eventually consistent read
            // could miss it and cancel the delivery.
            .consistent_read(true)
            .send()
            .await
            .map_err(|e| Error::backend("dynamodb.GetItem", e))?;
        let Some(item) = out.item.filter(|i| !expired(i, Utc::now().timestamp())) else {
            return Ok(None);
        };
        serde_json::from_str(get_s(&item, DOC)?).map(Some).map_err(|e| Error::corrupt("an event", e))
    }
}
