//! A backend under test, with what the contract suite needs beyond the ports: extra
//! queues with chosen settings, extra bus rules, and the raw stored form of a hook.

use std::sync::Arc;

use async_trait::async_trait;
use hookbridge_aws::{Clients, Resources, SqsQueue};
use hookbridge_core::hook::{HookSecrets, SealedSecrets};
use hookbridge_core::ids::{DeliveryId, HookId, ReplayId, TenantId};
use hookbridge_core::ports::{Backend, Queue, Rule};
use hookbridge_core::topology::QueueSpec;
use hookbridge_core::topology::Topology;
use hookbridge_embedded::{Db, EmbeddedBus, EmbeddedConfig, EmbeddedQueue};

use crate::emulator::Emulator;

/// A backend under test.
#[async_trait]
pub trait Harness: Send + Sync {
    /// The wired ports.
    fn backend(&self) -> &Backend;

    /// A unique name for a resource this test creates.
    fn unique(&self, what: &str) -> String;

    /// Creates a queue and its DLQ with these settings and returns `(queue, dlq)`.
    async fn queue(&self, spec: &QueueSpec) -> (Arc<dyn Queue>, Arc<dyn Queue>);

    /// Adds a bus rule; its target queue must exist.
    async fn rule(&self, rule: &Rule);

    /// The hook exactly as the backend stored it (a row or an item, as text), for proving
    /// that no secret is stored in clear.
    async fn raw_hook(&self, tenant: &TenantId, id: HookId) -> String;

    /// `secrets` sealed in the format from before blobs were bound to their hook, as a
    /// store written by an older version holds them.
    async fn seal_unbound(&self, secrets: &HookSecrets) -> SealedSecrets;

    /// Rewrites the hook's stored document as a newer version might write it (a method this
    /// version does not know), so that this version can no longer read it.
    async fn make_unreadable(&self, tenant: &TenantId, id: HookId);

    /// Rewrites every stored record of a delivery with a status this version does not
    /// know, as a newer version might write it.
    async fn make_delivery_unreadable(&self, hook: HookId, id: DeliveryId);

    /// Rewrites a replay job with a state this version does not know, as a newer version
    /// might write it.
    async fn make_replay_unreadable(&self, hook: HookId, id: ReplayId);
}

/// The status [`Harness::make_delivery_unreadable`] writes.
const UNKNOWN_STATUS: &str = "ARCHIVED";

/// The method [`Harness::make_unreadable`] writes.
const UNKNOWN_METHOD: &str = "TELEPORT";

/// The database file's name in the harness's temporary directory.
const DATABASE: &str = "hookbridge.db";

/// The tables whose shape has changed, as the first releases created them.
const OLDER_TABLES: &str = "
PRAGMA page_size = 4096;
CREATE TABLE hooks (
    tenant  TEXT NOT NULL,
    id      TEXT NOT NULL,
    name    TEXT NOT NULL,
    revision INTEGER NOT NULL,
    doc     TEXT NOT NULL,
    PRIMARY KEY (tenant, id)
) WITHOUT ROWID;
CREATE TABLE deliveries (
    hook_id    TEXT NOT NULL,
    id         TEXT NOT NULL,
    doc        TEXT NOT NULL,
    expires_at INTEGER NOT NULL,
    PRIMARY KEY (hook_id, id)
) WITHOUT ROWID;
";

/// The embedded backend on a fresh database in a temporary directory.
#[derive(Debug)]
pub struct EmbeddedHarness {
    backend: Backend,
    db: Db,
    bus: EmbeddedBus,
    config: EmbeddedConfig,
    _dir: tempfile::TempDir,
}

impl EmbeddedHarness {
    /// A fresh, initialised embedded backend.
    pub async fn start() -> Self {
        Self::start_in(tempfile::tempdir().expect("temp dir")).await
    }

