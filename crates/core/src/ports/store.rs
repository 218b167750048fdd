//! Storage ports: hooks, deliveries, events kept for replay, and publish idempotency.

use async_trait::async_trait;
use chrono::{DateTime, Utc};

use crate::Result;
use crate::catalog::DeclaredType;
use crate::delivery::{Delivery, DeliveryUpdate};
use crate::envelope::Envelope;
use crate::hook::Hook;
use crate::ids::{DeliveryId, EventId, HookId, ReplayId, TenantId};
use crate::portal::PortalGrant;
use crate::replay::ReplayJob;

/// One page of a listing and where the next one starts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Page<T> {
    /// The items.
    pub items: Vec<T>,
    /// Opaque; pass it back for the next page. `None` on the last page.
    pub next_cursor: Option<String>,
}

impl<T> Page<T> {
    /// A page from up to `limit + 1` items read in order: when there is one more than the
    /// page holds, the page is cut there and the cursor is the last item's `key`.
    pub fn cut(mut items: Vec<T>, limit: usize, key: impl Fn(&T) -> String) -> Self {
        let next_cursor = if items.len() > limit {
            items.truncate(limit);
            items.last().map(&key)
        } else {
            None
        };
        Self { items, next_cursor }
    }

    /// [`Page::cut`] for rows read in order as their key and their item, `None` where this
    /// version could not read the item: the page is cut by rows, so a row left out moves the
    /// cursor past it as one read does, and the next page goes on after it.
    pub fn cut_readable(mut rows: Vec<(String, Option<T>)>, limit: usize) -> Self {
        let next_cursor = if rows.len() > limit {
            rows.truncate(limit);
            rows.last().map(|(key, _)| key.clone())
        } else {
            None
        };
        Self { items: rows.into_iter().filter_map(|(_, item)| item).collect(), next_cursor }
    }
}

/// A time window `[since, until)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Window {
    /// Inclusive start.
    pub since: DateTime<Utc>,
    /// Exclusive end.
    pub until: DateTime<Utc>,
}

impl Window {
    /// The delivery ids `[lo, hi)` of the page of this window that a listing newest first
    /// reads next: ids created in the window, below `cursor` (the last id of the previous
    /// page) when there is one. Ids of the window's last millisecond sort below
    /// `min_at(until)`, so the upper bound is exclusive.
    pub fn id_range(&self, cursor: Option<&str>) -> Result<(DeliveryId, DeliveryId)> {
        let lo = DeliveryId::min_at(self.since.timestamp_millis().max(0) as u64);
        let mut hi = DeliveryId::min_at(self.until.timestamp_millis().max(0) as u64);
        if let Some(c) = cursor {
            hi = hi.min(c.parse::<DeliveryId>().map_err(|_| crate::Error::InvalidCursor)?);
        }
        Ok((lo, hi))
    }

    /// The delivery ids `[lo, hi)` of the page of this window that a listing oldest first
    /// reads next: ids created in the window, above `cursor` (the last id of the previous
    /// page) when there is one.
    pub fn id_range_oldest_first(&self, cursor: Option<&str>) -> Result<(DeliveryId, DeliveryId)> {
        let mut lo = DeliveryId::min_at(self.since.timestamp_millis().max(0) as u64);
        let hi = DeliveryId::min_at(self.until.timestamp_millis().max(0) as u64);
        if let Some(c) = cursor {
            let after = c.parse::<DeliveryId>().map_err(|_| crate::Error::InvalidCursor)?;
            lo = lo.max(after.successor());
        }
        Ok((lo, hi))
    }

    /// The id range of the next page of a listing in `order`.
    pub fn id_range_in(&self, order: Order, cursor: Option<&str>) -> Result<(DeliveryId, DeliveryId)> {
        match order {
            Order::NewestFirst => self.id_range(cursor),
            Order::OldestFirst => self.id_range_oldest_first(cursor),
        }
    }

    /// Whether `t` is inside.
    pub fn contains(&self, t: DateTime<Utc>) -> bool {
        self.since <= t && t < self.until
    }
}

/// Which end of a window a listing starts from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Order {
    /// Newest first (what Read shows).
    #[default]
    NewestFirst,
    /// Oldest first (how a replay re-sends).
    OldestFirst,
}

/// How long a [`RoutingList`] may be older than a change to the tenant's hooks: a backend
/// that keeps lists between batches (DynamoDB's, for tenants with many hooks) trusts one no
/// longer than this when the change's marker could not be written.
pub const ROUTING_LIST_STALE_AT_MOST: std::time::Duration = std::time::Duration::from_secs(10);

