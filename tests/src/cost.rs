//! The AWS request count of deliveries, by stage, on the AWS backend with an SDK
//! interceptor: shared by the e2e test that pins the numbers and the benchmark that
//! reports them. Lambda's SQS event source mappings receive and delete messages themselves,
//! so those calls are made here through clients that are not counted.

use std::collections::BTreeMap;
use std::time::Duration;

use axum::body::Body;
use delivery_worker::{BatchContext, Worker, WorkerPorts, WorkerSettings};
use hookbridge_aws::RequestCounter;
use hookbridge_core::hook::{Lane, NetworkPolicy};
use hookbridge_core::ports::{Queue, ReceivedMessage};
use hookbridge_core::retry::RetrySchedule;
use hookbridge_outbound::{Outbound, OutboundSettings};
use hookbridge_testkit::contract::make_hook;
use hookbridge_testkit::{AwsHarness, Harness, Receiver, Reply};
use ingest::{Ingest, IngestPorts, IngestSettings};
use subscription_api::{Api, ApiSettings, Claims, JwtKey, mint_token, router};
use tower::ServiceExt;

/// Requests by `Service.Operation`.
pub type Counts = BTreeMap<String, u64>;

/// Counts from pairs, for assertions.
pub fn counts_of(pairs: &[(&str, u64)]) -> Counts {
    pairs.iter().map(|(k, v)| ((*k).to_owned(), *v)).collect()
}

async fn drain(q: &dyn Queue, n: usize, wait_secs: u64) -> Vec<ReceivedMessage> {
    let mut got = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(wait_secs);
    while got.len() < n && tokio::time::Instant::now() < deadline {
        got.extend(q.receive(10, Duration::from_secs(1)).await.expect("receive"));
    }
    got
}

/// CPU time this process has used so far.
fn cpu_time() -> Duration {
    crate::proc::cpu_time(crate::proc::me()).unwrap_or_default()
}

/// The requests of one round, by stage.
#[derive(Debug, Clone, Default)]
pub struct Round {
    /// CPU spent in the stages themselves (the API call, ingest, the worker), not in what
    /// the event source mapping would do (receives, deletes).
    pub stage_cpu: Duration,
    /// `POST /v1/events` of ten events.
    pub publish: Counts,
    /// Ingest of the ten as one batch.
    pub ingest: Counts,
    /// The worker's batches until all ten were delivered.
    pub worker: Counts,
}

/// One tenant with one hook on fresh AWS resources, every request counted.
pub struct CostRig {
    counter: RequestCounter,
    harness: AwsHarness,
    receiver: Receiver,
    api: Api,
    token: String,
    ingest: Ingest,
    worker: Worker,
    hook_id: hookbridge_core::ids::HookId,
}

impl std::fmt::Debug for CostRig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CostRig").finish_non_exhaustive()
    }
}

impl CostRig {
    /// The rig, with a retry schedule of one second.
    pub async fn new() -> Self {
        let counter = RequestCounter::default();
        let harness = AwsHarness::start_counted(Some(&counter)).await;
        let receiver = Receiver::start().await;
        let (mut hook, _) = make_hook(&harness, "acme", "costed").await;
        hook.config.url = receiver.url("/");
        harness.backend().hooks.create(&hook, 1000).await.expect("create hook");
        let key = JwtKey::new(hookbridge_core::settings::LOCAL_DEV_SECRET);
        let api = Api::new(
            subscription_api::ApiPorts::of(harness.backend()),
            ApiSettings::local(key.clone(), NetworkPolicy::local()),
        );
        let claims =
            Claims { sub: "s".into(), tenant: "acme".into(), scope: "events:publish".into(), exp: u64::MAX / 2 };
        let token = mint_token(&key, &claims).expect("token");
        let ingest = Ingest {
            ports: IngestPorts::of(harness.backend()),
            settings: IngestSettings {
                account: "1".into(),
                region: "r".into(),
                event_retention: Duration::from_secs(3600),
                routing_most_bytes: hookbridge_core::settings::Quotas::default().routing_most_bytes(),
            },
        };
        let worker = Worker::new(
            WorkerPorts::of(harness.backend()),
            Outbound::new(OutboundSettings { timeout: Duration::from_secs(5), network: NetworkPolicy::local() })
                .expect("client"),
            WorkerSettings { schedule: RetrySchedule::parse("1s").expect("schedule"), ..WorkerSettings::default() },
        );
        Self { counter, harness, receiver, api, token, ingest, worker, hook_id: hook.id }
    }

    fn take(&self) -> Counts {
        let c = self.counter.snapshot().into_iter().map(|((svc, op), n)| (format!("{svc}.{op}"), n)).collect();
        self.counter.reset();
        c
    }

