//! One database, one `HOOKBRIDGE_PREFIX`: begun under another, the process made a second
//! set of queues and bus rules beside the first. The bus copied every event into both, and
//! what waited in the first set (retries, a backlog) was never read, with nothing said.

#![allow(clippy::unwrap_used)] // Tests fail loudly on purpose.

use hookbridge_core::topology::Topology;
use hookbridge_embedded::{EmbeddedConfig, InitError};

#[tokio::test]
async fn a_database_is_refused_under_another_prefix_than_its_queues_have() {
    let dir = tempfile::tempdir().unwrap();
    let at = |prefix: &str| EmbeddedConfig {
        topology: Topology::named(prefix),
        ..EmbeddedConfig::at(dir.path().join("hb.db"))
    };
    drop(hookbridge_embedded::init(&at("acme")).await.unwrap());

    let Err(refused) = hookbridge_embedded::init(&at("hookbridge")).await else {
        panic!("opened under another prefix");
    };
    assert!(
        matches!(&refused, InitError::OtherPrefix { found, prefix } if found == "acme" && prefix == "hookbridge"),
        "{refused:?}"
    );
    assert!(refused.to_string().contains("HOOKBRIDGE_PREFIX=acme"), "{refused}");
    // Nothing of the other prefix was made.
    let db = rusqlite::Connection::open(dir.path().join("hb.db")).unwrap();
    let made: i64 =
        db.query_row("SELECT COUNT(*) FROM queues WHERE name LIKE 'hookbridge-%'", [], |r| r.get(0)).unwrap();
    let rules: i64 =
        db.query_row("SELECT COUNT(*) FROM rules WHERE target LIKE 'hookbridge-%'", [], |r| r.get(0)).unwrap();
    assert_eq!((made, rules), (0, 0));

    // Its own prefix opens it, again and again.
    drop(hookbridge_embedded::init(&at("acme")).await.unwrap());
    drop(hookbridge_embedded::init(&at("acme")).await.unwrap());
}
