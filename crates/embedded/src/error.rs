//! Errors of opening and initialising the embedded backend.

use std::path::PathBuf;

/// Why the embedded backend could not start.
#[derive(Debug, thiserror::Error)]
pub enum InitError {
    /// The database could not be opened or migrated.
    #[error("cannot open the database {path}: {source}")]
    Database {
        /// The file.
        path: PathBuf,
        /// SQLite's error.
        #[source]
        source: rusqlite::Error,
    },
    /// The key file is missing, unreadable or malformed.
    #[error("cannot use the key file {path}: {reason}; run `hookbridge init` to create one")]
    KeyFile {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// The key file is missing beside a database that holds sealed secrets: a new key
    /// would open none of them, so none is made.
    #[error(
        "the key file {path} is missing, and the database holds hooks whose secrets only that key opens: \
         restore it (a database moved or restored without it needs it beside it, named after it)"
    )]
    KeyFileMissing {
        /// The file.
        path: PathBuf,
    },
    /// The key file opens none of the secrets the database holds: it is another
    /// database's key (a database restored or copied beside a key made since). Started,
    /// every hook's deliveries would be cancelled as undeliverable.
    #[error(
        "the key file {path} opens none of the hook secrets in this database: it is not the key they were sealed with; \
         put that key back beside the database (named after it)"
    )]
    KeyMismatch {
        /// The file.
        path: PathBuf,
    },
    /// The database's queues were made under another `HOOKBRIDGE_PREFIX`: begun under this
    /// one, the process would make a second set beside them, leaving what waits in the first
    /// unread and copying every event into both.
    #[error(
        "this database's queues were made with HOOKBRIDGE_PREFIX={found}, not {prefix}: set HOOKBRIDGE_PREFIX={found} \
         to use it (under another prefix, what waits in its queues would never be read)"
    )]
    OtherPrefix {
        /// The prefix its queues have.
        found: String,
        /// The prefix this process was given.
        prefix: String,
    },
    /// Creating a resource failed.
    #[error(transparent)]
    Port(#[from] hookbridge_core::Error),
}

/// Maps SQLite errors into the port error, naming the operation. A full disk (or the
/// database's size cap) is its own error, so the API can answer 503 and say why.
pub(crate) fn sql(operation: &'static str) -> impl FnOnce(rusqlite::Error) -> hookbridge_core::Error {
    move |e| match &e {
        rusqlite::Error::SqliteFailure(f, _) if f.code == rusqlite::ErrorCode::DiskFull => {
            tracing::error!(operation, "the database is full: nothing more can be written");
            hookbridge_core::Error::StorageFull
        }
        _ => hookbridge_core::Error::backend(operation, e),
    }
}
