//! `hookbridge serve` stopped by SIGTERM while a client holds a request half sent (its host
//! gone mid-request, here half its head): the process still stops, and a second signal
//! stops it at once.

#![allow(clippy::unwrap_used)] // Tests fail loudly on purpose.

use std::io::Write;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use hookbridge_testkit::Receiver;

fn serve(db: &str, port: u16) -> Child {
    Command::new(env!("CARGO_BIN_EXE_hookbridge"))
        .args(["serve", "--listen", &format!("127.0.0.1:{port}"), "--database", db])
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn hookbridge")
}

async fn healthy(base: &str) {
    let http = reqwest::Client::new();
    for _ in 0..300 {
        if http.get(format!("{base}/v1/health")).send().await.is_ok_and(|r| r.status() == 200) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("hookbridge serve did not come up at {base}");
}

fn signal(child: &Child, name: &str) {
    // The shell's own `kill`: Debian's images need not have procps.
    let sent = Command::new("bash").args(["-c", &format!("kill -s {name} {}", child.id())]).status().unwrap();
    assert!(sent.success());
}

/// How `child` exited, if it did within `limit`; killed if it did not.
fn exits_within(child: &mut Child, limit: Duration) -> Option<std::process::ExitStatus> {
    let start = Instant::now();
    while start.elapsed() < limit {
        if let Some(status) = child.try_wait().unwrap() {
            return Some(status);
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = child.kill();
    let _ = child.wait();
    None
}

/// A running `serve`, a client holding half a request's head open on it, and SIGTERM sent:
/// the process, the held connection, and the database's directory (kept until the end).
async fn told_to_stop_with_half_a_request_open() -> (Child, std::net::TcpStream, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("hb.db").display().to_string();
    let port = Receiver::free_addr().port();
    let child = serve(&db, port);
    healthy(&format!("http://127.0.0.1:{port}")).await;
    let mut held = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    held.write_all(b"POST /v1/events HTTP/1.1\r\nHost: x\r\n").unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    signal(&child, "TERM");
    (child, held, dir)
}

/// A half-sent request at shutdown: before, a graceful shutdown waited for it for ever.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_half_sent_request_does_not_keep_serve_from_stopping() {
    let (mut child, _held, _dir) = told_to_stop_with_half_a_request_open().await;
    let stopped =
        exits_within(&mut child, Duration::from_secs(60)).expect("serve did not stop with a request half sent");
    assert!(stopped.success(), "a stop that waited is a clean one: {stopped}");
}

/// A second signal stops it at once, whatever is still finishing, and its exit status says
/// it was not a clean stop (it was 0).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_signal_stops_serve_at_once() {
    let (mut child, _held, _dir) = told_to_stop_with_half_a_request_open().await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    signal(&child, "INT");
    // Well inside the ten seconds the first signal gives open requests.
    let stopped = exits_within(&mut child, Duration::from_secs(5)).expect("the second signal did not stop it");
    assert_eq!(stopped.code(), Some(1), "{stopped}");
}

/// A clean stop folds the database's log into it: the `-wal` file is left empty, and the
/// database and its key, copied alone (as the README says to back them up), hold the hook
/// made just before the stop. The log was never folded, since no connection is closed:
/// `-wal` was left full, and the last commits were in the database file only if the
/// background checkpoint they kicked had run before the process ended.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_clean_stop_leaves_every_commit_in_the_database_file() {
    use subscription_api::{Claims, JwtKey, mint_token};

    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("hb.db");
    let port = Receiver::free_addr().port();
    let base = format!("http://127.0.0.1:{port}");
    let mut child = serve(&db.display().to_string(), port);
    healthy(&base).await;
    let claims =
        Claims { sub: "t".into(), tenant: "acme".into(), scope: "hooks:read hooks:write".into(), exp: u64::MAX / 2 };
    let token = mint_token(&JwtKey::new(hookbridge_core::settings::LOCAL_DEV_SECRET), &claims).unwrap();
    let http = reqwest::Client::new();
    let made = http
        .post(format!("{base}/v1/hooks"))
        .bearer_auth(&token)
        .json(&serde_json::json!({"name": "kept", "url": "http://127.0.0.1:9/"}))
        .send()
        .await
        .unwrap();
    assert_eq!(made.status(), 201);
    let id = made.json::<serde_json::Value>().await.unwrap()["id"].as_str().unwrap().to_owned();
    signal(&child, "TERM");
    let stopped = exits_within(&mut child, Duration::from_secs(60)).expect("serve did not stop");
    assert!(stopped.success(), "{stopped}");

    let log = dir.path().join("hb.db-wal");
    let log_len = std::fs::metadata(&log).map(|m| m.len()).unwrap_or(0);
    assert_eq!(log_len, 0, "the log still holds commits after a clean stop");

    let copy = tempfile::tempdir().unwrap();
    std::fs::copy(&db, copy.path().join("hb.db")).unwrap();
    std::fs::copy(dir.path().join("hb.db.key"), copy.path().join("hb.db.key")).unwrap();
    let port = Receiver::free_addr().port();
    let base = format!("http://127.0.0.1:{port}");
    let mut again = serve(&copy.path().join("hb.db").display().to_string(), port);
    healthy(&base).await;
    let read = http.get(format!("{base}/v1/hooks/{id}")).bearer_auth(&token).send().await.unwrap();
    assert_eq!(read.status(), 200, "the copy has lost the hook");
    signal(&again, "TERM");
    assert!(exits_within(&mut again, Duration::from_secs(60)).is_some_and(|s| s.success()));
}