/// A tenant's hooks as ingest routes events to them.
#[derive(Debug, Clone, Default)]
pub struct RoutingList {
    /// The hooks this version can read.
    pub hooks: Vec<std::sync::Arc<Hook>>,
    /// Hooks whose stored documents this version cannot decode: written by a newer
    /// version during a deploy, or damaged. Ingest cannot tell which events they want, so it
    /// queues every event to them and the worker, once it can read them, decides
    /// (docs/decisions/0026); a tenant's other hooks are not held up by them.
    pub unreadable: Vec<HookId>,
}

/// What the delivery worker and the verifier need of hooks: a hook read, several read
/// together, and one written back (its health, its connection state). Apart from
/// [`HookStore`] so that a function holding only this carries none of the rest of a
/// store's code: a trait object keeps every method of its implementation in the binary.
#[async_trait]
pub trait HookAccess: Send + Sync {
    /// A hook of the tenant; `None` if absent or another tenant's.
    async fn get(&self, tenant: &TenantId, id: HookId) -> Result<Option<Hook>>;

    /// Several hooks at once (the worker's batch), in any order, each once however often
    /// `keys` names it; missing ones are left out.
    /// Shared, not owned: a store may hand the same parsed hook to batch after batch for as
    /// long as its stored document is unchanged.
    async fn get_many(&self, keys: &[(TenantId, HookId)]) -> Result<Vec<std::sync::Arc<Hook>>>;

    /// Replaces a hook if its stored revision is `expected_revision`; `hook.revision` is the
    /// new revision. [`crate::Error::VersionConflict`] otherwise, or if it was deleted.
    async fn replace(&self, hook: &Hook, expected_revision: u64) -> Result<()>;
}

/// Hooks, with names unique per tenant and optimistic locking.
#[async_trait]
pub trait HookStore: HookAccess {
    /// Stores a new hook and claims its name in the same transaction.
    /// [`crate::Error::NameTaken`] if the tenant has a hook of that name,
    /// [`crate::Error::QuotaReached`] if it has `max_hooks` hooks already.
    async fn create(&self, hook: &Hook, max_hooks: u32) -> Result<()>;

    /// A page of the tenant's hooks, oldest first.
    async fn list(&self, tenant: &TenantId, limit: usize, cursor: Option<&str>) -> Result<Page<Hook>>;

    /// Every hook of the tenant, as stored.
    async fn list_all(&self, tenant: &TenantId) -> Result<Vec<Hook>>;

    /// Every hook of the tenant, for routing events to them: current in all that
    /// [`Hook::routing`] covers, and possibly up to a minute old in the rest (a store may
    /// keep a big tenant's list between reads). Shared, as [`HookAccess::get_many`]'s are.
    /// A hook whose document this version cannot decode is named in
    /// [`RoutingList::unreadable`] rather than failing the whole list. The default is
    /// [`HookStore::list_all`], which fails instead.
    ///
    /// [`crate::Error::TooLarge`] when the hooks' stored documents take more than
    /// `most_bytes` together, found out while reading, before they are all held: what one
    /// tenant's hooks cost a batch shared with other tenants' events is bounded.
    async fn list_for_routing(&self, tenant: &TenantId, most_bytes: usize) -> Result<RoutingList> {
        let hooks = self.list_all(tenant).await?;
        let bytes = hooks.iter().fold(0, |n: usize, h| n.saturating_add(h.stored_size()));
        if bytes > most_bytes {
            return Err(routing_too_large(tenant, most_bytes));
        }
        Ok(RoutingList { hooks: hooks.into_iter().map(std::sync::Arc::new).collect(), unreadable: Vec::new() })
    }

    /// The bytes the tenant's hooks take stored (their documents, as [`Hook::stored_size`]
    /// counts), leaving out `except`'s: for the tenant's quota, checked before a hook is
    /// written. Counting stops once past `most` (the answer is then more than `most`, but
    /// not necessarily the whole), so a tenant far over it costs no more to check.
    async fn stored_bytes(&self, tenant: &TenantId, except: Option<HookId>, most: usize) -> Result<usize>;

    /// Deletes a hook and frees its name. Whether it existed.
    async fn delete(&self, tenant: &TenantId, id: HookId) -> Result<bool>;

    /// A page of up to `limit` hooks of every tenant, in no meaningful order, for
    /// maintenance (re-sealing secrets after a format change). Not for requests: it reads
    /// the whole store. A hook this version cannot read is left out (and logged): one such
    /// hook must not stop the maintenance of the others, nor a start that runs it.
    async fn scan(&self, cursor: Option<&str>, limit: usize) -> Result<Page<Hook>>;
}

