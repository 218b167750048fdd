//! What one delivery costs in AWS requests on the happy path, counted by an SDK interceptor
//! on the AWS backend. Lambda's SQS event source mappings receive and delete messages
//! themselves, so those calls are left out here, as they are from the code's bill.

use std::collections::BTreeMap;
use std::time::Duration;

use axum::body::Body;
use delivery_worker::{Worker, WorkerSettings};
use hookbridge_aws::RequestCounter;
use hookbridge_core::hook::NetworkPolicy;
use hookbridge_core::ports::{Queue, ReceivedMessage};
use hookbridge_outbound::{Outbound, OutboundSettings};
use hookbridge_testkit::contract::make_hook;
use hookbridge_testkit::{AwsHarness, Harness, Receiver};
use ingest::{Ingest, IngestSettings};
use subscription_api::{Api, ApiSettings, Claims, JwtKey, mint_token, router};
use tower::ServiceExt;

async fn drain(q: &dyn Queue, n: usize) -> Vec<ReceivedMessage> {
    let mut got = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while got.len() < n && tokio::time::Instant::now() < deadline {
        got.extend(q.receive(10, Duration::from_secs(1)).await.unwrap());
    }
    got
}

fn counts(c: &RequestCounter) -> BTreeMap<String, u64> {
    c.snapshot().into_iter().map(|((svc, op), n)| (format!("{svc}.{op}"), n)).collect()
}

struct Rig {
    counter: RequestCounter,
    h: AwsHarness,
    receiver: Receiver,
    api: Api,
    token: String,
    ingest: Ingest,
    worker: Worker,
}

type Counts = BTreeMap<String, u64>;

impl Rig {
    async fn new() -> Self {
        let counter = RequestCounter::default();
        let h = AwsHarness::start_counted(Some(&counter)).await;
        let receiver = Receiver::start().await;
        let (mut hook, _) = make_hook(&h, "acme", "costed").await;
        hook.config.url = receiver.url("/");
        h.backend().hooks.create(&hook).await.unwrap();
        let key = JwtKey::new("k");
        let api = Api::new(h.backend().clone(), ApiSettings::local(key.clone(), NetworkPolicy::local()));
        let claims = Claims { sub: "s".into(), tenant: "acme".into(), scope: "events:publish".into(), exp: None };
        let token = mint_token(&key, &claims).unwrap();
        let ingest = Ingest {
            backend: h.backend().clone(),
            settings: IngestSettings {
                account: "1".into(),
                region: "r".into(),
                event_retention: Duration::from_secs(3600),
            },
        };
        let worker = Worker {
            backend: h.backend().clone(),
            outbound: Outbound::new(OutboundSettings {
                timeout: Duration::from_secs(5),
                network: NetworkPolicy::local(),
            })
            .unwrap(),
            settings: WorkerSettings::default(),
        };
        Self { counter, h, receiver, api, token, ingest, worker }
    }

    /// Publishes ten events in one call and takes them through ingest and the worker as one
    /// batch each; returns the requests each step made.
    async fn round(&self) -> (Counts, Counts, Counts) {
        let events: Vec<_> = (0..10)
            .map(|i| serde_json::json!({"detail-type": "user.login", "source": "idp", "detail": {"n": i}}))
            .collect();
        self.counter.reset();
        let req = axum::http::Request::post("/v1/events")
            .header("authorization", format!("Bearer {}", self.token))
            .header("content-type", "application/json")
            .body(Body::from(serde_json::to_vec(&events).unwrap()))
            .unwrap();
        assert_eq!(router(self.api.clone()).oneshot(req).await.unwrap().status(), 202);
        let publish = counts(&self.counter);

        let batch = drain(self.h.backend().ingest_queue.as_ref(), 10).await;
        assert_eq!(batch.len(), 10);
        self.counter.reset();
        assert!(ingest::handle(&self.ingest, &batch).await.failed.is_empty());
        let ingested = counts(&self.counter);

        let tasks = drain(self.h.backend().delivery_queue.as_ref(), 10).await;
        assert_eq!(tasks.len(), 10);
        let before = self.receiver.received().len();
        self.counter.reset();
        assert!(delivery_worker::handle(&self.worker, &tasks).await.failed.is_empty());
        let delivered = counts(&self.counter);
        assert_eq!(self.receiver.received().len(), before + 10);
        (publish, ingested, delivered)
    }
}

fn m(pairs: &[(&str, u64)]) -> Counts {
    pairs.iter().map(|(k, v)| ((*k).to_owned(), *v)).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_events_to_one_hook_cost_seven_requests_in_the_steady_state() {
    let rig = Rig::new().await;

    // A cold worker opens the hook's secrets once (KMS) and records the hook's first success.
    let (publish, ingested, delivered) = rig.round().await;
    assert_eq!(publish, m(&[("EventBridge.PutEvents", 1)]));
    assert_eq!(ingested, m(&[("DynamoDB.Query", 1), ("DynamoDB.BatchWriteItem", 2), ("SQS.SendMessageBatch", 1)]));
    assert_eq!(
        delivered,
        m(&[("DynamoDB.BatchGetItem", 1), ("DynamoDB.BatchWriteItem", 1), ("DynamoDB.PutItem", 1), ("KMS.Decrypt", 1)])
    );

    // Warm: one publish, four ingest requests and two worker requests for ten deliveries.
    let (publish, ingested, delivered) = rig.round().await;
    assert_eq!(publish, m(&[("EventBridge.PutEvents", 1)]));
    assert_eq!(ingested, m(&[("DynamoDB.Query", 1), ("DynamoDB.BatchWriteItem", 2), ("SQS.SendMessageBatch", 1)]));
    assert_eq!(delivered, m(&[("DynamoDB.BatchGetItem", 1), ("DynamoDB.BatchWriteItem", 1)]));
}
