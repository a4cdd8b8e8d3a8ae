//! Sessions: creation under the per-user cap, lookups, touches, rotation, revocation, data.
//!
//! Lock order, the same in every transaction, so that none waits for another in a cycle: the
//! user's row first (`FOR NO KEY UPDATE`, or the `UPDATE` of it), then the user's session rows,
//! then the feed counter (in `cloakroom_announce`, the last thing before the commit).

use cloakroom_core::session::{DataWrite, NewSession, SessionData};
use cloakroom_core::store::StoreResult;
use cloakroom_core::{
    Authenticated, CsrfToken, SessionId, StoreError, Timestamp, TokenHash, UserId,
};
use sqlx::postgres::PgRow;
use sqlx::{PgConnection, PgPool, Row as _};

use crate::feed::{CHANNEL, announce};
use crate::rows::auth_columns;
use crate::{db_err, is_unique_violation, rows};

/// Locks the user's row for the rest of the transaction; false when there is no such user.
pub(crate) async fn lock_user(conn: &mut PgConnection, user: &UserId) -> StoreResult<bool> {
    let row = sqlx::query("SELECT id FROM users WHERE id = $1 FOR NO KEY UPDATE")
        .bind(user.as_str())
        .fetch_optional(conn)
        .await
        .map_err(db_err)?;
    Ok(row.is_some())
}

pub(crate) async fn create(
    pool: &PgPool,
    s: &NewSession,
    cap: u32,
    now: Timestamp,
) -> StoreResult<Vec<SessionId>> {
    let mut tx = pool.begin().await.map_err(db_err)?;
    // Two logins of one user on two nodes take turns here, so the cap holds between them.
    if !lock_user(&mut tx, &s.user_id).await? {
        return Err(StoreError::NotFound { what: "user" });
    }
    let evicted = if cap > 0 {
        // Keep the newest cap - 1 live sessions; the new one makes cap.
        let rows = sqlx::query(
            "DELETE FROM sessions WHERE id IN (
                 SELECT id FROM sessions
                 WHERE user_id = $1 AND idle_expires_at > $2 AND expires_at > $2
                 ORDER BY created_at DESC, id DESC
                 OFFSET $3)
             RETURNING id",
        )
        .bind(s.user_id.as_str())
        .bind(now.as_millis())
        .bind(i64::from(cap) - 1)
        .fetch_all(&mut *tx)
        .await
        .map_err(db_err)?;
        rows::session_ids(&rows)?
    } else {
        Vec::new()
    };
    let inserted = sqlx::query(
        "INSERT INTO sessions (id, token_hash, csrf_token, user_id, created_at, last_seen_at,
             token_issued_at, idle_expires_at, expires_at, ip, user_agent, audience, data,
             data_version)
         VALUES ($1, $2, $3, $4, $5, $5, $5, $6, $7, $8, $9, $10, $11, 1)",
    )
    .bind(s.id.as_str())
    .bind(s.token_hash.as_bytes().as_slice())
    .bind(s.csrf.expose())
    .bind(s.user_id.as_str())
    .bind(s.created_at.as_millis())
    .bind(s.idle_expires_at.as_millis())
    .bind(s.expires_at.as_millis())
    .bind(s.ip.as_deref())
    .bind(s.user_agent.as_deref())
    .bind(s.audience.as_deref())
    .bind(s.data.to_string())
    .execute(&mut *tx)
    .await;
    match inserted {
        Ok(_) => {}
        // The transaction rolls back on drop: the evictions are undone too.
        Err(e) if is_unique_violation(&e) => return Err(StoreError::Conflict { what: "session" }),
        Err(e) => return Err(db_err(e)),
    }
    if !evicted.is_empty() {
        announce(&mut tx, Some(&s.user_id)).await?;
    }
    tx.commit().await.map_err(db_err)?;
    Ok(evicted)
}

fn one(row: Option<PgRow>) -> StoreResult<Option<Authenticated>> {
    row.as_ref().map(rows::authenticated).transpose()
}