/// Deliveries and their attempts, keyed by hook and time-ordered delivery id.
#[async_trait]
pub trait DeliveryStore: Send + Sync {
    /// Records new deliveries (ingest's `PENDING` records). Existing ones are left as they are,
    /// so a redelivered ingest message does not reset progress.
    async fn insert(&self, deliveries: &[Delivery]) -> Result<()>;

    /// Applies updates (see [`Delivery::apply`]); a delivery whose record is missing is
    /// recreated from the update's key.
    async fn record(&self, updates: &[DeliveryUpdate]) -> Result<()>;

    /// One delivery of a hook.
    async fn get(&self, hook_id: HookId, id: DeliveryId) -> Result<Option<Delivery>>;

    /// The hook's deliveries created in `window`, in `order`. A delivery whose record this
    /// version cannot read (one a newer release wrote, read during a rollback) is left out
    /// and logged, and the page's cursor still moves past it: one such record must not make
    /// every listing of the hook's days fail. [`DeliveryStore::get`] of it is the error.
    async fn list(
        &self,
        hook_id: HookId,
        window: Window,
        order: Order,
        limit: usize,
        cursor: Option<&str>,
    ) -> Result<Page<Delivery>>;
}

/// Envelopes kept for replay and for delivery detail.
#[async_trait]
pub trait EventStore: Send + Sync {
    /// Stores envelopes of a tenant until `expires_at`. Storing an id again keeps it until
    /// the later of the two expiries (one kept until the earlier was lost with the old
    /// record); what is read is either envelope (the same event's, normally the same). On
    /// DynamoDB, whose batch writes take no condition, the second store's expiry stands:
    /// with expiries counted from the store, it is the earlier only if the retention was
    /// lowered between the two.
    /// Their event types are recorded as seen in the same write (see [`EventTypeStore`]).
    async fn put(&self, tenant: &TenantId, envelopes: &[Envelope], expires_at: DateTime<Utc>) -> Result<()>;

    /// One envelope; `None` if absent, expired or another tenant's.
    async fn get(&self, tenant: &TenantId, id: &EventId) -> Result<Option<Envelope>>;

    /// Records event types of a tenant's events as seen without keeping their envelopes
    /// (ingest keeps most envelopes with their deliveries); a write only when one is due.
    async fn record_seen(&self, tenant: &TenantId, types: &[&str]) -> Result<()>;
}

/// The answer stored for an idempotency key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredResponse {
    /// HTTP status.
    pub status: u16,
    /// JSON body.
    pub body: String,
}

/// The result of claiming an idempotency key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Claim {
    /// The key was free and is now ours.
    Claimed,
    /// Someone used it already.
    Existing {
        /// Their request's fingerprint.
        fingerprint: String,
        /// Their answer, once they finished.
        response: Option<StoredResponse>,
    },
}

/// Publish de-duplication by `Idempotency-Key`.
#[async_trait]
pub trait IdempotencyStore: Send + Sync {
    /// Claims `key` for a request with `fingerprint` until `expires_at`, unless a claim that
    /// has not expired exists.
    async fn claim(
        &self,
        tenant: &TenantId,
        key: &str,
        fingerprint: &str,
        now: DateTime<Utc>,
        expires_at: DateTime<Utc>,
    ) -> Result<Claim>;

    /// Stores the answer for a claimed key, remembered until `expires_at` (a claim is made
    /// to expire soon, so one a crash left unanswered does not block its key for long).
    async fn complete(
        &self,
        tenant: &TenantId,
        key: &str,
        response: &StoredResponse,
        expires_at: DateTime<Utc>,
    ) -> Result<()>;

    /// Gives a claim up (the request failed), so a retry can proceed.
    async fn release(&self, tenant: &TenantId, key: &str) -> Result<()>;
}

/// A tenant's event types: those it declared, and those seen lately (recorded as events are
/// kept, by [`EventStore::put`], at most about once an hour per type and process).
#[async_trait]
pub trait EventTypeStore: Send + Sync {
    /// Declares a type, or replaces its declaration.
    async fn declare(&self, tenant: &TenantId, declared: &DeclaredType) -> Result<()>;

    /// Forgets a declaration; whether there was one.
    async fn undeclare(&self, tenant: &TenantId, name: &str) -> Result<bool>;

    /// The tenant's declared types.
    async fn declared(&self, tenant: &TenantId) -> Result<Vec<DeclaredType>>;

    /// The tenant's types seen since `since`, with when each was last seen: the first `max`
    /// by name. A publisher inventing types could otherwise make every listing unbounded.
    async fn seen(&self, tenant: &TenantId, since: DateTime<Utc>, max: usize) -> Result<Vec<(String, DateTime<Utc>)>>;
}

