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

/// One hook's deliveries spread over its partitions (so a busy hook stays under DynamoDB's
/// per-partition write limit), and Read still returns them in time order; a delivery
/// written before the shards existed, under the hook's own partition, still reads, with an
/// update written after.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hooks_deliveries_spread_over_partitions_and_older_unsharded_ones_still_read() {
    use aws_sdk_dynamodb::types::AttributeValue;
    use chrono::Utc;
    use hookbridge_core::delivery::{Delivery, DeliveryKey, DeliveryStatus, DeliveryUpdate};
    use hookbridge_core::ids::{DeliveryId, EventId, HookId, TenantId};
    use hookbridge_core::ports::{Order, Window};
    use hookbridge_testkit::Harness;

    let h = hookbridge_testkit::AwsHarness::start().await;
    let store = &h.backend().deliveries;
    let tenant: TenantId = "acme".parse().unwrap();
    let hook = HookId::generate();
    let now = Utc::now();
    let made: Vec<Delivery> = (0..64)
        .map(|i| {
            let at = now - chrono::Duration::milliseconds(64 - i);
            // Random bits as ingest's ids have (a hash); a UUID's will do.
            let random = u128::from_str_radix(&EventId::generate().as_str().replace('-', ""), 16).unwrap();
            let id = DeliveryId::from_parts(at.timestamp_millis() as u64, random);
            Delivery::pending(id, tenant.clone(), hook, EventId::generate(), "e".into(), at)
        })
        .collect();
    store.insert(&made).await.unwrap();

    // Written before sharding: the delivery item under `H#{hook}`.
    let old_at = now - chrono::Duration::hours(1);
    let old = Delivery::pending(
        DeliveryId::from_parts(old_at.timestamp_millis() as u64, 42),
        tenant.clone(),
        hook,
        EventId::generate(),
        "e".into(),
        old_at,
    );
    h.clients()
        .dynamodb
        .put_item()
        .table_name(&h.resources().table)
        .item("PK", AttributeValue::S(format!("H#{hook}")))
        .item("SK", AttributeValue::S(format!("D#{}", old.id)))
        .item("doc", AttributeValue::S(serde_json::to_string(&old).unwrap()))
        .item("expires_at", AttributeValue::N((now.timestamp() + 86_400).to_string()))
        .send()
        .await
        .unwrap();
    let key = DeliveryKey {
        tenant: tenant.clone(),
        hook_id: hook,
        delivery_id: old.id,
        event_id: old.event_id.clone(),
        event_type: "e".into(),
    };
    store.record(&[DeliveryUpdate::cancelled(key, 0, "late".into(), now)]).await.unwrap();

    let window = Window { since: now - chrono::Duration::hours(2), until: now + chrono::Duration::seconds(1) };
    let mut seen = Vec::new();
    let mut cursor = None;
    loop {
        let page = store.list(hook, window, Order::NewestFirst, 10, cursor.as_deref()).await.unwrap();
        seen.extend(page.items.iter().map(|d| (d.id, d.status)));
        match page.next_cursor {
            Some(c) => cursor = Some(c),
            None => break,
        }
    }
    let mut expected: Vec<_> = made.iter().map(|d| (d.id, DeliveryStatus::Pending)).collect();
    expected.push((old.id, DeliveryStatus::Cancelled));
    expected.sort_by_key(|e| std::cmp::Reverse(e.0));
    assert!(seen == expected, "every delivery once, newest first, the old one folded with its update");
    assert_eq!(store.get(hook, old.id).await.unwrap().map(|d| d.status), Some(DeliveryStatus::Cancelled));
    assert_eq!(store.get(hook, made[5].id).await.unwrap().map(|d| d.id), Some(made[5].id));

    // Where the items are: the new deliveries in many of the hook's partitions.
    let mut partitions = std::collections::BTreeSet::new();
    let mut start = None;
    loop {
        let out = h
            .clients()
            .dynamodb
            .scan()
            .table_name(&h.resources().table)
            .filter_expression("begins_with(PK, :h)")
            .expression_attribute_values(":h", AttributeValue::S(format!("H#{hook}#")))
            .set_exclusive_start_key(start)
            .send()
            .await
            .unwrap();
        for item in out.items() {
            partitions.insert(item["PK"].as_s().unwrap().clone());
        }
        match out.last_evaluated_key {
            Some(k) => start = Some(k),
            None => break,
        }
    }
    assert!(partitions.len() >= 20, "64 deliveries over {} partitions", partitions.len());
}

