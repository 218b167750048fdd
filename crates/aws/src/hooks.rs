//! Hooks on DynamoDB: the hook item and its name guard written in one transaction, the
//! version checked on every replace, and every change marked on the tenant's counter item
//! so that a big tenant's list can be kept between reads ([`crate::hook_lists`]).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use aws_sdk_dynamodb::error::SdkError;
use aws_sdk_dynamodb::operation::transact_write_items::TransactWriteItemsError;
use aws_sdk_dynamodb::types::{Delete, KeysAndAttributes, Put, ReturnValue, TransactWriteItem, Update};
use hookbridge_core::hook::Hook;
use hookbridge_core::ids::{DeliveryId, HookId, TenantId};
use hookbridge_core::ports::{HookAccess, HookStore, Page, RoutingList, distinct_keys};
use hookbridge_core::{Error, Result};

use crate::dynamo::Table;
use crate::hook_lists::HookLists;
use crate::keys::{DOC, Item, PK, REVISION, SK, doc, get_s, key, n, s, tenant_pk, to_doc};

/// BatchGetItem's limit.
const BATCH_GET_MAX: usize = 100;

pub(crate) struct DynamoHookStore {
    table: Table,
    lists: HookLists,
}

impl DynamoHookStore {
    pub(crate) fn new(table: Table) -> Self {
        Self { table, lists: HookLists::default() }
    }

    /// The hook's item as stored, read consistently.
    async fn item(&self, tenant: &TenantId, id: HookId) -> Result<Option<Item>> {
        let out = self
            .table
            .client
            .get_item()
            .table_name(&self.table.name)
            .set_key(Some(hook_key(tenant, id)))
            .consistent_read(true)
            .send()
            .await
            .map_err(|e| Error::backend("dynamodb.GetItem", e))?;
        Ok(out.item)
    }

    /// The name a hook's guard is kept under (`None` inside if no guard names it), `None`
    /// if there is no such hook. A hook this
    /// version cannot read (a newer release wrote it) is still deleted whole: its name is
    /// taken from its document read as plain JSON, or else found among the tenant's
    /// guards by the hook id each one keeps.
    async fn name_of(&self, tenant: &TenantId, id: HookId) -> Result<Option<Option<String>>> {
        let Some(item) = self.item(tenant, id).await? else { return Ok(None) };
        if let Ok(hook) = doc::<Hook>(&item, "hook") {
            return Ok(Some(Some(hook.config.name.as_str().to_owned())));
        }
        let plain = get_s(&item, DOC).ok().and_then(|d| serde_json::from_str::<serde_json::Value>(d).ok());
        if let Some(name) = plain.as_ref().and_then(|d| d.pointer("/config/name")).and_then(|n| n.as_str()) {
            return Ok(Some(Some(name.to_owned())));
        }
        let mut start = None;
        loop {
            let (guards, next) = self.table.query_prefix_page(&tenant_pk(tenant), "N#", None, start).await?;
            let ours = guards.iter().find(|g| get_s(g, "hook_id").ok() == Some(id.to_string().as_str()));
            if let Some(sk) = ours.and_then(|g| get_s(g, SK).ok()).and_then(|sk| sk.strip_prefix("N#")) {
                return Ok(Some(Some(sk.to_owned())));
            }
            match next {
                Some(n) => start = Some(n),
                None => return Ok(Some(None)),
            }
        }
    }
}

fn hook_key(tenant: &TenantId, id: HookId) -> Item {
    key(tenant_pk(tenant), format!("H#{id}"))
}

fn guard_key(tenant: &TenantId, name: &str) -> Item {
    key(tenant_pk(tenant), format!("N#{name}"))
}

/// The item counting a tenant's hooks, so the quota is checked in the create
/// transaction rather than by counting (a query per create, racing with other creates).
fn counter_key(tenant: &TenantId) -> Item {
    key(tenant_pk(tenant), "C#hooks".to_owned())
}

/// The counter's attribute.
const HOOK_COUNT: &str = "hooks";
/// The counter item's attribute changed with every change to one of the tenant's hooks.
const HOOKS_MARKER: &str = "marker";

/// A marker no other change has written.
fn new_marker() -> String {
    DeliveryId::generate().to_string()
}

