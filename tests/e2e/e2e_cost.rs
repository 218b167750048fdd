//! What one delivery costs in AWS requests, counted by an SDK interceptor on the AWS
//! backend (the README's table and the benchmark's cost model rest on these numbers).

use hookbridge_e2e::cost::{CostRig, counts_of};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_events_to_one_hook_cost_five_requests_and_ten_write_units_in_the_steady_state() {
    let rig = CostRig::new().await;

    // A cold worker opens the hook's secrets once (KMS) and records the hook's first success.
    // The first publish reads the tenant's rate state, then leases from it, and reads the
    // tenant's declared event types (kept for 10 s). Ingest records the type it saw (once
    // an hour) and writes nothing else: each delivery is written by the worker's record of
    // its attempt, which keeps the envelope with it (decision 0021).
    let began = std::time::Instant::now();
    let r = rig.round(false).await;
    let first_round = began.elapsed();
    assert_eq!(
        r.publish,
        counts_of(&[
            ("DynamoDB.GetItem", 1),
            ("DynamoDB.Query", 1),
            ("DynamoDB.UpdateItem", 1),
            ("SQS.SendMessageBatch", 1)
        ])
    );
    assert_eq!(
        r.ingest,
        counts_of(&[("DynamoDB.Query", 1), ("DynamoDB.BatchWriteItem", 1), ("SQS.SendMessageBatch", 1)])
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

    // Warm: one publish (and one lease of the tenant's publish rate, which a call pays at
    // most once a second or once per 50 events), two ingest requests and two worker
    // requests for ten deliveries.
    let mut r = rig.round(false).await;
    // The types read by the first publish are still kept when this one comes within their
    // 10 s, as it does unless the emulator took that long over the first round (both
    // publishes come a second into their round).
    let types_read = r.publish.remove("DynamoDB.Query").unwrap_or(0);
    if first_round < subscription_api::SCHEMAS_KEPT_FOR {
        assert_eq!(types_read, 0, "the declared types read again {first_round:?} after");
    } else {
        assert!(types_read <= 1, "{types_read} reads of the declared types");
    }
    assert_eq!(r.publish, counts_of(&[("DynamoDB.UpdateItem", 1), ("SQS.SendMessageBatch", 1)]));
    assert_eq!(r.ingest, counts_of(&[("DynamoDB.Query", 1), ("SQS.SendMessageBatch", 1)]));
    assert_eq!(r.worker, counts_of(&[("DynamoDB.BatchGetItem", 1), ("DynamoDB.BatchWriteItem", 1)]));

    // What those writes hold: one item per delivery, each within one write unit (1 KiB).
    let sizes = rig.delivery_items().await;
    assert_eq!(sizes.len(), 20, "one item for each of the twenty deliveries");
    assert!(sizes.iter().all(|s| *s <= 1024), "each a single write unit: {sizes:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retry_costs_a_tenth_of_a_send_per_delivery_and_batched_writes() {
    let rig = CostRig::new().await;
    rig.round(false).await;
    let r = rig.round(true).await;
    // Two worker batches: the failing one (one hook read, one attempt write, one health
    // write, and the ten retries sent back delayed in one batch, never held in flight) and
    // the retry (one hook read, one attempt write, one health write).
    assert_eq!(
        r.worker,
        counts_of(&[
            ("DynamoDB.BatchGetItem", 2),
            ("DynamoDB.BatchWriteItem", 2),
            ("DynamoDB.PutItem", 2),
            ("SQS.SendMessageBatch", 1),
        ])
    );
}

/// An `Idempotency-Key`, or a producer's event id, costs its claim, a look at the other side
/// of the claims' move (decision 0027) and its answer: the look is the one request the move
/// adds, and only to calls that ask not to publish twice. A repeat is answered from the
/// claim and sends nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_or_a_producer_id_costs_a_claim_a_look_and_an_answer() {
    let rig = CostRig::new().await;
    rig.round(false).await;
    // The declared event types are kept 10 s, so whether a call reads them again depends
    // on how long the emulator took so far: left out.
    let publish = |headers: &'static [(&'static str, &'static str)], events: serde_json::Value| {
        let rig = &rig;
        async move {
            let (status, mut counts) = rig.publish(headers, &events).await;
            counts.remove("DynamoDB.Query");
            (status, counts)
        }
    };
    let one = serde_json::json!([{"detail-type": "user.login", "source": "idp", "detail": {}}]);

    // The claim, the look, the answer, beside the publish lease and the send.
    let (status, counts) = publish(&[("idempotency-key", "k-1")], one.clone()).await;
    assert_eq!(status, 202);
    assert_eq!(
        counts,
        counts_of(&[
            ("DynamoDB.GetItem", 1),
            ("DynamoDB.PutItem", 1),
            ("DynamoDB.UpdateItem", 2),
            ("SQS.SendMessageBatch", 1)
        ])
    );

    // The repeat: the claim is refused and read, and the first answer given again.
    let (status, counts) = publish(&[("idempotency-key", "k-1")], one).await;
    assert_eq!(status, 202);
    assert_eq!(counts.get("SQS.SendMessageBatch"), None, "nothing published again: {counts:?}");
    assert_eq!(counts.get("DynamoDB.PutItem"), Some(&1), "{counts:?}");
    assert_eq!(counts.get("DynamoDB.GetItem"), Some(&1), "{counts:?}");

    // Producer ids: each event's claim, look and answer.
    let two = serde_json::json!([
        {"id": "p-1", "detail-type": "user.login", "source": "idp", "detail": {}},
        {"id": "p-2", "detail-type": "user.login", "source": "idp", "detail": {}}
    ]);
    let (status, counts) = publish(&[], two).await;
    assert_eq!(status, 202);
    assert_eq!(
        counts,
        counts_of(&[
            ("DynamoDB.GetItem", 2),
            ("DynamoDB.PutItem", 2),
            ("DynamoDB.UpdateItem", 3),
            ("SQS.SendMessageBatch", 1)
        ])
    );
}
