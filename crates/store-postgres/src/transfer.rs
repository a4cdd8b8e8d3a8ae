//! Export and import ([`Transfer`]). Pages go in primary-key order, the cursor being the last
//! key, read by the shared decoder ([`page_of_rows`]). An imported batch is one transaction; the bulk kinds (sessions, audit events) are one
//! `INSERT … SELECT FROM UNNEST(…)` each, so that a page costs a round trip rather than one per
//! row. Upserts leave a row alone when it already holds the record (`… WHERE (columns) IS
//! DISTINCT FROM (new values)`), so the rows touched tell what was written.

use std::collections::HashMap;

use async_trait::async_trait;
use cloakroom_core::export::{
    self, Batch, Columns, Cursor, Imported, Kind, Page, RevocationKind, Transfer, hash_bytes,
    page_of_rows,
};
use cloakroom_core::grant::GrantRevocation as Revocation;
use cloakroom_core::store::StoreResult;
use cloakroom_core::{StoreError, Timestamp};
use sqlx::postgres::PgRow;
use sqlx::{PgConnection, Row as _};

use crate::feed::announce;
use crate::grants::insert_revocation;
use crate::{PgStore, db_err, is_unique_violation};

/// A row of an export query, for the shared decoder.
struct Row<'r>(&'r PgRow);

impl Columns for Row<'_> {
    fn maybe_text(&self, column: &str) -> StoreResult<Option<String>> {
        self.0.try_get(column).map_err(db_err)
    }

    fn maybe_int(&self, column: &str) -> StoreResult<Option<i64>> {
        self.0.try_get(column).map_err(db_err)
    }
}

/// Each kind's export query: the rows after cursor `$1`, at most `$2`; `$3` (for the kinds
/// whose export is [`Kind::dated`]) is the time before which nothing counts.
fn export_query(kind: Kind) -> &'static str {
    match kind {
        Kind::Users => {
            "SELECT id AS cursor, id, username, password_hash, array_to_json(roles)::text AS roles,
                 disabled::int::bigint AS disabled, created_at, updated_at, privileges_changed_at
             FROM users WHERE id > $1 ORDER BY id LIMIT $2"
        }
        Kind::Sessions => {
            "SELECT s.id AS cursor, s.id, s.user_id, encode(s.token_hash, 'hex') AS token_hash,
                 s.csrf_token, s.created_at,
                 s.last_seen_at, s.token_issued_at, s.idle_expires_at, s.expires_at, s.ip,
                 s.user_agent, s.audience, s.data, s.data_version
             FROM sessions s JOIN users u ON u.id = s.user_id
             WHERE s.id > $1 AND s.idle_expires_at > $3 AND s.expires_at > $3 AND NOT u.disabled
             ORDER BY s.id LIMIT $2"
        }
        Kind::ApiKeys => {
            "SELECT name AS cursor, name, encode(key_hash, 'hex') AS key_hash, created_at
             FROM api_keys WHERE name > $1 ORDER BY name LIMIT $2"
        }
        Kind::SigningKeys => {
            "SELECT id AS cursor, id, public_key, sealed_secret, created_at, active_from,
                 retired_at
             FROM signing_keys WHERE id > $1 ORDER BY id LIMIT $2"
        }
        Kind::GrantUses => {
            "SELECT id AS cursor, id, expires_at FROM redeemed_grants
             WHERE id > $1 AND expires_at > $3 ORDER BY id LIMIT $2"
        }
        // Identical rows (one grant revoked twice at the same instant) are one record.
        Kind::GrantRevocations => {
            "SELECT MIN(seq)::text AS cursor, kind, subject, at, until FROM grant_revocations
             WHERE until > $3 GROUP BY kind, subject, at, until
             HAVING MIN(seq) > COALESCE(NULLIF($1, '')::bigint, 0)
             ORDER BY MIN(seq) LIMIT $2"
        }
        Kind::EventLogs => {
            "SELECT key AS cursor, key, json_agg(at ORDER BY at, seq)::text AS events FROM event_log
             WHERE key > $1 AND at > $3 GROUP BY key ORDER BY key LIMIT $2"
        }
        Kind::Audit => {
            "SELECT id::text AS cursor, ref, at, kind, actor, user_id, username, session_id, ip,
                 detail
             FROM audit_events WHERE id > COALESCE(NULLIF($1, '')::bigint, 0) ORDER BY id LIMIT $2"
        }
    }
}

