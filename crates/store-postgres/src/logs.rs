//! Sliding-window event logs (the login throttle, per-user limits), shared by every node.
//!
//! A reservation holds a transaction-level advisory lock on its log's key from the first
//! statement to the commit, so its count and its insert are one step for every node: of any
//! number of racing callers at most `max` are admitted.

use std::time::Duration;

use cloakroom_core::Timestamp;
use cloakroom_core::store::{EventId, Reservation, StoreResult};
use sqlx::{PgPool, Row as _};

use crate::db_err;

/// The advisory lock class of event logs (`pg_advisory_xact_lock(class, hashtext(key))`).
const LOCK_CLASS: i32 = 0x636c_6f01; // "clo\1"
/// No window is longer than this; older events are swept.
const LONGEST_WINDOW: Duration = Duration::from_secs(31 * 24 * 3600);

pub(crate) async fn reserve(
    pool: &PgPool,
    key: &str,
    now: Timestamp,
    window: Duration,
    max: u32,
    enforce: bool,
) -> StoreResult<Reservation> {
    let since = now.minus(window).as_millis();
    let max = i64::from(max);
    let mut tx = pool.begin().await.map_err(db_err)?;
    // A hash collision between two keys only makes them take turns.
    sqlx::query("SELECT pg_advisory_xact_lock($1, hashtext($2))")
        .bind(LOCK_CLASS)
        .bind(key)
        .execute(&mut *tx)
        .await
        .map_err(db_err)?;
    sqlx::query("DELETE FROM event_log WHERE key = $1 AND at <= $2")
        .bind(key)
        .bind(since)
        .execute(&mut *tx)
        .await
        .map_err(db_err)?;
    if enforce {
        if max == 0 {
            return Ok(Reservation::Full(now));
        }
        // The event that must leave the window before another fits: the max-th newest.
        let full = sqlx::query(
            "SELECT at FROM event_log WHERE key = $1 ORDER BY at DESC, seq DESC LIMIT 1 OFFSET $2",
        )
        .bind(key)
        .bind(max - 1)
        .fetch_optional(&mut *tx)
        .await
        .map_err(db_err)?;
        if let Some(row) = full {
            let at: i64 = row.try_get("at").map_err(db_err)?;
            tx.commit().await.map_err(db_err)?;
            return Ok(Reservation::Full(Timestamp::from_millis(at)));
        }
    }
    let seq: i64 = sqlx::query("INSERT INTO event_log (key, at) VALUES ($1, $2) RETURNING seq")
        .bind(key)
        .bind(now.as_millis())
        .fetch_one(&mut *tx)
        .await
        .and_then(|r| r.try_get("seq"))
        .map_err(db_err)?;
    // Keep the newest `max`; forget the rest (at most a few: every call trims).
    sqlx::query(
        "DELETE FROM event_log WHERE key = $1 AND seq NOT IN (
             SELECT seq FROM event_log WHERE key = $1 ORDER BY at DESC, seq DESC LIMIT $2)",
    )
    .bind(key)
    .bind(max)
    .execute(&mut *tx)
    .await
    .map_err(db_err)?;
    tx.commit().await.map_err(db_err)?;
    Ok(Reservation::Reserved(EventId(seq.to_string())))
}

pub(crate) async fn release(pool: &PgPool, key: &str, id: &EventId) -> StoreResult<()> {
    // Ids this store did not hand out name nothing.
    let Ok(seq) = id.0.parse::<i64>() else { return Ok(()) };
    sqlx::query("DELETE FROM event_log WHERE key = $1 AND seq = $2")
        .bind(key)
        .bind(seq)
        .execute(pool)
        .await
        .map_err(db_err)?;
    Ok(())
}

pub(crate) async fn times(
    pool: &PgPool,
    key: &str,
    now: Timestamp,
    window: Duration,
) -> StoreResult<Vec<Timestamp>> {
    let rows = sqlx::query("SELECT at FROM event_log WHERE key = $1 AND at > $2 ORDER BY at, seq")
        .bind(key)
        .bind(now.minus(window).as_millis())
        .fetch_all(pool)
        .await
        .map_err(db_err)?;
    rows.iter()
        .map(|r| r.try_get::<i64, _>("at").map(Timestamp::from_millis).map_err(db_err))
        .collect()
}

pub(crate) async fn forget(pool: &PgPool, key: &str) -> StoreResult<()> {
    sqlx::query("DELETE FROM event_log WHERE key = $1")
        .bind(key)
        .execute(pool)
        .await
        .map_err(db_err)?;
    Ok(())
}

pub(crate) async fn delete_expired(pool: &PgPool, now: Timestamp) -> StoreResult<()> {
    sqlx::query("DELETE FROM event_log WHERE at < $1")
        .bind(now.minus(LONGEST_WINDOW).as_millis())
        .execute(pool)
        .await
        .map_err(db_err)?;
    Ok(())
}
