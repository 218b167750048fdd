//! Deliveries on DynamoDB as an append-only log: every change (an attempt, a status) is a
//! new item under the delivery, and reads fold them. A delivery ingest queued without
//! writing it down (decision 0021) begins with its first change, which carries what the
//! delivery item would have (its creation time, the envelope when it is kept here): a
//! delivery sent once and answered is one item, one write. Deliveries written before that
//! (and ones the API creates) begin with a delivery item, which sorts before its changes.
//!
//! Appending instead of updating in place means a whole batch of attempts is one
//! BatchWriteItem (25 items a request) rather than one UpdateItem per delivery, and a
//! redelivered ingest message rewriting its delivery items cannot undo progress.

use async_trait::async_trait;
use aws_sdk_dynamodb::types::AttributeValue;
use chrono::{DateTime, Utc};
use hookbridge_core::delivery::Attempt;
use hookbridge_core::delivery::{Delivery, DeliveryKey, DeliveryStatus, DeliveryUpdate, Opening};
use hookbridge_core::ids::{DeliveryId, HookId, monotonic_ulid};
use hookbridge_core::ports::{DeliveryStore, Order, Page, Window};
use hookbridge_core::{Error, Result};
use serde::{Deserialize, Serialize};

use crate::dynamo::Table;
use crate::keys::{DOC, EXPIRES_AT, Item, SK, doc, expired, get_s, hook_pk, key, n, s, to_doc};

/// The attribute holding an envelope kept with its delivery.
const ENVELOPE: &str = "envelope";

/// Items read per query page while folding a listing.
const QUERY_PAGE: i32 = 200;

/// Partitions one hook's deliveries are spread over. DynamoDB takes at most 1,000 write
/// units a second in one partition; a delivery writes one item on the happy path (its
/// first attempt, decision 0021) and one more per retry, so 10,000 deliveries a second to
/// one hook are 10,000–20,000 units: 32 partitions keep each at 313–625.
pub(crate) const SHARDS: u128 = 32;

/// The partition of a delivery: `H#{hook}#{n}`, `n` from the id's random bits (a hash of
/// the event and the hook for ingest's ids), so a hook's deliveries spread evenly.
fn shard_pk(hook: HookId, id: DeliveryId) -> String {
    format!("{}#{}", hook_pk(&hook), id.random_bits() % SHARDS)
}

/// Every partition a hook's deliveries may be in: its shards, and `H#{hook}` itself, where
/// deliveries written before the shards were (kept up to 14 days) still are.
fn all_pks(hook: HookId) -> Vec<String> {
    (0..SHARDS).map(|n| format!("{}#{n}", hook_pk(&hook))).chain([hook_pk(&hook)]).collect()
}

/// A change to a delivery, as stored.
#[derive(Debug, Serialize, Deserialize)]
struct UpdateDoc {
    delivery: DeliveryKey,
    attempt: Option<Attempt>,
    status: DeliveryStatus,
    // Absent rather than null: a first record should fit one write unit with its envelope.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    next_attempt_at: Option<DateTime<Utc>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    note: Option<String>,
    #[serde(default)]
    round: u32,
    at: DateTime<Utc>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    opening: Option<Opening>,
}

impl From<&DeliveryUpdate> for UpdateDoc {
    fn from(u: &DeliveryUpdate) -> Self {
        Self {
            delivery: u.delivery.clone(),
            attempt: u.attempt.clone(),
            status: u.status,
            next_attempt_at: u.next_attempt_at,
            note: u.note.clone(),
            round: u.round,
            at: u.at,
            opening: u.opening.clone(),
        }
    }
}

impl From<UpdateDoc> for DeliveryUpdate {
    fn from(u: UpdateDoc) -> Self {
        Self {
            delivery: u.delivery,
            attempt: u.attempt,
            status: u.status,
            next_attempt_at: u.next_attempt_at,
            note: u.note,
            round: u.round,
            at: u.at,
            opening: u.opening,
        }
    }
}

pub(crate) struct DynamoDeliveryStore {
    table: Table,
}

impl DynamoDeliveryStore {
    pub(crate) fn new(table: Table) -> Self {
        Self { table }
    }
}

fn expiry(id: DeliveryId) -> AttributeValue {
    n(expiry_secs(id))
}

/// The second a delivery's items expire at (DynamoDB's TTL is in whole seconds), rounded
/// up: rounded down, they read as expired up to a second before the delivery's retention
/// ended, while the worker (which goes by the millisecond) may still send it, so an
/// attempt's record was hidden at once where SQLite showed it.
fn expiry_secs(id: DeliveryId) -> i64 {
    let at = hookbridge_core::delivery::expires_at(id);
    at.timestamp() + i64::from(at.timestamp_subsec_millis() > 0)
}

/// The delivery id an item belongs to (`D#{id}` or `D#{id}#U#…`).
fn delivery_of(item: &Item) -> Result<DeliveryId> {
    let sk = get_s(item, SK)?;
    sk.get(2..28)
        .and_then(|id| id.parse().ok())
        .ok_or_else(|| Error::corrupt("a delivery item", format!("sort key {sk} names no delivery")))
}