pub(crate) async fn by_token(
    pool: &PgPool,
    hash: &TokenHash,
    now: Timestamp,
) -> StoreResult<Option<Authenticated>> {
    let row = sqlx::query(concat!(
        "SELECT ",
        auth_columns!(),
        " FROM sessions s JOIN users u ON u.id = s.user_id
         WHERE s.token_hash = $1 AND s.idle_expires_at > $2 AND s.expires_at > $2
           AND NOT u.disabled"
    ))
    .bind(hash.as_bytes().as_slice())
    .bind(now.as_millis())
    .fetch_optional(pool)
    .await
    .map_err(db_err)?;
    one(row)
}

pub(crate) async fn by_id(
    pool: &PgPool,
    id: &SessionId,
    now: Timestamp,
) -> StoreResult<Option<Authenticated>> {
    let row = sqlx::query(concat!(
        "SELECT ",
        auth_columns!(),
        " FROM sessions s JOIN users u ON u.id = s.user_id
         WHERE s.id = $1 AND s.idle_expires_at > $2 AND s.expires_at > $2 AND NOT u.disabled"
    ))
    .bind(id.as_str())
    .bind(now.as_millis())
    .fetch_optional(pool)
    .await
    .map_err(db_err)?;
    one(row)
}

pub(crate) async fn touch(
    pool: &PgPool,
    id: &SessionId,
    now: Timestamp,
    idle_expires_at: Timestamp,
) -> StoreResult<bool> {
    // One statement: it updates a live row or nothing, so it can never bring one back.
    let done = sqlx::query(
        "UPDATE sessions SET last_seen_at = $2, idle_expires_at = LEAST($3, expires_at)
         WHERE id = $1 AND idle_expires_at > $2 AND expires_at > $2",
    )
    .bind(id.as_str())
    .bind(now.as_millis())
    .bind(idle_expires_at.as_millis())
    .execute(pool)
    .await
    .map_err(db_err)?;
    Ok(done.rows_affected() == 1)
}

pub(crate) async fn rotate(
    pool: &PgPool,
    id: &SessionId,
    from: &TokenHash,
    to: &TokenHash,
    csrf: &CsrfToken,
    now: Timestamp,
) -> StoreResult<bool> {
    // One statement, so one transaction: a racing rotation waits for this row and then finds
    // its `from` gone (exactly one wins), and the old token, which may sit in other nodes'
    // caches, is announced with the change or not at all.
    let row = sqlx::query(
        "WITH r AS (
             UPDATE sessions SET token_hash = $2, csrf_token = $3, token_issued_at = $4
             WHERE id = $1 AND token_hash = $5 AND idle_expires_at > $4 AND expires_at > $4
             RETURNING user_id)
         SELECT cloakroom_announce($6, r.user_id, $7) AS seq FROM r",
    )
    .bind(id.as_str())
    .bind(to.as_bytes().as_slice())
    .bind(csrf.expose())
    .bind(now.as_millis())
    .bind(from.as_bytes().as_slice())
    .bind(CHANNEL)
    .bind(Timestamp::now().as_millis())
    .fetch_optional(pool)
    .await;
    match row {
        Ok(row) => Ok(row.is_some()),
        Err(e) if is_unique_violation(&e) => Err(StoreError::Conflict { what: "session token" }),
        Err(e) => Err(db_err(e)),
    }
}

pub(crate) async fn revoke(pool: &PgPool, id: &SessionId) -> StoreResult<Option<UserId>> {
    // One statement (one round trip): the deletion and its announcement commit together.
    let row = sqlx::query(
        "WITH d AS (DELETE FROM sessions WHERE id = $1 RETURNING user_id)
         SELECT d.user_id, cloakroom_announce($2, d.user_id, $3) AS seq FROM d",
    )
    .bind(id.as_str())
    .bind(CHANNEL)
    .bind(Timestamp::now().as_millis())
    .fetch_optional(pool)
    .await
    .map_err(db_err)?;
    row.map(|r| r.try_get("user_id").map(UserId::from_stored).map_err(db_err)).transpose()
}

/// Deletes the user's sessions but `keep`, in the caller's transaction (which holds the user's
/// row), and returns their ids.
pub(crate) async fn delete_users(
    conn: &mut PgConnection,
    user: &UserId,
    keep: Option<&SessionId>,
) -> StoreResult<Vec<SessionId>> {
    let rows = sqlx::query(
        "DELETE FROM sessions WHERE user_id = $1 AND id IS DISTINCT FROM $2 RETURNING id",
    )
    .bind(user.as_str())
    .bind(keep.map(SessionId::as_str))
    .fetch_all(conn)
    .await
    .map_err(db_err)?;
    rows::session_ids(&rows)
}

