//! The embedded queues serve message groups in turn, as SQS fair queues do on AWS: a
//! group with a backlog does not hold back another group's messages.

#![allow(clippy::unwrap_used)] // Tests fail loudly on purpose.

use std::time::Duration;

use hookbridge_core::ports::{OutgoingMessage, Queue};
use hookbridge_core::topology::Topology;
use hookbridge_embedded::{Db, EmbeddedConfig, EmbeddedQueue};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_groups_backlog_does_not_hold_back_another_groups_message() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = EmbeddedConfig::at(dir.path().join("hb.db"));
    config.topology = Topology::named("fair");
    hookbridge_embedded::init(&config).await.unwrap();
    let q = EmbeddedQueue::new(Db::open(&config.database).unwrap(), &config.topology.delivery.name);

    let backlog: Vec<_> = (0..500).map(|i| OutgoingMessage::now(format!("noisy-{i}")).in_group("noisy")).collect();
    q.send_batch(&backlog).await.unwrap();
    q.send_batch(&[OutgoingMessage::now("calm-0".into()).in_group("calm")]).await.unwrap();

    // The first receive after it was sent already has the calm group's message, ahead of
    // 500 older ones.
    let got = q.receive(10, Duration::from_secs(1)).await.unwrap();
    assert_eq!(got.len(), 10, "a full batch");
    assert!(got.iter().any(|m| m.body == "calm-0"), "{:?}", got.iter().map(|m| &m.body).collect::<Vec<_>>());
    // Within a group, oldest first.
    let noisy: Vec<_> = got.iter().filter(|m| m.body.starts_with("noisy")).map(|m| m.body.clone()).collect();
    assert_eq!(noisy, (0..9).map(|i| format!("noisy-{i}")).collect::<Vec<_>>());
    // A lone group still gets whole batches.
    let got = q.receive(10, Duration::from_secs(1)).await.unwrap();
    assert_eq!(got.len(), 10);
}

/// Groups with nothing receivable (a failing hook's retries, waiting out their delay) do
/// not use up a receive's turns: a quiet group's new message comes with the next receive
/// after the backlog's, not one receive per 32 waiting groups later.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn groups_with_only_waiting_messages_do_not_hide_a_quiet_groups_message() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = EmbeddedConfig::at(dir.path().join("hb.db"));
    config.topology = Topology::named("fair");
    hookbridge_embedded::init(&config).await.unwrap();
    let q = EmbeddedQueue::new(Db::open(&config.database).unwrap(), &config.topology.delivery.name);

    let mut waiting: Vec<_> = (0..200)
        .map(|i| {
            let mut m = OutgoingMessage::now(format!("retry-{i}")).in_group(format!("m{i:03}"));
            m.delay = Duration::from_secs(600);
            m
        })
        .collect();
    waiting.extend((0..100).map(|i| OutgoingMessage::now(format!("noisy-{i}")).in_group("a")));
    for chunk in waiting.chunks(10) {
        q.send_batch(chunk).await.unwrap();
    }
    q.send_batch(&[OutgoingMessage::now("calm-0".into()).in_group("z")]).await.unwrap();

    // Groups sort `a`, `m000`…`m199`, `z`: the first receive serves `a`, the next must
    // look past the 200 waiting groups to find `z`.
    let mut got = Vec::new();
    for _ in 0..2 {
        got.extend(q.receive(1, Duration::from_secs(1)).await.unwrap().into_iter().map(|m| m.body));
    }
    assert!(got.contains(&"calm-0".to_owned()), "{got:?}");
}