/// Tallies one statement that wrote `rows` of `of` records.
fn tally(done: &mut Imported, rows: u64, of: u64) {
    done.written += rows;
    done.unchanged += of.saturating_sub(rows);
}

async fn import_users(
    conn: &mut PgConnection,
    users: &[export::User],
    done: &mut Imported,
) -> StoreResult<()> {
    for u in users {
        let written = sqlx::query(
            "INSERT INTO users (id, username, password_hash, roles, disabled, created_at,
                 updated_at, privileges_changed_at)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
             ON CONFLICT (id) DO UPDATE SET username = EXCLUDED.username,
                 password_hash = EXCLUDED.password_hash, roles = EXCLUDED.roles,
                 disabled = EXCLUDED.disabled, created_at = EXCLUDED.created_at,
                 updated_at = EXCLUDED.updated_at,
                 privileges_changed_at = EXCLUDED.privileges_changed_at
             WHERE (users.username, users.password_hash, users.roles, users.disabled,
                    users.created_at, users.updated_at, users.privileges_changed_at)
                 IS DISTINCT FROM (EXCLUDED.username, EXCLUDED.password_hash, EXCLUDED.roles,
                    EXCLUDED.disabled, EXCLUDED.created_at, EXCLUDED.updated_at,
                    EXCLUDED.privileges_changed_at)",
        )
        .bind(&u.id)
        .bind(&u.username)
        .bind(&u.password_hash)
        .bind(&u.roles)
        .bind(u.disabled)
        .bind(u.created_at)
        .bind(u.updated_at)
        .bind(u.privileges_changed_at)
        .execute(&mut *conn)
        .await;
        match written {
            Ok(r) => tally(done, r.rows_affected(), 1),
            Err(e) if is_unique_violation(&e) => return Err(StoreError::Conflict { what: "user" }),
            Err(e) => return Err(db_err(e)),
        }
        if u.disabled {
            // A disabled user has no sessions.
            sqlx::query("DELETE FROM sessions WHERE user_id = $1")
                .bind(&u.id)
                .execute(&mut *conn)
                .await
                .map_err(db_err)?;
        }
    }
    Ok(())
}

