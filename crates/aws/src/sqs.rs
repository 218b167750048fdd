//! Queues on SQS.

use std::time::Duration;

use async_trait::async_trait;
use aws_sdk_sqs::Client;
use aws_sdk_sqs::types::{
    DeleteMessageBatchRequestEntry, MessageSystemAttributeName, QueueAttributeName, SendMessageBatchRequestEntry,
};
use futures::StreamExt;
use hookbridge_core::ports::{MAX_BATCH, MAX_SEND_DELAY, OutgoingMessage, Queue, QueueDepth, Receipt, ReceivedMessage};
use hookbridge_core::{Error, Result};

/// Rounds of retrying entries SQS refused in a batch.
const SEND_ROUNDS: u32 = 4;

/// One SQS queue.
#[derive(Debug, Clone)]
pub struct SqsQueue {
    client: Client,
    url: String,
    name: String,
}

impl SqsQueue {
    /// A queue by URL.
    pub fn new(client: Client, url: impl Into<String>) -> Self {
        let url = url.into();
        let name = url.rsplit('/').next().unwrap_or_default().to_owned();
        Self { client, url, name }
    }

    /// The queue's URL.
    pub fn url(&self) -> &str {
        &self.url
    }
}

/// SQS counts in whole seconds; a delay is never shortened, so round up.
fn whole_seconds(d: Duration) -> i32 {
    d.as_millis().div_ceil(1000).min(i32::MAX as u128) as i32
}

#[async_trait]
impl Queue for SqsQueue {
    fn name(&self) -> &str {
        &self.name
    }

    async fn send_batch(&self, messages: &[OutgoingMessage]) -> Result<()> {
        if messages.iter().any(|m| m.delay > MAX_SEND_DELAY) {
            return Err(Error::TooLarge("a send delay is longer than 15 minutes".to_owned()));
        }
        // Futures start when polled, so making them all first starts none of them.
        let sends: Vec<_> = batches(messages).into_iter().map(|chunk| self.send_chunk(chunk)).collect();
        let sent: Vec<Result<()>> =
            futures::stream::iter(sends).buffer_unordered(crate::REQUESTS_IN_FLIGHT).collect().await;
        sent.into_iter().collect()
    }

    async fn receive(&self, max: usize, wait: Duration) -> Result<Vec<ReceivedMessage>> {
        let out = self
            .client
            .receive_message()
            .queue_url(&self.url)
            .max_number_of_messages(max.clamp(1, MAX_BATCH) as i32)
            .wait_time_seconds(whole_seconds(wait).min(20))
            .message_system_attribute_names(MessageSystemAttributeName::ApproximateReceiveCount)
            .message_system_attribute_names(MessageSystemAttributeName::SentTimestamp)
            .send()
            .await
            .map_err(|e| Error::backend("sqs.ReceiveMessage", e))?;
        Ok(out.messages.unwrap_or_default().into_iter().filter_map(received).collect())
    }

    async fn ack(&self, receipts: &[Receipt]) -> Result<()> {
        for chunk in receipts.chunks(MAX_BATCH) {
            let entries = chunk
                .iter()
                .enumerate()
                .map(|(i, r)| {
                    DeleteMessageBatchRequestEntry::builder()
                        .id(i.to_string())
                        .receipt_handle(&r.0)
                        .build()
                        .map_err(|e| Error::backend("sqs.DeleteMessageBatch", e))
                })
                .collect::<Result<Vec<_>>>()?;
            let out = self
                .client
                .delete_message_batch()
                .queue_url(&self.url)
                .set_entries(Some(entries))
                .send()
                .await
                .map_err(|e| Error::backend("sqs.DeleteMessageBatch", e))?;
            for f in out.failed() {
                // A stale receipt: the message was received again since; its new receiver
                // owns it now, as on SQS.
                tracing::warn!(queue = self.name, code = f.code(), "delete refused for one message");
            }
        }
        Ok(())
    }

    async fn retry_after(&self, receipt: &Receipt, delay: Duration) -> Result<()> {
        self.client
            .change_message_visibility()
            .queue_url(&self.url)
            .receipt_handle(&receipt.0)
            .visibility_timeout(whole_seconds(delay))
            .send()
            .await
            .map(|_| ())
            .map_err(|e| Error::backend("sqs.ChangeMessageVisibility", e))
    }

