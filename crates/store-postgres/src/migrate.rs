//! Versioned, forward-only migrations, embedded in the binary. All pending ones run in one
//! transaction, together with the rows that record them, under a transaction-level advisory
//! lock: nodes starting together against a new database wait for each other, and the one that
//! comes second finds the schema done. A crash mid-migration leaves the previous version whole. A
//! database at a version this binary does not know (written by a newer Cloakroom) is refused.

use cloakroom_core::{StoreError, Timestamp};
use sqlx::{Executor as _, PgPool, Row as _};

/// `(version, sql)`, in order. Append only; never edit a released entry.
const MIGRATIONS: &[(i64, &str)] = &[
    (1, include_str!("../migrations/0001_init.sql")),
    (2, include_str!("../migrations/0002_audit_ids.sql")),
];

/// The advisory lock class of Cloakroom's migrations (`pg_advisory_xact_lock(class, 0)`).
pub(crate) const LOCK_CLASS: i32 = 0x636c_6f00; // "clo\0"

/// The newest schema version this binary knows.
pub fn latest() -> i64 {
    MIGRATIONS.last().map_or(0, |m| m.0)
}

pub(crate) async fn run(pool: &PgPool) -> Result<(), StoreError> {
    let mut tx = pool.begin().await.map_err(StoreError::unavailable)?;
    sqlx::query("SELECT pg_advisory_xact_lock($1, 0)")
        .bind(LOCK_CLASS)
        .execute(&mut *tx)
        .await
        .map_err(StoreError::unavailable)?;
    sqlx::query(
        "CREATE TABLE IF NOT EXISTS schema_migrations (
             version BIGINT PRIMARY KEY, applied_at BIGINT NOT NULL)",
    )
    .execute(&mut *tx)
    .await
    .map_err(StoreError::unavailable)?;
    let current: i64 = sqlx::query("SELECT COALESCE(MAX(version), 0) AS v FROM schema_migrations")
        .fetch_one(&mut *tx)
        .await
        .and_then(|r| r.try_get("v"))
        .map_err(StoreError::unavailable)?;
    let latest = latest();
    if current > latest {
        return Err(StoreError::Corrupt {
            what: "schema version",
            source: Some(
                format!(
                    "the database is at schema version {current}, newer than this binary's {latest}"
                )
                .into(),
            ),
        });
    }
    for &(version, sql) in MIGRATIONS {
        if version <= current {
            continue;
        }
        // A simple query (no parameters): several statements in one round trip.
        (&mut *tx).execute(sql).await.map_err(StoreError::unavailable)?;
        sqlx::query("INSERT INTO schema_migrations (version, applied_at) VALUES ($1, $2)")
            .bind(version)
            .bind(Timestamp::now().as_millis())
            .execute(&mut *tx)
            .await
            .map_err(StoreError::unavailable)?;
        tracing::info!(version, "applied store migration");
    }
    tx.commit().await.map_err(StoreError::unavailable)
}
