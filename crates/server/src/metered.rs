//! [`MeteredStore`]: the server's store, timed and counted per operation for `/metrics`
//! (`cloakroom_store_operation_duration_seconds{operation}` and
//! `cloakroom_store_errors_total{operation,kind}`). It changes no answer: every call goes to the
//! store it wraps. Checks answered from the node-local cache never reach it.

use std::sync::Arc;
use std::time::Instant;

use async_trait::async_trait;
use cloakroom_core::audit::{AuditEvent, AuditFilter};
use cloakroom_core::error::StoreError;
use cloakroom_core::grant::{GrantRevocation, GrantUse, Redemption, SigningKeyRecord};
use cloakroom_core::password::PasswordHash;
use cloakroom_core::session::{Authenticated, DataWrite, NewSession, SessionData};
use cloakroom_core::store::{
    ApiKey, ApiKeyStore, AuditStore, BusEvent, ChangeFeed, EventId, EventLogStore, GrantStore,
    Reservation, SessionStore, Store, StoreResult, UserStore,
};
use cloakroom_core::token::{CsrfToken, TokenHash};
use cloakroom_core::user::{NewUser, User, UserChange, UserRecord, Username};
use cloakroom_core::{SessionId, Timestamp, UserId};

/// A store whose every operation is timed and whose failures are counted.
pub struct MeteredStore {
    inner: Arc<dyn Store>,
}

impl MeteredStore {
    /// Wraps `inner`.
    pub fn new(inner: Arc<dyn Store>) -> Self {
        Self { inner }
    }
}

/// Records one finished operation.
fn record<T>(operation: &'static str, start: Instant, result: &StoreResult<T>) {
    let elapsed = start.elapsed().as_secs_f64();
    metrics::histogram!("cloakroom_store_operation_duration_seconds", "operation" => operation)
        .record(elapsed);
    if let Err(e) = result {
        let kind = match e {
            StoreError::Unavailable(_) => "unavailable",
            StoreError::Conflict { .. } => "conflict",
            StoreError::NotFound { .. } => "not_found",
            StoreError::Corrupt { .. } => "corrupt",
            #[allow(unreachable_patterns)]
            _ => "other",
        };
        metrics::counter!("cloakroom_store_errors_total", "operation" => operation, "kind" => kind)
            .increment(1);
    }
}

/// `self.inner.$method(args…)`, timed as `$method`.
macro_rules! timed {
    ($self:ident . $method:ident ( $($arg:expr),* )) => {{
        let start = Instant::now();
        let result = $self.inner.$method($($arg),*).await;
        record(stringify!($method), start, &result);
        result
    }};
}

#[async_trait]
impl Store for MeteredStore {
    fn kind(&self) -> &'static str {
        self.inner.kind()
    }

    async fn ping(&self) -> StoreResult<()> {
        timed!(self.ping())
    }
}

#[async_trait]
impl UserStore for MeteredStore {
    async fn create_user(&self, user: &NewUser) -> StoreResult<User> {
        timed!(self.create_user(user))
    }

    async fn user_by_name(&self, username: &Username) -> StoreResult<Option<UserRecord>> {
        timed!(self.user_by_name(username))
    }

    async fn list_users(&self) -> StoreResult<Vec<User>> {
        timed!(self.list_users())
    }

    async fn update_user(
        &self,
        id: &UserId,
        change: &UserChange,
        keep: Option<&SessionId>,
    ) -> StoreResult<(User, Vec<SessionId>)> {
        timed!(self.update_user(id, change, keep))
    }

    async fn replace_password_hash(
        &self,
        id: &UserId,
        old: &PasswordHash,
        new: &PasswordHash,
    ) -> StoreResult<bool> {
        timed!(self.replace_password_hash(id, old, new))
    }
}

#[async_trait]
impl SessionStore for MeteredStore {
    async fn create_session(
        &self,
        session: &NewSession,
        cap: u32,
        now: Timestamp,
    ) -> StoreResult<Vec<SessionId>> {
        timed!(self.create_session(session, cap, now))
    }

    async fn session_by_token(
        &self,
        hash: &TokenHash,
        now: Timestamp,
    ) -> StoreResult<Option<Authenticated>> {
        timed!(self.session_by_token(hash, now))
    }

    async fn session_by_id(
        &self,
        id: &SessionId,
        now: Timestamp,
    ) -> StoreResult<Option<Authenticated>> {
        timed!(self.session_by_id(id, now))
    }

    async fn touch(
        &self,
        id: &SessionId,
        now: Timestamp,
        idle_expires_at: Timestamp,
    ) -> StoreResult<bool> {
        timed!(self.touch(id, now, idle_expires_at))
    }

