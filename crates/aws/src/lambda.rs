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

/// A received message from its SQS parts (as the SQS API or a Lambda event gives them);
/// `None` without an id or receipt handle, when it can be neither reported nor deleted.
pub(crate) fn received(
    id: Option<String>,
    receipt: Option<String>,
    body: Option<String>,
    receive_count: Option<&str>,
    sent_timestamp: Option<&str>,
) -> Option<ReceivedMessage> {
    Some(ReceivedMessage {
        id: id?,
        receipt: Receipt(receipt?),
        body: body.unwrap_or_default(),
        receive_count: receive_count.and_then(|v| v.parse().ok()).unwrap_or(1),
        sent_at: sent_timestamp
            .and_then(|v| v.parse::<i64>().ok())
            .and_then(DateTime::<Utc>::from_timestamp_millis)
            .unwrap_or_else(Utc::now),
    })
}

fn record(m: SqsMessage) -> Result<ReceivedMessage, UnidentifiedRecord> {
    let attr = |k: &str| m.attributes.get(k).cloned();
    let (count, sent) = (attr("ApproximateReceiveCount"), attr("SentTimestamp"));
    received(m.message_id, m.receipt_handle, m.body, count.as_deref(), sent.as_deref()).ok_or(UnidentifiedRecord)
}

/// The records of one invocation, and the queue they came from.
#[derive(Debug, Clone)]
pub struct SqsBatch {
    /// The messages.
    pub messages: Vec<ReceivedMessage>,
    /// The name of the queue they came from (the end of the records' `eventSourceARN`),
    /// for a function triggered by more than one queue.
    pub queue: Option<String>,
}

/// The records of an SQS event.
pub fn records(event: SqsEvent) -> Result<SqsBatch, UnidentifiedRecord> {
    let queue = event
        .records
        .first()
        .and_then(|r| r.event_source_arn.as_deref())
        .and_then(|arn| arn.rsplit(':').next())
        .map(str::to_owned);
    let messages = event.records.into_iter().map(record).collect::<Result<_, _>>()?;
    Ok(SqsBatch { messages, queue })
}

/// When an invocation must have answered, from its context's deadline (milliseconds
/// since the Unix epoch), as an instant on tokio's clock.
pub fn deadline(deadline_ms: u64) -> tokio::time::Instant {
    let now_ms = Utc::now().timestamp_millis().max(0) as u64;
    tokio::time::Instant::now() + std::time::Duration::from_millis(deadline_ms.saturating_sub(now_ms))
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

/// Handles one invocation: the event's records to `handle` with the invocation's
/// deadline, its outcome back as partial batch failures. Exposed apart from [`run_sqs`]
/// so tests drive it with sample events.
pub async fn invoke<F, Fut>(
    event: SqsEvent,
    deadline: tokio::time::Instant,
    handle: F,
) -> Result<SqsBatchResponse, UnidentifiedRecord>
where
    F: FnOnce(SqsBatch, tokio::time::Instant) -> Fut,
    Fut: Future<Output = BatchOutcome>,
{
    Ok(response(handle(records(event)?, deadline).await))
}

/// Runs an SQS-triggered function (`FunctionResponseTypes: [ReportBatchItemFailures]`).
pub async fn run_sqs<F, Fut>(handle: F) -> Result<(), lambda_runtime::Error>
where
    F: Fn(SqsBatch, tokio::time::Instant) -> Fut,
    Fut: Future<Output = BatchOutcome>,
{
    let handle = &handle;
    lambda_runtime::run(service_fn(move |event: LambdaEvent<SqsEvent>| async move {
        let deadline = deadline(event.context.deadline);
        invoke(event.payload, deadline, handle).await.map_err(lambda_runtime::Error::from)
    }))
    .await
}