pub(crate) async fn revoke_users(
    pool: &PgPool,
    user: &UserId,
    keep: Option<&SessionId>,
) -> StoreResult<Vec<SessionId>> {
    let mut tx = pool.begin().await.map_err(db_err)?;
    if !lock_user(&mut tx, user).await? {
        return Ok(Vec::new());
    }
    let revoked = delete_users(&mut tx, user, keep).await?;
    if !revoked.is_empty() {
        announce(&mut tx, Some(user)).await?;
    }
    tx.commit().await.map_err(db_err)?;
    Ok(revoked)
}

pub(crate) async fn list(
    pool: &PgPool,
    user: Option<&UserId>,
    now: Timestamp,
) -> StoreResult<Vec<Authenticated>> {
    let live = "s.idle_expires_at > $1 AND s.expires_at > $1 AND NOT u.disabled";
    let order = "ORDER BY s.created_at DESC, s.id DESC";
    // Two statements rather than `$2 IS NULL OR …`, which a generic plan could not use the
    // per-user index for.
    let rows =
        match user {
            Some(user) => {
                sqlx::query(&format!(
                    "SELECT {} FROM sessions s JOIN users u ON u.id = s.user_id
             WHERE s.user_id = $2 AND {live} {order}",
                    auth_columns!()
                ))
                .bind(now.as_millis())
                .bind(user.as_str())
                .fetch_all(pool)
                .await
            }
            None => sqlx::query(&format!(
                "SELECT {} FROM sessions s JOIN users u ON u.id = s.user_id WHERE {live} {order}",
                auth_columns!()
            ))
            .bind(now.as_millis())
            .fetch_all(pool)
            .await,
        }
        .map_err(db_err)?;
    rows.iter().map(rows::authenticated).collect()
}

pub(crate) async fn data(pool: &PgPool, id: &SessionId) -> StoreResult<Option<SessionData>> {
    let row = sqlx::query("SELECT data, data_version FROM sessions WHERE id = $1")
        .bind(id.as_str())
        .fetch_optional(pool)
        .await
        .map_err(db_err)?;
    let Some(row) = row else { return Ok(None) };
    let text: String = row.try_get("data").map_err(db_err)?;
    let value = serde_json::from_str(&text)
        .map_err(|e| StoreError::Corrupt { what: "session data", source: Some(e.into()) })?;
    Ok(Some(SessionData { value, version: rows::data_version(&row)? }))
}

pub(crate) async fn put_data(
    pool: &PgPool,
    id: &SessionId,
    value: &serde_json::Value,
    if_version: Option<u64>,
) -> StoreResult<DataWrite> {
    // A version beyond i64 matches no row, as it should.
    let expected = if_version.map(|v| i64::try_from(v).unwrap_or(-1));
    // One statement: a concurrent writer of the same row waits, then finds the version moved on
    // and matches nothing. It updates an existing row or nothing: never resurrects.
    let row = sqlx::query(
        "UPDATE sessions SET data = $2, data_version = data_version + 1
         WHERE id = $1 AND ($3::bigint IS NULL OR data_version = $3) RETURNING data_version",
    )
    .bind(id.as_str())
    .bind(value.to_string())
    .bind(expected)
    .fetch_optional(pool)
    .await
    .map_err(db_err)?;
    if let Some(row) = row {
        return Ok(DataWrite::Stored(rows::data_version(&row)?));
    }
    // Lost: a fresh statement sees the version that won (or that the session is gone).
    let current = sqlx::query("SELECT data_version FROM sessions WHERE id = $1")
        .bind(id.as_str())
        .fetch_optional(pool)
        .await
        .map_err(db_err)?;
    match current {
        Some(r) => Ok(DataWrite::VersionMismatch(rows::data_version(&r)?)),
        None => Ok(DataWrite::Gone),
    }
}

pub(crate) async fn delete_expired(pool: &PgPool, now: Timestamp) -> StoreResult<u64> {
    let done = sqlx::query("DELETE FROM sessions WHERE idle_expires_at <= $1 OR expires_at <= $1")
        .bind(now.as_millis())
        .execute(pool)
        .await
        .map_err(db_err)?;
    Ok(done.rows_affected())
}
