//! Helpers for the end-to-end suite: a whole stack on a fresh backend, an API client that
//! checks every answer against the OpenAPI document, and polling for eventual outcomes.

pub mod browser;
pub mod cost;
pub mod openapi;
pub mod proc;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use hookbridge_core::ports::Queue;
use hookbridge_core::settings::{Defaults, Settings};
use hookbridge_embedded::{Db, EmbeddedQueue};
use hookbridge_local::{BackendChoice, RunningStack, StackOptions, open_backend};
use hookbridge_testkit::{Emulator, IdentityProvider};
use reqwest::StatusCode;
use serde_json::Value;
use subscription_api::{Claims, JwtKey, mint_token};

/// Every scope.
pub const ALL_SCOPES: &str = "hooks:read hooks:write events:publish";

/// Which backend a test runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flavor {
    /// SQLite in a temporary directory.
    Embedded,
    /// The AWS services on the emulator, with resources of the test's own.
    Aws,
}

/// How long a test waits for what crosses the emulator's queues, however slow it gets: a
/// receive the SDK gave up on hides what it took for the queue's visibility timeout (up to
/// 360 s), and under the whole suite on two cores its calls take seconds.
pub const EMULATOR_PATIENCE: Duration = Duration::from_secs(600);

impl Flavor {
    /// How long to wait for something to happen that takes `usual` at most on SQLite:
    /// that, or [`EMULATOR_PATIENCE`] on the emulator. Only for waits that end as soon as
    /// it happens; a wait to see that nothing happens keeps its own length.
    pub fn patience(self, usual: Duration) -> Duration {
        match self {
            Flavor::Embedded => usual,
            Flavor::Aws => EMULATOR_PATIENCE.max(usual),
        }
    }
}