fn count_by(table: &str, tenant: &TenantId, by: i64, max: Option<u32>) -> Result<TransactWriteItem> {
    let mut u = Update::builder()
        .table_name(table)
        .set_key(Some(counter_key(tenant)))
        .update_expression("ADD #c :by SET #m = :m")
        .expression_attribute_names("#c", HOOK_COUNT)
        .expression_attribute_names("#m", HOOKS_MARKER)
        .expression_attribute_values(":by", n(by))
        .expression_attribute_values(":m", s(new_marker()));
    if let Some(max) = max {
        u = u.condition_expression("attribute_not_exists(#c) OR #c < :max").expression_attribute_values(":max", n(max));
    }
    Ok(TransactWriteItem::builder().update(u.build().map_err(build_err)?).build())
}

/// The item claiming a hook's name in its tenant.
fn guard_item(hook: &Hook) -> Item {
    let mut guard = guard_key(&hook.tenant, hook.config.name.as_str());
    guard.insert("hook_id".to_owned(), s(hook.id.to_string()));
    guard
}

fn hook_item(hook: &Hook) -> Result<Item> {
    let mut item = hook_key(&hook.tenant, hook.id);
    item.insert(DOC.to_owned(), to_doc(hook)?);
    item.insert(REVISION.to_owned(), n(hook.revision));
    Ok(item)
}

fn build_err(e: impl std::error::Error + Send + Sync + 'static) -> Error {
    Error::backend("dynamodb.build", e)
}

/// Runs of a transaction cancelled only by contention. Every create and delete of a
/// tenant's hooks updates the tenant's hook count, so two at once cancel each other
/// (`TransactionConflict`), which the SDK does not retry.
const TRANSACT_ROUNDS: u32 = 6;

/// Whether a cancelled transaction may succeed when run again: every item's condition held,
/// and some item lost to another transaction or to throttling.
fn only_contended(e: &SdkError<TransactWriteItemsError>) -> bool {
    let Some(TransactWriteItemsError::TransactionCanceledException(c)) = e.as_service_error() else {
        return false;
    };
    let codes: Vec<&str> = c.cancellation_reasons().iter().map(|r| r.code().unwrap_or("None")).collect();
    contended(&codes)
}

/// [`only_contended`] on the cancellation reasons' codes, one per item ("None": that item
/// was not the cause).
fn contended(codes: &[&str]) -> bool {
    let transient =
        |code: &str| matches!(code, "TransactionConflict" | "ThrottlingError" | "ProvisionedThroughputExceeded");
    codes.iter().any(|c| transient(c)) && codes.iter().all(|c| *c == "None" || transient(c))
}

/// Which of a cancelled transaction's items failed their condition.
fn failed_conditions(e: &SdkError<TransactWriteItemsError>) -> Option<Vec<bool>> {
    match e.as_service_error() {
        Some(TransactWriteItemsError::TransactionCanceledException(c)) => {
            Some(c.cancellation_reasons().iter().map(|r| r.code() == Some("ConditionalCheckFailed")).collect())
        }
        _ => None,
    }
}

#[async_trait]
impl HookAccess for DynamoHookStore {
    async fn get(&self, tenant: &TenantId, id: HookId) -> Result<Option<Hook>> {
        self.item(tenant, id).await?.as_ref().map(|i| doc(i, "hook")).transpose()
    }

    async fn get_many(&self, keys: &[(TenantId, HookId)]) -> Result<Vec<Arc<Hook>>> {
        let keys = distinct_keys(keys);
        let mut hooks = Vec::with_capacity(keys.len());
        for chunk in keys.chunks(BATCH_GET_MAX) {
            let mut pending: Vec<Item> = chunk.iter().map(|(t, h)| hook_key(t, *h)).collect();
            let mut round = 0u32;
            while !pending.is_empty() {
                if round > 0 {
                    tokio::time::sleep(Duration::from_millis(50 << round.min(6))).await;
                }
                round += 1;
                if round > 8 {
                    return Err(Error::backend("dynamodb.BatchGetItem", "keys stayed unprocessed"));
                }
                let ka = KeysAndAttributes::builder()
                    .set_keys(Some(std::mem::take(&mut pending)))
                    .consistent_read(true)
                    .build()
                    .map_err(build_err)?;
                let out = self
                    .table
                    .client
                    .batch_get_item()
                    .request_items(&self.table.name, ka)
                    .send()
                    .await
                    .map_err(|e| Error::backend("dynamodb.BatchGetItem", e))?;
                for item in out.responses.and_then(|mut r| r.remove(&self.table.name)).unwrap_or_default() {
                    hooks.push(Arc::new(doc(&item, "hook")?));
                }
                pending = out
                    .unprocessed_keys
                    .and_then(|mut m| m.remove(&self.table.name))
                    .map(|ka| ka.keys)
                    .unwrap_or_default();
            }
        }
        Ok(hooks)
    }

