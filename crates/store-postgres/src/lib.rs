//! Cloakroom's PostgreSQL store (`postgres://…`, `postgresql://…`), for several nodes on one
//! database.
//!
//! - Every change is one transaction; the ones that can make a cached session stale end by
//!   announcing themselves on the change feed in that same transaction (`feed.rs`: NOTIFY with a
//!   number from a counter row), so a committed change is always announced and an aborted one
//!   never is. [`Store::subscribe`] listens, on `store_listen` when given.
//! - Races between nodes are settled by row locks (the user's row for the per-user cap, session
//!   revocations and user changes), single-statement compare-and-sets (rotation, session data,
//!   password rehash), `INSERT … ON CONFLICT` (grant redemption) and advisory transaction locks
//!   (event-log reservations, migrations).
//! - Fail closed: the pool is bounded (`max_connections`), connecting is bounded
//!   (`connect_timeout`), and so is every operation as a whole (`statement_timeout`); whatever
//!   exceeds a bound, or any other doubt, is [`StoreError::Unavailable`]. See `settings.rs`.
//! - Schema: `migrations/`, applied by `migrate.rs`. Times are the caller's milliseconds.

mod accounts;
mod feed;
mod grants;
mod logs;
mod migrate;
mod rows;
mod sessions;
mod settings;
#[cfg(feature = "testing")]
pub mod testing;
mod transfer;

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use cloakroom_core::audit::{AuditEvent, AuditFilter};
use cloakroom_core::grant::{GrantRevocation, GrantUse, Redemption, SigningKeyRecord};
use cloakroom_core::password::PasswordHash;
use cloakroom_core::session::{DataWrite, NewSession, SessionData};
use cloakroom_core::store::{
    ApiKey, ApiKeyStore, AuditStore, BusEvent, ChangeFeed, EventId, EventLogStore, GrantStore,
    Reservation, SessionStore, Store, StoreResult, UserStore,
};
use cloakroom_core::user::{NewUser, UserChange, UserRecord};
use cloakroom_core::{
    Authenticated, CsrfToken, SessionId, StoreError, Timestamp, TokenHash, User, UserId, Username,
};
use sqlx::PgPool;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use tokio::sync::mpsc;

pub use feed::HEARTBEAT;
pub use migrate::latest as schema_version;
pub use settings::{Settings, is_postgres_url, redact};

/// How long migrations may take at start-up (another node may be running them).
const MIGRATION_TIMEOUT: Duration = Duration::from_secs(60);

/// When the change listener last lost its connection. The pool's connections opened before
/// then may be dead (the server restarted): they are closed instead of used, so that after an
/// outage no request fails on a connection the server has long forgotten.
#[derive(Debug)]
pub(crate) struct Outage {
    base: Instant,
    /// Milliseconds after `base`, plus one; 0 while there was none.
    at: AtomicU64,
}

impl Outage {
    fn new() -> Self {
        Self { base: Instant::now(), at: AtomicU64::new(0) }
    }

    fn millis(d: Duration) -> u64 {
        u64::try_from(d.as_millis()).unwrap_or(u64::MAX).saturating_add(1)
    }

    /// Notes an outage now.
    pub(crate) fn record(&self) {
        self.at.store(Self::millis(self.base.elapsed()), Ordering::Release);
    }

    /// Whether a connection `age` old was opened before the last outage.
    fn predates(&self, age: Duration) -> bool {
        let at = self.at.load(Ordering::Acquire);
        at != 0 && Self::millis(self.base.elapsed().saturating_sub(age)) <= at
    }
}

/// The PostgreSQL store.
#[derive(Clone)]
pub struct PgStore {
    pool: PgPool,
    outage: Arc<Outage>,
    /// Where the change listener connects.
    listen: PgConnectOptions,
    connect_timeout: Duration,
    /// Bound on one operation.
    deadline: Duration,
}

impl std::fmt::Debug for PgStore {
    // Connect options hold the password: never shown.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgStore").field("deadline", &self.deadline).finish_non_exhaustive()
    }
}

