//! The ingest queue as the API sees it on the embedded backend: the events it publishes are
//! routed by ingest in the publishing request, and only what ingest could not route is
//! queued (decision 0033).
//!
//! API and ingest share one process and one database here, so the queue's pass (the send,
//! the receive, the delete: up to three turns of the one writer, and a hand-off between
//! tasks) carried an event to code that could have run where it was. On AWS the stages are
//! separate functions and the queue is what joins them; there the API sends as before.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use hookbridge_core::envelope::Envelope;
use hookbridge_core::ports::{OutgoingMessage, Queue, QueueDepth, Receipt, ReceivedMessage, Unsent};
use hookbridge_core::replay::ReplayPoke;
use ingest::Ingest;
use tokio::sync::Semaphore;

/// Publishing requests routing at once. A tenant's routing list may take up to twice its
/// hook quota (decision 0032), so this bounds the memory publishing adds, as
/// `ingest::TENANTS_AT_ONCE` bounds a consumer's; a publish finding no room is queued, as
/// before, rather than kept waiting.
pub(crate) const ROUTING_AT_ONCE: u32 = 8;

/// How long after its routing began an event whose routing failed may still be queued:
/// only events whose deliveries are dated alike by both are routed here.
const QUEUED_WITHIN: chrono::Duration = chrono::Duration::minutes(1);

/// The ingest queue, with the events sent to it routed at once where they can be.
pub(crate) struct IngestAtPublish {
    queue: Arc<dyn Queue>,
    ingest: Arc<Ingest>,
    room: Semaphore,
    at_once: u32,
}

impl IngestAtPublish {
    /// `queue`, its events routed by `ingest`, at most `at_once` publishes at a time.
    pub(crate) fn new(queue: Arc<dyn Queue>, ingest: Arc<Ingest>, at_once: u32) -> Self {
        Self { queue, ingest, room: Semaphore::new(at_once as usize), at_once }
    }

    /// Once no publish is routing, or queueing what its routing left: a shutdown waits for
    /// it, since what a routing request has begun is on no queue to come back from. Any
    /// publish after it queues its events.
    pub(crate) async fn finished(&self) {
        let all = self.room.acquire_many(self.at_once).await;
        self.room.close();
        drop(all);
    }

    /// The places in `messages` of those ingest did not route; `read` are their events.
    async fn route(&self, messages: &[OutgoingMessage], read: Vec<Envelope>, now: DateTime<Utc>) -> Vec<usize> {
        // Ids of their places: ingest names what failed by message id.
        let received: Vec<ReceivedMessage> = messages
            .iter()
            .enumerate()
            .map(|(i, m)| ReceivedMessage {
                id: i.to_string(),
                body: m.body.clone(),
                receipt: Receipt(format!("published-{i}")),
                receive_count: 1,
                sent_at: now,
            })
            .collect();
        let outcome = ingest::handle_read(&self.ingest, &received, read).await;
        let mut failed: Vec<usize> = outcome.failed.iter().filter_map(|id| id.parse().ok()).collect();
        failed.sort_unstable();
        failed
    }
}

/// The event `m` carries, read as ingest reads it, if it is one sent now that ingest may
/// route here: not a replay job's poke (a page of a replay is the ingest consumer's work,
/// not a request's), and dated by its own `time`, so that if its routing fails part way,
/// the copy queued (sent at the queue's own time) makes the same delivery ids, not a
/// second set. Read once: ingest routes the event as read here.
fn routable(m: &OutgoingMessage, ingest: &Ingest, now: DateTime<Utc>) -> Option<Envelope> {
    if !m.delay.is_zero() || ReplayPoke::parse(&m.body).is_some() {
        return None;
    }
    let e = Envelope::from_bus_json(&m.body, &ingest.settings.account, &ingest.settings.region).ok()?;
    (ingest::time_trusted(e.time, now) && ingest::time_trusted(e.time, now + QUEUED_WITHIN)).then_some(e)
}

#[async_trait]
impl Queue for IngestAtPublish {
    fn name(&self) -> &str {
        self.queue.name()
    }

