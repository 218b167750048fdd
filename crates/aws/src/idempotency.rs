//! Publish de-duplication keys: a conditional put claims a key unless an unexpired claim
//! exists.
//!
//! Claims are moving out of their tenant's partition, `T#{tenant}`/`I#{key}`, into
//! partitions of their own, `I#{tenant}#{key}`/`I` (decision 0027). Every claim is two
//! writes (the claim, then its answer), so a tenant making more than about 500 claims a
//! second (keyed calls, or events with their own ids) met its partition's limit of 1,000
//! write units a second. The move takes two releases, as the envelopes' did
//! (decision 0020): each release claims in its own place and then looks in the other, so
//! the release before and the release after it see its claims, during a stack update and
//! after a rollback.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use hookbridge_core::ids::{DeliveryId, TenantId};
use hookbridge_core::ports::{Claim, IdempotencyStore, StoredResponse};
use hookbridge_core::{Error, Result};

use crate::dynamo::Table;
use crate::keys::{EXPIRES_AT, Item, expired, get_n, get_s, key, n, s, tenant_pk};

/// Where a release claims. This release claims under the tenant, as every release before
/// it did; the next one flips this to `true`. A day (`IDEMPOTENCY_WINDOW`) after that
/// release's update has finished, plus the API's timeout (a request still running on the
/// release before can store its answer late), no claim under the tenant can still be live,
/// and the look at the other place can go.
const OWN_PARTITIONS: bool = false;

/// Where claims are made, and where the release on the other side of the move makes them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClaimPlace {
    /// Under the tenant's partition: `T#{tenant}`, `I#{key}` (every release until the move).
    Tenant,
    /// In a partition of its own: `I#{tenant}#{key}`, `I` (tenant ids hold no `#`, so the
    /// key is unambiguous).
    Own,
}

impl ClaimPlace {
    /// Where this release claims.
    pub const fn this_release() -> Self {
        if OWN_PARTITIONS { Self::Own } else { Self::Tenant }
    }

    /// The other side of the move.
    pub const fn other(self) -> Self {
        match self {
            Self::Tenant => Self::Own,
            Self::Own => Self::Tenant,
        }
    }

    /// The item's key for `tenant`'s claim of `k` here.
    pub fn key(self, tenant: &TenantId, k: &str) -> Item {
        match self {
            Self::Tenant => key(tenant_pk(tenant), format!("I#{k}")),
            Self::Own => key(format!("I#{tenant}#{k}"), "I".to_owned()),
        }
    }
}

pub(crate) struct DynamoIdempotencyStore {
    table: Table,
    place: ClaimPlace,
}

impl DynamoIdempotencyStore {
    /// Claims in `place`: [`ClaimPlace::this_release`], but for tests, which run both
    /// sides of the move against one table.
    pub(crate) fn claiming_in(table: Table, place: ClaimPlace) -> Self {
        Self { table, place }
    }

    fn item_key(&self, tenant: &TenantId, k: &str) -> Item {
        self.place.key(tenant, k)
    }

    /// The claim stored at `at`, read strongly: a claim made a moment ago by a request on
    /// the other release must be seen.
    async fn read(&self, at: Item) -> Result<Option<Item>> {
        let out = self
            .table
            .client
            .get_item()
            .table_name(&self.table.name)
            .set_key(Some(at))
            .consistent_read(true)
            .send()
            .await
            .map_err(|e| Error::backend("dynamodb.GetItem", e))?;
        Ok(out.item)
    }

    /// Takes back a claim this call made, and only that one. A claim that cannot be taken
    /// back holds its own place until it expires; the caller's answer stands either way.
    async fn withdraw(&self, tenant: &TenantId, k: &str, mine: &str) {
        let r = self
            .delete_if(tenant, k, |d| {
                d.condition_expression("#c = :mine")
                    .expression_attribute_names("#c", CLAIMED_BY)
                    .expression_attribute_values(":mine", s(mine))
            })
            .await;
        if let Err(e) = r {
            tracing::warn!(error = %e, "could not take back an idempotency claim; it holds its key until it expires");
        }
    }

