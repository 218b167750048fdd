//! The whole platform in one process.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use delivery_worker::{Worker, WorkerPorts, WorkerSettings};
use hookbridge_core::hook::Lane;
use hookbridge_core::ports::Backend;
use hookbridge_core::settings::Settings;
use hookbridge_embedded::EmbeddedConfig;
use hookbridge_outbound::{Outbound, OutboundSettings};
use ingest::{Ingest, IngestPorts, IngestSettings};
use subscription_api::{Api, ApiPorts, ApiSettings, Tokens};
use tokio::sync::watch;
use tokio::task::JoinSet;
use verifier::{Verifier, VerifierPorts};

use crate::api_server::{self, ServerLimits};
use crate::consumer::{drive, pump};
use crate::database_lock::DatabaseLock;
use crate::ingest_at_publish::{IngestAtPublish, ROUTING_AT_ONCE};

/// How long a shutdown waits for the API's open requests. An API request is answered in
/// milliseconds, or within seconds when it reads an identity provider's documents or
/// routes an event to thousands of hooks.
const API_DRAIN: std::time::Duration = std::time::Duration::from_secs(10);

/// Which backend to run on.
#[derive(Debug, Clone)]
pub enum BackendChoice {
    /// SQLite at this path (the key file beside it).
    Embedded {
        /// The database file.
        database: PathBuf,
        /// The most the database may grow to, in bytes.
        max_bytes: Option<u64>,
    },
    /// DynamoDB, SQS, EventBridge and KMS, in an account or the emulator; the resources
    /// must exist (`hookbridge init --backend aws`).
    Aws {
        /// The SDK configuration (region, credentials, endpoint).
        sdk: Box<aws_config::SdkConfig>,
    },
}

/// How to run the stack.
#[derive(Debug, Clone)]
pub struct StackOptions {
    /// The deployment settings.
    pub settings: Settings,
    /// The backend.
    pub backend: BackendChoice,
    /// Where the API listens (port 0 picks a free one).
    pub listen: SocketAddr,
    /// Deliveries in progress at once on the fast lane (and a quarter as many on the slow
    /// lane).
    pub delivery_concurrency: usize,
}

/// The default of [`StackOptions::delivery_concurrency`]: outbound requests are cheap to
/// keep waiting, and a dying hook may hold only a few of them for a moment.
pub const DEFAULT_DELIVERY_CONCURRENCY: usize = 256;