async fn import_sessions(
    conn: &mut PgConnection,
    sessions: &[export::Session],
    now: Timestamp,
    done: &mut Imported,
) -> StoreResult<()> {
    let ids: Vec<&str> = sessions.iter().map(|s| s.user_id.as_str()).collect();
    let users: HashMap<String, bool> =
        sqlx::query_as("SELECT id, disabled FROM users WHERE id = ANY($1)")
            .bind(&ids)
            .fetch_all(&mut *conn)
            .await
            .map_err(db_err)?
            .into_iter()
            .collect();
    let mut rows = Vec::with_capacity(sessions.len());
    for s in sessions {
        match users.get(&s.user_id) {
            None => return Err(StoreError::NotFound { what: "user" }),
            Some(true) => done.skipped += 1,
            Some(false) if !s.is_live(now) => done.skipped += 1,
            Some(false) => rows.push(s),
        }
    }
    if rows.is_empty() {
        return Ok(());
    }
    let text = |f: fn(&export::Session) -> &str| rows.iter().map(|s| f(s)).collect::<Vec<_>>();
    let opt =
        |f: fn(&export::Session) -> Option<&str>| rows.iter().map(|s| f(s)).collect::<Vec<_>>();
    let time = |f: fn(&export::Session) -> i64| rows.iter().map(|s| f(s)).collect::<Vec<_>>();
    let hashes = rows.iter().map(|s| hash_bytes(&s.token_hash)).collect::<StoreResult<Vec<_>>>()?;
    let versions: Vec<i64> =
        rows.iter().map(|s| i64::try_from(s.data_version).unwrap_or(i64::MAX)).collect();
    let written = sqlx::query(
        "INSERT INTO sessions (id, user_id, token_hash, csrf_token, created_at, last_seen_at,
             token_issued_at, idle_expires_at, expires_at, ip, user_agent, audience, data,
             data_version)
         SELECT * FROM UNNEST($1::text[], $2::text[], $3::bytea[], $4::text[], $5::bigint[],
             $6::bigint[], $7::bigint[], $8::bigint[], $9::bigint[], $10::text[], $11::text[],
             $12::text[], $13::text[], $14::bigint[])
         ON CONFLICT (id) DO UPDATE SET user_id = EXCLUDED.user_id,
             token_hash = EXCLUDED.token_hash, csrf_token = EXCLUDED.csrf_token,
             created_at = EXCLUDED.created_at, last_seen_at = EXCLUDED.last_seen_at,
             token_issued_at = EXCLUDED.token_issued_at,
             idle_expires_at = EXCLUDED.idle_expires_at, expires_at = EXCLUDED.expires_at,
             ip = EXCLUDED.ip, user_agent = EXCLUDED.user_agent, audience = EXCLUDED.audience,
             data = EXCLUDED.data, data_version = EXCLUDED.data_version
         WHERE (sessions.user_id, sessions.token_hash, sessions.csrf_token, sessions.created_at,
                sessions.last_seen_at, sessions.token_issued_at, sessions.idle_expires_at,
                sessions.expires_at, sessions.ip, sessions.user_agent, sessions.audience,
                sessions.data, sessions.data_version)
             IS DISTINCT FROM (EXCLUDED.user_id, EXCLUDED.token_hash, EXCLUDED.csrf_token,
                EXCLUDED.created_at, EXCLUDED.last_seen_at, EXCLUDED.token_issued_at,
                EXCLUDED.idle_expires_at, EXCLUDED.expires_at, EXCLUDED.ip, EXCLUDED.user_agent,
                EXCLUDED.audience, EXCLUDED.data, EXCLUDED.data_version)",
    )
    .bind(text(|s| &s.id))
    .bind(text(|s| &s.user_id))
    .bind(hashes)
    .bind(text(|s| &s.csrf))
    .bind(time(|s| s.created_at))
    .bind(time(|s| s.last_seen_at))
    .bind(time(|s| s.token_issued_at))
    .bind(time(|s| s.idle_expires_at))
    .bind(time(|s| s.expires_at))
    .bind(opt(|s| s.ip.as_deref()))
    .bind(opt(|s| s.user_agent.as_deref()))
    .bind(opt(|s| s.audience.as_deref()))
    .bind(text(|s| &s.data))
    .bind(versions)
    .execute(&mut *conn)
    .await;
    match written {
        Ok(r) => tally(done, r.rows_affected(), rows.len() as u64),
        Err(e) if is_unique_violation(&e) => {
            return Err(StoreError::Conflict { what: "session token" });
        }
        Err(e) => return Err(db_err(e)),
    }
    Ok(())
}

