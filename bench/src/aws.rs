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
    /// DynamoDB write units of the items stored under the hook's deliveries, per delivery
    /// of the happy path (each item's size rounded up to whole KiB).
    pub delivery_write_units: f64,
    /// The largest such item, in bytes.
    pub largest_item: usize,
    /// The API's sends to the ingest queue per delivery (at [`EVENTS_PER_CALL`]).
    pub api_sends: f64,
}

/// Events the rig publishes per API call.
const EVENTS_PER_CALL: f64 = 10.0;

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
    let mut api_sends = 0;
    for _ in 0..rounds {
        let r = rig.round(false).await;
        cpu += r.stage_cpu;
        api_sends += r.publish.get("SQS.SendMessageBatch").copied().unwrap_or(0);
        happy.push(merge(&r));
    }
    // Sized before any retry adds its items: the warm round's deliveries and the rounds'.
    let sizes = rig.delivery_items().await;
    let units: usize = sizes.iter().map(|b| b.div_ceil(1024)).sum();
    let delivery_write_units = units as f64 / ((rounds + 1) * 10) as f64;
    let largest_item = sizes.iter().copied().max().unwrap_or(0);
    let mut retried = Vec::new();
    for _ in 0..rounds.min(3) {
        retried.push(merge(&rig.round(true).await));
    }
    let n = (rounds * 10) as f64;
    Ok(Figures {
        happy: per_delivery(&happy, n),
        with_retry: per_delivery(&retried, (rounds.min(3) * 10) as f64),
        stage_cpu_us: cpu.as_secs_f64() * 1e6 / n,
        delivery_write_units,
        largest_item,
        api_sends: api_sends as f64 / n,
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

/// How events reach the platform, for the cost model.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Publishing {
    /// `POST /v1/events` with ten events per call (what the rig measures).
    TenPerCall,
    /// `POST /v1/events` with one event per call.
    OnePerCall,
    /// `POST /v1/events` with one event per call, to the API function's URL (no API
    /// Gateway request; template parameter `ApiFunctionUrl`).
    OnePerCallFunctionUrl,
    /// A producer on AWS puts them on the bus itself.
    ProducerOnTheBus,
}

impl Publishing {
    /// How it reads in the report.
    pub fn label(self) -> &'static str {
        match self {
            Self::TenPerCall => "through the API, ten events per call",
            Self::OnePerCall => "through the API, one event per call",
            Self::OnePerCallFunctionUrl => "through the API's function URL, one event per call",
            Self::ProducerOnTheBus => "put on the bus by a producer on AWS",
        }
    }
}

/// The cost of a million deliveries of small events (an item per delivery within one write
/// unit: a `detail` of up to about 200 bytes), one matching hook each, published as
/// `how`, at the template's 256 MB. Counts come from the measured happy path (ten events
/// per API call); the other two shapes change only what publishing costs.
pub fn cost_model(f: &Figures, how: Publishing) -> Vec<CostLine> {
    let op = |name: &str| f.happy.get(name).copied().unwrap_or(0.0);
    // Per delivery: API calls (one HTTP request, one API invocation, one send to the ingest
    // queue each), and events the bus carries (each also a SendMessage to the ingest queue).
    let (calls, bus_events) = match how {
        Publishing::TenPerCall => (1.0 / EVENTS_PER_CALL, op("EventBridge.PutEvents") * EVENTS_PER_CALL),
        Publishing::OnePerCall | Publishing::OnePerCallFunctionUrl => (1.0, 0.0),
        Publishing::ProducerOnTheBus => (0.0, 1.0),
    };
    // A function URL costs nothing beyond the function's own request.
    let gateway_requests = if how == Publishing::OnePerCallFunctionUrl { 0.0 } else { calls };
    let invocations = calls + 0.2; // API; ingest and worker, ten deliveries per invocation
    // Billed duration per invocation: measured CPU, plus a generous allowance for waiting on
    // AWS (three sequential calls of ~10 ms) and on a receiver answering within ~50 ms.
    let seconds_per_invocation = f.stage_cpu_us * 10.0 / 3.0 / 1e6 + 0.080;
    // The API's sends to the ingest queue, measured per call; the stages' own sends.
    let ingest_sends = calls * f.api_sends * EVENTS_PER_CALL;
    let other_sends = op("SQS.SendMessageBatch") - f.api_sends + op("SQS.ChangeMessageVisibility");
    // Item writes, plus the single-item writes (the publish rate's lease, hook health).
    let write_units = f.delivery_write_units + op("DynamoDB.UpdateItem") + op("DynamoDB.PutItem");
    vec![
        CostLine {
            item: format!("HTTP API requests ({gateway_requests} per delivery)"),
            per_delivery: gateway_requests,
            unit_price: price::HTTP_API_REQUEST,
        },
        CostLine {
            item: "Lambda requests (API, ingest, worker)".into(),
            per_delivery: invocations,
            unit_price: price::LAMBDA_REQUEST,
        },
        CostLine {
            item: format!("Lambda GB-s (0.25 GB × {seconds_per_invocation:.3} s × {invocations:.1} invocations)"),
            per_delivery: 0.25 * seconds_per_invocation * invocations,
            unit_price: price::LAMBDA_GB_SECOND_ARM,
        },
        CostLine {
            item: "EventBridge events (the API puts its events on the ingest queue)".into(),
            per_delivery: bus_events,
            unit_price: price::EVENTBRIDGE_EVENT,
        },
        CostLine {
            item: "SQS requests (sends; event-source receives and deletes 0.4)".into(),
            // Each event the bus hands to the ingest queue is one SendMessage.
            per_delivery: bus_events + ingest_sends + other_sends + 0.4,
            unit_price: price::SQS_REQUEST,
        },
        CostLine {
            item: format!(
                "DynamoDB write units (the delivery's one item, {:.2}; rate lease and health {:.2})",
                f.delivery_write_units,
                write_units - f.delivery_write_units
            ),
            per_delivery: write_units,
            unit_price: price::DDB_WRITE_UNIT,
        },
        CostLine {
            item: "DynamoDB read units (hooks query and batch read, per batch)".into(),
            per_delivery: op("DynamoDB.Query") + op("DynamoDB.BatchGetItem"),
            unit_price: price::DDB_READ_UNIT,
        },
    ]
}

/// The total of [`cost_model`], per million deliveries.
pub fn cost_per_million(f: &Figures, how: Publishing) -> f64 {
    cost_model(f, how).iter().map(|l| l.per_delivery * l.unit_price).sum::<f64>() * 1e6
}
