//! [`SessionManager`]: the one door through which sessions are checked, created, rotated and
//! revoked, and through which users change. Keeping every change behind it is what lets a node-local
//! cache sit here later and be invalidated on every change, with the store's bus carrying the
//! same invalidations to other nodes.

use std::sync::Arc;

use serde_json::Value;

use crate::active::ActiveSession;
use crate::cache::{Lookup, SessionCache};
use crate::error::{Error, StoreError};
use crate::grant::GrantRevocation;
use crate::id::{SessionId, UserId};
use crate::password::{Password, PasswordHasher, Verified};
use crate::session::{Authenticated, ExpiryPolicy, NewSession};
use crate::store::{BusEvent, Store};
use crate::time::Timestamp;
use crate::token::{CsrfToken, SecretKind, Token, TokenHash};
use crate::user::{NewUser, Role, User, UserChange, UserRecord, Username, normalize_roles};

/// Settings of the manager.
#[derive(Clone, Copy, Debug, Default)]
pub struct ManagerConfig {
    /// Idle and absolute lifetimes.
    pub expiry: ExpiryPolicy,
    /// Most live sessions per user; 0 = no cap. The oldest is evicted for a new one.
    pub max_sessions_per_user: u32,
}

/// Checks and changes sessions and users over a [`Store`].
#[derive(Clone)]
pub struct SessionManager {
    store: Arc<dyn Store>,
    hasher: PasswordHasher,
    config: ManagerConfig,
    cache: Option<Arc<SessionCache>>,
    counters: Counters,
}

/// Metric handles, registered once so the hot path only bumps an atomic. Created with the
/// manager: install the metrics recorder before building one.
#[derive(Clone)]
struct Counters {
    hits: metrics::Counter,
    misses: metrics::Counter,
}

impl Counters {
    fn new() -> Self {
        Self {
            hits: metrics::counter!("cloakroom_cache_hits_total"),
            misses: metrics::counter!("cloakroom_cache_misses_total"),
        }
    }
}

/// A freshly created session: the token (to hand to the client once) and the session.
#[derive(Debug)]
pub struct Issued {
    /// The bearer token; only its hash is stored.
    pub token: Token,
    /// The session and its user.
    pub auth: Authenticated,
    /// Sessions evicted by the per-user cap.
    pub evicted: Vec<SessionId>,
}

/// A presented token that parsed, and its live session.
#[derive(Debug)]
pub struct Checked {
    /// The token.
    pub token: Token,
    /// Its session.
    pub session: ActiveSession,
}

/// What the node-local cache said of a token.
enum Cached {
    Hit(ActiveSession),
    /// Not cached (or no cache): the token's hash, for the store.
    Miss(TokenHash),
}

/// Who asks for a change to a user. A user acting on accounts (an admin's session) is bound by
/// rules that protect them from themselves; an operator who is no user (an API key, the command
/// line) has no account of its own to lock out.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Actor<'a> {
    /// A signed-in user, by id.
    User(&'a UserId),
    /// An API key or the command line.
    Operator,
}

/// Client details recorded with a session.
#[derive(Clone, Debug, Default)]
pub struct ClientInfo {
    /// IP address as text.
    pub ip: Option<String>,
    /// User agent, truncated to 512 bytes.
    pub user_agent: Option<String>,
}

/// The outcome of a password login attempt.
#[derive(Debug)]
pub enum LoginOutcome {
    /// Credentials matched an enabled account.
    Success(UserRecord),
    /// Unknown user, wrong password, no password set, or disabled: deliberately one case.
    Invalid {
        /// The user, when one exists by that name (for the audit log and throttling).
        user: Option<User>,
    },
}

impl std::fmt::Debug for SessionManager {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SessionManager")
            .field("store", &self.store.kind())
            .field("config", &self.config)
            .finish()
    }
}

impl SessionManager {
    /// A manager over `store`.
    pub fn new(store: Arc<dyn Store>, hasher: PasswordHasher, config: ManagerConfig) -> Self {
        Self { store, hasher, config, cache: None, counters: Counters::new() }
    }

    /// Puts a node-local cache in front of the store. Run [`SessionManager::run_bus`] too, or the
    /// cache stays bypassed (it serves nothing until the bus reports `Connected`).
    pub fn with_cache(mut self, cache: Arc<SessionCache>) -> Self {
        self.cache = Some(cache);
        self
    }

    /// The cache, if any.
    pub fn cache(&self) -> Option<&Arc<SessionCache>> {
        self.cache.as_ref()
    }

