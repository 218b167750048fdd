//! The error every port returns.

/// A boxed cause from a backend (SQLite, an AWS SDK call), kept as a source, never
/// flattened into a string.
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// What a port operation can fail with.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Another hook of the tenant has this name.
    #[error("a hook with this name already exists")]
    NameTaken,
    /// The stored version is not the one the write expected.
    #[error("the hook was changed by someone else; read it again and retry")]
    VersionConflict,
    /// The tenant has as many hooks as it may.
    #[error("the tenant has {limit} hooks, the most it may have")]
    QuotaReached {
        /// The limit.
        limit: u32,
    },
    /// A pagination cursor that this store did not issue.
    #[error("invalid cursor")]
    InvalidCursor,
    /// Larger than the backend accepts.
    #[error("too large: {0}")]
    TooLarge(String),
    /// The store has no room left (the disk, or the database's configured size): nothing
    /// was written, and the caller must say so rather than carry on.
    #[error("storage is full")]
    StorageFull,
    /// Stored data in a format a newer release writes (a sealed blob's format byte past
    /// every one this release knows): not this release's to read, nor a reason to give up
    /// on what depends on it, which the newer release can still do.
    #[error("stored {what} is in a format of a newer release")]
    NewerFormat {
        /// What was being read.
        what: &'static str,
    },
    /// Stored data that does not parse: a bug or tampering, never a client's fault.
    #[error("stored data is corrupt: {what}")]
    Corrupt {
        /// What was being read.
        what: &'static str,
        /// Why it could not be, when a parser or decrypter said.
        #[source]
        source: Option<BoxError>,
    },
    /// The backend failed (I/O, throttling, a service error). Shown with its causes, as
    /// every log line that writes it needs them (an AWS SDK error alone says only
    /// "service error"); the API answers `500` without it.
    #[error("backend error in {operation}: {}", Causes(source.as_ref()))]
    Backend {
        /// What we were doing, e.g. `dynamodb.PutItem`.
        operation: &'static str,
        /// The backend's error.
        #[source]
        source: BoxError,
    },
}

/// An error and its sources, each once, joined by `: ` (an error that repeats its
/// source's text in its own is shown as its own).
struct Causes<'a>(&'a (dyn std::error::Error + 'static));

impl std::fmt::Display for Causes<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut shown = self.0.to_string();
        f.write_str(&shown)?;
        let mut next = self.0.source();
        while let Some(e) = next {
            let text = e.to_string();
            if !shown.contains(&text) {
                write!(f, ": {text}")?;
            }
            shown = text;
            next = e.source();
        }
        Ok(())
    }
}

impl Error {
    /// Stored `what` does not parse, for the reason `source` gives.
    pub fn corrupt(what: &'static str, source: impl Into<BoxError>) -> Self {
        Self::Corrupt { what, source: Some(source.into()) }
    }

    /// Stored `what` is not what it should be (no parser to blame).
    pub fn corrupt_as(what: &'static str) -> Self {
        Self::Corrupt { what, source: None }
    }

    /// Wraps a backend error with the operation it came from.
    pub fn backend(operation: &'static str, source: impl Into<BoxError>) -> Self {
        Self::Backend { operation, source: source.into() }
    }
}

/// Results of port operations.
pub type Result<T, E = Error> = std::result::Result<T, E>;

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, thiserror::Error)]
    #[error("service error")]
    struct Outer(#[source] Inner);

    #[derive(Debug, thiserror::Error)]
    #[error("AccessDeniedException: not authorized to perform kms:Decrypt")]
    struct Inner;

    /// A backend error says what failed and why, all the way down: the SDK's own text is
    /// "service error", and the log lines that wrote only it told nothing.
    #[test]
    fn a_backend_error_shows_its_causes() {
        let e = Error::backend("kms.Decrypt", Outer(Inner));
        assert_eq!(
            e.to_string(),
            "backend error in kms.Decrypt: service error: AccessDeniedException: not authorized to perform kms:Decrypt"
        );
        assert_eq!(Error::backend("sqlite", "disk I/O error").to_string(), "backend error in sqlite: disk I/O error");
    }
}
