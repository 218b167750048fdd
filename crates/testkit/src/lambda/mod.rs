//! The four compiled function binaries run as Lambda runs them, on this machine, against
//! the emulator: each behind a Runtime API ([`runtime`]), the queue-triggered ones fed by
//! SQS event source mappings ([`sqs`]), the API behind an HTTP API front ([`gateway`]),
//! EventBridge's rules to SQS given by the emulator. Only the bootstraps' own code runs:
//! their `main.rs`, their configuration from the environment, the SQS batch adapter, the
//! EMF output.

pub mod calls;
pub mod gateway;
pub mod runtime;
pub mod sqs;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use hookbridge_aws::Clients;
use hookbridge_core::topology::Topology;

use crate::Emulator;
use runtime::Function;

/// The function binaries, by name.
pub const FUNCTIONS: [&str; 4] = ["subscription-api", "ingest", "delivery-worker", "verifier"];

/// How the platform is brought up.
#[derive(Debug, Clone)]
pub struct LambdaOptions {
    /// Where the compiled function binaries are (`target/debug` after a build).
    pub bin_dir: PathBuf,
    /// Where the HTTP API front listens.
    pub listen: SocketAddr,
    /// The resource prefix (the stack's name).
    pub prefix: String,
    /// Settings for every function over the defaults here (e.g. `HOOKBRIDGE_RETRY_SCHEDULE`).
    pub env: Vec<(String, String)>,
    /// Whether the API's token key is put in Secrets Manager (the API is told its name
    /// either way).
    pub token_key_stored: bool,
}

impl LambdaOptions {
    /// Binaries in the workspace's `target/debug`, the front on a free port, a fresh prefix.
    pub fn local() -> Self {
        Self {
            bin_dir: workspace_target().join("debug"),
            listen: "127.0.0.1:0".parse().unwrap_or_else(|_| SocketAddr::from(([127, 0, 0, 1], 0))),
            prefix: format!("l{}", hookbridge_core::ids::DeliveryId::generate().to_string().to_lowercase()),
            env: Vec::new(),
            token_key_stored: true,
        }
    }
}

/// `CARGO_TARGET_DIR`, or the workspace's `target`.
pub fn workspace_target() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../target"))
}

