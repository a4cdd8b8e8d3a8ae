//! The embedded store's files are private: they hold password hashes.
#![allow(clippy::unwrap_used, clippy::expect_used)]
#![cfg(unix)]

use std::os::unix::fs::PermissionsExt as _;
use std::process::Command;

use cloakroom_core::store::prelude::*;
use cloakroom_store_sqlite::SqliteStore;

/// Regression: SQLite made the database 0644 less the umask, and the `-wal` and `-shm` files
/// with it, so under the usual umask 022 every local user could read the password hashes. Runs
/// [`under_umask_022`] in a child process with that umask (a umask is per process; this test's own
/// may already be stricter and hide the hole).
#[test]
fn a_fresh_store_and_its_wal_and_shm_files_are_created_0600() {
    let exe = std::env::current_exe().unwrap();
    let out = Command::new("sh")
        .arg("-c")
        .arg(r#"umask 022 && exec "$0" --exact under_umask_022 --ignored --nocapture"#)
        .arg(exe)
        .output()
        .unwrap();
    let log =
        format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "{log}");
    assert!(log.contains("1 passed"), "the child ran no test: {log}");
}

#[tokio::test]
#[ignore = "run by a_fresh_store_and_its_wal_and_shm_files_are_created_0600, under umask 022"]
async fn under_umask_022() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("c.db");
    let store = SqliteStore::open(db.to_str().unwrap()).await.unwrap();
    // A write, so the WAL and its index exist for certain.
    store.ping().await.unwrap();
    sqlx::query("CREATE TABLE probe (x)").execute(store.pool()).await.unwrap();
    for suffix in ["", "-wal", "-shm"] {
        let path = format!("{}{suffix}", db.display());
        let mode = std::fs::metadata(&path).expect(&path).permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "{path} is {mode:o}");
    }
    // A `file:` URI name makes its file private too.
    let uri_db = dir.path().join("u.db");
    let _store =
        SqliteStore::open(&format!("file:{}?cache=private", uri_db.display())).await.unwrap();
    let mode = std::fs::metadata(&uri_db).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600, "a file: URI's database is {mode:o}");
}

#[test]
fn file_uris_name_their_file_and_memory_names_none() {
    use cloakroom_store_sqlite::file_of;
    assert_eq!(file_of("x.db"), Some("x.db"));
    assert_eq!(file_of("file:x.db?cache=shared"), Some("x.db"));
    assert_eq!(file_of("file:///var/lib/x.db"), Some("/var/lib/x.db"));
    assert_eq!(file_of("file://localhost/var/lib/x.db"), Some("/var/lib/x.db"));
    for memory in ["", ":memory:", "file::memory:", "file:x?mode=memory&cache=shared", "file:"] {
        assert_eq!(file_of(memory), None, "{memory}");
    }
}