    async fn send_each(&self, messages: &[OutgoingMessage]) -> Result<(), Unsent> {
        // Held until what the routing left is queued too; taken first, so that events no
        // routing has room for are not read for nothing.
        let Ok(room) = self.room.try_acquire() else {
            return self.queue.send_each(messages).await;
        };
        let now = Utc::now();
        let read: Option<Vec<Envelope>> = messages.iter().map(|m| routable(m, &self.ingest, now)).collect();
        let Some(read) = read.filter(|r| !r.is_empty()) else {
            drop(room);
            return self.queue.send_each(messages).await;
        };
        let unrouted = self.route(messages, read, now).await;
        if unrouted.is_empty() {
            return Ok(());
        }
        let queued: Vec<OutgoingMessage> = unrouted.iter().filter_map(|&i| messages.get(i).cloned()).collect();
        self.queue.send_each(&queued).await.map_err(|unsent| Unsent {
            indices: unsent.indices.iter().filter_map(|&n| unrouted.get(n).copied()).collect(),
            error: unsent.error,
        })
    }

    async fn receive(&self, max: usize, wait: Duration) -> hookbridge_core::Result<Vec<ReceivedMessage>> {
        self.queue.receive(max, wait).await
    }

    async fn ack(&self, receipts: &[Receipt]) -> hookbridge_core::Result<()> {
        self.queue.ack(receipts).await
    }

    async fn retry_after(&self, receipt: &Receipt, delay: Duration) -> hookbridge_core::Result<()> {
        self.queue.retry_after(receipt, delay).await
    }

    async fn depth(&self) -> hookbridge_core::Result<QueueDepth> {
        self.queue.depth().await
    }
}

#[cfg(test)]
mod tests {
    use hookbridge_core::ids::{EventId, HookId, ReplayId};
    use hookbridge_core::replay::PokeFormat;
    use hookbridge_testkit::contract::make_hook;
    use hookbridge_testkit::{EmbeddedHarness, Harness};
    use ingest::{IngestPorts, IngestSettings};

    use super::*;

    fn ingest(h: &dyn Harness) -> Arc<Ingest> {
        Arc::new(Ingest {
            ports: IngestPorts::of(h.backend()),
            settings: IngestSettings {
                account: "1".into(),
                region: "r".into(),
                event_retention: Duration::from_secs(3600),
                routing_most_bytes: hookbridge_core::settings::Quotas::default().routing_most_bytes(),
            },
        })
    }

    fn at_publish(h: &dyn Harness, at_once: u32) -> IngestAtPublish {
        IngestAtPublish::new(h.backend().ingest_queue.clone(), ingest(h), at_once)
    }

    fn event_at(tenant: &str, time: DateTime<Utc>) -> OutgoingMessage {
        let time = time.format("%Y-%m-%dT%H:%M:%SZ");
        let id = EventId::generate();
        OutgoingMessage::now(format!(
            r#"{{"version":"0","id":"{id}","detail-type":"user.login","source":"idp","account":"1","time":"{time}","region":"r","resources":[],"detail":{{"tenant":"{tenant}"}}}}"#
        ))
        .in_group(tenant)
    }

    fn event(tenant: &str) -> OutgoingMessage {
        event_at(tenant, Utc::now())
    }

    /// A tenant of `h` with `hooks` hooks wanting every event.
    async fn tenant_with_hooks(h: &EmbeddedHarness, hooks: usize) -> String {
        let tenant = h.unique("tenant");
        for n in 0..hooks {
            let (hook, _) = make_hook(h, &tenant, &format!("hook-{n}")).await;
            h.backend().hooks.create(&hook, 1000).await.unwrap();
        }
        tenant
    }

    /// The ingest queue's depth and the fast lane's.
    async fn depths(h: &dyn Harness) -> (QueueDepth, QueueDepth) {
        let b = h.backend();
        (b.ingest_queue.depth().await.unwrap(), b.delivery_queue.depth().await.unwrap())
    }

    async fn queued_bodies(h: &dyn Harness) -> Vec<String> {
        let queued = h.backend().ingest_queue.receive(10, Duration::ZERO).await.unwrap();
        queued.into_iter().map(|m| m.body).collect()
    }

