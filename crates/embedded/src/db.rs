//! The SQLite database: one writer connection on a thread of its own, which commits the
//! writes waiting for it together (group commit), and a few readers on tokio's blocking
//! pool (WAL lets them run beside the writer).

use std::cell::Cell;
use std::collections::HashMap;
use std::ffi::c_int;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::{Receiver, Sender, SyncSender};
use std::sync::{Arc, Mutex, MutexGuard};

use hookbridge_core::{Error, Result};
use rusqlite::Connection;
use rusqlite::hooks::Wal;
use tokio::sync::Notify;

use crate::error::InitError;

/// Readers beside the one writer: enough for the API's reads and the worker's batch reads
/// to proceed while a write commits.
const READERS: usize = 4;

/// The most writes one commit carries: enough to fold a busy moment's writes into one
/// commit, few enough that the first of them does not wait long for the last.
const GROUP_MAX: usize = 16;

/// The least time between two background checkpoints.
const CHECKPOINT_PAUSE: std::time::Duration = std::time::Duration::from_millis(20);

/// The log's length, in pages, at which the writer's commit runs SQLite's own checkpoint
/// (SQLite's default is 1,000). That checkpoint syncs the database file, which writes back
/// every page the background checkpoints have copied since the last one; a hot page (the
/// queue's) is then written back once per checkpoint however often it changed. At 1,000
/// pages that was several times a second under load, and about 7 % of the CPU.
/// 10,000 pages (20 MB of log at most at [`PAGE_SIZE`], started over after each
/// checkpoint) makes it every few seconds.
const LOG_CHECKPOINT_PAGES: i64 = 10_000;

/// Prepared statements each connection keeps: more than the writer's hot paths use.
const STATEMENTS_KEPT: usize = 128;

/// The page size of a new database. SQLite writes every page a commit changed to the log
/// whole, and a delivery changes a row or two in many pages (the queue's messages and
/// their indexes, the delivery), so half the page is about half the bytes per delivery:
/// 121 → 65 KiB at 200 events/s with 300-byte events, 160 → 85 KiB with 1.8 KB ones, the
/// CPU per delivery the same within the machine's noise. 1 KiB pages wrote 40 KiB but
/// cost about 10 % more CPU. A database keeps the page size it was created with
/// (decision 0022).
const PAGE_SIZE: i64 = 2048;

const SCHEMA: &str = r#"
-- Hooks and deliveries are rowid tables, unlike the small-row tables below: a hook's or a
-- delivery's JSON is about 1 KB, and a WITHOUT ROWID table (a b-tree of whole rows) keeps
-- at most a quarter of a page of a row in place (488 bytes at 2 KiB pages), spilling the
-- rest to an overflow page of its own, mostly empty. A rowid table keeps a row of up to
-- nearly the whole page in place, and finds it by key through its primary-key index.
-- Databases created before keep the kind of table they were created with; the SQL is the
-- same for both.
CREATE TABLE IF NOT EXISTS hooks (
    tenant  TEXT NOT NULL,
    id      TEXT NOT NULL,
    name    TEXT NOT NULL,
    revision INTEGER NOT NULL,
    doc     TEXT NOT NULL,
    PRIMARY KEY (tenant, id)
);
-- The name guard: names are unique per tenant.
CREATE UNIQUE INDEX IF NOT EXISTS hooks_name ON hooks (tenant, name);

CREATE TABLE IF NOT EXISTS deliveries (
    hook_id    TEXT NOT NULL,
    id         TEXT NOT NULL,
    doc        TEXT NOT NULL,
    expires_at INTEGER NOT NULL,
    PRIMARY KEY (hook_id, id)
);

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
-- No index by receipt: a receipt begins with its message's seq, so a message is found by
-- its rowid and the rest of the receipt, which `receipt` keeps, checked on the row (see
-- `queue::held!`).

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
    writes: Sender<Box<dyn Write>>,
    hook_writes: Option<Arc<HookWrites>>,
    readers: Vec<Mutex<Connection>>,
    next_reader: AtomicUsize,
    wakers: Mutex<HashMap<String, Arc<Notify>>>,
    waiting: Mutex<HashMap<String, Arc<crate::handoff::Waiting>>>,
    /// Held by whichever checkpoint runs: SQLite answers a second one at once, copying
    /// nothing.
    checkpointing: Arc<Mutex<()>>,
}

/// The commits that changed the hooks table, counted, so that the hooks read from it can be
/// kept in memory until the next one (`hooks.rs`). Counted on the writer connection, which
/// every write of this process goes through. Another process's writes (`hookbridge
/// migrate` run beside `serve`, an edit by hand) are not counted: `hooks.rs` keeps nothing
/// longer than a second for them.
#[derive(Default)]
struct HookWrites {
    /// Whether the transaction under way has changed a hook (SQLite's update hook says).
    touched: std::sync::atomic::AtomicBool,
    /// How many commits have changed one.
    committed: std::sync::atomic::AtomicU64,
}

impl HookWrites {
    /// Called once a transaction is over, before any write it carried is answered: a
    /// hook read after the answer is never one kept from before the write.
    fn ended(&self) {
        if self.touched.swap(false, Ordering::SeqCst) {
            self.committed.fetch_add(1, Ordering::SeqCst);
        }
    }
}

/// Whether `c`'s hooks table can be counted by SQLite's update hook, which says nothing of
/// a `WITHOUT ROWID` table's rows (the kind some databases made before 0.1 have).
fn hooks_have_rowids(c: &Connection) -> bool {
    // Asked of the table itself, not of its SQL's spelling: only a rowid table has one.
    c.prepare("SELECT rowid FROM main.hooks LIMIT 0").is_ok()
}

impl std::fmt::Debug for Db {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Db").finish_non_exhaustive()
    }
}

/// Says so when the database is already larger than its cap: SQLite raises a cap below the
/// file's size to that size, so the process starts full, every write that needs a new page
/// refused (`503`, decision 0011), with nothing else to say why.
fn warn_if_over_cap(c: &Connection, max_bytes: u64) {
    let size = |pragma: &str| c.pragma_query_value(None, pragma, |r| r.get::<_, i64>(0)).unwrap_or(0);
    let bytes = u64::try_from(size("page_count").saturating_mul(size("page_size"))).unwrap_or(0);
    if bytes > max_bytes {
        tracing::warn!(
            size = bytes,
            cap = max_bytes,
            "the database is already larger than its cap (HOOKBRIDGE_DATABASE_MAX_SIZE): writes that need more room \
             are refused until retention frees some; raise the cap to take new work"
        );
    }
}

