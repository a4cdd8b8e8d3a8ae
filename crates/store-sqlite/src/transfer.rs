//! Export and import ([`Transfer`]): pages in primary-key order (the cursor is the last key),
//! and each imported batch in one write transaction, as upserts that leave a row alone when it
//! already holds the record (`… DO UPDATE … WHERE (columns) IS NOT (new values)`), so that
//! the rows touched tell what was written.

use std::collections::HashMap;

use async_trait::async_trait;
use cloakroom_core::export::{
    self, Batch, Cursor, EVENT_RETENTION, Imported, Kind, Page, RevocationKind, Transfer,
};
use cloakroom_core::grant::GrantRevocation as Revocation;
use cloakroom_core::store::StoreResult;
use cloakroom_core::{StoreError, Timestamp, TokenHash};
use sqlx::sqlite::SqliteRow;
use sqlx::{Row, Sqlite, Transaction};

use crate::{
    SqliteStore, db_err, insert_revocation, is_fk_violation, is_unique_violation, publish,
};

type Tx = Transaction<'static, Sqlite>;

fn hex(row: &SqliteRow, column: &str) -> StoreResult<String> {
    let bytes: Vec<u8> = row.try_get(column).map_err(db_err)?;
    TokenHash::from_slice(&bytes)
        .map(|h| h.to_hex())
        .ok_or(StoreError::Corrupt { what: "token hash", source: None })
}

fn unhex(text: &str) -> StoreResult<Vec<u8>> {
    TokenHash::from_hex(text)
        .map(|h| h.as_bytes().to_vec())
        .ok_or(StoreError::Corrupt { what: "imported token hash", source: None })
}

fn limit_of(limit: usize) -> i64 {
    i64::try_from(limit.max(1)).unwrap_or(i64::MAX)
}

/// The next page's cursor: the last record's key, unless the page came back short.
fn next(batch: &Batch, limit: usize, last: Option<String>) -> Option<Cursor> {
    (batch.len() >= limit.max(1)).then_some(last).flatten().map(Cursor)
}

fn roles_of(row: &SqliteRow) -> StoreResult<Vec<String>> {
    let text: String = row.try_get("roles").map_err(db_err)?;
    serde_json::from_str(&text)
        .map_err(|e| StoreError::Corrupt { what: "user roles", source: Some(e.into()) })
}

