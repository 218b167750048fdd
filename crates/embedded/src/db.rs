//! The SQLite database: one writer connection, a few readers (WAL lets them run beside
//! the writer), every call on tokio's blocking pool.

use std::collections::HashMap;
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use hookbridge_core::{Error, Result};
use rusqlite::Connection;
use tokio::sync::Notify;

use crate::error::InitError;

/// Readers beside the one writer: enough for the API's reads and the worker's batch reads
/// to proceed while a write commits.
const READERS: usize = 4;

const SCHEMA: &str = r#"
CREATE TABLE IF NOT EXISTS hooks (
    tenant  TEXT NOT NULL,
    id      TEXT NOT NULL,
    name    TEXT NOT NULL,
    revision INTEGER NOT NULL,
    doc     TEXT NOT NULL,
    PRIMARY KEY (tenant, id)
) WITHOUT ROWID;
-- The name guard: names are unique per tenant.
CREATE UNIQUE INDEX IF NOT EXISTS hooks_name ON hooks (tenant, name);

CREATE TABLE IF NOT EXISTS deliveries (
    hook_id    TEXT NOT NULL,
    id         TEXT NOT NULL,
    doc        TEXT NOT NULL,
    expires_at INTEGER NOT NULL,
    PRIMARY KEY (hook_id, id)
) WITHOUT ROWID;

CREATE TABLE IF NOT EXISTS events (
    tenant     TEXT NOT NULL,
    id         TEXT NOT NULL,
    doc        TEXT NOT NULL,
    expires_at INTEGER NOT NULL,
    PRIMARY KEY (tenant, id)
) WITHOUT ROWID;

CREATE TABLE IF NOT EXISTS idempotency (
    tenant      TEXT NOT NULL,
    key         TEXT NOT NULL,
    fingerprint TEXT NOT NULL,
    status      INTEGER,
    body        TEXT,
    expires_at  INTEGER NOT NULL,
    PRIMARY KEY (tenant, key)
) WITHOUT ROWID;

CREATE TABLE IF NOT EXISTS queues (
    name          TEXT PRIMARY KEY,
    visibility_ms INTEGER NOT NULL,
    max_receive   INTEGER NOT NULL,
    dlq           TEXT,
    max_in_flight INTEGER NOT NULL DEFAULT 120000
);

CREATE TABLE IF NOT EXISTS messages (
    seq           INTEGER PRIMARY KEY AUTOINCREMENT,
    queue         TEXT NOT NULL,
    id            TEXT NOT NULL,
    body          TEXT NOT NULL,
    visible_at    INTEGER NOT NULL,
    receive_count INTEGER NOT NULL DEFAULT 0,
    receipt       TEXT,
    sent_at       INTEGER NOT NULL,
    received_at   INTEGER,
    grp           TEXT NOT NULL DEFAULT ''
);
CREATE INDEX IF NOT EXISTS messages_visible ON messages (queue, visible_at, seq);
CREATE INDEX IF NOT EXISTS messages_receipt ON messages (receipt);

-- Rate state: when the key's next unit may go, in microseconds since the epoch.
CREATE TABLE IF NOT EXISTS rates (
    key     TEXT PRIMARY KEY,
    next_us INTEGER NOT NULL
) WITHOUT ROWID;