/// A page of a busy hook's deliveries reads about the page from its partitions, not the
/// page from each of them: the merge reads each partition a page at a time as it reaches
/// it. Before, a page of 50 read the first 51 deliveries of all 33 partitions (1,683 items
/// here), and a page of 500 of a hook with 16,500 deliveries a day held them all in memory.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_page_of_deliveries_reads_about_the_page_not_the_page_from_every_partition() {
    use chrono::Utc;
    use hookbridge_core::delivery::Delivery;
    use hookbridge_core::ids::{DeliveryId, EventId, HookId, TenantId};
    use hookbridge_core::ports::{Order, Window};
    use hookbridge_testkit::Harness;

    let counter = hookbridge_aws::RequestCounter::default();
    let h = hookbridge_testkit::AwsHarness::start_counted(Some(&counter)).await;
    let store = &h.backend().deliveries;
    let tenant: TenantId = "acme".parse().unwrap();
    let hook = HookId::generate();
    let now = Utc::now();
    let n = 1_800;
    let made: Vec<Delivery> = (0..n)
        .map(|i| {
            let at = now - chrono::Duration::milliseconds(n - i);
            let random = u128::from_str_radix(&EventId::generate().as_str().replace('-', ""), 16).unwrap();
            let id = DeliveryId::from_parts(at.timestamp_millis() as u64, random);
            Delivery::pending(id, tenant.clone(), hook, EventId::generate(), "e".into(), at)
        })
        .collect();
    for chunk in made.chunks(500) {
        store.insert(chunk).await.unwrap();
    }
    let window = Window { since: now - chrono::Duration::hours(1), until: now + chrono::Duration::seconds(1) };
    let mut newest: Vec<DeliveryId> = made.iter().map(|d| d.id).collect();
    newest.sort_unstable_by(|a, b| b.cmp(a));
    let before = counter.items_queried();
    let page = store.list(hook, window, Order::NewestFirst, 50, None).await.unwrap();
    let read = counter.items_queried() - before;
    assert_eq!(page.items.iter().map(|d| d.id).collect::<Vec<_>>(), newest[..50], "the newest 50, in order");
    assert!(read <= 600, "{read} items read for a page of 50");
    // The next page goes on where it stopped.
    let next = store.list(hook, window, Order::NewestFirst, 50, page.next_cursor.as_deref()).await.unwrap();
    assert_eq!(next.items.iter().map(|d| d.id).collect::<Vec<_>>(), newest[50..100]);
}

/// A next page asked for with a cursor the window has moved past (a "load more" clicked
/// near the end of the 24 hours): DynamoDB refuses a `BETWEEN` whose lower bound is above
/// its upper one, which the API answered with `500`. The emulator does not check the
/// bounds, so the test counts the queries: none is needed for an empty range.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cursor_outside_the_window_reads_nothing_and_asks_dynamodb_nothing() {
    use chrono::Utc;
    use hookbridge_core::ids::{DeliveryId, HookId};
    use hookbridge_core::ports::{Order, Window};
    use hookbridge_testkit::Harness;

    let counter = hookbridge_aws::RequestCounter::default();
    let h = hookbridge_testkit::AwsHarness::start_counted(Some(&counter)).await;
    let now = Utc::now();
    let window = Window { since: now - chrono::Duration::hours(1), until: now };
    let before_the_window = DeliveryId::from_parts((now - chrono::Duration::hours(2)).timestamp_millis() as u64, 7);
    counter.reset();
    let page = h
        .backend()
        .deliveries
        .list(HookId::generate(), window, Order::NewestFirst, 50, Some(&before_the_window.to_string()))
        .await
        .unwrap();
    assert!(page.items.is_empty() && page.next_cursor.is_none());
    assert!(counter.snapshot().is_empty(), "{:?}", counter.snapshot());
}

/// A blob whose KMS-encrypted data key is damaged is refused as corrupt (so its deliveries
/// are cancelled with a reason), not as a failure of the moment (which the worker retries
/// until the queue gives the message up, recording nothing).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_damaged_data_key_is_corrupt_not_a_failure_to_retry() {
    use hookbridge_core::Error;
    use hookbridge_core::hook::{SealedSecrets, SecretsOwner};
    use hookbridge_testkit::Harness;

    let h = hookbridge_testkit::AwsHarness::start().await;
    let (hook, secrets) = hookbridge_testkit::contract::make_hook(&h, &h.unique("tenant"), "damaged").await;
    let sealer = &h.backend().sealer;
    // The blob: a format byte, the data key's length (2 bytes), the data key as KMS
    // encrypted it, then the secrets under that key. Its last byte is KMS's own.
    let b = &hook.sealed.0;
    let key_len = usize::from(u16::from_be_bytes([b[1], b[2]]));
    let mut damaged = b.clone();
    damaged[3 + key_len - 1] ^= 0x01;
    let opened = sealer.open(SecretsOwner::of(&hook), &SealedSecrets(damaged)).await;
    assert!(matches!(opened, Err(Error::Corrupt { .. })), "a damaged data key: {opened:?}");
    assert_eq!(sealer.open(SecretsOwner::of(&hook), &hook.sealed).await.unwrap(), secrets);
}

/// Turns the first successful answer of an operation into a `500`, as a connection reset
/// after DynamoDB applied the request would look: the SDK sends it again.
#[derive(Debug)]
struct LoseFirstAnswer {
    operation: &'static str,
    lost: std::sync::Arc<std::sync::atomic::AtomicBool>,
}

