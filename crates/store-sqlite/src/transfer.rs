//! Export and import ([`Transfer`]): pages in primary-key order (the cursor is the last key),
//! read by the shared decoder ([`page_of_rows`]), and each imported batch in one write
//! transaction, as upserts that leave a row alone when it already holds the record
//! (`… DO UPDATE … WHERE (columns) IS NOT (new values)`), so that the rows touched tell what was
//! written. Sessions and audit events, the bulk, go in as one statement per page over the page
//! as a JSON array (`json_each`): sqlx costs a round trip to its SQLite thread per statement.

use std::collections::HashMap;

use async_trait::async_trait;
use cloakroom_core::export::{
    self, Batch, Columns, Cursor, Imported, Kind, Page, RevocationKind, Transfer, hash_bytes,
    page_of_rows,
};
use cloakroom_core::grant::GrantRevocation as Revocation;
use cloakroom_core::store::StoreResult;
use cloakroom_core::{StoreError, Timestamp};
use sqlx::sqlite::SqliteRow;
use sqlx::{Row as _, Sqlite, Transaction};

use crate::{
    SqliteStore, db_err, insert_revocation, is_fk_violation, is_unique_violation, publish,
};

type Tx = Transaction<'static, Sqlite>;

/// A row of an export query, for the shared decoder.
struct Row<'r>(&'r SqliteRow);

impl Columns for Row<'_> {
    fn maybe_text(&self, column: &str) -> StoreResult<Option<String>> {
        self.0.try_get(column).map_err(db_err)
    }

    fn maybe_int(&self, column: &str) -> StoreResult<Option<i64>> {
        self.0.try_get(column).map_err(db_err)
    }
}

/// Each kind's export query: the rows after cursor `?1`, at most `?2`; `?3` (for the kinds
/// whose export is [`Kind::dated`]) is the time before which nothing counts.
fn export_query(kind: Kind) -> &'static str {
    match kind {
        Kind::Users => {
            "SELECT id AS cursor, id, username, password_hash, roles, disabled, created_at,
                 updated_at, privileges_changed_at
             FROM users WHERE id > ?1 ORDER BY id LIMIT ?2"
        }
        Kind::Sessions => {
            "SELECT s.id AS cursor, s.id, s.user_id, lower(hex(s.token_hash)) AS token_hash,
                 s.csrf_token, s.created_at,
                 s.last_seen_at, s.token_issued_at, s.idle_expires_at, s.expires_at, s.ip,
                 s.user_agent, s.audience, s.data, s.data_version
             FROM sessions s JOIN users u ON u.id = s.user_id
             WHERE s.id > ?1 AND s.idle_expires_at > ?3 AND s.expires_at > ?3 AND u.disabled = 0
             ORDER BY s.id LIMIT ?2"
        }
        Kind::ApiKeys => {
            "SELECT name AS cursor, name, lower(hex(key_hash)) AS key_hash, created_at FROM api_keys
             WHERE name > ?1 ORDER BY name LIMIT ?2"
        }
        Kind::SigningKeys => {
            "SELECT id AS cursor, id, public_key, sealed_secret, created_at, active_from,
                 retired_at
             FROM signing_keys WHERE id > ?1 ORDER BY id LIMIT ?2"
        }
        Kind::GrantUses => {
            "SELECT id AS cursor, id, expires_at FROM redeemed_grants
             WHERE id > ?1 AND expires_at > ?3 ORDER BY id LIMIT ?2"
        }
        // Identical rows (one grant revoked twice at the same instant) are one record.
        Kind::GrantRevocations => {
            "SELECT CAST(MIN(seq) AS TEXT) AS cursor, kind, subject, at, until
             FROM grant_revocations WHERE until > ?3 GROUP BY kind, subject, at, until
             HAVING MIN(seq) > CAST(?1 AS INTEGER) ORDER BY MIN(seq) LIMIT ?2"
        }
        Kind::EventLogs => {
            "SELECT key AS cursor, key, json_group_array(at ORDER BY at, seq) AS events
             FROM event_log WHERE key > ?1 AND at > ?3 GROUP BY key ORDER BY key LIMIT ?2"
        }
        Kind::Audit => {
            "SELECT CAST(id AS TEXT) AS cursor, ref, at, kind, actor, user_id, username,
                 session_id, ip, detail
             FROM audit_events WHERE id > CAST(?1 AS INTEGER) ORDER BY id LIMIT ?2"
        }
    }
}