    #[tokio::test]
    async fn the_apis_envelopes_are_routable() {
        let h = EmbeddedHarness::start().await;
        let ingest = ingest(&h);
        let routable = |m: &OutgoingMessage, now| routable(m, &ingest, now).is_some();
        let now = Utc::now();
        let entry = |time| hookbridge_core::envelope::BusEntry {
            detail_type: "user.login".into(),
            source: "idp".into(),
            time,
            resources: Vec::new(),
            detail: serde_json::value::RawValue::from_string(r#"{"tenant":"acme"}"#.into()).unwrap(),
        };
        let body = |time| entry(time).into_envelope(EventId::generate_at(now), "1", "r", now).to_body();
        assert!(routable(&OutgoingMessage::now(body(None)), now), "{}", body(None));
        let recent = Some(now - chrono::Duration::minutes(58));
        assert!(routable(&OutgoingMessage::now(body(recent)), now), "{}", body(recent));
        let old = Some(now - chrono::Duration::minutes(60));
        assert!(!routable(&OutgoingMessage::now(body(old)), now), "{}", body(old));
    }

    #[tokio::test]
    async fn a_published_event_is_routed_without_the_ingest_queue() {
        let h = EmbeddedHarness::start().await;
        let tenant = tenant_with_hooks(&h, 1).await;
        at_publish(&h, 1).send_each(&[event(&tenant), event(&tenant)]).await.unwrap();
        let (ingest_queue, lane) = depths(&h).await;
        assert_eq!(ingest_queue.total(), 0, "{ingest_queue:?}");
        assert_eq!(lane.visible, 2, "{lane:?}");
    }

    #[tokio::test]
    async fn what_ingest_cannot_route_is_queued_tenant_by_tenant() {
        let h = EmbeddedHarness::start().await;
        // Shared by two hooks, the second tenant's envelope goes to the event store, which
        // is gone; the first tenant's rides in its one task.
        let (alone, shared) = (tenant_with_hooks(&h, 1).await, tenant_with_hooks(&h, 2).await);
        h.break_the_event_store().await;
        let failing = event(&shared);
        at_publish(&h, 1).send_each(&[failing.clone(), event(&alone)]).await.unwrap();
        assert_eq!(queued_bodies(&h).await, [failing.body]);
        assert_eq!(depths(&h).await.1.visible, 1);
    }

    #[tokio::test]
    async fn a_publish_finding_no_room_is_queued_at_once() {
        let h = EmbeddedHarness::start().await;
        let tenant = tenant_with_hooks(&h, 1).await;
        let sent = tokio::time::timeout(Duration::from_secs(5), at_publish(&h, 0).send_each(&[event(&tenant)])).await;
        assert!(matches!(sent, Ok(Ok(()))), "it should not wait for room");
        let (ingest_queue, lane) = depths(&h).await;
        assert_eq!((ingest_queue.visible, lane.total()), (1, 0), "{ingest_queue:?} {lane:?}");
    }

    #[tokio::test]
    async fn pokes_delayed_messages_and_events_dated_by_their_send_are_left_to_the_queue() {
        let h = EmbeddedHarness::start().await;
        let tenant = tenant_with_hooks(&h, 1).await;
        let at_publish = at_publish(&h, 1);
        let poke = ReplayPoke {
            format: PokeFormat::V1,
            tenant: tenant.parse().unwrap(),
            hook_id: HookId::generate(),
            replay_id: ReplayId::generate(),
        };
        // An event two hours old is dated by when it is handled: routed now and queued
        // after a failure, it would have had two sets of delivery ids.
        let backfilled = event_at(&tenant, Utc::now() - chrono::Duration::hours(2));
        let mut delayed = event(&tenant);
        delayed.delay = Duration::from_secs(60);
        for m in [OutgoingMessage::now(poke.to_body()), backfilled, delayed] {
            at_publish.send_each(&[m]).await.unwrap();
        }
        let (ingest_queue, lane) = depths(&h).await;
        assert_eq!((ingest_queue.visible, ingest_queue.delayed, lane.total()), (2, 1, 0), "{ingest_queue:?} {lane:?}");
    }

    #[tokio::test]
    async fn finished_waits_for_a_routing_under_way() {
        let h = EmbeddedHarness::start().await;
        let tenant = tenant_with_hooks(&h, 1).await;
        let at_publish = Arc::new(at_publish(&h, 2));
        // Its send waits for the writer, so the routing is under way when `finished` is asked.
        let held = h.hold_the_writer(Duration::from_millis(300));
        tokio::time::sleep(Duration::from_millis(50)).await;
        let routing = tokio::spawn({
            let at_publish = Arc::clone(&at_publish);
            let e = event(&tenant);
            async move { at_publish.send_each(&[e]).await }
        });
        tokio::time::sleep(Duration::from_millis(50)).await;
        at_publish.finished().await;
        assert_eq!(depths(&h).await.1.visible, 1, "finished before the routing was");
        routing.await.unwrap().unwrap();
        held.await.unwrap();
        // Finished, it routes no more: a publish then is queued.
        at_publish.send_each(&[event(&tenant)]).await.unwrap();
        let (ingest_queue, lane) = depths(&h).await;
        assert_eq!((ingest_queue.visible, lane.visible), (1, 1), "{ingest_queue:?} {lane:?}");
    }
}
