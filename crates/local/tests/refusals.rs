//! `hookbridge serve` refuses, before it opens anything, a configuration that would leave an
//! instance open by accident, and says which variable to set.

#![allow(clippy::unwrap_used)] // Tests fail loudly on purpose.

use std::process::Command;

const KEY: &str = "an-operator-chosen-key-of-at-least-32-bytes";

/// Runs `hookbridge serve` with only `env` among Hookbridge's variables; returns whether it
/// failed and what it wrote to stderr. It must fail: a refusal never reaches the listener.
fn refused(listen: &str, env: &[(&str, &str)]) -> String {
    let dir = tempfile::tempdir().unwrap();
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_hookbridge"));
    cmd.args(["serve", "--listen", listen, "--database"]).arg(dir.path().join("hb.db"));
    for (k, _) in std::env::vars().filter(|(k, _)| k.starts_with("HOOKBRIDGE_")) {
        cmd.env_remove(k);
    }
    let out = cmd.envs(env.iter().copied()).output().unwrap();
    assert!(!out.status.success(), "serve {listen} with {env:?} started");
    assert!(!dir.path().join("hb.db").exists(), "a refused start opened the database");
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn a_public_address_with_the_development_key_is_refused_naming_the_variable() {
    let err = refused("0.0.0.0:0", &[]);
    assert!(err.contains("HOOKBRIDGE_JWT_SECRET"), "{err}");
    assert!(err.contains("HOOKBRIDGE_JWT_ISSUER"), "the OIDC way is offered too: {err}");
}

#[test]
fn a_public_address_with_the_loopback_allow_list_is_refused_naming_the_variable() {
    let err = refused("0.0.0.0:0", &[("HOOKBRIDGE_JWT_SECRET", KEY)]);
    assert!(err.contains("HOOKBRIDGE_ALLOWED_NETWORKS"), "{err}");
}

#[test]
fn a_short_hs256_key_is_refused_at_start_up_naming_the_variable() {
    let err = refused("127.0.0.1:0", &[("HOOKBRIDGE_JWT_SECRET", "sixteen-byte-key")]);
    assert!(err.contains("HOOKBRIDGE_JWT_SECRET") && err.contains("32"), "{err}");
}

#[test]
fn an_issuer_that_is_not_a_url_is_refused_naming_the_variable() {
    let err = refused("127.0.0.1:0", &[("HOOKBRIDGE_JWT_ISSUER", "keycloak")]);
    assert!(err.contains("HOOKBRIDGE_JWT_ISSUER"), "{err}");
}

/// Settings whose bad values were taken quietly (and one that later stopped ingest with a
/// panic) are refused at start, each naming its variable.
#[test]
fn bad_settings_are_refused_at_start_naming_their_variable() {
    for (variable, value) in [
        // Past chrono's last year once added to now: ingest panicked on the first shared
        // or large envelope, and stayed stopped.
        ("HOOKBRIDGE_EVENT_RETENTION", "100000000d"),
        // Portal links and the console's sign-in were made from it, leading nowhere.
        ("HOOKBRIDGE_PUBLIC_URL", "hooks.example.com"),
        ("HOOKBRIDGE_PUBLIC_URL", "ftp://hooks.example.com"),
        // Quietly made 1.
        ("HOOKBRIDGE_DELIVERY_CONCURRENCY", "0"),
        // clap's own error named only the flag; the second stopped the lane with a panic.
        ("HOOKBRIDGE_DELIVERY_CONCURRENCY", "lots"),
        ("HOOKBRIDGE_DELIVERY_CONCURRENCY", "4611686018427387904"),
        ("HOOKBRIDGE_DATABASE_MAX_SIZE", "lots"),
        // Every request would time out at once.
        ("HOOKBRIDGE_REQUEST_TIMEOUT", "0"),
        ("HOOKBRIDGE_FAST_LANE_PATIENCE", "0s"),
        // Shorter than the retry schedule: a large event's later attempts found it gone.
        ("HOOKBRIDGE_EVENT_RETENTION", "1h"),
        // Shorter than a request: one still under way was received and sent again.
        ("HOOKBRIDGE_VISIBILITY_TIMEOUT", "5s"),
        // Set, but to nothing (a command substitution that failed): it was the public
        // development key.
        ("HOOKBRIDGE_JWT_SECRET", ""),
        // clap's own error named only the flag.
        ("HOOKBRIDGE_BACKEND", "sqlite"),
        // Spaced 0 µs apart: no limit at all, the burst ignored.
        ("HOOKBRIDGE_TENANT_PUBLISH_RATE", "2000000"),
    ] {
        let err = refused("127.0.0.1:0", &[(variable, value)]);
        assert!(err.contains(variable), "{variable}={value}: {err}");
    }
}

/// A worker thread count tokio cannot take is refused naming its variable, as every other
/// setting is. tokio read it itself and panicked, before any logging; a release build
/// (`panic = "abort"`) died of SIGABRT.
#[test]
fn a_bad_worker_thread_count_is_refused_not_a_panic() {
    for value in ["0", "auto"] {
        let err = refused("127.0.0.1:0", &[("TOKIO_WORKER_THREADS", value)]);
        assert!(err.contains("TOKIO_WORKER_THREADS") && !err.contains("panicked"), "{value}: {err}");
    }
}

/// A token lifetime that overflows the expiry is refused, not wrapped into a token that
/// expired long ago (or a panic in a debug build).
#[test]
fn a_token_lifetime_past_any_expiry_is_refused() {
    let out = Command::new(env!("CARGO_BIN_EXE_hookbridge"))
        .args(["token", "--tenant", "acme", "--ttl", "18446744073709551615s"])
        .env("HOOKBRIDGE_JWT_SECRET", KEY)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "a token was minted: {}", String::from_utf8_lossy(&out.stdout));
    assert!(err.contains("--ttl") && !err.contains("panicked"), "{err}");
}

/// A token signed with the built-in development key (no key set in this shell, though the
/// `serve` it is for may have one) says so on stderr, the token alone on stdout; signed
/// with a key that is set, it says nothing.
#[test]
fn a_token_signed_with_the_development_key_says_so() {
    let mint = |key: Option<&str>| {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_hookbridge"));
        cmd.args(["token", "--tenant", "acme"]).env_remove("HOOKBRIDGE_JWT_SECRET");
        if let Some(key) = key {
            cmd.env("HOOKBRIDGE_JWT_SECRET", key);
        }
        let out = cmd.output().unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        (String::from_utf8_lossy(&out.stdout).into_owned(), String::from_utf8_lossy(&out.stderr).into_owned())
    };
    let (token, note) = mint(None);
    assert!(note.contains("development key") && note.contains("HOOKBRIDGE_JWT_SECRET"), "{note}");
    assert_eq!(token.trim().split('.').count(), 3, "stdout is the token alone: {token}");
    let (_, quiet) = mint(Some(KEY));
    assert!(quiet.is_empty(), "{quiet}");
}