/// One row written or left as it was.
fn counted(done: &mut Imported, rows: u64) {
    if rows > 0 {
        done.written += 1;
    } else {
        done.unchanged += 1;
    }
}

async fn import_users(tx: &mut Tx, users: &[export::User], done: &mut Imported) -> StoreResult<()> {
    for u in users {
        let roles = serde_json::to_string(&u.roles).unwrap_or_else(|_| "[]".into());
        let written = sqlx::query(
            "INSERT INTO users (id, username, password_hash, roles, disabled, created_at,
                 updated_at, privileges_changed_at)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)
             ON CONFLICT (id) DO UPDATE SET username = ?2, password_hash = ?3, roles = ?4,
                 disabled = ?5, created_at = ?6, updated_at = ?7, privileges_changed_at = ?8
             WHERE (username, password_hash, roles, disabled, created_at, updated_at,
                 privileges_changed_at) IS NOT (?2, ?3, ?4, ?5, ?6, ?7, ?8)",
        )
        .bind(&u.id)
        .bind(&u.username)
        .bind(&u.password_hash)
        .bind(roles)
        .bind(u.disabled)
        .bind(u.created_at)
        .bind(u.updated_at)
        .bind(u.privileges_changed_at)
        .execute(&mut **tx)
        .await;
        let written = match written {
            Ok(done) => done.rows_affected(),
            Err(e) if is_unique_violation(&e) => return Err(StoreError::Conflict { what: "user" }),
            Err(e) => return Err(db_err(e)),
        };
        counted(done, written);
        if u.disabled {
            // A disabled user has no sessions.
            sqlx::query("DELETE FROM sessions WHERE user_id = ?")
                .bind(&u.id)
                .execute(&mut **tx)
                .await
                .map_err(db_err)?;
        }
    }
    Ok(())
}

async fn import_sessions(
    tx: &mut Tx,
    sessions: &[export::Session],
    now: Timestamp,
    done: &mut Imported,
) -> StoreResult<()> {
    // The page goes in as one JSON array, read by `json_each`: a statement per page, not per
    // session (each statement is a round trip to sqlx's SQLite thread).
    let ids: Vec<&str> = sessions.iter().map(|s| s.user_id.as_str()).collect();
    let users: HashMap<String, bool> = sqlx::query_as(
        "SELECT id, disabled FROM users WHERE id IN (SELECT value FROM json_each(?))",
    )
    .bind(serde_json::to_string(&ids).unwrap_or_default())
    .fetch_all(&mut **tx)
    .await
    .map_err(db_err)?
    .into_iter()
    .collect();
    let mut rows = Vec::with_capacity(sessions.len());
    for s in sessions {
        hash_bytes(&s.token_hash)?;
        match users.get(&s.user_id) {
            None => return Err(StoreError::NotFound { what: "user" }),
            Some(false) if s.is_live(now) => rows.push(s),
            Some(_) => done.skipped += 1,
        }
    }
    if rows.is_empty() {
        return Ok(());
    }
    let written = sqlx::query(
        "INSERT INTO sessions (id, user_id, token_hash, csrf_token, created_at, last_seen_at,
             token_issued_at, idle_expires_at, expires_at, ip, user_agent, audience, data,
             data_version)
         SELECT r ->> 'id', r ->> 'user_id', unhex(r ->> 'token_hash'), r ->> 'csrf',
             r ->> 'created_at', r ->> 'last_seen_at', r ->> 'token_issued_at',
             r ->> 'idle_expires_at', r ->> 'expires_at', r ->> 'ip', r ->> 'user_agent',
             r ->> 'audience', r ->> 'data', r ->> 'data_version'
         FROM (SELECT value AS r FROM json_each(?)) WHERE true
         ON CONFLICT (id) DO UPDATE SET user_id = excluded.user_id,
             token_hash = excluded.token_hash, csrf_token = excluded.csrf_token,
             created_at = excluded.created_at, last_seen_at = excluded.last_seen_at,
             token_issued_at = excluded.token_issued_at,
             idle_expires_at = excluded.idle_expires_at, expires_at = excluded.expires_at,
             ip = excluded.ip, user_agent = excluded.user_agent, audience = excluded.audience,
             data = excluded.data, data_version = excluded.data_version
         WHERE (user_id, token_hash, csrf_token, created_at, last_seen_at, token_issued_at,
                idle_expires_at, expires_at, ip, user_agent, audience, data, data_version)
             IS NOT (excluded.user_id, excluded.token_hash, excluded.csrf_token,
                excluded.created_at, excluded.last_seen_at, excluded.token_issued_at,
                excluded.idle_expires_at, excluded.expires_at, excluded.ip,
                excluded.user_agent, excluded.audience, excluded.data, excluded.data_version)",
    )
    .bind(serde_json::to_string(&rows).unwrap_or_default())
    .execute(&mut **tx)
    .await;
    match written {
        Ok(r) => {
            done.written += r.rows_affected();
            done.unchanged += (rows.len() as u64).saturating_sub(r.rows_affected());
        }
        Err(e) if is_unique_violation(&e) => {
            return Err(StoreError::Conflict { what: "session token" });
        }
        Err(e) if is_fk_violation(&e) => return Err(StoreError::NotFound { what: "user" }),
        Err(e) => return Err(db_err(e)),
    }
    Ok(())
}

