//! The backend contract on the embedded (SQLite) backend.

#![allow(clippy::unwrap_used)] // Tests fail loudly on purpose.

hookbridge_testkit::contract_tests!(hookbridge_testkit::EmbeddedHarness::start());

use std::sync::Arc;

use hookbridge_core::ids::HookId;
use hookbridge_testkit::Harness;
use hookbridge_testkit::contract::make_hook;

/// Sets every stored hook's description to `description` in the database itself, leaving
/// each revision as it was (a write the store's own code never makes).
async fn describe_every_hook_in_place(h: &hookbridge_testkit::EmbeddedHarness, description: &str) {
    let description = description.to_owned();
    h.db()
        .write(move |c| {
            c.execute("UPDATE hooks SET doc = json_set(doc, '$.config.description', ?1)", [&description])
                .map_err(|e| hookbridge_core::Error::backend("test", e))
        })
        .await
        .unwrap();
}

/// The worker's reads keep hooks parsed between batches: a stored document changed in
/// any way, even under the same revision, is read as changed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hook_changed_under_the_same_revision_is_read_as_changed() {
    let h = hookbridge_testkit::EmbeddedHarness::start().await;
    let (hook, _) = make_hook(&h, "tenant-a", "kept").await;
    h.backend().hooks.create(&hook, 1000).await.unwrap();
    let key = [(hook.tenant.clone(), hook.id)];
    let first = h.backend().hooks.get_many(&key).await.unwrap();
    assert_eq!(first[0].config.description, None);
    let again = h.backend().hooks.get_many(&key).await.unwrap();
    assert!(Arc::ptr_eq(&first[0], &again[0]), "unchanged, the hook parsed before");
    let routed = h.backend().hooks.list_for_routing(&hook.tenant, usize::MAX).await.unwrap().hooks;
    assert!(Arc::ptr_eq(&first[0], &routed[0]), "routed as parsed before");
    describe_every_hook_in_place(&h, "changed in place").await;
    let second = h.backend().hooks.get_many(&key).await.unwrap();
    assert_eq!((second[0].revision, second[0].config.description.as_deref()), (1, Some("changed in place")));
    assert!(!Arc::ptr_eq(&first[0], &second[0]));
    let routed = h.backend().hooks.list_for_routing(&hook.tenant, usize::MAX).await.unwrap().hooks;
    assert_eq!((routed[0].revision, routed[0].config.description.as_deref()), (1, Some("changed in place")));
}

/// The hooks kept parsed are bounded in bytes as well as in number: a tenant of 60 large
/// hooks (20 MB of documents) is routed from fresh parses past the bound, not held whole,
/// and its list is not kept between batches. Held to the count alone, every one was kept.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hooks_kept_parsed_are_bounded_in_bytes() {
    let h = hookbridge_testkit::EmbeddedHarness::start().await;
    let hooks = &h.backend().hooks;
    for i in 0..60 {
        let (mut hook, _) = make_hook(&h, "tenant-large", &format!("large-{i}")).await;
        // Stored as base64: about 333 KB, within a hook's 350 KiB.
        hook.sealed = hookbridge_core::hook::SealedSecrets(vec![7; 250_000]);
        hooks.create(&hook, 1000).await.unwrap();
    }
    let tenant = "tenant-large".parse().unwrap();
    let first = hooks.list_for_routing(&tenant, usize::MAX).await.unwrap().hooks;
    let again = hooks.list_for_routing(&tenant, usize::MAX).await.unwrap().hooks;
    assert_eq!((first.len(), again.len()), (60, 60));
    let kept = first.iter().zip(&again).filter(|(a, b)| Arc::ptr_eq(a, b)).count();
    assert!((40..60).contains(&kept), "{kept} of 60 kept parsed: about 16 MiB of them");

    // The worker's reads, ten at a time, are held to the same: once its batches are done
    // with them, the store keeps alive at most 16 MiB of them. By the hooks' count alone,
    // every one of them was kept between batches, as was every one the byte-bound kept held
    // at the time of its batch.
    let keys: Vec<_> = first.iter().map(|h| (h.tenant.clone(), h.id)).collect();
    drop((first, again));
    let mut read = Vec::new();
    for _ in 0..2 {
        for batch in keys.chunks(10) {
            read.extend(hooks.get_many(batch).await.unwrap().iter().map(Arc::downgrade));
        }
    }
    let alive = read[60..].iter().filter(|h| h.upgrade().is_some()).count();
    assert!((40..=50).contains(&alive), "{alive} of 60 kept alive between the worker's batches: 333 KB each");
}

