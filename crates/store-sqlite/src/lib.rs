//! Cloakroom's embedded store: one SQLite file in WAL mode, the default for a single node.
//!
//! Durability: `synchronous = FULL`, so a session that login returned survives a crash of the
//! process or the machine, and a revocation, once answered, never comes back. Several processes
//! (the server and the CLI) may use one file at once; writers take the lock up front
//! (`BEGIN IMMEDIATE`) and wait up to `busy_timeout` for each other.

mod migrate;
mod rows;
mod transfer;

use std::str::FromStr as _;
use std::time::Duration;

use async_trait::async_trait;
use cloakroom_core::audit::{AuditEvent, AuditFilter};
use cloakroom_core::grant::{GrantRevocation, GrantUse, Redemption, SigningKeyRecord};
use cloakroom_core::id::AuditId;
use cloakroom_core::password::PasswordHash;
use cloakroom_core::session::{DataWrite, NewSession, SessionData};
use cloakroom_core::store::{
    ApiKey, ApiKeyStore, AuditStore, BusEvent, ChangeFeed, EventId, EventLogStore, GrantStore,
    Reservation, SessionStore, Store, StoreResult, UserStore, codec,
};
use cloakroom_core::user::{NewUser, UserChange, UserRecord};
use cloakroom_core::{
    Authenticated, CsrfToken, SessionId, StoreError, Timestamp, TokenHash, User, UserId, Username,
};
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{Row, SqlitePool};
use tokio::sync::mpsc;

use crate::rows::{AUTH, USER};

/// The SQLite store.
#[derive(Clone, Debug)]
pub struct SqliteStore {
    pool: SqlitePool,
}

impl SqliteStore {
    /// Opens (creating when missing) the database named by a store URL `sqlite:PATH` (also
    /// `sqlite://PATH`) and brings its schema up to date.
    pub async fn connect(url: &str) -> StoreResult<Self> {
        let path = name_of_url(url)
            .filter(|p| !p.is_empty())
            .ok_or_else(|| StoreError::unavailable(format!("not a sqlite: store URL: {url}")))?;
        Self::open(path).await
    }

    /// Opens (creating when missing) the database file at `path`. A new file is made mode 0600,
    /// whatever the umask: it holds password hashes. SQLite gives the `-wal` and `-shm` files it
    /// makes beside it the database file's mode, so they are 0600 too.
    pub async fn open(path: &str) -> StoreResult<Self> {
        create_private(path)?;
        let options = SqliteConnectOptions::from_str("sqlite:")
            .map_err(StoreError::unavailable)?
            .filename(path)
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Full)
            .foreign_keys(true)
            .busy_timeout(Duration::from_secs(5));
        let pool = SqlitePoolOptions::new()
            .max_connections(4)
            .min_connections(1)
            .acquire_timeout(Duration::from_secs(5))
            .connect_with(options)
            .await
            .map_err(StoreError::unavailable)?;
        migrate::run(&pool).await?;
        Ok(Self { pool })
    }

    /// The connection pool, for tests and tooling.
    pub fn pool(&self) -> &SqlitePool {
        &self.pool
    }

    async fn write_tx(&self) -> StoreResult<sqlx::Transaction<'static, sqlx::Sqlite>> {
        self.pool.begin_with("BEGIN IMMEDIATE").await.map_err(StoreError::unavailable)
    }
}

/// Creates the database file at `path`, empty and mode 0600, unless it exists: SQLite would make
/// it 0644 less the umask, readable by every local user. An existing file keeps the mode its
/// owner gave it.
#[cfg(unix)]
fn create_private(path: &str) -> StoreResult<()> {
    use std::os::unix::fs::OpenOptionsExt as _;
    // In-memory names are no file of ours to make; a `file:` URI names one like a path does.
    let Some(path) = file_of(path) else { return Ok(()) };
    match std::fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(path) {
        Ok(_) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(()),
        Err(e) => Err(StoreError::unavailable(e)),
    }
}

/// The database name of a store URL `sqlite:PATH` or `sqlite://PATH`.
pub fn name_of_url(url: &str) -> Option<&str> {
    url.strip_prefix("sqlite://").or_else(|| url.strip_prefix("sqlite:"))
}

