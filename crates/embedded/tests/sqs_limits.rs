//! SQS's limits, which the emulator does not enforce and the embedded queues do, so a
//! design that would break them on AWS breaks in tests too.

#![allow(clippy::unwrap_used)] // Tests fail loudly on purpose.

use std::time::Duration;

use hookbridge_core::Error;
use hookbridge_core::ports::{OutgoingMessage, Queue};
use hookbridge_core::topology::Topology;
use hookbridge_embedded::{EmbeddedConfig, EmbeddedQueue};

async fn queue() -> (EmbeddedQueue, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let mut config = EmbeddedConfig::at(dir.path().join("hb.db"));
    config.topology = Topology::named("limits");
    hookbridge_embedded::init(&config).await.unwrap();
    let db = hookbridge_embedded::Db::open(&config.database).unwrap();
    (EmbeddedQueue::new(db, &config.topology.delivery.name), dir)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_visibility_reaching_past_twelve_hours_from_the_receive_is_refused() {
    let (q, _dir) = queue().await;
    q.send_batch(&[OutgoingMessage::now("m".into())]).await.unwrap();
    let m = q.receive(1, Duration::from_secs(1)).await.unwrap().remove(0);
    let err = q.retry_after(&m.receipt, Duration::from_secs(13 * 3600)).await.unwrap_err();
    assert!(matches!(err, Error::TooLarge(_)), "{err:?}");
    q.retry_after(&m.receipt, Duration::from_secs(11 * 3600)).await.unwrap();
    assert_eq!(q.depth().await.unwrap().in_flight, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn receives_are_refused_while_the_queue_holds_its_limit_in_flight() {
    let (q, _dir) = queue().await;
    q.set_max_in_flight(3).await.unwrap();
    let msgs: Vec<_> = (0..5).map(|i| OutgoingMessage::now(format!("m{i}"))).collect();
    q.send_batch(&msgs).await.unwrap();
    let held = q.receive(3, Duration::from_secs(1)).await.unwrap();
    assert_eq!(held.len(), 3);
    // The count is read at most once a second, as SQS's is approximate.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let err = q.receive(1, Duration::ZERO).await.unwrap_err();
    assert!(err.to_string().contains("OverLimit"), "{err}");
    // Delayed messages are not in flight: sending more with a delay changes nothing.
    q.send_batch(&[OutgoingMessage { delay: Duration::from_secs(60), ..OutgoingMessage::now("later".into()) }])
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let err = q.receive(1, Duration::ZERO).await.unwrap_err();
    assert!(err.to_string().contains("OverLimit"), "{err}");
    q.ack(&[held[0].receipt.clone()]).await.unwrap();
    tokio::time::sleep(Duration::from_millis(1100)).await;
    assert_eq!(q.receive(1, Duration::from_secs(1)).await.unwrap().len(), 1);
}