    /// Follows the store's invalidation feed in the background for as long as the process runs
    /// ([`SessionManager::run_bus`], resubscribed a second after it ends or fails: a store that is
    /// down leaves the cache bypassed, never the node dead). Needs a Tokio runtime.
    pub fn spawn_invalidations(&self) -> tokio::task::JoinHandle<()> {
        let manager = self.clone();
        tokio::spawn(async move {
            loop {
                match manager.run_bus().await {
                    Ok(()) => tracing::warn!("invalidation feed ended; resubscribing"),
                    Err(e) => {
                        tracing::warn!(error = %e, "cannot subscribe to invalidations; retrying");
                    }
                }
                tokio::time::sleep(std::time::Duration::from_secs(1)).await;
            }
        })
    }

    /// Subscribes to the store's invalidation feed and applies it to the cache until the feed
    /// ends; then the cache is bypassed for good (fail safe). Spawn it once per manager.
    pub async fn run_bus(&self) -> Result<(), StoreError> {
        let Some(cache) = self.cache.clone() else { return Ok(()) };
        let mut feed = self.store.subscribe().await?;
        while let Some(event) = feed.recv().await {
            match event {
                BusEvent::Invalidate { user, at } => {
                    let lag = Timestamp::now().since(at);
                    metrics::histogram!("cloakroom_revocation_propagation_seconds")
                        .record(lag.as_secs_f64());
                    metrics::counter!("cloakroom_invalidations_received_total").increment(1);
                    match user {
                        Some(u) => cache.invalidate_user(&u),
                        None => cache.flush(),
                    }
                }
                BusEvent::Connected => {
                    cache.connected();
                    metrics::gauge!("cloakroom_bus_connected").set(1.0);
                    tracing::info!(
                        store = self.store.kind(),
                        "invalidation bus connected; cache serving"
                    );
                }
                BusEvent::Disconnected => {
                    cache.disconnected();
                    metrics::gauge!("cloakroom_bus_connected").set(0.0);
                    tracing::warn!(
                        store = self.store.kind(),
                        "invalidation bus down; cache bypassed"
                    );
                }
            }
        }
        cache.disconnected();
        metrics::gauge!("cloakroom_bus_connected").set(0.0);
        tracing::error!("invalidation feed ended; session cache bypassed until restart");
        Ok(())
    }

    /// Drops cached sessions of `user` on this node (other nodes hear of it through the bus).
    fn invalidate(&self, user: &UserId) {
        if let Some(c) = &self.cache {
            c.invalidate_user(user);
        }
    }

    /// The store, for reads that need no invalidation (lists, audit).
    pub fn store(&self) -> &Arc<dyn Store> {
        &self.store
    }

    /// The settings.
    pub fn config(&self) -> &ManagerConfig {
        &self.config
    }

    /// The password hasher.
    pub fn hasher(&self) -> &PasswordHasher {
        &self.hasher
    }

    // ------------------------------------------------------------ checks

    /// The live session for a presented token, or `None` for a malformed, unknown, revoked or
    /// expired token or a disabled user. A malformed token is refused without a store round trip.
    /// Records use at most once per `touch_interval`. Store failures are errors, never `None` and
    /// never a session: the caller fails closed.
    pub async fn authenticate(&self, token: &str) -> Result<Option<ActiveSession>, StoreError> {
        Ok(self.check(token).await?.map(|c| c.session))
    }

    /// [`SessionManager::authenticate`], also giving back the parsed token (to rotate it, say).
    pub async fn check(&self, presented: &str) -> Result<Option<Checked>, StoreError> {
        let Ok(token) = Token::parse(SecretKind::Session, presented) else {
            return Ok(None);
        };
        let session = match self.cached(&token) {
            Cached::Hit(session) => Some(session),
            // Boxed: the store read's future is large, and a hit should not carry (and move) it.
            Cached::Miss(hash) => Box::pin(self.load(&token, hash, Timestamp::now())).await?,
        };
        Ok(session.map(|session| Checked { token, session }))
    }

    /// The cache's answer for `token`. A hit answers without the store; an entry is served until
    /// the session's own deadlines, the cache's safety TTL, or the moment its last-seen is due to
    /// be written, whichever comes first.
    fn cached(&self, token: &Token) -> Cached {
        let Some(cache) = &self.cache else {
            return Cached::Miss(token.hash());
        };
        match cache.lookup(token) {
            Lookup { hit: Some(session), .. } => {
                self.counters.hits.increment(1);
                Cached::Hit(session)
            }
            Lookup { hit: None, hash } => {
                self.counters.misses.increment(1);
                Cached::Miss(hash)
            }
        }
    }