    async fn depth(&self) -> Result<QueueDepth> {
        let out = self
            .client
            .get_queue_attributes()
            .queue_url(&self.url)
            .attribute_names(QueueAttributeName::ApproximateNumberOfMessages)
            .attribute_names(QueueAttributeName::ApproximateNumberOfMessagesNotVisible)
            .attribute_names(QueueAttributeName::ApproximateNumberOfMessagesDelayed)
            .send()
            .await
            .map_err(|e| Error::backend("sqs.GetQueueAttributes", e))?;
        let attrs = out.attributes.unwrap_or_default();
        let get = |a: QueueAttributeName| attrs.get(&a).and_then(|v| v.parse().ok()).unwrap_or(0);
        Ok(QueueDepth {
            visible: get(QueueAttributeName::ApproximateNumberOfMessages),
            in_flight: get(QueueAttributeName::ApproximateNumberOfMessagesNotVisible),
            delayed: get(QueueAttributeName::ApproximateNumberOfMessagesDelayed),
        })
    }
}

/// The most bytes of message bodies one `SendMessageBatch` carries (SQS's limit is 256 KiB
/// for the whole request; the rest is left for the request's own fields).
const BATCH_BYTES: usize = 240 * 1024;

/// `messages` in batches of at most ten and [`BATCH_BYTES`]; a message larger than that
/// goes alone (SQS then judges it).
fn batches(messages: &[OutgoingMessage]) -> Vec<&[OutgoingMessage]> {
    let mut out = Vec::new();
    let (mut start, mut bytes) = (0, 0);
    for (i, m) in messages.iter().enumerate() {
        let full = i - start == MAX_BATCH || (i > start && bytes + m.body.len() > BATCH_BYTES);
        if full {
            out.push(&messages[start..i]);
            (start, bytes) = (i, 0);
        }
        bytes += m.body.len();
    }
    if start < messages.len() {
        out.push(&messages[start..]);
    }
    out
}

impl SqsQueue {
    async fn send_chunk(&self, chunk: &[OutgoingMessage]) -> Result<()> {
        let mut pending: Vec<(usize, &OutgoingMessage)> = chunk.iter().enumerate().collect();
        for round in 0..SEND_ROUNDS {
            if round > 0 {
                tokio::time::sleep(Duration::from_millis(100 << round)).await;
            }
            let entries = pending
                .iter()
                .map(|(i, m)| {
                    SendMessageBatchRequestEntry::builder()
                        .id(i.to_string())
                        .message_body(&m.body)
                        .delay_seconds(whole_seconds(m.delay))
                        // On a standard queue, the group makes it a fair queue: a group
                        // with a backlog does not delay other groups' messages.
                        .set_message_group_id(m.group.clone())
                        .build()
                        .map_err(|e| Error::backend("sqs.SendMessageBatch", e))
                })
                .collect::<Result<Vec<_>>>()?;
            let out = self
                .client
                .send_message_batch()
                .queue_url(&self.url)
                .set_entries(Some(entries))
                .send()
                .await
                .map_err(|e| Error::backend("sqs.SendMessageBatch", e))?;
            let failed: Vec<(String, bool)> =
                out.failed().iter().map(|f| (f.id().to_owned(), f.sender_fault())).collect();
            if let Some((_, _)) = failed.iter().find(|(_, sender_fault)| *sender_fault) {
                return Err(Error::backend("sqs.SendMessageBatch", "a message was refused as invalid"));
            }
            pending.retain(|(i, _)| failed.iter().any(|(id, _)| *id == i.to_string()));
            if pending.is_empty() {
                return Ok(());
            }
        }
        Err(Error::backend("sqs.SendMessageBatch", format!("{} messages could not be sent", pending.len())))
    }
}

fn received(m: aws_sdk_sqs::types::Message) -> Option<ReceivedMessage> {
    let attrs = m.attributes.unwrap_or_default();
    let get = |a: MessageSystemAttributeName| attrs.get(&a).map(String::as_str);
    let got = crate::lambda::received(
        m.message_id,
        m.receipt_handle,
        m.body,
        get(MessageSystemAttributeName::ApproximateReceiveCount),
        get(MessageSystemAttributeName::SentTimestamp),
    );
    if got.is_none() {
        // SQS always sends both; without them the message can be neither handled nor deleted.
        tracing::error!("SQS returned a message without an id or receipt handle; it will come back");
    }
    got
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sizes(messages: &[OutgoingMessage]) -> Vec<usize> {
        batches(messages).iter().map(|b| b.len()).collect()
    }

    #[test]
    fn batches_hold_at_most_ten_messages_and_240_kib() {
        let small: Vec<_> = (0..23).map(|_| OutgoingMessage::now("x".repeat(100))).collect();
        assert_eq!(sizes(&small), [10, 10, 3]);
        let big: Vec<_> = (0..7).map(|_| OutgoingMessage::now("x".repeat(64 * 1024))).collect();
        assert_eq!(sizes(&big), [3, 3, 1]);
        let huge = vec![OutgoingMessage::now("x".repeat(300 * 1024)), OutgoingMessage::now("y".into())];
        assert_eq!(sizes(&huge), [1, 1]);
        assert!(batches(&[]).is_empty());
    }
}
