//! Hooks in SQLite: the whole hook as JSON (its secrets sealed), with the name unique per
//! tenant by index and the version checked on every replace.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError, Weak};

use async_trait::async_trait;
use hookbridge_core::hook::Hook;
use hookbridge_core::ids::{HookId, TenantId};
use hookbridge_core::ports::{HookAccess, HookStore, Page, RoutingList, distinct_keys};
use hookbridge_core::{Error, Result};
use rusqlite::{ErrorCode, OptionalExtension, params};

use crate::db::Db;
use crate::error::sql;

pub(crate) struct SqliteHookStore {
    db: Db,
    parsed: Arc<ParsedHooks>,
    current: Current,
}

impl SqliteHookStore {
    pub(crate) fn new(db: Db) -> Self {
        Self { db, parsed: Arc::default(), current: Current::default() }
    }
}

/// How long [`Current`] keeps a hook it read at most, whatever the count of hook writes
/// says: a change the count cannot see (`hookbridge migrate` run beside `serve`, an edit
/// by hand with `sqlite3`) is seen within this.
const KEPT_FOR: std::time::Duration = std::time::Duration::from_secs(1);

/// The most hooks a routing list [`Current`] keeps may have: a tenant with more is read for
/// every batch, as before, so that one tenant's thousands of hooks are not held in memory.
const ROUTED_HOOKS: usize = 64;

/// The most a routing list [`Current`] keeps may take, its hooks' documents together: 64
/// hooks of 350 KiB would be 22 MiB held for one tenant.
const ROUTED_BYTES: usize = 1024 * 1024;

/// Hooks as read when the database had seen a given number of hook writes
/// ([`Db::hook_writes`]): until the next one, each is what the table holds, so the worker's
/// batches and ingest's routing take them from here without a read. Those reads (a hop to
/// the blocking pool, and a reader whose pages the writer had just made stale) were about
/// 8 % of the server's CPU per delivery at saturation, and 40 % of its context switches.
/// At most [`PARSED_HOOKS`] by id and as many in routing lists. Those by id are weak: only
/// [`ParsedHooks`] (bounded in bytes) and the batches reading them keep them alive, so a
/// hook pushed out of it is not held here as well.
struct Current(Mutex<Known>);

impl Default for Current {
    fn default() -> Self {
        Self(Mutex::new(Known::new(0)))
    }
}

struct Known {
    /// The count of hook writes these were read at.
    at: u64,
    /// When the first of them was kept.
    since: std::time::Instant,
    by_id: HashMap<HookId, Weak<Hook>>,
    /// Each list with the bytes its hooks' documents take.
    routing: HashMap<TenantId, (Vec<Arc<Hook>>, usize)>,
    /// The hooks of `routing`'s lists, together.
    routed: usize,
    /// What their documents take, together.
    routed_bytes: usize,
}

impl Known {
    fn new(at: u64) -> Self {
        Self {
            at,
            since: std::time::Instant::now(),
            by_id: HashMap::new(),
            routing: HashMap::new(),
            routed: 0,
            routed_bytes: 0,
        }
    }

    /// Whether what it holds is current when the count of hook writes is `at`.
    fn current(&self, at: Option<u64>) -> bool {
        Some(self.at) == at && self.since.elapsed() < KEPT_FOR
    }
}

impl Current {
    fn lock(&self) -> std::sync::MutexGuard<'_, Known> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The hooks of `keys`, when every one is known, still current at `at`, and still alive.
    fn many(&self, at: Option<u64>, keys: &[(TenantId, HookId)]) -> Option<Vec<Arc<Hook>>> {
        let known = self.lock();
        known.current(at).then_some(())?;
        keys.iter().map(|(t, id)| known.by_id.get(id).and_then(Weak::upgrade).filter(|h| h.tenant == *t)).collect()
    }

