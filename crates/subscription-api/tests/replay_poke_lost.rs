//! A replay whose poke's answer was lost, though the poke went and the job moved, is
//! answered `202`: it was `500`, the job ran all the same, and the caller asking again
//! (as a `500` tells it to) had the window sent twice.

#![allow(clippy::unwrap_used)] // Tests fail loudly on purpose.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use common::{api_on, call, token};
use hookbridge_core::ports::{OutgoingMessage, Queue, QueueDepth, Receipt, ReceivedMessage, ReplayStore, Unsent};
use hookbridge_core::replay::ReplayPoke;
use hookbridge_testkit::{EmbeddedHarness, Harness};
use subscription_api::ApiPorts;

#[allow(dead_code)] // each test binary uses part of it
mod common;

/// The ingest queue, whose sends go and whose jobs then move (as ingest saving a page
/// would), but whose answers are lost.
struct AnswerLost {
    inner: Arc<dyn Queue>,
    replays: Arc<dyn ReplayStore>,
}

#[async_trait]
impl Queue for AnswerLost {
    fn name(&self) -> &str {
        self.inner.name()
    }
    async fn send_each(&self, messages: &[OutgoingMessage]) -> Result<(), Unsent> {
        self.inner.send_each(messages).await?;
        for m in messages {
            if let Some(poke) = ReplayPoke::parse(&m.body) {
                let job = self.replays.get(poke.hook_id, poke.replay_id).await.unwrap().unwrap();
                let paged = hookbridge_core::replay::ReplayJob { step: job.step + 1, ..job.clone() };
                assert!(self.replays.save(&paged, job.step).await.unwrap());
            }
        }
        let error = hookbridge_core::Error::backend("sqs.SendMessageBatch", "the answer was lost");
        Err(Unsent { indices: (0..messages.len()).collect(), error })
    }
    async fn receive(&self, max: usize, wait: Duration) -> hookbridge_core::Result<Vec<ReceivedMessage>> {
        self.inner.receive(max, wait).await
    }
    async fn ack(&self, receipts: &[Receipt]) -> hookbridge_core::Result<()> {
        self.inner.ack(receipts).await
    }
    async fn retry_after(&self, receipt: &Receipt, delay: Duration) -> hookbridge_core::Result<()> {
        self.inner.retry_after(receipt, delay).await
    }
    async fn depth(&self) -> hookbridge_core::Result<QueueDepth> {
        self.inner.depth().await
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replay_whose_poke_went_though_its_answer_was_lost_is_started() {
    let h = EmbeddedHarness::start().await;
    let mut ports = ApiPorts::of(h.backend());
    ports.ingest = Arc::new(AnswerLost { inner: ports.ingest.clone(), replays: h.backend().replays.clone() });
    let (api, token) = (api_on(ports), token("hooks:read hooks:write"));

    let (status, hook) =
        call(&api, "POST", "/v1/hooks", &token, r#"{"name": "h", "url": "https://example.com/in"}"#).await;
    assert_eq!(status, 201, "{hook}");
    let id = hook["id"].as_str().unwrap();
    let since = (chrono::Utc::now() - chrono::Duration::hours(1)).to_rfc3339();
    let (status, job) =
        call(&api, "POST", &format!("/v1/hooks/{id}/replay"), &token, &format!(r#"{{"since": "{since}"}}"#)).await;
    assert_eq!(status, 202, "the job runs: {job}");
    let (status, read) =
        call(&api, "GET", &format!("/v1/hooks/{id}/replays/{}", job["id"].as_str().unwrap()), &token, "").await;
    assert_eq!((status, read["state"].as_str()), (200, Some("RUNNING")), "{read}");
}