impl aws_sdk_dynamodb::config::Intercept for LoseFirstAnswer {
    fn name(&self) -> &'static str {
        "LoseFirstAnswer"
    }

    fn modify_before_deserialization(
        &self,
        context: &mut aws_sdk_dynamodb::config::interceptors::BeforeDeserializationInterceptorContextMut<'_>,
        _runtime_components: &aws_sdk_dynamodb::config::RuntimeComponents,
        cfg: &mut aws_sdk_dynamodb::config::ConfigBag,
    ) -> Result<(), aws_smithy_runtime_api::box_error::BoxError> {
        use std::sync::atomic::Ordering;
        let operation = cfg.load::<aws_smithy_runtime_api::client::orchestrator::Metadata>().map(|m| m.name());
        if operation == Some(self.operation)
            && context.response().status().is_success()
            && !self.lost.swap(true, Ordering::SeqCst)
        {
            *context.response_mut().status_mut() = 500u16.try_into()?;
            *context.response_mut().body_mut() = aws_smithy_types::body::SdkBody::from(
                r#"{"__type":"com.amazonaws.dynamodb.v20120810#InternalServerError","message":"the answer was lost"}"#,
            );
        }
        Ok(())
    }
}

/// A backend on `h`'s resources whose first successful `operation` has its answer lost,
/// and whether that happened yet.
fn losing_first_answer(
    h: &hookbridge_testkit::AwsHarness,
    operation: &'static str,
) -> (hookbridge_core::ports::Backend, std::sync::Arc<std::sync::atomic::AtomicBool>) {
    let lost = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut clients = h.clients().clone();
    let config =
        clients.dynamodb.config().to_builder().interceptor(LoseFirstAnswer { operation, lost: lost.clone() }).build();
    clients.dynamodb = aws_sdk_dynamodb::Client::from_conf(config);
    (hookbridge_aws::backend(&clients, h.resources()), lost)
}

/// An idempotency claim DynamoDB applied whose answer was lost, sent again by the SDK, is
/// still this call's claim. The repeat found the claim it had itself made and took it for
/// another request's: the publish was answered `409` ("still in progress"), and so was
/// every retry of it for five minutes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idempotency_claim_applied_and_sent_again_is_still_this_calls() {
    use hookbridge_core::ids::TenantId;
    use hookbridge_core::ports::Claim;
    use hookbridge_testkit::Harness;

    let h = hookbridge_testkit::AwsHarness::start().await;
    let (backend, lost) = losing_first_answer(&h, "PutItem");

    let tenant: TenantId = "acme".parse().unwrap();
    let now = chrono::Utc::now();
    let expires = now + chrono::Duration::hours(24);
    let claim = backend.idempotency.claim(&tenant, "key:k1", "fp", now, expires).await.unwrap();
    assert!(lost.load(std::sync::atomic::Ordering::SeqCst), "the first answer was lost");
    assert!(matches!(claim, Claim::Claimed), "{claim:?}");
    let other = h.backend().idempotency.claim(&tenant, "key:k1", "fp", now, expires).await.unwrap();
    assert!(matches!(other, Claim::Existing { response: None, .. }), "another request still finds it: {other:?}");
}

/// A rate-limit write DynamoDB applied whose answer was lost, sent again by the SDK, is
/// this call's: the publish is admitted and charged once. The repeat failed its condition,
/// the state it read back was its own write, and the step ran again: charged twice and,
/// at the burst, refused (`429`) with its units used up. And a refusal on this process's
/// last sight of the key tells the wait from the key as it is.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rate_limit_write_applied_and_sent_again_is_charged_once() {
    use hookbridge_core::ports::Admission;
    use hookbridge_core::rate::Rate;
    use hookbridge_testkit::Harness;

    let h = hookbridge_testkit::AwsHarness::start().await;
    let (backend, lost) = losing_first_answer(&h, "UpdateItem");
    let now = chrono::Utc::now();
    let admitted = backend.limiter.admit("publish:acme", Rate::per_second(1), 1, 1, now).await.unwrap();
    assert!(lost.load(std::sync::atomic::Ordering::SeqCst), "the first answer was lost");
    assert_eq!(admitted, Admission::Admitted);
    // Charged once: a second unit is due a second later, not two.
    let next = h.backend().limiter.admit("publish:acme", Rate::per_second(1), 1, 1, now).await.unwrap();
    match next {
        Admission::RetryAfter(wait) => assert!(wait <= std::time::Duration::from_secs(1), "{wait:?}"),
        Admission::Admitted => panic!("a burst of one admits one"),
    }
    // Another process takes ten seconds' worth; a refusal here, on what this one saw
    // last, tells the wait from where the key is now, not from the old guess.
    h.backend().limiter.pace("publish:acme", Rate::per_second(1), 10, now).await.unwrap();
    match backend.limiter.admit("publish:acme", Rate::per_second(1), 1, 1, now).await.unwrap() {
        Admission::RetryAfter(wait) => assert!(wait >= std::time::Duration::from_secs(10), "{wait:?}"),
        Admission::Admitted => panic!("the key is ten seconds ahead"),
    }
}