async fn import_rest(tx: &mut Tx, batch: &Batch, done: &mut Imported) -> StoreResult<()> {
    match batch {
        Batch::Users(_) | Batch::Sessions(_) => {}
        Batch::ApiKeys(keys) => {
            for k in keys {
                let rows = sqlx::query(
                    "INSERT INTO api_keys (name, key_hash, created_at) VALUES (?1, ?2, ?3)
                     ON CONFLICT (name) DO UPDATE SET key_hash = ?2, created_at = ?3
                     WHERE (key_hash, created_at) IS NOT (?2, ?3)",
                )
                .bind(&k.name)
                .bind(hash_bytes(&k.key_hash)?)
                .bind(k.created_at)
                .execute(&mut **tx)
                .await
                .map_err(|e| match e {
                    e if is_unique_violation(&e) => StoreError::Conflict { what: "API key" },
                    e => db_err(e),
                })?;
                counted(done, rows.rows_affected());
            }
        }
        Batch::SigningKeys(keys) => {
            for k in keys {
                let rows = sqlx::query(
                    "INSERT INTO signing_keys (id, public_key, sealed_secret, created_at,
                         active_from, retired_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6)
                     ON CONFLICT (id) DO UPDATE SET public_key = ?2, sealed_secret = ?3,
                         created_at = ?4, active_from = ?5, retired_at = ?6
                     WHERE (public_key, sealed_secret, created_at, active_from, retired_at)
                         IS NOT (?2, ?3, ?4, ?5, ?6)",
                )
                .bind(&k.id)
                .bind(&k.public)
                .bind(&k.sealed)
                .bind(k.created_at)
                .bind(k.active_from)
                .bind(k.retired_at)
                .execute(&mut **tx)
                .await
                .map_err(db_err)?;
                counted(done, rows.rows_affected());
            }
        }
        Batch::GrantUses(uses) => {
            for g in uses {
                let rows = sqlx::query(
                    "INSERT INTO redeemed_grants (id, expires_at) VALUES (?1, ?2)
                     ON CONFLICT (id) DO UPDATE SET expires_at = ?2 WHERE expires_at IS NOT ?2",
                )
                .bind(&g.id)
                .bind(g.expires_at)
                .execute(&mut **tx)
                .await
                .map_err(db_err)?;
                counted(done, rows.rows_affected());
            }
        }
        Batch::GrantRevocations(revocations) => {
            for r in revocations {
                let rows = match r.kind {
                    RevocationKind::Grant => sqlx::query(
                        "INSERT INTO grant_revocations (kind, subject, at, until)
                         SELECT 'grant', ?1, ?2, ?3 WHERE NOT EXISTS (
                             SELECT 1 FROM grant_revocations
                             WHERE kind = 'grant' AND subject = ?1 AND at = ?2 AND until = ?3)",
                    )
                    .bind(&r.subject)
                    .bind(r.at)
                    .bind(r.until)
                    .execute(&mut **tx)
                    .await
                    .map_err(db_err)?
                    .rows_affected(),
                    RevocationKind::User => {
                        let covered: Option<i64> = sqlx::query_scalar(
                            "SELECT 1 FROM grant_revocations
                             WHERE kind = 'user' AND subject = ? AND at >= ? AND until >= ?",
                        )
                        .bind(&r.subject)
                        .bind(r.at)
                        .bind(r.until)
                        .fetch_optional(&mut **tx)
                        .await
                        .map_err(db_err)?;
                        if covered.is_none() {
                            insert_revocation(tx, &Revocation::from(r)).await?;
                        }
                        u64::from(covered.is_none())
                    }
                };
                counted(done, rows);
            }
        }
        Batch::EventLogs(logs) => {
            for log in logs {
                let held: Vec<i64> =
                    sqlx::query_scalar("SELECT at FROM event_log WHERE key = ? ORDER BY at, seq")
                        .bind(&log.key)
                        .fetch_all(&mut **tx)
                        .await
                        .map_err(db_err)?;
                if held == log.events {
                    done.unchanged += 1;
                    continue;
                }
                sqlx::query("DELETE FROM event_log WHERE key = ?")
                    .bind(&log.key)
                    .execute(&mut **tx)
                    .await
                    .map_err(db_err)?;
                for at in &log.events {
                    sqlx::query("INSERT INTO event_log (key, at) VALUES (?, ?)")
                        .bind(&log.key)
                        .bind(at)
                        .execute(&mut **tx)
                        .await
                        .map_err(db_err)?;
                }
                done.written += 1;
            }
        }
        Batch::Audit(events) => {
            // One statement for the page, in its order (the store lists by insertion).
            let rows = sqlx::query(
                "INSERT INTO audit_events (ref, at, kind, actor, user_id, username, session_id,
                     ip, detail)
                 SELECT value ->> 'id', value ->> 'at', value ->> 'kind', value ->> 'actor',
                     value ->> 'user_id', value ->> 'username', value ->> 'session_id',
                     value ->> 'ip', value ->> 'detail'
                 FROM json_each(?) WHERE true ORDER BY key
                 ON CONFLICT (ref) DO NOTHING",
            )
            .bind(serde_json::to_string(events).unwrap_or_default())
            .execute(&mut **tx)
            .await
            .map_err(db_err)?;
            done.written += rows.rows_affected();
            done.unchanged += (events.len() as u64).saturating_sub(rows.rows_affected());
        }
    }
    Ok(())
}

