//! One `hookbridge serve` per database file. SQLite would let a second process on the same
//! file go on, but not well: its writer takes SQLite's write lock from under the first
//! one's (whose commits then wait in the busy handler), each process is woken only by its
//! own sends (the other's messages wait for a poll), and two retention sweeps delete side
//! by side. A second `serve` is almost always a mistake, so it is refused at start.

use std::fs::{File, OpenOptions, TryLockError};
use std::path::{Path, PathBuf};

/// An exclusive hold on a database file, for as long as it is kept. The operating system
/// lets go of it when the process ends, however it ends, so a crash leaves nothing stale.
#[derive(Debug)]
pub(crate) struct DatabaseLock {
    _file: File,
}

/// Why the hold could not be taken.
#[derive(Debug, thiserror::Error)]
pub enum LockError {
    /// Another process holds it.
    #[error(
        "another `hookbridge serve` is running on {database} (it holds {lock}); stop it, or give this one its own --database"
    )]
    InUse {
        /// The database file.
        database: PathBuf,
        /// The lock file beside it.
        lock: PathBuf,
    },
    /// The lock file could not be opened or locked.
    #[error("cannot lock {lock}: {source}")]
    Io {
        /// The lock file.
        lock: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
}

/// The lock file beside `database`: `hb.db` → `hb.db.lock`. It is left in place when the
/// hold ends; deleting it could let two processes each lock a different file of that name.
pub(crate) fn lock_path(database: &Path) -> PathBuf {
    let mut name = database.as_os_str().to_owned();
    name.push(".lock");
    PathBuf::from(name)
}

/// `database` with every link and relative step resolved, as SQLite resolves it; one not
/// made yet is its resolved directory and its name, followed through a link that names
/// it (a link into a fresh volume: SQLite creates the file the link points at).
fn real_path(database: &Path) -> std::io::Result<PathBuf> {
    let mut path = database.to_path_buf();
    // As many links as Linux follows in one path.
    for _ in 0..40 {
        match path.canonicalize() {
            Ok(real) => return Ok(real),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
        let dir = path.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(Path::new(".")).to_path_buf();
        match std::fs::read_link(&path) {
            Ok(target) => path = dir.join(target),
            Err(_) => {
                let name = path.file_name().ok_or_else(|| std::io::Error::other("names no file"))?;
                return Ok(dir.canonicalize()?.join(name));
            }
        }
    }
    Err(std::io::Error::other("too many links"))
}

impl DatabaseLock {
    /// Takes the hold on `database`, or says who has it. Does not wait.
    pub(crate) fn take(database: &Path) -> Result<Self, LockError> {
        let io = |source| LockError::Io { lock: lock_path(database), source };
        if let Some(dir) = database.parent().filter(|d| !d.as_os_str().is_empty()) {
            hookbridge_embedded::owner_only_dir(dir).map_err(io)?;
        }
        // Beside the file SQLite opens: a database reached through a link (or by another
        // relative path) is the same database, and must find the same lock.
        let lock = lock_path(&real_path(database).map_err(io)?);
        let io = |source| LockError::Io { lock: lock.clone(), source };
        let file = OpenOptions::new().create(true).truncate(false).write(true).open(&lock).map_err(io)?;
        match file.try_lock() {
            Ok(()) => Ok(Self { _file: file }),
            Err(TryLockError::WouldBlock) => Err(LockError::InUse { database: database.to_path_buf(), lock }),
            Err(TryLockError::Error(e)) => Err(io(e)),
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn a_second_hold_on_the_same_database_is_refused_until_the_first_ends() {
        let dir = tempfile::tempdir().unwrap();
        let database = dir.path().join("hb.db");
        let first = DatabaseLock::take(&database).unwrap();
        match DatabaseLock::take(&database) {
            Err(LockError::InUse { database: d, lock }) => {
                assert_eq!(d, database);
                assert_eq!(lock, dir.path().canonicalize().unwrap().join("hb.db.lock"));
            }
            other => panic!("a second hold was not refused: {other:?}"),
        }
        // Another database beside it is its own.
        DatabaseLock::take(&dir.path().join("other.db")).unwrap();
        drop(first);
        DatabaseLock::take(&database).unwrap();
    }

    /// A link to the database, or another way to the same directory, is the same database.
    #[test]
    fn the_same_database_by_another_path_is_the_same_hold() {
        let dir = tempfile::tempdir().unwrap();
        let database = dir.path().join("hb.db");
        std::fs::write(&database, b"").unwrap();
        std::os::unix::fs::symlink(&database, dir.path().join("alias.db")).unwrap();
        std::fs::create_dir(dir.path().join("sub")).unwrap();
        let _held = DatabaseLock::take(&database).unwrap();
        for other in [dir.path().join("alias.db"), dir.path().join("sub/../hb.db")] {
            assert!(matches!(DatabaseLock::take(&other), Err(LockError::InUse { .. })), "{}", other.display());
        }
    }

    /// A link to a database not made yet (a link into a fresh volume) is that database,
    /// before SQLite creates it and after.
    #[test]
    fn a_link_to_a_database_not_made_yet_is_that_database() {
        let dir = tempfile::tempdir().unwrap();
        let (database, alias) = (dir.path().join("hb.db"), dir.path().join("alias.db"));
        std::os::unix::fs::symlink("hb.db", &alias).unwrap();
        let _held = DatabaseLock::take(&alias).unwrap();
        assert!(matches!(DatabaseLock::take(&database), Err(LockError::InUse { .. })));
        std::fs::write(&alias, b"").unwrap();
        assert!(database.exists(), "written through the link");
        for other in [&alias, &database] {
            assert!(matches!(DatabaseLock::take(other), Err(LockError::InUse { .. })), "{}", other.display());
        }
    }
}