/// The file a database name (the `PATH` of `sqlite:PATH`) stands for: the name itself, or the
/// path of a `file:` URI (`file:x.db?cache=shared`, `file:///var/lib/x.db`); `None` for the
/// in-memory names (`:memory:`, `file::memory:`, `mode=memory`).
pub fn file_of(name: &str) -> Option<&str> {
    let Some(uri) = name.strip_prefix("file:") else {
        return (!name.is_empty() && name != ":memory:").then_some(name);
    };
    let (path, query) = uri.split_once('?').map_or((uri, ""), |(p, q)| (p, q));
    let path = path.split('#').next().unwrap_or(path);
    // `file://host/path`: only an empty or `localhost` authority names a local file.
    let path = match path.strip_prefix("//") {
        Some(rest) => rest.strip_prefix("localhost").unwrap_or(rest),
        None => path,
    };
    let memory = path.is_empty()
        || path == ":memory:"
        || query.split('&').any(|kv| kv.eq_ignore_ascii_case("mode=memory"));
    (!memory).then_some(path)
}

#[cfg(not(unix))]
fn create_private(_path: &str) -> StoreResult<()> {
    Ok(())
}

fn db_err(e: sqlx::Error) -> StoreError {
    match e {
        sqlx::Error::ColumnDecode { .. }
        | sqlx::Error::Decode(_)
        | sqlx::Error::ColumnNotFound(_) => {
            StoreError::Corrupt { what: "record", source: Some(e.into()) }
        }
        other => StoreError::unavailable(other),
    }
}

fn is_unique_violation(e: &sqlx::Error) -> bool {
    matches!(e, sqlx::Error::Database(d) if d.is_unique_violation())
}

fn is_fk_violation(e: &sqlx::Error) -> bool {
    matches!(e, sqlx::Error::Database(d) if d.is_foreign_key_violation())
}

#[async_trait]
impl Store for SqliteStore {
    fn kind(&self) -> &'static str {
        "sqlite"
    }

    fn transfer(&self) -> Option<&dyn cloakroom_core::export::Transfer> {
        Some(self)
    }

    async fn ping(&self) -> StoreResult<()> {
        sqlx::query("SELECT 1").execute(&self.pool).await.map_err(db_err)?;
        Ok(())
    }
}

#[async_trait]
impl UserStore for SqliteStore {
    async fn create_user(&self, user: &NewUser) -> StoreResult<User> {
        let result = sqlx::query(
            "INSERT INTO users (id, username, password_hash, roles, disabled, created_at, updated_at)
             VALUES (?, ?, ?, ?, 0, ?, ?)",
        )
        .bind(user.id.as_str())
        .bind(user.username.as_str())
        .bind(user.password_hash.as_ref().map(PasswordHash::as_str))
        .bind(codec::roles_to_json(&user.roles))
        .bind(user.created_at.as_millis())
        .bind(user.created_at.as_millis())
        .execute(&self.pool)
        .await;
        match result {
            Ok(_) => Ok(user.created()),
            Err(e) if is_unique_violation(&e) => Err(StoreError::Conflict { what: "user" }),
            Err(e) => Err(db_err(e)),
        }
    }

    async fn user_by_name(&self, username: &Username) -> StoreResult<Option<UserRecord>> {
        let row = sqlx::query(&format!("SELECT {USER} FROM users WHERE username = ?"))
            .bind(username.as_str())
            .fetch_optional(&self.pool)
            .await
            .map_err(db_err)?;
        row.as_ref().map(rows::user).transpose()
    }

    async fn list_users(&self) -> StoreResult<Vec<User>> {
        let rows = sqlx::query(&format!("SELECT {USER} FROM users ORDER BY username"))
            .fetch_all(&self.pool)
            .await
            .map_err(db_err)?;
        rows.iter().map(|r| rows::user(r).map(|u| u.user)).collect()
    }

    async fn update_user(
        &self,
        id: &UserId,
        change: &UserChange,
        keep: Option<&SessionId>,
    ) -> StoreResult<(User, Vec<SessionId>)> {
        let mut tx = self.write_tx().await?;
        let row = sqlx::query(&format!(
            "UPDATE users SET
                 password_hash = COALESCE(?1, password_hash),
                 privileges_changed_at =
                     CASE WHEN ?2 IS NOT NULL AND ?2 IS NOT roles THEN ?4 ELSE privileges_changed_at END,
                 roles = COALESCE(?2, roles),
                 disabled = COALESCE(?3, disabled),
                 updated_at = ?4
             WHERE id = ?5 RETURNING {USER}"
        ))
        .bind(change.password_hash.as_ref().map(PasswordHash::as_str))
        .bind(change.roles.as_deref().map(codec::roles_to_json))
        .bind(change.disabled)
        .bind(Timestamp::now().as_millis())
        .bind(id.as_str())
        .fetch_optional(&mut *tx)
        .await
        .map_err(db_err)?
        .ok_or(StoreError::NotFound { what: "user" })?;
        let user = rows::user(&row)?.user;
        let revoked = if change.revokes_sessions() {
            let rows =
                sqlx::query("DELETE FROM sessions WHERE user_id = ? AND id IS NOT ? RETURNING id")
                    .bind(id.as_str())
                    .bind(keep.map(SessionId::as_str))
                    .fetch_all(&mut *tx)
                    .await
                    .map_err(db_err)?;
            rows::session_ids(&rows)?
        } else {
            Vec::new()
        };
        // Roles, the disabled flag or the password changed: cached sessions of the user are stale.
        publish(&mut tx, Some(id)).await?;
        tx.commit().await.map_err(db_err)?;
        Ok((user, revoked))
    }