    /// Publishes ten events in one call and takes them through ingest and the worker, as
    /// one batch each (or more worker batches, when `fail_first` makes every first attempt
    /// answer 503 and be retried).
    pub async fn round(&self, fail_first: bool) -> Round {
        let events: Vec<_> = (0..10)
            .map(|i| serde_json::json!({"detail-type": "user.login", "source": "idp", "detail": {"n": i}}))
            .collect();
        // Each round publishes after the tenant's publish lease ran out, so every round
        // pays the one limiter write a publish costs at most once a second.
        tokio::time::sleep(subscription_api::meter::LEASE_LIFETIME).await;
        self.counter.reset();
        let mut stage_cpu = Duration::ZERO;
        let cpu0 = cpu_time();
        let req = axum::http::Request::post("/v1/events")
            .header("authorization", format!("Bearer {}", self.token))
            .header("content-type", "application/json")
            .body(Body::from(serde_json::to_vec(&events).expect("json")))
            .expect("request");
        let status = router(self.api.clone()).oneshot(req).await.expect("router").status();
        assert_eq!(status, 202);
        stage_cpu += cpu_time() - cpu0;
        let publish = self.take();

        let b = self.harness.backend();
        let batch = drain(b.ingest_queue.as_ref(), 10, 30).await;
        assert_eq!(batch.len(), 10);
        self.counter.reset();
        let cpu0 = cpu_time();
        assert!(ingest::handle(&self.ingest, &batch).await.failed.is_empty());
        stage_cpu += cpu_time() - cpu0;
        let ingested = self.take();

        if fail_first {
            // A throttle: retried, but saying nothing against the endpoint (a 5xx would
            // open its circuit after five).
            self.receiver.script((0..10).map(|_| Reply::status(429)));
        }
        let before = self.receiver.received().len();
        // Ten successes, after ten failures when the first attempts fail.
        let target = before + if fail_first { 20 } else { 10 };
        let mut worker = Counts::new();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
        let mut first = true;
        while self.receiver.received().len() < target && tokio::time::Instant::now() < deadline {
            for lane in [Lane::Fast, Lane::Slow] {
                let q = b.lane(lane);
                // A lane holding nothing, not even delayed, is not waited on (but looked at
                // again a moment later, not at once).
                if !first && q.depth().await.expect("depth").total() == 0 {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
                // Everything still owed, so the retries (spread by jitter) make one batch:
                // waited for long enough that a slow emulator does not split them.
                let owed = (target - self.receiver.received().len()).min(10);
                let tasks = drain(q.as_ref(), owed, if first { 30 } else { 10 }).await;
                first = false;
                if tasks.is_empty() {
                    continue;
                }
                self.counter.reset();
                let cpu0 = cpu_time();
                let outcome = delivery_worker::handle(&self.worker, &tasks, BatchContext::lane(lane)).await;
                stage_cpu += cpu_time() - cpu0;
                for (k, v) in self.take() {
                    *worker.entry(k).or_default() += v;
                }
                // What Lambda's event source mapping does with the successes.
                let done: Vec<_> =
                    tasks.iter().filter(|t| !outcome.failed.contains(&t.id)).map(|t| t.receipt.clone()).collect();
                q.ack(&done).await.expect("ack");
                self.counter.reset();
            }
        }
        assert_eq!(self.receiver.received().len(), target, "all ten delivered; worker requests so far: {worker:?}");
        Round { stage_cpu, publish, ingest: ingested, worker }
    }

    /// Publishes `events` in one call with `headers` added, after the tenant's publish lease
    /// ran out (as [`Self::round`] does): its status and the call's requests. Nothing is
    /// taken further; the ingest queue keeps what it put there.
    pub async fn publish(&self, headers: &[(&str, &str)], events: &serde_json::Value) -> (u16, Counts) {
        tokio::time::sleep(subscription_api::meter::LEASE_LIFETIME).await;
        self.counter.reset();
        let mut req = axum::http::Request::post("/v1/events")
            .header("authorization", format!("Bearer {}", self.token))
            .header("content-type", "application/json");
        for (name, value) in headers {
            req = req.header(*name, *value);
        }
        let req = req.body(Body::from(serde_json::to_vec(events).expect("json"))).expect("request");
        let status = router(self.api.clone()).oneshot(req).await.expect("router").status();
        (status.as_u16(), self.take())
    }

    /// The size of every item stored under the hook's deliveries, as DynamoDB counts it
    /// for write units (attribute names and values; a number counted by its digits, which
    /// is never less than DynamoDB's count).
    pub async fn delivery_items(&self) -> Vec<usize> {
        use aws_sdk_dynamodb::types::AttributeValue;
        let mut sizes = Vec::new();
        let mut start = None;
        loop {
            let out = self
                .harness
                .clients()
                .dynamodb
                .scan()
                .table_name(&self.harness.resources().table)
                .filter_expression("begins_with(PK, :h)")
                .expression_attribute_values(":h", AttributeValue::S(format!("H#{}", self.hook_id)))
                .set_exclusive_start_key(start)
                .send()
                .await
                .expect("scan");
            for item in out.items() {
                let size = item
                    .iter()
                    .map(|(name, v)| {
                        name.len()
                            + match v {
                                AttributeValue::S(s) | AttributeValue::N(s) => s.len(),
                                _ => 0,
                            }
                    })
                    .sum();
                sizes.push(size);
            }
            match out.last_evaluated_key {
                Some(k) => start = Some(k),
                None => break,
            }
        }
        sizes
    }

    /// The harness (for CPU measurements around the stages).
    pub fn harness(&self) -> &AwsHarness {
        &self.harness
    }
}