    async fn replace(&self, hook: &Hook, expected_revision: u64) -> Result<()> {
        let item = hook_item(hook)?;
        let written = item.get(DOC).cloned().ok_or_else(|| Error::backend("hooks.replace", "no document"))?;
        // Or this very write, stored already: the SDK sends a request again when its answer
        // was lost, and the repeat found the revision it had itself moved on, and answered
        // a conflict (a `PUT` with `If-Match` got `409` for a change that was saved).
        let r = self
            .table
            .client
            .put_item()
            .table_name(&self.table.name)
            .set_item(Some(item))
            .condition_expression("#v = :expected OR #doc = :doc")
            .expression_attribute_names("#v", REVISION)
            .expression_attribute_names("#doc", DOC)
            .expression_attribute_values(":expected", n(expected_revision))
            .expression_attribute_values(":doc", written.clone())
            // The hook as it was (at no cost in capacity), to tell whether ingest's view of it changed.
            .return_values(ReturnValue::AllOld)
            .send()
            .await;
        match r {
            Ok(out) => {
                let before = out.attributes.as_ref().filter(|old| old.get(DOC) != Some(&written));
                // A repeat of this very write (its answer lost) cannot tell what the first
                // replaced, nor can an unreadable old document: marked either way.
                let same_routing = before
                    .and_then(|old| doc::<Hook>(old, "hook").ok())
                    .is_some_and(|old| old.routing() == hook.routing());
                if !same_routing && let Err(e) = mark_changed(&self.table, &hook.tenant).await {
                    // Stored already, so not answered as a failure: lists kept elsewhere
                    // miss the change for at most `hook_lists::KEPT_FOR`.
                    tracing::warn!(tenant = %hook.tenant, error = %e, "a hook changed, but its tenant's hooks marker was not");
                }
                Ok(())
            }
            Err(e) if e.as_service_error().is_some_and(|s| s.is_conditional_check_failed_exception()) => {
                Err(Error::VersionConflict)
            }
            Err(e) => Err(Error::backend("dynamodb.PutItem", e)),
        }
    }
}

#[async_trait]
impl HookStore for DynamoHookStore {
    async fn create(&self, hook: &Hook, max_hooks: u32) -> Result<()> {
        let guard = guard_item(hook);
        let put_hook = Put::builder()
            .table_name(&self.table.name)
            .set_item(Some(hook_item(hook)?))
            .condition_expression("attribute_not_exists(PK)")
            .build()
            .map_err(build_err)?;
        let put_guard = Put::builder()
            .table_name(&self.table.name)
            .set_item(Some(guard))
            .condition_expression("attribute_not_exists(PK)")
            .build()
            .map_err(build_err)?;
        let r = self
            .transact(vec![
                TransactWriteItem::builder().put(put_hook).build(),
                TransactWriteItem::builder().put(put_guard).build(),
                count_by(&self.table.name, &hook.tenant, 1, Some(max_hooks))?,
            ])
            .await;
        match r {
            Ok(_) => Ok(()),
            Err(e) => match failed_conditions(&e) {
                Some(failed) if failed.get(1) == Some(&true) => Err(Error::NameTaken),
                Some(failed) if failed.get(2) == Some(&true) => Err(Error::QuotaReached { limit: max_hooks }),
                Some(failed) if failed.first() == Some(&true) => {
                    Err(Error::corrupt_as("a hook id (it collided with a stored one)"))
                }
                _ => Err(Error::backend("dynamodb.TransactWriteItems", e)),
            },
        }
    }

    async fn list(&self, tenant: &TenantId, limit: usize, cursor: Option<&str>) -> Result<Page<Hook>> {
        let start = match cursor {
            Some(c) => Some(c.parse::<HookId>().map_err(|_| Error::InvalidCursor)?),
            None => None,
        };
        let limit = limit.max(1);
        let rows = self.query_hooks(tenant, start, Some(limit + 1)).await?;
        Ok(Page::cut_readable(rows, limit))
    }

    async fn list_all(&self, tenant: &TenantId) -> Result<Vec<Hook>> {
        Ok(self.query_hooks(tenant, None, None).await?.into_iter().filter_map(|(_, hook)| hook).collect())
    }