    /// The tenant's routing list and the bytes its documents take, when known and still
    /// current at `at`.
    fn routing(&self, at: Option<u64>, tenant: &TenantId) -> Option<(Vec<Arc<Hook>>, usize)> {
        let known = self.lock();
        known.current(at).then_some(())?;
        known.routing.get(tenant).cloned()
    }

    /// Keeps hooks read at `at` (counted before the read began), unless a hook write has
    /// been counted since: those held from an older count, or for [`KEPT_FOR`], are dropped
    /// first.
    fn keep(&self, at: Option<u64>, keep: impl FnOnce(&mut Known)) {
        let Some(at) = at else { return };
        let mut known = self.lock();
        if at < known.at {
            return;
        }
        if !known.current(Some(at)) {
            *known = Known::new(at);
        }
        keep(&mut known);
    }

    fn keep_many(&self, at: Option<u64>, hooks: &[Arc<Hook>]) {
        self.keep(at, |known| {
            for h in hooks {
                if known.by_id.len() < PARSED_HOOKS || known.by_id.contains_key(&h.id) {
                    known.by_id.insert(h.id, Arc::downgrade(h));
                }
            }
        });
    }

    fn keep_routing(&self, at: Option<u64>, tenant: &TenantId, list: &RoutingList, bytes: usize) {
        // A list naming a hook this version cannot read is read again each time, as
        // before, so that the hook is routed to as soon as it can be read.
        if list.hooks.len() > ROUTED_HOOKS || bytes > ROUTED_BYTES || !list.unreadable.is_empty() {
            return;
        }
        self.keep(at, |known| {
            let (held, held_bytes) = known.routing.get(tenant).map_or((0, 0), |(hooks, b)| (hooks.len(), *b));
            let routed = known.routed - held + list.hooks.len();
            let routed_bytes = known.routed_bytes - held_bytes + bytes;
            if routed <= PARSED_HOOKS && routed_bytes <= PARSED_BYTES {
                (known.routed, known.routed_bytes) = (routed, routed_bytes);
                known.routing.insert(tenant.clone(), (list.hooks.clone(), bytes));
            }
        });
    }
}

/// The most hooks [`ParsedHooks`] keeps: every hook of a small deployment, and a bound on the
/// memory (two copies of each document) for a large one.
const PARSED_HOOKS: usize = 1024;

/// The most the documents [`ParsedHooks`] keeps may take together (and about as much again
/// parsed): 1,024 hooks of a typical 1-2 KiB fit many times over, 1,024 of 350 KiB would
/// have been 700 MiB.
const PARSED_BYTES: usize = 16 * 1024 * 1024;

/// The hooks the worker's batches and ingest's routing read, as last parsed, each beside
/// the document it was parsed from. Parsing a hook's JSON was about 4 % of the server's CPU
/// at saturation (the same hooks parsed for batch after batch); comparing the stored
/// document with the one kept is a `memcmp`. Keyed by the document itself, not the
/// revision: a hook whose stored text is unchanged is the same hook, whoever wrote it and
/// however. A hook deleted since is never found here, because its row is read first.
#[derive(Default)]
struct ParsedHooks(Mutex<KeptHooks>);

/// The hooks [`ParsedHooks`] keeps, and what their documents take together.
#[derive(Default)]
struct KeptHooks {
    by_id: HashMap<HookId, Kept>,
    bytes: usize,
}

/// A hook's stored document and the hook parsed from it.
type Kept = (Box<str>, Arc<Hook>);

/// A row read: its hook as parsed before, or its document, to be parsed once the reader
/// connection is free again.
enum Found {
    Parsed(Arc<Hook>),
    Doc(HookId, String),
}

/// Whether a new hook may push out a kept one when there is no room: the worker's may
/// (its hooks are few per batch and read again soon); ingest's routing's may not, so that
/// a tenant with thousands of hooks cannot push out the hooks the worker reads.
#[derive(Clone, Copy, PartialEq)]
enum Room {
    Evict,
    OnlyIfFree,
}