    /// An initialised embedded backend on a database made as the first releases made them
    /// (4 KiB pages; hooks and deliveries in WITHOUT ROWID tables), which a newer version
    /// opens and uses as it is.
    pub async fn start_on_an_older_database() -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        rusqlite::Connection::open(dir.path().join(DATABASE))
            .and_then(|c| c.execute_batch(OLDER_TABLES))
            .expect("create the older tables");
        Self::start_in(dir).await
    }

    async fn start_in(dir: tempfile::TempDir) -> Self {
        let config = EmbeddedConfig::at(dir.path().join(DATABASE));
        // One writer per file, as `hookbridge serve` has: the harness's own writes share it.
        let db = Db::open(&config.database).expect("open database");
        let backend = hookbridge_embedded::init_on(db.clone(), &config).await.expect("init embedded backend");
        let bus = EmbeddedBus::new(db.clone(), &config.account, &config.region);
        Self { backend, db, bus, config, _dir: dir }
    }

    /// Its database, for tests that hold its writer busy.
    pub fn db(&self) -> &Db {
        &self.db
    }

    /// Holds the database's one writer for `held_for`, so every write behind it waits (inside
    /// a request's first write, say, or past an invocation's time to start).
    pub fn hold_the_writer(&self, held_for: std::time::Duration) -> tokio::task::JoinHandle<()> {
        let db = self.db.clone();
        tokio::spawn(async move {
            db.write(move |_| {
                std::thread::sleep(held_for);
                Ok(())
            })
            .await
            .expect("hold the writer");
        })
    }

    /// Takes the event store's table away, so that every read of a stored envelope fails,
    /// as one does while the store cannot be reached.
    pub async fn break_the_event_store(&self) {
        self.db
            .write(|c| c.execute_batch("DROP TABLE events").map_err(|e| hookbridge_core::Error::backend("test", e)))
            .await
            .expect("drop the events table");
    }

    /// Makes every write of a hook's row fail, as writes do while the store refuses them
    /// (throttled, or its disk full), until [`Self::accept_hook_writes`]; reads still answer.
    pub async fn refuse_hook_writes(&self) {
        self.db
            .write(|c| {
                c.execute_batch(
                    "CREATE TRIGGER refuse_hook_writes BEFORE UPDATE ON hooks
                     BEGIN SELECT RAISE(ABORT, 'hook writes refused'); END",
                )
                .map_err(|e| hookbridge_core::Error::backend("test", e))
            })
            .await
            .expect("refuse hook writes");
    }

    /// Undoes [`Self::refuse_hook_writes`].
    pub async fn accept_hook_writes(&self) {
        self.db
            .write(|c| {
                c.execute_batch("DROP TRIGGER refuse_hook_writes")
                    .map_err(|e| hookbridge_core::Error::backend("test", e))
            })
            .await
            .expect("accept hook writes");
    }

    /// The configuration it was opened with.
    pub fn config(&self) -> &EmbeddedConfig {
        &self.config
    }
    /// Runs `update` through the database's writer, as this process's every write goes (the
    /// hooks it keeps in memory are kept until its writer changes one); it must change
    /// exactly one row.
    async fn rewrite_one(&self, update: &str, params: [&str; 3]) {
        let (sql, params) = (update.to_owned(), params.map(str::to_owned));
        let changed = self
            .db
            .write(move |c| {
                c.execute(&sql, rusqlite::params_from_iter(&params))
                    .map_err(|e| hookbridge_core::Error::backend("test", e))
            })
            .await
            .expect("rewrite a stored row");
        assert_eq!(changed, 1, "no such row: {update}");
    }
}

#[async_trait]
impl Harness for EmbeddedHarness {
    fn backend(&self) -> &Backend {
        &self.backend
    }

    fn unique(&self, what: &str) -> String {
        format!("t-{what}-{}", hookbridge_core::ids::DeliveryId::generate().to_string().to_lowercase())
    }

