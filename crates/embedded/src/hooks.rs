//! Hooks in SQLite: the whole hook as JSON (its secrets sealed), with the name unique per
//! tenant by index and the version checked on every replace.

use async_trait::async_trait;
use hookbridge_core::hook::Hook;
use hookbridge_core::ids::{HookId, TenantId};
use hookbridge_core::ports::{HookStore, Page};
use hookbridge_core::{Error, Result};
use rusqlite::{ErrorCode, OptionalExtension, params};

use crate::db::Db;
use crate::error::sql;

pub(crate) struct SqliteHookStore {
    db: Db,
}

impl SqliteHookStore {
    pub(crate) fn new(db: Db) -> Self {
        Self { db }
    }
}

fn to_doc(hook: &Hook) -> Result<String> {
    serde_json::to_string(hook).map_err(|e| Error::backend("hooks.encode", e))
}

/// The hook a scan found, or `None` (logged) when this version cannot read it.
fn readable(tenant: &str, id: &str, doc: &str) -> Option<Hook> {
    from_doc(doc)
        .inspect_err(
            |e| tracing::error!(tenant, hook_id = id, error = %e, "cannot read this hook; the scan leaves it out"),
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
impl HookStore for SqliteHookStore {
    async fn create(&self, hook: &Hook, max_hooks: u32) -> Result<()> {
        let doc = to_doc(hook)?;
        let (tenant, id, name, revision) =
            (hook.tenant.to_string(), hook.id.to_string(), hook.config.name.to_string(), hook.revision);
        self.db
            .write(move |c| {
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

    async fn get_many(&self, keys: &[(TenantId, HookId)]) -> Result<Vec<Hook>> {
        let keys: Vec<(String, String)> = keys.iter().map(|(t, h)| (t.to_string(), h.to_string())).collect();
        let docs: Vec<String> = self
            .db
            .read(move |c| {
                let mut stmt = c
                    .prepare_cached("SELECT doc FROM hooks WHERE tenant = ?1 AND id = ?2")
                    .map_err(sql("hooks.get_many"))?;
                let mut out = Vec::with_capacity(keys.len());
                for (t, h) in &keys {
                    if let Some(d) = stmt.query_row([t, h], |r| r.get(0)).optional().map_err(sql("hooks.get_many"))? {
                        out.push(d);
                    }
                }
                Ok(out)
            })
            .await?;
        docs.iter().map(|d| from_doc(d)).collect()
    }

    async fn list(&self, tenant: &TenantId, limit: usize, cursor: Option<&str>) -> Result<Page<Hook>> {
        let after = match cursor {
            Some(c) => c.parse::<HookId>().map_err(|_| Error::InvalidCursor)?.to_string(),
            None => String::new(),
        };
        let tenant = tenant.to_string();
        let limit = limit.max(1);
        let docs: Vec<String> = self
            .db
            .read(move |c| {
                let mut stmt = c
                    .prepare_cached("SELECT doc FROM hooks WHERE tenant = ?1 AND id > ?2 ORDER BY id LIMIT ?3")
                    .map_err(sql("hooks.list"))?;
                stmt.query_map(params![tenant, after, limit as i64 + 1], |r| r.get(0))
                    .map_err(sql("hooks.list"))?
                    .collect::<rusqlite::Result<Vec<String>>>()
                    .map_err(sql("hooks.list"))
            })
            .await?;
        let items = docs.iter().map(|d| from_doc(d)).collect::<Result<Vec<_>>>()?;
        Ok(Page::cut(items, limit, |x| x.id.to_string()))
    }

    async fn list_all(&self, tenant: &TenantId) -> Result<Vec<Hook>> {
        let tenant = tenant.to_string();
        let docs: Vec<String> = self
            .db
            .read(move |c| {
                let mut stmt = c
                    .prepare_cached("SELECT doc FROM hooks WHERE tenant = ?1 ORDER BY id")
                    .map_err(sql("hooks.list_all"))?;
                stmt.query_map([tenant], |r| r.get(0))
                    .map_err(sql("hooks.list_all"))?
                    .collect::<rusqlite::Result<Vec<String>>>()
                    .map_err(sql("hooks.list_all"))
            })
            .await?;
        docs.iter().map(|d| from_doc(d)).collect()
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