impl PgStore {
    /// Connects to the database a store URL names and brings its schema up to date; the change
    /// listener uses the same URL.
    pub async fn connect(url: &str) -> StoreResult<Self> {
        Self::connect_with(url, None, None).await
    }

    /// Connects as [`PgStore::connect`] does, with the change listener on `listen` when given
    /// (a direct URL, for when `url` goes through a transaction-pooling PgBouncer), and
    /// `ca_pem` as the certificate authorities to trust for TLS (`sslmode=verify-full`).
    pub async fn connect_with(
        url: &str,
        listen: Option<&str>,
        ca_pem: Option<&[u8]>,
    ) -> StoreResult<Self> {
        let main = Settings::parse(url).map_err(StoreError::unavailable)?;
        let listen = match listen {
            Some(l) => Settings::parse(l)
                .map_err(|e| StoreError::unavailable(format!("store_listen: {e}")))?,
            None => main.clone(),
        };
        let with_ca = |o: PgConnectOptions| match ca_pem {
            Some(pem) => o.ssl_root_cert_from_pem(pem.to_vec()),
            None => o,
        };
        let outage = Arc::new(Outage::new());
        let before = Arc::clone(&outage);
        let pool = PgPoolOptions::new()
            .max_connections(main.max_connections)
            .min_connections(0)
            .acquire_timeout(main.connect_timeout)
            // Pinging before every use would cost a round trip on every check. Instead, what
            // predates an outage the listener saw is dropped, and a read that still finds a
            // dead connection is tried again (`read`).
            .test_before_acquire(false)
            .before_acquire(move |_, meta| {
                let keep = !before.predates(meta.age);
                Box::pin(async move { Ok(keep) })
            })
            .connect_with(with_ca(main.connect))
            .await
            .map_err(StoreError::unavailable)?;
        tokio::time::timeout(MIGRATION_TIMEOUT, migrate::run(&pool)).await.map_err(|_| {
            StoreError::unavailable("the schema migration did not finish in time")
        })??;
        Ok(Self {
            pool,
            outage,
            listen: with_ca(listen.connect),
            connect_timeout: listen.connect_timeout,
            deadline: main.statement_timeout,
        })
    }

    /// The connection pool, for tests and tooling.
    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    /// Runs one operation within the deadline: past it, the store is unavailable.
    async fn bounded<T>(&self, op: impl Future<Output = StoreResult<T>>) -> StoreResult<T> {
        tokio::time::timeout(self.deadline, op).await.unwrap_or_else(|_| {
            Err(StoreError::unavailable(format!(
                "PostgreSQL did not answer within {} ms",
                self.deadline.as_millis()
            )))
        })
    }

    /// A read within the deadline, tried once more on a fresh connection when the first one
    /// turns out to be dead (after a restart of the server, every pooled connection is).
    async fn read<T, F, Fut>(&self, op: F) -> StoreResult<T>
    where
        F: Fn() -> Fut,
        Fut: Future<Output = StoreResult<T>>,
    {
        self.bounded(async {
            match op().await {
                Err(StoreError::Unavailable(e)) if connection_lost(&e) => op().await,
                other => other,
            }
        })
        .await
    }
}

/// Whether an error says the connection itself is gone (not that a query failed).
fn connection_lost(e: &cloakroom_core::error::BoxError) -> bool {
    matches!(e.downcast_ref::<sqlx::Error>(), Some(sqlx::Error::Io(_)))
}

pub(crate) fn db_err(e: sqlx::Error) -> StoreError {
    match e {
        sqlx::Error::ColumnDecode { .. }
        | sqlx::Error::Decode(_)
        | sqlx::Error::ColumnNotFound(_)
        | sqlx::Error::TypeNotFound { .. } => {
            StoreError::Corrupt { what: "record", source: Some(e.into()) }
        }
        other => StoreError::unavailable(other),
    }
}

pub(crate) fn is_unique_violation(e: &sqlx::Error) -> bool {
    matches!(e, sqlx::Error::Database(d) if d.is_unique_violation())
}

