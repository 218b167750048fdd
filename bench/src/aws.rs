//! The AWS backend, against the emulator: requests per delivery by service and operation,
//! the stage code's own CPU per delivery (the emulator runs in another process), and the
//! cost per million deliveries at AWS list prices.

use std::collections::BTreeMap;

use hookbridge_e2e::cost::{CostRig, Counts};

/// What the AWS run measured.
#[derive(Debug, Clone, Default)]
pub struct Figures {
    /// Steady-state requests of our code per delivery, by operation.
    pub happy: BTreeMap<String, f64>,
    /// The same when every delivery fails once and is retried.
    pub with_retry: BTreeMap<String, f64>,
    /// The stages' CPU per delivery (publish, ingest, worker; the emulator excluded), in µs.
    pub stage_cpu_us: f64,
}

fn per_delivery(rounds: &[Counts], deliveries: f64) -> BTreeMap<String, f64> {
    let mut sum: BTreeMap<String, f64> = BTreeMap::new();
    for r in rounds {
        for (k, v) in r {
            *sum.entry(k.clone()).or_default() += *v as f64;
        }
    }
    sum.into_iter().map(|(k, v)| (k, v / deliveries)).collect()
}

fn merge(r: &hookbridge_e2e::cost::Round) -> Counts {
    let mut all = r.publish.clone();
    for c in [&r.ingest, &r.worker] {
        for (k, v) in c {
            *all.entry(k.clone()).or_default() += v;
        }
    }
    all
}

/// Runs the AWS measurements (`rounds` rounds of ten deliveries each).
pub async fn run(rounds: usize) -> anyhow::Result<Figures> {
    let rig = CostRig::new().await;
    rig.round(false).await; // warm: KMS data key, the hook's first success
    let mut happy = Vec::new();
    let mut cpu = std::time::Duration::ZERO;
    for _ in 0..rounds {
        let r = rig.round(false).await;
        cpu += r.stage_cpu;
        happy.push(merge(&r));
    }
    let mut retried = Vec::new();
    for _ in 0..rounds.min(3) {
        retried.push(merge(&rig.round(true).await));
    }
    let n = (rounds * 10) as f64;
    Ok(Figures {
        happy: per_delivery(&happy, n),
        with_retry: per_delivery(&retried, (rounds.min(3) * 10) as f64),
        stage_cpu_us: cpu.as_secs_f64() * 1e6 / n,
    })
}

/// AWS list prices (us-east-1), as published on aws.amazon.com pricing pages; the date is
/// in the report. Re-check them before relying on the totals.
pub mod price {
    /// Lambda, per GB-second on arm64.
    pub const LAMBDA_GB_SECOND_ARM: f64 = 0.000_013_333_4;
    /// Lambda, per request.
    pub const LAMBDA_REQUEST: f64 = 0.20 / 1e6;
    /// SQS standard, per request (64 KiB chunks).
    pub const SQS_REQUEST: f64 = 0.40 / 1e6;
    /// DynamoDB on-demand, per write request unit (1 KiB).
    pub const DDB_WRITE_UNIT: f64 = 0.625 / 1e6;
    /// DynamoDB on-demand, per read request unit (4 KiB strongly consistent).
    pub const DDB_READ_UNIT: f64 = 0.125 / 1e6;
    /// EventBridge custom events, per event (64 KiB chunks).
    pub const EVENTBRIDGE_EVENT: f64 = 1.00 / 1e6;
    /// API Gateway HTTP API, per request (first 300 million a month).
    pub const HTTP_API_REQUEST: f64 = 1.00 / 1e6;
    /// The list prices' date.
    pub const AS_OF: &str = "AWS list prices for us-east-1 as published in 2025 (Lambda arm64, SQS standard, DynamoDB on-demand after the November 2024 reduction, EventBridge custom events, HTTP API)";
}

/// One line of the cost model.
#[derive(Debug, Clone)]
pub struct CostLine {
    pub item: String,
    pub per_delivery: f64,
    pub unit_price: f64,
}

/// The cost of a million deliveries of small events (≤ 1 KiB), published ten per API call,
/// one matching hook each, at the template's 256 MB.
pub fn cost_model(f: &Figures) -> Vec<CostLine> {
    let op = |name: &str| f.happy.get(name).copied().unwrap_or(0.0);
    // Ten events per PutEvents request, when the API publishes through the bus.
    let bus_events = op("EventBridge.PutEvents") * 10.0;
    let ddb_writes_items = 3.0; // per delivery: the envelope, the delivery, the attempt (≤ 1 KiB each)
    let invocations = 0.3; // API, ingest and worker, ten deliveries per invocation
    // Billed duration per invocation: measured CPU, plus a generous allowance for waiting on
    // AWS (three sequential calls of ~10 ms) and on a receiver answering within ~50 ms.
    let seconds_per_invocation = f.stage_cpu_us * 10.0 / 3.0 / 1e6 + 0.080;
    vec![
        CostLine {
            item: "HTTP API requests (1 per 10 events)".into(),
            per_delivery: 0.1,
            unit_price: price::HTTP_API_REQUEST,
        },
        CostLine {
            item: "Lambda requests (API, ingest, worker)".into(),
            per_delivery: invocations,
            unit_price: price::LAMBDA_REQUEST,
        },
        CostLine {
            item: format!("Lambda GB-s (0.25 GB × {seconds_per_invocation:.3} s × {invocations} invocations)"),
            per_delivery: 0.25 * seconds_per_invocation * invocations,
            unit_price: price::LAMBDA_GB_SECOND_ARM,
        },
        CostLine {
            item: "EventBridge events (none: the API puts events on the ingest queue)".into(),
            per_delivery: bus_events,
            unit_price: price::EVENTBRIDGE_EVENT,
        },
        CostLine {
            item: "SQS requests (our sends, event-source receives and deletes 0.4)".into(),
            // Each event the bus hands to the ingest queue is one SendMessage.
            per_delivery: bus_events + op("SQS.SendMessageBatch") + op("SQS.ChangeMessageVisibility") + 0.4,
            unit_price: price::SQS_REQUEST,
        },
        CostLine {
            item: "DynamoDB write units (envelope, delivery, attempt)".into(),
            per_delivery: ddb_writes_items,
            unit_price: price::DDB_WRITE_UNIT,
        },
        CostLine {
            item: "DynamoDB read units (hooks query and batch read, per batch)".into(),
            per_delivery: op("DynamoDB.Query") + op("DynamoDB.BatchGetItem"),
            unit_price: price::DDB_READ_UNIT,
        },
    ]
}

/// The same million deliveries when a producer on AWS puts its events on the bus itself:
/// no HTTP API request, API invocation or API send to the ingest queue (one of each per
/// ten events), but an EventBridge event and the bus's SendMessage to the ingest queue per
/// event.
pub fn cost_via_bus(f: &Figures) -> f64 {
    let total: f64 = cost_model(f).iter().map(|l| l.per_delivery * l.unit_price).sum();
    let api = 0.1 * (price::HTTP_API_REQUEST + price::LAMBDA_REQUEST + price::SQS_REQUEST);
    (total - api + price::EVENTBRIDGE_EVENT + price::SQS_REQUEST) * 1e6
}