fn is_update(item: &Item) -> bool {
    get_s(item, SK).is_ok_and(|sk| sk.len() > 28)
}

/// Folds one delivery's items (in ascending key order) into the delivery.
fn fold(items: &[Item]) -> Result<Option<Delivery>> {
    let mut delivery: Option<Delivery> = None;
    for item in items {
        if is_update(item) {
            let mut u: DeliveryUpdate = doc::<UpdateDoc>(item, "delivery update")?.into();
            if let (Some(o), Some(AttributeValue::S(kept))) = (u.opening.as_mut(), item.get(ENVELOPE)) {
                o.envelope = Some(kept.clone());
            }
            let d = delivery.get_or_insert_with(|| Delivery::opened_by(&u));
            d.apply(&u);
        } else {
            // The delivery item sorts before its updates, so it comes first.
            delivery = Some(doc(item, "delivery")?);
        }
    }
    Ok(delivery)
}

#[async_trait]
impl DeliveryStore for DynamoDeliveryStore {
    async fn insert(&self, deliveries: &[Delivery]) -> Result<()> {
        let items = deliveries
            .iter()
            .map(|d| {
                let mut item = key(shard_pk(d.hook_id, d.id), format!("D#{}", d.id));
                item.insert(DOC.to_owned(), to_doc(d)?);
                item.insert(EXPIRES_AT.to_owned(), expiry(d.id));
                Ok(item)
            })
            .collect::<Result<Vec<_>>>()?;
        self.table.put_all(items).await
    }

    async fn record(&self, updates: &[DeliveryUpdate]) -> Result<()> {
        let items = updates
            .iter()
            .map(|u| {
                let k = &u.delivery;
                let mut item =
                    key(shard_pk(k.hook_id, k.delivery_id), format!("D#{}#U#{}", k.delivery_id, monotonic_ulid()));
                let mut stored = UpdateDoc::from(u);
                // An attribute of its own, not a string inside the document, where every
                // quote would be escaped: the item stays within one write unit longer.
                if let Some(envelope) = stored.opening.as_mut().and_then(|o| o.envelope.take()) {
                    item.insert(ENVELOPE.to_owned(), s(envelope));
                }
                item.insert(DOC.to_owned(), to_doc(&stored)?);
                item.insert(EXPIRES_AT.to_owned(), expiry(k.delivery_id));
                Ok(item)
            })
            .collect::<Result<Vec<_>>>()?;
        self.table.put_all(items).await
    }

    async fn get(&self, hook_id: HookId, id: DeliveryId) -> Result<Option<Delivery>> {
        let (a, b) = futures::join!(self.items_of(shard_pk(hook_id, id), id), self.items_of(hook_pk(&hook_id), id));
        let mut items = a?;
        items.extend(b?);
        sort_by_sk(&mut items);
        fold(&items)
    }

    async fn list(
        &self,
        hook_id: HookId,
        window: Window,
        order: Order,
        limit: usize,
        cursor: Option<&str>,
    ) -> Result<Page<Delivery>> {
        let (lo, hi) = window.id_range_in(order, cursor)?;
        let limit = limit.max(1);
        // A cursor from outside the window (its page read before the window moved on, or
        // from a wider window) leaves nothing between the bounds; DynamoDB refuses a
        // `BETWEEN` whose bounds are the wrong way round.
        if lo >= hi {
            return Ok(Page::cut(Vec::new(), limit, |d: &Delivery| d.id.to_string()));
        }
        let newest_first = order == Order::NewestFirst;
        // A merge of the partitions, each read a page at a time as the merge reaches it:
        // reading every partition's first `limit + 1` deliveries at once held 33 times the
        // page in memory (16,500 deliveries for a page of 500, more than the function has).
        let first_page = first_page_items(limit);
        let mut parts: Vec<Partition> = all_pks(hook_id).into_iter().map(|pk| Partition::new(pk, first_page)).collect();
        let span = Span { lo, hi, newest_first };
        let filled = futures::future::join_all(parts.iter_mut().map(|p| p.fill(self, span))).await;
        filled.into_iter().collect::<Result<Vec<()>>>()?;
        // Every delivery drawn counts towards the page, read or not, and the page is cut by
        // their ids: a window of records this version cannot read (after a rollback) is
        // left out a page at a time, not walked whole in one request.
        let mut out: Vec<(DeliveryId, Option<Delivery>)> = Vec::with_capacity(limit + 1);
        while out.len() <= limit {
            let fronts = parts.iter().filter_map(|p| p.front());
            let best = if newest_first { fronts.max() } else { fronts.min() };
            let Some(best) = best else { break };
            // The same delivery may have items in two partitions (its shard and the hook's
            // own, from before the shards): both are at their fronts now.
            let mut items = Vec::new();
            let mut drawn = Vec::new();
            for (i, p) in parts.iter_mut().enumerate().filter(|(_, p)| p.front() == Some(best)) {
                items.extend(p.pop());
                drawn.push(i);
            }
            sort_by_sk(&mut items);
            match fold(&items) {
                Ok(Some(d)) => out.push((best, Some(d))),
                Ok(None) => {}
                Err(e) => {
                    tracing::error!(hook_id = %hook_id, delivery_id = %best, error = %e, "cannot read the stored delivery; left out of the listing");
                    out.push((best, None));
                }
            }
            if out.len() <= limit {
                for i in drawn {
                    parts[i].fill(self, span).await?;
                }
            }
        }
        let page = Page::cut(out, limit, |(id, _)| id.to_string());
        Ok(Page { items: page.items.into_iter().filter_map(|(_, d)| d).collect(), next_cursor: page.next_cursor })
    }
}

