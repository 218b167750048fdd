//! `hookbridge serve` on the embedded backend writes to its database through one writer.
//! SQLite lets one connection write at a time; a second writer on the same file (the
//! retention sweep once opened its own, and a second `serve` would bring its own) takes the
//! lock from under the first, whose commits then wait in SQLite's busy handler, sleeping up
//! to 100 ms at a time.

#![allow(clippy::unwrap_used)] // Tests fail loudly on purpose.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The names of the process's threads, as Linux shows them.
fn thread_names(pid: u32) -> Vec<String> {
    std::fs::read_dir(format!("/proc/{pid}/task"))
        .unwrap()
        .filter_map(|t| std::fs::read_to_string(t.unwrap().path().join("comm")).ok())
        .map(|n| n.trim().to_owned())
        .collect()
}

#[tokio::test]
async fn serve_has_one_sqlite_writer_for_its_api_stages_and_retention_sweep() {
    let dir = tempfile::tempdir().unwrap();
    let port = hookbridge_testkit::Receiver::free_addr().port();
    let mut serve = Command::new(env!("CARGO_BIN_EXE_hookbridge"))
        .args(["serve", "--listen", &format!("127.0.0.1:{port}"), "--database"])
        .arg(dir.path().join("hb.db"))
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let http = reqwest::Client::new();
    let mut up = false;
    for _ in 0..300 {
        if http.get(format!("http://127.0.0.1:{port}/v1/health")).send().await.is_ok_and(|r| r.status() == 200) {
            up = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Every task the stack starts (the sweep among them) is running once it answers.
    let names = thread_names(serve.id());
    serve.kill().unwrap();
    serve.wait().unwrap();
    assert!(up, "hookbridge serve did not come up");
    let writers = names.iter().filter(|n| *n == "sqlite-writer").count();
    assert_eq!(writers, 1, "threads: {names:?}");
}

fn serve(db: &Path, port: u16, stderr: Stdio) -> Child {
    Command::new(env!("CARGO_BIN_EXE_hookbridge"))
        .args(["serve", "--listen", &format!("127.0.0.1:{port}"), "--database"])
        .arg(db)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(stderr)
        .spawn()
        .unwrap()
}

async fn healthy(port: u16) -> bool {
    let http = reqwest::Client::new();
    for _ in 0..300 {
        if http.get(format!("http://127.0.0.1:{port}/v1/health")).send().await.is_ok_and(|r| r.status() == 200) {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    false
}

#[tokio::test]
async fn a_second_serve_on_the_same_database_is_refused_and_the_first_goes_on() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("hb.db");
    let first_port = hookbridge_testkit::Receiver::free_addr().port();
    let mut first = serve(&db, first_port, Stdio::null());
    assert!(healthy(first_port).await, "the first serve did not come up");

    let second_port = hookbridge_testkit::Receiver::free_addr().port();
    let mut second = serve(&db, second_port, Stdio::piped());
    let start = Instant::now();
    let status = loop {
        if let Some(status) = second.try_wait().unwrap() {
            break Some(status);
        }
        if start.elapsed() > Duration::from_secs(30) {
            second.kill().unwrap();
            second.wait().unwrap();
            break None;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let mut said = String::new();
    std::io::Read::read_to_string(&mut second.stderr.take().unwrap(), &mut said).unwrap();
    let first_still_up = healthy(first_port).await;
    first.kill().unwrap();
    first.wait().unwrap();
    let status = status.unwrap_or_else(|| panic!("the second serve kept running; it said: {said}"));
    assert!(!status.success(), "the second serve exited successfully; it said: {said}");
    assert!(said.contains("another `hookbridge serve` is running on"), "{said}");
    assert!(said.contains("hb.db.lock"), "{said}");
    assert!(first_still_up, "the first serve stopped answering");

    // The hold ends with the process that had it, however it ended (here SIGKILL).
    let third_port = hookbridge_testkit::Receiver::free_addr().port();
    let mut third = serve(&db, third_port, Stdio::null());
    let third_up = healthy(third_port).await;
    third.kill().unwrap();
    third.wait().unwrap();
    assert!(third_up, "a serve after the first was killed did not come up");
}
