//! The backend contract on the AWS backend, against the emulator.

#![allow(clippy::unwrap_used)] // Tests fail loudly on purpose.

hookbridge_testkit::contract_tests!(hookbridge_testkit::AwsHarness::start());

/// Every stage reads what another just wrote (the worker an envelope ingest stored, the API
/// a hook it changed): no read may be eventually consistent, or it could miss the write.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_read_is_strongly_consistent() {
    let counter = hookbridge_aws::RequestCounter::default();
    let h = hookbridge_testkit::AwsHarness::start_counted(Some(&counter)).await;
    use hookbridge_testkit::contract as c;
    c::events_put_get_and_isolation(&h).await;
    c::hooks_create_get_and_tenant_isolation(&h).await;
    c::hooks_list_paginates_in_creation_order(&h).await;
    c::hooks_get_many_returns_what_exists(&h).await;
    c::hooks_scan_pages_through_every_tenant(&h).await;
    c::deliveries_list_a_time_window_newest_first_with_pagination(&h).await;
    c::idempotency_claims_completes_and_releases(&h).await;
    c::limiter_paces_and_admits_across_handles(&h).await;
    let reads: u64 = counter
        .snapshot()
        .iter()
        .filter(|((_, op), _)| ["GetItem", "BatchGetItem", "Query", "Scan"].contains(&op.as_str()))
        .map(|(_, n)| n)
        .sum();
    assert!(reads > 20, "the cases read ({reads} reads)");
    assert_eq!(counter.eventually_consistent_reads(), Vec::<String>::new());
}