#[async_trait]
impl Transfer for SqliteStore {
    async fn instance(&self) -> StoreResult<String> {
        let rows: Vec<(i64, String, String)> =
            sqlx::query_as("PRAGMA database_list").fetch_all(&self.pool).await.map_err(db_err)?;
        let file = rows.into_iter().find(|r| r.1 == "main").map(|r| r.2).unwrap_or_default();
        if file.is_empty() {
            // An in-memory database is this handle's alone.
            return Ok(format!("sqlite:memory:{:p}", std::ptr::from_ref(self)));
        }
        let file = std::fs::canonicalize(&file).map_or(file, |p| p.display().to_string());
        Ok(format!("sqlite:{file}"))
    }

    async fn export(
        &self,
        kind: Kind,
        after: Option<&Cursor>,
        limit: usize,
        now: Timestamp,
    ) -> StoreResult<Page> {
        let limit = limit.max(1);
        let since = kind.counts_since(now);
        let query = sqlx::query(export_query(kind))
            .bind(after.map_or("", |c| c.0.as_str()))
            .bind(i64::try_from(limit).unwrap_or(i64::MAX));
        let query = if kind.dated() { query.bind(since.as_millis()) } else { query };
        let rows = query.fetch_all(&self.pool).await.map_err(db_err)?;
        page_of_rows(kind, &rows.iter().map(Row).collect::<Vec<_>>(), limit)
    }

    async fn import(&self, batch: &Batch, now: Timestamp) -> StoreResult<Imported> {
        let mut done = Imported::default();
        if batch.is_empty() {
            return Ok(done);
        }
        let mut tx = self.write_tx().await?;
        match batch {
            Batch::Users(users) => import_users(&mut tx, users, &mut done).await?,
            Batch::Sessions(sessions) => import_sessions(&mut tx, sessions, now, &mut done).await?,
            other => import_rest(&mut tx, other, &mut done).await?,
        }
        if matches!(batch, Batch::Users(_) | Batch::Sessions(_)) && done.written > 0 {
            // Servers on this file may hold any user's sessions in their caches.
            publish(&mut tx, None).await?;
        }
        tx.commit().await.map_err(db_err)?;
        Ok(done)
    }
}