    async fn list_for_routing(&self, tenant: &TenantId, most_bytes: usize) -> Result<RoutingList> {
        if !self.lists.keeps(tenant) {
            let list = self.query_shared(tenant, most_bytes).await?;
            // Kept with no marker: the next read reads one first, then the list again.
            self.lists.read(tenant, None, &list);
            return Ok(list);
        }
        // The marker first: a change whose marker was written before it was read is in the
        // list read after. (A replace writes its marker just after the hook, before it
        // returns: a batch between the two routes as if it had come just before.)
        let marker = match self.marker(tenant).await? {
            Some(m) => Some(m),
            // A counter item from before markers: given one, so the list can be kept. Best
            // effort: without one, the list is read afresh, as it always was.
            None => match mark_changed(&self.table, tenant).await {
                Ok(()) => self.marker(tenant).await?,
                Err(e) => {
                    tracing::warn!(tenant = %tenant, error = %e, "could not give the tenant a hooks marker");
                    None
                }
            },
        };
        if let Some((hooks, bytes)) = marker.as_deref().and_then(|m| self.lists.under(tenant, m)) {
            if bytes > most_bytes {
                return Err(hookbridge_core::ports::routing_too_large(tenant, most_bytes));
            }
            return Ok(RoutingList { hooks, unreadable: Vec::new() });
        }
        let list = self.query_shared(tenant, most_bytes).await?;
        self.lists.read(tenant, marker, &list);
        Ok(list)
    }

    async fn stored_bytes(&self, tenant: &TenantId, except: Option<HookId>, most: usize) -> Result<usize> {
        self.count_bytes(tenant, except, most).await
    }

    async fn delete(&self, tenant: &TenantId, id: HookId) -> Result<bool> {
        let Some(name) = self.name_of(tenant, id).await? else {
            return Ok(false);
        };
        let del_hook = Delete::builder()
            .table_name(&self.table.name)
            .set_key(Some(hook_key(tenant, id)))
            .condition_expression("attribute_exists(PK)")
            .build()
            .map_err(build_err)?;
        let mut writes = vec![TransactWriteItem::builder().delete(del_hook).build()];
        // With no guard naming it (a damaged hook), the hook goes and no name is freed.
        if let Some(name) = name {
            let del_guard =
                Delete::builder().table_name(&self.table.name).set_key(Some(guard_key(tenant, &name))).build();
            writes.push(TransactWriteItem::builder().delete(del_guard.map_err(build_err)?).build());
        }
        writes.push(count_by(&self.table.name, tenant, -1, None)?);
        let r = self.transact(writes).await;
        match r {
            Ok(_) => Ok(true),
            Err(e) if failed_conditions(&e).is_some_and(|f| f.first() == Some(&true)) => Ok(false),
            Err(e) => Err(Error::backend("dynamodb.TransactWriteItems", e)),
        }
    }

    async fn scan(&self, cursor: Option<&str>, limit: usize) -> Result<Page<Hook>> {
        // The cursor is the last key the scan evaluated, which may be any item's.
        let start = match cursor {
            Some(c) => {
                let (pk, sk) = c.split_once('\n').ok_or(Error::InvalidCursor)?;
                Some(key(pk.to_owned(), sk.to_owned()))
            }
            None => None,
        };
        let page = self
            .table
            .client
            .scan()
            .table_name(&self.table.name)
            .filter_expression("begins_with(PK, :t) AND begins_with(SK, :h)")
            .expression_attribute_values(":t", s("T#"))
            .expression_attribute_values(":h", s("H#"))
            .consistent_read(true)
            .set_exclusive_start_key(start)
            .limit(limit.clamp(1, 1000) as i32)
            .send()
            .await
            .map_err(|e| Error::backend("dynamodb.Scan", e))?;
        let items = page
            .items()
            .iter()
            .filter_map(|item| {
                doc::<Hook>(item, "hook")
                    .inspect_err(|e| {
                        let key = (get_s(item, PK).unwrap_or_default(), get_s(item, SK).unwrap_or_default());
                        tracing::error!(pk = %key.0, sk = %key.1, error = %e, "cannot read this hook; the scan leaves it out");
                    })
                    .ok()
            })
            .collect();
        let next_cursor = match &page.last_evaluated_key {
            Some(k) => Some(format!("{}\n{}", get_s(k, PK)?, get_s(k, SK)?)),
            None => None,
        };
        Ok(Page { items, next_cursor })
    }
}

/// Writes a new hooks marker for `tenant`, after a change to one of its hooks stored
/// apart from the counter item.
async fn mark_changed(table: &Table, tenant: &TenantId) -> Result<()> {
    write_counter(table, tenant, None).await
}