impl ParsedHooks {
    fn lock(&self) -> std::sync::MutexGuard<'_, KeptHooks> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The row `id` stored as `doc`: the hook parsed before when the document is the same.
    fn find(&self, id: HookId, doc: &str) -> Found {
        let kept = self.lock().by_id.get(&id).filter(|(kept, _)| **kept == *doc).map(|(_, hook)| hook.clone());
        kept.map_or_else(|| Found::Doc(id, doc.to_owned()), Found::Parsed)
    }

    /// The hook of a row found: parsed from its document (and kept as `room` lets) unless it
    /// was before; the hook's id with the error when this version cannot decode it.
    fn parse(&self, f: Found, room: Room) -> std::result::Result<Arc<Hook>, (HookId, Error)> {
        match f {
            Found::Parsed(hook) => Ok(hook),
            Found::Doc(id, doc) => {
                let hook = Arc::new(from_doc(&doc).map_err(|e| (id, e))?);
                self.keep(id, doc, &hook, room);
                Ok(hook)
            }
        }
    }

    /// The hooks of `found`, in order.
    fn hooks(&self, found: Vec<Found>, room: Room) -> Result<Vec<Arc<Hook>>> {
        found.into_iter().map(|f| self.parse(f, room).map_err(|(_, e)| e)).collect()
    }

    /// As [`ParsedHooks::hooks`] for ingest's routing (which makes no room): a document this
    /// version cannot decode is named, not a failure of the whole list.
    fn routing(&self, tenant: &str, found: Vec<Found>) -> RoutingList {
        let mut list = RoutingList::default();
        for f in found {
            match self.parse(f, Room::OnlyIfFree) {
                Ok(hook) => list.hooks.push(hook),
                Err((id, e)) => {
                    tracing::error!(tenant, hook_id = %id, error = %e, "cannot read this hook; its events are queued to it unrouted");
                    list.unreadable.push(id);
                }
            }
        }
        list
    }

    /// Keeps `hook`, parsed from `doc`, when there is room or `room` lets it make some.
    fn keep(&self, id: HookId, doc: String, hook: &Arc<Hook>, room: Room) {
        let mut kept = self.lock();
        let kept = &mut *kept;
        // In place of the one kept for this hook, if any.
        if let Some((old, _)) = kept.by_id.remove(&id) {
            kept.bytes -= old.len();
        }
        let full = |k: &KeptHooks| k.by_id.len() >= PARSED_HOOKS || k.bytes + doc.len() > PARSED_BYTES;
        if full(kept) && room == Room::OnlyIfFree {
            return;
        }
        // Arbitrary ones: a hook pushed out costs only a parse when next read.
        while full(kept) {
            let Some(any) = kept.by_id.keys().next().copied() else { break };
            if let Some((old, _)) = kept.by_id.remove(&any) {
                kept.bytes -= old.len();
            }
        }
        if !full(kept) {
            kept.bytes += doc.len();
            kept.by_id.insert(id, (doc.into(), hook.clone()));
        }
    }
}

fn to_doc(hook: &Hook) -> Result<String> {
    serde_json::to_string(hook).map_err(|e| Error::backend("hooks.encode", e))
}

/// The hook a scan or a listing found, or `None` (logged) when this version cannot read it
/// (a newer version wrote it, seen after a rollback): one such hook made every listing of
/// its tenant an error.
fn readable(tenant: &str, id: &str, doc: &str) -> Option<Hook> {
    from_doc(doc)
        .inspect_err(
            |e| tracing::error!(tenant, hook_id = id, error = %e, "cannot read this hook (a newer version wrote it?); it is left out"),
        )
        .ok()
}

fn from_doc(doc: &str) -> Result<Hook> {
    serde_json::from_str(doc).map_err(|e| Error::corrupt("a hook", e))
}

fn is_unique_violation(e: &rusqlite::Error) -> bool {
    matches!(e, rusqlite::Error::SqliteFailure(f, _) if f.code == ErrorCode::ConstraintViolation)
}