/// Ingest's routing keeps the hooks it parses while there is room, and once the kept hooks
/// are full it pushes none of them out: every hook the worker read is still the one it got.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn routing_keeps_hooks_only_while_there_is_room() {
    let h = hookbridge_testkit::EmbeddedHarness::start().await;
    let hooks = &h.backend().hooks;
    let (small, _) = make_hook(&h, "tenant-s", "small").await;
    hooks.create(&small, 1000).await.unwrap();
    let routed = hooks.list_for_routing(&small.tenant, usize::MAX).await.unwrap().hooks;
    assert!(
        Arc::ptr_eq(&routed[0], &hooks.list_for_routing(&small.tenant, usize::MAX).await.unwrap().hooks[0]),
        "kept while room"
    );

    // The worker's hooks fill every place (1,024, one of them the small tenant's).
    let mut worked = vec![(small.tenant.clone(), small.id)];
    for i in 0..1_023 {
        let (hook, _) = make_hook(&h, &format!("tenant-w{}", i % 2), &format!("w-{i}")).await;
        hooks.create(&hook, 1000).await.unwrap();
        worked.push((hook.tenant.clone(), hook.id));
    }
    let mut first = Vec::new();
    for batch in worked.chunks(10) {
        first.extend(hooks.get_many(batch).await.unwrap());
    }
    // A tenant of 1,000 new hooks routed twice: were routing to push kept hooks out, it
    // would push out a thousand of the worker's.
    for i in 0..1_000 {
        let (hook, _) = make_hook(&h, "tenant-big", &format!("b-{i}")).await;
        hooks.create(&hook, 1000).await.unwrap();
    }
    for _ in 0..2 {
        assert_eq!(
            hooks.list_for_routing(&"tenant-big".parse().unwrap(), usize::MAX).await.unwrap().hooks.len(),
            1_000
        );
    }
    let mut again = Vec::new();
    for batch in worked.chunks(10) {
        again.extend(hooks.get_many(batch).await.unwrap());
    }
    assert_eq!(first.len(), 1_024);
    let kept = |hook: &Arc<hookbridge_core::hook::Hook>| first.iter().any(|f| Arc::ptr_eq(f, hook));
    assert_eq!(again.iter().filter(|hook| !kept(hook)).count(), 0, "every one of the worker's hooks still kept");
}

/// More hooks than are kept parsed: every read, in the worker's batches of ten and in
/// ingest's lists of a tenant's hooks (each tenant has more than are kept of one), returns
/// the hooks asked for as stored, the second time round (when the first ones read are no
/// longer kept) and after each of them has changed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn more_hooks_than_are_kept_parsed_each_read_as_stored() {
    let h = hookbridge_testkit::EmbeddedHarness::start().await;
    let mut keys = Vec::new();
    for i in 0..1_100 {
        let tenant = format!("tenant-{}", i % 2);
        let (hook, _) = make_hook(&h, &tenant, &format!("hook-{i}")).await;
        h.backend().hooks.create(&hook, 1000).await.unwrap();
        keys.push((hook.tenant.clone(), hook.id));
    }
    let read_all = |description: Option<&'static str>| {
        let (h, keys) = (&h, &keys);
        async move {
            for batch in keys.chunks(10) {
                let got = h.backend().hooks.get_many(batch).await.unwrap();
                let mut ids: Vec<HookId> = got.iter().map(|hook| hook.id).collect();
                ids.sort();
                let mut asked: Vec<HookId> = batch.iter().map(|(_, id)| *id).collect();
                asked.sort();
                assert_eq!(ids, asked);
                for (hook, (tenant, _)) in got.iter().zip(batch) {
                    assert_eq!(&hook.tenant, tenant);
                    assert_eq!(hook.config.description.as_deref(), description, "hook {}", hook.config.name);
                }
            }
            for tenant in ["tenant-0", "tenant-1"] {
                let routed =
                    h.backend().hooks.list_for_routing(&tenant.parse().unwrap(), usize::MAX).await.unwrap().hooks;
                assert_eq!(routed.len(), 550);
                assert!(routed.iter().all(|hook| hook.tenant.as_str() == tenant));
                assert!(routed.iter().all(|hook| hook.config.description.as_deref() == description));
            }
        }
    };
    read_all(None).await;
    read_all(None).await;
    describe_every_hook_in_place(&h, "second").await;
    read_all(Some("second")).await;
}

/// A database started beside another database's key file (restored from a backup next to
/// a key made since, or copied alone to a machine that has one) is refused, naming the
/// file: started, it opened none of the hooks' secrets, and every delivery of every hook
/// was cancelled for good.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_database_beside_another_databases_key_is_refused() {
    let h = hookbridge_testkit::EmbeddedHarness::start().await;
    for (tenant, name) in [("acme", "first"), ("globex", "second")] {
        let (hook, _) = make_hook(&h, tenant, name).await;
        h.backend().hooks.create(&hook, 1000).await.unwrap();
    }
    let key_file = h.config().key_file.clone();
    let ours = std::fs::read(&key_file).unwrap();
    std::fs::write(&key_file, [7u8; 32]).unwrap();

    let refused = hookbridge_embedded::init(h.config()).await.map(drop).unwrap_err();
    assert!(matches!(refused, hookbridge_embedded::InitError::KeyMismatch { .. }), "{refused}");
    assert!(refused.to_string().contains(&key_file.display().to_string()), "{refused}");

    std::fs::write(&key_file, ours).unwrap();
    hookbridge_embedded::init(h.config()).await.unwrap();
}