/// Writes a new hooks marker for `tenant` and, when given, its count of hooks.
async fn write_counter(table: &Table, tenant: &TenantId, hooks: Option<usize>) -> Result<()> {
    let mut update = table
        .client
        .update_item()
        .table_name(&table.name)
        .set_key(Some(counter_key(tenant)))
        .update_expression(if hooks.is_some() { "SET #c = :n, #m = :m" } else { "SET #m = :m" })
        .expression_attribute_names("#m", HOOKS_MARKER)
        .expression_attribute_values(":m", s(new_marker()));
    if let Some(count) = hooks {
        update = update.expression_attribute_names("#c", HOOK_COUNT).expression_attribute_values(":n", n(count as i64));
    }
    update.send().await.map(|_| ()).map_err(|e| Error::backend("dynamodb.UpdateItem", e))
}

impl DynamoHookStore {
    /// The tenant's hooks marker (none before its first hook).
    async fn marker(&self, tenant: &TenantId) -> Result<Option<String>> {
        let out = self
            .table
            .client
            .get_item()
            .table_name(&self.table.name)
            .set_key(Some(counter_key(tenant)))
            .projection_expression("#m")
            .expression_attribute_names("#m", HOOKS_MARKER)
            .consistent_read(true)
            .send()
            .await
            .map_err(|e| Error::backend("dynamodb.GetItem", e))?;
        Ok(out.item.as_ref().and_then(|i| get_s(i, HOOKS_MARKER).ok()).map(str::to_owned))
    }

    /// Writes a hook, its name guard and the tenant's hook count together, or none.
    async fn transact(&self, items: Vec<TransactWriteItem>) -> Result<(), SdkError<TransactWriteItemsError>> {
        let mut round = 0;
        loop {
            let r = self.table.client.transact_write_items().set_transact_items(Some(items.clone())).send().await;
            match r {
                Err(e) if only_contended(&e) && round + 1 < TRANSACT_ROUNDS => {
                    round += 1;
                    // Full jitter: calls that collided wait different times.
                    let ceiling = 10u64 << round;
                    tokio::time::sleep(Duration::from_millis(rand::random_range(0..=ceiling))).await;
                }
                r => return r.map(|_| ()),
            }
        }
    }

    /// Every hook of the tenant, shared (for routing, and the lists kept for it). A
    /// document this version cannot decode is named in the list's `unreadable`, not a
    /// failure of the whole list. Past `most_bytes` of documents, a failure, found page by
    /// page: no more than a page beyond it is held.
    async fn query_shared(&self, tenant: &TenantId, most_bytes: usize) -> Result<RoutingList> {
        let mut list = RoutingList::default();
        let mut bytes = 0usize;
        self.each_hook_item(tenant, None, None, |item| {
            bytes = bytes.saturating_add(item.get(DOC).and_then(|d| d.as_s().ok()).map_or(0, String::len));
            if bytes > most_bytes {
                return Err(hookbridge_core::ports::routing_too_large(tenant, most_bytes));
            }
            match doc::<Hook>(item, "hook") {
                Ok(hook) => list.hooks.push(Arc::new(hook)),
                Err(e) => {
                    let id = get_s(item, SK)?.strip_prefix("H#").and_then(|id| id.parse::<HookId>().ok());
                    let id = id.ok_or_else(|| Error::corrupt_as("a hook's key"))?;
                    tracing::error!(tenant = %tenant, hook_id = %id, error = %e, "cannot read this hook; its events are queued to it unrouted");
                    list.unreadable.push(id);
                }
            }
            Ok(())
        })
        .await?;
        Ok(list)
    }

    /// The bytes of the tenant's hooks' documents, leaving out `except`'s; counting stops
    /// once past `most`, at the end of a page. A query of the tenant's partition: about
    /// 2,000 read units at a 16 MiB quota, which a bulk create spends once, not per item.
    async fn count_bytes(&self, tenant: &TenantId, except: Option<HookId>, most: usize) -> Result<usize> {
        let except = except.map(|id| format!("H#{id}"));
        let pk = tenant_pk(tenant);
        let (mut bytes, mut start) = (0usize, None);
        loop {
            // Not consistently: the quota is checked outside the write's transaction anyway.
            let (items, next) = self.table.query_prefix_page_read(&pk, "H#", None, start, false).await?;
            for item in &items {
                if except.is_some() && item.get(SK).and_then(|k| k.as_s().ok()) == except.as_ref() {
                    continue;
                }
                bytes = bytes.saturating_add(item.get(DOC).and_then(|d| d.as_s().ok()).map_or(0, String::len));
            }
            match next {
                Some(k) if bytes <= most => start = Some(k),
                _ => return Ok(bytes),
            }
        }
    }