    async fn queue(&self, spec: &QueueSpec) -> (Arc<dyn Queue>, Arc<dyn Queue>) {
        hookbridge_embedded::create_queue(&self.db, spec).await.expect("create queue");
        (
            Arc::new(EmbeddedQueue::new(self.db.clone(), &spec.name)),
            Arc::new(EmbeddedQueue::new(self.db.clone(), &spec.dlq)),
        )
    }

    async fn rule(&self, rule: &Rule) {
        self.bus.put_rule(rule).await.expect("put rule");
    }

    async fn raw_hook(&self, tenant: &TenantId, id: HookId) -> String {
        hookbridge_embedded::raw_hook(&self.db, tenant, id).await.expect("raw hook")
    }

    async fn seal_unbound(&self, secrets: &HookSecrets) -> SealedSecrets {
        let sealer = hookbridge_embedded::LocalKeySealer::load(&self.config.key_file).expect("key file");
        sealer.seal_unbound(secrets).expect("seal")
    }

    async fn make_unreadable(&self, tenant: &TenantId, id: HookId) {
        self.rewrite_one(
            "UPDATE hooks SET doc = json_set(doc, '$.config.method', ?1) WHERE tenant = ?2 AND id = ?3",
            [UNKNOWN_METHOD, &tenant.to_string(), &id.to_string()],
        )
        .await;
    }

    async fn make_delivery_unreadable(&self, hook: HookId, id: DeliveryId) {
        self.rewrite_one(
            "UPDATE deliveries SET doc = json_set(doc, '$.status', ?1) WHERE hook_id = ?2 AND id = ?3",
            [UNKNOWN_STATUS, &hook.to_string(), &id.to_string()],
        )
        .await;
    }

    async fn make_replay_unreadable(&self, hook: HookId, id: ReplayId) {
        self.rewrite_one(
            "UPDATE replays SET doc = json_set(doc, '$.state', ?1) WHERE hook_id = ?2 AND id = ?3",
            [UNKNOWN_STATUS, &hook.to_string(), &id.to_string()],
        )
        .await;
    }
}

/// The AWS backend on the emulator, with resources of its own (a unique name prefix).
#[derive(Debug)]
pub struct AwsHarness {
    backend: Backend,
    clients: Clients,
    resources: Resources,
    topology: Topology,
}

impl AwsHarness {
    /// Rewrites the JSON document of the item at `pk`/`sk` as `change` says. Read
    /// consistently: the item may have been written a moment ago, and the contract suite
    /// counts every read that is not.
    async fn rewrite_doc(&self, pk: String, sk: String, change: impl FnOnce(&mut serde_json::Value)) {
        use aws_sdk_dynamodb::types::AttributeValue;
        let key = [("PK", pk), ("SK", sk)].map(|(k, v)| (k.to_owned(), AttributeValue::S(v)));
        let (db, table) = (&self.clients.dynamodb, &self.resources.table);
        let read = db.get_item().table_name(table).set_key(Some(key.clone().into())).consistent_read(true);
        let item = read.send().await.expect("get item");
        let doc = item.item.and_then(|i| i.get("doc").and_then(|d| d.as_s().ok()).cloned()).expect("no such item");
        let mut doc: serde_json::Value = serde_json::from_str(&doc).expect("a JSON document");
        change(&mut doc);
        db.update_item()
            .table_name(table)
            .set_key(Some(key.into()))
            .update_expression("SET doc = :doc")
            .expression_attribute_values(":doc", AttributeValue::S(doc.to_string()))
            .send()
            .await
            .expect("rewrite item");
    }

    /// Fresh resources on the shared emulator.
    pub async fn start() -> Self {
        Self::start_counted(None).await
    }

