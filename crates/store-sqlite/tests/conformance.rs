//! The SQLite store against the shared store conformance suite, each test on its own temp file.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use cloakroom_store_sqlite::SqliteStore;

async fn fresh() -> (SqliteStore, tempfile::TempDir) {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("conformance.db");
    let store = SqliteStore::open(path.to_str().expect("utf-8 path")).await.expect("open store");
    (store, dir)
}

cloakroom_core::store_conformance_tests!(fresh);