    async fn replace_password_hash(
        &self,
        id: &UserId,
        old: &PasswordHash,
        new: &PasswordHash,
    ) -> StoreResult<bool> {
        let done =
            sqlx::query("UPDATE users SET password_hash = ? WHERE id = ? AND password_hash = ?")
                .bind(new.as_str())
                .bind(id.as_str())
                .bind(old.as_str())
                .execute(&self.pool)
                .await
                .map_err(db_err)?;
        Ok(done.rows_affected() == 1)
    }
}

#[async_trait]
impl SessionStore for SqliteStore {
    async fn create_session(
        &self,
        s: &NewSession,
        cap: u32,
        now: Timestamp,
    ) -> StoreResult<Vec<SessionId>> {
        let mut tx = self.write_tx().await?;
        let evicted = if cap > 0 {
            // Keep the newest cap - 1 live sessions; the new one makes cap.
            let rows = sqlx::query(
                "DELETE FROM sessions WHERE id IN (
                     SELECT id FROM sessions
                     WHERE user_id = ?1 AND idle_expires_at > ?2 AND expires_at > ?2
                     ORDER BY created_at DESC, id DESC
                     LIMIT -1 OFFSET ?3)
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
                 token_issued_at, idle_expires_at, expires_at, ip, user_agent, data, data_version,
                 audience)
             VALUES (?1, ?2, ?3, ?4, ?5, ?5, ?5, ?6, ?7, ?8, ?9, ?10, 1, ?11)",
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
        .bind(s.data.to_string())
        .bind(s.audience.as_deref())
        .execute(&mut *tx)
        .await;
        match inserted {
            Ok(_) => {}
            Err(e) if is_unique_violation(&e) => {
                return Err(StoreError::Conflict { what: "session" });
            }
            Err(e) if is_fk_violation(&e) => return Err(StoreError::NotFound { what: "user" }),
            Err(e) => return Err(db_err(e)),
        }
        if !evicted.is_empty() {
            publish(&mut tx, Some(&s.user_id)).await?;
        }
        tx.commit().await.map_err(db_err)?;
        Ok(evicted)
    }

    async fn session_by_token(
        &self,
        hash: &TokenHash,
        now: Timestamp,
    ) -> StoreResult<Option<Authenticated>> {
        let row = sqlx::query(&format!(
            "SELECT {AUTH} FROM sessions s JOIN users u ON u.id = s.user_id
             WHERE s.token_hash = ?1 AND s.idle_expires_at > ?2 AND s.expires_at > ?2 AND u.disabled = 0"
        ))
        .bind(hash.as_bytes().as_slice())
        .bind(now.as_millis())
        .fetch_optional(&self.pool)
        .await
        .map_err(db_err)?;
        row.as_ref().map(rows::authenticated).transpose()
    }

    async fn session_by_id(
        &self,
        id: &SessionId,
        now: Timestamp,
    ) -> StoreResult<Option<Authenticated>> {
        let row = sqlx::query(&format!(
            "SELECT {AUTH} FROM sessions s JOIN users u ON u.id = s.user_id
             WHERE s.id = ?1 AND s.idle_expires_at > ?2 AND s.expires_at > ?2 AND u.disabled = 0"
        ))
        .bind(id.as_str())
        .bind(now.as_millis())
        .fetch_optional(&self.pool)
        .await
        .map_err(db_err)?;
        row.as_ref().map(rows::authenticated).transpose()
    }