async fn import_audit(
    conn: &mut PgConnection,
    events: &[export::Audit],
    done: &mut Imported,
) -> StoreResult<()> {
    let text = |f: fn(&export::Audit) -> &str| events.iter().map(f).collect::<Vec<_>>();
    let opt = |f: fn(&export::Audit) -> Option<&str>| events.iter().map(f).collect::<Vec<_>>();
    let written = sqlx::query(
        "INSERT INTO audit_events (ref, at, kind, actor, user_id, username, session_id, ip,
             detail)
         SELECT ref, at, kind, actor, user_id, username, session_id, ip, detail
         FROM UNNEST($1::text[], $2::bigint[], $3::text[], $4::text[], $5::text[], $6::text[],
             $7::text[], $8::text[], $9::text[])
             WITH ORDINALITY AS e (ref, at, kind, actor, user_id, username, session_id, ip,
                 detail, n)
         ORDER BY n
         ON CONFLICT (ref) DO NOTHING",
    )
    .bind(text(|e| &e.id))
    .bind(events.iter().map(|e| e.at).collect::<Vec<_>>())
    .bind(text(|e| &e.kind))
    .bind(text(|e| &e.actor))
    .bind(opt(|e| e.user_id.as_deref()))
    .bind(opt(|e| e.username.as_deref()))
    .bind(opt(|e| e.session_id.as_deref()))
    .bind(opt(|e| e.ip.as_deref()))
    .bind(opt(|e| e.detail.as_deref()))
    .execute(&mut *conn)
    .await
    .map_err(db_err)?;
    tally(done, written.rows_affected(), events.len() as u64);
    Ok(())
}

/// The kinds written row by row: few rows each (event logs: a key at a time).
async fn import_rows(
    conn: &mut PgConnection,
    batch: &Batch,
    done: &mut Imported,
) -> StoreResult<()> {
    match batch {
        Batch::Users(_) | Batch::Sessions(_) | Batch::Audit(_) => {}
        Batch::ApiKeys(keys) => {
            for k in keys {
                let rows = sqlx::query(
                    "INSERT INTO api_keys (name, key_hash, created_at) VALUES ($1, $2, $3)
                     ON CONFLICT (name) DO UPDATE SET key_hash = EXCLUDED.key_hash,
                         created_at = EXCLUDED.created_at
                     WHERE (api_keys.key_hash, api_keys.created_at)
                         IS DISTINCT FROM (EXCLUDED.key_hash, EXCLUDED.created_at)",
                )
                .bind(&k.name)
                .bind(hash_bytes(&k.key_hash)?)
                .bind(k.created_at)
                .execute(&mut *conn)
                .await
                .map_err(|e| match e {
                    e if is_unique_violation(&e) => StoreError::Conflict { what: "API key" },
                    e => db_err(e),
                })?;
                tally(done, rows.rows_affected(), 1);
            }
        }
        Batch::SigningKeys(keys) => {
            for k in keys {
                let rows = sqlx::query(
                    "INSERT INTO signing_keys (id, public_key, sealed_secret, created_at,
                         active_from, retired_at) VALUES ($1, $2, $3, $4, $5, $6)
                     ON CONFLICT (id) DO UPDATE SET public_key = EXCLUDED.public_key,
                         sealed_secret = EXCLUDED.sealed_secret, created_at = EXCLUDED.created_at,
                         active_from = EXCLUDED.active_from, retired_at = EXCLUDED.retired_at
                     WHERE (signing_keys.public_key, signing_keys.sealed_secret,
                            signing_keys.created_at, signing_keys.active_from,
                            signing_keys.retired_at)
                         IS DISTINCT FROM (EXCLUDED.public_key, EXCLUDED.sealed_secret,
                            EXCLUDED.created_at, EXCLUDED.active_from, EXCLUDED.retired_at)",
                )
                .bind(&k.id)
                .bind(&k.public)
                .bind(&k.sealed)
                .bind(k.created_at)
                .bind(k.active_from)
                .bind(k.retired_at)
                .execute(&mut *conn)
                .await
                .map_err(db_err)?;
                tally(done, rows.rows_affected(), 1);
            }
        }
        Batch::GrantUses(uses) => {
            for g in uses {
                let rows = sqlx::query(
                    "INSERT INTO redeemed_grants (id, expires_at) VALUES ($1, $2)
                     ON CONFLICT (id) DO UPDATE SET expires_at = EXCLUDED.expires_at
                     WHERE redeemed_grants.expires_at <> EXCLUDED.expires_at",
                )
                .bind(&g.id)
                .bind(g.expires_at)
                .execute(&mut *conn)
                .await
                .map_err(db_err)?;
                tally(done, rows.rows_affected(), 1);
            }
        }
        Batch::GrantRevocations(revocations) => {
            for r in revocations {
                // Already held: the same grant row, or a user's row that covers it.
                let held: Option<i32> = sqlx::query_scalar(
                    "SELECT 1 FROM grant_revocations WHERE kind = $1 AND subject = $2
                         AND ((kind = 'grant' AND at = $3 AND until = $4)
                           OR (kind = 'user' AND at >= $3 AND until >= $4))
                     LIMIT 1",
                )
                .bind(match r.kind {
                    RevocationKind::Grant => "grant",
                    RevocationKind::User => "user",
                })
                .bind(&r.subject)
                .bind(r.at)
                .bind(r.until)
                .fetch_optional(&mut *conn)
                .await
                .map_err(db_err)?;
                if held.is_none() {
                    insert_revocation(conn, &Revocation::from(r)).await?;
                }
                tally(done, u64::from(held.is_none()), 1);
            }
        }
        Batch::EventLogs(logs) => {
            for log in logs {
                let held: Vec<i64> =
                    sqlx::query_scalar("SELECT at FROM event_log WHERE key = $1 ORDER BY at, seq")
                        .bind(&log.key)
                        .fetch_all(&mut *conn)
                        .await
                        .map_err(db_err)?;
                if held == log.events {
                    tally(done, 0, 1);
                    continue;
                }
                sqlx::query(
                    "WITH gone AS (DELETE FROM event_log WHERE key = $1)
                     INSERT INTO event_log (key, at) SELECT $1, at FROM UNNEST($2::bigint[]) AS at",
                )
                .bind(&log.key)
                .bind(&log.events)
                .execute(&mut *conn)
                .await
                .map_err(db_err)?;
                tally(done, 1, 1);
            }
        }
    }
    Ok(())
}

