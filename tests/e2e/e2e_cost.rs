//! What one delivery costs in AWS requests, counted by an SDK interceptor on the AWS
//! backend (the README's table and the benchmark's cost model rest on these numbers).

use hookbridge_e2e::cost::{CostRig, counts_of};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_events_to_one_hook_cost_seven_requests_in_the_steady_state() {
    let rig = CostRig::new().await;

    // A cold worker opens the hook's secrets once (KMS) and records the hook's first success.
    let r = rig.round(false).await;
    assert_eq!(r.publish, counts_of(&[("EventBridge.PutEvents", 1)]));
    assert_eq!(
        r.ingest,
        counts_of(&[("DynamoDB.Query", 1), ("DynamoDB.BatchWriteItem", 2), ("SQS.SendMessageBatch", 1)])
    );
    assert_eq!(
        r.worker,
        counts_of(&[
            ("DynamoDB.BatchGetItem", 1),
            ("DynamoDB.BatchWriteItem", 1),
            ("DynamoDB.PutItem", 1),
            ("KMS.Decrypt", 1)
        ])
    );

    // Warm: one publish, four ingest requests and two worker requests for ten deliveries.
    let r = rig.round(false).await;
    assert_eq!(r.publish, counts_of(&[("EventBridge.PutEvents", 1)]));
    assert_eq!(
        r.ingest,
        counts_of(&[("DynamoDB.Query", 1), ("DynamoDB.BatchWriteItem", 2), ("SQS.SendMessageBatch", 1)])
    );
    assert_eq!(r.worker, counts_of(&[("DynamoDB.BatchGetItem", 1), ("DynamoDB.BatchWriteItem", 1)]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retry_costs_one_visibility_change_per_delivery_and_batched_writes() {
    let rig = CostRig::new().await;
    rig.round(false).await;
    let r = rig.round(true).await;
    // Two worker batches: the failing one (ten visibility changes, one attempt write, one
    // health write) and the retry (one hook read, one attempt write, one health write).
    assert_eq!(
        r.worker,
        counts_of(&[
            ("DynamoDB.BatchGetItem", 2),
            ("DynamoDB.BatchWriteItem", 2),
            ("DynamoDB.PutItem", 2),
            ("SQS.ChangeMessageVisibility", 10),
        ])
    );
}