    async fn touch(
        &self,
        id: &SessionId,
        now: Timestamp,
        idle_expires_at: Timestamp,
    ) -> StoreResult<bool> {
        let done = sqlx::query(
            "UPDATE sessions SET last_seen_at = ?2, idle_expires_at = MIN(?3, expires_at)
             WHERE id = ?1 AND idle_expires_at > ?2 AND expires_at > ?2",
        )
        .bind(id.as_str())
        .bind(now.as_millis())
        .bind(idle_expires_at.as_millis())
        .execute(&self.pool)
        .await
        .map_err(db_err)?;
        Ok(done.rows_affected() == 1)
    }

    async fn rotate(
        &self,
        id: &SessionId,
        from: &TokenHash,
        to: &TokenHash,
        csrf: &CsrfToken,
        now: Timestamp,
    ) -> StoreResult<bool> {
        let mut tx = self.write_tx().await?;
        let row = sqlx::query(
            "UPDATE sessions SET token_hash = ?2, csrf_token = ?3, token_issued_at = ?4
             WHERE id = ?1 AND token_hash = ?5 AND idle_expires_at > ?4 AND expires_at > ?4
             RETURNING user_id",
        )
        .bind(id.as_str())
        .bind(to.as_bytes().as_slice())
        .bind(csrf.expose())
        .bind(now.as_millis())
        .bind(from.as_bytes().as_slice())
        .fetch_optional(&mut *tx)
        .await;
        let owner = match row {
            Ok(Some(r)) => UserId::from_stored(r.try_get("user_id").map_err(db_err)?),
            Ok(None) => return Ok(false),
            Err(e) if is_unique_violation(&e) => {
                return Err(StoreError::Conflict { what: "session token" });
            }
            Err(e) => return Err(db_err(e)),
        };
        // The old token may sit in other nodes' caches.
        publish(&mut tx, Some(&owner)).await?;
        tx.commit().await.map_err(db_err)?;
        Ok(true)
    }

    async fn revoke_session(&self, id: &SessionId) -> StoreResult<Option<UserId>> {
        let mut tx = self.write_tx().await?;
        let row = sqlx::query("DELETE FROM sessions WHERE id = ? RETURNING user_id")
            .bind(id.as_str())
            .fetch_optional(&mut *tx)
            .await
            .map_err(db_err)?;
        let owner = row
            .map(|r| r.try_get::<String, _>("user_id").map(UserId::from_stored).map_err(db_err))
            .transpose()?;
        if let Some(owner) = &owner {
            publish(&mut tx, Some(owner)).await?;
        }
        tx.commit().await.map_err(db_err)?;
        Ok(owner)
    }

    async fn revoke_user_sessions(
        &self,
        user: &UserId,
        keep: Option<&SessionId>,
    ) -> StoreResult<Vec<SessionId>> {
        let mut tx = self.write_tx().await?;
        let rows =
            sqlx::query("DELETE FROM sessions WHERE user_id = ? AND id IS NOT ? RETURNING id")
                .bind(user.as_str())
                .bind(keep.map(SessionId::as_str))
                .fetch_all(&mut *tx)
                .await
                .map_err(db_err)?;
        let revoked = rows::session_ids(&rows)?;
        if !revoked.is_empty() {
            publish(&mut tx, Some(user)).await?;
        }
        tx.commit().await.map_err(db_err)?;
        Ok(revoked)
    }

    async fn list_sessions(
        &self,
        user: Option<&UserId>,
        now: Timestamp,
    ) -> StoreResult<Vec<Authenticated>> {
        let rows = sqlx::query(&format!(
            "SELECT {AUTH} FROM sessions s JOIN users u ON u.id = s.user_id
             WHERE (?1 IS NULL OR s.user_id = ?1) AND s.idle_expires_at > ?2 AND s.expires_at > ?2
                 AND u.disabled = 0
             ORDER BY s.created_at DESC, s.id DESC"
        ))
        .bind(user.map(UserId::as_str))
        .bind(now.as_millis())
        .fetch_all(&self.pool)
        .await
        .map_err(db_err)?;
        rows.iter().map(rows::authenticated).collect()
    }

    async fn count_sessions(&self, now: Timestamp) -> StoreResult<Option<u64>> {
        let (n,): (i64,) = sqlx::query_as(
            "SELECT COUNT(*) FROM sessions s JOIN users u ON u.id = s.user_id
             WHERE s.idle_expires_at > ?1 AND s.expires_at > ?1 AND u.disabled = 0",
        )
        .bind(now.as_millis())
        .fetch_one(&self.pool)
        .await
        .map_err(db_err)?;
        Ok(Some(u64::try_from(n).unwrap_or(0)))
    }

