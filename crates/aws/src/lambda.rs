//! Between Lambda's SQS events and the stages: records in, partial batch failures out.

use std::future::Future;

use aws_lambda_events::event::sqs::{BatchItemFailure, SqsBatchResponse, SqsEvent, SqsMessage};
use chrono::{DateTime, Utc};
use hookbridge_core::ports::{BatchOutcome, Receipt, ReceivedMessage};
use lambda_runtime::{LambdaEvent, service_fn};

/// A record Lambda handed over without an id or receipt handle: it can be neither
/// reported nor deleted, so the whole batch must fail rather than acknowledge it unread.
#[derive(Debug, thiserror::Error)]
#[error("an SQS record has no messageId or receiptHandle; failing the whole batch so nothing is acknowledged unread")]
pub struct UnidentifiedRecord;

fn record(m: SqsMessage) -> Result<ReceivedMessage, UnidentifiedRecord> {
    let attr = |k: &str| m.attributes.get(k).cloned();
    let receive_count = attr("ApproximateReceiveCount").and_then(|v| v.parse().ok()).unwrap_or(1);
    let sent_at = attr("SentTimestamp")
        .and_then(|v| v.parse::<i64>().ok())
        .and_then(DateTime::<Utc>::from_timestamp_millis)
        .unwrap_or_else(Utc::now);
    Ok(ReceivedMessage {
        id: m.message_id.ok_or(UnidentifiedRecord)?,
        receipt: Receipt(m.receipt_handle.ok_or(UnidentifiedRecord)?),
        body: m.body.unwrap_or_default(),
        receive_count,
        sent_at,
    })
}

/// The records of an SQS event.
pub fn records(event: SqsEvent) -> Result<Vec<ReceivedMessage>, UnidentifiedRecord> {
    event.records.into_iter().map(record).collect()
}

/// The partial-batch response for a stage's outcome.
pub fn response(outcome: BatchOutcome) -> SqsBatchResponse {
    let mut r = SqsBatchResponse::default();
    r.batch_item_failures = outcome
        .failed
        .into_iter()
        .map(|id| {
            let mut f = BatchItemFailure::default();
            f.item_identifier = id;
            f
        })
        .collect();
    r
}

/// Handles one invocation: the event's records to `handle`, its outcome back as partial
/// batch failures. Exposed apart from [`run_sqs`] so tests drive it with sample events.
pub async fn invoke<F, Fut>(event: SqsEvent, handle: F) -> Result<SqsBatchResponse, UnidentifiedRecord>
where
    F: FnOnce(Vec<ReceivedMessage>) -> Fut,
    Fut: Future<Output = BatchOutcome>,
{
    Ok(response(handle(records(event)?).await))
}

/// Runs an SQS-triggered function (`FunctionResponseTypes: [ReportBatchItemFailures]`).
pub async fn run_sqs<F, Fut>(handle: F) -> Result<(), lambda_runtime::Error>
where
    F: Fn(Vec<ReceivedMessage>) -> Fut,
    Fut: Future<Output = BatchOutcome>,
{
    let handle = &handle;
    lambda_runtime::run(service_fn(move |event: LambdaEvent<SqsEvent>| async move {
        invoke(event.payload, handle).await.map_err(lambda_runtime::Error::from)
    }))
    .await
}
