//! An SQS event source mapping as Lambda runs one: long-poll a queue for up to ten
//! messages, invoke the function with them as an SQS event, delete what it handled, and
//! leave the items it named in `batchItemFailures` (or the whole batch, when the invocation
//! failed) to come back after their visibility timeout.

use std::collections::HashMap;
use std::sync::Arc;

use aws_lambda_events::sqs::{SqsEvent, SqsMessage};
use aws_sdk_sqs::types::{DeleteMessageBatchRequestEntry, MessageSystemAttributeName};
use serde_json::Value;

use super::runtime::{Function, Outcome};

/// Polls `queue_url` (whose ARN is `arn`) for `function` until `stop` is set.
pub async fn poll(
    sqs: aws_sdk_sqs::Client,
    queue_url: String,
    arn: String,
    function: Arc<Function>,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    loop {
        if *stop.borrow() {
            return;
        }
        let received = tokio::select! {
            r = sqs.receive_message()
                .queue_url(&queue_url)
                .max_number_of_messages(10)
                .wait_time_seconds(1)
                .message_system_attribute_names(MessageSystemAttributeName::All)
                .send() => r,
            _ = stop.changed() => return,
        };
        let messages = match received {
            Ok(out) => out.messages.unwrap_or_default(),
            Err(e) => {
                tracing::warn!(queue = %queue_url, error = %e, "the event source could not receive");
                tokio::time::sleep(std::time::Duration::from_millis(500)).await;
                continue;
            }
        };
        if messages.is_empty() {
            continue;
        }
        let records: Vec<SqsMessage> = messages
            .iter()
            .map(|m| {
                let attributes: HashMap<String, String> = m
                    .attributes
                    .clone()
                    .unwrap_or_default()
                    .into_iter()
                    .map(|(k, v)| (k.as_str().to_owned(), v))
                    .collect();
                let mut r = SqsMessage::default();
                r.message_id = m.message_id.clone();
                r.receipt_handle = m.receipt_handle.clone();
                r.body = m.body.clone();
                r.md5_of_body = m.md5_of_body.clone();
                r.attributes = attributes;
                r.event_source = Some("aws:sqs".to_owned());
                r.event_source_arn = Some(arn.clone());
                r.aws_region = Some("us-east-1".to_owned());
                r
            })
            .collect();
        let mut event = SqsEvent::default();
        event.records = records;
        let payload = serde_json::to_vec(&event).unwrap_or_default();
        let failed: Option<Vec<String>> = match function.invoke(payload).await {
            Outcome::Response(body) => {
                let ids: Vec<&str> = messages.iter().filter_map(|m| m.message_id.as_deref()).collect();
                let reported = failures_reported(&body, &ids);
                if reported.is_none() {
                    tracing::warn!(
                        function = function.name(),
                        "the batch response does not parse; the batch comes back"
                    );
                }
                reported
            }
            Outcome::Error(e) => {
                tracing::warn!(function = function.name(), error = e, "the invocation failed; the batch comes back");
                None
            }
            Outcome::TimedOut => {
                tracing::warn!(function = function.name(), "the invocation timed out; the batch comes back");
                None
            }
        };
        let Some(failed) = failed else { continue };
        let entries: Vec<DeleteMessageBatchRequestEntry> = messages
            .iter()
            .filter(|m| !m.message_id.as_ref().is_some_and(|id| failed.contains(id)))
            .enumerate()
            .filter_map(|(i, m)| {
                DeleteMessageBatchRequestEntry::builder()
                    .id(i.to_string())
                    .set_receipt_handle(m.receipt_handle.clone())
                    .build()
                    .ok()
            })
            .collect();
        if !entries.is_empty()
            && let Err(e) = sqs.delete_message_batch().queue_url(&queue_url).set_entries(Some(entries)).send().await
        {
            tracing::warn!(queue = %queue_url, error = %e, "the event source could not delete a batch");
        }
    }
}

/// The messages a function's answer reports as failed, read as Lambda reads them: nothing
/// (no body, `null`, no or an empty `batchItemFailures`) is success; an answer that does not
/// parse, or names a message by an empty, missing or unknown id, fails the whole batch
/// (`None`). Read leniently, such an answer deleted every message: a handler's fault
/// passed here as success, where Lambda would have brought the batch back.
fn failures_reported(body: &[u8], batch: &[&str]) -> Option<Vec<String>> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Some(Vec::new());
    }
    let doc: Value = serde_json::from_slice(body).ok()?;
    match &doc {
        Value::Null => return Some(Vec::new()),
        Value::Object(_) => {}
        _ => return None,
    }
    let failures = match &doc["batchItemFailures"] {
        Value::Null => return Some(Vec::new()),
        Value::Array(failures) => failures,
        _ => return None,
    };
    failures.iter().map(|f| f["itemIdentifier"].as_str().filter(|id| batch.contains(id)).map(str::to_owned)).collect()
}

#[cfg(test)]
mod tests {
    use super::failures_reported;

    #[test]
    fn a_batch_response_is_read_as_lambda_reads_it() {
        let batch = ["m1", "m2"];
        let read = |body: &str| failures_reported(body.as_bytes(), &batch);
        for success in ["", "null", "{}", r#"{"batchItemFailures":[]}"#, r#"{"batchItemFailures":null}"#] {
            assert_eq!(read(success), Some(vec![]), "{success:?}");
        }
        assert_eq!(read(r#"{"batchItemFailures":[{"itemIdentifier":"m2"}]}"#), Some(vec!["m2".to_owned()]));
        for whole_batch in [
            "oops",
            "[]",
            r#"{"batchItemFailures":"m1"}"#,
            r#"{"batchItemFailures":[{"itemIdentifier":""}]}"#,
            r#"{"batchItemFailures":[{"itemIdentifier":null}]}"#,
            r#"{"batchItemFailures":[{"id":"m1"}]}"#,
            r#"{"batchItemFailures":[{"itemIdentifier":"m1"},{"itemIdentifier":"m9"}]}"#,
        ] {
            assert_eq!(read(whole_batch), None, "{whole_batch}");
        }
    }
}
