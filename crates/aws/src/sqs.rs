//! Queues on SQS.

use std::ops::Range;
use std::time::Duration;

use async_trait::async_trait;
use aws_sdk_sqs::Client;
use aws_sdk_sqs::types::{
    DeleteMessageBatchRequestEntry, MessageSystemAttributeName, QueueAttributeName, SendMessageBatchRequestEntry,
};
use futures::{FutureExt, StreamExt};
use hookbridge_core::ports::{
    MAX_BATCH, MAX_MESSAGE_BYTES, OutgoingMessage, Queue, QueueDepth, Receipt, ReceivedMessage, Unsent,
};
use hookbridge_core::{Error, Result};

/// Rounds of sending (or deleting) the entries of a batch that SQS failed on its side.
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

/// A message's delay in whole seconds: rounded up, but within the time it may come early
/// (with a second's allowance, it comes in the second before its delay ends, never after).
fn delay_seconds(m: &OutgoingMessage) -> i32 {
    whole_seconds(m.delay.saturating_sub(m.early))
}

#[async_trait]
impl Queue for SqsQueue {
    fn name(&self) -> &str {
        &self.name
    }

    async fn send_each(&self, messages: &[OutgoingMessage]) -> Result<(), Unsent> {
        // A body past the size limit is refused here, as SQS would refuse it (the emulator
        // takes any size): the same on both backends, and no request spent on it.
        let (fitting, too_large): (Vec<usize>, Vec<usize>) =
            (0..messages.len()).partition(|&i| messages[i].body.len() <= MAX_MESSAGE_BYTES);
        let sendable: std::borrow::Cow<'_, [OutgoingMessage]> = if too_large.is_empty() {
            std::borrow::Cow::Borrowed(messages)
        } else {
            std::borrow::Cow::Owned(fitting.iter().map(|&i| messages[i].clone()).collect())
        };
        let messages = &sendable[..];
        // Futures start when polled, so making them all first starts none of them.
        let sends: Vec<_> = batches(messages)
            .into_iter()
            .map(|range| {
                let start = range.start;
                self.send_chunk(&messages[range]).map(move |r| (start, r))
            })
            .collect();
        let sent: Vec<(usize, Result<(), Unsent>)> =
            futures::stream::iter(sends).buffer_unordered(crate::REQUESTS_IN_FLIGHT).collect().await;
        let mut unsent: Option<Unsent> = (!too_large.is_empty()).then(|| Unsent {
            indices: too_large,
            error: Error::TooLarge(format!("a message body is longer than {MAX_MESSAGE_BYTES} bytes")),
        });
        for (start, r) in sent {
            if let Err(u) = r {
                let all = unsent.get_or_insert(Unsent { indices: Vec::new(), error: u.error });
                // Back to the caller's places: `messages` left the too-large ones out.
                all.indices.extend(u.indices.into_iter().map(|i| fitting[start + i]));
            }
        }
        match unsent {
            None => Ok(()),
            Some(mut u) => {
                u.indices.sort_unstable();
                Err(u)
            }
        }
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
            // A long poll waits for up to `wait` by design: bounded past it.
            .customize()
            .config_override(
                aws_sdk_sqs::config::Builder::default().timeout_config(
                    aws_config::timeout::TimeoutConfig::builder()
                        .operation_attempt_timeout(wait + crate::CALL_ATTEMPT_TIMEOUT)
                        .operation_timeout(wait + crate::CALL_TIMEOUT)
                        .build(),
                ),
            )
            .send()
            .await
            .map_err(|e| Error::backend("sqs.ReceiveMessage", e))?;
        Ok(out.messages.unwrap_or_default().into_iter().filter_map(received).collect())
    }

    async fn ack(&self, receipts: &[Receipt]) -> Result<()> {
        // Every chunk is tried: one refused must not leave the chunks after it to come back
        // and be handled again. The first failure is the answer.
        let mut first_failure = None;
        for chunk in receipts.chunks(MAX_BATCH) {
            if let Err(e) = self.delete_chunk(chunk).await {
                first_failure.get_or_insert(e);
            }
        }
        first_failure.map_or(Ok(()), Err)
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

/// `messages` in batches of at most ten and [`BATCH_BYTES`], as ranges of indices; a
/// message larger than that goes alone (SQS then judges it).
fn batches(messages: &[OutgoingMessage]) -> Vec<Range<usize>> {
    let mut out = Vec::new();
    let (mut start, mut bytes) = (0, 0);
    for (i, m) in messages.iter().enumerate() {
        let full = i - start == MAX_BATCH || (i > start && bytes + m.body.len() > BATCH_BYTES);
        if full {
            out.push(start..i);
            (start, bytes) = (i, 0);
        }
        bytes += m.body.len();
    }
    if start < messages.len() {
        out.push(start..messages.len());
    }
    out
}

impl SqsQueue {
    /// Sends one batch, sending again what SQS failed to take for a reason of its own; what
    /// it refuses as invalid (a delay over 15 minutes, say) is not sent again. The error
    /// names the indices, within `chunk`, that were not sent.
    async fn send_chunk(&self, chunk: &[OutgoingMessage]) -> Result<(), Unsent> {
        let mut pending: Vec<usize> = (0..chunk.len()).collect();
        let mut refused: Option<Unsent> = None;
        for round in 0..SEND_ROUNDS {
            pause_before(round).await;
            let entries = pending
                .iter()
                .map(|&i| {
                    let m = &chunk[i];
                    SendMessageBatchRequestEntry::builder()
                        .id(i.to_string())
                        .message_body(&m.body)
                        .delay_seconds(delay_seconds(m))
                        // On a standard queue, the group makes it a fair queue: a group
                        // with a backlog does not delay other groups' messages.
                        .set_message_group_id(m.group.clone())
                        .build()
                })
                .collect::<Result<Vec<_>, _>>();
            let out = match entries {
                Ok(entries) => {
                    self.client.send_message_batch().queue_url(&self.url).set_entries(Some(entries)).send().await
                }
                Err(e) => return Err(not_sent(pending, refused, Error::backend("sqs.SendMessageBatch", e))),
            };
            let out = match out {
                Ok(out) => out,
                // The SDK has already retried what is worth retrying.
                Err(e) => return Err(not_sent(pending, refused, Error::backend("sqs.SendMessageBatch", e))),
            };
            let mut again = Vec::new();
            for f in out.failed() {
                let Some(i) = f.id().parse::<usize>().ok().filter(|i| pending.contains(i)) else {
                    continue;
                };
                if f.sender_fault() {
                    let why = format!("refused: {} {}", f.code(), f.message().unwrap_or_default());
                    let r = refused.get_or_insert_with(|| Unsent {
                        indices: Vec::new(),
                        error: Error::backend("sqs.SendMessageBatch", why),
                    });
                    r.indices.push(i);
                } else {
                    again.push(i);
                }
            }
            pending = again;
            if pending.is_empty() {
                return refused.map_or(Ok(()), |mut r| {
                    r.indices.sort_unstable();
                    Err(r)
                });
            }
        }
        let error = Error::backend("sqs.SendMessageBatch", format!("{} messages could not be sent", pending.len()));
        Err(not_sent(pending, refused, error))
    }
}

impl SqsQueue {
    /// Deletes one batch, deleting again what SQS failed to for a reason of its own. A
    /// receipt it refuses as invalid is not tried again; a stale one (the message was
    /// received again since) is no failure at all: SQS answers success and keeps the
    /// message for its new receiver.
    async fn delete_chunk(&self, chunk: &[Receipt]) -> Result<()> {
        let mut pending: Vec<usize> = (0..chunk.len()).collect();
        for round in 0..SEND_ROUNDS {
            pause_before(round).await;
            let entries = pending
                .iter()
                .map(|&i| {
                    DeleteMessageBatchRequestEntry::builder().id(i.to_string()).receipt_handle(&chunk[i].0).build()
                })
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| Error::backend("sqs.DeleteMessageBatch", e))?;
            let out = self
                .client
                .delete_message_batch()
                .queue_url(&self.url)
                .set_entries(Some(entries))
                .send()
                .await
                .map_err(|e| Error::backend("sqs.DeleteMessageBatch", e))?;
            let mut again = Vec::new();
            for f in out.failed() {
                if f.sender_fault() {
                    tracing::warn!(
                        queue = self.name,
                        code = f.code(),
                        "delete refused for one message; it will come back"
                    );
                } else if let Some(i) = f.id().parse::<usize>().ok().filter(|i| pending.contains(i)) {
                    again.push(i);
                }
            }
            pending = again;
            if pending.is_empty() {
                return Ok(());
            }
        }
        // They come back after their visibility timeout and are handled again.
        Err(Error::backend("sqs.DeleteMessageBatch", format!("{} messages could not be deleted", pending.len())))
    }
}

/// Waits before a batch's next round of retries: none before the first.
async fn pause_before(round: u32) {
    if round > 0 {
        tokio::time::sleep(Duration::from_millis(100 << round)).await;
    }
}

/// `pending` and `refused` together, as one [`Unsent`]; `error` is why `pending` were not.
fn not_sent(pending: Vec<usize>, refused: Option<Unsent>, error: Error) -> Unsent {
    let mut u = refused.unwrap_or(Unsent { indices: Vec::new(), error });
    u.indices.extend(pending);
    u.indices.sort_unstable();
    u
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
    fn delays_round_up_unless_the_message_may_come_early() {
        let at = |ms: u64, early_ms: u64| {
            delay_seconds(&OutgoingMessage {
                delay: Duration::from_millis(ms),
                early: Duration::from_millis(early_ms),
                ..OutgoingMessage::now(String::new())
            })
        };
        assert_eq!([at(0, 0), at(1, 0), at(2_300, 0), at(3_000, 0)], [0, 1, 3, 3]);
        // Up to a second early: received in the second before the delay ends.
        assert_eq!([at(2_300, 1_000), at(3_000, 1_000), at(3_999, 1_000), at(400, 1_000)], [2, 2, 3, 0]);
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