impl SqliteStore {
    async fn export_page(
        &self,
        kind: Kind,
        after: &str,
        limit: usize,
        now: Timestamp,
    ) -> StoreResult<(Batch, Option<String>)> {
        let n = limit_of(limit);
        let now = now.as_millis();
        let pool = &self.pool;
        Ok(match kind {
            Kind::Users => {
                let rows = sqlx::query(
                    "SELECT id, username, password_hash, roles, disabled, created_at, updated_at,
                         privileges_changed_at
                     FROM users WHERE id > ? ORDER BY id LIMIT ?",
                )
                .bind(after)
                .bind(n)
                .fetch_all(pool)
                .await
                .map_err(db_err)?;
                let users = rows
                    .iter()
                    .map(|r| {
                        Ok(export::User {
                            id: r.try_get("id").map_err(db_err)?,
                            username: r.try_get("username").map_err(db_err)?,
                            password_hash: r.try_get("password_hash").map_err(db_err)?,
                            roles: roles_of(r)?,
                            disabled: r.try_get("disabled").map_err(db_err)?,
                            created_at: r.try_get("created_at").map_err(db_err)?,
                            updated_at: r.try_get("updated_at").map_err(db_err)?,
                            privileges_changed_at: r
                                .try_get("privileges_changed_at")
                                .map_err(db_err)?,
                        })
                    })
                    .collect::<StoreResult<Vec<_>>>()?;
                let last = users.last().map(|u| u.id.clone());
                (Batch::Users(users), last)
            }
            Kind::Sessions => {
                let rows = sqlx::query(
                    "SELECT s.id, s.user_id, s.token_hash, s.csrf_token, s.created_at,
                         s.last_seen_at, s.token_issued_at, s.idle_expires_at, s.expires_at, s.ip,
                         s.user_agent, s.audience, s.data, s.data_version
                     FROM sessions s JOIN users u ON u.id = s.user_id
                     WHERE s.id > ?1 AND s.idle_expires_at > ?2 AND s.expires_at > ?2
                         AND u.disabled = 0
                     ORDER BY s.id LIMIT ?3",
                )
                .bind(after)
                .bind(now)
                .bind(n)
                .fetch_all(pool)
                .await
                .map_err(db_err)?;
                let sessions = rows
                    .iter()
                    .map(|r| {
                        let get = |c: &str| r.try_get::<i64, _>(c).map_err(db_err);
                        Ok(export::Session {
                            id: r.try_get("id").map_err(db_err)?,
                            user_id: r.try_get("user_id").map_err(db_err)?,
                            token_hash: hex(r, "token_hash")?,
                            csrf: r.try_get("csrf_token").map_err(db_err)?,
                            created_at: get("created_at")?,
                            last_seen_at: get("last_seen_at")?,
                            token_issued_at: get("token_issued_at")?,
                            idle_expires_at: get("idle_expires_at")?,
                            expires_at: get("expires_at")?,
                            ip: r.try_get("ip").map_err(db_err)?,
                            user_agent: r.try_get("user_agent").map_err(db_err)?,
                            audience: r.try_get("audience").map_err(db_err)?,
                            data: r.try_get("data").map_err(db_err)?,
                            data_version: u64::try_from(get("data_version")?).unwrap_or(0),
                        })
                    })
                    .collect::<StoreResult<Vec<_>>>()?;
                let last = sessions.last().map(|s| s.id.clone());
                (Batch::Sessions(sessions), last)
            }
            Kind::ApiKeys => {
                let rows = sqlx::query(
                    "SELECT name, key_hash, created_at FROM api_keys WHERE name > ?
                     ORDER BY name LIMIT ?",
                )
                .bind(after)
                .bind(n)
                .fetch_all(pool)
                .await
                .map_err(db_err)?;
                let keys = rows
                    .iter()
                    .map(|r| {
                        Ok(export::ApiKey {
                            name: r.try_get("name").map_err(db_err)?,
                            key_hash: hex(r, "key_hash")?,
                            created_at: r.try_get("created_at").map_err(db_err)?,
                        })
                    })
                    .collect::<StoreResult<Vec<_>>>()?;
                let last = keys.last().map(|k| k.name.clone());
                (Batch::ApiKeys(keys), last)
            }
            Kind::SigningKeys => {
                let rows = sqlx::query(
                    "SELECT id, public_key, sealed_secret, created_at, active_from, retired_at
                     FROM signing_keys WHERE id > ? ORDER BY id LIMIT ?",
                )
                .bind(after)
                .bind(n)
                .fetch_all(pool)
                .await
                .map_err(db_err)?;
                let keys = rows
                    .iter()
                    .map(|r| {
                        Ok(export::SigningKey {
                            id: r.try_get("id").map_err(db_err)?,
                            public: r.try_get("public_key").map_err(db_err)?,
                            sealed: r.try_get("sealed_secret").map_err(db_err)?,
                            created_at: r.try_get("created_at").map_err(db_err)?,
                            active_from: r.try_get("active_from").map_err(db_err)?,
                            retired_at: r.try_get("retired_at").map_err(db_err)?,
                        })
                    })
                    .collect::<StoreResult<Vec<_>>>()?;
                let last = keys.last().map(|k| k.id.clone());
                (Batch::SigningKeys(keys), last)
            }
            Kind::GrantUses => {
                let rows: Vec<(String, i64)> = sqlx::query_as(
                    "SELECT id, expires_at FROM redeemed_grants WHERE id > ? AND expires_at > ?
                     ORDER BY id LIMIT ?",
                )
                .bind(after)
                .bind(now)
                .bind(n)
                .fetch_all(pool)
                .await
                .map_err(db_err)?;
                let last = rows.last().map(|(id, _)| id.clone());
                let uses = rows
                    .into_iter()
                    .map(|(id, expires_at)| export::GrantUse { id, expires_at })
                    .collect();
                (Batch::GrantUses(uses), last)
            }
            Kind::GrantRevocations => {
                // Identical rows (one grant revoked twice at the same instant) are one record.
                let rows: Vec<(String, String, i64, i64, i64)> = sqlx::query_as(
                    "SELECT kind, subject, at, until, MIN(seq) AS first FROM grant_revocations
                     WHERE until > ?2 GROUP BY kind, subject, at, until HAVING MIN(seq) > ?1
                     ORDER BY first LIMIT ?3",
                )
                .bind(after.parse::<i64>().unwrap_or(0))
                .bind(now)
                .bind(n)
                .fetch_all(pool)
                .await
                .map_err(db_err)?;
                let last = rows.last().map(|r| r.4.to_string());
                let revocations = rows
                    .into_iter()
                    .map(|(kind, subject, at, until, _)| {
                        let kind = match kind.as_str() {
                            "grant" => RevocationKind::Grant,
                            "user" => RevocationKind::User,
                            _ => {
                                return Err(StoreError::Corrupt {
                                    what: "grant revocation",
                                    source: None,
                                });
                            }
                        };
                        Ok(export::GrantRevocation { kind, subject, at, until })
                    })
                    .collect::<StoreResult<Vec<_>>>()?;
                (Batch::GrantRevocations(revocations), last)
            }
            Kind::EventLogs => {
                let since = Timestamp::from_millis(now).minus(EVENT_RETENTION).as_millis();
                let rows: Vec<(String, i64)> = sqlx::query_as(
                    "SELECT key, at FROM event_log
                     WHERE at > ?2 AND key IN (SELECT DISTINCT key FROM event_log
                         WHERE key > ?1 AND at > ?2 ORDER BY key LIMIT ?3)
                     ORDER BY key, at, seq",
                )
                .bind(after)
                .bind(since)
                .bind(n)
                .fetch_all(pool)
                .await
                .map_err(db_err)?;
                let mut logs: Vec<export::EventLog> = Vec::new();
                for (key, at) in rows {
                    match logs.last_mut() {
                        Some(log) if log.key == key => log.events.push(at),
                        _ => logs.push(export::EventLog { key, events: vec![at] }),
                    }
                }
                let last = logs.last().map(|l| l.key.clone());
                (Batch::EventLogs(logs), last)
            }
            Kind::Audit => {
                let rows = sqlx::query(
                    "SELECT id, ref, at, kind, actor, user_id, username, session_id, ip, detail
                     FROM audit_events WHERE id > ? ORDER BY id LIMIT ?",
                )
                .bind(after.parse::<i64>().unwrap_or(0))
                .bind(n)
                .fetch_all(pool)
                .await
                .map_err(db_err)?;
                let last = rows.last().map(|r| r.try_get::<i64, _>("id")).transpose();
                let events = rows
                    .iter()
                    .map(|r| {
                        Ok(export::Audit {
                            id: r.try_get("ref").map_err(db_err)?,
                            at: r.try_get("at").map_err(db_err)?,
                            kind: r.try_get("kind").map_err(db_err)?,
                            actor: r.try_get("actor").map_err(db_err)?,
                            user_id: r.try_get("user_id").map_err(db_err)?,
                            username: r.try_get("username").map_err(db_err)?,
                            session_id: r.try_get("session_id").map_err(db_err)?,
                            ip: r.try_get("ip").map_err(db_err)?,
                            detail: r.try_get("detail").map_err(db_err)?,
                        })
                    })
                    .collect::<StoreResult<Vec<_>>>()?;
                (Batch::Audit(events), last.map_err(db_err)?.map(|id| id.to_string()))
            }
        })
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
    // Whether each user is disabled, looked up once per user.
    let mut disabled: HashMap<&str, bool> = HashMap::new();
    for s in sessions {
        let off = match disabled.get(s.user_id.as_str()) {
            Some(off) => *off,
            None => {
                let off: Option<bool> =
                    sqlx::query_scalar("SELECT disabled FROM users WHERE id = ?")
                        .bind(&s.user_id)
                        .fetch_optional(&mut **tx)
                        .await
                        .map_err(db_err)?;
                let off = off.ok_or(StoreError::NotFound { what: "user" })?;
                *disabled.entry(&s.user_id).or_insert(off)
            }
        };
        if off || !s.is_live(now) {
            done.skipped += 1;
            continue;
        }
        let written = sqlx::query(
            "INSERT INTO sessions (id, user_id, token_hash, csrf_token, created_at, last_seen_at,
                 token_issued_at, idle_expires_at, expires_at, ip, user_agent, audience, data,
                 data_version)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14)
             ON CONFLICT (id) DO UPDATE SET user_id = ?2, token_hash = ?3, csrf_token = ?4,
                 created_at = ?5, last_seen_at = ?6, token_issued_at = ?7, idle_expires_at = ?8,
                 expires_at = ?9, ip = ?10, user_agent = ?11, audience = ?12, data = ?13,
                 data_version = ?14
             WHERE (user_id, token_hash, csrf_token, created_at, last_seen_at, token_issued_at,
                 idle_expires_at, expires_at, ip, user_agent, audience, data, data_version)
                 IS NOT (?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14)",
        )
        .bind(&s.id)
        .bind(&s.user_id)
        .bind(unhex(&s.token_hash)?)
        .bind(&s.csrf)
        .bind(s.created_at)
        .bind(s.last_seen_at)
        .bind(s.token_issued_at)
        .bind(s.idle_expires_at)
        .bind(s.expires_at)
        .bind(&s.ip)
        .bind(&s.user_agent)
        .bind(&s.audience)
        .bind(&s.data)
        .bind(i64::try_from(s.data_version).unwrap_or(i64::MAX))
        .execute(&mut **tx)
        .await;
        match written {
            Ok(rows) => counted(done, rows.rows_affected()),
            Err(e) if is_unique_violation(&e) => {
                return Err(StoreError::Conflict { what: "session token" });
            }
            Err(e) if is_fk_violation(&e) => return Err(StoreError::NotFound { what: "user" }),
            Err(e) => return Err(db_err(e)),
        }
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
                .bind(unhex(&k.key_hash)?)
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
            for e in events {
                let rows = sqlx::query(
                    "INSERT INTO audit_events (ref, at, kind, actor, user_id, username, session_id,
                         ip, detail) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)
                     ON CONFLICT (ref) DO NOTHING",
                )
                .bind(&e.id)
                .bind(e.at)
                .bind(&e.kind)
                .bind(&e.actor)
                .bind(&e.user_id)
                .bind(&e.username)
                .bind(&e.session_id)
                .bind(&e.ip)
                .bind(&e.detail)
                .execute(&mut **tx)
                .await
                .map_err(db_err)?;
                counted(done, rows.rows_affected());
            }
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
        let after = after.map_or("", |c| c.0.as_str());
        let (batch, last) = self.export_page(kind, after, limit, now).await?;
        let next = next(&batch, limit, last);
        Ok(Page { batch, next })
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