fn connect(path: &Path, max_bytes: Option<u64>) -> rusqlite::Result<Connection> {
    let c = Connection::open(path)?;
    // Only a new, empty file takes it; set first, so the size cap below counts its pages.
    c.pragma_update(None, "page_size", PAGE_SIZE)?;
    if let Some(max) = max_bytes {
        let page: u64 = c.pragma_query_value(None, "page_size", |r| r.get(0))?;
        c.pragma_update(None, "max_page_count", (max / page.max(512)).max(1))?;
    }
    // WAL: readers never block the writer. NORMAL sync in WAL mode survives a process
    // crash (SIGKILL) without losing committed work; only an OS crash or power loss can
    // take the last transactions, which is the trade-off SQLite documents for WAL.
    c.pragma_update(None, "journal_mode", "WAL")?;
    c.pragma_update(None, "synchronous", "NORMAL")?;
    // A savepoint (a write may open one) and a statement that may fail halfway keep the
    // pages they change in a statement journal so that they can be undone alone. Left to
    // SQLite's default that journal spills into a temporary file past 64 KiB: a file
    // created, written and deleted, for data no crash ever needs (the log is what
    // recovery reads). In memory it is a copy of each page changed.
    c.pragma_update(None, "temp_store", "MEMORY")?;
    c.pragma_update(None, "foreign_keys", "ON")?;
    c.busy_timeout(std::time::Duration::from_secs(10))?;
    // Every statement on a hot path is prepared once and kept (`prepare_cached`). The
    // writer's turns run about as many distinct ones as rusqlite keeps by default (16:
    // the queues', the deliveries', the events', the rates', the commit's own) and more on
    // a busy turn, and once past it the least recently used was dropped and compiled again
    // on every turn.
    c.set_prepared_statement_cache_capacity(STATEMENTS_KEPT);
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
-- What a receive looks for (the oldest visible), and what the in-flight count and the
-- depth count without reading a row: `received_at` is set while a message holds a
-- receipt. A receive changes `visible_at`, which moves the entry anyway, so carrying
-- `received_at` (a few bytes more per entry) moves no entry of its own. It replaces
-- `messages_visible`, the same without `received_at`, which made each count read every
-- delayed message's row.
CREATE INDEX IF NOT EXISTS messages_due ON messages (queue, visible_at, seq, received_at);
-- Event types not seen lately, for the sweep.
CREATE INDEX IF NOT EXISTS seen_types_expiry ON seen_types (last_seen);
";

/// Indexes of earlier releases no longer kept. Dropped before anything is made, the
/// schema's new tables and the indexes above included, so that a database at its size cap
/// has the pages they free to make them with: made first, the first of them failed for
/// want of room and the database could not be opened.
const RETIRED_INDEXES: &str = "
-- Messages were found by receipt through these; they are found by seq now, and every
-- receive and delete (and, for the first, every send) moved an entry in one of them.
-- `messages_visible` is `messages_due` without `received_at`.
DROP INDEX IF EXISTS messages_receipt;
DROP INDEX IF EXISTS messages_held;
DROP INDEX IF EXISTS messages_visible;
";

fn migrate(c: &Connection) -> rusqlite::Result<()> {
    for (table, column, decl) in ADDED_COLUMNS {
        let mut stmt = c.prepare(&format!("SELECT 1 FROM pragma_table_info('{table}') WHERE name = ?1"))?;
        if !stmt.exists([column])? {
            // The column and what fills it in one transaction: a crash between them left
            // the column there, so the fill was never run again.
            let tx = c.unchecked_transaction()?;
            tx.execute_batch(&format!("ALTER TABLE {table} ADD COLUMN {column} {decl}"))?;
            if (*table, *column) == ("messages", "received_at") {
                // Messages in flight when the column came are in flight by it too (the
                // in-flight count reads it); when they were received is not known, and
                // their send is no later.
                tx.execute_batch("UPDATE messages SET received_at = sent_at WHERE receipt IS NOT NULL")?;
            }
            tx.commit()?;
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
        let cannot_open = |e: std::io::Error| {
            err(rusqlite::Error::SqliteFailure(
                rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_CANTOPEN),
                Some(e.to_string()),
            ))
        };
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            crate::files::owner_only_dir(dir).map_err(cannot_open)?;
        }
        crate::files::owner_only_file(path).map_err(cannot_open)?;
        let writer = connect(path, max_bytes).map_err(err)?;
        if let Some(max) = max_bytes {
            warn_if_over_cap(&writer, max);
        }
        // In place of SQLite's own auto-checkpoint, which this hook replaces.
        writer.wal_hook(Some(after_commit));
        writer.execute_batch(RETIRED_INDEXES).map_err(err)?;
        writer.execute_batch(SCHEMA).map_err(err)?;
        migrate(&writer).map_err(err)?;
        let hook_writes = hooks_have_rowids(&writer).then(|| Arc::new(HookWrites::default()));
        if let Some(counted) = hook_writes.clone() {
            writer.update_hook(Some(move |_, _: &str, table: &str, _| {
                if table == "hooks" {
                    counted.touched.store(true, Ordering::SeqCst);
                }
            }));
            // A `DELETE` of every row empties the table at once (SQLite's truncate
            // optimization), telling the update hook nothing; a table with a trigger is
            // emptied row by row. The trigger is this connection's alone, not the file's.
            writer
                .execute_batch("CREATE TEMP TRIGGER hooks_deleted AFTER DELETE ON main.hooks BEGIN SELECT 1; END;")
                .map_err(err)?;
        }
        let counted = hook_writes.clone();
        let readers = (0..READERS)
            .map(|_| connect(path, max_bytes).map(Mutex::new))
            .collect::<rusqlite::Result<Vec<_>>>()
            .map_err(err)?;
        let checkpointer = connect(path, max_bytes).map_err(err)?;
        let (writes, queued) = std::sync::mpsc::channel();
        let (kick, kicked) = std::sync::mpsc::sync_channel(1);
        let spawn = |name: &str, run: Box<dyn FnOnce() + Send>| {
            std::thread::Builder::new().name(name.to_owned()).spawn(run).map(drop).map_err(|e| {
                err(rusqlite::Error::SqliteFailure(
                    rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_CANTOPEN),
                    Some(format!("cannot start the {name} thread: {e}")),
                ))
            })
        };
        // One checkpoint at a time, the writer's waiting for the background's.
        let checkpointing = Arc::new(Mutex::new(()));
        let (behind, writers) = (checkpointing.clone(), checkpointing.clone());
        spawn("sqlite-checkpointer", Box::new(move || checkpoint_behind(&checkpointer, &kicked, &behind)))?;
        spawn("sqlite-writer", Box::new(move || write_groups(writer, &queued, &kick, &writers, counted.as_deref())))?;
        Ok(Self {
            inner: Arc::new(Inner {
                writes,
                hook_writes,
                readers,
                next_reader: AtomicUsize::new(0),
                wakers: Mutex::new(HashMap::new()),
                waiting: Mutex::new(HashMap::new()),
                checkpointing,
            }),
        })
    }

    /// Runs `f` on the writer connection, on the writer's thread, and answers once the
    /// commit that carries it is done. `f` is atomic: an `Err` (or a panic) undoes what it
    /// wrote and nothing else. It shares its commit with other writes, so it must not
    /// begin or end a transaction itself; a savepoint is what it may open.
    ///
    /// `f` may run more than once: when another write in its commit fails, the commit is
    /// undone and run again without that one (`commit_group`). So it is an `Fn`, and what
    /// it does outside the database must bear repeating.
    pub async fn write<T, F>(&self, f: F) -> Result<T>
    where
        T: Send + 'static,
        F: Fn(&mut Connection) -> Result<T> + Send + 'static,
    {
        self.write_then(f, |out| out).await
    }

    /// As [`Db::write`], and once the write is committed, `then` is run on its result on
    /// the writer thread, before the caller is answered with what it returns: what must
    /// follow a write that stands even if the caller has gone meanwhile. If the write or
    /// its commit fails, `then` is dropped unrun (a send's claimed receives learn of the
    /// failure that way). It must be quick and must not panic: the writer waits for it,
    /// and a release build aborts on a panic; where it unwinds, the caller is answered
    /// with an error though the write stands.
    pub(crate) async fn write_then<T, U, F, G>(&self, f: F, then: G) -> Result<U>
    where
        T: Send + 'static,
        U: Send + 'static,
        F: Fn(&mut Connection) -> Result<T> + Send + 'static,
        G: FnOnce(T) -> U + Send + 'static,
    {
        let (answer, answered) = tokio::sync::oneshot::channel();
        self.inner
            .writes
            .send(Box::new(Job { f, out: None, then, answer }))
            .map_err(|_| Error::backend("sqlite.write", "the writer thread has stopped"))?;
        answered.await.map_err(|_| Error::backend("sqlite.write", "the writer thread stopped before answering"))?
    }

    /// How many commits of this process have changed the hooks table: a hook read while
    /// it stays the same is still current. `None` when the changes cannot be counted (a
    /// `WITHOUT ROWID` hooks table), so every read must go to the table.
    pub(crate) fn hook_writes(&self) -> Option<u64> {
        self.inner.hook_writes.as_ref().map(|w| w.committed.load(Ordering::SeqCst))
    }

    /// Copies the whole log into the database and empties it: for a stop, once nothing
    /// writes any more, so that the database file alone holds every commit and a copy of
    /// it (with its key) is whole. No connection is ever closed here (the writer's thread
    /// outlives the stack), so SQLite's own fold at the last close never came: a cleanly
    /// stopped database left `-wal` full, and its last commits reached the database file
    /// only if the background checkpoint they kicked ran before the process ended. `false`
    /// if a reader or a writer kept part of the log.
    pub async fn fold_log(&self) -> Result<bool> {
        let checkpointing = self.inner.checkpointing.clone();
        self.read(move |c| {
            // After the background checkpoint the last commits kicked, if it runs still.
            let _alone = checkpointing.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            let busy: i64 = c
                .query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |r| r.get(0))
                .map_err(crate::error::sql("db.fold_log"))?;
            Ok(busy == 0)
        })
        .await
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

    /// The receives waiting on `queue` for a send to hand them messages.
    pub(crate) fn waiting(&self, queue: &str) -> Arc<crate::handoff::Waiting> {
        let mut w = self.inner.waiting.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        w.entry(queue.to_owned()).or_default().clone()
    }
}

