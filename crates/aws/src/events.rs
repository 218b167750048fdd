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
                let mut item = written_key(tenant, &e.id);
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
        let found = match self.read(written_key(tenant, id)).await? {
            Some(item) => Some(item),
            // Written by a release on the other side of the move (decision 0020): read until
            // the item's TTL (`HOOKBRIDGE_EVENT_RETENTION`). Never on the happy path.
            None => self.read(other_key(tenant, id)).await?,
        };
        let Some(item) = found else {
            return Ok(None);
        };
        serde_json::from_str(get_s(&item, DOC)?).map(Some).map_err(|e| Error::corrupt("an event", e))
    }
}

impl DynamoEventStore {
    /// The item at `key`, unless absent or past its time.
    async fn read(&self, key: crate::keys::Item) -> Result<Option<crate::keys::Item>> {
        let out = self
            .table
            .client
            .get_item()
            .table_name(&self.table.name)
            .set_key(Some(key))
            // The worker reads it right after ingest wrote it: an eventually consistent read
            // could miss it and cancel the delivery.
            .consistent_read(true)
            .send()
            .await
            .map_err(|e| Error::backend("dynamodb.GetItem", e))?;
        Ok(out.item.filter(|i| !expired(i, Utc::now().timestamp())))
    }
}

/// Whether envelopes are written in partitions of their own, `E#{tenant}#{event_id}`,
/// rather than under their tenant's, `T#{tenant}`. Moved in two releases, so that every
/// release can read what the one before and the one after it write (CloudFormation updates
/// the functions one by one, and a rollback runs the older release on newer items): this
/// one reads both and still writes under the tenant; the next one flips this to `true`.
const OWN_PARTITIONS: bool = false;

/// Where this release writes an envelope, and reads it first.
fn written_key(tenant: &TenantId, id: &EventId) -> crate::keys::Item {
    if OWN_PARTITIONS { own_key(tenant, id) } else { tenant_key(tenant, id) }
}

/// Where the release on the other side of the move writes it.
fn other_key(tenant: &TenantId, id: &EventId) -> crate::keys::Item {
    if OWN_PARTITIONS { tenant_key(tenant, id) } else { own_key(tenant, id) }
}

/// An envelope in a partition of its own: a tenant's envelopes spread over the table
/// however many it publishes (one partition takes at most 1,000 write units a second, and
/// an envelope kept because it is large takes up to 256 of them).
fn own_key(tenant: &TenantId, id: &EventId) -> crate::keys::Item {
    key(format!("E#{tenant}#{id}"), "E".to_owned())
}

/// An envelope under its tenant's partition, beside the tenant's hooks and keys.
fn tenant_key(tenant: &TenantId, id: &EventId) -> crate::keys::Item {
    key(tenant_pk(tenant), format!("E#{id}"))
}