/// Generates the test `$name` twice, as `$name::embedded` and `$name::aws`.
#[macro_export]
macro_rules! on_both_backends {
    ($(#[$meta:meta])* async fn $name:ident($flavor:ident: Flavor) $body:block) => {
        $(#[$meta])*
        mod $name {
            #[allow(unused_imports)]
            use super::*;

            async fn run($flavor: $crate::Flavor) $body

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn embedded() {
                run($crate::Flavor::Embedded).await
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn aws() {
                run($crate::Flavor::Aws).await
            }
        }
    };
}

/// A running stack on a fresh backend, with an API client.
pub struct TestStack {
    flavor: Flavor,
    stack: Option<RunningStack>,
    settings: Settings,
    database: std::path::PathBuf,
    max_bytes: Option<u64>,
    sdk: Option<aws_config::SdkConfig>,
    base: String,
    http: reqwest::Client,
    /// The identity provider whose tokens [`TestStack::token`] mints, when it has one.
    idp: Option<Arc<IdentityProvider>>,
    _dir: tempfile::TempDir,
}

/// The audience OIDC test stacks require.
pub const OIDC_AUDIENCE: &str = "https://api.hookbridge.test";

impl std::fmt::Debug for TestStack {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TestStack").field("base", &self.base).finish_non_exhaustive()
    }
}

/// A response: status and JSON body (or `Null`).
#[derive(Debug, Clone)]
pub struct Answer {
    /// Status.
    pub status: StatusCode,
    /// Headers.
    pub headers: reqwest::header::HeaderMap,
    /// Body as JSON (`Null` if empty or not JSON).
    pub body: Value,
}

impl TestStack {
    /// A stack with the local defaults.
    pub async fn start(flavor: Flavor) -> Self {
        Self::start_with(flavor, &[]).await
    }

    /// A stack that trusts tokens from a fresh identity provider on 127.0.0.1 (issuer and
    /// audience set), whose RS256 tokens [`TestStack::token`] then mints.
    pub async fn start_oidc(flavor: Flavor) -> Self {
        let idp = Arc::new(IdentityProvider::start().await);
        let issuer = idp.issuer().to_owned();
        let mut s = Self::start_with(
            flavor,
            &[("HOOKBRIDGE_JWT_ISSUER", issuer.as_str()), ("HOOKBRIDGE_JWT_AUDIENCE", OIDC_AUDIENCE)],
        )
        .await;
        s.idp = Some(idp);
        s
    }

    /// The identity provider of a stack started with [`TestStack::start_oidc`].
    pub fn idp(&self) -> &IdentityProvider {
        self.idp.as_deref().expect("an OIDC test stack")
    }

    /// A stack with these environment-style settings over the local defaults.
    pub async fn start_with(flavor: Flavor, vars: &[(&str, &str)]) -> Self {
        let mut vars: Vec<(String, String)> = vars.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect();
        if flavor == Flavor::Aws {
            let prefix = format!("e{}", hookbridge_core::ids::DeliveryId::generate().to_string().to_lowercase());
            vars.push(("HOOKBRIDGE_PREFIX".to_owned(), prefix));
        }
        let settings =
            Settings::from_lookup(|k| vars.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone()), &Defaults::local())
                .expect("settings");
        let dir = tempfile::tempdir().expect("temp dir");
        let database = dir.path().join("hookbridge.db");
        let sdk = match flavor {
            Flavor::Embedded => None,
            Flavor::Aws => {
                let sdk = Emulator::shared().sdk_config().await;
                open_backend(&BackendChoice::Aws { sdk: Box::new(sdk.clone()) }, &settings, true)
                    .await
                    .expect("create resources");
                Some(sdk)
            }
        };
        let mut s = Self {
            flavor,
            stack: None,
            settings,
            database,
            max_bytes: None,
            sdk,
            base: String::new(),
            http: reqwest::Client::new(),
            idp: None,
            _dir: dir,
        };
        s.boot().await;
        s
    }

    async fn boot(&mut self) {
        let stack = RunningStack::start(StackOptions {
            settings: self.settings.clone(),
            backend: match &self.sdk {
                None => BackendChoice::Embedded { database: self.database.clone(), max_bytes: self.max_bytes },
                Some(sdk) => BackendChoice::Aws { sdk: Box::new(sdk.clone()) },
            },
            listen: "127.0.0.1:0".parse().expect("addr"),
            delivery_concurrency: hookbridge_local::DEFAULT_DELIVERY_CONCURRENCY,
        })
        .await
        .expect("start stack");
        self.base = format!("http://{}", stack.addr());
        self.stack = Some(stack);
    }

    /// Restarts the (embedded) stack on the same data with the database capped at `max_bytes`.
    pub async fn restart_capped(&mut self, max_bytes: Option<u64>) {
        self.max_bytes = max_bytes;
        self.restart().await;
    }

    /// Restarts the stack on the same data with `quotas` (an operator changing them).
    pub async fn restart_with_quotas(&mut self, quotas: hookbridge_core::settings::Quotas) {
        self.settings.quotas = quotas;
        self.restart().await;
    }

    /// Stops the stack cleanly and starts it again on the same data.
    pub async fn restart(&mut self) {
        self.pause(Duration::ZERO).await;
    }

    /// Stops the stack, waits `pause`, and starts it again on the same data: a worker held
    /// up while messages came due.
    pub async fn pause(&mut self, pause: Duration) {
        if let Some(s) = self.stack.take() {
            s.shutdown().await;
        }
        tokio::time::sleep(pause).await;
        self.boot().await;
    }

    /// `secrets` sealed in the format from before blobs were bound to their hook, by this
    /// stack's key, as an older version stored them.
    pub async fn seal_unbound(
        &self,
        secrets: &hookbridge_core::hook::HookSecrets,
    ) -> hookbridge_core::hook::SealedSecrets {
        match &self.sdk {
            None => {
                let key = hookbridge_embedded::EmbeddedConfig::at(&self.database).key_file;
                hookbridge_embedded::LocalKeySealer::load(&key).expect("key file").seal_unbound(secrets).expect("seal")
            }
            Some(sdk) => {
                let clients = hookbridge_aws::Clients::new(sdk);
                let found = hookbridge_aws::init::find(&clients, &self.settings.topology).await.expect("resources");
                let sealer = hookbridge_aws::KmsSealer::new(clients.kms.clone(), found.kms_key);
                sealer.seal_unbound(secrets).await.expect("seal")
            }
        }
    }

    /// The running stack.
    pub fn stack(&self) -> &RunningStack {
        self.stack.as_ref().expect("running")
    }

    /// The settings it runs with.
    pub fn settings(&self) -> &Settings {
        &self.settings
    }

    /// The embedded backend's database file.
    pub fn database_path(&self) -> &std::path::Path {
        &self.database
    }

    /// Which backend it runs on.
    pub fn flavor(&self) -> Flavor {
        self.flavor
    }

    /// Asserts that delivery `d` of `hook` (as read back) was attempted once: exactly so on
    /// the embedded backend; on the emulator, any further attempts must be copies of that
    /// one, made with it (within two seconds) and ending as it did. Delivery is at least
    /// once, and on the AWS backend one event can reach the worker twice (SQS may hand a
    /// message to two receives; the SDK sends a `PutEvents` again when its answer is late);
    /// a retry instead comes on the schedule, seconds later at the soonest in these tests.
    pub async fn assert_attempted_once(&self, token: &str, hook: &str, d: &Value) {
        let attempts = d["attempts"].as_u64().unwrap_or_default();
        if self.flavor == Flavor::Embedded || attempts == 1 {
            assert_eq!(attempts, 1, "{d}");
            return;
        }
        assert!(attempts > 1, "{d}");
        let id = d["delivery_id"].as_str().unwrap_or_default();
        let detail = self.get(&format!("/v1/hooks/{hook}/deliveries/{id}"), token).await;
        assert_eq!(detail.status, 200, "{}", detail.body);
        let log = detail.body["attempt_log"].as_array().cloned().unwrap_or_default();
        assert_eq!(log.len() as u64, attempts, "every attempt is in the log: {}", detail.body);
        let at = |a: &Value| a["at"].as_str().and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok());
        let first = &log[0];
        let started = at(first).expect("the first attempt's time");
        for copy in &log[1..] {
            let ending = |a: &Value| (a["status_code"].clone(), a["error_class"].clone());
            assert_eq!(ending(copy), ending(first), "a copy ends as the attempt did: {}", detail.body);
            let apart = at(copy).expect("an attempt's time") - started;
            assert!(apart < chrono::Duration::seconds(2), "made with it, not a retry: {}", detail.body);
        }
    }

    /// A queue by name, e.g. a DLQ.
    pub async fn queue(&self, name: &str) -> Arc<dyn Queue> {
        match &self.sdk {
            None => Arc::new(EmbeddedQueue::new(Db::open(&self.database).expect("open db"), name)),
            Some(sdk) => {
                let clients = hookbridge_aws::Clients::new(sdk);
                let url = hookbridge_aws::init::queue_url(&clients, name).await.expect("queue url");
                Arc::new(hookbridge_aws::SqsQueue::new(clients.sqs.clone(), url))
            }
        }
    }

    /// A queue receiving every event on the bus whose source is `source` (e.g. the
    /// platform's own operational events), as a customer's EventBridge rule would.
    pub async fn watch_bus(&self, source: &str) -> Arc<dyn Queue> {
        let name = format!("w{}", hookbridge_core::ids::DeliveryId::generate().to_string().to_lowercase());
        let spec = hookbridge_core::topology::QueueSpec {
            dlq: format!("{name}-dlq"),
            name: name.clone(),
            visibility_timeout: Duration::from_secs(30),
            max_receive_count: 5,
        };
        let rule = hookbridge_core::ports::Rule {
            name: format!("{name}-rule"),
            pattern: hookbridge_core::ports::RulePattern {
                source: hookbridge_core::ports::SourceMatch::Exactly(source.to_owned()),
                detail_types: Vec::new(),
            },
            target_queue: name.clone(),
        };
        match &self.sdk {
            None => {
                let db = Db::open(&self.database).expect("open db");
                hookbridge_embedded::create_queue(&db, &spec).await.expect("create queue");
                let bus = hookbridge_embedded::EmbeddedBus::new(db, &self.settings.account, &self.settings.region);
                bus.put_rule(&rule).await.expect("put rule");
            }
            Some(sdk) => {
                let clients = hookbridge_aws::Clients::new(sdk);
                let url = hookbridge_aws::init::create_queue(&clients, &spec).await.expect("create queue");
                hookbridge_aws::init::put_rule(&clients, &self.settings.topology.bus, &rule, &url, None)
                    .await
                    .expect("put rule");
            }
        }
        self.queue(&name).await
    }

    /// Waits for bus events on a watch queue until one of each `types` arrived (or timeout);
    /// returns every envelope seen, parsed.
    pub async fn bus_events(&self, queue: &dyn Queue, types: &[&str], timeout: Duration) -> Vec<Value> {
        let mut seen: Vec<Value> = Vec::new();
        let deadline = tokio::time::Instant::now() + timeout;
        while tokio::time::Instant::now() < deadline
            && !types.iter().all(|t| seen.iter().any(|e| e["detail-type"] == *t))
        {
            for m in queue.receive(10, Duration::from_millis(500)).await.expect("receive") {
                seen.push(serde_json::from_str(&m.body).unwrap_or(Value::Null));
                queue.ack(&[m.receipt]).await.expect("ack");
            }
        }
        seen
    }

    /// A token for `tenant` with `scope` (space separated): HS256 with the stack's key, or
    /// RS256 from its identity provider when it has one.
    pub fn token(&self, tenant: &str, scope: &str) -> String {
        if let Some(idp) = &self.idp {
            let claims = serde_json::json!({
                "sub": format!("{tenant}-tester"), "tenant": tenant, "scope": scope, "aud": OIDC_AUDIENCE,
                "exp": chrono::Utc::now().timestamp() + 3600,
            });
            return idp.sign("rsa-1", &claims);
        }
        let claims = Claims {
            sub: format!("{tenant}-tester"),
            tenant: tenant.to_owned(),
            scope: scope.to_owned(),
            exp: chrono::Utc::now().timestamp() as u64 + 3600,
        };
        let key = self.settings.tokens.hs256.as_ref().expect("the test stack signs HS256 tokens");
        mint_token(&JwtKey::new(key.expose()), &claims).expect("token")
    }

    /// Calls the API.
    pub async fn call(&self, method: &str, path: &str, token: Option<&str>, body: Option<&Value>) -> Answer {
        let m = reqwest::Method::from_bytes(method.as_bytes()).expect("method");
        let mut req = self.http.request(m, format!("{}{path}", self.base));
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        if let Some(b) = body {
            req = req.json(b);
        }
        checked(req, method, path).await
    }

    /// `POST` a raw body (exact bytes) as JSON.
    pub async fn post_raw(&self, path: &str, token: &str, body: &str) -> Answer {
        let req = self
            .http
            .post(format!("{}{path}", self.base))
            .bearer_auth(token)
            .header("content-type", "application/json")
            .body(body.to_owned());
        checked(req, "POST", path).await
    }

    /// `PUT` JSON with a token.
    pub async fn put(&self, path: &str, token: &str, body: &Value) -> Answer {
        self.call("PUT", path, Some(token), Some(body)).await
    }

    /// `DELETE` with a token.
    pub async fn delete(&self, path: &str, token: &str) -> Answer {
        self.call("DELETE", path, Some(token), None).await
    }

    /// A raw request: any method, headers and body bytes.
    pub async fn raw(&self, method: &str, path: &str, headers: &[(&str, &str)], body: Vec<u8>) -> Answer {
        let m = reqwest::Method::from_bytes(method.as_bytes()).expect("method");
        let mut req = self.http.request(m, format!("{}{path}", self.base)).body(body);
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        checked(req, method, path).await
    }

    /// The API's base URL.
    pub fn base_url(&self) -> &str {
        &self.base
    }

    /// `GET` with a token.
    pub async fn get(&self, path: &str, token: &str) -> Answer {
        self.call("GET", path, Some(token), None).await
    }

    /// `POST` JSON with a token.
    pub async fn post(&self, path: &str, token: &str, body: &Value) -> Answer {
        self.call("POST", path, Some(token), Some(body)).await
    }

    /// Creates a hook, asserting `201`; returns the hook as created (with its secret).
    pub async fn create_hook(&self, token: &str, hook: &Value) -> Value {
        let a = self.post("/v1/hooks", token, hook).await;
        assert_eq!(a.status, StatusCode::CREATED, "create hook: {}", a.body);
        a.body
    }

    /// Publishes events, asserting `202`; returns their ids.
    pub async fn publish(&self, token: &str, events: &Value) -> Vec<String> {
        let a = self.post("/v1/events", token, events).await;
        assert_eq!(a.status, StatusCode::ACCEPTED, "publish: {}", a.body);
        a.body["events"].as_array().expect("events").iter().map(|e| e["id"].as_str().expect("id").to_owned()).collect()
    }

    /// The hook's deliveries of the last `hours`.
    pub async fn deliveries(&self, token: &str, hook_id: &str, hours: u32) -> Vec<Value> {
        let a = self.get(&format!("/v1/hooks/{hook_id}/events?hours={hours}"), token).await;
        assert_eq!(a.status, StatusCode::OK, "read events: {}", a.body);
        a.body["deliveries"].as_array().cloned().unwrap_or_default()
    }

    /// Stops the stack.
    pub async fn shutdown(mut self) {
        if let Some(s) = self.stack.take() {
            s.shutdown().await;
        }
    }
}

/// Sends a request and asserts the answer conforms to the OpenAPI document.
async fn checked(req: reqwest::RequestBuilder, method: &str, path: &str) -> Answer {
    let resp = req.send().await.expect("API call");
    let status = resp.status();
    let headers = resp.headers().clone();
    let text = resp.text().await.expect("body");
    let content_type = headers.get("content-type").and_then(|v| v.to_str().ok());
    if let Err(why) = openapi::Spec::get().check(method, path, status.as_u16(), content_type, &text) {
        panic!("the answer does not conform to openapi.json: {why}");
    }
    Answer { status, headers, body: serde_json::from_str(&text).unwrap_or(Value::Null) }
}

/// The `detail.n` of every event that arrived, each once however often it was sent:
/// delivery is at least once, so a test counts events, not requests.
pub fn numbers(got: &[hookbridge_testkit::Received]) -> std::collections::BTreeSet<u64> {
    got.iter().filter_map(|g| g.json()["detail"]["n"].as_u64()).collect()
}

/// Polls `check` until it returns `Some` or `timeout` passes.
pub async fn eventually<T, F, Fut>(timeout: Duration, mut check: F) -> Option<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if let Some(v) = check().await {
            return Some(v);
        }
        if tokio::time::Instant::now() >= deadline {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