-- Event types a tenant declared (the declaration as JSON), and those seen lately.
CREATE TABLE IF NOT EXISTS event_types (
    tenant TEXT NOT NULL,
    name   TEXT NOT NULL,
    doc    TEXT NOT NULL,
    PRIMARY KEY (tenant, name)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS seen_types (
    tenant    TEXT NOT NULL,
    name      TEXT NOT NULL,
    last_seen INTEGER NOT NULL,
    PRIMARY KEY (tenant, name)
) WITHOUT ROWID;

-- Portal links and console sessions, by the hash of their secret.
CREATE TABLE IF NOT EXISTS portal (
    kind       TEXT NOT NULL,
    hash       TEXT NOT NULL,
    doc        TEXT NOT NULL,
    expires_at INTEGER NOT NULL,
    PRIMARY KEY (kind, hash)
) WITHOUT ROWID;

-- Replay jobs; `step` is what a save checks.
CREATE TABLE IF NOT EXISTS replays (
    hook_id    TEXT NOT NULL,
    id         TEXT NOT NULL,
    step       INTEGER NOT NULL,
    doc        TEXT NOT NULL,
    expires_at INTEGER NOT NULL,
    PRIMARY KEY (hook_id, id)
) WITHOUT ROWID;

CREATE TABLE IF NOT EXISTS rules (
    name    TEXT PRIMARY KEY,
    pattern TEXT NOT NULL,
    target  TEXT NOT NULL
);
"#;

/// A handle to the database, cheap to clone.
#[derive(Clone)]
pub struct Db {
    inner: Arc<Inner>,
}

struct Inner {
    writer: Mutex<Connection>,
    readers: Vec<Mutex<Connection>>,
    next_reader: AtomicUsize,
    wakers: Mutex<HashMap<String, Arc<Notify>>>,
}

impl std::fmt::Debug for Db {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Db").finish_non_exhaustive()
    }
}

fn connect(path: &Path, max_bytes: Option<u64>) -> rusqlite::Result<Connection> {
    let c = Connection::open(path)?;
    if let Some(max) = max_bytes {
        let page: u64 = c.pragma_query_value(None, "page_size", |r| r.get(0))?;
        c.pragma_update(None, "max_page_count", (max / page.max(512)).max(1))?;
    }
    // WAL: readers never block the writer. NORMAL sync in WAL mode survives a process
    // crash (SIGKILL) without losing committed work; only an OS crash or power loss can
    // take the last transactions, which is the trade-off SQLite documents for WAL.
    c.pragma_update(None, "journal_mode", "WAL")?;
    c.pragma_update(None, "synchronous", "NORMAL")?;
    c.pragma_update(None, "foreign_keys", "ON")?;
    c.busy_timeout(std::time::Duration::from_secs(10))?;
    Ok(c)
}

/// Columns added since the first release, for databases created before them.
const ADDED_COLUMNS: &[(&str, &str, &str)] = &[
    ("queues", "max_in_flight", "INTEGER NOT NULL DEFAULT 120000"),
    ("messages", "received_at", "INTEGER"),
    ("messages", "grp", "TEXT NOT NULL DEFAULT ''"),
];

/// Indexes on added columns, created once the columns exist.
const ADDED_INDEXES: &str = "
-- Each group's oldest visible message, for receives that serve groups in turn.
CREATE INDEX IF NOT EXISTS messages_group ON messages (queue, grp, visible_at, seq);
-- What the retention sweep deletes, found without scanning the tables.
CREATE INDEX IF NOT EXISTS deliveries_expiry ON deliveries (expires_at);
CREATE INDEX IF NOT EXISTS events_expiry ON events (expires_at);
CREATE INDEX IF NOT EXISTS idempotency_expiry ON idempotency (expires_at);
";

fn migrate(c: &Connection) -> rusqlite::Result<()> {
    for (table, column, decl) in ADDED_COLUMNS {
        let mut stmt = c.prepare(&format!("SELECT 1 FROM pragma_table_info('{table}') WHERE name = ?1"))?;
        if !stmt.exists([column])? {
            c.execute_batch(&format!("ALTER TABLE {table} ADD COLUMN {column} {decl}"))?;
        }
    }
    c.execute_batch(ADDED_INDEXES)
}

