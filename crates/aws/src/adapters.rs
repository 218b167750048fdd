//! The AWS ports, made one at a time.
//!
//! A port is held as a trait object, and a trait object keeps every method of its adapter
//! in the binary: the linker cannot tell which of a vtable's entries are ever called. So a
//! function that made the whole [`Backend`] carried the code of every store (idempotency,
//! the portal, replays, event types, the rate limiter) and an SDK client for every
//! service, whether it used them or not. A function's `main` makes only the ports it
//! uses; the API, which uses nearly all, and the tests make the whole backend.

use std::sync::{Arc, OnceLock};

use hookbridge_core::ports::{
    Backend, Bus, DeliveryStore, EventStore, EventTypeStore, HookAccess, HookStore, IdempotencyStore, Lanes,
    PortalStore, Queue, RateLimiter, ReplayStore, Sealer,
};

use crate::dynamo::Table;
use crate::init::Resources;
use crate::{Clients, EventBridgeBus, KmsSealer, SqsQueue};

/// Makes the AWS backend's ports over `resources`, each SDK client once and only when a
/// port needs it.
#[derive(Debug)]
pub struct Adapters {
    /// What clients not made yet are made from; `None` when every client was given.
    sdk: Option<aws_config::SdkConfig>,
    resources: Resources,
    dynamodb: OnceLock<aws_sdk_dynamodb::Client>,
    sqs: OnceLock<aws_sdk_sqs::Client>,
    eventbridge: OnceLock<aws_sdk_eventbridge::Client>,
    kms: OnceLock<aws_sdk_kms::Client>,
}

/// The client in `cell`, made from `sdk` the first time.
fn client<C: Clone>(
    cell: &OnceLock<C>,
    sdk: Option<&aws_config::SdkConfig>,
    make: fn(&aws_config::SdkConfig) -> C,
) -> C {
    // A client slot `of_clients` left empty is a bug here, not a configuration to guess.
    cell.get_or_init(|| make(sdk.expect("Adapters::of_clients fills every client slot"))).clone()
}

impl Adapters {
    /// Ports made from the environment's standard AWS configuration (region, credentials,
    /// `AWS_ENDPOINT_URL`), every call bounded ([`crate::call_timeouts`]).
    pub async fn from_env(resources: Resources) -> Self {
        Self::new(crate::sdk_config_from_env().await, resources)
    }

    /// Ports made from an SDK configuration.
    pub fn new(sdk: aws_config::SdkConfig, resources: Resources) -> Self {
        Self {
            sdk: Some(sdk),
            resources,
            dynamodb: OnceLock::new(),
            sqs: OnceLock::new(),
            eventbridge: OnceLock::new(),
            kms: OnceLock::new(),
        }
    }

    /// Ports over clients already made.
    pub fn of_clients(clients: &Clients, resources: &Resources) -> Self {
        Self {
            sdk: None,
            resources: resources.clone(),
            dynamodb: clients.dynamodb.clone().into(),
            sqs: clients.sqs.clone().into(),
            eventbridge: clients.eventbridge.clone().into(),
            kms: clients.kms.clone().into(),
        }
    }

    fn table(&self) -> Table {
        let dynamodb = client(&self.dynamodb, self.sdk.as_ref(), aws_sdk_dynamodb::Client::new);
        Table::new(dynamodb, self.resources.table.clone())
    }

    fn queue(&self, url: &str) -> Arc<dyn Queue> {
        let sqs = client(&self.sqs, self.sdk.as_ref(), aws_sdk_sqs::Client::new);
        Arc::new(SqsQueue::new(sqs, url.to_owned()))
    }

    fn hook_store(&self) -> Arc<crate::hooks::DynamoHookStore> {
        Arc::new(crate::hooks::DynamoHookStore::new(self.table()))
    }

    /// Hooks.
    pub fn hooks(&self) -> Arc<dyn HookStore> {
        self.hook_store()
    }

    /// Hooks, as the worker and the verifier use them: made as such, not from a whole
    /// [`HookStore`], so that the rest of the store's code is not in their binaries.
    pub fn hook_access(&self) -> Arc<dyn HookAccess> {
        self.hook_store()
    }

    /// Deliveries.
    pub fn deliveries(&self) -> Arc<dyn DeliveryStore> {
        Arc::new(crate::deliveries::DynamoDeliveryStore::new(self.table()))
    }

    /// Envelopes kept for replay.
    pub fn events(&self) -> Arc<dyn EventStore> {
        Arc::new(crate::events::DynamoEventStore::new(self.table()))
    }

    /// Replay jobs.
    pub fn replays(&self) -> Arc<dyn ReplayStore> {
        Arc::new(crate::replays::DynamoReplayStore::new(self.table()))
    }

    /// Hooks' rate limits and tenants' quotas.
    pub fn limiter(&self) -> Arc<dyn RateLimiter> {
        Arc::new(crate::limiter::DynamoRateLimiter::new(self.table()))
    }

    /// The bus.
    pub fn bus(&self) -> Arc<dyn Bus> {
        let eventbridge = client(&self.eventbridge, self.sdk.as_ref(), aws_sdk_eventbridge::Client::new);
        Arc::new(EventBridgeBus::new(eventbridge, self.resources.bus.clone()))
    }

    /// The sealer of hooks' secrets.
    pub fn sealer(&self) -> Arc<dyn Sealer> {
        let kms = client(&self.kms, self.sdk.as_ref(), aws_sdk_kms::Client::new);
        Arc::new(KmsSealer::new(kms, self.resources.kms_key.clone()))
    }

    /// The ingest queue.
    pub fn ingest_queue(&self) -> Arc<dyn Queue> {
        self.queue(&self.resources.ingest_queue_url)
    }

    /// The verify queue.
    pub fn verify_queue(&self) -> Arc<dyn Queue> {
        self.queue(&self.resources.verify_queue_url)
    }

    /// The two delivery lanes.
    pub fn lanes(&self) -> Lanes {
        Lanes { fast: self.queue(&self.resources.delivery_queue_url), slow: self.queue(&self.resources.slow_queue_url) }
    }

    /// The idempotency store, claiming in `place`: [`crate::ClaimPlace::this_release`] in
    /// every function; the other place only in tests of the move (decision 0027).
    pub fn idempotency_claiming_in(&self, place: crate::ClaimPlace) -> Arc<dyn IdempotencyStore> {
        Arc::new(crate::idempotency::DynamoIdempotencyStore::claiming_in(self.table(), place))
    }

    /// Every port.
    pub fn backend(&self) -> Backend {
        let table = self.table();
        let idempotency = self.idempotency_claiming_in(crate::ClaimPlace::this_release());
        let event_types: Arc<dyn EventTypeStore> =
            Arc::new(crate::event_types::DynamoEventTypeStore::new(table.clone()));
        let portal: Arc<dyn PortalStore> = Arc::new(crate::portal::DynamoPortalStore::new(table));
        let lanes = self.lanes();
        Backend {
            hooks: self.hooks(),
            deliveries: self.deliveries(),
            events: self.events(),
            idempotency,
            event_types,
            portal,
            replays: self.replays(),
            limiter: self.limiter(),
            bus: self.bus(),
            ingest_queue: self.ingest_queue(),
            delivery_queue: lanes.fast,
            slow_queue: lanes.slow,
            verify_queue: self.verify_queue(),
            sealer: self.sealer(),
            // DynamoDB and SQS share no transaction: the worker writes in turn.
            settlement: None,
        }
    }
}