    /// Hooks of a tenant in id order, after `start`, at most `max` (all if `None`): each
    /// its id and the hook, or `None` for one this version cannot read (written by a newer
    /// one, seen after a rollback), logged and left out: it made every listing of its
    /// tenant a `500`.
    async fn query_hooks(
        &self,
        tenant: &TenantId,
        start: Option<HookId>,
        max: Option<usize>,
    ) -> Result<Vec<(String, Option<Hook>)>> {
        let mut out = Vec::new();
        self.each_hook_item(tenant, start, max, |item| {
            let id = get_s(item, SK)?.strip_prefix("H#").unwrap_or_default().to_owned();
            let hook = doc(item, "hook")
                .inspect_err(
                    |e| tracing::error!(hook_id = id, error = %e, "a stored hook this version cannot read is left out"),
                )
                .ok();
            out.push((id, hook));
            Ok(())
        })
        .await?;
        Ok(out)
    }

    /// `each` on the items of a tenant's hooks in id order, after `start`, at most `max`
    /// (all if `None`).
    async fn each_hook_item(
        &self,
        tenant: &TenantId,
        start: Option<HookId>,
        max: Option<usize>,
        mut each: impl FnMut(&Item) -> Result<()> + Send,
    ) -> Result<()> {
        let mut seen = 0;
        let mut exclusive_start: Option<Item> = start.map(|h| hook_key(tenant, h));
        loop {
            let left = max.map(|m| m.saturating_sub(seen));
            if left == Some(0) {
                return Ok(());
            }
            let pk = tenant_pk(tenant);
            let (items, next) =
                self.table.query_prefix_page(&pk, "H#", Some(left.unwrap_or(1000)), exclusive_start.take()).await?;
            for item in &items {
                each(item)?;
            }
            seen += items.len();
            match next {
                Some(k) => exclusive_start = Some(k),
                None => return Ok(()),
            }
        }
    }
}

/// The raw item of a hook, for tests proving no secret is stored in clear.
pub async fn raw_hook_item(table: &Table, tenant: &TenantId, id: HookId) -> Result<String> {
    let out = table
        .client
        .get_item()
        .table_name(&table.name)
        .set_key(Some(hook_key(tenant, id)))
        .consistent_read(true)
        .send()
        .await
        .map_err(|e| Error::backend("dynamodb.GetItem", e))?;
    let item: HashMap<String, _> = out.item.unwrap_or_default();
    let mut parts: Vec<String> = item.iter().map(|(k, v)| format!("{k}={v:?}")).collect();
    parts.sort();
    Ok(parts.join("|"))
}

/// Writes hooks and their name guards with `BatchWriteItem`, without the create
/// transaction's conditions: for loading many hooks at once (benchmarks, migrations from
/// another store) into a table known not to hold them. Each tenant's count of hooks is then
/// set to the hooks it has, so its quota holds for the hooks it creates after.
pub async fn bulk_load_hooks(table: &Table, hooks: &[Hook]) -> Result<()> {
    let mut items = Vec::with_capacity(hooks.len() * 2);
    for h in hooks {
        items.push(hook_item(h)?);
        items.push(guard_item(h));
    }
    let stored = table.put_all(items).await;
    // Counted and marked even when only some were stored: those are stored all the same.
    // Counted, not added to, so that loading again after a failure counts each hook once.
    let tenants: std::collections::BTreeSet<&TenantId> = hooks.iter().map(|h| &h.tenant).collect();
    for tenant in tenants {
        let count = table.query_prefix(tenant_pk(tenant), "H#".to_owned()).await?.len();
        write_counter(table, tenant, Some(count)).await?;
    }
    stored
}

#[cfg(test)]
mod tests {
    use super::contended;

    #[test]
    fn a_transaction_is_run_again_only_when_it_lost_to_contention() {
        assert!(contended(&["None", "None", "TransactionConflict"]), "two creates in one tenant");
        assert!(contended(&["ThrottlingError", "None", "None"]));
        assert!(!contended(&["None", "ConditionalCheckFailed", "TransactionConflict"]), "the name is taken");
        assert!(!contended(&["None", "None", "ConditionalCheckFailed"]), "the quota is reached");
        assert!(!contended(&["ValidationError", "None", "None"]));
        assert!(!contended(&["None", "None", "None"]));
    }
}
