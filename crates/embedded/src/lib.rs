//! The embedded backend: hooks, deliveries, events, idempotency keys, durable queues and
//! bus rules in one SQLite database in WAL mode.
//!
//! It is the whole platform in one process with no AWS account, no emulator and no
//! Python, and a real self-hosting option for small deployments. Its queues behave like
//! SQS (delay, visibility timeout, receive count, dead-letter queue after too many
//! receives) and its bus routes like the template's EventBridge rules; the shared
//! contract suite in `hookbridge-testkit` holds it to the same behaviour as the AWS backend.

mod bus;
#[cfg(test)]
mod captured_logs;
mod db;
pub mod dead_letters;
mod deliveries;
mod error;
mod event_types;
mod events;
mod files;
mod handoff;
mod hooks;
mod idempotency;
mod limiter;
mod portal;
mod queue;
mod replays;
pub mod retention;
mod sealer;
mod settlement;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use hookbridge_core::ports::Backend;
use hookbridge_core::topology::Topology;

pub use bus::EmbeddedBus;
pub use db::Db;
pub use error::InitError;
pub use files::owner_only_dir;
pub use queue::EmbeddedQueue;
pub use sealer::LocalKeySealer;

/// Where the embedded backend keeps its data and what it calls things.
#[derive(Debug, Clone)]
pub struct EmbeddedConfig {
    /// The SQLite database file.
    pub database: PathBuf,
    /// The AES-256 key file that seals hook secrets.
    pub key_file: PathBuf,
    /// Queue and bus names.
    pub topology: Topology,
    /// The `account` written into envelopes.
    pub account: String,
    /// The `region` written into envelopes.
    pub region: String,
    /// The most the database may grow to, in bytes (`None`: the disk's room).
    pub max_bytes: Option<u64>,
}

impl EmbeddedConfig {
    /// Defaults for a database at `database`, with the key file beside it.
    pub fn at(database: impl AsRef<Path>) -> Self {
        let database = database.as_ref().to_path_buf();
        let mut key_file = database.clone().into_os_string();
        key_file.push(".key");
        Self {
            database,
            key_file: key_file.into(),
            topology: Topology::default(),
            account: "000000000000".to_owned(),
            region: "local".to_owned(),
            max_bytes: None,
        }
    }
}

/// Creates what the backend needs (schema, queues with their DLQs, bus rules, the key
/// file with mode 0600) if missing, and returns the wired ports. Safe to run on every start.
pub async fn init(config: &EmbeddedConfig) -> Result<Backend, InitError> {
    init_on(Db::open_capped(&config.database, config.max_bytes)?, config).await
}

/// [`init`] on the database already open at `config.database`, for a process that does
/// more on the file than the ports do (the retention sweep): it must share the one
/// writer, since a second one would take SQLite's write lock from under the first.
pub async fn init_on(db: Db, config: &EmbeddedConfig) -> Result<Backend, InitError> {
    let t = &config.topology;
    if let Some(found) = made_with_another_prefix(&db, t).await? {
        return Err(InitError::OtherPrefix { found, prefix: t.prefix.clone() });
    }
    for q in t.queues() {
        queue::create(&db, q).await?;
    }
    for rule in t.rules() {
        bus::put_rule(&db, &rule).await?;
    }
    // Only a file known to be absent: one that cannot be looked at is left to the load
    // below, which says why.
    let holds_hooks = holds_hooks(&db).await?;
    if matches!(config.key_file.try_exists(), Ok(false)) && holds_hooks {
        return Err(InitError::KeyFileMissing { path: config.key_file.clone() });
    }
    let sealer = LocalKeySealer::load_or_create(&config.key_file)?;
    if holds_hooks && !key_opens_a_hook(&db, &sealer).await? {
        return Err(InitError::KeyMismatch { path: config.key_file.clone() });
    }
    open_with(db, config, sealer)
}

/// The prefix the database's queues were made with, when it is not `t`'s. Begun with
/// another (a `hookbridge migrate` run from a shell without the server's
/// `HOOKBRIDGE_PREFIX`, a server restarted with a new one), the process made a second set of
/// queues and bus rules beside the first: the bus copied every event into both, the queued
/// retries and backlog waited in queues nothing read, and nothing said so.
async fn made_with_another_prefix(db: &Db, t: &Topology) -> Result<Option<String>, InitError> {
    let ingest = t.ingest.name.clone();
    let found = db
        .read(move |c| {
            let mut stmt = c
                .prepare("SELECT name FROM queues WHERE name LIKE '%-ingest' ORDER BY name")
                .map_err(error::sql("queues.prefix"))?;
            let names = stmt.query_map([], |r| r.get::<_, String>(0)).map_err(error::sql("queues.prefix"))?;
            let names = names.collect::<rusqlite::Result<Vec<String>>>().map_err(error::sql("queues.prefix"))?;
            Ok(if names.is_empty() || names.contains(&ingest) { None } else { names.into_iter().next() })
        })
        .await?;
    Ok(found.and_then(|name| name.strip_suffix("-ingest").map(str::to_owned)))
}