/// A portal link's redemption DynamoDB applied whose answer was lost, sent again by the
/// SDK, still opens the link for this visitor, and for no one after. The redemption was a
/// delete returning the item, whose repeat returned nothing: the link was spent and its
/// visitor told it was not valid.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_portal_link_redeemed_and_sent_again_still_opens_once() {
    use hookbridge_core::portal::{PortalGrant, fresh_code, hashed};
    use hookbridge_testkit::Harness;

    let h = hookbridge_testkit::AwsHarness::start().await;
    let (backend, lost) = losing_first_answer(&h, "UpdateItem");

    let now = chrono::Utc::now();
    let grant = PortalGrant {
        tenant: "acme".parse().unwrap(),
        sites: vec![],
        read_only: false,
        expires_at: now + chrono::Duration::minutes(5),
    };
    let code = hashed(&fresh_code());
    h.backend().portal.put_link(&code, &grant).await.unwrap();
    let redeemed = backend.portal.redeem_link(&code, now).await.unwrap();
    assert!(lost.load(std::sync::atomic::Ordering::SeqCst), "the first answer was lost");
    assert_eq!(redeemed, Some(grant));
    assert_eq!(h.backend().portal.redeem_link(&code, now).await.unwrap(), None, "spent");
}

/// A tenant with many hooks has its list kept between reads (each a strongly consistent
/// query of the tenant's one partition key: hundreds of read units for a big tenant, for
/// every ingest batch), and every change to one of its hooks is in the next read: a
/// create, a replace and a delete each write the tenant's hooks marker, read before the list.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_big_tenants_hooks_are_read_again_only_after_a_change() {
    use hookbridge_testkit::Harness;
    use hookbridge_testkit::contract::make_hook;

    let counter = hookbridge_aws::RequestCounter::default();
    let h = hookbridge_testkit::AwsHarness::start_counted(Some(&counter)).await;
    let store = &h.backend().hooks;
    let name = h.unique("big");
    let mut made = Vec::new();
    for i in 0..20 {
        let (hook, _) = make_hook(&h, &name, &format!("hook-{i}")).await;
        store.create(&hook, 1000).await.unwrap();
        made.push(hook);
    }
    let tenant = made[0].tenant.clone();
    let queries = || counter.snapshot().get(&("DynamoDB".to_owned(), "Query".to_owned())).copied().unwrap_or(0);
    let urls = |hooks: &[std::sync::Arc<hookbridge_core::hook::Hook>]| {
        let mut u: Vec<String> = hooks.iter().map(|h| h.config.url.clone()).collect();
        u.sort();
        u
    };

    // Read, then read under a marker, then kept.
    for _ in 0..2 {
        assert_eq!(store.list_for_routing(&tenant, usize::MAX).await.unwrap().hooks.len(), 20);
    }
    let before = queries();
    for _ in 0..3 {
        assert_eq!(store.list_for_routing(&tenant, usize::MAX).await.unwrap().hooks.len(), 20);
    }
    assert_eq!(queries(), before, "kept: no query while nothing changed");

    // A replace is in the next read.
    let mut moved = store.get(&tenant, made[3].id).await.unwrap().unwrap();
    let revision = moved.revision;
    moved.config.url = "https://moved.example/hook".to_owned();
    moved.revision += 1;
    store.replace(&moved, revision).await.unwrap();
    let read = store.list_for_routing(&tenant, usize::MAX).await.unwrap().hooks;
    assert!(urls(&read).contains(&"https://moved.example/hook".to_owned()), "the replace is read");
    assert_eq!(queries(), before + 1);

    // A delete and a create too.
    assert!(store.delete(&tenant, made[5].id).await.unwrap());
    let read = store.list_for_routing(&tenant, usize::MAX).await.unwrap().hooks;
    assert_eq!(read.len(), 19);
    assert!(!read.iter().any(|h| h.id == made[5].id), "the deleted hook is gone");
    let (new, _) = make_hook(&h, &name, "hook-new").await;
    store.create(&new, 1000).await.unwrap();
    let read = store.list_for_routing(&tenant, usize::MAX).await.unwrap().hooks;
    assert!(read.iter().any(|h| h.id == new.id), "the created hook is read");
    assert_eq!(queries(), before + 3);
    assert_eq!(store.list_for_routing(&tenant, usize::MAX).await.unwrap().hooks.len(), 20);
    assert_eq!(queries(), before + 3, "kept again");

    // A change routing does not read (a failure counted) leaves the list kept; a read of
    // every hook as stored has it.
    let mut counted = store.get(&tenant, made[7].id).await.unwrap().unwrap();
    let revision = counted.revision;
    counted.state.health.consecutive_failures += 1;
    counted.revision += 1;
    store.replace(&counted, revision).await.unwrap();
    assert_eq!(store.list_for_routing(&tenant, usize::MAX).await.unwrap().hooks.len(), 20);
    assert_eq!(queries(), before + 3, "no new marker for a failure counted");
    let all = store.list_all(&tenant).await.unwrap();
    let stored = all.iter().find(|h| h.id == made[7].id).unwrap();
    assert_eq!(stored.state.health.consecutive_failures, counted.state.health.consecutive_failures);

    // A counter item from before markers (none on it) is given one, and the list is kept.
    h.clients()
        .dynamodb
        .update_item()
        .table_name(&h.resources().table)
        .key("PK", aws_sdk_dynamodb::types::AttributeValue::S(format!("T#{tenant}")))
        .key("SK", aws_sdk_dynamodb::types::AttributeValue::S("C#hooks".to_owned()))
        .update_expression("REMOVE marker")
        .send()
        .await
        .unwrap();
    let before = queries();
    for _ in 0..4 {
        assert_eq!(store.list_for_routing(&tenant, usize::MAX).await.unwrap().hooks.len(), 20);
    }
    assert_eq!(queries(), before + 1, "read once under the new marker, then kept");

    // A hook this version cannot read is named, not a failure of the list (decision 0026),
    // and a list naming one is not kept: each batch reads it again.
    h.make_unreadable(&tenant, made[9].id).await;
    assert!(store.delete(&tenant, made[11].id).await.unwrap(), "a change, so the next read queries");
    let before = queries();
    for i in 1..=2 {
        let list = store.list_for_routing(&tenant, usize::MAX).await.unwrap();
        assert_eq!(list.unreadable, [made[9].id]);
        assert_eq!(list.hooks.len(), 18, "the others are routed");
        assert_eq!(queries(), before + i, "not kept");
    }
}