/// Why the platform could not be brought up.
#[derive(Debug, thiserror::Error)]
pub enum LambdaError {
    /// A function binary is missing.
    #[error("{0} not found: build the functions first (`cargo build --bins`)")]
    Missing(PathBuf),
    /// The emulator's resources could not be made.
    #[error("cannot create the resources on the emulator: {0}")]
    Resources(String),
    /// A process or listener could not start.
    #[error("cannot start: {0}")]
    Io(#[from] std::io::Error),
}

/// The platform, running.
pub struct LambdaStack {
    addr: SocketAddr,
    functions: Vec<Arc<Function>>,
    calls: Vec<(&'static str, calls::Calls)>,
    stop: tokio::sync::watch::Sender<bool>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
    token_key: String,
    prefix: String,
    clients: Clients,
}

impl std::fmt::Debug for LambdaStack {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LambdaStack").field("addr", &self.addr).field("prefix", &self.prefix).finish_non_exhaustive()
    }
}

impl Drop for LambdaStack {
    fn drop(&mut self) {
        let _ = self.stop.send(true);
        for t in &self.tasks {
            t.abort();
        }
    }
}

fn random_key() -> String {
    let mut bytes = [0u8; 36];
    for chunk in bytes.chunks_mut(16) {
        let id = hookbridge_core::ids::DeliveryId::generate().to_string();
        for (b, c) in chunk.iter_mut().zip(id.bytes().rev()) {
            *b = c;
        }
    }
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

impl LambdaStack {
    /// Creates the resources on the shared emulator (as `hookbridge init --backend aws`
    /// does), puts the API's token key in Secrets Manager, and starts the four functions,
    /// their event sources and the HTTP front.
    pub async fn start(opts: LambdaOptions) -> Result<Self, LambdaError> {
        for f in FUNCTIONS {
            let bin = opts.bin_dir.join(f);
            if !bin.exists() {
                return Err(LambdaError::Missing(bin));
            }
        }
        let emulator = Emulator::shared();
        let clients = Clients::new(&emulator.sdk_config().await);
        let topology = Topology::named(&opts.prefix);
        let r = hookbridge_aws::init::create(&clients, &topology)
            .await
            .map_err(|e| LambdaError::Resources(e.to_string()))?;
        let token_key = random_key();
        let secret_name = format!("{}/jwt-secret", opts.prefix);
        if opts.token_key_stored {
            clients
                .secretsmanager
                .create_secret()
                .name(&secret_name)
                .secret_string(&token_key)
                .send()
                .await
                .map_err(|e| LambdaError::Resources(e.to_string()))?;
        }

        // What the template's Globals and each function's own Environment set.
        let mut env: Vec<(String, String)> = emulator.env().into_iter().map(|(k, v)| (k.to_owned(), v)).collect();
        for (k, v) in [
            ("RUST_LOG", "info".to_owned()),
            ("HOOKBRIDGE_LOG_FORMAT", "json".to_owned()),
            ("HOOKBRIDGE_PREFIX", opts.prefix.clone()),
            ("HOOKBRIDGE_ACCOUNT", "123456789012".to_owned()),
            ("HOOKBRIDGE_TABLE", r.table.clone()),
            ("HOOKBRIDGE_BUS", r.bus.clone()),
            ("HOOKBRIDGE_INGEST_QUEUE_URL", r.ingest_queue_url.clone()),
            ("HOOKBRIDGE_DELIVERY_QUEUE_URL", r.delivery_queue_url.clone()),
            ("HOOKBRIDGE_SLOW_QUEUE_URL", r.slow_queue_url.clone()),
            ("HOOKBRIDGE_VERIFY_QUEUE_URL", r.verify_queue_url.clone()),
            ("HOOKBRIDGE_KMS_KEY", r.kms_key.clone()),
            // Receivers run on this machine.
            ("HOOKBRIDGE_ALLOWED_NETWORKS", "127.0.0.0/8,::1/128".to_owned()),
            ("HOOKBRIDGE_ALLOW_HTTP", "true".to_owned()),
        ] {
            env.push((k.to_owned(), v));
        }
        env.extend(opts.env.iter().cloned());
        let mut api_env = env.clone();
        api_env.push(("HOOKBRIDGE_JWT_SECRET_NAME".to_owned(), secret_name));

        // Each function reaches the emulator through its own pass-through, which notes the
        // IAM actions it needed.
        let mut tasks = Vec::new();
        let mut calls = Vec::new();
        let through_pass = |name: &'static str, mut env: Vec<(String, String)>| {
            let endpoint = emulator.endpoint().to_owned();
            async move {
                let (addr, seen, task) = calls::start(&endpoint).await?;
                for (k, v) in &mut env {
                    if k == "AWS_ENDPOINT_URL" {
                        *v = format!("http://{addr}");
                    }
                }
                Ok::<_, std::io::Error>((env, (name, seen), task))
            }
        };
        let bin = |name: &str| -> PathBuf { opts.bin_dir.join(name) };
        let mut functions = Vec::new();
        for (name, env, instances, timeout) in [
            ("subscription-api", api_env, 2, 29),
            ("ingest", env.clone(), 1, 30),
            ("delivery-worker", env.clone(), 2, 30),
            ("verifier", env, 1, 60),
        ] {
            let (env, seen, task) = through_pass(name, env).await?;
            calls.push(seen);
            tasks.push(task);
            functions.push(Arc::new(
                Function::start(name, &bin(name), &env, instances, Duration::from_secs(timeout)).await?,
            ));
        }
        let [api, ingest, worker, verifier] = [0, 1, 2, 3].map(|i| functions[i].clone());

        let (stop, stopped) = tokio::sync::watch::channel(false);
        let arn = |url: &str| {
            let name = url.rsplit('/').next().unwrap_or_default();
            format!("arn:aws:sqs:us-east-1:123456789012:{name}")
        };
        for (url, f) in [
            (&r.ingest_queue_url, &ingest),
            (&r.delivery_queue_url, &worker),
            (&r.slow_queue_url, &worker),
            (&r.verify_queue_url, &verifier),
        ] {
            tasks.push(tokio::spawn(sqs::poll(clients.sqs.clone(), url.clone(), arn(url), f.clone(), stopped.clone())));
        }
        let listener = tokio::net::TcpListener::bind(opts.listen).await?;
        let addr = listener.local_addr()?;
        let app = axum::Router::new().fallback(gateway::handle).with_state(api.clone());
        tasks.push(tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        }));
        Ok(Self { addr, functions, calls, stop, tasks, token_key, prefix: opts.prefix, clients })
    }

    /// Where the HTTP API front listens.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The HS256 key the API reads from Secrets Manager, for minting tokens.
    pub fn token_key(&self) -> &str {
        &self.token_key
    }

    /// The resource prefix.
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// The SDK clients on the emulator.
    pub fn clients(&self) -> &Clients {
        &self.clients
    }

    /// A function by name.
    pub fn function(&self, name: &str) -> Option<&Arc<Function>> {
        self.functions.iter().find(|f| f.name() == name)
    }

    /// The IAM actions a function's requests to AWS needed so far (`dynamodb:GetItem`).
    pub fn aws_actions(&self, name: &str) -> Option<std::collections::BTreeSet<String>> {
        self.calls.iter().find(|(n, _)| *n == name).map(|(_, c)| c.actions())
    }

    /// The binary a function runs, in `bin_dir`.
    pub fn binary(bin_dir: &Path, name: &str) -> PathBuf {
        bin_dir.join(name)
    }
}