#[async_trait]
impl HookAccess for SqliteHookStore {
    async fn get(&self, tenant: &TenantId, id: HookId) -> Result<Option<Hook>> {
        let (tenant, id) = (tenant.to_string(), id.to_string());
        let doc: Option<String> = self
            .db
            .read(move |c| {
                c.query_row("SELECT doc FROM hooks WHERE tenant = ?1 AND id = ?2", [tenant, id], |r| r.get(0))
                    .optional()
                    .map_err(sql("hooks.get"))
            })
            .await?;
        doc.as_deref().map(from_doc).transpose()
    }

    async fn get_many(&self, keys: &[(TenantId, HookId)]) -> Result<Vec<Arc<Hook>>> {
        let keys = distinct_keys(keys);
        let at = self.db.hook_writes();
        if let Some(kept) = self.current.many(at, &keys) {
            return Ok(kept);
        }
        let keys: Vec<(String, String, HookId)> =
            keys.iter().map(|(t, h)| (t.to_string(), h.to_string(), *h)).collect();
        let parsed = self.parsed.clone();
        let found = self
            .db
            .read(move |c| {
                let mut stmt = c
                    .prepare_cached("SELECT doc FROM hooks WHERE tenant = ?1 AND id = ?2")
                    .map_err(sql("hooks.get_many"))?;
                let mut out = Vec::with_capacity(keys.len());
                for (t, h, id) in &keys {
                    let mut rows = stmt.query([t, h]).map_err(sql("hooks.get_many"))?;
                    if let Some(row) = rows.next().map_err(sql("hooks.get_many"))? {
                        // Borrowed from the row: an unchanged hook is neither copied nor parsed.
                        let doc = row.get_ref(0).and_then(|v| Ok(v.as_str()?)).map_err(sql("hooks.get_many"))?;
                        out.push(parsed.find(*id, doc));
                    }
                }
                Ok(out)
            })
            .await?;
        let hooks = self.parsed.hooks(found, Room::Evict)?;
        self.current.keep_many(at, &hooks);
        Ok(hooks)
    }

    async fn replace(&self, hook: &Hook, expected_revision: u64) -> Result<()> {
        let doc = to_doc(hook)?;
        let (tenant, id, revision) = (hook.tenant.to_string(), hook.id.to_string(), hook.revision);
        let changed = self
            .db
            .write(move |c| {
                c.execute(
                    // Or this very write, stored already, as the DynamoDB store answers a
                    // write its SDK sent again.
                    "UPDATE hooks SET doc = ?1, revision = ?2
                     WHERE tenant = ?3 AND id = ?4 AND (revision = ?5 OR doc = ?1)",
                    params![doc, revision as i64, tenant, id, expected_revision as i64],
                )
                .map_err(sql("hooks.replace"))
            })
            .await?;
        if changed == 1 { Ok(()) } else { Err(Error::VersionConflict) }
    }
}

#[async_trait]
impl HookStore for SqliteHookStore {
    async fn create(&self, hook: &Hook, max_hooks: u32) -> Result<()> {
        let doc = to_doc(hook)?;
        let (tenant, id, name, revision) =
            (hook.tenant.to_string(), hook.id.to_string(), hook.config.name.to_string(), hook.revision);
        self.db
            .write(move |c| {
                // A taken name first, as on DynamoDB: at the quota, a name already in use
                // is still `409 name taken`, not the quota.
                let taken = c
                    .prepare_cached("SELECT 1 FROM hooks WHERE tenant = ?1 AND name = ?2")
                    .and_then(|mut s| s.exists(params![tenant, name]))
                    .map_err(sql("hooks.create"))?;
                if taken {
                    return Err(Error::NameTaken);
                }
                let count: i64 = c
                    .query_row("SELECT COUNT(*) FROM hooks WHERE tenant = ?1", [&tenant], |r| r.get(0))
                    .map_err(sql("hooks.create"))?;
                if count >= i64::from(max_hooks) {
                    return Err(Error::QuotaReached { limit: max_hooks });
                }
                match c.execute(
                    "INSERT INTO hooks (tenant, id, name, revision, doc) VALUES (?1, ?2, ?3, ?4, ?5)",
                    params![tenant, id, name, revision as i64, doc],
                ) {
                    Ok(_) => {}
                    Err(e) if is_unique_violation(&e) => return Err(Error::NameTaken),
                    Err(e) => return Err(sql("hooks.create")(e)),
                }
                Ok(())
            })
            .await
    }