    async fn session_data(&self, id: &SessionId) -> StoreResult<Option<SessionData>> {
        let row = sqlx::query("SELECT data, data_version FROM sessions WHERE id = ?")
            .bind(id.as_str())
            .fetch_optional(&self.pool)
            .await
            .map_err(db_err)?;
        let Some(row) = row else { return Ok(None) };
        let text: String = row.try_get("data").map_err(db_err)?;
        let version: i64 = row.try_get("data_version").map_err(db_err)?;
        let value = serde_json::from_str(&text)
            .map_err(|e| StoreError::Corrupt { what: "session data", source: Some(e.into()) })?;
        Ok(Some(SessionData { value, version: u64::try_from(version).unwrap_or(0) }))
    }

    async fn put_session_data(
        &self,
        id: &SessionId,
        value: &serde_json::Value,
        if_version: Option<u64>,
    ) -> StoreResult<DataWrite> {
        let expected = if_version.map(|v| i64::try_from(v).unwrap_or(i64::MAX));
        let mut tx = self.write_tx().await?;
        let row = sqlx::query(
            "UPDATE sessions SET data = ?2, data_version = data_version + 1
             WHERE id = ?1 AND (?3 IS NULL OR data_version = ?3) RETURNING data_version",
        )
        .bind(id.as_str())
        .bind(value.to_string())
        .bind(expected)
        .fetch_optional(&mut *tx)
        .await
        .map_err(db_err)?;
        let outcome = match row {
            Some(r) => DataWrite::Stored(
                u64::try_from(r.try_get::<i64, _>("data_version").map_err(db_err)?).unwrap_or(0),
            ),
            None => {
                let current = sqlx::query("SELECT data_version FROM sessions WHERE id = ?")
                    .bind(id.as_str())
                    .fetch_optional(&mut *tx)
                    .await
                    .map_err(db_err)?;
                match current {
                    Some(r) => DataWrite::VersionMismatch(
                        u64::try_from(r.try_get::<i64, _>("data_version").map_err(db_err)?)
                            .unwrap_or(0),
                    ),
                    None => DataWrite::Gone,
                }
            }
        };
        tx.commit().await.map_err(db_err)?;
        Ok(outcome)
    }

    async fn delete_expired(&self, now: Timestamp) -> StoreResult<u64> {
        let done =
            sqlx::query("DELETE FROM sessions WHERE idle_expires_at <= ?1 OR expires_at <= ?1")
                .bind(now.as_millis())
                .execute(&self.pool)
                .await
                .map_err(db_err)?;
        // Event logs: no window is longer than 31 days.
        sqlx::query("DELETE FROM event_log WHERE at < ?")
            .bind(now.as_millis() - 31 * 24 * 3600 * 1000)
            .execute(&self.pool)
            .await
            .map_err(db_err)?;
        // Single-use records and revocations matter only until the grants they concern expire.
        sqlx::query("DELETE FROM redeemed_grants WHERE expires_at <= ?1")
            .bind(now.as_millis())
            .execute(&self.pool)
            .await
            .map_err(db_err)?;
        sqlx::query("DELETE FROM grant_revocations WHERE until <= ?1")
            .bind(now.as_millis())
            .execute(&self.pool)
            .await
            .map_err(db_err)?;
        // A subscriber that falls BUS_RETENTION behind sees a gap and flushes its cache instead.
        sqlx::query("DELETE FROM invalidations WHERE at < ?")
            .bind(now.minus(BUS_RETENTION).as_millis())
            .execute(&self.pool)
            .await
            .map_err(db_err)?;
        Ok(done.rows_affected())
    }
}

#[async_trait]
impl ApiKeyStore for SqliteStore {
    async fn create_api_key(
        &self,
        name: &str,
        hash: &TokenHash,
        now: Timestamp,
    ) -> StoreResult<ApiKey> {
        let done =
            sqlx::query("INSERT INTO api_keys (name, key_hash, created_at) VALUES (?, ?, ?)")
                .bind(name)
                .bind(hash.as_bytes().as_slice())
                .bind(now.as_millis())
                .execute(&self.pool)
                .await;
        match done {
            Ok(_) => Ok(ApiKey { name: name.to_owned(), created_at: now }),
            Err(e) if is_unique_violation(&e) => Err(StoreError::Conflict { what: "API key" }),
            Err(e) => Err(db_err(e)),
        }
    }

