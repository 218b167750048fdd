//! The `hookbridge` command line.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context as _;
use clap::{Parser, Subcommand, ValueEnum};
use hookbridge_core::settings::{Defaults, JWT_SECRET, JWT_SECRET_NAME, Settings};
use subscription_api::{Claims, JwtKey, mint_token};

use crate::{BackendChoice, RunningStack, StackOptions};

/// Hookbridge: deliver your product's events to your customers' endpoints, signed, at
/// least once.
#[derive(Debug, Parser)]
#[command(name = "hookbridge", version)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// Which backend.
#[derive(Debug, Clone, Copy, ValueEnum, PartialEq, Eq)]
pub enum BackendKind {
    /// SQLite on this machine.
    Embedded,
    /// DynamoDB, SQS, EventBridge and KMS (an account, or the emulator via AWS_ENDPOINT_URL).
    Aws,
}

/// The smallest cap on the database: below it, a new database cannot even hold its
/// tables, and opening it failed with SQLite's "database or disk is full".
const MIN_DATABASE_SIZE: u64 = 1 << 20;

/// Parses a size like `512MB`, `2GB` or a number of bytes, at least [`MIN_DATABASE_SIZE`].
fn size(text: &str) -> Result<u64, String> {
    let t = text.trim();
    let (num, mult) = [("GB", 1u64 << 30), ("MB", 1 << 20), ("KB", 1 << 10), ("B", 1)]
        .iter()
        .find_map(|(suffix, m)| t.strip_suffix(suffix).map(|n| (n, *m)))
        .unwrap_or((t, 1));
    let not_a_size = || format!("{text:?} is not a size like 512MB or 2GB (HOOKBRIDGE_DATABASE_MAX_SIZE)");
    let bytes = num.trim().parse::<u64>().map_err(|_| not_a_size())?.checked_mul(mult).ok_or_else(not_a_size)?;
    if bytes < MIN_DATABASE_SIZE {
        return Err(format!("{text:?} is too small for a database: at least 1MB (HOOKBRIDGE_DATABASE_MAX_SIZE)"));
    }
    Ok(bytes)
}

/// `hookbridge receive --secret`: a platform secret (`whsec_…`), or one a client chose
/// through the Keycloak or ExtremeCloud IQ API, which signs with its text as it is.
fn receiver_secret(
    text: &str,
) -> Result<hookbridge_core::secret::SigningSecret, hookbridge_core::secret::InvalidSigningSecret> {
    use hookbridge_core::secret::SigningSecret;
    if text.starts_with("whsec_") { SigningSecret::parse(text) } else { SigningSecret::client_chosen(text) }
}

/// The most deliveries a lane may hold at once: far past what one process sends, and
/// within what a semaphore can count (a larger number stopped the lane with a panic).
const MAX_DELIVERY_CONCURRENCY: usize = 100_000;

/// `--delivery-concurrency` / `HOOKBRIDGE_DELIVERY_CONCURRENCY`: its error names both, as
/// clap's own names only the flag.
fn concurrency(text: &str) -> Result<usize, String> {
    text.trim().parse::<usize>().ok().filter(|n| (1..=MAX_DELIVERY_CONCURRENCY).contains(n)).ok_or_else(|| {
        format!("{text:?} is not a whole number from 1 to {MAX_DELIVERY_CONCURRENCY} (HOOKBRIDGE_DELIVERY_CONCURRENCY)")
    })
}

/// `--listen` / `HOOKBRIDGE_LISTEN`.
fn backend(text: &str) -> Result<BackendKind, String> {
    match text.trim().to_ascii_lowercase().as_str() {
        "embedded" => Ok(BackendKind::Embedded),
        "aws" => Ok(BackendKind::Aws),
        _ => Err(format!("{text:?} is not a backend: embedded or aws (HOOKBRIDGE_BACKEND)")),
    }
}

fn address(text: &str) -> Result<SocketAddr, String> {
    text.trim().parse().map_err(|_| format!("{text:?} is not an address like 127.0.0.1:3000 (HOOKBRIDGE_LISTEN)"))
}