/// Envelopes move to partitions of their own over two releases (decision 0020). This one
/// writes them under the tenant's partition and reads both places, so it reads what the
/// next release writes (a rollback, or functions updated one by one); nothing is read that
/// is past its time or another tenant's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn envelopes_are_read_from_either_partition_while_they_move() {
    use aws_sdk_dynamodb::types::AttributeValue;
    use chrono::Utc;
    use hookbridge_core::envelope::Envelope;
    use hookbridge_core::ids::{EventId, TenantId};
    use hookbridge_testkit::Harness;

    let counter = hookbridge_aws::RequestCounter::default();
    let h = hookbridge_testkit::AwsHarness::start_counted(Some(&counter)).await;
    let get_items = || counter.snapshot().get(&("DynamoDB".to_owned(), "GetItem".to_owned())).copied().unwrap_or(0);
    let tenant: TenantId = "acme".parse().unwrap();
    let envelope = |id: &EventId| {
        let body = format!(
            r#"{{"version":"0","id":"{id}","detail-type":"user.login","source":"idp","account":"1","time":"2026-11-22T10:00:00Z","region":"r","resources":[],"detail":{{"tenant":"acme"}}}}"#
        );
        (Envelope::from_bus_json(&body, "x", "y").unwrap(), body)
    };
    let item = |pk: String, sk: String| async {
        h.clients()
            .dynamodb
            .get_item()
            .table_name(&h.resources().table)
            .key("PK", AttributeValue::S(pk))
            .key("SK", AttributeValue::S(sk))
            .consistent_read(true)
            .send()
            .await
            .unwrap()
            .item
    };
    let events = &h.backend().events;
    let (written, written_body) = envelope(&EventId::generate());
    events.put(&tenant, std::slice::from_ref(&written), Utc::now() + chrono::Duration::days(1)).await.unwrap();
    let under_tenant = item("T#acme".into(), format!("E#{}", written.id)).await.expect("under the tenant");
    assert_eq!(under_tenant.get("doc").and_then(|d| d.as_s().ok()), Some(&written_body));
    assert!(item(format!("E#acme#{}", written.id), "E".into()).await.is_none(), "not yet in a partition of its own");
    let before = get_items();
    assert_eq!(events.get(&tenant, &written.id).await.unwrap().map(|e| e.to_body()), Some(written_body));
    assert_eq!(get_items(), before + 1, "the written place is read first, and only it");

    // Written by the next release, in partitions of their own: one in its time, one past it.
    let h = &h;
    let put_own = |id: EventId, body: String, expires_at: i64| async move {
        h.clients()
            .dynamodb
            .put_item()
            .table_name(&h.resources().table)
            .item("PK", AttributeValue::S(format!("E#acme#{id}")))
            .item("SK", AttributeValue::S("E".into()))
            .item("doc", AttributeValue::S(body))
            .item("expires_at", AttributeValue::N(expires_at.to_string()))
            .send()
            .await
            .unwrap();
    };
    let (kept, kept_body) = envelope(&EventId::generate());
    put_own(kept.id.clone(), kept_body.clone(), Utc::now().timestamp() + 86_400).await;
    assert_eq!(events.get(&tenant, &kept.id).await.unwrap().map(|e| e.to_body()), Some(kept_body));
    let (gone, gone_body) = envelope(&EventId::generate());
    put_own(gone.id.clone(), gone_body, Utc::now().timestamp() - 1).await;
    assert!(events.get(&tenant, &gone.id).await.unwrap().is_none(), "past its time");
    assert!(events.get(&"other".parse().unwrap(), &kept.id).await.unwrap().is_none(), "another tenant's");
}