    async fn api_key_by_hash(&self, hash: &TokenHash) -> StoreResult<Option<ApiKey>> {
        let row = sqlx::query("SELECT name, created_at FROM api_keys WHERE key_hash = ?")
            .bind(hash.as_bytes().as_slice())
            .fetch_optional(&self.pool)
            .await
            .map_err(db_err)?;
        row.as_ref().map(rows::api_key).transpose()
    }

    async fn list_api_keys(&self) -> StoreResult<Vec<ApiKey>> {
        let rows = sqlx::query("SELECT name, created_at FROM api_keys ORDER BY name")
            .fetch_all(&self.pool)
            .await
            .map_err(db_err)?;
        rows.iter().map(rows::api_key).collect()
    }

    async fn revoke_api_key(&self, name: &str) -> StoreResult<bool> {
        let done = sqlx::query("DELETE FROM api_keys WHERE name = ?")
            .bind(name)
            .execute(&self.pool)
            .await
            .map_err(db_err)?;
        Ok(done.rows_affected() == 1)
    }
}

#[async_trait]
impl EventLogStore for SqliteStore {
    async fn reserve_event(
        &self,
        key: &str,
        now: Timestamp,
        window: Duration,
        max: u32,
        enforce: bool,
    ) -> StoreResult<Reservation> {
        let since = now.minus(window).as_millis();
        // One write transaction: the count and the insert cannot interleave with another node's.
        let mut tx = self.write_tx().await?;
        sqlx::query("DELETE FROM event_log WHERE key = ? AND at <= ?")
            .bind(key)
            .bind(since)
            .execute(&mut *tx)
            .await
            .map_err(db_err)?;
        let max = i64::from(max);
        if enforce {
            // The event that must leave the window before another fits: the max-th newest.
            let full: Option<i64> = sqlx::query_scalar(
                "SELECT at FROM event_log WHERE key = ? ORDER BY at DESC, seq DESC LIMIT 1 OFFSET ?",
            )
            .bind(key)
            .bind(max - 1)
            .fetch_optional(&mut *tx)
            .await
            .map_err(db_err)?;
            let full = if max == 0 { Some(now.as_millis()) } else { full };
            if let Some(at) = full {
                tx.commit().await.map_err(db_err)?;
                return Ok(Reservation::Full(Timestamp::from_millis(at)));
            }
        }
        let seq: i64 =
            sqlx::query_scalar("INSERT INTO event_log (key, at) VALUES (?, ?) RETURNING seq")
                .bind(key)
                .bind(now.as_millis())
                .fetch_one(&mut *tx)
                .await
                .map_err(db_err)?;
        // Keep the newest `max`; forget the rest.
        sqlx::query(
            "DELETE FROM event_log WHERE key = ?1 AND seq NOT IN (
                 SELECT seq FROM event_log WHERE key = ?1 ORDER BY at DESC, seq DESC LIMIT ?2)",
        )
        .bind(key)
        .bind(max)
        .execute(&mut *tx)
        .await
        .map_err(db_err)?;
        tx.commit().await.map_err(db_err)?;
        Ok(Reservation::Reserved(EventId(seq.to_string())))
    }

    async fn release_event(&self, key: &str, id: &EventId) -> StoreResult<()> {
        let Ok(seq) = id.0.parse::<i64>() else { return Ok(()) };
        sqlx::query("DELETE FROM event_log WHERE key = ? AND seq = ?")
            .bind(key)
            .bind(seq)
            .execute(&self.pool)
            .await
            .map_err(db_err)?;
        Ok(())
    }

    async fn event_log(
        &self,
        key: &str,
        now: Timestamp,
        window: Duration,
    ) -> StoreResult<Vec<Timestamp>> {
        let since = now.minus(window).as_millis();
        let rows =
            sqlx::query("SELECT at FROM event_log WHERE key = ? AND at > ? ORDER BY at, seq")
                .bind(key)
                .bind(since)
                .fetch_all(&self.pool)
                .await
                .map_err(db_err)?;
        rows.iter().map(|r| Ok(Timestamp::from_millis(r.try_get("at").map_err(db_err)?))).collect()
    }

    async fn forget_events(&self, key: &str) -> StoreResult<()> {
        sqlx::query("DELETE FROM event_log WHERE key = ?")
            .bind(key)
            .execute(&self.pool)
            .await
            .map_err(db_err)?;
        Ok(())
    }
}