#[async_trait]
impl Transfer for PgStore {
    async fn instance(&self) -> StoreResult<String> {
        // The feed counter's epoch is drawn when the schema is made: one per database.
        let epoch: String = self
            .read(|| async {
                sqlx::query_scalar("SELECT epoch FROM feed_counter")
                    .fetch_one(&self.pool)
                    .await
                    .map_err(db_err)
            })
            .await?;
        Ok(format!("postgres:{epoch}"))
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
        let rows = self
            .read(|| async {
                let query = sqlx::query(export_query(kind))
                    .bind(after.map_or("", |c| c.0.as_str()))
                    .bind(i64::try_from(limit).unwrap_or(i64::MAX));
                let query = if kind.dated() { query.bind(since.as_millis()) } else { query };
                query.fetch_all(&self.pool).await.map_err(db_err)
            })
            .await?;
        page_of_rows(kind, &rows.iter().map(Row).collect::<Vec<_>>(), limit)
    }

    async fn import(&self, batch: &Batch, now: Timestamp) -> StoreResult<Imported> {
        let mut done = Imported::default();
        if batch.is_empty() {
            return Ok(done);
        }
        self.bounded(async {
            let mut tx = self.pool.begin().await.map_err(db_err)?;
            match batch {
                Batch::Users(users) => import_users(&mut tx, users, &mut done).await?,
                Batch::Sessions(sessions) => {
                    import_sessions(&mut tx, sessions, now, &mut done).await?;
                }
                Batch::Audit(events) => import_audit(&mut tx, events, &mut done).await?,
                other => import_rows(&mut tx, other, &mut done).await?,
            }
            if matches!(batch, Batch::Users(_) | Batch::Sessions(_)) && done.written > 0 {
                // Servers on this database may hold any user's sessions in their caches.
                announce(&mut tx, None).await?;
            }
            tx.commit().await.map_err(db_err)
        })
        .await?;
        Ok(done)
    }
}