/// Portal links and the console sessions they open, by the hash of their secret.
#[async_trait]
pub trait PortalStore: Send + Sync {
    /// Stores a link until its grant expires.
    async fn put_link(&self, code_hash: &str, grant: &PortalGrant) -> Result<()>;

    /// Takes a link: its grant, once, if it has not expired by `now`; `None` if it was
    /// taken already, expired or never made.
    async fn redeem_link(&self, code_hash: &str, now: DateTime<Utc>) -> Result<Option<PortalGrant>>;

    /// Stores a session until its grant expires.
    async fn put_session(&self, id_hash: &str, grant: &PortalGrant) -> Result<()>;

    /// A session's grant, if it has not expired by `now`.
    async fn session(&self, id_hash: &str, now: DateTime<Utc>) -> Result<Option<PortalGrant>>;

    /// Ends a session.
    async fn end_session(&self, id_hash: &str) -> Result<()>;
}

/// Replay jobs, by hook.
#[async_trait]
pub trait ReplayStore: Send + Sync {
    /// Stores a new job (kept until [`ReplayJob::expires_at`]).
    async fn create(&self, job: &ReplayJob) -> Result<()>;

    /// A job of a hook.
    async fn get(&self, hook_id: HookId, id: ReplayId) -> Result<Option<ReplayJob>>;

    /// A hook's jobs still kept, newest first: at most `limit`, after `cursor` (the last id
    /// of the page before; [`crate::Error::InvalidCursor`] if it is not a job id).
    async fn list(&self, hook_id: HookId, limit: usize, cursor: Option<&str>) -> Result<Page<ReplayJob>>;

    /// Stores `job` if the stored one is still at step `read_step` (the step it was read
    /// at); `false`, and nothing written, if someone saved it since. The same save made
    /// again (a request sent again after its answer was lost) is `true`: the stored job is
    /// already `job`.
    async fn save(&self, job: &ReplayJob, read_step: u64) -> Result<bool>;
}

/// `keys` each once, in the order first given: what [`HookAccess::get_many`] reads.
/// DynamoDB refuses a batch read that names a key twice, where SQLite would read the hook
/// twice; the slice itself when it has no key twice (a worker's batch, de-duplicated
/// already), so the common case copies nothing.
pub fn distinct_keys(keys: &[(TenantId, HookId)]) -> std::borrow::Cow<'_, [(TenantId, HookId)]> {
    // A worker's batch names a few hooks: compared pairwise, its common case allocates
    // nothing on the delivery path.
    let distinct = if keys.len() <= 32 {
        keys.iter().enumerate().all(|(i, k)| keys[..i].iter().all(|o| o.1 != k.1 || o.0 != k.0))
    } else {
        let mut seen = std::collections::HashSet::with_capacity(keys.len());
        keys.iter().all(|k| seen.insert(k))
    };
    if distinct {
        return std::borrow::Cow::Borrowed(keys);
    }
    let mut seen = std::collections::HashSet::with_capacity(keys.len());
    std::borrow::Cow::Owned(keys.iter().filter(|k| seen.insert(*k)).cloned().collect())
}

/// The error of a routing list past its `most_bytes` ([`HookStore::list_for_routing`]).
pub fn routing_too_large(tenant: &TenantId, most_bytes: usize) -> crate::Error {
    crate::Error::TooLarge(format!(
        "tenant {tenant}'s hooks take more than {} KiB stored together, more than ingest reads to route its events; they come back until its hooks are made smaller or fewer",
        most_bytes / 1024
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Each key once, in the order first given, whether few (compared pairwise) or many
    /// (through a set); and no copy when none is named twice.
    #[test]
    fn distinct_keys_keeps_the_first_of_each() {
        let acme: TenantId = "acme".parse().expect("a tenant");
        let other: TenantId = "globex".parse().expect("a tenant");
        for n in [3, 40] {
            let ids: Vec<HookId> = (0..n).map(|_| HookId::generate()).collect();
            let keys: Vec<(TenantId, HookId)> = ids.iter().map(|id| (acme.clone(), *id)).collect();
            assert!(matches!(distinct_keys(&keys), std::borrow::Cow::Borrowed(_)), "{n}: none twice");
            // One hook id under two tenants is two keys.
            let mut two_tenants = keys.clone();
            two_tenants.push((other.clone(), ids[0]));
            assert!(matches!(distinct_keys(&two_tenants), std::borrow::Cow::Borrowed(_)), "{n}: two tenants");
            let mut twice = keys.clone();
            twice.insert(1, keys[0].clone());
            // The same hook id under another tenant is another key.
            twice.push((other.clone(), ids[0]));
            let mut want = keys.clone();
            want.push((other.clone(), ids[0]));
            assert_eq!(distinct_keys(&twice).into_owned(), want, "{n}");
        }
    }
}