impl BackendKind {
    async fn choice(self, database: PathBuf, max_bytes: Option<u64>) -> BackendChoice {
        match self {
            Self::Embedded => BackendChoice::Embedded { database, max_bytes },
            Self::Aws => BackendChoice::Aws { sdk: Box::new(hookbridge_aws::sdk_config_from_env().await) },
        }
    }
}

/// Subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the API and every stage on this machine.
    Serve {
        /// The backend: embedded (SQLite) or aws.
        #[arg(long, value_parser = backend, default_value = "embedded", env = "HOOKBRIDGE_BACKEND")]
        backend: BackendKind,
        /// The SQLite database (embedded backend).
        #[arg(long, default_value = ".hookbridge/hookbridge.db", env = "HOOKBRIDGE_DATABASE")]
        database: PathBuf,
        /// Where the API listens.
        #[arg(long, default_value = "127.0.0.1:3000", value_parser = address, env = "HOOKBRIDGE_LISTEN")]
        listen: SocketAddr,
        /// Deliveries in progress at once on the fast lane (a quarter as many on the slow one).
        #[arg(long, default_value_t = crate::stack::DEFAULT_DELIVERY_CONCURRENCY, value_parser = concurrency, env = "HOOKBRIDGE_DELIVERY_CONCURRENCY")]
        delivery_concurrency: usize,
        /// The most the database may grow to (e.g. 2GB); when full, the API answers 503 and
        /// nothing is accepted, rather than the disk filling up. Its log beside it can take
        /// up to about 20 MB more (40 MB for a database created with 4 KiB pages).
        #[arg(long, value_parser = size, env = "HOOKBRIDGE_DATABASE_MAX_SIZE")]
        database_max_size: Option<u64>,
    },
    /// Create the backend's resources (idempotent).
    Init {
        /// The backend: embedded (SQLite) or aws.
        #[arg(long, value_parser = backend, default_value = "embedded", env = "HOOKBRIDGE_BACKEND")]
        backend: BackendKind,
        /// The SQLite database (embedded backend).
        #[arg(long, default_value = ".hookbridge/hookbridge.db", env = "HOOKBRIDGE_DATABASE")]
        database: PathBuf,
    },
    /// Bring stored data up to the current formats (idempotent; `init` does it too): today,
    /// re-seal hook secrets so each blob is bound to its hook.
    Migrate {
        /// The backend: embedded (SQLite) or aws.
        #[arg(long, value_parser = backend, default_value = "embedded", env = "HOOKBRIDGE_BACKEND")]
        backend: BackendKind,
        /// The SQLite database (embedded backend).
        #[arg(long, default_value = ".hookbridge/hookbridge.db", env = "HOOKBRIDGE_DATABASE")]
        database: PathBuf,
    },
    /// What the embedded backend's dead-letter queues hold (messages received as often as
    /// their queue allows, never handled), and with `--redrive`, send them back to the
    /// queue each came from. On AWS, use SQS's own redrive.
    DeadLetters {
        /// The SQLite database.
        #[arg(long, default_value = ".hookbridge/hookbridge.db", env = "HOOKBRIDGE_DATABASE")]
        database: PathBuf,
        /// How many of each queue's oldest messages to print.
        #[arg(long, default_value_t = 5)]
        show: usize,
        /// Send every dead letter back to its queue, to be received afresh.
        #[arg(long)]
        redrive: bool,
    },
    /// Run a receiver on this machine that prints deliveries and checks their signatures.
    Receive {
        /// Where it listens.
        #[arg(long, default_value = "127.0.0.1:9000")]
        listen: SocketAddr,
        /// The hook's signing secret (`whsec_…`), to verify signatures.
        #[arg(long, env = "HOOKBRIDGE_RECEIVER_SECRET", hide_env_values = true)]
        secret: Option<String>,
    },
    /// Print an API token signed with the configured key.
    Token {
        /// The tenant the token acts for.
        #[arg(long)]
        tenant: String,
        /// Scopes (repeat the flag); all three by default.
        #[arg(long = "scope")]
        scopes: Vec<String>,
        /// The subject recorded as `created_by`.
        #[arg(long, default_value = "local-operator")]
        sub: String,
        /// Lifetime, e.g. 1h, 30d.
        #[arg(long, default_value = "30d")]
        ttl: String,
    },
}

