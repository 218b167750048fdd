//! What the CLI prints. `serve`, when it is up: a ready-to-paste token only under the
//! development key, whose tokens anyone can make. Under an operator's key it printed a
//! working 30-day token into the service's log, for whoever reads the log.

#![allow(clippy::unwrap_used)] // Tests fail loudly on purpose.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

/// The banner `serve` prints with `env` among Hookbridge's variables (up to its "Try it").
fn banner(env: &[(&str, &str)]) -> String {
    let dir = tempfile::tempdir().unwrap();
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_hookbridge"));
    cmd.args(["serve", "--listen", "127.0.0.1:0", "--database"]).arg(dir.path().join("hb.db"));
    for (k, _) in std::env::vars().filter(|(k, _)| k.starts_with("HOOKBRIDGE_")) {
        cmd.env_remove(k);
    }
    let mut child = cmd.envs(env.iter().copied()).env("RUST_LOG", "warn").stderr(Stdio::piped()).spawn().unwrap();
    let stderr = child.stderr.take().unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let mut text = String::new();
    while let Ok(line) = rx.recv_timeout(Duration::from_secs(120)) {
        text.push_str(&line);
        text.push('\n');
        if line.contains("Try it") {
            break;
        }
    }
    let _ = child.kill();
    let _ = child.wait();
    assert!(text.contains("Hookbridge is running"), "no banner: {text}");
    text
}

#[test]
fn a_token_is_printed_only_under_the_development_key() {
    let development = banner(&[]);
    assert!(development.contains("export HB_TOKEN=ey"), "{development}");
    let operators = banner(&[("HOOKBRIDGE_JWT_SECRET", "an-operator-chosen-key-of-at-least-32-bytes")]);
    assert!(!operators.contains("HB_TOKEN=ey"), "{operators}");
    // By this binary's path: `hookbridge` is not on the PATH after `make run`.
    let make = format!("export HB_TOKEN=$({} token --tenant demo)", env!("CARGO_BIN_EXE_hookbridge"));
    assert!(operators.contains(&make), "how to make one: {operators}");
}

/// `receive --help` names the variable its secret may come from, not the secret in it.
#[test]
fn help_never_shows_the_receivers_secret() {
    let secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
    let out = Command::new(env!("CARGO_BIN_EXE_hookbridge"))
        .args(["receive", "--help"])
        .env("HOOKBRIDGE_RECEIVER_SECRET", secret)
        .output()
        .unwrap();
    let help = String::from_utf8_lossy(&out.stdout);
    assert!(help.contains("HOOKBRIDGE_RECEIVER_SECRET"), "{help}");
    assert!(!help.contains(secret), "{help}");
}