/// A write waiting for the writer thread.
trait Write: Send {
    /// Runs the write in the open transaction and keeps its result for [`Write::answer`].
    fn run(&mut self, c: &mut Connection) -> Outcome;
    /// Answers the caller: with its last run's result (passed through what follows it,
    /// see [`Db::write_then`]), or with why the commit carrying it was lost.
    fn answer(self: Box<Self>, lost: Option<Error>);
}

/// How a write went, before its commit.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Outcome {
    Wrote,
    Failed,
}

struct Job<F, T, G, U> {
    f: F,
    out: Option<Result<T>>,
    then: G,
    answer: tokio::sync::oneshot::Sender<Result<U>>,
}

impl<F, T, G, U> Write for Job<F, T, G, U>
where
    T: Send + 'static,
    U: Send + 'static,
    F: Fn(&mut Connection) -> Result<T> + Send + 'static,
    G: FnOnce(T) -> U + Send + 'static,
{
    fn run(&mut self, c: &mut Connection) -> Outcome {
        let out = catch_unwind(AssertUnwindSafe(|| (self.f)(c)))
            .unwrap_or_else(|_| Err(Error::backend("sqlite.write", "the write panicked")));
        let outcome = if out.is_ok() { Outcome::Wrote } else { Outcome::Failed };
        self.out = Some(out);
        outcome
    }

    fn answer(self: Box<Self>, lost: Option<Error>) {
        // Lost, even a write that failed: its failure may have rested on the lost writes.
        let out = match (lost, self.out) {
            (None, Some(out)) => out,
            (Some(e), _) => Err(e),
            (None, None) => Err(Error::backend("sqlite.write", "the write never ran")),
        };
        let then = self.then;
        let out = out.and_then(|out| {
            catch_unwind(AssertUnwindSafe(|| then(out)))
                .map_err(|_| Error::backend("sqlite.write", "what follows the write panicked; the write stands"))
        });
        // The caller may have gone (its request was cancelled); the write stands.
        let _ = self.answer.send(out);
    }
}