#[async_trait]
impl GrantStore for SqliteStore {
    async fn add_signing_key(
        &self,
        key: &SigningKeyRecord,
        retire_others_at: Option<Timestamp>,
    ) -> StoreResult<()> {
        let mut tx = self.write_tx().await?;
        if let Some(at) = retire_others_at {
            sqlx::query("UPDATE signing_keys SET retired_at = ? WHERE retired_at IS NULL")
                .bind(at.as_millis())
                .execute(&mut *tx)
                .await
                .map_err(db_err)?;
        }
        let inserted = sqlx::query(
            "INSERT INTO signing_keys (id, public_key, sealed_secret, created_at, active_from,
                 retired_at) VALUES (?, ?, ?, ?, ?, ?)",
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
            Ok(_) => {}
            Err(e) if is_unique_violation(&e) => {
                return Err(StoreError::Conflict { what: "signing key" });
            }
            Err(e) => return Err(db_err(e)),
        }
        tx.commit().await.map_err(db_err)
    }

    async fn signing_keys(&self) -> StoreResult<Vec<SigningKeyRecord>> {
        let rows = sqlx::query(
            "SELECT id, public_key, sealed_secret, created_at, active_from, retired_at
             FROM signing_keys ORDER BY created_at, id",
        )
        .fetch_all(&self.pool)
        .await
        .map_err(db_err)?;
        rows.iter().map(rows::signing_key).collect()
    }

    async fn redeem_grant(&self, grant: &GrantUse, now: Timestamp) -> StoreResult<Redemption> {
        let mut tx = self.write_tx().await?;
        let used: Option<i64> = sqlx::query_scalar("SELECT 1 FROM redeemed_grants WHERE id = ?")
            .bind(&grant.id)
            .fetch_optional(&mut *tx)
            .await
            .map_err(db_err)?;
        if used.is_some() {
            return Ok(Redemption::AlreadyUsed);
        }
        let revoked: Option<i64> = sqlx::query_scalar(
            "SELECT 1 FROM grant_revocations
             WHERE ((kind = 'grant' AND subject = ?1) OR (kind = 'user' AND subject = ?2 AND at >= ?3))
               AND until > ?4
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
            return Ok(Redemption::Revoked);
        }
        sqlx::query("INSERT INTO redeemed_grants (id, expires_at) VALUES (?, ?)")
            .bind(&grant.id)
            .bind(grant.expires_at.as_millis())
            .execute(&mut *tx)
            .await
            .map_err(db_err)?;
        insert_revocation(&mut tx, &GrantRevocation::grant(&grant.id, now, grant.expires_at))
            .await?;
        tx.commit().await.map_err(db_err)?;
        Ok(Redemption::Redeemed)
    }

    async fn revoke_grants(&self, revocation: &GrantRevocation) -> StoreResult<()> {
        let mut tx = self.write_tx().await?;
        insert_revocation(&mut tx, revocation).await?;
        tx.commit().await.map_err(db_err)
    }

    async fn grant_revocations(
        &self,
        since: Timestamp,
        now: Timestamp,
    ) -> StoreResult<Vec<GrantRevocation>> {
        let rows = sqlx::query(
            "SELECT kind, subject, at, until FROM grant_revocations
             WHERE at >= ? AND until > ? ORDER BY at, seq",
        )
        .bind(since.as_millis())
        .bind(now.as_millis())
        .fetch_all(&self.pool)
        .await
        .map_err(db_err)?;
        rows.iter().map(rows::revocation).collect()
    }
}

#[async_trait]
impl AuditStore for SqliteStore {
    async fn append_audit(&self, e: &AuditEvent) -> StoreResult<()> {
        let id = AuditId::generate().map_err(StoreError::unavailable)?;
        sqlx::query(
            "INSERT INTO audit_events (ref, at, kind, actor, user_id, username, session_id, ip,
                 detail)
             VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
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
        .execute(&self.pool)
        .await
        .map_err(db_err)?;
        Ok(())
    }

    async fn list_audit(&self, filter: &AuditFilter) -> StoreResult<Vec<AuditEvent>> {
        let limit = filter.limit_or_default();
        let rows = sqlx::query(
            "SELECT at, kind, actor, user_id, username, session_id, ip, detail FROM audit_events
             WHERE (?1 IS NULL OR username = ?1) ORDER BY id DESC LIMIT ?2",
        )
        .bind(filter.username.as_ref().map(Username::as_str))
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await
        .map_err(db_err)?;
        rows.iter().map(rows::audit_event).collect()
    }
}