    async fn list(&self, tenant: &TenantId, limit: usize, cursor: Option<&str>) -> Result<Page<Hook>> {
        let after = match cursor {
            Some(c) => c.parse::<HookId>().map_err(|_| Error::InvalidCursor)?.to_string(),
            None => String::new(),
        };
        let (tenant, listed) = (tenant.to_string(), tenant.to_string());
        let limit = limit.max(1);
        let rows: Vec<(String, String)> = self
            .db
            .read(move |c| {
                let mut stmt = c
                    .prepare_cached("SELECT id, doc FROM hooks WHERE tenant = ?1 AND id > ?2 ORDER BY id LIMIT ?3")
                    .map_err(sql("hooks.list"))?;
                stmt.query_map(params![tenant, after, limit as i64 + 1], |r| Ok((r.get(0)?, r.get(1)?)))
                    .map_err(sql("hooks.list"))?
                    .collect::<rusqlite::Result<Vec<(String, String)>>>()
                    .map_err(sql("hooks.list"))
            })
            .await?;
        let rows = rows.into_iter().map(|(id, doc)| {
            let hook = readable(&listed, &id, &doc);
            (id, hook)
        });
        Ok(Page::cut_readable(rows.collect(), limit))
    }

    async fn list_all(&self, tenant: &TenantId) -> Result<Vec<Hook>> {
        let (tenant, listed) = (tenant.to_string(), tenant.to_string());
        let rows: Vec<(String, String)> = self
            .db
            .read(move |c| {
                let mut stmt = c
                    .prepare_cached("SELECT id, doc FROM hooks WHERE tenant = ?1 ORDER BY id")
                    .map_err(sql("hooks.list_all"))?;
                stmt.query_map([tenant], |r| Ok((r.get(0)?, r.get(1)?)))
                    .map_err(sql("hooks.list_all"))?
                    .collect::<rusqlite::Result<Vec<(String, String)>>>()
                    .map_err(sql("hooks.list_all"))
            })
            .await?;
        Ok(rows.iter().filter_map(|(id, doc)| readable(&listed, id, doc)).collect())
    }

    /// As [`HookStore::list_all`]: a small tenant's list as kept (see [`Current`]), else read
    /// afresh, the hooks whose documents are unchanged coming from those parsed before.
    async fn list_for_routing(&self, tenant: &TenantId, most_bytes: usize) -> Result<RoutingList> {
        let at = self.db.hook_writes();
        if let Some((hooks, bytes)) = self.current.routing(at, tenant) {
            if bytes > most_bytes {
                return Err(hookbridge_core::ports::routing_too_large(tenant, most_bytes));
            }
            return Ok(RoutingList { hooks, unreadable: Vec::new() });
        }
        let name = tenant.to_string();
        let read_for = name.clone();
        let parsed = self.parsed.clone();
        let too_large = tenant.clone();
        let (found, bytes) = self
            .db
            .read(move |c| {
                let mut stmt = c
                    .prepare_cached("SELECT id, doc FROM hooks WHERE tenant = ?1 ORDER BY id")
                    .map_err(sql("hooks.list_for_routing"))?;
                let mut rows = stmt.query([read_for]).map_err(sql("hooks.list_for_routing"))?;
                let (mut out, mut bytes) = (Vec::new(), 0usize);
                while let Some(row) = rows.next().map_err(sql("hooks.list_for_routing"))? {
                    let text = |i| row.get_ref(i).and_then(|v| Ok(v.as_str()?)).map_err(sql("hooks.list_for_routing"));
                    let id: HookId = text(0)?.parse().map_err(|e| Error::corrupt("a hook's id", e))?;
                    let doc = text(1)?;
                    bytes = bytes.saturating_add(doc.len());
                    // Before the rest are copied out of the database: the bound is on memory.
                    if bytes > most_bytes {
                        return Err(hookbridge_core::ports::routing_too_large(&too_large, most_bytes));
                    }
                    out.push(parsed.find(id, doc));
                }
                Ok((out, bytes))
            })
            .await?;
        let list = self.parsed.routing(&name, found);
        self.current.keep_routing(at, tenant, &list, bytes);
        Ok(list)
    }

