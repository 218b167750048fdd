//! A worker group's records, follow-ups and deletions are written as one: all or none.

#![allow(clippy::unwrap_used)] // Tests fail loudly on purpose.

use std::time::Duration;

use chrono::Utc;
use hookbridge_core::delivery::{Attempt, DeliveryKey, DeliveryStatus, DeliveryUpdate};
use hookbridge_core::ids::{DeliveryId, EventId, HookId};
use hookbridge_core::ports::{
    Backend, CarriedOn, OutgoingMessage, Queue, QueueDepth, Receipt, ReceivedMessage, Settled,
};
use hookbridge_embedded::EmbeddedConfig;

fn key(hook_id: HookId, delivery_id: DeliveryId) -> DeliveryKey {
    DeliveryKey {
        tenant: "acme".parse().unwrap(),
        hook_id,
        delivery_id,
        event_id: EventId::generate(),
        event_type: "user.login".into(),
    }
}

fn cancelled(hook_id: HookId, delivery_id: DeliveryId) -> DeliveryUpdate {
    DeliveryUpdate::cancelled(key(hook_id, delivery_id), 0, "settled by the test".into(), Utc::now())
}

/// `body`, sent on behalf of the message `receipt` holds.
fn carried(body: &str, receipt: &Receipt) -> CarriedOn {
    CarriedOn { record: None, message: OutgoingMessage::now(body.into()), replaces: receipt.clone() }
}

/// [`carried`], carrying on the delivery of the settlement's update at `record`.
fn carried_for(record: usize, body: &str, receipt: &Receipt) -> CarriedOn {
    CarriedOn { record: Some(record), ..carried(body, receipt) }
}

/// An attempt answered `500` at `at`.
fn failed_attempt(at: chrono::DateTime<Utc>) -> Attempt {
    Attempt {
        attempt: 1,
        at,
        duration_ms: 5,
        status_code: Some(500),
        error_class: None,
        response_excerpt: Some("try later".into()),
    }
}

async fn depth(q: &dyn Queue) -> QueueDepth {
    q.depth().await.unwrap()
}

/// A backend with one message received from the fast lane, and its receipt.
async fn one_received(config: &EmbeddedConfig) -> (Backend, Receipt) {
    let b = hookbridge_embedded::init(config).await.unwrap();
    b.delivery_queue.send_batch(&[OutgoingMessage::now("task".into())]).await.unwrap();
    let m = b.delivery_queue.receive(1, Duration::from_secs(1)).await.unwrap().remove(0);
    (b, m.receipt)
}

