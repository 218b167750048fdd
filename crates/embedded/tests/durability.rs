//! The embedded backend's queues survive a restart of the process that holds them.

#![allow(clippy::unwrap_used)] // Tests fail loudly on purpose.

use std::time::Duration;

use hookbridge_core::ports::{OutgoingMessage, Queue};
use hookbridge_core::topology::Topology;
use hookbridge_embedded::{Db, EmbeddedConfig, EmbeddedQueue, create_queue};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queued_and_in_flight_messages_survive_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = EmbeddedConfig::at(dir.path().join("hb.db"));
    let mut topology = Topology::named("durable");
    topology.delivery.visibility_timeout = Duration::from_secs(1);
    config.topology = topology.clone();
    {
        let backend = hookbridge_embedded::init(&config).await.unwrap();
        let q = backend.delivery_queue.clone();
        q.send_batch(&[OutgoingMessage::now("first".into()), OutgoingMessage::now("second".into())]).await.unwrap();
        let got = q.receive(1, Duration::from_secs(1)).await.unwrap();
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].body, "first");
        // Dropped here without acknowledging: the process "dies" holding one message.
    }
    let backend = hookbridge_embedded::open(&config).unwrap();
    let q = backend.delivery_queue.clone();
    let mut bodies = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while bodies.len() < 2 && tokio::time::Instant::now() < deadline {
        for m in q.receive(10, Duration::from_secs(1)).await.unwrap() {
            bodies.push((m.body.clone(), m.receive_count));
            q.ack(&[m.receipt]).await.unwrap();
        }
    }
    bodies.sort();
    // The one in flight comes back once its visibility timeout passes, counted twice.
    assert_eq!(bodies, vec![("first".to_owned(), 2), ("second".to_owned(), 1)]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dead_letter_queue_is_durable_too() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("hb.db");
    let spec = hookbridge_core::topology::QueueSpec {
        name: "q".into(),
        dlq: "q-dlq".into(),
        visibility_timeout: Duration::from_secs(30),
        max_receive_count: 1,
    };
    {
        let db = Db::open(&path).unwrap();
        create_queue(&db, &spec).await.unwrap();
        let q = EmbeddedQueue::new(db, "q");
        q.send_batch(&[OutgoingMessage::now("poison".into())]).await.unwrap();
        let m = q.receive(1, Duration::from_secs(1)).await.unwrap().remove(0);
        q.retry_after(&m.receipt, Duration::ZERO).await.unwrap();
        assert!(q.receive(1, Duration::ZERO).await.unwrap().is_empty());
    }
    let dlq = EmbeddedQueue::new(Db::open(&path).unwrap(), "q-dlq");
    let dead = dlq.receive(1, Duration::from_secs(1)).await.unwrap();
    assert_eq!(dead.len(), 1);
    assert_eq!(dead[0].body, "poison");
}