fn lock(m: &Mutex<Connection>) -> MutexGuard<'_, Connection> {
    // A panic while holding the lock leaves SQLite itself consistent (the transaction
    // rolls back when dropped), so the connection is safe to keep using.
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl Db {
    /// Opens (creating if needed) the database and its schema.
    pub fn open(path: &Path) -> Result<Self, InitError> {
        Self::open_capped(path, None)
    }

    /// Opens the database, refusing to grow it beyond `max_bytes` (writes then fail with
    /// [`hookbridge_core::Error::StorageFull`] instead of filling the disk).
    pub fn open_capped(path: &Path, max_bytes: Option<u64>) -> Result<Self, InitError> {
        let err = |source| InitError::Database { path: path.to_path_buf(), source };
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|e| {
                err(rusqlite::Error::SqliteFailure(
                    rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_CANTOPEN),
                    Some(e.to_string()),
                ))
            })?;
        }
        let writer = connect(path, max_bytes).map_err(err)?;
        writer.execute_batch(SCHEMA).map_err(err)?;
        migrate(&writer).map_err(err)?;
        let readers = (0..READERS)
            .map(|_| connect(path, max_bytes).map(Mutex::new))
            .collect::<rusqlite::Result<Vec<_>>>()
            .map_err(err)?;
        Ok(Self {
            inner: Arc::new(Inner {
                writer: Mutex::new(writer),
                readers,
                next_reader: AtomicUsize::new(0),
                wakers: Mutex::new(HashMap::new()),
            }),
        })
    }

    /// Runs `f` on the writer connection, off the async threads.
    pub async fn write<T, F>(&self, f: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&mut Connection) -> Result<T> + Send + 'static,
    {
        let inner = self.inner.clone();
        tokio::task::spawn_blocking(move || f(&mut lock(&inner.writer)))
            .await
            .map_err(|e| Error::backend("sqlite.write", e))?
    }

    /// Runs `f` on a reader connection.
    pub async fn read<T, F>(&self, f: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> Result<T> + Send + 'static,
    {
        let inner = self.inner.clone();
        tokio::task::spawn_blocking(move || {
            let i = inner.next_reader.fetch_add(1, Ordering::Relaxed) % inner.readers.len();
            f(&lock(&inner.readers[i]))
        })
        .await
        .map_err(|e| Error::backend("sqlite.read", e))?
    }

    /// The notifier woken whenever a message may have become receivable on `queue`.
    pub(crate) fn waker(&self, queue: &str) -> Arc<Notify> {
        let mut w = self.inner.wakers.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        w.entry(queue.to_owned()).or_default().clone()
    }
}

/// Milliseconds since the Unix epoch, the unit every time column uses.
pub(crate) fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)] // Tests fail loudly on purpose.

    use rusqlite::params;

    use super::*;

    /// SQLite's own checkpoint, run by the commit that crosses 1,000 pages of log, is what
    /// lets the next writer start the log over. A checkpointer on a connection of its own
    /// was tried (BENCHMARKS.md, "What the figures changed"): passive checkpoints never start
    /// the log over (it reached 4 GB in a 100,000-delivery replay), and ones that do held
    /// up the writer longer than the commits' own.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_log_starts_over_under_steady_writes() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("hb.db");
        let db = Db::open(&path).unwrap();
        // 40 MB in 400 commits, one after another: ten times what the log may hold.
        for n in 0..400 {
            db.write(move |c| {
                let tx = c.transaction().map_err(|e| Error::backend("test", e))?;
                for i in 0..100 {
                    tx.execute(
                        "INSERT INTO events (tenant, id, doc, expires_at) VALUES ('t', ?1, ?2, 0)",
                        params![format!("{n}-{i}"), "x".repeat(1_000)],
                    )
                    .map_err(|e| Error::backend("test", e))?;
                }
                tx.commit().map_err(|e| Error::backend("test", e))
            })
            .await
            .unwrap();
        }
        let wal = std::fs::metadata(dir.path().join("hb.db-wal")).map(|m| m.len()).unwrap_or(0);
        assert!(wal < 8_000_000, "the write-ahead log grew to {wal} bytes");
    }
}