/// The hooks the worker's batches and ingest's routing read are kept in memory until this
/// process's writer changes a hook (for a second at most), so a delivery makes no read of
/// them. Shown by a change made behind the writer (another connection to the file, as
/// `hookbridge migrate` or an edit by hand would make): the kept hooks are served until a
/// hook is written through the writer, or the second is up. Every change made through the
/// writer, of whatever hook, is seen at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hooks_read_for_deliveries_are_kept_until_a_hook_is_written() {
    let h = hookbridge_testkit::EmbeddedHarness::start().await;
    let hooks = &h.backend().hooks;
    let behind = |description: &str| {
        rusqlite::Connection::open(&h.config().database)
            .unwrap()
            .execute("UPDATE hooks SET doc = json_set(doc, '$.config.description', ?1)", [description])
            .unwrap();
    };
    let described = |hooks: &[Arc<hookbridge_core::hook::Hook>]| {
        hooks.iter().map(|h| h.config.description.clone().unwrap_or_default()).collect::<Vec<_>>()
    };
    let (hook, _) = make_hook(&h, "tenant-k", "kept").await;
    hooks.create(&hook, 1000).await.unwrap();
    let key = [(hook.tenant.clone(), hook.id)];
    // Checked only when quick enough that the second cannot have run out (a busy machine
    // may stall the test); each try starts afresh, after a hook written.
    let mut checked = false;
    for attempt in 0..5 {
        let (other, _) = make_hook(&h, "tenant-other", &format!("other-{attempt}")).await;
        hooks.create(&other, 1000).await.unwrap();
        let began = std::time::Instant::now();
        let first = hooks.get_many(&key).await.unwrap();
        let routed = hooks.list_for_routing(&hook.tenant, usize::MAX).await.unwrap().hooks;
        behind(&format!("behind-{attempt}"));
        let again = hooks.get_many(&key).await.unwrap();
        let routed_again = hooks.list_for_routing(&hook.tenant, usize::MAX).await.unwrap().hooks;
        if began.elapsed() < std::time::Duration::from_millis(500) {
            assert!(Arc::ptr_eq(&first[0], &again[0]), "kept: not read again");
            assert!(Arc::ptr_eq(&routed[0], &routed_again[0]), "kept: not read again");
            checked = true;
            break;
        }
    }
    assert!(checked, "every try was too slow to check");

    // Another tenant's hook written: every kept hook is read again.
    let (other, _) = make_hook(&h, "tenant-other", "last").await;
    hooks.create(&other, 1000).await.unwrap();
    let now = described(&hooks.get_many(&key).await.unwrap());
    assert!(now[0].starts_with("behind-"), "{now:?}");
    assert_eq!(described(&hooks.list_for_routing(&hook.tenant, usize::MAX).await.unwrap().hooks), now);

    // Nothing written through the writer: seen once the second is up.
    behind("after a second");
    tokio::time::sleep(std::time::Duration::from_millis(1_100)).await;
    assert_eq!(described(&hooks.get_many(&key).await.unwrap()), ["after a second"]);
    assert_eq!(described(&hooks.list_for_routing(&hook.tenant, usize::MAX).await.unwrap().hooks), ["after a second"]);

    // A hook added to the tenant is routed to at once, a deleted one is gone at once, and
    // a replaced one is read as replaced.
    let (added, _) = make_hook(&h, "tenant-k", "added").await;
    hooks.create(&added, 1000).await.unwrap();
    assert_eq!(hooks.list_for_routing(&hook.tenant, usize::MAX).await.unwrap().hooks.len(), 2);
    assert!(hooks.delete(&hook.tenant, hook.id).await.unwrap());
    assert!(hooks.get_many(&key).await.unwrap().is_empty());
    let added_key = [(added.tenant.clone(), added.id)];
    let mut replaced = (*hooks.get_many(&added_key).await.unwrap()[0]).clone();
    assert_eq!(described(&hooks.list_for_routing(&hook.tenant, usize::MAX).await.unwrap().hooks), [""]);
    replaced.config.description = Some("replaced".to_owned());
    replaced.revision += 1;
    hooks.replace(&replaced, replaced.revision - 1).await.unwrap();
    assert_eq!(described(&hooks.get_many(&added_key).await.unwrap()), ["replaced"]);
    assert_eq!(described(&hooks.list_for_routing(&hook.tenant, usize::MAX).await.unwrap().hooks), ["replaced"]);
}