/// The message `first` holds, received a second time once its visibility timeout ran out
/// (by another holder).
async fn received_again(b: &Backend, first: &Receipt) -> ReceivedMessage {
    b.delivery_queue.retry_after(first, Duration::ZERO).await.unwrap();
    b.delivery_queue.receive(1, Duration::from_secs(1)).await.unwrap().remove(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_settlement_records_sends_and_deletes_together() {
    let dir = tempfile::tempdir().unwrap();
    let config = EmbeddedConfig::at(dir.path().join("hb.db"));
    let (b, receipt) = one_received(&config).await;
    let (hook, delivery) = (HookId::generate(), DeliveryId::generate());
    let sends = [(b.slow_queue.name(), vec![carried("carried on", &receipt)])];
    let settled = Settled { updates: &[cancelled(hook, delivery)], sends: &sends, acks: &[receipt] };
    b.settlement.as_ref().unwrap().settle(settled).await.unwrap();

    let d = b.deliveries.get(hook, delivery).await.unwrap().expect("recorded");
    assert_eq!(d.status, DeliveryStatus::Cancelled);
    let carried = b.slow_queue.receive(10, Duration::from_secs(1)).await.unwrap();
    assert_eq!(carried.iter().map(|m| m.body.as_str()).collect::<Vec<_>>(), ["carried on"]);
    assert_eq!(depth(b.delivery_queue.as_ref()).await, QueueDepth { visible: 0, in_flight: 0, delayed: 0 });
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_settlement_that_fails_writes_nothing_and_the_message_stays() {
    let dir = tempfile::tempdir().unwrap();
    let config = EmbeddedConfig::at(dir.path().join("hb.db"));
    let (b, receipt) = one_received(&config).await;
    let (hook, good) = (HookId::generate(), DeliveryId::generate());
    // The second send fails, after the record and the first send were written.
    rusqlite::Connection::open(&config.database)
        .unwrap()
        .execute_batch(
            "CREATE TRIGGER refuse BEFORE INSERT ON messages WHEN NEW.body = 'refused'
             BEGIN SELECT RAISE(ABORT, 'refused by the test'); END;",
        )
        .unwrap();
    let sends = [(b.slow_queue.name(), vec![carried("carried on", &receipt), carried("refused", &receipt)])];
    let updates = [cancelled(hook, good)];
    let settled = Settled { updates: &updates, sends: &sends, acks: &[receipt] };
    assert!(b.settlement.as_ref().unwrap().settle(settled).await.is_err());

    assert!(b.deliveries.get(hook, good).await.unwrap().is_none(), "the record was written");
    assert_eq!(depth(b.slow_queue.as_ref()).await, QueueDepth { visible: 0, in_flight: 0, delayed: 0 });
    assert_eq!(depth(b.delivery_queue.as_ref()).await, QueueDepth { visible: 0, in_flight: 1, delayed: 0 });
}

/// A stored record this version cannot read (a newer version's, an edit by hand) does not
/// fail its group: its update is recorded afresh, and the group's other records, sends and
/// deletions are written. The whole group failed every time it came back, so deliveries
/// already sent were sent again until they went to the dead-letter queue, never recorded.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stored_record_that_cannot_be_read_does_not_fail_its_group() {
    let dir = tempfile::tempdir().unwrap();
    let config = EmbeddedConfig::at(dir.path().join("hb.db"));
    let (b, receipt) = one_received(&config).await;
    let (hook, good, unreadable) = (HookId::generate(), DeliveryId::generate(), DeliveryId::generate());
    rusqlite::Connection::open(&config.database)
        .unwrap()
        .execute(
            "INSERT INTO deliveries (hook_id, id, doc, expires_at) VALUES (?1, ?2, 'not json', ?3)",
            rusqlite::params![hook.to_string(), unreadable.to_string(), i64::MAX],
        )
        .unwrap();
    let updates = [cancelled(hook, good), cancelled(hook, unreadable)];
    let settled = Settled { updates: &updates, sends: &[], acks: &[receipt] };
    b.settlement.as_ref().unwrap().settle(settled).await.unwrap();

    for id in [good, unreadable] {
        let d = b.deliveries.get(hook, id).await.unwrap().expect("recorded");
        assert_eq!(d.status, DeliveryStatus::Cancelled);
    }
    assert_eq!(depth(b.delivery_queue.as_ref()).await, QueueDepth { visible: 0, in_flight: 0, delayed: 0 });
}

/// A worker held its message past the visibility timeout, and the message was received
/// again. The first holder's settlement keeps its record (the attempt was made) but sends
/// no retry: the second holder carries the delivery on, and with both retries the delivery
/// went on in two chains, each sending to the receiver until it ended.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_settlement_whose_message_was_received_again_sends_no_follow_up() {
    let dir = tempfile::tempdir().unwrap();
    let config = EmbeddedConfig::at(dir.path().join("hb.db"));
    let (b, first) = one_received(&config).await;
    let second = received_again(&b, &first).await;
    assert_eq!(second.receive_count, 2);

    let (hook, delivery) = (HookId::generate(), DeliveryId::generate());
    let sends = [(b.slow_queue.name(), vec![carried("first holder's retry", &first)])];
    let settled = Settled { updates: &[cancelled(hook, delivery)], sends: &sends, acks: &[first] };
    b.settlement.as_ref().unwrap().settle(settled).await.unwrap();

    assert!(b.deliveries.get(hook, delivery).await.unwrap().is_some(), "the attempt is recorded");
    assert_eq!(depth(b.slow_queue.as_ref()).await, QueueDepth { visible: 0, in_flight: 0, delayed: 0 });
    assert_eq!(
        depth(b.delivery_queue.as_ref()).await,
        QueueDepth { visible: 0, in_flight: 1, delayed: 0 },
        "the second holder still has the message"
    );

    let sends = [(b.slow_queue.name(), vec![carried("second holder's retry", &second.receipt)])];
    let settled = Settled { updates: &[], sends: &sends, acks: std::slice::from_ref(&second.receipt) };
    b.settlement.as_ref().unwrap().settle(settled).await.unwrap();
    let carried_on = b.slow_queue.receive(10, Duration::from_secs(1)).await.unwrap();
    assert_eq!(carried_on.iter().map(|m| m.body.as_str()).collect::<Vec<_>>(), ["second holder's retry"]);
    assert_eq!(depth(b.delivery_queue.as_ref()).await, QueueDepth { visible: 0, in_flight: 0, delayed: 0 });
}

/// A worker held its message past the visibility timeout; a second holder received it
/// again, tried once more and gave the delivery up. The first holder's settlement, written
/// after, keeps its attempt and leaves the status as the second wrote it: its `RETRYING`
/// promised a retry it does not send, and over `FAILED` the delivery read as waiting for
/// one for its 14 days, never retried and never failed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_late_settlement_of_a_message_received_again_leaves_the_status_to_its_second_holder() {
    let dir = tempfile::tempdir().unwrap();
    let config = EmbeddedConfig::at(dir.path().join("hb.db"));
    let (b, first) = one_received(&config).await;
    let second = received_again(&b, &first).await;
    let settlement = b.settlement.as_ref().unwrap();
    let (hook, delivery) = (HookId::generate(), DeliveryId::generate());
    let started = Utc::now();

    // The second holder's last attempt fails, and it gives the delivery up.
    let mut gave_up = DeliveryUpdate::given_up(key(hook, delivery), 0, "gave up".into(), started);
    gave_up.attempt = Some(failed_attempt(started));
    let acks = std::slice::from_ref(&second.receipt);
    settlement.settle(Settled { updates: &[gave_up.clone()], sends: &[], acks }).await.unwrap();

    // The first holder's attempt, made before, is settled after: a retry in a minute.
    let later = started + chrono::Duration::seconds(1);
    let retrying = DeliveryUpdate {
        attempt: Some(failed_attempt(started - chrono::Duration::seconds(200))),
        status: DeliveryStatus::Retrying,
        next_attempt_at: Some(later + chrono::Duration::minutes(1)),
        note: None,
        at: later,
        ..gave_up
    };
    let sends = [(b.slow_queue.name(), vec![carried_for(0, "first holder's retry", &first)])];
    settlement.settle(Settled { updates: &[retrying], sends: &sends, acks: &[first] }).await.unwrap();

    let d = b.deliveries.get(hook, delivery).await.unwrap().unwrap();
    assert_eq!((d.status, d.next_attempt_at, d.note.as_deref()), (DeliveryStatus::Failed, None, Some("gave up")));
    assert_eq!(d.attempts.len(), 2, "both holders' attempts are kept");
    assert_eq!(depth(b.slow_queue.as_ref()).await, QueueDepth { visible: 0, in_flight: 0, delayed: 0 });

    // A holder that still has its message records its status, as ever.
    let other = DeliveryId::generate();
    b.delivery_queue.send_batch(&[OutgoingMessage::now("task".into())]).await.unwrap();
    let held = b.delivery_queue.receive(1, Duration::from_secs(1)).await.unwrap().remove(0);
    let mut retrying = DeliveryUpdate::given_up(key(hook, other), 0, String::new(), later);
    (retrying.status, retrying.note) = (DeliveryStatus::Retrying, None);
    let sends = [(b.slow_queue.name(), vec![carried_for(0, "a retry", &held.receipt)])];
    let acks = std::slice::from_ref(&held.receipt);
    settlement.settle(Settled { updates: &[retrying], sends: &sends, acks }).await.unwrap();
    assert_eq!(b.deliveries.get(hook, other).await.unwrap().unwrap().status, DeliveryStatus::Retrying);

    // Two messages of one delivery in one group (two chains of a round): the one no longer
    // held keeps only its attempt, the other's delivered is recorded.
    let twice = DeliveryId::generate();
    let tasks = [OutgoingMessage::now("a".into()), OutgoingMessage::now("b".into())];
    b.delivery_queue.send_batch(&tasks).await.unwrap();
    let both = b.delivery_queue.receive(2, Duration::from_secs(1)).await.unwrap();
    received_again(&b, &both[0].receipt).await;
    let mut retrying = DeliveryUpdate::given_up(key(hook, twice), 0, String::new(), later);
    (retrying.status, retrying.note) = (DeliveryStatus::Retrying, None);
    let delivered = DeliveryUpdate { status: DeliveryStatus::Succeeded, ..retrying.clone() };
    let sends = [(b.slow_queue.name(), vec![carried_for(0, "a retry", &both[0].receipt)])];
    let acks = [both[0].receipt.clone(), both[1].receipt.clone()];
    settlement.settle(Settled { updates: &[retrying, delivered], sends: &sends, acks: &acks }).await.unwrap();
    assert_eq!(b.deliveries.get(hook, twice).await.unwrap().unwrap().status, DeliveryStatus::Succeeded);
}

/// A follow-up is held to a queue message's size, as every send is.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_settlement_with_a_follow_up_over_the_message_size_writes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let config = EmbeddedConfig::at(dir.path().join("hb.db"));
    let (b, receipt) = one_received(&config).await;
    let (hook, delivery) = (HookId::generate(), DeliveryId::generate());
    let huge = "x".repeat(hookbridge_core::ports::MAX_MESSAGE_BYTES + 1);
    let sends = [(b.slow_queue.name(), vec![carried(&huge, &receipt)])];
    let settled = Settled { updates: &[cancelled(hook, delivery)], sends: &sends, acks: &[receipt] };
    let e = b.settlement.as_ref().unwrap().settle(settled).await.unwrap_err();
    assert!(matches!(e, hookbridge_core::Error::TooLarge(_)), "{e}");

    assert!(b.deliveries.get(hook, delivery).await.unwrap().is_none(), "the record was written");
    assert_eq!(depth(b.delivery_queue.as_ref()).await, QueueDepth { visible: 0, in_flight: 1, delayed: 0 });
}
