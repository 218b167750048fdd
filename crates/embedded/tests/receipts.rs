//! Receipts: a receipt names one receive of one message. The row is found by the seq the
//! receipt carries, so these pin that the receipt itself is still what decides.

#![allow(clippy::unwrap_used)] // Tests fail loudly on purpose.

use std::time::Duration;

use hookbridge_core::ports::{OutgoingMessage, Queue, Receipt};
use hookbridge_core::topology::Topology;
use hookbridge_embedded::{EmbeddedConfig, EmbeddedQueue};

async fn queue() -> (EmbeddedQueue, EmbeddedConfig, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let mut config = EmbeddedConfig::at(dir.path().join("hb.db"));
    config.topology = Topology::named("receipts");
    hookbridge_embedded::init(&config).await.unwrap();
    let db = hookbridge_embedded::Db::open(&config.database).unwrap();
    (EmbeddedQueue::new(db, &config.topology.delivery.name), config, dir)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_receipt_from_an_earlier_receive_neither_deletes_nor_postpones_the_message() {
    let (q, _config, _dir) = queue().await;
    q.send_batch(&[OutgoingMessage::now("m".into())]).await.unwrap();
    let first = q.receive(1, Duration::from_secs(1)).await.unwrap().remove(0);
    q.retry_after(&first.receipt, Duration::ZERO).await.unwrap();
    let second = q.receive(1, Duration::from_secs(1)).await.unwrap().remove(0);
    assert_eq!(second.id, first.id);
    assert_ne!(second.receipt, first.receipt);

    q.ack(std::slice::from_ref(&first.receipt)).await.unwrap();
    q.retry_after(&first.receipt, Duration::from_secs(3600)).await.unwrap();
    q.ack(&[Receipt("not-a-receipt".into()), Receipt("12.x".into())]).await.unwrap();
    let depth = q.depth().await.unwrap();
    assert_eq!((depth.in_flight, depth.delayed, depth.visible), (1, 0, 0), "{depth:?}");

    // The latest receipt still works, and was not postponed by the stale one.
    q.retry_after(&second.receipt, Duration::ZERO).await.unwrap();
    let third = q.receive(1, Duration::from_secs(1)).await.unwrap().remove(0);
    assert_eq!(third.receive_count, 3);
    q.ack(&[third.receipt]).await.unwrap();
    assert_eq!(q.depth().await.unwrap().total(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_database_made_with_the_receipt_index_loses_it_and_keeps_its_messages() {
    let (q, config, _dir) = queue().await;
    q.send_batch(&[OutgoingMessage::now("kept".into())]).await.unwrap();
    drop(q);
    {
        let c = rusqlite::Connection::open(&config.database).unwrap();
        c.execute_batch("CREATE INDEX messages_receipt ON messages (receipt)").unwrap();
    }
    let db = hookbridge_embedded::Db::open(&config.database).unwrap();
    let c = rusqlite::Connection::open(&config.database).unwrap();
    let indexes: i64 = c
        .query_row("SELECT COUNT(*) FROM sqlite_master WHERE type = 'index' AND name = 'messages_receipt'", [], |r| {
            r.get(0)
        })
        .unwrap();
    assert_eq!(indexes, 0);
    let q = EmbeddedQueue::new(db, &config.topology.delivery.name);
    let m = q.receive(1, Duration::from_secs(1)).await.unwrap().remove(0);
    assert_eq!(m.body, "kept");
    q.ack(&[m.receipt]).await.unwrap();
    assert_eq!(q.depth().await.unwrap().total(), 0);
}