/// Idempotency claims move from the tenant's partition to partitions of their own over two
/// releases (decision 0027). This release claims under the tenant, where the release before
/// it looks; a claim made on either side of the move is seen from the other, answered or
/// not; a request that sees the other side's claim leaves nothing of its own behind; and
/// two requests racing across the move never both claim one key.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idempotency_claims_are_seen_across_the_move_to_partitions_of_their_own() {
    use hookbridge_aws::{Adapters, ClaimPlace};
    use hookbridge_core::ids::TenantId;
    use hookbridge_core::ports::{Claim, StoredResponse};

    let h = hookbridge_testkit::AwsHarness::start().await;
    let adapters = Adapters::of_clients(h.clients(), h.resources());
    let this = adapters.idempotency_claiming_in(ClaimPlace::this_release());
    let next = adapters.idempotency_claiming_in(ClaimPlace::this_release().other());
    let tenant: TenantId = "acme".parse().unwrap();
    let stored = |place: ClaimPlace, k: &'static str| {
        let tenant = tenant.clone();
        let h = &h;
        async move {
            h.clients()
                .dynamodb
                .get_item()
                .table_name(&h.resources().table)
                .set_key(Some(place.key(&tenant, k)))
                .consistent_read(true)
                .send()
                .await
                .unwrap()
                .item
                .is_some()
        }
    };
    let now = chrono::Utc::now();
    let soon = now + chrono::Duration::minutes(5);
    let day = now + chrono::Duration::hours(24);
    let answer = StoredResponse { status: 202, body: r#"{"events":[]}"#.into() };

    // This release still claims where every release before it claimed and looked.
    assert_eq!(ClaimPlace::this_release(), ClaimPlace::Tenant);
    assert_eq!(this.claim(&tenant, "key:a", "fp", now, soon).await.unwrap(), Claim::Claimed);
    assert!(stored(ClaimPlace::Tenant, "key:a").await, "under the tenant, where the release before looks");
    assert!(!stored(ClaimPlace::Own, "key:a").await);

    // Each side sees the other's claims, pending and answered, and keeps nothing of its own.
    assert_eq!(next.claim(&tenant, "key:b", "fp", now, soon).await.unwrap(), Claim::Claimed);
    for (first, then, then_place, k) in
        [(&this, &next, ClaimPlace::Own, "key:a"), (&next, &this, ClaimPlace::Tenant, "key:b")]
    {
        assert_eq!(
            then.claim(&tenant, k, "other", now, soon).await.unwrap(),
            Claim::Existing { fingerprint: "fp".into(), response: None },
            "{k}: pending on the other side"
        );
        assert!(!stored(then_place, k).await, "{k}: the claim that saw another is taken back");
        first.complete(&tenant, k, &answer, day).await.unwrap();
        assert_eq!(
            then.claim(&tenant, k, "other", now, soon).await.unwrap(),
            Claim::Existing { fingerprint: "fp".into(), response: Some(answer.clone()) },
            "{k}: answered on the other side"
        );
        assert!(!stored(then_place, k).await, "{k}");
    }

    // An expired claim on the other side holds nothing up, as on its own side: one that
    // expires at this very second is expired, as the claim's condition has it.
    let past = now - chrono::Duration::seconds(1);
    assert_eq!(next.claim(&tenant, "key:c", "fp", now, past).await.unwrap(), Claim::Claimed);
    assert_eq!(this.claim(&tenant, "key:c", "fp", now, soon).await.unwrap(), Claim::Claimed);
    assert_eq!(next.claim(&tenant, "key:d", "fp", now, now).await.unwrap(), Claim::Claimed);
    assert_eq!(this.claim(&tenant, "key:d", "fp", now, soon).await.unwrap(), Claim::Claimed);

    // Racing across the move: at most one of each pair claims.
    for i in 0..20 {
        let k = format!("race:{i}");
        let (a, b) = tokio::join!(this.claim(&tenant, &k, "fp", now, soon), next.claim(&tenant, &k, "fp", now, soon));
        let claimed = [a.unwrap(), b.unwrap()].iter().filter(|c| **c == Claim::Claimed).count();
        assert!(claimed <= 1, "{k}: both sides claimed it");
    }
}

/// Answers every call of one DynamoDB operation with a refusal the SDK does not retry, as
/// a DynamoDB that keeps failing it would end.
#[derive(Debug)]
struct Refuse(&'static str);

impl aws_sdk_dynamodb::config::Intercept for Refuse {
    fn name(&self) -> &'static str {
        "Refuse"
    }

    fn modify_before_deserialization(
        &self,
        context: &mut aws_sdk_dynamodb::config::interceptors::BeforeDeserializationInterceptorContextMut<'_>,
        _runtime_components: &aws_sdk_dynamodb::config::RuntimeComponents,
        cfg: &mut aws_sdk_dynamodb::config::ConfigBag,
    ) -> Result<(), aws_smithy_runtime_api::box_error::BoxError> {
        let operation = cfg.load::<aws_smithy_runtime_api::client::orchestrator::Metadata>().map(|m| m.name());
        if operation == Some(self.0) {
            *context.response_mut().status_mut() = 400u16.try_into()?;
            *context.response_mut().body_mut() = aws_smithy_types::body::SdkBody::from(
                r#"{"__type":"com.amazon.coral.validate#ValidationException","message":"refused by the test"}"#,
            );
        }
        Ok(())
    }
}

/// A backend on `h`'s resources whose every `operation` is refused.
fn refusing(h: &hookbridge_testkit::AwsHarness, operation: &'static str) -> hookbridge_core::ports::Backend {
    let mut clients = h.clients().clone();
    clients.dynamodb = aws_sdk_dynamodb::Client::from_conf(
        clients.dynamodb.config().to_builder().interceptor(Refuse(operation)).build(),
    );
    hookbridge_aws::backend(&clients, h.resources())
}

