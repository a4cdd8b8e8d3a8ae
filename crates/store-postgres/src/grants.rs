//! Grants: signing keys, single use, revocations.

use cloakroom_core::grant::{GrantRevocation, GrantUse, Redemption, Revoked, SigningKeyRecord};
use cloakroom_core::store::StoreResult;
use cloakroom_core::{StoreError, Timestamp};
use sqlx::{PgConnection, PgPool};

use crate::{db_err, is_unique_violation, rows};

pub(crate) async fn add_signing_key(
    pool: &PgPool,
    key: &SigningKeyRecord,
    retire_others_at: Option<Timestamp>,
) -> StoreResult<()> {
    let mut tx = pool.begin().await.map_err(db_err)?;
    if let Some(at) = retire_others_at {
        sqlx::query("UPDATE signing_keys SET retired_at = $1 WHERE retired_at IS NULL")
            .bind(at.as_millis())
            .execute(&mut *tx)
            .await
            .map_err(db_err)?;
    }
    let inserted = sqlx::query(
        "INSERT INTO signing_keys (id, public_key, sealed_secret, created_at, active_from,
             retired_at) VALUES ($1, $2, $3, $4, $5, $6)",
    )
    .bind(&key.id)
    .bind(&key.public)
    .bind(&key.sealed)
    .bind(key.created_at.as_millis())
    .bind(key.active_from.as_millis())
    .bind(key.retired_at.map(Timestamp::as_millis))
    .execute(&mut *tx)
    .await;
    match inserted {
        Ok(_) => tx.commit().await.map_err(db_err),
        // Rolled back on drop: the other keys stay as they were.
        Err(e) if is_unique_violation(&e) => Err(StoreError::Conflict { what: "signing key" }),
        Err(e) => Err(db_err(e)),
    }
}

pub(crate) async fn signing_keys(pool: &PgPool) -> StoreResult<Vec<SigningKeyRecord>> {
    let rows = sqlx::query(
        "SELECT id, public_key, sealed_secret, created_at, active_from, retired_at
         FROM signing_keys ORDER BY created_at, id",
    )
    .fetch_all(pool)
    .await
    .map_err(db_err)?;
    rows.iter().map(rows::signing_key).collect()
}

pub(crate) async fn redeem(
    pool: &PgPool,
    grant: &GrantUse,
    now: Timestamp,
) -> StoreResult<Redemption> {
    let mut tx = pool.begin().await.map_err(db_err)?;
    // The use is claimed first: of two racing redemptions the second waits on the first's row
    // and then inserts nothing (or, if the first rolled back as revoked, finds the revocation).
    let claimed = sqlx::query(
        "INSERT INTO redeemed_grants (id, expires_at) VALUES ($1, $2) ON CONFLICT (id) DO NOTHING",
    )
    .bind(&grant.id)
    .bind(grant.expires_at.as_millis())
    .execute(&mut *tx)
    .await
    .map_err(db_err)?;
    if claimed.rows_affected() == 0 {
        return Ok(Redemption::AlreadyUsed);
    }
    let revoked = sqlx::query(
        "SELECT 1 AS revoked FROM grant_revocations
         WHERE ((kind = 'grant' AND subject = $1) OR (kind = 'user' AND subject = $2 AND at >= $3))
           AND until > $4
         LIMIT 1",
    )
    .bind(&grant.id)
    .bind(grant.user.as_str())
    .bind(grant.issued_at.as_millis())
    .bind(now.as_millis())
    .fetch_optional(&mut *tx)
    .await
    .map_err(db_err)?;
    if revoked.is_some() {
        // Rolled back on drop: a revoked grant is not recorded as used.
        return Ok(Redemption::Revoked);
    }
    insert_revocation(&mut tx, &GrantRevocation::grant(&grant.id, now, grant.expires_at)).await?;
    tx.commit().await.map_err(db_err)?;
    Ok(Redemption::Redeemed)
}

/// Records a revocation, in the caller's transaction. A user keeps one row: a later revocation
/// raises its times, an earlier one arriving late changes nothing.
pub(crate) async fn insert_revocation(
    conn: &mut PgConnection,
    r: &GrantRevocation,
) -> StoreResult<()> {
    let query = match &r.subject {
        Revoked::Grant(id) => sqlx::query(
            "INSERT INTO grant_revocations (kind, subject, at, until) VALUES ('grant', $1, $2, $3)",
        )
        .bind(id.as_str()),
        Revoked::User(user) => sqlx::query(
            "INSERT INTO grant_revocations (kind, subject, at, until) VALUES ('user', $1, $2, $3)
             ON CONFLICT (subject) WHERE kind = 'user' DO UPDATE SET
                 at = GREATEST(grant_revocations.at, EXCLUDED.at),
                 until = GREATEST(grant_revocations.until, EXCLUDED.until)",
        )
        .bind(user.as_str()),
    };
    query.bind(r.at.as_millis()).bind(r.until.as_millis()).execute(conn).await.map_err(db_err)?;
    Ok(())
}

pub(crate) async fn revoke(pool: &PgPool, revocation: &GrantRevocation) -> StoreResult<()> {
    let mut conn = pool.acquire().await.map_err(db_err)?;
    insert_revocation(&mut conn, revocation).await
}

pub(crate) async fn revocations(
    pool: &PgPool,
    since: Timestamp,
    now: Timestamp,
) -> StoreResult<Vec<GrantRevocation>> {
    let rows = sqlx::query(
        "SELECT kind, subject, at, until FROM grant_revocations
         WHERE at >= $1 AND until > $2 ORDER BY at, seq",
    )
    .bind(since.as_millis())
    .bind(now.as_millis())
    .fetch_all(pool)
    .await
    .map_err(db_err)?;
    rows.iter().map(rows::revocation).collect()
}

pub(crate) async fn delete_expired(pool: &PgPool, now: Timestamp) -> StoreResult<()> {
    // Single-use records and revocations matter only until the grants they concern expire.
    sqlx::query("DELETE FROM redeemed_grants WHERE expires_at <= $1")
        .bind(now.as_millis())
        .execute(pool)
        .await
        .map_err(db_err)?;
    sqlx::query("DELETE FROM grant_revocations WHERE until <= $1")
        .bind(now.as_millis())
        .execute(pool)
        .await
        .map_err(db_err)?;
    Ok(())
}