#[async_trait]
impl Store for PgStore {
    fn kind(&self) -> &'static str {
        "postgres"
    }

    fn transfer(&self) -> Option<&dyn cloakroom_core::export::Transfer> {
        Some(self)
    }

    async fn ping(&self) -> StoreResult<()> {
        self.read(|| async {
            sqlx::query("SELECT 1").execute(&self.pool).await.map_err(db_err).map(|_| ())
        })
        .await
    }
}

#[async_trait]
impl UserStore for PgStore {
    async fn create_user(&self, user: &NewUser) -> StoreResult<User> {
        self.bounded(accounts::create_user(&self.pool, user)).await
    }

    async fn user_by_name(&self, username: &Username) -> StoreResult<Option<UserRecord>> {
        self.read(|| accounts::user_by_name(&self.pool, username)).await
    }

    async fn list_users(&self) -> StoreResult<Vec<User>> {
        self.read(|| accounts::list_users(&self.pool)).await
    }

    async fn update_user(
        &self,
        id: &UserId,
        change: &UserChange,
        keep: Option<&SessionId>,
    ) -> StoreResult<(User, Vec<SessionId>)> {
        self.bounded(accounts::update_user(&self.pool, id, change, keep)).await
    }

    async fn replace_password_hash(
        &self,
        id: &UserId,
        old: &PasswordHash,
        new: &PasswordHash,
    ) -> StoreResult<bool> {
        self.bounded(accounts::replace_password_hash(&self.pool, id, old, new)).await
    }
}

#[async_trait]
impl SessionStore for PgStore {
    async fn create_session(
        &self,
        session: &NewSession,
        cap: u32,
        now: Timestamp,
    ) -> StoreResult<Vec<SessionId>> {
        self.bounded(sessions::create(&self.pool, session, cap, now)).await
    }

    async fn session_by_token(
        &self,
        hash: &TokenHash,
        now: Timestamp,
    ) -> StoreResult<Option<Authenticated>> {
        self.read(|| sessions::by_token(&self.pool, hash, now)).await
    }

    async fn session_by_id(
        &self,
        id: &SessionId,
        now: Timestamp,
    ) -> StoreResult<Option<Authenticated>> {
        self.read(|| sessions::by_id(&self.pool, id, now)).await
    }

    async fn touch(
        &self,
        id: &SessionId,
        now: Timestamp,
        idle_expires_at: Timestamp,
    ) -> StoreResult<bool> {
        self.bounded(sessions::touch(&self.pool, id, now, idle_expires_at)).await
    }

    async fn rotate(
        &self,
        id: &SessionId,
        from: &TokenHash,
        to: &TokenHash,
        csrf: &CsrfToken,
        now: Timestamp,
    ) -> StoreResult<bool> {
        self.bounded(sessions::rotate(&self.pool, id, from, to, csrf, now)).await
    }

    async fn revoke_session(&self, id: &SessionId) -> StoreResult<Option<UserId>> {
        self.bounded(sessions::revoke(&self.pool, id)).await
    }

    async fn revoke_user_sessions(
        &self,
        user: &UserId,
        keep: Option<&SessionId>,
    ) -> StoreResult<Vec<SessionId>> {
        self.bounded(sessions::revoke_users(&self.pool, user, keep)).await
    }

    async fn list_sessions(
        &self,
        user: Option<&UserId>,
        now: Timestamp,
    ) -> StoreResult<Vec<Authenticated>> {
        self.read(|| sessions::list(&self.pool, user, now)).await
    }

    async fn session_data(&self, id: &SessionId) -> StoreResult<Option<SessionData>> {
        self.read(|| sessions::data(&self.pool, id)).await
    }

    async fn put_session_data(
        &self,
        id: &SessionId,
        value: &serde_json::Value,
        if_version: Option<u64>,
    ) -> StoreResult<DataWrite> {
        self.bounded(sessions::put_data(&self.pool, id, value, if_version)).await
    }