/// Why the stack could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// Another `hookbridge serve` holds the database.
    #[error(transparent)]
    Lock(#[from] crate::database_lock::LockError),
    /// The backend could not be opened or initialised.
    #[error("cannot open the embedded backend: {0}")]
    Embedded(#[from] hookbridge_embedded::InitError),
    /// The AWS resources could not be found or created.
    #[error("cannot use the AWS resources ({0}); run `hookbridge init --backend aws` first")]
    Aws(#[source] hookbridge_core::Error),
    /// The HTTP client could not be built.
    #[error(transparent)]
    Outbound(#[from] hookbridge_outbound::BuildError),
    /// Tokens could not be checked as configured.
    #[error(transparent)]
    Tokens(#[from] subscription_api::TokensError),
    /// A Secrets Manager key without AWS.
    #[error(
        "HOOKBRIDGE_JWT_SECRET_NAME names a Secrets Manager secret, which only the AWS backend reads; set HOOKBRIDGE_JWT_SECRET instead"
    )]
    SecretNameOffAws,
    /// Stored data could not be brought up to the current formats.
    #[error("cannot migrate the stored hooks: {0}")]
    Migrate(#[source] hookbridge_core::Error),
    /// The API address could not be bound.
    #[error("cannot listen on {addr}: {source}")]
    Listen {
        /// The address.
        addr: SocketAddr,
        /// Why.
        #[source]
        source: std::io::Error,
    },
}

/// A running stack. [`RunningStack::shutdown`] stops it cleanly.
pub struct RunningStack {
    addr: SocketAddr,
    backend: Backend,
    stop: watch::Sender<bool>,
    tasks: JoinSet<()>,
    /// Where the API's events are routed as they are published, on the embedded backend.
    routing: Option<Arc<IngestAtPublish>>,
    /// The embedded database, its log folded into it once the stack has stopped.
    db: Option<hookbridge_embedded::Db>,
    /// The embedded database's hold, let go once the stack has stopped.
    _database: Option<DatabaseLock>,
}

impl std::fmt::Debug for RunningStack {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RunningStack").field("addr", &self.addr).finish_non_exhaustive()
    }
}

/// Opens the backend: the embedded one is created if missing (it is this machine's own);
/// AWS resources must exist, or are created first when `create` is set.
pub async fn open_backend(choice: &BackendChoice, settings: &Settings, create: bool) -> Result<Backend, StartError> {
    Ok(open(choice, settings, create).await?.0)
}

/// [`open_backend`], and for the embedded backend the database it is on, so that the
/// retention sweep writes through the same one writer as everything else, and a command's
/// fold of the log meets its own background checkpoint, not another database's.
pub(crate) async fn open(
    choice: &BackendChoice,
    settings: &Settings,
    create: bool,
) -> Result<(Backend, Option<hookbridge_embedded::Db>), StartError> {
    match choice {
        BackendChoice::Embedded { database, max_bytes } => {
            let mut cfg = EmbeddedConfig::at(database);
            cfg.max_bytes = *max_bytes;
            cfg.topology = settings.topology.clone();
            cfg.account = settings.account.clone();
            cfg.region = settings.region.clone();
            let db = hookbridge_embedded::Db::open_capped(database, *max_bytes)?;
            Ok((hookbridge_embedded::init_on(db.clone(), &cfg).await?, Some(db)))
        }
        BackendChoice::Aws { sdk } => {
            let clients = hookbridge_aws::Clients::new(sdk);
            let resources = if create {
                hookbridge_aws::init::create(&clients, &settings.topology).await
            } else {
                let found = hookbridge_aws::init::find(&clients, &settings.topology).await;
                found.map(|r| hookbridge_aws::init::adopted(r, |var| std::env::var(var).ok()))
            }
            .map_err(StartError::Aws)?;
            Ok((hookbridge_aws::backend(&clients, &resources), None))
        }
    }
}

impl RunningStack {
    /// Starts the API and the three consumers.
    pub async fn start(opts: StackOptions) -> Result<Self, StartError> {
        let s = &opts.settings;
        let held = match &opts.backend {
            BackendChoice::Embedded { database, .. } => Some(DatabaseLock::take(database)?),
            BackendChoice::Aws { .. } => None,
        };
        let (backend, database) = open(&opts.backend, s, false).await?;
        // The embedded backend is this machine's own: nobody else runs `hookbridge migrate` for it.
        if let BackendChoice::Embedded { .. } = &opts.backend {
            crate::migrate::reseal_secrets(&backend).await.map_err(StartError::Migrate)?;
        }
        let outbound = Outbound::new(OutboundSettings::from_settings(s))?;
        let key = match (&opts.backend, &s.tokens.hs256_secret_name) {
            (BackendChoice::Aws { sdk }, Some(name)) => {
                Some(Arc::new(hookbridge_aws::SecretsManagerKey::new(aws_sdk_secretsmanager::Client::new(sdk), name))
                    as Arc<dyn hookbridge_core::ports::KeySource>)
            }
            (BackendChoice::Embedded { .. }, Some(_)) => return Err(StartError::SecretNameOffAws),
            (_, None) => None,
        };
        let tokens = Tokens::from_settings(&s.tokens, key, &outbound)?;
        let ingest = Arc::new(Ingest { ports: IngestPorts::of(&backend), settings: IngestSettings::from_settings(s) });
        let mut api_ports = ApiPorts::of(&backend);
        // The API's events routed as it publishes them (decision 0033); on the AWS backend
        // the runner keeps to what the deployed functions do, which is to queue them.
        let routing = match &opts.backend {
            BackendChoice::Embedded { .. } => {
                let at_publish =
                    IngestAtPublish::new(backend.ingest_queue.clone(), Arc::clone(&ingest), ROUTING_AT_ONCE);
                Some(Arc::new(at_publish))
            }
            BackendChoice::Aws { .. } => None,
        };
        if let Some(r) = &routing {
            api_ports.ingest = r.clone();
        }
        let api = Api::new(api_ports, ApiSettings::from_settings(s, tokens));
        let listener = tokio::net::TcpListener::bind(opts.listen)
            .await
            .map_err(|source| StartError::Listen { addr: opts.listen, source })?;
        let addr = listener.local_addr().map_err(|source| StartError::Listen { addr: opts.listen, source })?;

        let (stop, stopped) = watch::channel(false);
        let mut tasks = JoinSet::new();

        // A graceful shutdown waits for the open requests, but not for ever: one whose client
        // went away mid-request (its host gone) would hold the process (`API_DRAIN`).
        let app = subscription_api::router(api);
        tasks.spawn(api_server::serve(listener, app, ServerLimits::default(), stopped.clone(), API_DRAIN));

        let (fast, slow) = (opts.delivery_concurrency.max(1), opts.delivery_concurrency.max(1).div_ceil(4));
        let places = |n: usize| Some(u32::try_from(n).unwrap_or(u32::MAX));
        let worker_settings = WorkerSettings {
            fast_lane_places: places(fast),
            slow_lane_places: places(slow),
            ..WorkerSettings::from_settings(s)
        };
        let worker = Arc::new(Worker::new(WorkerPorts::of(&backend), outbound.clone(), worker_settings));
        let verifier = Arc::new(Verifier {
            ports: VerifierPorts::of(&backend),
            outbound,
            account: s.account.clone(),
            region: s.region.clone(),
        });

        for _ in 0..2 {
            let (q, st, deps) = (backend.ingest_queue.clone(), stopped.clone(), ingest.clone());
            tasks.spawn(drive(q, st, move |batch| {
                let deps = deps.clone();
                async move { ingest::handle(&deps, &batch).await }
            }));
        }
        tasks.spawn(pump(backend.delivery_queue.clone(), stopped.clone(), worker.clone(), Lane::Fast, fast));
        tasks.spawn(pump(backend.slow_queue.clone(), stopped.clone(), worker, Lane::Slow, slow));
        {
            let (q, st, deps) = (backend.verify_queue.clone(), stopped.clone(), verifier.clone());
            tasks.spawn(drive(q, st, move |batch| {
                let deps = deps.clone();
                async move { verifier::handle(&deps, &batch).await }
            }));
        }
        // On AWS, DynamoDB's TTL and SQS's retention delete what expired; here, a sweeper does.
        if let Some(db) = database.clone() {
            tasks.spawn(hookbridge_embedded::retention::run(db, stopped.clone()));
        }
        tracing::info!(%addr, "hookbridge is serving");
        Ok(Self { addr, backend, stop, tasks, routing, db: database, _database: held })
    }

    /// Where the API listens.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The backend's ports (tests inspect queues and stores through them).
    pub fn backend(&self) -> &Backend {
        &self.backend
    }

    /// Stops receiving, lets batches in progress finish (what is not finished stays
    /// queued), and stops the API once its requests are answered.
    pub async fn shutdown(mut self) {
        let _ = self.stop.send(true);
        while self.tasks.join_next().await.is_some() {}
        // A request whose client went away is not one the API's shutdown waits for, and an
        // event it was routing is on no queue yet.
        if let Some(r) = &self.routing
            && tokio::time::timeout(API_DRAIN, r.finished()).await.is_err()
        {
            tracing::warn!(after = ?API_DRAIN, "events still being routed at shutdown were left part way");
        }
        if let Some(db) = &self.db {
            match db.fold_log().await {
                Ok(true) => {}
                Ok(false) => {
                    tracing::warn!("part of the database's log is still in its -wal file; keep it with the database")
                }
                Err(e) => {
                    tracing::warn!(error = %e, "the database's log could not be folded into it; keep its -wal file with it")
                }
            }
        }
    }
}
