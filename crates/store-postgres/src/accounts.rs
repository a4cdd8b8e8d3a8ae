//! Users, API keys and audit events.

use cloakroom_core::audit::{AuditEvent, AuditFilter};
use cloakroom_core::id::AuditId;
use cloakroom_core::password::PasswordHash;
use cloakroom_core::store::{ApiKey, StoreResult, codec};
use cloakroom_core::user::{NewUser, UserChange, UserRecord};
use cloakroom_core::{SessionId, StoreError, Timestamp, TokenHash, User, UserId, Username};
use sqlx::PgPool;

use crate::feed::announce;
use crate::{db_err, is_unique_violation, rows, sessions};

pub(crate) async fn create_user(pool: &PgPool, user: &NewUser) -> StoreResult<User> {
    let result = sqlx::query(
        "INSERT INTO users (id, username, password_hash, roles, disabled, created_at, updated_at)
         VALUES ($1, $2, $3, $4, FALSE, $5, $5)",
    )
    .bind(user.id.as_str())
    .bind(user.username.as_str())
    .bind(user.password_hash.as_ref().map(PasswordHash::as_str))
    .bind(codec::role_names(&user.roles))
    .bind(user.created_at.as_millis())
    .execute(pool)
    .await;
    match result {
        Ok(_) => Ok(user.created()),
        Err(e) if is_unique_violation(&e) => Err(StoreError::Conflict { what: "user" }),
        Err(e) => Err(db_err(e)),
    }
}

pub(crate) async fn user_by_name(
    pool: &PgPool,
    username: &Username,
) -> StoreResult<Option<UserRecord>> {
    let row = sqlx::query(&format!("SELECT {} FROM users WHERE username = $1", rows::USER))
        .bind(username.as_str())
        .fetch_optional(pool)
        .await
        .map_err(db_err)?;
    row.as_ref().map(rows::user).transpose()
}

pub(crate) async fn list_users(pool: &PgPool) -> StoreResult<Vec<User>> {
    let rows = sqlx::query(&format!("SELECT {} FROM users ORDER BY username", rows::USER))
        .fetch_all(pool)
        .await
        .map_err(db_err)?;
    rows.iter().map(|r| rows::user(r).map(|u| u.user)).collect()
}

pub(crate) async fn update_user(
    pool: &PgPool,
    id: &UserId,
    change: &UserChange,
    keep: Option<&SessionId>,
) -> StoreResult<(User, Vec<SessionId>)> {
    let mut tx = pool.begin().await.map_err(db_err)?;
    // Every right-hand side reads the row as it was: `roles` below is the old set.
    let row = sqlx::query(&format!(
        "UPDATE users SET
             password_hash = COALESCE($1, password_hash),
             privileges_changed_at = CASE WHEN $2::text[] IS NOT NULL AND $2::text[] IS DISTINCT FROM roles
                 THEN $4 ELSE privileges_changed_at END,
             roles = COALESCE($2::text[], roles),
             disabled = COALESCE($3, disabled),
             updated_at = $4
         WHERE id = $5 RETURNING {}",
        rows::USER
    ))
    .bind(change.password_hash.as_ref().map(PasswordHash::as_str))
    .bind(change.roles.as_deref().map(codec::role_names))
    .bind(change.disabled)
    .bind(Timestamp::now().as_millis())
    .bind(id.as_str())
    .fetch_optional(&mut *tx)
    .await
    .map_err(db_err)?
    .ok_or(StoreError::NotFound { what: "user" })?;
    let user = rows::user(&row)?.user;
    // The UPDATE holds the user's row: no session of the user can be made meanwhile.
    let revoked = if change.revokes_sessions() {
        sessions::delete_users(&mut tx, id, keep).await?
    } else {
        Vec::new()
    };
    // Roles, the disabled flag or the password changed: cached sessions of the user are stale.
    announce(&mut tx, Some(id)).await?;
    tx.commit().await.map_err(db_err)?;
    Ok((user, revoked))
}

