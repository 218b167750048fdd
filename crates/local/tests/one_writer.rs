//! `hookbridge serve` on the embedded backend writes to its database through one writer.
//! SQLite lets one connection write at a time; a second writer on the same file (the
//! retention sweep once opened its own) takes the lock from under the first, whose commits
//! then wait in SQLite's busy handler, sleeping up to 100 ms at a time.

#![allow(clippy::unwrap_used)] // Tests fail loudly on purpose.

use std::process::{Command, Stdio};
use std::time::Duration;

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