    /// A miss: reads the store, records use when due, and caches the session.
    async fn load(
        &self,
        token: &Token,
        hash: TokenHash,
        now: Timestamp,
    ) -> Result<Option<ActiveSession>, StoreError> {
        let ticket = self.cache.as_ref().map(|c| c.begin_miss());
        let Some(mut auth) = self.store.session_by_token(&hash, now).await? else {
            return Ok(None);
        };
        let policy = self.config.expiry;
        if policy.needs_touch(auth.session.last_seen_at, now) {
            let idle = policy.idle_deadline(now, auth.session.expires_at);
            if !self.store.touch(&auth.session.id, now, idle).await? {
                // Revoked or expired between the lookup and the touch.
                return Ok(None);
            }
            auth.session.last_seen_at = now;
            auth.session.idle_expires_at = idle;
        }
        let active = ActiveSession::new(&auth)
            .map_err(|e| StoreError::Corrupt { what: "session", source: Some(Box::new(e)) })?;
        if let (Some(cache), Some(ticket)) = (&self.cache, ticket) {
            let s = &auth.session;
            let until =
                s.idle_expires_at.min(s.expires_at).min(s.last_seen_at.plus(policy.touch_interval));
            cache.insert(ticket, token, &hash, &active, until, now);
        }
        Ok(Some(active))
    }

    /// The whole record of a checked session (client IP and user agent, times), read from the
    /// store: for the few endpoints that show it. `None` when it ended since the check.
    pub async fn details(
        &self,
        session: &ActiveSession,
    ) -> Result<Option<Authenticated>, StoreError> {
        self.store.session_by_id(&session.session_id(), Timestamp::now()).await
    }

    /// Checks a password for `username`. Unknown users cost the same Argon2 work as known ones.
    /// A matching hash with outdated parameters is replaced on the way.
    pub async fn check_password(
        &self,
        username: &Username,
        password: &Password,
    ) -> Result<LoginOutcome, Error> {
        let record = self.store.user_by_name(username).await?;
        let stored = record.as_ref().and_then(|r| r.password_hash.as_ref());
        let verified = self.hasher.verify(password, stored).await?;
        match (record, verified) {
            (Some(record), Verified::Yes { rehash }) if !record.user.disabled => {
                if let (true, Some(old)) = (rehash, record.password_hash.as_ref()) {
                    // Same password, new parameters: sessions stay. Compare-and-set on the old
                    // hash, so a password change racing with this login is never undone.
                    let new = self.hasher.hash(password).await?;
                    self.store.replace_password_hash(&record.user.id, old, &new).await?;
                }
                Ok(LoginOutcome::Success(record))
            }
            (record, _) => Ok(LoginOutcome::Invalid { user: record.map(|r| r.user) }),
        }
    }

    // ------------------------------------------------------------ session changes

    /// Creates a session for `user`: a fresh token, CSRF token and id; the token is never one the
    /// client brought. Applies the per-user cap.
    pub async fn create(
        &self,
        user: &User,
        client: ClientInfo,
        data: Option<Value>,
    ) -> Result<Issued, Error> {
        self.create_scoped(user, client, data, None).await
    }

    /// [`SessionManager::create`] for a session valid for one service only (`audience`), as
    /// traded for a grant.
    pub async fn create_scoped(
        &self,
        user: &User,
        client: ClientInfo,
        data: Option<Value>,
        audience: Option<String>,
    ) -> Result<Issued, Error> {
        let now = Timestamp::now();
        let token = Token::generate(SecretKind::Session)?;
        // Never past MAX_LIFETIME, whatever an embedding app configured: stores may forget
        // anything created longer ago (the Redis index drops such members by score).
        let expires_at = now.plus(self.config.expiry.absolute.min(crate::session::MAX_LIFETIME));
        let new = NewSession {
            id: SessionId::generate()?,
            token_hash: token.hash(),
            csrf: CsrfToken::generate()?,
            user_id: user.id.clone(),
            created_at: now,
            idle_expires_at: self.config.expiry.idle_deadline(now, expires_at),
            expires_at,
            ip: client.ip,
            user_agent: client.user_agent.map(|ua| truncate(ua, 512)),
            audience,
            data: data.unwrap_or_else(|| Value::Object(Default::default())),
        };
        let evicted =
            self.store.create_session(&new, self.config.max_sessions_per_user, now).await?;
        if !evicted.is_empty() {
            self.invalidate(&user.id);
        }
        let session = crate::session::Session {
            id: new.id,
            user_id: new.user_id,
            csrf: new.csrf,
            created_at: now,
            last_seen_at: now,
            token_issued_at: now,
            idle_expires_at: new.idle_expires_at,
            expires_at,
            ip: new.ip,
            user_agent: new.user_agent,
            audience: new.audience,
        };
        Ok(Issued { token, auth: Authenticated { session, user: user.clone() }, evicted })
    }

