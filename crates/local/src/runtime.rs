//! The tokio runtime a command runs on.

use crate::cli::{BackendKind, Cli, Command};

/// The environment variable tokio reads for its worker count; set, it wins over the rule
/// below.
const WORKERS_ENV: &str = "TOKIO_WORKER_THREADS";

/// Builds the runtime for `cli`'s command.
///
/// `serve` on the embedded backend leaves one core to SQLite: its writer thread commits
/// every write, and is busy whenever the server is (decision 0022). With a tokio worker on
/// every core, the workers and the writer took turns on the same cores, and each hand-off
/// between them woke a parked worker (a quarter of the server's CPU was wake-ups and
/// context switches). Every other command takes tokio's default, a worker per core.
pub fn for_command(cli: &Cli) -> std::io::Result<tokio::runtime::Runtime> {
    let mut builder = tokio::runtime::Builder::new_multi_thread();
    builder.enable_all();
    let cores = std::thread::available_parallelism().map_or(1, std::num::NonZero::get);
    if std::env::var_os(WORKERS_ENV).is_none()
        && let Some(workers) = workers(cli, cores)
    {
        builder.worker_threads(workers);
    }
    builder.build()
}

/// The tokio workers `cli`'s command runs with on `cores` cores, when not tokio's default.
fn workers(cli: &Cli, cores: usize) -> Option<usize> {
    match cli.command {
        Command::Serve { backend: BackendKind::Embedded, .. } => Some(cores.saturating_sub(1).max(1)),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)] // Tests fail loudly on purpose.

    use clap::Parser;

    use super::*;

    fn cli(args: &[&str]) -> Cli {
        Cli::try_parse_from(std::iter::once("hookbridge").chain(args.iter().copied())).unwrap()
    }

    #[test]
    fn embedded_serve_leaves_a_core_to_the_sqlite_writer() {
        let serve = cli(&["serve"]);
        assert_eq!([1, 2, 8].map(|cores| workers(&serve, cores)), [Some(1), Some(1), Some(7)]);
    }

    #[test]
    fn other_commands_and_the_aws_backend_take_tokios_default() {
        for args in [&["serve", "--backend", "aws"][..], &["init"], &["receive"]] {
            assert_eq!(workers(&cli(args), 2), None, "{args:?}");
        }
    }
}