/// A claim whose look at the other side of the move fails is taken back before the call
/// fails: left, it would answer every retry `409` for its five pending minutes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_claim_whose_look_across_the_move_fails_is_taken_back() {
    use hookbridge_core::ids::TenantId;
    use hookbridge_core::ports::Claim;
    use hookbridge_testkit::Harness;

    let h = hookbridge_testkit::AwsHarness::start().await;
    let failing = refusing(&h, "GetItem");
    let tenant: TenantId = "acme".parse().unwrap();
    let now = chrono::Utc::now();
    let soon = now + chrono::Duration::minutes(5);
    assert!(failing.idempotency.claim(&tenant, "key:k", "fp", now, soon).await.is_err(), "the look failed");
    assert_eq!(
        h.backend().idempotency.claim(&tenant, "key:k", "fp", now, soon).await.unwrap(),
        Claim::Claimed,
        "the retry claims at once"
    );
}

/// A claim DynamoDB applied whose answer was then an error (past the SDK's retries) is
/// taken back before the call fails: the request failed, so its key is free, where the
/// claim left behind answered every retry `409` for its five pending minutes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_claim_applied_but_answered_with_an_error_is_taken_back() {
    use hookbridge_core::ids::TenantId;
    use hookbridge_core::ports::Claim;
    use hookbridge_testkit::Harness;

    let h = hookbridge_testkit::AwsHarness::start().await;
    // The put is applied; its answer is turned into a refusal afterwards.
    let failing = refusing(&h, "PutItem");
    let tenant: TenantId = "acme".parse().unwrap();
    let now = chrono::Utc::now();
    let soon = now + chrono::Duration::minutes(5);
    assert!(failing.idempotency.claim(&tenant, "key:k", "fp", now, soon).await.is_err(), "the put failed");
    assert_eq!(
        h.backend().idempotency.claim(&tenant, "key:k", "fp", now, soon).await.unwrap(),
        Claim::Claimed,
        "the retry claims at once"
    );
}

/// Fails the first `DeleteMessageBatch` before it is sent, with an error the SDK does not
/// retry, as a call SQS refused past the SDK's retries would end.
#[derive(Debug)]
struct RefuseFirstDelete {
    refused: std::sync::Arc<std::sync::atomic::AtomicBool>,
}

impl aws_sdk_sqs::config::Intercept for RefuseFirstDelete {
    fn name(&self) -> &'static str {
        "RefuseFirstDelete"
    }

    fn read_before_transmit(
        &self,
        _context: &aws_sdk_sqs::config::interceptors::BeforeTransmitInterceptorContextRef<'_>,
        _runtime_components: &aws_sdk_sqs::config::RuntimeComponents,
        cfg: &mut aws_sdk_sqs::config::ConfigBag,
    ) -> Result<(), aws_smithy_runtime_api::box_error::BoxError> {
        let operation = cfg.load::<aws_smithy_runtime_api::client::orchestrator::Metadata>().map(|m| m.name());
        if operation == Some("DeleteMessageBatch") && !self.refused.swap(true, std::sync::atomic::Ordering::SeqCst) {
            return Err("refused by the test".into());
        }
        Ok(())
    }
}

/// An acknowledgement of more than ten messages is several `DeleteMessageBatch` calls; one
/// refused still lets the others delete their messages, and the acknowledgement fails.
/// It stopped at the first refusal: every message after it came back and was handled again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_ack_whose_first_delete_call_is_refused_still_deletes_the_rest() {
    use hookbridge_core::ports::{OutgoingMessage, Queue};
    use hookbridge_core::topology::QueueSpec;
    use hookbridge_testkit::Harness;
    use std::time::Duration;

    let h = hookbridge_testkit::AwsHarness::start().await;
    let name = h.unique("acked");
    let spec = QueueSpec {
        name: name.clone(),
        dlq: format!("{name}-dlq"),
        visibility_timeout: Duration::from_secs(300),
        max_receive_count: 5,
    };
    let (queue, _) = h.queue(&spec).await;
    let messages: Vec<_> = (0..15).map(|i| OutgoingMessage::now(format!("m{i}"))).collect();
    queue.send_batch(&messages).await.unwrap();
    let mut got = Vec::new();
    while got.len() < 15 {
        got.extend(queue.receive(10, Duration::from_secs(1)).await.unwrap());
    }
    let refused = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let config =
        h.clients().sqs.config().to_builder().interceptor(RefuseFirstDelete { refused: refused.clone() }).build();
    let url = hookbridge_aws::init::queue_url(h.clients(), &name).await.unwrap();
    let refusing = hookbridge_aws::SqsQueue::new(aws_sdk_sqs::Client::from_conf(config), url);
    let receipts: Vec<_> = got.iter().map(|m| m.receipt.clone()).collect();
    assert!(refusing.ack(&receipts).await.is_err(), "the refusal is reported");
    assert!(refused.load(std::sync::atomic::Ordering::SeqCst));
    let depth = queue.depth().await.unwrap();
    assert_eq!(depth.in_flight, 10, "the refused call's ten are still held, the other five deleted: {depth:?}");
}