#[async_trait]
impl ChangeFeed for SqliteStore {
    async fn subscribe(&self) -> StoreResult<mpsc::Receiver<BusEvent>> {
        let start: i64 = sqlx::query("SELECT COALESCE(MAX(seq), 0) FROM invalidations")
            .fetch_one(&self.pool)
            .await
            .and_then(|r| r.try_get(0))
            .map_err(db_err)?;
        let (tx, rx) = mpsc::channel(1024);
        tokio::spawn(poll_invalidations(self.pool.clone(), start, tx));
        Ok(rx)
    }
}

/// How often subscribers read the invalidation log: a change made by another process (the CLI,
/// another server on the same file) reaches this node's cache within about this long.
pub const POLL_INTERVAL: Duration = Duration::from_millis(250);
/// How long invalidation records are kept.
const BUS_RETENTION: Duration = Duration::from_secs(600);

/// Appends a grant revocation, in the caller's transaction.
async fn insert_revocation(
    tx: &mut sqlx::Transaction<'static, sqlx::Sqlite>,
    r: &GrantRevocation,
) -> StoreResult<()> {
    let (kind, subject) = codec::revoked_parts(&r.subject);
    let (mut at, mut until) = (r.at.as_millis(), r.until.as_millis());
    if kind == "user" {
        // Coalesced: a later user revocation covers every earlier one, so the user keeps one
        // entry with the latest times, not one per call, for every verifier to read on connect.
        let prev: Vec<(i64, i64)> = sqlx::query_as(
            "DELETE FROM grant_revocations WHERE kind = 'user' AND subject = ?
             RETURNING at, until",
        )
        .bind(subject)
        .fetch_all(&mut **tx)
        .await
        .map_err(db_err)?;
        for (a, u) in prev {
            (at, until) = (at.max(a), until.max(u));
        }
    }
    sqlx::query("INSERT INTO grant_revocations (kind, subject, at, until) VALUES (?, ?, ?, ?)")
        .bind(kind)
        .bind(subject)
        .bind(at)
        .bind(until)
        .execute(&mut **tx)
        .await
        .map_err(db_err)?;
    Ok(())
}

/// Appends to the invalidation log, in the transaction of the change itself.
async fn publish(
    tx: &mut sqlx::Transaction<'static, sqlx::Sqlite>,
    user: Option<&UserId>,
) -> StoreResult<()> {
    sqlx::query("INSERT INTO invalidations (user_id, at) VALUES (?, ?)")
        .bind(user.map(UserId::as_str))
        .bind(Timestamp::now().as_millis())
        .execute(&mut **tx)
        .await
        .map_err(db_err)?;
    Ok(())
}

/// The SQLite bus: polls the invalidation log and forwards new records. A failed poll is
/// `Disconnected`; the next successful one is `Connected` again (the log is durable, so nothing
/// was lost, but a flush is cheap and keeps the rule simple). A gap in sequence numbers (records
/// pruned before this node read them) is treated the same way.
async fn poll_invalidations(pool: SqlitePool, mut last: i64, tx: mpsc::Sender<BusEvent>) {
    let mut healthy = true;
    if tx.send(BusEvent::Connected).await.is_err() {
        return;
    }
    let mut tick = tokio::time::interval(POLL_INTERVAL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        if tx.is_closed() {
            return;
        }
        let rows = sqlx::query(
            "SELECT seq, user_id, at FROM invalidations WHERE seq > ? ORDER BY seq LIMIT 1000",
        )
        .bind(last)
        .fetch_all(&pool)
        .await;
        let rows = match rows {
            Ok(rows) => rows,
            Err(e) => {
                if healthy {
                    tracing::warn!(error = %e, "invalidation log unreadable: bypassing the session cache");
                    healthy = false;
                    if tx.send(BusEvent::Disconnected).await.is_err() {
                        return;
                    }
                }
                continue;
            }
        };
        let first = rows.first().and_then(|r| r.try_get::<i64, _>("seq").ok());
        let gap = last > 0 && first.is_some_and(|first| first > last + 1);
        if !healthy || gap {
            healthy = true;
            if tx.send(BusEvent::Connected).await.is_err() {
                return;
            }
        }
        for row in rows {
            let (Ok(seq), Ok(user), Ok(at)) = (
                row.try_get::<i64, _>("seq"),
                row.try_get::<Option<String>, _>("user_id"),
                row.try_get::<i64, _>("at"),
            ) else {
                continue;
            };
            last = seq;
            let event = BusEvent::Invalidate {
                user: user.map(UserId::from_stored),
                at: Timestamp::from_millis(at),
            };
            if tx.send(event).await.is_err() {
                return;
            }
        }
    }
}