    /// Gives the live session that `current` authenticates a new token (the old one stops working
    /// at once) and, with `new_csrf`, a new CSRF token too. `None` when the session is gone or
    /// another request rotated `current` first.
    pub async fn rotate(
        &self,
        session: &ActiveSession,
        current: &Token,
        new_csrf: bool,
    ) -> Result<Option<(Token, ActiveSession)>, Error> {
        let token = Token::generate(SecretKind::Session)?;
        let csrf = if new_csrf { CsrfToken::generate()? } else { session.csrf_token() };
        let now = Timestamp::now();
        let id = session.session_id();
        if !self.store.rotate(&id, &current.hash(), &token.hash(), &csrf, now).await? {
            return Ok(None);
        }
        self.invalidate(&session.user_id());
        Ok(Some((token, session.rotated(&csrf))))
    }

    /// Revokes one session; its owner when it existed.
    pub async fn revoke(&self, id: &SessionId) -> Result<Option<UserId>, StoreError> {
        let owner = self.store.revoke_session(id).await?;
        if let Some(o) = &owner {
            self.invalidate(o);
        }
        Ok(owner)
    }

    /// Revokes all of a user's sessions but `keep`, and every grant the user holds (a grant
    /// cannot tell which session asked for it, so "log out elsewhere" ends them all: they are
    /// short-lived, and failing closed is the safe side).
    pub async fn revoke_user(
        &self,
        user: &UserId,
        keep: Option<&SessionId>,
    ) -> Result<Vec<SessionId>, StoreError> {
        let revoked = self.store.revoke_user_sessions(user, keep).await?;
        self.invalidate(user);
        self.revoke_grants_of(user).await?;
        Ok(revoked)
    }

    /// Revokes every grant `user` holds now; verifiers following `/v1/revocations` hear of it.
    pub async fn revoke_grants_of(&self, user: &UserId) -> Result<(), StoreError> {
        self.store.revoke_grants(&GrantRevocation::user(user, Timestamp::now())).await
    }

    // ------------------------------------------------------------ users

    /// Creates a user, hashing the password (which must meet the policy) if one is given.
    pub async fn create_user(
        &self,
        username: Username,
        password: Option<&Password>,
        roles: Vec<Role>,
    ) -> Result<User, Error> {
        let roles = normalize_roles(roles).map_err(roles_error)?;
        let password_hash = match password {
            Some(p) => {
                p.check_policy()?;
                Some(self.hasher.hash(p).await?)
            }
            None => None,
        };
        let new = NewUser {
            id: UserId::generate()?,
            username,
            roles,
            password_hash,
            created_at: Timestamp::now(),
        };
        Ok(self.store.create_user(&new).await?)
    }

    /// Sets a new password (policy checked). Revokes every session of the user but `keep`.
    pub async fn set_password(
        &self,
        user: &UserId,
        password: &Password,
        keep: Option<&SessionId>,
    ) -> Result<(User, Vec<SessionId>), Error> {
        password.check_policy()?;
        let hash = self.hasher.hash(password).await?;
        let change = UserChange { password_hash: Some(hash), ..UserChange::default() };
        let changed = self.store.update_user(user, &change, keep).await?;
        self.invalidate(user);
        self.revoke_grants_of(user).await?;
        Ok(changed)
    }

    /// Changes roles and/or the disabled flag, as `actor` asks. Disabling revokes every session of
    /// the user. A user may not disable their own account ([`Error::SelfDisable`]): an admin
    /// would lock themselves out, perhaps as the last admin, with one click. Compared by id, so no
    /// spelling of the name gets around it.
    pub async fn update_user(
        &self,
        actor: Actor<'_>,
        user: &UserId,
        roles: Option<Vec<Role>>,
        disabled: Option<bool>,
    ) -> Result<(User, Vec<SessionId>), Error> {
        if disabled == Some(true) && actor == Actor::User(user) {
            return Err(Error::SelfDisable);
        }
        let roles = roles.map(normalize_roles).transpose().map_err(roles_error)?;
        let change = UserChange { password_hash: None, roles, disabled };
        let changed = self.store.update_user(user, &change, None).await?;
        self.invalidate(user);
        if disabled == Some(true) {
            self.revoke_grants_of(user).await?;
        }
        Ok(changed)
    }

    /// A user by name.
    pub async fn user(&self, username: &Username) -> Result<Option<User>, StoreError> {
        Ok(self.store.user_by_name(username).await?.map(|r| r.user))
    }
}

fn roles_error(source: crate::user::NameError) -> Error {
    Error::Name { field: "roles", source }
}

fn truncate(mut s: String, max: usize) -> String {
    if s.len() > max {
        let mut end = max;
        while !s.is_char_boundary(end) {
            end -= 1;
        }
        s.truncate(end);
    }
    s
}
