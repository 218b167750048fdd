//! The backend's files on disk, readable by their owner only: the database and its log
//! hold event payloads, receivers' answers and hook URLs (some of which are credentials
//! themselves), and the key file opens every hook's secrets.

use std::io::Write as _;
use std::path::Path;

/// Creates `dir` and any missing parents, those it creates with mode 0700. A directory
/// that exists keeps its mode: its owner chose it.
pub fn owner_only_dir(dir: &Path) -> std::io::Result<()> {
    let mut builder = std::fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::DirBuilderExt;
        builder.mode(0o700);
    }
    builder.create(dir)
}

/// Creates `path`, empty, with mode 0600, unless it exists. SQLite then opens it as a new
/// database, and makes its log and shared-memory files with the same mode. A link to a
/// file not made yet (a link into a fresh volume) has the file made where it points:
/// left to SQLite, that one was made with SQLite's own mode, 0644.
pub(crate) fn owner_only_file(path: &Path) -> std::io::Result<()> {
    match new_file(path) {
        Ok(_) => Ok(()),
        // `exists` follows the link: false for one that points at nothing yet.
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists && !path.exists() => {
            let mut opts = std::fs::OpenOptions::new();
            // Without `create_new`, the open follows the link and makes its file.
            opts.write(true).create(true);
            #[cfg(unix)]
            {
                use std::os::unix::fs::OpenOptionsExt;
                opts.mode(0o600);
            }
            opts.open(path).map(drop)
        }
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
            warn_if_others_read(path);
            Ok(())
        }
        Err(e) => Err(e),
    }
}

/// Says so when a database that exists can be read by other users: one made before
/// databases were made 0600 (before 2026-12-04), or opened up since. Its mode is left as
/// it is, since its owner may have chosen it.
fn warn_if_others_read(path: &Path) {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let Ok(meta) = std::fs::metadata(path) else { return };
        let mode = meta.permissions().mode() & 0o777;
        if mode & 0o044 != 0 {
            tracing::warn!(
                path = %path.display(),
                mode = format!("{mode:o}"),
                "the database can be read by other users of this machine, and it holds event payloads, \
                 receivers' answers and hook URLs: `chmod 600` it and its -wal and -shm files unless that is meant"
            );
        }
    }
}

/// Writes `bytes` to `path` as a new file with mode 0600, whole or not at all: written
/// beside it, synced, then linked into place, which fails if `path` exists meanwhile.
/// Written in place, a full disk or a crash between creating and writing left an empty
/// key file that every later start refused.
pub(crate) fn write_new_whole(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let mut partial = path.as_os_str().to_owned();
    partial.push(format!(".partial-{:016x}", rand::random::<u64>()));
    let partial = std::path::PathBuf::from(partial);
    let written = new_file(&partial).and_then(|mut f| f.write_all(bytes).and_then(|()| f.sync_all()));
    let linked = written.and_then(|()| match std::fs::hard_link(&partial, path) {
        // A file system without links: written in place, as new (a rename would replace a
        // key another process made meanwhile, and sealed with).
        Err(e) if matches!(e.kind(), std::io::ErrorKind::Unsupported | std::io::ErrorKind::PermissionDenied) => {
            new_file(path).and_then(|mut f| {
                let written = f.write_all(bytes).and_then(|()| f.sync_all());
                if written.is_err() {
                    // Ours, and not left half written: an empty key file is refused by
                    // every start. (One another process made first is not touched.)
                    let _ = std::fs::remove_file(path);
                }
                written
            })
        }
        linked => linked,
    });
    let _ = std::fs::remove_file(&partial);
    // The link itself lasts only once the directory is synced (where that can be done).
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty())
        && let Ok(d) = std::fs::File::open(dir)
    {
        let _ = d.sync_all();
    }
    linked
}

fn new_file(path: &Path) -> std::io::Result<std::fs::File> {
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(0o600);
    }
    opts.open(path)
}

#[cfg(test)]
mod tests {
    /// A database that others can read (made before databases were made 0600): started on
    /// with a warning saying so, its mode left as its owner has it; none for one that is
    /// the owner's only.
    #[cfg(unix)]
    #[tokio::test]
    async fn a_database_others_can_read_is_warned_of_at_start() {
        use std::os::unix::fs::PermissionsExt;
        let lines = crate::captured_logs::CapturedLogs::default();
        let _log = lines.on_this_thread();
        let warned = || lines.text().contains("chmod 600");

        let dir = tempfile::tempdir().unwrap();
        let config = crate::EmbeddedConfig::at(dir.path().join("hb.db"));
        drop(crate::init(&config).await.unwrap());
        drop(crate::init(&config).await.unwrap());
        assert!(!warned(), "the owner's only: nothing to say");

        std::fs::set_permissions(&config.database, std::fs::Permissions::from_mode(0o644)).unwrap();
        drop(crate::init(&config).await.unwrap());
        assert!(warned(), "no warning for a database others can read");
        assert_eq!(std::fs::metadata(&config.database).unwrap().permissions().mode() & 0o777, 0o644);
    }
}