/// The writer thread: takes the writes waiting, runs them in one transaction, each in a
/// savepoint of its own, and commits once for all. One commit for many writes is what
/// lets a busy moment cost one trip to the log instead of one per write; a write alone
/// is committed at once, so a quiet moment waits for nothing.
fn write_groups(
    mut c: Connection,
    queued: &Receiver<Box<dyn Write>>,
    checkpointer: &SyncSender<()>,
    checkpointing: &Mutex<()>,
    hook_writes: Option<&HookWrites>,
) {
    while let Ok(first) = queued.recv() {
        let mut group = vec![first];
        while group.len() < GROUP_MAX {
            match queued.try_recv() {
                Ok(w) => group.push(w),
                Err(_) => break,
            }
        }
        commit_group(&mut c, group, hook_writes);
        if i64::from(LOG_PAGES.get()) >= LOG_CHECKPOINT_PAGES {
            checkpoint_to_start_over(&c, checkpointing);
        } else {
            // Full means a kick is already waiting: the checkpointer will see this commit.
            let _ = checkpointer.try_send(());
        }
    }
}

thread_local! {
    /// The log's length in pages after the last commit of the writer on this thread.
    static LOG_PAGES: Cell<c_int> = const { Cell::new(0) };
}

/// SQLite's log hook on the writer connection, called after each commit with the log's
/// length. It takes the place of SQLite's auto-checkpoint, which the writer does itself
/// (`checkpoint_to_start_over`).
fn after_commit(_: &Wal, pages: c_int) -> rusqlite::Result<()> {
    LOG_PAGES.set(pages);
    Ok(())
}

/// The writer's checkpoint, once the log reaches [`LOG_CHECKPOINT_PAGES`]: with nothing
/// written after it, it lets the next write start the log over. Only one checkpoint runs
/// at a time, and SQLite's answer to a second is to copy nothing; so the writer waits for
/// the background one under way, if any, and is not kicked again until the log starts
/// over. Finding the background's under way and copying nothing, the writer's checkpoint
/// came again only at the next commit, and on a busy disk the background's copy lasted
/// long enough for the log to reach twice or four times its length (a test of steady
/// writes failed on CI at 46 and 81 MB).
fn checkpoint_to_start_over(c: &Connection, checkpointing: &Mutex<()>) {
    let _alone = checkpointing.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    // PASSIVE, as SQLite's own: it never waits for the readers.
    if let Err(e) = c.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |_| Ok(())) {
        tracing::warn!(error = %e, "the writer's checkpoint failed; the next commit tries again");
    }
}

/// The checkpointer thread: copies committed pages from the log into the database while
/// the writer goes on, so the writer's own checkpoint (`checkpoint_to_start_over`) finds
/// little left to copy. That checkpoint must stay on the writer: only a checkpoint with
/// nothing written after it lets the next write start the log over. Left to the writer
/// alone, copying 1,000 pages held up every write behind it for a few milliseconds,
/// several times a second: the p99 of publish → receive (BENCHMARKS.md).
fn checkpoint_behind(c: &Connection, kicked: &Receiver<()>, checkpointing: &Mutex<()>) {
    while kicked.recv().is_ok() {
        {
            let _alone = checkpointing.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            // PASSIVE never waits for, or holds up, the writer or the readers.
            if let Err(e) = c.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |_| Ok(())) {
                tracing::warn!(error = %e, "a background checkpoint failed; the writer's own will copy the pages");
            }
        }
        // Copying a page once per pause rather than once per commit that touched it.
        std::thread::sleep(CHECKPOINT_PAUSE);
    }
}

/// Runs a group's writes in one transaction and commits them together.
///
/// A write that fails must undo only itself. Each write used to run in a savepoint of its
/// own for that, and a savepoint copies every page it changes into its journal: about a
/// tenth of the writer's time (BENCHMARKS.md), paid by every write for the rare one that
/// fails. Now the writes run bare; when one fails, the transaction is rolled back and the
/// others run again without it. The failed write is answered once the others are
/// committed: its failure may rest on what they wrote (a name another create of the group
/// took), and answered at once, it said "taken" of a name whose taker was then lost with
/// the group's commit. Should a write that ran before it not be stored after all, it is
/// answered with an error to try again.
fn commit_group(c: &mut Connection, group: Vec<Box<dyn Write>>, hook_writes: Option<&HookWrites>) {
    let ended = || {
        if let Some(w) = hook_writes {
            w.ended();
        }
    };
    // Each refused write, with the writes that ran before it in its run (by their place in
    // the group as it came): what its failure may rest on.
    let mut refused: Vec<(Box<dyn Write>, Outcome, Vec<usize>)> = Vec::new();
    let mut group: Vec<(usize, Box<dyn Write>)> = group.into_iter().enumerate().collect();
    let answer_refused = |refused: Vec<(Box<dyn Write>, Outcome, Vec<usize>)>,
                          lost_with: Option<&rusqlite::Error>,
                          committed: &[usize]| {
        for (w, outcome, before) in refused {
            w.answer(match (lost_with, outcome) {
                (Some(e), _) => Some(lost(e)),
                // A write it may have rested on was not stored after all (it failed when
                // run again): its failure may not hold, and it is to be tried again.
                _ if !before.iter().all(|b| committed.contains(b)) => Some(Error::backend(
                    "sqlite.write",
                    "a write of its group that it may have rested on was not stored; try again",
                )),
                (None, Outcome::Failed) => None,
                (None, Outcome::Wrote) => {
                    Some(Error::backend("sqlite.commit", "SQLite rolled the transaction back under this write"))
                }
            });
        }
    };
    'run: while !group.is_empty() {
        if let Err(e) = run(c, "BEGIN IMMEDIATE") {
            ended();
            group.into_iter().for_each(|(_, w)| w.answer(Some(lost(&e))));
            answer_refused(refused, Some(&e), &[]);
            return;
        }
        for i in 0..group.len() {
            let outcome = group[i].1.run(c);
            // SQLite rolls a transaction back itself after some errors (a full disk, an I/O
            // error), even under a write that swallowed the error and answered Ok.
            let undone = c.is_autocommit();
            if outcome == Outcome::Wrote && !undone {
                continue;
            }
            if !undone {
                let _ = run(c, "ROLLBACK");
            }
            // Rolled back, or (undone by SQLite) perhaps committed by the write's later
            // statements on their own: counted either way, before the answer.
            ended();
            let before = group[..i].iter().map(|(place, _)| *place).collect();
            refused.push((group.remove(i).1, outcome, before));
            continue 'run;
        }
        let committed = run(c, "COMMIT");
        ended();
        match committed {
            Ok(()) => {
                let committed: Vec<usize> = group.iter().map(|(place, _)| *place).collect();
                group.into_iter().for_each(|(_, w)| w.answer(None));
                answer_refused(refused, None, &committed);
            }
            Err(e) => {
                let _ = run(c, "ROLLBACK");
                group.into_iter().for_each(|(_, w)| w.answer(Some(lost(&e))));
                answer_refused(refused, Some(&e), &[]);
            }
        }
        return;
    }
    // Every write of the group failed: nothing is stored that a failure could rest on.
    answer_refused(refused, None, &[]);
}