    /// Fresh resources whose every AWS request `counter` counts (when given).
    pub async fn start_counted(counter: Option<&hookbridge_aws::RequestCounter>) -> Self {
        let emulator = Emulator::shared();
        let sdk = emulator.sdk_config().await;
        let clients = match counter {
            Some(c) => Clients::counted(&sdk, c),
            None => Clients::new(&sdk),
        };
        let prefix = format!("t{}", hookbridge_core::ids::DeliveryId::generate().to_string().to_lowercase());
        let topology = Topology::named(&prefix);
        let resources = hookbridge_aws::init::create(&clients, &topology).await.expect("create resources");
        let backend = hookbridge_aws::backend(&clients, &resources);
        Self { backend, clients, resources, topology }
    }

    /// The SDK clients.
    pub fn clients(&self) -> &Clients {
        &self.clients
    }

    /// The created resources.
    pub fn resources(&self) -> &Resources {
        &self.resources
    }

    /// The names they were created from.
    pub fn topology(&self) -> &Topology {
        &self.topology
    }
}

#[async_trait]
impl Harness for AwsHarness {
    fn backend(&self) -> &Backend {
        &self.backend
    }

    fn unique(&self, what: &str) -> String {
        format!("t-{what}-{}", hookbridge_core::ids::DeliveryId::generate().to_string().to_lowercase())
    }

    async fn queue(&self, spec: &QueueSpec) -> (Arc<dyn Queue>, Arc<dyn Queue>) {
        let url = hookbridge_aws::init::create_queue(&self.clients, spec).await.expect("create queue");
        let dlq = hookbridge_aws::init::queue_url(&self.clients, &spec.dlq).await.expect("dlq url");
        (Arc::new(SqsQueue::new(self.clients.sqs.clone(), url)), Arc::new(SqsQueue::new(self.clients.sqs.clone(), dlq)))
    }

    async fn rule(&self, rule: &Rule) {
        let url = hookbridge_aws::init::queue_url(&self.clients, &rule.target_queue).await.expect("target queue");
        hookbridge_aws::init::put_rule(&self.clients, &self.resources.bus, rule, &url, None).await.expect("put rule");
    }

    async fn raw_hook(&self, tenant: &TenantId, id: HookId) -> String {
        let table = hookbridge_aws::Table::new(self.clients.dynamodb.clone(), self.resources.table.clone());
        hookbridge_aws::raw_hook_item(&table, tenant, id).await.expect("raw item")
    }

    async fn seal_unbound(&self, secrets: &HookSecrets) -> SealedSecrets {
        let sealer = hookbridge_aws::KmsSealer::new(self.clients.kms.clone(), self.resources.kms_key.clone());
        sealer.seal_unbound(secrets).await.expect("seal")
    }

    async fn make_unreadable(&self, tenant: &TenantId, id: HookId) {
        self.rewrite_doc(format!("T#{tenant}"), format!("H#{id}"), |doc| {
            doc["config"]["method"] = UNKNOWN_METHOD.into()
        })
        .await;
    }

    async fn make_replay_unreadable(&self, hook: HookId, id: ReplayId) {
        self.rewrite_doc(format!("H#{hook}"), format!("R#{id}"), |doc| doc["state"] = UNKNOWN_STATUS.into()).await;
    }

    async fn make_delivery_unreadable(&self, _hook: HookId, id: DeliveryId) {
        use aws_sdk_dynamodb::types::AttributeValue;
        let db = &self.clients.dynamodb;
        let table = &self.resources.table;
        // The table is this harness's own and small: a scan finds the delivery's items in
        // whichever partitions they are.
        let items: Vec<_> = db
            .scan()
            .table_name(table)
            .filter_expression("begins_with(SK, :d)")
            .expression_attribute_values(":d", AttributeValue::S(format!("D#{id}")))
            .into_paginator()
            .items()
            .send()
            .try_collect()
            .await
            .expect("scan");
        assert!(!items.is_empty(), "no such delivery");
        for item in items {
            let [pk, sk] = ["PK", "SK"].map(|k| item[k].as_s().expect("a string key").clone());
            self.rewrite_doc(pk, sk, |doc| doc["status"] = UNKNOWN_STATUS.into()).await;
        }
    }
}
