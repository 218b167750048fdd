//! A backend under test, with what the contract suite needs beyond the ports: extra
//! queues with chosen settings, extra bus rules, and the raw stored form of a hook.

use std::sync::Arc;

use async_trait::async_trait;
use hookbridge_core::ids::{HookId, TenantId};
use hookbridge_core::ports::{Backend, Queue, Rule};
use hookbridge_core::topology::QueueSpec;
use hookbridge_embedded::{Db, EmbeddedBus, EmbeddedConfig, EmbeddedQueue};

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
}

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
        let dir = tempfile::tempdir().expect("temp dir");
        let config = EmbeddedConfig::at(dir.path().join("hookbridge.db"));
        let backend = hookbridge_embedded::init(&config)
            .await
            .expect("init embedded backend");
        let db = Db::open(&config.database).expect("open database");
        let bus = EmbeddedBus::new(db.clone(), &config.account, &config.region);
        Self {
            backend,
            db,
            bus,
            config,
            _dir: dir,
        }
    }

    /// The configuration it was opened with.
    pub fn config(&self) -> &EmbeddedConfig {
        &self.config
    }
}

#[async_trait]
impl Harness for EmbeddedHarness {
    fn backend(&self) -> &Backend {
        &self.backend
    }

    fn unique(&self, what: &str) -> String {
        format!(
            "t-{what}-{}",
            hookbridge_core::ids::DeliveryId::generate()
                .to_string()
                .to_lowercase()
        )
    }

    async fn queue(&self, spec: &QueueSpec) -> (Arc<dyn Queue>, Arc<dyn Queue>) {
        hookbridge_embedded::create_queue(&self.db, spec)
            .await
            .expect("create queue");
        (
            Arc::new(EmbeddedQueue::new(self.db.clone(), &spec.name)),
            Arc::new(EmbeddedQueue::new(self.db.clone(), &spec.dlq)),
        )
    }

    async fn rule(&self, rule: &Rule) {
        self.bus.put_rule(rule).await.expect("put rule");
    }

    async fn raw_hook(&self, tenant: &TenantId, id: HookId) -> String {
        hookbridge_embedded::raw_hook(&self.db, tenant, id)
            .await
            .expect("raw hook")
    }
}
