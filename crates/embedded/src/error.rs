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
    /// Creating a resource failed.
    #[error(transparent)]
    Port(#[from] hookbridge_core::Error),
}

/// Maps SQLite errors into the port error, naming the operation.
pub(crate) fn sql(operation: &'static str) -> impl FnOnce(rusqlite::Error) -> hookbridge_core::Error {
    move |e| hookbridge_core::Error::backend(operation, e)
}