pub(crate) async fn replace_password_hash(
    pool: &PgPool,
    id: &UserId,
    old: &PasswordHash,
    new: &PasswordHash,
) -> StoreResult<bool> {
    // One statement: of two racing rehashes the second waits, then finds `old` gone.
    let done =
        sqlx::query("UPDATE users SET password_hash = $1 WHERE id = $2 AND password_hash = $3")
            .bind(new.as_str())
            .bind(id.as_str())
            .bind(old.as_str())
            .execute(pool)
            .await
            .map_err(db_err)?;
    Ok(done.rows_affected() == 1)
}

pub(crate) async fn create_api_key(
    pool: &PgPool,
    name: &str,
    hash: &TokenHash,
    now: Timestamp,
) -> StoreResult<ApiKey> {
    let done = sqlx::query("INSERT INTO api_keys (name, key_hash, created_at) VALUES ($1, $2, $3)")
        .bind(name)
        .bind(hash.as_bytes().as_slice())
        .bind(now.as_millis())
        .execute(pool)
        .await;
    match done {
        Ok(_) => Ok(ApiKey { name: name.to_owned(), created_at: now }),
        Err(e) if is_unique_violation(&e) => Err(StoreError::Conflict { what: "API key" }),
        Err(e) => Err(db_err(e)),
    }
}

pub(crate) async fn api_key_by_hash(
    pool: &PgPool,
    hash: &TokenHash,
) -> StoreResult<Option<ApiKey>> {
    let row = sqlx::query("SELECT name, created_at FROM api_keys WHERE key_hash = $1")
        .bind(hash.as_bytes().as_slice())
        .fetch_optional(pool)
        .await
        .map_err(db_err)?;
    row.as_ref().map(rows::api_key).transpose()
}

pub(crate) async fn list_api_keys(pool: &PgPool) -> StoreResult<Vec<ApiKey>> {
    let rows = sqlx::query("SELECT name, created_at FROM api_keys ORDER BY name")
        .fetch_all(pool)
        .await
        .map_err(db_err)?;
    rows.iter().map(rows::api_key).collect()
}

pub(crate) async fn revoke_api_key(pool: &PgPool, name: &str) -> StoreResult<bool> {
    let done = sqlx::query("DELETE FROM api_keys WHERE name = $1")
        .bind(name)
        .execute(pool)
        .await
        .map_err(db_err)?;
    Ok(done.rows_affected() == 1)
}

pub(crate) async fn append_audit(pool: &PgPool, e: &AuditEvent) -> StoreResult<()> {
    let id = AuditId::generate().map_err(StoreError::unavailable)?;
    sqlx::query(
        "INSERT INTO audit_events (ref, at, kind, actor, user_id, username, session_id, ip,
             detail)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
    )
    .bind(id.as_str())
    .bind(e.at.as_millis())
    .bind(e.kind.as_str())
    .bind(&e.actor)
    .bind(e.user_id.as_ref().map(UserId::as_str))
    .bind(e.username.as_ref().map(Username::as_str))
    .bind(e.session_id.as_ref().map(SessionId::as_str))
    .bind(e.ip.as_deref())
    .bind(e.detail.as_deref())
    .execute(pool)
    .await
    .map_err(db_err)?;
    Ok(())
}

pub(crate) async fn list_audit(
    pool: &PgPool,
    filter: &AuditFilter,
) -> StoreResult<Vec<AuditEvent>> {
    let limit = i64::from(filter.limit_or_default());
    let columns = "at, kind, actor, user_id, username, session_id, ip, detail";
    let rows = match &filter.username {
        Some(name) => {
            sqlx::query(&format!(
                "SELECT {columns} FROM audit_events WHERE username = $1 ORDER BY id DESC LIMIT $2"
            ))
            .bind(name.as_str())
            .bind(limit)
            .fetch_all(pool)
            .await
        }
        None => {
            sqlx::query(&format!("SELECT {columns} FROM audit_events ORDER BY id DESC LIMIT $1"))
                .bind(limit)
                .fetch_all(pool)
                .await
        }
    }
    .map_err(db_err)?;
    rows.iter().map(rows::audit_event).collect()
}