    async fn delete_expired(&self, now: Timestamp) -> StoreResult<u64> {
        // A sweep may take longer than one check: it gets the deadline for each of its parts.
        let swept = self.bounded(sessions::delete_expired(&self.pool, now)).await?;
        self.bounded(logs::delete_expired(&self.pool, now)).await?;
        self.bounded(grants::delete_expired(&self.pool, now)).await?;
        Ok(swept)
    }
}

#[async_trait]
impl ApiKeyStore for PgStore {
    async fn create_api_key(
        &self,
        name: &str,
        hash: &TokenHash,
        now: Timestamp,
    ) -> StoreResult<ApiKey> {
        self.bounded(accounts::create_api_key(&self.pool, name, hash, now)).await
    }

    async fn api_key_by_hash(&self, hash: &TokenHash) -> StoreResult<Option<ApiKey>> {
        self.read(|| accounts::api_key_by_hash(&self.pool, hash)).await
    }

    async fn list_api_keys(&self) -> StoreResult<Vec<ApiKey>> {
        self.read(|| accounts::list_api_keys(&self.pool)).await
    }

    async fn revoke_api_key(&self, name: &str) -> StoreResult<bool> {
        self.bounded(accounts::revoke_api_key(&self.pool, name)).await
    }
}

#[async_trait]
impl EventLogStore for PgStore {
    async fn reserve_event(
        &self,
        key: &str,
        now: Timestamp,
        window: Duration,
        max: u32,
        enforce: bool,
    ) -> StoreResult<Reservation> {
        self.bounded(logs::reserve(&self.pool, key, now, window, max, enforce)).await
    }

    async fn release_event(&self, key: &str, id: &EventId) -> StoreResult<()> {
        self.bounded(logs::release(&self.pool, key, id)).await
    }

    async fn event_log(
        &self,
        key: &str,
        now: Timestamp,
        window: Duration,
    ) -> StoreResult<Vec<Timestamp>> {
        self.read(|| logs::times(&self.pool, key, now, window)).await
    }

    async fn forget_events(&self, key: &str) -> StoreResult<()> {
        self.bounded(logs::forget(&self.pool, key)).await
    }
}

#[async_trait]
impl GrantStore for PgStore {
    async fn add_signing_key(
        &self,
        key: &SigningKeyRecord,
        retire_others_at: Option<Timestamp>,
    ) -> StoreResult<()> {
        self.bounded(grants::add_signing_key(&self.pool, key, retire_others_at)).await
    }

    async fn signing_keys(&self) -> StoreResult<Vec<SigningKeyRecord>> {
        self.read(|| grants::signing_keys(&self.pool)).await
    }

    async fn redeem_grant(&self, grant: &GrantUse, now: Timestamp) -> StoreResult<Redemption> {
        self.bounded(grants::redeem(&self.pool, grant, now)).await
    }

    async fn revoke_grants(&self, revocation: &GrantRevocation) -> StoreResult<()> {
        self.bounded(grants::revoke(&self.pool, revocation)).await
    }

    async fn grant_revocations(
        &self,
        since: Timestamp,
        now: Timestamp,
    ) -> StoreResult<Vec<GrantRevocation>> {
        self.read(|| grants::revocations(&self.pool, since, now)).await
    }
}

#[async_trait]
impl AuditStore for PgStore {
    async fn append_audit(&self, event: &AuditEvent) -> StoreResult<()> {
        self.bounded(accounts::append_audit(&self.pool, event)).await
    }

    async fn list_audit(&self, filter: &AuditFilter) -> StoreResult<Vec<AuditEvent>> {
        self.read(|| accounts::list_audit(&self.pool, filter)).await
    }
}

#[async_trait]
impl ChangeFeed for PgStore {
    async fn subscribe(&self) -> StoreResult<mpsc::Receiver<BusEvent>> {
        // Its own pool of one: the listening connection is never lent to anything else.
        let pool = PgPoolOptions::new()
            .max_connections(1)
            .min_connections(0)
            .acquire_timeout(self.connect_timeout)
            .test_before_acquire(false)
            .connect_lazy_with(self.listen.clone());
        Ok(feed::spawn(pool, self.connect_timeout, Arc::clone(&self.outage)))
    }
}
