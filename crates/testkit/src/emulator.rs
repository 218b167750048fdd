//! The AWS emulator (moto from `.venv`, installed by the Makefile, started through
//! `scripts/emulator.py`, which makes its DynamoDB transactions and SQS receives atomic and
//! its queries and receives cheap), one per test process on a free port, stopped when the
//! process ends.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::Duration;

use aws_config::{BehaviorVersion, Region};
use aws_sdk_dynamodb::config::Credentials;

/// A running emulator.
#[derive(Debug)]
pub struct Emulator {
    endpoint: String,
    _process: Child,
}

/// The command that runs the emulator: `HOOKBRIDGE_MOTO_SERVER` (a `moto_server`), or the
/// workspace's `scripts/emulator.py` on its `.venv`'s Python.
fn moto_server() -> Vec<PathBuf> {
    if let Some(p) = std::env::var_os("HOOKBRIDGE_MOTO_SERVER") {
        return vec![PathBuf::from(p)];
    }
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..");
    vec![root.join(".venv/bin/python3"), root.join("scripts/emulator.py")]
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).map(|a| a.port()).expect("a free port")
}

impl Emulator {
    /// Starts an emulator on a free port and waits until it answers.
    pub fn start() -> Self {
        Self::start_on(free_port())
    }

    /// Starts an emulator on `port` (e.g. again, after [`Emulator::stop`]).
    pub fn start_on(port: u16) -> Self {
        let server = moto_server();
        for part in &server {
            assert!(
                part.exists(),
                "{} not found: run `make test` (it installs the emulator into .venv) or set HOOKBRIDGE_MOTO_SERVER",
                part.display()
            );
        }
        let server = server.iter().map(|p| p.display().to_string()).collect::<Vec<_>>().join(" ");
        // A watchdog shell stops the emulator when this test process ends, however it ends.
        let script = format!(
            "{server} -H 127.0.0.1 -p {port} >/dev/null 2>&1 & m=$!; trap 'kill $m 2>/dev/null' EXIT TERM; \
             while kill -0 {pid} 2>/dev/null && kill -0 $m 2>/dev/null; do sleep 0.5; done",
            pid = std::process::id()
        );
        // Nothing in the product purges a queue; the bench's fan-out empties its delivery
        // queue several times a second, which SQS (and the emulator by default) would refuse.
        let process = Command::new("bash")
            .arg("-c")
            .arg(script)
            .env("MOTO_SQS_ENFORCE_STRICT_QUEUE_PURGE_BEHAVIOUR", "false")
            .stdin(Stdio::null())
            .spawn()
            .expect("start the emulator");
        let endpoint = format!("http://127.0.0.1:{port}");
        let deadline = std::time::Instant::now() + Duration::from_secs(60);
        loop {
            let ok = std::net::TcpStream::connect(("127.0.0.1", port)).is_ok_and(|mut s| {
                use std::io::{Read, Write};
                let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
                s.write_all(b"GET /moto-api/ HTTP/1.0\r\nHost: localhost\r\n\r\n").is_ok() && {
                    let mut buf = [0u8; 12];
                    s.read_exact(&mut buf).is_ok() && buf.starts_with(b"HTTP/1.") && &buf[9..12] == b"200"
                }
            });
            if ok {
                break;
            }
            assert!(std::time::Instant::now() < deadline, "the emulator did not start within 60 s");
            std::thread::sleep(Duration::from_millis(100));
        }
        Self { endpoint, _process: process }
    }

    /// Stops it (all its state is gone) and waits until it has.
    pub fn stop(mut self) {
        // SIGTERM through bash's own `kill` (no procps needed): the watchdog's trap then
        // stops the emulator, which a SIGKILL to the watchdog would leave running. Should
        // that fail, the SIGKILL at least keeps `wait` from waiting forever.
        let term = Command::new("bash").arg("-c").arg(format!("kill -TERM {}", self._process.id())).status();
        if !term.is_ok_and(|s| s.success()) {
            let _ = self._process.kill();
        }
        let _ = self._process.wait();
        let port: u16 = self.endpoint.rsplit(':').next().and_then(|p| p.parse().ok()).unwrap_or(0);
        for _ in 0..100 {
            if std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Its port.
    pub fn port(&self) -> u16 {
        self.endpoint.rsplit(':').next().and_then(|p| p.parse().ok()).unwrap_or(0)
    }

    /// The emulator shared by every test of this process.
    pub fn shared() -> &'static Emulator {
        static SHARED: OnceLock<Emulator> = OnceLock::new();
        SHARED.get_or_init(Emulator::start)
    }

    /// Its endpoint URL.
    pub fn endpoint(&self) -> &str {
        &self.endpoint
    }

    /// SDK configuration pointing at it.
    pub async fn sdk_config(&self) -> aws_config::SdkConfig {
        aws_config::defaults(BehaviorVersion::latest())
            .endpoint_url(&self.endpoint)
            .region(Region::new("us-east-1"))
            .credentials_provider(Credentials::new("test", "test", None, None, "hookbridge-tests"))
            .load()
            .await
    }

    /// The environment a child process (`hookbridge serve --backend aws`) needs to use it.
    pub fn env(&self) -> Vec<(&'static str, String)> {
        vec![
            ("AWS_ENDPOINT_URL", self.endpoint.clone()),
            ("AWS_REGION", "us-east-1".to_owned()),
            ("AWS_ACCESS_KEY_ID", "test".to_owned()),
            ("AWS_SECRET_ACCESS_KEY", "test".to_owned()),
        ]
    }
}
