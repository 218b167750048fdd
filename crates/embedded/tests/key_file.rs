//! The embedded backend's key file: created by `init` readable by its owner only, and the
//! only key that opens what it sealed.

#![allow(clippy::unwrap_used)] // Tests fail loudly on purpose.

use hookbridge_core::hook::HookSecrets;
use hookbridge_core::ports::Sealer;
use hookbridge_core::secret::{Secret, SigningSecret};
use hookbridge_embedded::{EmbeddedConfig, LocalKeySealer};

fn secrets() -> HookSecrets {
    HookSecrets {
        signing: SigningSecret::generate(),
        retiring: Vec::new(),
        auth: Some(Secret::new("p4ssw0rd-in-the-clear?")),
        params: Default::default(),
        headers: Default::default(),
    }
}

#[tokio::test]
async fn init_creates_an_owner_only_key_that_alone_opens_what_it_sealed() {
    let dir = tempfile::tempdir().unwrap();
    let config = EmbeddedConfig::at(dir.path().join("state").join("hb.db"));
    let backend = hookbridge_embedded::init(&config).await.unwrap();
    let meta = std::fs::metadata(&config.key_file).unwrap();
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = |p: &std::path::Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(meta.permissions().mode() & 0o777, 0o600, "the key file must be readable by its owner only");
        // The database and its log hold payloads, receivers' answers and hook URLs: the
        // owner's only too, whatever the umask.
        let log = dir.path().join("state").join("hb.db-wal");
        assert_eq!((mode(&config.database), mode(&log)), (0o600, 0o600));
        assert_eq!(mode(&dir.path().join("state")), 0o700, "the directory made for them");
        let leftovers = std::fs::read_dir(dir.path().join("state")).unwrap().filter_map(Result::ok);
        assert!(!leftovers.map(|e| e.file_name()).any(|n| n.to_string_lossy().contains(".partial-")));
    }
    assert_eq!(meta.len(), 32);

    let s = secrets();
    let tenant: hookbridge_core::ids::TenantId = "acme".parse().unwrap();
    let owner = hookbridge_core::hook::SecretsOwner { tenant: &tenant, hook: hookbridge_core::ids::HookId::generate() };
    let sealed = backend.sealer.seal(owner, &s).await.unwrap();
    assert!(!String::from_utf8_lossy(&sealed.0).contains("p4ssw0rd"));
    assert_eq!(backend.sealer.open(owner, &sealed).await.unwrap(), s);

    // Another key (another deployment's file) cannot open it.
    let other = LocalKeySealer::load_or_create(&dir.path().join("other.key")).unwrap();
    assert!(matches!(other.open(owner, &sealed).await, Err(hookbridge_core::Error::Corrupt { .. })));

    // A second init keeps the key: what was sealed stays readable.
    let again = hookbridge_embedded::init(&config).await.unwrap();
    assert_eq!(again.sealer.open(owner, &sealed).await.unwrap(), s);
}

/// A database path that is a link to a file not made yet (a link into a fresh volume): the
/// file made where it points, and its log, are the owner's only, as they are without the
/// link. They were made with SQLite's mode, 0644, readable by every user of the machine.
#[cfg(unix)]
#[tokio::test]
async fn a_database_made_through_a_link_is_the_owners_only() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let volume = dir.path().join("volume");
    std::fs::create_dir(&volume).unwrap();
    std::fs::set_permissions(&volume, std::fs::Permissions::from_mode(0o755)).unwrap();
    let link = dir.path().join("hb.db");
    std::os::unix::fs::symlink(volume.join("hb.db"), &link).unwrap();
    let _backend = hookbridge_embedded::init(&EmbeddedConfig::at(link)).await.unwrap();
    let mode = |p: &std::path::Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&volume.join("hb.db")), 0o600);
    assert_eq!(mode(&volume.join("hb.db-wal")), 0o600);
}

/// A database holding hooks, moved or restored without its key file: starting on it is
/// refused, naming the file. A new key would have started, and then opened none of the
/// hooks' secrets, so every delivery of every hook was cancelled.
#[tokio::test]
async fn a_database_with_hooks_whose_key_file_is_missing_is_refused_not_given_a_new_key() {
    let dir = tempfile::tempdir().unwrap();
    let config = EmbeddedConfig::at(dir.path().join("hb.db"));
    drop(hookbridge_embedded::init(&config).await.unwrap());
    rusqlite::Connection::open(&config.database)
        .unwrap()
        .execute("INSERT INTO hooks (tenant, id, name, revision, doc) VALUES ('acme', 'h1', 'h1', 1, '{}')", [])
        .unwrap();
    std::fs::remove_file(&config.key_file).unwrap();

    let refused = hookbridge_embedded::init(&config).await.map(drop).unwrap_err();
    assert!(matches!(refused, hookbridge_embedded::InitError::KeyFileMissing { .. }), "{refused}");
    assert!(refused.to_string().contains(&config.key_file.display().to_string()), "{refused}");
    assert!(!config.key_file.exists(), "no new key was made");

    // A database with no hooks yet may be given one.
    let empty = EmbeddedConfig::at(dir.path().join("empty.db"));
    hookbridge_embedded::init(&empty).await.unwrap();
    std::fs::remove_file(&empty.key_file).unwrap();
    hookbridge_embedded::init(&empty).await.unwrap();
    assert!(empty.key_file.exists());
}