/// Runs one of the writer's own statements, prepared once.
fn run(c: &Connection, statement: &str) -> rusqlite::Result<()> {
    c.prepare_cached(statement)?.execute([]).map(|_| ())
}

/// The error a write gets when the commit that carried it did not happen.
fn lost(e: &rusqlite::Error) -> Error {
    if e.sqlite_error_code() == Some(rusqlite::ErrorCode::DiskFull) {
        tracing::error!("the database is full: nothing more can be written");
        return Error::StorageFull;
    }
    Error::backend("sqlite.commit", e.to_string())
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

    /// A write that changes many pages in a savepoint keeps its journal in memory: with
    /// SQLite's default it spilled into a temporary file past 64 KiB, created, written and
    /// deleted by most busy commits when every write ran in a savepoint (about an eighth of
    /// the server's CPU at saturation).
    #[tokio::test]
    async fn a_large_write_journals_its_savepoint_in_memory_not_in_a_file() {
        let dir = tempfile::tempdir().unwrap();
        let db = Db::open(&dir.path().join("hb.db")).unwrap();
        // 2 MB committed first: a savepoint journals only pages that existed before it.
        db.write(|c| (0..2_000).try_for_each(|i| insert_event(c, &format!("{i:05}"), 1_000))).await.unwrap();
        let open_temp_files = db
            .write(|c| {
                c.execute_batch("SAVEPOINT large").map_err(crate::error::sql("test"))?;
                c.execute("UPDATE events SET doc = ?1", ["y".repeat(1_000)]).map_err(crate::error::sql("test"))?;
                // SQLite's temporary files are named `etilqs_…` and unlinked once open;
                // the savepoint's journal would be open here, before its release.
                let open = std::fs::read_dir("/proc/self/fd")
                    .map_err(|e| Error::backend("test", e))?
                    .filter_map(|fd| std::fs::read_link(fd.ok()?.path()).ok())
                    .filter(|target| target.to_string_lossy().contains("etilqs_"))
                    .count();
                c.execute_batch("RELEASE large").map_err(crate::error::sql("test"))?;
                Ok(open)
            })
            .await
            .unwrap();
        assert_eq!(open_temp_files, 0);
    }

    /// The writer's checkpoint, run by the commit that crosses [`LOG_CHECKPOINT_PAGES`] of
    /// log, is what lets the next writer start the log over. A checkpointer on a connection
    /// of its own was tried (BENCHMARKS.md, "What the figures changed"): passive checkpoints
    /// never start the log over (it reached 4 GB in a 100,000-delivery replay), and ones
    /// that do held up the writer longer than the commits' own. The writer's checkpoint
    /// waits for the background's under way: it copied nothing beside it, and with other
    /// tests busy on the disk the log reached 46 and 81 MB on CI. It now ends at one log's
    /// length (21 MB) run after run.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_log_starts_over_under_steady_writes() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("hb.db");
        let db = Db::open(&path).unwrap();
        // 120 MB in 1,200 commits, one after another: six times what the log may hold.
        for n in 0..1_200 {
            db.write(move |c| (0..100).try_for_each(|i| insert_event(c, &format!("{n}-{i}"), 1_000))).await.unwrap();
        }
        let wal = std::fs::metadata(dir.path().join("hb.db-wal")).map(|m| m.len()).unwrap_or(0);
        // A log that never started over would hold all 120 MB. One that does holds its
        // checkpoint's pages and the commits before the next checkpoint that copies them all.
        // (A frame of the log is a page and a 24-byte header.)
        let bound = 2 * LOG_CHECKPOINT_PAGES as u64 * (PAGE_SIZE as u64 + 24);
        assert!(wal < bound, "the write-ahead log grew to {wal} bytes (at most {bound})");
    }

    /// A new database is made of [`PAGE_SIZE`] pages; one created with SQLite's default
    /// 4 KiB pages keeps them, and is read and written as before.
    #[tokio::test]
    async fn a_new_database_has_small_pages_and_an_older_one_keeps_its_own() {
        let dir = tempfile::tempdir().unwrap();
        let page_size = |path: &Path| -> i64 {
            Connection::open(path).unwrap().pragma_query_value(None, "page_size", |r| r.get(0)).unwrap()
        };
        let new = dir.path().join("new.db");
        Db::open(&new).unwrap().write(|c| insert_event(c, "e1", 100)).await.unwrap();
        assert_eq!(page_size(&new), PAGE_SIZE);

        let old = dir.path().join("old.db");
        Connection::open(&old).unwrap().execute_batch("PRAGMA page_size = 4096; CREATE TABLE before (x)").unwrap();
        let db = Db::open(&old).unwrap();
        db.write(|c| insert_event(c, "e1", 5_000)).await.unwrap();
        let stored: i64 = db
            .read(|c| c.query_row("SELECT COUNT(*) FROM events", [], |r| r.get(0)).map_err(crate::error::sql("test")))
            .await
            .unwrap();
        assert_eq!((page_size(&old), stored), (4096, 1));
    }

    /// A hook's and a delivery's JSON (about 1 KB each) are kept in place in their table's
    /// pages: in a WITHOUT ROWID table every such row took an overflow page of its own,
    /// mostly empty, so a delivery took about 2.4 KB of file instead of 1.1 KB, and reading
    /// one took two pages.
    #[tokio::test]
    async fn rows_of_about_a_kilobyte_take_no_overflow_page() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("hb.db");
        let db = Db::open(&path).unwrap();
        db.write(|c| {
            for i in 0..100 {
                c.execute(
                    "INSERT INTO deliveries (hook_id, id, doc, expires_at) VALUES ('h', ?1, ?2, 0)",
                    params![format!("{i:05}"), "d".repeat(1_000)],
                )
                .map_err(crate::error::sql("test"))?;
                c.execute(
                    "INSERT INTO hooks (tenant, id, name, revision, doc) VALUES ('t', ?1, ?1, 1, ?2)",
                    params![format!("{i:05}"), "h".repeat(1_200)],
                )
                .map_err(crate::error::sql("test"))?;
            }
            Ok(())
        })
        .await
        .unwrap();
        let c = Connection::open(&path).unwrap();
        let overflow: i64 = c
            .query_row(
                "SELECT COUNT(*) FROM dbstat WHERE name IN ('deliveries', 'hooks') AND pagetype = 'overflow'",
                [],
                |r| r.get(0),
            )
            .unwrap();
        assert_eq!(overflow, 0);
    }

    /// A database from before keeps no index by receipt (the full one, or the partial one
    /// that replaced it) and its visible-time index becomes the one that carries
    /// `received_at`: opening it drops the old ones, and a message is found by its receipt
    /// through the table's own key.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn no_receipt_index_is_kept_and_receipts_find_messages_by_their_key() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("hb.db");
        drop(Db::open(&path).unwrap());
        let indexes = || {
            let c = Connection::open(&path).unwrap();
            let mut stmt = c
                .prepare("SELECT name FROM sqlite_master WHERE type = 'index' AND tbl_name = 'messages' ORDER BY name")
                .unwrap();
            stmt.query_map([], |r| r.get::<_, String>(0)).unwrap().collect::<rusqlite::Result<Vec<_>>>().unwrap()
        };
        assert_eq!(indexes(), ["messages_due", "messages_group"]);
        {
            let c = Connection::open(&path).unwrap();
            c.execute_batch(
                "DROP INDEX messages_due;
                 CREATE INDEX messages_visible ON messages (queue, visible_at, seq);
                 CREATE INDEX messages_receipt ON messages (receipt);
                 CREATE INDEX messages_held ON messages (receipt) WHERE receipt IS NOT NULL;",
            )
            .unwrap();
        }
        drop(Db::open(&path).unwrap());
        assert_eq!(indexes(), ["messages_due", "messages_group"]);
        let c = Connection::open(&path).unwrap();
        let plan: String = c
            .query_row(&format!("EXPLAIN QUERY PLAN {}", crate::queue::DELETE_HELD), params![1, "r"], |r| r.get(3))
            .unwrap();
        assert!(plan.contains("INTEGER PRIMARY KEY"), "{plan}");
    }

    /// A database from before, at its size cap: the indexes it no longer keeps are dropped
    /// before the ones it lacks are made, in the room they free. Made first, the first of
    /// them failed for want of room and the database could not be opened.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_database_from_before_at_its_cap_is_opened_with_its_new_indexes() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("hb.db");
        drop(Db::open(&path).unwrap());
        {
            let c = Connection::open(&path).unwrap();
            c.execute_batch(
                "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 3000)
                 INSERT INTO messages (queue, id, body, visible_at, receive_count, receipt, sent_at)
                     SELECT 'q', 'm' || i, '', i, 1, printf('%d.%040d', i, i), i FROM n;
                 DROP INDEX messages_due;
                 DROP INDEX deliveries_expiry;
                 DROP INDEX events_expiry;
                 CREATE INDEX messages_visible ON messages (queue, visible_at, seq);
                 CREATE INDEX messages_receipt ON messages (receipt);
                 CREATE INDEX messages_held ON messages (receipt) WHERE receipt IS NOT NULL;
                 VACUUM;",
            )
            .unwrap();
        }
        let full = std::fs::metadata(&path).unwrap().len();
        let db = Db::open_capped(&path, Some(full)).expect("opened at its cap");
        drop(db);
        let c = Connection::open(&path).unwrap();
        let mut stmt = c.prepare("SELECT name FROM sqlite_master WHERE type = 'index' ORDER BY name").unwrap();
        let names =
            stmt.query_map([], |r| r.get::<_, String>(0)).unwrap().collect::<rusqlite::Result<Vec<_>>>().unwrap();
        for made in ["messages_due", "deliveries_expiry", "events_expiry"] {
            assert!(names.iter().any(|n| n == made), "{made} among {names:?}");
        }
        assert!(!names.iter().any(|n| n == "messages_receipt"), "{names:?}");
    }

    /// A message in flight in a database from before `received_at` is in flight by it once
    /// the column is added: the in-flight count reads nothing else. An open that fails
    /// between adding the column and filling it (here a trigger refusing the fill; a crash
    /// in life) adds neither, and the next open does both.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn messages_in_flight_before_received_at_count_as_in_flight() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("hb.db");
        {
            let c = Connection::open(&path).unwrap();
            c.execute_batch(
                "CREATE TABLE messages (
                    seq INTEGER PRIMARY KEY AUTOINCREMENT, queue TEXT NOT NULL, id TEXT NOT NULL,
                    body TEXT NOT NULL, visible_at INTEGER NOT NULL,
                    receive_count INTEGER NOT NULL DEFAULT 0, receipt TEXT, sent_at INTEGER NOT NULL);
                 INSERT INTO messages (queue, id, body, visible_at, receive_count, receipt, sent_at)
                     VALUES ('q', 'held', '', 9000000000000, 1, '1.r', 5), ('q', 'waiting', '', 0, 0, NULL, 6);
                 CREATE TRIGGER refuse_fill BEFORE UPDATE ON messages
                     BEGIN SELECT RAISE(ABORT, 'refused by the test'); END;",
            )
            .unwrap();
        }
        assert!(Db::open(&path).is_err(), "the fill was refused");
        Connection::open(&path).unwrap().execute_batch("DROP TRIGGER refuse_fill").unwrap();
        drop(Db::open(&path).unwrap());
        let c = Connection::open(&path).unwrap();
        let mut stmt = c.prepare("SELECT id, received_at FROM messages ORDER BY seq").unwrap();
        let rows: Vec<(String, Option<i64>)> =
            stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?))).unwrap().map(Result::unwrap).collect();
        assert_eq!(rows, [("held".to_owned(), Some(5)), ("waiting".to_owned(), None)]);
    }

    fn insert_event(c: &Connection, id: &str, size: usize) -> Result<()> {
        c.execute(
            "INSERT INTO events (tenant, id, doc, expires_at) VALUES ('t', ?1, ?2, 0)",
            params![id, "x".repeat(size)],
        )
        .map(|_| ())
        .map_err(crate::error::sql("test.insert"))
    }

    fn stored_ids(path: &Path) -> std::collections::BTreeSet<String> {
        let c = Connection::open(path).unwrap();
        let mut stmt = c.prepare("SELECT id FROM events").unwrap();
        stmt.query_map([], |r| r.get(0)).unwrap().map(Result::unwrap).collect()
    }

    /// Sends `n` writes at once, the `i`th being `write(i)`, and returns their answers in
    /// order: writes sent together share commits.
    async fn write_all<W>(db: &Db, n: usize, write: impl Fn(usize) -> W) -> Vec<Result<usize>>
    where
        W: Fn(&mut Connection) -> Result<usize> + Send + 'static,
    {
        futures::future::join_all((0..n).map(|i| db.write(write(i)))).await
    }

    /// Holds the answers of [`write_all`] to the contract: the writes `refused` names are
    /// answered with an error, every other one with its own result, and exactly the writes
    /// answered Ok are stored.
    fn assert_answered_truthfully(path: &Path, outcomes: Vec<Result<usize>>, refused: impl Fn(usize) -> bool) {
        let mut expected = std::collections::BTreeSet::new();
        for (i, outcome) in outcomes.into_iter().enumerate() {
            match (refused(i), outcome) {
                (true, Err(_)) => {}
                (true, Ok(_)) => panic!("write {i} failed or was undone, yet was answered Ok"),
                (false, Ok(n)) => {
                    assert_eq!(n, i, "each caller gets its own answer");
                    expected.insert(format!("{i:03}"));
                }
                (false, Err(e)) => panic!("write {i} should have succeeded: {e}"),
            }
        }
        assert_eq!(stored_ids(path), expected, "exactly the writes answered Ok are stored");
    }

    /// Writes sent together share commits; each still stands or falls alone, and each
    /// caller hears its own outcome.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_failed_write_undoes_only_itself() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("hb.db");
        let db = Db::open(&path).unwrap();
        let outcomes = write_all(&db, 300, |i| {
            move |c: &mut Connection| {
                insert_event(c, &format!("{i:03}"), 10)?;
                match i % 6 {
                    0 => Err(Error::backend("test", "refused after writing")),
                    3 => panic!("a write that panics after writing"),
                    _ => Ok(i),
                }
            }
        })
        .await;
        assert_answered_truthfully(&path, outcomes, |i| i % 6 == 0 || i % 6 == 3);
    }

    /// Runs `a`, `b` and `c` as one group, in that order: sent while a write holds the
    /// writer (the assertions of their tests hold whatever the groups, but only that one
    /// shows the fault).
    async fn in_one_group<A, B, C>(db: &Db, a: A, b: B, c: C) -> (Result<()>, Result<()>, Result<()>)
    where
        A: Fn(&mut Connection) -> Result<()> + Send + 'static,
        B: Fn(&mut Connection) -> Result<()> + Send + 'static,
        C: Fn(&mut Connection) -> Result<()> + Send + 'static,
    {
        let holding = db.write(|_: &mut Connection| {
            std::thread::sleep(std::time::Duration::from_millis(1000));
            Ok(())
        });
        let (held, outcomes) = futures::future::join(holding, async {
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
            futures::future::join3(db.write(a), db.write(b), db.write(c)).await
        })
        .await;
        held.unwrap();
        outcomes
    }

    /// Stores the name "taken", or refuses it as taken when it is stored already.
    fn take_unless_taken(c: &mut Connection) -> Result<()> {
        let n: i64 = c
            .query_row("SELECT count(*) FROM events WHERE id = 'taken'", [], |r| r.get(0))
            .map_err(crate::error::sql("test.read"))?;
        if n > 0 { Err(Error::NameTaken) } else { insert_event(c, "taken", 10) }
    }

    /// `first` answered Ok exactly when "taken" is stored, and `second` answered Ok or
    /// refused as taken only when it is (either says the name is held).
    fn assert_no_name_taken_by_nobody(path: &Path, first: &Result<()>, second: &Result<()>) {
        let stored = stored_ids(path);
        assert_eq!(first.is_ok(), stored.contains("taken"), "answered truthfully");
        if matches!(second, Ok(()) | Err(Error::NameTaken)) {
            assert!(stored.contains("taken"), "{second:?} for a name nobody holds");
        }
    }

    /// A write refused for what another write of its group wrote (a name that one took) is
    /// answered only with that group's commit: when the commit fails, it is answered as lost
    /// too, not "taken" of a name nobody holds. (A deferred foreign key fails the commit.)
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_write_refused_for_its_groups_writes_is_not_answered_before_they_are_stored() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("hb.db");
        let db = Db::open(&path).unwrap();
        db.write(|c: &mut Connection| {
            c.execute_batch(
                "CREATE TABLE parents (id TEXT PRIMARY KEY);
                 CREATE TABLE children (parent TEXT REFERENCES parents (id) DEFERRABLE INITIALLY DEFERRED);",
            )
            .map_err(crate::error::sql("test.schema"))
        })
        .await
        .unwrap();
        let orphan = |c: &mut Connection| {
            c.execute("INSERT INTO children (parent) VALUES ('nobody')", [])
                .map(|_| ())
                .map_err(crate::error::sql("test.orphan"))
        };
        let (first, second, orphan) =
            in_one_group(&db, |c: &mut Connection| insert_event(c, "taken", 10), take_unless_taken, orphan).await;
        assert!(orphan.is_err(), "its commit fails");
        assert_no_name_taken_by_nobody(&path, &first, &second);
    }

    /// The same when the write it rested on fails when the group runs again (as a full disk
    /// would fail it): it is answered with an error to try again, not "taken".
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_write_refused_for_a_write_that_then_failed_is_not_answered_with_its_refusal() {
        use std::sync::atomic::{AtomicUsize, Ordering};
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("hb.db");
        let db = Db::open(&path).unwrap();
        let runs = std::sync::Arc::new(AtomicUsize::new(0));
        let counted = runs.clone();
        // Stores its name on its first run, fails on any other.
        let once = move |c: &mut Connection| {
            let runs = &counted;
            if runs.fetch_add(1, Ordering::SeqCst) == 0 {
                insert_event(c, "taken", 10)
            } else {
                Err(Error::StorageFull)
            }
        };
        let other = |c: &mut Connection| insert_event(c, "other", 10);
        let (first, second, _) = in_one_group(&db, once, take_unless_taken, other).await;
        assert_eq!(runs.load(Ordering::SeqCst), 2, "the case: the group ran again without its failed write");
        assert_no_name_taken_by_nobody(&path, &first, &second);
        assert!(second.as_ref().is_err_and(|e| !matches!(e, Error::NameTaken)), "to try again: {second:?}");
    }

    /// SQLite can undo the whole transaction under a write that then answers Ok (a full
    /// disk does, when the write swallows the error). That write is answered with an
    /// error, and the others in its group still commit. A write that ends the transaction
    /// itself stands in for SQLite here.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_write_whose_transaction_was_undone_under_it_is_not_answered_ok() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("hb.db");
        let db = Db::open(&path).unwrap();
        let outcomes = write_all(&db, 100, |i| {
            move |c: &mut Connection| {
                insert_event(c, &format!("{i:03}"), 10)?;
                if i % 10 == 0 {
                    c.execute_batch("ROLLBACK").map_err(crate::error::sql("test"))?;
                }
                Ok(i)
            }
        })
        .await;
        assert_answered_truthfully(&path, outcomes, |i| i % 10 == 0);
    }

    /// A full database can undo a whole shared transaction; then every write in it is
    /// answered with an error, and none answered Ok is missing.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_full_database_answers_every_write_truthfully() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("hb.db");
        let db = Db::open_capped(&path, Some(400_000)).unwrap();
        let writes = (0..200).map(|i| {
            let db = db.clone();
            async move { db.write(move |c| insert_event(c, &format!("{i:03}"), 8_000)).await }
        });
        let outcomes = futures::future::join_all(writes).await;
        let ok: std::collections::BTreeSet<String> =
            outcomes.iter().enumerate().filter(|(_, o)| o.is_ok()).map(|(i, _)| format!("{i:03}")).collect();
        assert!(outcomes.iter().any(|o| matches!(o, Err(Error::StorageFull))), "the cap was reached and said so");
        assert!(!ok.is_empty(), "writes before the cap succeeded");
        assert_eq!(stored_ids(&path), ok, "exactly the writes answered Ok are stored");
    }

    /// A database already larger than the cap it is opened with (SQLite takes the file's
    /// size as the cap then): opened, with a warning naming the cap; none under the cap.
    #[tokio::test]
    async fn a_database_over_its_cap_is_warned_of_at_open() {
        let lines = crate::captured_logs::CapturedLogs::default();
        let _log = lines.on_this_thread();
        let warned = || lines.text().contains("HOOKBRIDGE_DATABASE_MAX_SIZE");

        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("hb.db");
        let db = Db::open(&path).unwrap();
        for i in 0..40 {
            db.write(move |c| insert_event(c, &format!("{i:03}"), 50_000)).await.unwrap();
        }
        drop(db);
        drop(Db::open_capped(&path, Some(64 << 20)).unwrap());
        assert!(!warned(), "under its cap: nothing to say");
        drop(Db::open_capped(&path, Some(1 << 20)).unwrap());
        assert!(warned(), "no warning for a database over its cap");
    }

    fn hook_write(sql: &'static str) -> impl Fn(&mut Connection) -> Result<usize> + Send + 'static {
        move |c| c.execute(sql, []).map_err(|e| Error::backend("test", e))
    }

    #[tokio::test]
    async fn the_commits_that_change_a_hook_are_counted() {
        let dir = tempfile::tempdir().unwrap();
        let db = Db::open(&dir.path().join("hb.db")).unwrap();
        assert_eq!(db.hook_writes(), Some(0));
        db.write(hook_write("INSERT INTO hooks (tenant, id, name, revision, doc) VALUES ('t', 'h', 'h', 1, '{}')"))
            .await
            .unwrap();
        assert_eq!(db.hook_writes(), Some(1), "a hook added");
        db.write(hook_write("INSERT INTO rules (name, pattern, target) VALUES ('r', '{}', 'q')")).await.unwrap();
        assert_eq!(db.hook_writes(), Some(1), "another table's row");
        db.write(hook_write("UPDATE hooks SET doc = '{\"a\":1}' WHERE id = 'none'")).await.unwrap();
        assert_eq!(db.hook_writes(), Some(1), "no hook changed");
        db.write(hook_write("UPDATE hooks SET doc = '{\"a\":1}' WHERE id = 'h'")).await.unwrap();
        assert_eq!(db.hook_writes(), Some(2), "a hook changed");
        db.write(hook_write("DELETE FROM hooks")).await.unwrap();
        assert_eq!(db.hook_writes(), Some(3), "a hook deleted");
    }

    #[tokio::test]
    async fn a_hooks_table_without_rowids_is_not_counted() {
        // SQLite's update hook is not called for such a table's rows, so its changes cannot
        // be counted, and no hook may be kept in memory on the strength of the count.
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("hb.db");
        Connection::open(&path)
            .unwrap()
            .execute_batch(
                "CREATE TABLE hooks (tenant TEXT NOT NULL, id TEXT NOT NULL, name TEXT NOT NULL,
                 revision INTEGER NOT NULL, doc TEXT NOT NULL, PRIMARY KEY (tenant, id)) WITHOUT ROWID;",
            )
            .unwrap();
        let db = Db::open(&path).unwrap();
        assert_eq!(db.hook_writes(), None);
        db.write(hook_write("INSERT INTO hooks (tenant, id, name, revision, doc) VALUES ('t', 'h', 'h', 1, '{}')"))
            .await
            .unwrap();
        assert_eq!(db.hook_writes(), None);
    }
}