/// The most of a dead letter's body printed: enough to see what it is about.
const BODY_SHOWN: usize = 300;

/// Refuses a database that is not there: opening would create an empty one, and the
/// command would then report on it (a mistyped path, the wrong directory) as if it were the
/// real one.
fn existing(database: &std::path::Path) -> anyhow::Result<()> {
    if !database.try_exists().with_context(|| format!("cannot look at {}", database.display()))? {
        anyhow::bail!("there is no database at {} (--database, HOOKBRIDGE_DATABASE)", database.display());
    }
    Ok(())
}

/// Folds the database's log into it as a command ends, so that the file alone (with its
/// key) holds what the command wrote, as the README's backup says: only `serve`'s stop
/// folded it, and a redrive or a migration run on a stopped database could be missing from
/// a copy of the file taken after. Not while a `serve` runs on it (it holds the database's
/// lock): the fold would wait on its readers holding the log's write lock, its writes
/// waiting meanwhile, and its own stop folds the log anyway.
async fn fold(database: &std::path::Path, db: &hookbridge_embedded::Db) {
    let Ok(_alone) = crate::database_lock::DatabaseLock::take(database) else {
        return;
    };
    match db.fold_log().await {
        Ok(true) => {}
        Ok(false) => {
            eprintln!("hookbridge: part of the database's log is still in its -wal file; keep it with the database")
        }
        Err(e) => {
            eprintln!("hookbridge: the database's log could not be folded into it ({e}); keep its -wal file with it")
        }
    }
}

async fn dead_letters(database: &std::path::Path, show: usize, redrive: bool) -> anyhow::Result<()> {
    existing(database)?;
    let db = hookbridge_embedded::Db::open(database)?;
    if redrive {
        for (queue, n) in hookbridge_embedded::dead_letters::redrive(&db).await? {
            println!("{queue}: {n} sent back");
        }
        fold(database, &db).await;
        return Ok(());
    }
    for q in hookbridge_embedded::dead_letters::list(&db, show).await? {
        println!("{} ({}): {} messages", q.queue, q.dlq, q.count);
        for m in &q.oldest {
            let body: String = m.body.chars().take(BODY_SHOWN).collect();
            let more = if body.len() < m.body.len() { " …" } else { "" };
            println!("  {} sent {}  {body}{more}", m.id, m.sent_at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true));
        }
    }
    Ok(())
}

fn settings() -> anyhow::Result<Settings> {
    Ok(Settings::from_lookup(|k| std::env::var(k).ok(), &Defaults::local())?)
}

fn ttl(text: &str) -> anyhow::Result<Duration> {
    hookbridge_core::retry::parse_duration(text)
        .with_context(|| format!("--ttl {text:?} is not a duration like 1h or 30d"))
}

/// Mints a token.
pub fn token(settings: &Settings, tenant: &str, scopes: &[String], sub: &str, ttl: Duration) -> anyhow::Result<String> {
    tenant.parse::<hookbridge_core::ids::TenantId>().map_err(|e| anyhow::anyhow!("--tenant: {e}"))?;
    let scope = if scopes.is_empty() { "hooks:read hooks:write events:publish".to_owned() } else { scopes.join(" ") };
    let exp = (chrono::Utc::now().timestamp() as u64)
        .checked_add(ttl.as_secs())
        .with_context(|| format!("--ttl {}s is longer than a token can live", ttl.as_secs()))?;
    let claims = Claims { sub: sub.to_owned(), tenant: tenant.to_owned(), scope, exp };
    let key = settings.tokens.hs256.as_ref().with_context(|| {
        format!(
            "`hookbridge token` signs HS256 tokens with {}; set it (an issuer's tokens come from the issuer)",
            hookbridge_core::settings::JWT_SECRET
        )
    })?;
    Ok(mint_token(&JwtKey::new(key.expose()), &claims)?)
}