/// Items asked of each partition by its first query of a listing: about its share of the
/// page's deliveries, a few items each. A partition the merge keeps drawing on reads
/// pages twice as large each time, up to [`QUERY_PAGE`].
fn first_page_items(limit: usize) -> i32 {
    // The hook's shards and its own partition.
    let share = (limit + 1).div_ceil(SHARDS as usize + 1) + 1;
    (3 * share).clamp(10, QUERY_PAGE as usize) as i32
}

/// The ids a listing reads, and in which order.
#[derive(Clone, Copy)]
struct Span {
    lo: DeliveryId,
    hi: DeliveryId,
    newest_first: bool,
}

/// One partition of a listing, read a page at a time.
struct Partition {
    pk: String,
    /// Where the next page starts; `None` once read to the end (or before the first page).
    next: Option<Item>,
    done: bool,
    page_items: i32,
    /// Deliveries read whole, in order.
    ready: std::collections::VecDeque<(DeliveryId, Vec<Item>)>,
    /// The last delivery read, whose items may go on in the next page.
    open: Option<(DeliveryId, Vec<Item>)>,
}

impl Partition {
    fn new(pk: String, page_items: i32) -> Self {
        Self { pk, next: None, done: false, page_items, ready: Default::default(), open: None }
    }

    /// The next delivery's id, if any is left.
    fn front(&self) -> Option<DeliveryId> {
        self.ready.front().map(|(id, _)| *id)
    }

    fn pop(&mut self) -> Vec<Item> {
        self.ready.pop_front().map(|(_, items)| items).unwrap_or_default()
    }

    /// Reads pages until a whole delivery is ready, or the partition is read to the end.
    async fn fill(&mut self, store: &DynamoDeliveryStore, span: Span) -> Result<()> {
        let now = Utc::now().timestamp();
        while self.ready.is_empty() && !self.done {
            let range = (format!("D#{}", span.lo), format!("D#{}", span.hi));
            let (items, next) = store
                .table
                .query_range_page(&self.pk, range, span.newest_first, self.page_items, self.next.take())
                .await?;
            self.page_items = (self.page_items * 2).min(QUERY_PAGE);
            // Each delivery's items arrive together, in sort-key order either way.
            for item in &items {
                let id = delivery_of(item)?;
                if id >= span.hi || id < span.lo || expired(item, now) {
                    continue;
                }
                match self.open.as_mut() {
                    Some((open, items)) if *open == id => items.push(item.clone()),
                    _ => {
                        if let Some(whole) = self.open.replace((id, vec![item.clone()])) {
                            self.ready.push_back(whole);
                        }
                    }
                }
            }
            match next {
                Some(k) => self.next = Some(k),
                None => {
                    self.done = true;
                    self.ready.extend(self.open.take());
                }
            }
        }
        Ok(())
    }
}

/// A delivery's items in the order they were written: the delivery item, then its
/// updates (their sort keys end in time-ordered ULIDs).
fn sort_by_sk(items: &mut [Item]) {
    items.sort_by(|a, b| get_s(a, SK).unwrap_or_default().cmp(get_s(b, SK).unwrap_or_default()));
}

impl DynamoDeliveryStore {
    /// Every unexpired item of one delivery in one partition.
    async fn items_of(&self, pk: String, id: DeliveryId) -> Result<Vec<Item>> {
        let now = Utc::now().timestamp();
        let mut items = self.table.query_prefix(pk, format!("D#{id}")).await?;
        items.retain(|i| !expired(i, now));
        Ok(items)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Expired only once the delivery's retention has ended: at its second, or the next
    /// one when it ends within a second.
    #[test]
    fn a_delivery_expires_no_sooner_than_its_retention_ends() {
        let retention = hookbridge_core::delivery::DELIVERY_RETENTION_DAYS * 86_400;
        let at = |ms: u64| DeliveryId::from_parts(ms, 7);
        assert_eq!(expiry_secs(at(1_000_000_000_000)), 1_000_000_000 + retention, "on a second");
        assert_eq!(expiry_secs(at(1_000_000_000_700)), 1_000_000_001 + retention, "within one: the next");
        let item: Item = [(EXPIRES_AT.to_owned(), expiry(at(1_000_000_000_700)))].into_iter().collect();
        assert!(!expired(&item, 1_000_000_000 + retention), "not while its last second runs");
        assert!(expired(&item, 1_000_000_001 + retention));
    }
}
