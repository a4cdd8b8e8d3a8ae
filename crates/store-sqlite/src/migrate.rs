//! Versioned, forward-only, transactional migrations, embedded in the binary. Each runs inside the
//! transaction that records it, so a crash mid-migration leaves the previous version intact. A
//! database written by a newer Cloakroom (a version this binary does not know) is refused rather
//! than used.

use cloakroom_core::StoreError;
use sqlx::{Row, SqlitePool};

/// `(version, sql)`, in order. Append only; never edit a released entry.
const MIGRATIONS: &[(i64, &str)] = &[
    (1, include_str!("../migrations/0001_init.sql")),
    (2, include_str!("../migrations/0002_grants.sql")),
    (3, include_str!("../migrations/0003_audit_ids.sql")),
];

pub(crate) async fn run(pool: &SqlitePool) -> Result<(), StoreError> {
    let mut tx = pool.begin_with("BEGIN IMMEDIATE").await.map_err(StoreError::unavailable)?;
    sqlx::raw_sql(
        "CREATE TABLE IF NOT EXISTS schema_migrations (
             version INTEGER PRIMARY KEY, applied_at INTEGER NOT NULL) STRICT",
    )
    .execute(&mut *tx)
    .await
    .map_err(StoreError::unavailable)?;
    let current: i64 = sqlx::query("SELECT COALESCE(MAX(version), 0) AS v FROM schema_migrations")
        .fetch_one(&mut *tx)
        .await
        .and_then(|r| r.try_get("v"))
        .map_err(StoreError::unavailable)?;
    let latest = MIGRATIONS.last().map_or(0, |m| m.0);
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
    for (version, sql) in MIGRATIONS.iter().filter(|m| m.0 > current) {
        sqlx::raw_sql(sql).execute(&mut *tx).await.map_err(StoreError::unavailable)?;
        sqlx::query("INSERT INTO schema_migrations (version, applied_at) VALUES (?, ?)")
            .bind(version)
            .bind(cloakroom_core::Timestamp::now().as_millis())
            .execute(&mut *tx)
            .await
            .map_err(StoreError::unavailable)?;
        tracing::info!(version, "applied store migration");
    }
    tx.commit().await.map_err(StoreError::unavailable)
}