/// Runs the command.
pub async fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Token { tenant, scopes, sub, ttl: t } => {
            let settings = settings()?;
            if settings.tokens.default_key {
                // Said on stderr, so a script reading the token still gets it alone: a
                // shell without serve's key signs a token serve refuses, with no other sign.
                eprintln!(
                    "note: signed with the built-in development key ({} is not set): only a `hookbridge serve` on it takes this token",
                    hookbridge_core::settings::JWT_SECRET
                );
            }
            println!("{}", token(&settings, &tenant, &scopes, &sub, ttl(&t)?)?);
            Ok(())
        }
        Command::Receive { listen, secret } => {
            let secret =
                secret.map(|s| receiver_secret(&s)).transpose().map_err(|e| anyhow::anyhow!("--secret: {e}"))?;
            crate::receive::run(listen, secret).await
        }
        Command::Migrate { backend, database } => {
            if matches!(backend, BackendKind::Embedded) {
                existing(&database)?;
            }
            let s = settings()?;
            let (b, db) = crate::stack::open(&backend.choice(database.clone(), None).await, &s, false).await?;
            let m = crate::migrate::reseal_secrets(&b).await?;
            eprintln!(
                "hookbridge: {} hooks read, {} re-sealed bound to their hook, {} whose secrets cannot be opened left as they are",
                m.hooks, m.resealed, m.unopened
            );
            if let Some(db) = db {
                fold(&database, &db).await;
            }
            Ok(())
        }
        Command::DeadLetters { database, show, redrive } => dead_letters(&database, show, redrive).await,
        Command::Init { backend, database } => {
            let s = settings()?;
            // Folded through the database the command wrote with. One opened again beside it
            // could meet the first one's background checkpoint still running (a dropped
            // database's threads end on their own), and the log was left unfolded (a test saw it once).
            let (b, db) = crate::stack::open(&backend.choice(database.clone(), None).await, &s, true).await?;
            let m = crate::migrate::reseal_secrets(&b).await?;
            if m.resealed > 0 {
                eprintln!("hookbridge: re-sealed the secrets of {} hooks, bound to their hook", m.resealed);
            }
            match backend {
                BackendKind::Embedded => {
                    if let Some(db) = &db {
                        fold(&database, db).await;
                    }
                    eprintln!("hookbridge: initialised the embedded backend at {}", database.display())
                }
                BackendKind::Aws => eprintln!(
                    "hookbridge: table {}, bus {}, queues {}, {}, {}, {} (each with its DLQ), rules (with {}) and KMS key are ready",
                    s.topology.table,
                    s.topology.bus,
                    s.topology.ingest.name,
                    s.topology.delivery.name,
                    s.topology.delivery_slow.name,
                    s.topology.verify.name,
                    s.topology.rules_dlq
                ),
            }
            Ok(())
        }
        Command::Serve { backend, database, listen, delivery_concurrency, database_max_size } => {
            let s = settings()?;
            s.check_exposure(listen)?;
            // Only under the development key, whose tokens anyone can make anyway: under an
            // operator's key it was a working 30-day token in the service's log, for whoever
            // reads it. With only an issuer configured, tokens come from the issuer.
            let demo = if s.tokens.default_key {
                Demo::Token(token(&s, "demo", &[], "local-operator", Duration::from_secs(30 * 86_400))?)
            } else if s.tokens.hs256.is_some() {
                Demo::Make
            } else if let Some(name) = &s.tokens.hs256_secret_name {
                Demo::FromSecret(name.clone())
            } else {
                Demo::Issuer
            };
            let place = match backend {
                BackendKind::Embedded => format!("embedded backend, data in {}", database.display()),
                BackendKind::Aws => format!(
                    "AWS backend at {}",
                    std::env::var("AWS_ENDPOINT_URL").unwrap_or_else(|_| "the account's endpoints".to_owned())
                ),
            };
            let stack = RunningStack::start(StackOptions {
                settings: s,
                backend: backend.choice(database, database_max_size).await,
                listen,
                delivery_concurrency,
            })
            .await?;
            banner(stack.addr(), &demo, &place);
            shutdown_signal().await;
            eprintln!("hookbridge: stopping; work in progress finishes, the rest stays queued (again to stop at once)");
            tokio::select! {
                () = stack.shutdown() => {
                    eprintln!("hookbridge: stopped");
                    Ok(())
                }
                // What was not finished comes back from its queue after its visibility
                // timeout, as after a crash; an event being routed as it was published, whose
                // publish was not answered, is published again by its producer. Not a clean
                // stop, and the exit status says so to whatever supervises the process.
                () = shutdown_signal() => {
                    anyhow::bail!("stopped at once, before work in progress finished; it comes back from its queue")
                }
            }
        }
    }
}

