//! Messages that can never be handled reach their dead-letter queue; none is acknowledged
//! unread.

use std::time::Duration;

use hookbridge_core::ports::{OutgoingMessage, Queue};
use hookbridge_e2e::{TestStack, eventually, on_both_backends};

async fn dead_letters_garbage(stack: &TestStack, queue: &dyn Queue, dlq_name: &str) {
    queue.send_batch(&[OutgoingMessage::now("this is not json".to_owned())]).await.unwrap();
    let dlq = stack.queue(dlq_name).await;
    let dead = eventually(stack.flavor().patience(Duration::from_secs(30)), || async {
        let got = dlq.receive(10, Duration::from_millis(200)).await.unwrap();
        (!got.is_empty()).then_some(got)
    })
    .await
    .expect("the malformed message reaches the DLQ");
    assert_eq!(dead[0].body, "this is not json");
    assert_eq!(queue.depth().await.unwrap().total(), 0, "nothing left behind");
}

on_both_backends! {
async fn malformed_messages_on_every_queue_are_dead_lettered_not_acknowledged(flavor: Flavor) {
    let stack = TestStack::start(flavor).await;
    let t = stack.settings().topology.clone();
    let b = stack.stack().backend().clone();
    dead_letters_garbage(&stack, b.ingest_queue.as_ref(), &t.ingest.dlq).await;
    dead_letters_garbage(&stack, b.delivery_queue.as_ref(), &t.delivery.dlq).await;
    dead_letters_garbage(&stack, b.verify_queue.as_ref(), &t.verify.dlq).await;
    stack.shutdown().await;
}
}