/// A claim that finds the other side's claim answers from it even when its own cannot be
/// taken back: the request is told the key is in use (or given the first answer), not
/// failed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_claim_that_finds_the_other_sides_answers_from_it_even_if_its_own_stays() {
    use hookbridge_aws::{Adapters, ClaimPlace};
    use hookbridge_core::ids::TenantId;
    use hookbridge_core::ports::{Claim, StoredResponse};

    let h = hookbridge_testkit::AwsHarness::start().await;
    let next =
        Adapters::of_clients(h.clients(), h.resources()).idempotency_claiming_in(ClaimPlace::this_release().other());
    let failing = refusing(&h, "DeleteItem");
    let tenant: TenantId = "acme".parse().unwrap();
    let now = chrono::Utc::now();
    let soon = now + chrono::Duration::minutes(5);
    assert_eq!(next.claim(&tenant, "key:k", "fp", now, soon).await.unwrap(), Claim::Claimed);
    let answer = StoredResponse { status: 202, body: "{}".into() };
    next.complete(&tenant, "key:k", &answer, soon).await.unwrap();
    assert_eq!(
        failing.idempotency.claim(&tenant, "key:k", "other", now, soon).await.unwrap(),
        Claim::Existing { fingerprint: "fp".into(), response: Some(answer) }
    );
}

/// Hooks loaded in bulk (a migration, the fan-out benchmark) count toward the tenant's
/// quota like hooks created one by one, and loading them again counts each once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hooks_loaded_in_bulk_count_toward_the_quota() {
    use hookbridge_testkit::Harness;
    use hookbridge_testkit::contract::make_hook;

    let h = hookbridge_testkit::AwsHarness::start().await;
    let store = &h.backend().hooks;
    let tenant = h.unique("bulk");
    let mut loaded = Vec::new();
    for i in 0..3 {
        loaded.push(make_hook(&h, &tenant, &format!("loaded-{i}")).await.0);
    }
    let table = hookbridge_aws::Table::new(h.clients().dynamodb.clone(), h.resources().table.clone());
    hookbridge_aws::bulk_load_hooks(&table, &loaded).await.unwrap();
    hookbridge_aws::bulk_load_hooks(&table, &loaded).await.unwrap();
    let (more, _) = make_hook(&h, &tenant, "created").await;
    assert!(
        matches!(store.create(&more, 3).await, Err(hookbridge_core::Error::QuotaReached { limit: 3 })),
        "three loaded fill a quota of three"
    );
    store.create(&more, 4).await.expect("a fourth fits a quota of four");
    assert!(store.delete(&loaded[0].tenant, loaded[0].id).await.unwrap());
    let (last, _) = make_hook(&h, &tenant, "last").await;
    store.create(&last, 4).await.expect("a deleted loaded hook frees its slot");
}

/// A call whose request is taken and never answered (a half-open connection, a stalled
/// endpoint) ends in an error within the SDK's bounds, rather than holding its Lambda
/// invocation until it times out and its whole batch comes back, deliveries already sent
/// included. The functions' clients are made with these bounds (`sdk_loader`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_that_is_never_answered_ends_in_an_error() {
    use aws_sdk_dynamodb::config::Credentials;
    use hookbridge_core::ids::{HookId, TenantId};

    let h = hookbridge_testkit::AwsHarness::start().await;
    // Takes connections and reads requests, and never answers.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let endpoint = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((socket, _)) = listener.accept().await {
            held.push(socket);
        }
    });
    // The loader the functions' clients come from, pointed at it.
    let sdk = hookbridge_aws::sdk_loader()
        .endpoint_url(&endpoint)
        .region(aws_config::Region::new("us-east-1"))
        .credentials_provider(Credentials::new("test", "test", None, None, "hookbridge-tests"))
        .load()
        .await;
    let backend = hookbridge_aws::backend(&hookbridge_aws::Clients::new(&sdk), h.resources());
    let tenant: TenantId = "acme".parse().unwrap();
    // Far past the bounds: without them the read waits for ever, and this fails.
    let read =
        tokio::time::timeout(std::time::Duration::from_secs(120), backend.hooks.get(&tenant, HookId::generate())).await;
    assert!(matches!(read, Ok(Err(_))), "{read:?}");
}

/// A hook whose document is damaged past reading, even as JSON, is still deleted whole:
/// its name guard is found by the hook id it keeps, and the name is free again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_damaged_hook_is_deleted_with_its_name_freed() {
    use aws_sdk_dynamodb::types::AttributeValue;
    use hookbridge_testkit::Harness;

    let h = hookbridge_testkit::AwsHarness::start().await;
    let store = &h.backend().hooks;
    let (hook, _) = hookbridge_testkit::contract::make_hook(&h, "acme", "damaged").await;
    store.create(&hook, 10).await.unwrap();
    h.clients()
        .dynamodb
        .update_item()
        .table_name(&h.resources().table)
        .key("PK", AttributeValue::S("T#acme".into()))
        .key("SK", AttributeValue::S(format!("H#{}", hook.id)))
        .update_expression("SET #d = :d")
        .expression_attribute_names("#d", "doc")
        .expression_attribute_values(":d", AttributeValue::S("{not json".into()))
        .send()
        .await
        .unwrap();
    assert!(store.get(&hook.tenant, hook.id).await.is_err(), "damaged");

    assert!(store.delete(&hook.tenant, hook.id).await.unwrap());
    assert!(!store.delete(&hook.tenant, hook.id).await.unwrap(), "deleted once");
    let (again, _) = hookbridge_testkit::contract::make_hook(&h, "acme", "damaged").await;
    store.create(&again, 1).await.expect("the name is free, and the hook no longer counted");
}