/// The token the banner offers.
enum Demo {
    /// One made with the development key.
    Token(String),
    /// None printed: the operator's key makes them (`hookbridge token`).
    Make,
    /// None printed: the key in this Secrets Manager secret makes them.
    FromSecret(String),
    /// None: they come from the issuer.
    Issuer,
}

/// How to run this binary again: its path as started (`hookbridge` is not on the PATH
/// after `make run`).
fn this_binary() -> String {
    std::env::current_exe().map_or_else(|_| "hookbridge".to_owned(), |p| p.display().to_string())
}

fn banner(addr: SocketAddr, demo: &Demo, backend: &str) {
    let token = match demo {
        Demo::Token(t) => format!(
            "Token      tenant \"demo\", scopes hooks:read hooks:write events:publish, valid 30 days:\n\n  export HB_TOKEN={t}"
        ),
        Demo::Make => format!(
            "Tokens     signed with your HOOKBRIDGE_JWT_SECRET; with it set in your shell too:\n\n  export HB_TOKEN=$({} token --tenant demo)",
            this_binary()
        ),
        Demo::FromSecret(name) => format!(
            "Tokens     signed with the key in Secrets Manager ({JWT_SECRET_NAME}={name}):\n\n  export HB_TOKEN=$({JWT_SECRET}=\"$(aws secretsmanager get-secret-value --secret-id {name} --query SecretString --output text)\" {} token --tenant demo)",
            this_binary()
        ),
        Demo::Issuer => {
            "Tokens     from your OpenID Connect issuer (HOOKBRIDGE_JWT_ISSUER): export HB_TOKEN=<one of them>"
                .to_owned()
        }
    };
    eprintln!(
        r#"
  Hookbridge is running ({backend})

  API        http://{addr}/v1   (health: http://{addr}/v1/health)
  {token}

  Try it (see README.md, "Five minutes with Hookbridge"):

  curl -s -X POST http://{addr}/v1/hooks -H "Authorization: Bearer $HB_TOKEN" \
       -H 'Content-Type: application/json' \
       -d '{{"name":"my-first-hook","url":"http://127.0.0.1:9000/hook","event_types":["user.*"]}}'

  Ctrl-C stops it; nothing queued is lost.
"#
    );
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {}
        () = term => {}
    }
}

#[cfg(test)]
mod tests {
    use super::{receiver_secret, size};

    #[test]
    fn the_receiver_checks_platform_and_client_chosen_secrets_alike() {
        use hookbridge_core::signing::{standard_signature, verify_standard};
        for text in ["whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw", "ofj09saP4-a-keycloak-client-secret"] {
            let secret = receiver_secret(text).unwrap();
            let signed = standard_signature(&secret, "msg_1", 1_700_000_000, b"{}");
            assert!(verify_standard(&secret, "msg_1", 1_700_000_000, &signed, b"{}", 1_700_000_000).is_ok(), "{text}");
        }
        assert!(receiver_secret("whsec_not base64").is_err());
    }

    #[test]
    fn sizes_read_as_bytes_and_too_large_ones_are_refused() {
        assert_eq!(size("512MB"), Ok(512 << 20));
        assert_eq!(size(" 2GB "), Ok(2 << 30));
        assert_eq!(size("1048576"), Ok(1 << 20));
        // Too small to hold the tables: said so, naming the variable.
        assert!(size("4096").is_err_and(|e| e.contains("at least 1MB") && e.contains("HOOKBRIDGE_DATABASE_MAX_SIZE")));
        assert!(size("64KB").is_err());
        assert!(size("lots").is_err());
        // 2^34 GB is 2^64 bytes: it wrapped to a cap of 0 before.
        assert!(size("17179869184GB").is_err());
    }
}