/// Hooks whose secrets are tried with the key at start: one sealed with it is enough.
const KEY_CHECKED_ON: i64 = 5;

/// Whether the key may be the database's: it sealed the secrets of one of a few stored
/// hooks, or none of them tells (a hook this version cannot read, a blob of a format it
/// does not know). Only a blob this key demonstrably did not seal counts against it.
async fn key_opens_a_hook(db: &Db, sealer: &LocalKeySealer) -> Result<bool, InitError> {
    let ids: Vec<(String, String)> = db
        .read(|c| {
            let mut stmt = c.prepare("SELECT tenant, id FROM hooks LIMIT ?1").map_err(error::sql("hooks.sample"))?;
            let rows =
                stmt.query_map([KEY_CHECKED_ON], |r| Ok((r.get(0)?, r.get(1)?))).map_err(error::sql("hooks.sample"))?;
            rows.collect::<rusqlite::Result<Vec<_>>>().map_err(error::sql("hooks.sample"))
        })
        .await?;
    let hooks = hooks::SqliteHookStore::new(db.clone());
    let mut refused = false;
    for (tenant, id) in ids {
        let (Ok(tenant), Ok(id)) = (tenant.parse(), id.parse()) else { continue };
        let Ok(Some(hook)) =
            <hooks::SqliteHookStore as hookbridge_core::ports::HookAccess>::get(&hooks, &tenant, id).await
        else {
            continue;
        };
        match sealer.sealed_with_this_key(hookbridge_core::hook::SecretsOwner::of(&hook), &hook.sealed) {
            Some(true) => return Ok(true),
            Some(false) => refused = true,
            None => {}
        }
    }
    Ok(!refused)
}

/// Whether any hook (and so any sealed secret) is stored.
async fn holds_hooks(db: &Db) -> Result<bool, InitError> {
    let found = db
        .read(|c| c.query_row("SELECT EXISTS (SELECT 1 FROM hooks)", [], |r| r.get(0)).map_err(error::sql("hooks.any")))
        .await?;
    Ok(found)
}

/// Opens an initialised backend without creating anything.
pub fn open(config: &EmbeddedConfig) -> Result<Backend, InitError> {
    let db = Db::open_capped(&config.database, config.max_bytes)?;
    let sealer = LocalKeySealer::load(&config.key_file)?;
    open_with(db, config, sealer)
}

fn open_with(db: Db, config: &EmbeddedConfig, sealer: LocalKeySealer) -> Result<Backend, InitError> {
    let t = &config.topology;
    Ok(Backend {
        hooks: Arc::new(hooks::SqliteHookStore::new(db.clone())),
        deliveries: Arc::new(deliveries::SqliteDeliveryStore::new(db.clone())),
        events: Arc::new(events::SqliteEventStore::new(db.clone())),
        idempotency: Arc::new(idempotency::SqliteIdempotencyStore::new(db.clone())),
        event_types: Arc::new(event_types::SqliteEventTypeStore::new(db.clone())),
        portal: Arc::new(portal::SqlitePortalStore::new(db.clone())),
        replays: Arc::new(replays::SqliteReplayStore::new(db.clone())),
        bus: Arc::new(EmbeddedBus::new(db.clone(), &config.account, &config.region)),
        ingest_queue: Arc::new(EmbeddedQueue::new(db.clone(), &t.ingest.name)),
        delivery_queue: Arc::new(EmbeddedQueue::new(db.clone(), &t.delivery.name)),
        slow_queue: Arc::new(EmbeddedQueue::new(db.clone(), &t.delivery_slow.name)),
        verify_queue: Arc::new(EmbeddedQueue::new(db.clone(), &t.verify.name)),
        limiter: Arc::new(limiter::SqliteRateLimiter::new(db.clone())),
        sealer: Arc::new(sealer),
        settlement: Some(Arc::new(settlement::SqliteSettlement::new(db))),
    })
}

/// Creates a queue and its DLQ with these settings (or updates them).
pub async fn create_queue(db: &Db, spec: &hookbridge_core::topology::QueueSpec) -> hookbridge_core::Result<()> {
    queue::create(db, spec).await
}

/// The stored row of a hook as text, for tests that prove secrets are not stored in clear.
pub async fn raw_hook(
    db: &Db,
    tenant: &hookbridge_core::ids::TenantId,
    id: hookbridge_core::ids::HookId,
) -> hookbridge_core::Result<String> {
    hooks::raw(db, tenant, id).await
}
