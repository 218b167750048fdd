//! A worker group's records, follow-ups and deletions are written as one: all or none.

#![allow(clippy::unwrap_used)] // Tests fail loudly on purpose.

use std::time::Duration;

use chrono::Utc;
use hookbridge_core::delivery::{DeliveryKey, DeliveryStatus, DeliveryUpdate};
use hookbridge_core::ids::{DeliveryId, EventId, HookId};
use hookbridge_core::ports::{Backend, CarriedOn, OutgoingMessage, Queue, QueueDepth, Receipt, Settled};
use hookbridge_embedded::EmbeddedConfig;

fn cancelled(hook_id: HookId, delivery_id: DeliveryId) -> DeliveryUpdate {
    let key = DeliveryKey {
        tenant: "acme".parse().unwrap(),
        hook_id,
        delivery_id,
        event_id: EventId::generate(),
        event_type: "user.login".into(),
    };
    DeliveryUpdate::cancelled(key, 0, "settled by the test".into(), Utc::now())
}

/// `body`, sent on behalf of the message `receipt` holds.
fn carried(body: &str, receipt: &Receipt) -> CarriedOn {
    CarriedOn { message: OutgoingMessage::now(body.into()), replaces: receipt.clone() }
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
    // Its visibility timeout runs out; the message is received a second time.
    b.delivery_queue.retry_after(&first, Duration::ZERO).await.unwrap();
    let second = b.delivery_queue.receive(1, Duration::from_secs(1)).await.unwrap().remove(0);
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