    /// Deletes the claim of `k` if `condition` holds; one that does not hold leaves it, and
    /// is no error.
    async fn delete_if(
        &self,
        tenant: &TenantId,
        k: &str,
        condition: impl FnOnce(DeleteItem) -> DeleteItem,
    ) -> Result<()> {
        let delete =
            self.table.client.delete_item().table_name(&self.table.name).set_key(Some(self.item_key(tenant, k)));
        match condition(delete).send().await {
            Ok(_) => Ok(()),
            Err(e) if e.as_service_error().is_some_and(|s| s.is_conditional_check_failed_exception()) => Ok(()),
            Err(e) => Err(Error::backend("dynamodb.DeleteItem", e)),
        }
    }
}

/// A `DeleteItem` call being built.
type DeleteItem = aws_sdk_dynamodb::operation::delete_item::builders::DeleteItemFluentBuilder;

/// The attribute naming the call that made a claim.
const CLAIMED_BY: &str = "claimed_by";

/// A stored claim as a [`Claim::Existing`].
fn existing(item: &Item) -> Result<Claim> {
    let response = match (get_n(item, "status"), get_s(item, "body")) {
        (Some(status), Ok(body)) => Some(StoredResponse { status: status as u16, body: body.to_owned() }),
        _ => None,
    };
    Ok(Claim::Existing { fingerprint: get_s(item, "fingerprint")?.to_owned(), response })
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
        let mut item = self.item_key(tenant, k);
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
            .expression_attribute_values(":mine", s(mine.clone()))
            .send()
            .await;
        match r {
            Ok(_) => {
                // Then the other side of the move. Claiming first and looking second, on
                // both sides, means two requests racing across it cannot both miss the
                // other: at worst both see each other, step back, and are answered `409`.
                let other = match self.read(self.place.other().key(tenant, k)).await {
                    Ok(other) => other.filter(|i| !expired(i, now.timestamp())),
                    Err(e) => {
                        self.withdraw(tenant, k, &mine).await;
                        return Err(e);
                    }
                };
                match other {
                    None => Ok(Claim::Claimed),
                    Some(theirs) => {
                        self.withdraw(tenant, k, &mine).await;
                        existing(&theirs)
                    }
                }
            }
            Err(e) if e.as_service_error().is_some_and(|s| s.is_conditional_check_failed_exception()) => {
                let Some(found) = self.read(self.item_key(tenant, k)).await? else {
                    // Released between our put and our read: try once more.
                    return Box::pin(self.claim(tenant, k, fingerprint, now, expires_at)).await;
                };
                existing(&found)
            }
            Err(e) => {
                // The put may have been applied all the same (its answer lost past the SDK's
                // retries): left, it would answer every retry `409` for its five pending
                // minutes, though the request it stood for failed.
                self.withdraw(tenant, k, &mine).await;
                Err(Error::backend("dynamodb.PutItem", e))
            }
        }
    }

    async fn complete(
        &self,
        tenant: &TenantId,
        k: &str,
        response: &StoredResponse,
        expires_at: DateTime<Utc>,
    ) -> Result<()> {
        let r = self
            .table
            .client
            .update_item()
            .table_name(&self.table.name)
            .set_key(Some(self.item_key(tenant, k)))
            .update_expression("SET #s = :s, #b = :b, #e = :e")
            // Only a claim that is still there: an update creates what it does not find,
            // and an answer without its claim's fingerprint would fail every later claim
            // of the key. (SQLite's `UPDATE` finds nothing and does nothing.)
            .condition_expression("attribute_exists(PK)")
            .expression_attribute_names("#s", "status")
            .expression_attribute_names("#b", "body")
            .expression_attribute_names("#e", EXPIRES_AT)
            .expression_attribute_values(":s", n(response.status))
            .expression_attribute_values(":b", s(response.body.clone()))
            .expression_attribute_values(":e", n(expires_at.timestamp()))
            .send()
            .await;
        match r {
            Ok(_) => Ok(()),
            Err(e) if e.as_service_error().is_some_and(|s| s.is_conditional_check_failed_exception()) => {
                tracing::warn!("an idempotency claim was gone when its answer came; the answer is not kept");
                Ok(())
            }
            Err(e) => Err(Error::backend("dynamodb.UpdateItem", e)),
        }
    }

    async fn release(&self, tenant: &TenantId, k: &str) -> Result<()> {
        // Only while unanswered: an answered claim is the key's memory for the day.
        self.delete_if(tenant, k, |d| {
            d.condition_expression("attribute_not_exists(#s)").expression_attribute_names("#s", "status")
        })
        .await
    }
}