    async fn stored_bytes(&self, tenant: &TenantId, except: Option<HookId>, most: usize) -> Result<usize> {
        let (tenant, except) = (tenant.to_string(), except.map(|id| id.to_string()).unwrap_or_default());
        self.db
            .read(move |c| {
                let mut stmt = c
                    .prepare_cached("SELECT length(CAST(doc AS BLOB)) FROM hooks WHERE tenant = ?1 AND id <> ?2")
                    .map_err(sql("hooks.stored_bytes"))?;
                let mut rows = stmt.query([tenant, except]).map_err(sql("hooks.stored_bytes"))?;
                let mut bytes = 0usize;
                while bytes <= most
                    && let Some(row) = rows.next().map_err(sql("hooks.stored_bytes"))?
                {
                    let len: i64 = row.get(0).map_err(sql("hooks.stored_bytes"))?;
                    bytes = bytes.saturating_add(usize::try_from(len).unwrap_or(usize::MAX));
                }
                Ok(bytes)
            })
            .await
    }

    async fn delete(&self, tenant: &TenantId, id: HookId) -> Result<bool> {
        let (tenant, id) = (tenant.to_string(), id.to_string());
        let n = self
            .db
            .write(move |c| {
                c.execute("DELETE FROM hooks WHERE tenant = ?1 AND id = ?2", [&tenant, &id])
                    .map_err(sql("hooks.delete"))
            })
            .await?;
        Ok(n == 1)
    }

    async fn scan(&self, cursor: Option<&str>, limit: usize) -> Result<Page<Hook>> {
        let (tenant, id) = match cursor {
            Some(c) => c.split_once('\n').map(|(t, i)| (t.to_owned(), i.to_owned())).ok_or(Error::InvalidCursor)?,
            None => (String::new(), String::new()),
        };
        let limit = limit.max(1);
        let rows: Vec<(String, String, String)> = self
            .db
            .read(move |c| {
                let mut stmt = c
                    .prepare_cached(
                        "SELECT tenant, id, doc FROM hooks WHERE (tenant, id) > (?1, ?2) ORDER BY tenant, id LIMIT ?3",
                    )
                    .map_err(sql("hooks.scan"))?;
                stmt.query_map(params![tenant, id, limit as i64 + 1], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
                    .map_err(sql("hooks.scan"))?
                    .collect::<rusqlite::Result<Vec<_>>>()
                    .map_err(sql("hooks.scan"))
            })
            .await?;
        // Cut by rows, not by readable hooks, so one left out cannot end the scan early.
        let page = Page::cut(rows, limit, |(tenant, id, _)| format!("{tenant}\n{id}"));
        let items = page.items.iter().filter_map(|(tenant, id, doc)| readable(tenant, id, doc)).collect();
        Ok(Page { items, next_cursor: page.next_cursor })
    }
}

/// Every column of a hook's row, joined as text.
pub(crate) async fn raw(db: &Db, tenant: &TenantId, id: HookId) -> Result<String> {
    let (tenant, id) = (tenant.to_string(), id.to_string());
    db.read(move |c| {
        c.query_row(
            "SELECT tenant || '|' || id || '|' || name || '|' || revision || '|' || doc FROM hooks
             WHERE tenant = ?1 AND id = ?2",
            [tenant, id],
            |r| r.get(0),
        )
        .map_err(sql("hooks.raw"))
    })
    .await
}