    async fn rotate(
        &self,
        id: &SessionId,
        from: &TokenHash,
        to: &TokenHash,
        csrf: &CsrfToken,
        now: Timestamp,
    ) -> StoreResult<bool> {
        timed!(self.rotate(id, from, to, csrf, now))
    }

    async fn revoke_session(&self, id: &SessionId) -> StoreResult<Option<UserId>> {
        timed!(self.revoke_session(id))
    }

    async fn revoke_user_sessions(
        &self,
        user: &UserId,
        keep: Option<&SessionId>,
    ) -> StoreResult<Vec<SessionId>> {
        timed!(self.revoke_user_sessions(user, keep))
    }

    async fn list_sessions(
        &self,
        user: Option<&UserId>,
        now: Timestamp,
    ) -> StoreResult<Vec<Authenticated>> {
        timed!(self.list_sessions(user, now))
    }

    async fn count_sessions(&self, now: Timestamp) -> StoreResult<Option<u64>> {
        timed!(self.count_sessions(now))
    }

    async fn session_data(&self, id: &SessionId) -> StoreResult<Option<SessionData>> {
        timed!(self.session_data(id))
    }

    async fn put_session_data(
        &self,
        id: &SessionId,
        value: &serde_json::Value,
        if_version: Option<u64>,
    ) -> StoreResult<DataWrite> {
        timed!(self.put_session_data(id, value, if_version))
    }

    fn needs_sweep(&self) -> bool {
        self.inner.needs_sweep()
    }

    async fn delete_expired(&self, now: Timestamp) -> StoreResult<u64> {
        timed!(self.delete_expired(now))
    }
}

#[async_trait]
impl ApiKeyStore for MeteredStore {
    async fn create_api_key(
        &self,
        name: &str,
        hash: &TokenHash,
        now: Timestamp,
    ) -> StoreResult<ApiKey> {
        timed!(self.create_api_key(name, hash, now))
    }

    async fn api_key_by_hash(&self, hash: &TokenHash) -> StoreResult<Option<ApiKey>> {
        timed!(self.api_key_by_hash(hash))
    }

    async fn list_api_keys(&self) -> StoreResult<Vec<ApiKey>> {
        timed!(self.list_api_keys())
    }

    async fn revoke_api_key(&self, name: &str) -> StoreResult<bool> {
        timed!(self.revoke_api_key(name))
    }
}

#[async_trait]
impl EventLogStore for MeteredStore {
    async fn reserve_event(
        &self,
        key: &str,
        now: Timestamp,
        window: std::time::Duration,
        max: u32,
        enforce: bool,
    ) -> StoreResult<Reservation> {
        timed!(self.reserve_event(key, now, window, max, enforce))
    }

    async fn release_event(&self, key: &str, id: &EventId) -> StoreResult<()> {
        timed!(self.release_event(key, id))
    }

    async fn event_log(
        &self,
        key: &str,
        now: Timestamp,
        window: std::time::Duration,
    ) -> StoreResult<Vec<Timestamp>> {
        timed!(self.event_log(key, now, window))
    }

    async fn forget_events(&self, key: &str) -> StoreResult<()> {
        timed!(self.forget_events(key))
    }
}

#[async_trait]
impl GrantStore for MeteredStore {
    async fn add_signing_key(
        &self,
        key: &SigningKeyRecord,
        retire_others_at: Option<Timestamp>,
    ) -> StoreResult<()> {
        timed!(self.add_signing_key(key, retire_others_at))
    }

    async fn signing_keys(&self) -> StoreResult<Vec<SigningKeyRecord>> {
        timed!(self.signing_keys())
    }

    async fn redeem_grant(&self, grant: &GrantUse, now: Timestamp) -> StoreResult<Redemption> {
        timed!(self.redeem_grant(grant, now))
    }

    async fn revoke_grants(&self, revocation: &GrantRevocation) -> StoreResult<()> {
        timed!(self.revoke_grants(revocation))
    }

    async fn grant_revocations(
        &self,
        since: Timestamp,
        now: Timestamp,
    ) -> StoreResult<Vec<GrantRevocation>> {
        timed!(self.grant_revocations(since, now))
    }
}

#[async_trait]
impl AuditStore for MeteredStore {
    async fn append_audit(&self, event: &AuditEvent) -> StoreResult<()> {
        timed!(self.append_audit(event))
    }

    async fn list_audit(&self, filter: &AuditFilter) -> StoreResult<Vec<AuditEvent>> {
        timed!(self.list_audit(filter))
    }
}

#[async_trait]
impl ChangeFeed for MeteredStore {
    async fn subscribe(&self) -> StoreResult<tokio::sync::mpsc::Receiver<BusEvent>> {
        timed!(self.subscribe())
    }
}
