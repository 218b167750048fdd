//! The retention sweep deletes exactly what has expired, on every table that grows with
//! traffic, and nothing that is still kept.

#![allow(clippy::unwrap_used)] // Tests fail loudly on purpose.

use chrono::{Duration, Utc};
use hookbridge_core::envelope::Envelope;
use hookbridge_core::ports::Claim;
use hookbridge_core::topology::QUEUE_RETENTION;
use hookbridge_embedded::retention::{Swept, sweep};
use hookbridge_embedded::{Db, EmbeddedConfig};

fn count(path: &std::path::Path, table: &str) -> i64 {
    let c = rusqlite::Connection::open(path).unwrap();
    c.query_row(&format!("SELECT COUNT(*) FROM {table}"), [], |r| r.get(0)).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sweep_deletes_what_expired_and_keeps_the_rest() {
    let dir = tempfile::tempdir().unwrap();
    let config = EmbeddedConfig::at(dir.path().join("hb.db"));
    let backend = hookbridge_embedded::init(&config).await.unwrap();
    let now = Utc::now();
    let tenant = "acme".parse().unwrap();

    let envelope = |id: &str| {
        let body = format!(
            r#"{{"version":"0","id":"{id}","detail-type":"t","source":"s","account":"1","time":"2026-11-30T00:00:00Z","region":"r","resources":[],"detail":{{"tenant":"acme"}}}}"#
        );
        Envelope::from_bus_json(&body, "1", "r").unwrap()
    };
    let (old, kept) = (envelope("old-event"), envelope("kept-event"));
    backend.events.put(&tenant, std::slice::from_ref(&old), now - Duration::seconds(1)).await.unwrap();
    backend.events.put(&tenant, std::slice::from_ref(&kept), now + Duration::days(14)).await.unwrap();

    let store = &backend.idempotency;
    assert_eq!(
        store.claim(&tenant, "old", "fp", now - Duration::hours(25), now - Duration::hours(1)).await.unwrap(),
        Claim::Claimed
    );
    assert_eq!(store.claim(&tenant, "kept", "fp", now, now + Duration::hours(24)).await.unwrap(), Claim::Claimed);

    {
        // Deliveries, messages and rate state as traffic leaves them, old and new.
        let c = rusqlite::Connection::open(&config.database).unwrap();
        let ms = now.timestamp_millis();
        for (id, exp) in [("d-old", ms - 1), ("d-kept", ms + 86_400_000)] {
            c.execute(
                "INSERT INTO deliveries (hook_id, id, doc, expires_at) VALUES ('h', ?1, '{}', ?2)",
                rusqlite::params![id, exp],
            )
            .unwrap();
        }
        let dlq = &config.topology.delivery.dlq;
        let ancient = ms - QUEUE_RETENTION.as_millis() as i64 - 1000;
        for (id, sent) in [("m-old", ancient), ("m-kept", ms - 1000)] {
            c.execute(
                "INSERT INTO messages (queue, id, body, visible_at, receive_count, sent_at) VALUES (?1, ?2, 'x', 0, 5, ?3)",
                rusqlite::params![dlq, id, sent],
            )
            .unwrap();
        }
        for (id, exp) in [("j-old", ms - 1), ("j-kept", ms + 86_400_000)] {
            c.execute(
                "INSERT INTO replays (hook_id, id, step, doc, expires_at) VALUES ('h', ?1, 0, '{}', ?2)",
                rusqlite::params![id, exp],
            )
            .unwrap();
        }
        let us = now.timestamp_micros();
        for (key, next) in [("r-idle", us - 2 * 3_600_000_000), ("r-busy", us + 1_000_000)] {
            c.execute("INSERT INTO rates (key, next_us) VALUES (?1, ?2)", rusqlite::params![key, next]).unwrap();
        }
    }

    let db = Db::open(&config.database).unwrap();
    let swept = sweep(&db, now).await.unwrap();
    assert_eq!(
        swept,
        Swept {
            deliveries: 1,
            events: 1,
            idempotency_keys: 1,
            messages: 1,
            rates: 1,
            seen_types: 0,
            portal: 0,
            replays: 1
        }
    );
    for table in ["deliveries", "events", "idempotency", "messages", "rates", "replays"] {
        assert_eq!(count(&config.database, table), 1, "{table}: the one still kept remains");
    }
    assert!(backend.events.get(&tenant, &kept.id).await.unwrap().is_some());
    assert_eq!(sweep(&db, now).await.unwrap(), Swept::default(), "a second sweep finds nothing");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sweep_deletes_in_batches_until_nothing_expired_is_left() {
    let dir = tempfile::tempdir().unwrap();
    let config = EmbeddedConfig::at(dir.path().join("hb.db"));
    hookbridge_embedded::init(&config).await.unwrap();
    {
        let mut c = rusqlite::Connection::open(&config.database).unwrap();
        let tx = c.transaction().unwrap();
        for i in 0..5000 {
            tx.execute(
                "INSERT INTO deliveries (hook_id, id, doc, expires_at) VALUES ('h', ?1, '{}', 1)",
                [format!("{i:05}")],
            )
            .unwrap();
        }
        tx.commit().unwrap();
    }
    let swept = sweep(&Db::open(&config.database).unwrap(), Utc::now()).await.unwrap();
    assert_eq!(swept.deliveries, 5000);
    assert_eq!(count(&config.database, "deliveries"), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expired_messages_go_in_batches_and_the_newer_ones_stay() {
    let dir = tempfile::tempdir().unwrap();
    let config = EmbeddedConfig::at(dir.path().join("hb.db"));
    hookbridge_embedded::init(&config).await.unwrap();
    let now = Utc::now();
    let expired = (now - Duration::from_std(QUEUE_RETENTION).unwrap() - Duration::hours(1)).timestamp_millis();
    {
        let mut c = rusqlite::Connection::open(&config.database).unwrap();
        let tx = c.transaction().unwrap();
        // Sent in order: 4,500 before the retention period began, then 10 within it.
        for i in 0..4510 {
            let sent_at = if i < 4500 { expired + i } else { now.timestamp_millis() };
            tx.execute(
                "INSERT INTO messages (queue, id, body, visible_at, receive_count, sent_at) VALUES ('q', ?1, 'x', 0, 0, ?2)",
                rusqlite::params![format!("m{i}"), sent_at],
            )
            .unwrap();
        }
        tx.commit().unwrap();
    }
    let swept = sweep(&Db::open(&config.database).unwrap(), now).await.unwrap();
    assert_eq!(swept.messages, 4500);
    assert_eq!(count(&config.database, "messages"), 10);
}
