//! `hookbridge dead-letters`: what the embedded backend's dead-letter queues hold, and
//! `--redrive` sending it back. A message that went there was only logged, and deleted by
//! the retention sweep 14 days later, with no way to see or recover it.

#![allow(clippy::unwrap_used)] // Tests fail loudly on purpose.

use std::path::Path;
use std::process::{Command, Output};
use std::time::Duration;

use hookbridge_core::ports::{OutgoingMessage, Queue};
use hookbridge_embedded::{Db, EmbeddedQueue};

fn hookbridge(args: &[&str], db: &Path) -> Output {
    Command::new(env!("CARGO_BIN_EXE_hookbridge"))
        .args(args)
        .arg("--database")
        .arg(db)
        .env("RUST_LOG", "warn")
        .output()
        .unwrap()
}

/// Asserts that `command` on `db`, which is not there, refuses saying so and makes none.
fn refuses_a_missing_database(command: &str, db: &Path) {
    let missing = hookbridge(&[command], db);
    assert!(!missing.status.success(), "{command}");
    assert!(said(&missing).contains("there is no database at"), "{command}: {}", said(&missing));
    assert!(!db.exists(), "{command} made one");
}

/// Asserts that the database's log holds nothing: a command that ends has folded what it
/// wrote into the database file, so a copy of that file (with its key) is whole, as the
/// README's backup says.
fn folded(db: &Path, after: &str) {
    let log = db.with_file_name(format!("{}-wal", db.file_name().unwrap().to_string_lossy()));
    let len = std::fs::metadata(&log).map(|m| m.len()).unwrap_or(0);
    assert_eq!(len, 0, "after {after}, the log still holds commits the database file lacks");
}

fn said(out: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr))
}

#[tokio::test]
async fn dead_letters_are_listed_and_sent_back_to_their_queue() {
    let dir = tempfile::tempdir().unwrap();
    let db_path = dir.path().join("hb.db");
    refuses_a_missing_database("dead-letters", &db_path);

    let init = hookbridge(&["init"], &db_path);
    assert!(init.status.success(), "{}", said(&init));
    let event = r#"{"id":"e-1","detail-type":"user.login","source":"app","detail":{"user":"u1"}}"#;
    {
        let db = Db::open(&db_path).unwrap();
        let dlq = EmbeddedQueue::new(db, "hookbridge-ingest-dlq");
        dlq.send_batch(&[OutgoingMessage::now(event.to_owned())]).await.unwrap();
    }

    let listed = hookbridge(&["dead-letters"], &db_path);
    let text = String::from_utf8(listed.stdout.clone()).unwrap();
    assert!(listed.status.success(), "{}", said(&listed));
    assert!(text.contains("hookbridge-ingest (hookbridge-ingest-dlq): 1 messages"), "{text}");
    assert!(text.contains(event), "the body is shown: {text}");
    assert!(text.contains("hookbridge-verify (hookbridge-verify-dlq): 0 messages"), "{text}");

    let redriven = hookbridge(&["dead-letters", "--redrive"], &db_path);
    let text = String::from_utf8(redriven.stdout.clone()).unwrap();
    assert!(redriven.status.success(), "{}", said(&redriven));
    assert!(text.contains("hookbridge-ingest: 1 sent back"), "{text}");
    folded(&db_path, "dead-letters --redrive");

    let after = String::from_utf8(hookbridge(&["dead-letters"], &db_path).stdout).unwrap();
    assert!(after.contains("hookbridge-ingest (hookbridge-ingest-dlq): 0 messages"), "{after}");
    let db = Db::open(&db_path).unwrap();
    let back = EmbeddedQueue::new(db, "hookbridge-ingest").receive(10, Duration::from_secs(1)).await.unwrap();
    assert_eq!(back.iter().map(|m| (m.body.as_str(), m.receive_count)).collect::<Vec<_>>(), [(event, 1)]);
}

/// `migrate` on a database that is not there (a mistyped path, the wrong directory) says
/// so. It made an empty one and reported "0 hooks read", as if the real one were migrated.
#[test]
fn migrate_refuses_a_database_that_is_not_there() {
    let dir = tempfile::tempdir().unwrap();
    let db_path = dir.path().join("typo.db");
    refuses_a_missing_database("migrate", &db_path);
    assert!(hookbridge(&["init"], &db_path).status.success());
    folded(&db_path, "init");
    let migrated = hookbridge(&["migrate"], &db_path);
    assert!(migrated.status.success(), "{}", said(&migrated));
    folded(&db_path, "migrate");
}
