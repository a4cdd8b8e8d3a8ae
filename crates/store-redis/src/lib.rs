//! Cloakroom's Redis / Valkey store (`redis://`, `rediss://` with TLS, `redis+cluster://`,
//! `redis+sentinel://`), for more than one node. With replicas, revocations are acknowledged only
//! once a replica has them (see `replicas.rs`).
//!
//! Layout: a user's keys share the hash tag `{uid}` (one Cluster slot), so every change that must
//! be atomic is one Lua script over one slot:
//! - `cr:u:{uid}` hash: the user; `cr:n:<username>`: username → uid; `cr:users`: usernames;
//! - `cr:s:{uid}:<sid>` hash: a session, expiring (Redis TTL) at its idle deadline;
//! - `cr:x:{uid}` sorted set: the user's sessions by creation time. A creation looks at a bounded
//!   number of its oldest members (never the whole set: work per login must not grow with what
//!   one user piles up) and deletes those whose session is gone or dead; it expires with the
//!   user's newest session;
//! - `cr:t:<token hash>` → `uid sid` and `cr:i:<sid>` → `uid`: lookups, expiring at the absolute
//!   deadline. They are hints: a session is what its hash says, so a stale index entry finds
//!   nothing;
//! - `cr:kn:<name>`, `cr:k:<key hash>`, `cr:keys`: API keys; `cr:audit` (and `cr:audit:n:<username>`)
//!   streams: audit events, capped;
//! - grants: `cr:sk` hash: signing keys (sealed); `cr:g:{gid}:u` / `:r`: a grant used / revoked,
//!   expiring with it; `cr:gr:{uid}`: grants of the user issued up to this time are revoked;
//!   `cr:grv` sorted set: the revocation log that `/v1/revocations` serves, one entry per user
//!   (coalesced through `{cr:grv}:user`);
//! - `cr:ev:<key>` sorted sets: sliding-window logs (login throttle, per-user rate limits);
//! - `cr:bus:seq`: the number of the last change announced on `cr:bus` (not on a Cluster).
//!
//! Liveness is always judged against the caller's `now`; TTLs only reclaim memory. Invalidations
//! are published on `cr:bus` from inside the script that makes the change (so a committed change
//! is never left unannounced), numbered on one Redis, and [`Store::subscribe`] turns them into
//! [`BusEvent`]s, with `Disconnected` whenever the subscription is lost or a number is skipped.

mod replicas;
mod sentinel;
#[cfg(feature = "testing")]
pub mod testing;
mod transfer;

pub use replicas::REPLICA_ACK_TIMEOUT;

use std::collections::HashMap;
use std::time::Duration;

use async_trait::async_trait;
use cloakroom_core::audit::{AuditEvent, AuditFilter};
use cloakroom_core::grant::{
    GrantRevocation, GrantUse, KEY_PUBLISH_MARGIN, MAX_GRANT_TTL, Redemption, Revoked,
    SigningKeyRecord,
};
use cloakroom_core::password::PasswordHash;
use cloakroom_core::session::{DataWrite, NewSession, Session, SessionData};
use cloakroom_core::store::{
    ApiKey, ApiKeyStore, AuditStore, BusEvent, ChangeFeed, EventId, EventLogStore, GrantStore,
    Reservation, SessionStore, Store, StoreResult, UserStore, codec,
};
use cloakroom_core::user::{NewUser, UserChange, UserRecord};
use cloakroom_core::{
    Authenticated, CsrfToken, SessionId, StoreError, Timestamp, TokenHash, User, UserId, Username,
};
use futures_util::StreamExt as _;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::{AsyncCommands as _, Script};
use tokio::sync::mpsc;

const BUS: &str = "cr:bus";
/// How often the bus subscription is pinged, and how long it may take to answer (or to connect).
const BUS_HEARTBEAT: Duration = Duration::from_secs(2);
const BUS_TIMEOUT: Duration = Duration::from_secs(2);
/// The number of the last change announced on [`BUS`] (one Redis; a Cluster has none).
const BUS_SEQ: &str = "cr:bus:seq";
const AUDIT_MAX: usize = 100_000;

/// The Redis store.
#[derive(Clone)]
pub struct RedisStore {
    /// Where the bus subscribes: the one server, or every Cluster node to try in turn (classic
    /// PUBLISH reaches every node of a Cluster).
    bus_nodes: Vec<redis::Client>,
    conn: Conn,
    scripts: std::sync::Arc<Scripts>,
    replicas: std::sync::Arc<replicas::Replicas>,
}

/// A standalone connection (reconnecting by itself), a Cluster connection (routing each command
/// by its keys' slot) or the Sentinels' primary (following a failover).
#[derive(Clone)]
enum Conn {
    Single(ConnectionManager),
    Cluster(redis::cluster_async::ClusterConnection),
    Sentinel(sentinel::Failover),
}

impl redis::aio::ConnectionLike for Conn {
    fn req_packed_command<'a>(
        &'a mut self,
        cmd: &'a redis::Cmd,
    ) -> redis::RedisFuture<'a, redis::Value> {
        match self {
            Conn::Single(c) => c.req_packed_command(cmd),
            Conn::Cluster(c) => c.req_packed_command(cmd),
            Conn::Sentinel(c) => c.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        cmd: &'a redis::Pipeline,
        offset: usize,
        count: usize,
    ) -> redis::RedisFuture<'a, Vec<redis::Value>> {
        match self {
            Conn::Single(c) => c.req_packed_commands(cmd, offset, count),
            Conn::Cluster(c) => c.req_packed_commands(cmd, offset, count),
            Conn::Sentinel(c) => c.req_packed_commands(cmd, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Conn::Single(c) => c.get_db(),
            Conn::Cluster(c) => c.get_db(),
            Conn::Sentinel(c) => c.get_db(),
        }
    }
}

impl std::fmt::Debug for RedisStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisStore").finish_non_exhaustive()
    }
}

struct Scripts {
    create_session: Script,
    touch: Script,
    rotate: Script,
    revoke: Script,
    revoke_user: Script,
    update_user: Script,
    replace_password: Script,
    put_data: Script,
    sweep_user: Script,
    reserve_event: Script,
    add_signing_key: Script,
    redeem_grant: Script,
    revoke_user_grants: Script,
    log_revocation: Script,
    transfer: transfer::Scripts,
}

impl Scripts {
    fn new() -> Self {
        Self {
            create_session: Script::new(concat!(
                include_str!("lua/common.lua"),
                include_str!("lua/create_session.lua")
            )),
            touch: Script::new(include_str!("lua/touch.lua")),
            rotate: Script::new(concat!(
                include_str!("lua/common.lua"),
                include_str!("lua/rotate.lua")
            )),
            revoke: Script::new(concat!(
                include_str!("lua/common.lua"),
                include_str!("lua/revoke.lua")
            )),
            revoke_user: Script::new(concat!(
                include_str!("lua/common.lua"),
                include_str!("lua/revoke_user.lua")
            )),
            update_user: Script::new(concat!(
                include_str!("lua/common.lua"),
                include_str!("lua/update_user.lua")
            )),
            replace_password: Script::new(include_str!("lua/replace_password.lua")),
            put_data: Script::new(include_str!("lua/put_data.lua")),
            sweep_user: Script::new(concat!(
                include_str!("lua/common.lua"),
                include_str!("lua/sweep_user.lua")
            )),
            reserve_event: Script::new(include_str!("lua/reserve_event.lua")),
            add_signing_key: Script::new(include_str!("lua/add_signing_key.lua")),
            redeem_grant: Script::new(include_str!("lua/redeem_grant.lua")),
            revoke_user_grants: Script::new(include_str!("lua/revoke_user_grants.lua")),
            log_revocation: Script::new(include_str!("lua/log_revocation.lua")),
            transfer: transfer::Scripts::new(),
        }
    }
}

fn user_key(uid: &str) -> String {
    format!("cr:u:{{{uid}}}")
}
fn index_key(uid: &str) -> String {
    format!("cr:x:{{{uid}}}")
}
fn session_prefix(uid: &str) -> String {
    format!("cr:s:{{{uid}}}:")
}
fn session_key(uid: &str, sid: &str) -> String {
    format!("cr:s:{{{uid}}}:{sid}")
}
fn token_key(hash: &str) -> String {
    format!("cr:t:{hash}")
}
fn sid_key(sid: &str) -> String {
    format!("cr:i:{sid}")
}
fn name_key(name: &str) -> String {
    format!("cr:n:{name}")
}
/// Grant-signing keys: id → `created|active_from|retired_at or -|public|sealed`.
const SIGNING_KEYS: &str = "cr:sk";
/// Grant revocations (and redemptions) by time, for `/v1/revocations`: `kind|subject|at|until`.
const GRANT_REVOCATIONS: &str = "cr:grv";
/// Each user's entry in [`GRANT_REVOCATIONS`], for coalescing (hash-tagged into its slot).
const GRANT_REVOCATIONS_LATEST: &str = "{cr:grv}:user";
fn grant_used_key(gid: &str) -> String {
    format!("cr:g:{{{gid}}}:u")
}
fn grant_revoked_key(gid: &str) -> String {
    format!("cr:g:{{{gid}}}:r")
}
fn user_grants_revoked_key(uid: &str) -> String {
    format!("cr:gr:{{{uid}}}")
}

/// Checks a store URL's own parameters (`min_replicas`), for a start-up error that names them.
pub fn check_url(url: &str) -> Result<(), String> {
    split_min_replicas(url).map(|_| ())
}

/// The most replicas `min_replicas` may ask for.
const MAX_MIN_REPLICAS: usize = 16;

/// Takes the `min_replicas=N` query parameter out of a store URL: how many replicas must
/// acknowledge a revocation before it is reported done (0, the default: as many as the
/// primary's `ROLE` shows connected, at most one). The rest of the URL is left as it was.
fn split_min_replicas(url: &str) -> Result<(String, usize), String> {
    let Some((base, query)) = url.split_once('?') else { return Ok((url.to_owned(), 0)) };
    let mut min = 0;
    let mut kept = Vec::new();
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        match pair.split_once('=') {
            Some(("min_replicas", value)) => {
                min = value.parse::<usize>().ok().filter(|n| *n <= MAX_MIN_REPLICAS).ok_or_else(
                    || {
                        format!(
                            "min_replicas in the store URL: expected a number from 0 to \
                             {MAX_MIN_REPLICAS}, not {value:?}"
                        )
                    },
                )?;
            }
            _ => kept.push(pair),
        }
    }
    Ok((if kept.is_empty() { base.to_owned() } else { format!("{base}?{}", kept.join("&")) }, min))
}

/// A store URL without its credentials, for messages and logs.
pub fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(s), Some(at)) if at > s => format!("{}<credentials>{}", &url[..s + 3], &url[at..]),
        _ => url.to_owned(),
    }
}

fn err(e: redis::RedisError) -> StoreError {
    StoreError::unavailable(e)
}

fn corrupt(what: &'static str) -> StoreError {
    StoreError::Corrupt { what, source: None }
}

fn script_error(e: redis::RedisError, what: &'static str) -> StoreError {
    let text = e.to_string();
    if text.contains("NOUSER") {
        StoreError::NotFound { what: "user" }
    } else if text.contains("CONFLICT") {
        StoreError::Conflict { what }
    } else {
        err(e)
    }
}

type Fields = HashMap<String, String>;

fn num(f: &Fields, key: &'static str) -> StoreResult<i64> {
    f.get(key).and_then(|v| v.parse().ok()).ok_or(corrupt("record field"))
}

fn decode_user(f: &Fields) -> StoreResult<UserRecord> {
    let roles = codec::roles_from_json(f.get("roles").map_or("[]", String::as_str))?;
    let pw = f.get("pw").filter(|p| !p.is_empty());
    Ok(UserRecord {
        user: User {
            id: UserId::from_stored(f.get("id").ok_or(corrupt("user"))?.clone()),
            username: Username::from_stored(f.get("username").ok_or(corrupt("user"))?.clone()),
            roles,
            disabled: f.get("disabled").is_some_and(|d| d == "1"),
            has_password: pw.is_some(),
            created_at: Timestamp::from_millis(num(f, "created")?),
            updated_at: Timestamp::from_millis(num(f, "updated")?),
            privileges_changed_at: Timestamp::from_millis(num(f, "priv").unwrap_or(0)),
        },
        password_hash: pw.cloned().map(PasswordHash::from_stored),
    })
}

fn decode_session(f: &Fields) -> StoreResult<Session> {
    let ts = |k| num(f, k).map(Timestamp::from_millis);
    Ok(Session {
        id: SessionId::from_stored(f.get("id").ok_or(corrupt("session"))?.clone()),
        user_id: UserId::from_stored(f.get("uid").ok_or(corrupt("session"))?.clone()),
        csrf: CsrfToken::from_stored(f.get("csrf").ok_or(corrupt("session"))?.clone()),
        created_at: ts("created")?,
        last_seen_at: ts("seen")?,
        token_issued_at: ts("issued")?,
        idle_expires_at: ts("idle")?,
        expires_at: ts("exp")?,
        ip: f.get("ip").cloned(),
        user_agent: f.get("ua").cloned(),
        audience: f.get("aud").cloned(),
    })
}

/// Pairs `sid, token hash` from a script reply.
fn pairs(flat: Vec<String>) -> Vec<(String, String)> {
    flat.chunks_exact(2).map(|c| (c[0].clone(), c[1].clone())).collect()
}

impl RedisStore {
    /// Connects to `redis://[user:pass@]host:port[/db]`, or to a Redis / Valkey Cluster with
    /// `redis+cluster://[user:pass@]host:port[,host:port…]` (any reachable nodes; the rest of the
    /// topology is discovered), or to the primary that Sentinels watch with
    /// `redis+sentinel://[user:pass@]host:port[,host:port…]/MASTER_NAME` (followed through a
    /// failover). Commands time out after 2 seconds: a store that does not answer is
    /// unavailable, never waited on forever; connections are re-established by themselves.
    pub async fn connect(url: &str) -> StoreResult<Self> {
        Self::connect_with_ca(url, None).await
    }

    /// [`RedisStore::connect`], also for `rediss://` (TLS): the server's certificate is checked
    /// against the system's roots or, with `ca_pem`, against that PEM bundle only (a private CA).
    pub async fn connect_with_ca(url: &str, ca_pem: Option<&[u8]>) -> StoreResult<Self> {
        let (url, min_replicas) = split_min_replicas(url).map_err(StoreError::unavailable)?;
        let url = url.as_str();
        let replicas = std::sync::Arc::new(replicas::Replicas::expecting(min_replicas));
        let timeout = Duration::from_secs(2);
        if url.starts_with("rediss://") {
            // rustls needs a process-wide crypto provider; an embedding app may have set one.
            let _ = rustls::crypto::ring::default_provider().install_default();
        }
        if let Some(rest) = url.strip_prefix("redis+cluster://") {
            let (auth, hosts) = match rest.rsplit_once('@') {
                Some((auth, hosts)) => (format!("{auth}@"), hosts),
                None => (String::new(), rest),
            };
            let nodes: Vec<String> = hosts
                .trim_end_matches('/')
                .split(',')
                .filter(|h| !h.is_empty())
                .map(|h| format!("redis://{auth}{h}/"))
                .collect();
            if nodes.is_empty() {
                return Err(StoreError::unavailable(format!(
                    "no node in the Cluster URL {}",
                    redact(url)
                )));
            }
            let client = redis::cluster::ClusterClientBuilder::new(nodes.clone())
                .connection_timeout(timeout)
                .response_timeout(timeout)
                .build()
                .map_err(err)?;
            let conn = client.get_async_connection().await.map_err(err)?;
            let bus_nodes = nodes
                .iter()
                .map(|n| redis::Client::open(n.as_str()))
                .collect::<Result<_, _>>()
                .map_err(err)?;
            return Ok(Self {
                bus_nodes,
                conn: Conn::Cluster(conn),
                scripts: std::sync::Arc::new(Scripts::new()),
                replicas: replicas.clone(),
            });
        }
        if url.starts_with("redis+sentinel://") {
            // The bus subscribes wherever the Sentinels say the primary is, at each reconnect.
            return Ok(Self {
                bus_nodes: Vec::new(),
                conn: Conn::Sentinel(sentinel::Failover::connect(url, timeout).await?),
                scripts: std::sync::Arc::new(Scripts::new()),
                replicas: replicas.clone(),
            });
        }
        let client = match ca_pem {
            Some(ca) if url.starts_with("rediss://") => redis::Client::build_with_tls(
                url,
                redis::TlsCertificates { client_tls: None, root_cert: Some(ca.to_vec()) },
            )
            .map_err(err)?,
            _ => redis::Client::open(url).map_err(err)?,
        };
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(timeout))
            .set_response_timeout(Some(timeout))
            .set_number_of_retries(1);
        let conn = ConnectionManager::new_with_config(client.clone(), config).await.map_err(err)?;
        Ok(Self {
            bus_nodes: vec![client],
            conn: Conn::Single(conn),
            scripts: std::sync::Arc::new(Scripts::new()),
            replicas,
        })
    }

    /// Runs commands that may touch different slots, concurrently (a Cluster refuses a pipeline
    /// across slots). Not atomic: used only where each command stands on its own.
    async fn each(&self, cmds: Vec<redis::Cmd>) -> StoreResult<()> {
        let runs = cmds.into_iter().map(|cmd| {
            let mut conn = self.conn();
            async move { cmd.query_async::<redis::Value>(&mut conn).await }
        });
        futures_util::future::try_join_all(runs).await.map_err(err)?;
        Ok(())
    }

    /// Appends to the revocation log and forgets entries older than any grant can live.
    async fn log_revocation(&self, r: &GrantRevocation) -> StoreResult<()> {
        let (kind, subject) = codec::revoked_parts(&r.subject);
        let horizon = r.at.minus(MAX_GRANT_TTL + KEY_PUBLISH_MARGIN).as_millis();
        let _: i64 = self
            .scripts
            .log_revocation
            .key(GRANT_REVOCATIONS)
            .key(GRANT_REVOCATIONS_LATEST)
            .arg(format!("{kind}|{subject}"))
            .arg(r.at.as_millis())
            .arg(r.until.as_millis())
            .arg(horizon)
            .invoke_async(&mut self.conn())
            .await
            .map_err(err)?;
        Ok(())
    }

    fn conn(&self) -> Conn {
        self.conn.clone()
    }

    /// Gives a script that changes sessions the bus's sequence key, so that its announcement
    /// carries the change's number (one Redis only: a Cluster script may touch one slot).
    fn announced<'s, 'a>(
        &self,
        script: &'s mut redis::ScriptInvocation<'a>,
    ) -> &'s mut redis::ScriptInvocation<'a> {
        if !matches!(self.conn, Conn::Cluster(_)) {
            script.key(BUS_SEQ);
        }
        script
    }

    /// Deletes the lookup hints of sessions a committed change removed. The change and its
    /// announcement are already done; a hint left behind finds nothing (a session is what its
    /// hash says) and expires at its absolute deadline, so a failure here is logged, not returned:
    /// the caller must not believe that a committed revocation failed.
    async fn forget_hints(&self, pairs: &[(String, String)]) {
        if let Err(e) = self.delete_hints(pairs).await {
            tracing::warn!(error = %e, "could not delete lookup hints of removed sessions");
        }
    }

    async fn delete_hints(&self, pairs: &[(String, String)]) -> StoreResult<()> {
        if pairs.is_empty() {
            return Ok(());
        }
        let mut keys = Vec::with_capacity(pairs.len() * 2);
        for (sid, th) in pairs {
            keys.push(token_key(th));
            keys.push(sid_key(sid));
        }
        // One DEL per key: in a Cluster they live in different slots.
        self.each(keys.iter().map(|k| redis::cmd("DEL").arg(k).clone()).collect()).await
    }

    async fn uid_of_session(&self, sid: &SessionId) -> StoreResult<Option<String>> {
        self.conn().get(sid_key(sid.as_str())).await.map_err(err)
    }

    async fn user_fields(&self, uid: &str) -> StoreResult<Fields> {
        self.conn().hgetall(user_key(uid)).await.map_err(err)
    }

    /// The session `sid` of `uid` with its user, if live at `now` (and, with `th`, if it has
    /// that token hash).
    async fn load(
        &self,
        uid: &str,
        sid: &str,
        th: Option<&str>,
        now: Timestamp,
    ) -> StoreResult<Option<Authenticated>> {
        let (s, u): (Fields, Fields) = redis::pipe()
            .atomic()
            .hgetall(session_key(uid, sid))
            .hgetall(user_key(uid))
            .query_async(&mut self.conn())
            .await
            .map_err(err)?;
        if s.is_empty() || u.is_empty() {
            return Ok(None);
        }
        if th.is_some_and(|th| s.get("th").map(String::as_str) != Some(th)) {
            return Ok(None);
        }
        let session = decode_session(&s)?;
        let user = decode_user(&u)?.user;
        if !session.is_live(now) || user.disabled || session.user_id != user.id {
            return Ok(None);
        }
        Ok(Some(Authenticated { session, user }))
    }

    async fn sessions_of(&self, uid: &str, now: Timestamp) -> StoreResult<Vec<Authenticated>> {
        let sids: Vec<String> = self.conn().zrange(index_key(uid), 0, -1).await.map_err(err)?;
        let mut out = Vec::new();
        for sid in sids {
            if let Some(a) = self.load(uid, &sid, None, now).await? {
                out.push(a);
            }
        }
        Ok(out)
    }
}

/// One message on the bus: `uid at seq` (`*` for every user; `seq` empty on a Cluster).
#[derive(Debug, PartialEq, Eq)]
struct Announcement {
    user: Option<UserId>,
    at: Timestamp,
    seq: Option<u64>,
}

impl Announcement {
    fn parse(payload: &str) -> Option<Self> {
        let mut parts = payload.split(' ');
        let user = match parts.next()? {
            "" => return None,
            "*" => None,
            uid => Some(UserId::from_stored(uid.to_owned())),
        };
        let at = Timestamp::from_millis(parts.next()?.parse().ok()?);
        let seq = match parts.next() {
            None | Some("") => None,
            Some(n) => Some(n.parse().ok()?),
        };
        Some(Self { user, at, seq })
    }
}

/// Where a subscriber is in the sequence of announced changes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Sequence {
    /// A Cluster: announcements carry no change number.
    Unsequenced,
    /// The last change number seen (or the one at subscription).
    Last(u64),
}

impl Sequence {
    /// Takes the next announcement's number; false when one was skipped (a lost announcement).
    /// Numbers at or below the last are announcements from before the subscription: no gap.
    fn follow(&mut self, seq: Option<u64>) -> bool {
        match (self, seq) {
            (Sequence::Last(last), Some(seq)) if seq > *last => {
                let whole = seq == *last + 1;
                *last = seq;
                whole
            }
            _ => true,
        }
    }
}

#[async_trait]
impl Store for RedisStore {
    fn kind(&self) -> &'static str {
        "redis"
    }

    fn transfer(&self) -> Option<&dyn cloakroom_core::export::Transfer> {
        Some(self)
    }

    async fn ping(&self) -> StoreResult<()> {
        redis::cmd("PING").query_async::<String>(&mut self.conn()).await.map_err(err)?;
        Ok(())
    }
}

#[async_trait]
impl UserStore for RedisStore {
    async fn create_user(&self, user: &NewUser) -> StoreResult<User> {
        let uid = user.id.as_str();
        let claimed: bool = redis::cmd("SET")
            .arg(name_key(user.username.as_str()))
            .arg(uid)
            .arg("NX")
            .query_async::<Option<String>>(&mut self.conn())
            .await
            .map_err(err)?
            .is_some();
        if !claimed {
            return Err(StoreError::Conflict { what: "user" });
        }
        let created = user.created_at.as_millis().to_string();
        let mut fields = vec![
            ("id", uid.to_owned()),
            ("username", user.username.as_str().to_owned()),
            ("roles", codec::roles_to_json(&user.roles)),
            ("disabled", "0".to_owned()),
            ("created", created.clone()),
            ("updated", created),
            ("priv", "0".to_owned()),
        ];
        if let Some(pw) = &user.password_hash {
            fields.push(("pw", pw.as_str().to_owned()));
        }
        // The user first, then the listing: a crash between them leaves a user that works but is
        // not listed, never a listed name without a user.
        self.conn().hset_multiple::<_, _, _, ()>(user_key(uid), &fields).await.map_err(err)?;
        self.conn()
            .zadd::<_, _, _, ()>("cr:users", user.username.as_str(), 0)
            .await
            .map_err(err)?;
        Ok(user.created())
    }

    async fn user_by_name(&self, username: &Username) -> StoreResult<Option<UserRecord>> {
        let uid: Option<String> =
            self.conn().get(name_key(username.as_str())).await.map_err(err)?;
        let Some(uid) = uid else { return Ok(None) };
        let f = self.user_fields(&uid).await?;
        if f.is_empty() {
            return Ok(None);
        }
        decode_user(&f).map(Some)
    }

    async fn list_users(&self) -> StoreResult<Vec<User>> {
        let names: Vec<String> = self.conn().zrange("cr:users", 0, -1).await.map_err(err)?;
        let mut out = Vec::new();
        for name in names {
            if let Some(r) = self.user_by_name(&Username::from_stored(name)).await? {
                out.push(r.user);
            }
        }
        Ok(out)
    }

    async fn update_user(
        &self,
        id: &UserId,
        change: &UserChange,
        keep: Option<&SessionId>,
    ) -> StoreResult<(User, Vec<SessionId>)> {
        let uid = id.as_str();
        let ticket = self.ticket();
        let mut script = self.scripts.update_user.prepare_invoke();
        script.key(user_key(uid)).key(index_key(uid));
        let (fields, revoked): (Vec<String>, Vec<String>) = self
            .announced(&mut script)
            .arg(change.password_hash.as_ref().map_or("", PasswordHash::as_str))
            .arg(change.roles.as_deref().map(codec::roles_to_json).unwrap_or_default())
            .arg(change.disabled.map_or("", |d| if d { "1" } else { "0" }))
            .arg(Timestamp::now().as_millis())
            .arg(if change.revokes_sessions() { "1" } else { "0" })
            .arg(keep.map_or("", SessionId::as_str))
            .arg(session_prefix(uid))
            .arg(uid)
            .invoke_async(&mut self.conn())
            .await
            .map_err(|e| script_error(e, "user"))?;
        let map: Fields = fields.chunks_exact(2).map(|c| (c[0].clone(), c[1].clone())).collect();
        let user = decode_user(&map)?.user;
        let revoked = pairs(revoked);
        self.forget_hints(&revoked).await;
        self.replicated(ticket, &user_key(uid)).await?;
        Ok((user, revoked.into_iter().map(|(s, _)| SessionId::from_stored(s)).collect()))
    }

    async fn replace_password_hash(
        &self,
        id: &UserId,
        old: &PasswordHash,
        new: &PasswordHash,
    ) -> StoreResult<bool> {
        let done: i64 = self
            .scripts
            .replace_password
            .key(user_key(id.as_str()))
            .arg(old.as_str())
            .arg(new.as_str())
            .invoke_async(&mut self.conn())
            .await
            .map_err(err)?;
        Ok(done == 1)
    }
}

#[async_trait]
impl SessionStore for RedisStore {
    /// Sessions expire by TTL at their idle deadline, index entries with the user's newest
    /// session, lookup hints at the absolute deadline: nothing for a sweep to do, and a sweep
    /// would walk every user on every node.
    fn needs_sweep(&self) -> bool {
        false
    }

    async fn create_session(
        &self,
        s: &NewSession,
        cap: u32,
        now: Timestamp,
    ) -> StoreResult<Vec<SessionId>> {
        let uid = s.user_id.as_str();
        let sid = s.id.as_str();
        let th = s.token_hash.to_hex();
        let mut script = self.scripts.create_session.prepare_invoke();
        script.key(user_key(uid)).key(index_key(uid)).key(session_key(uid, sid));
        let (evicted, pruned): (Vec<String>, Vec<String>) = self
            .announced(&mut script)
            .arg(sid)
            .arg(&th)
            .arg(s.csrf.expose())
            .arg(s.created_at.as_millis())
            .arg(s.idle_expires_at.as_millis())
            .arg(s.expires_at.as_millis())
            .arg(s.ip.as_deref().unwrap_or(""))
            .arg(s.user_agent.as_deref().unwrap_or(""))
            .arg(s.data.to_string())
            .arg(cap)
            .arg(now.as_millis())
            .arg(session_prefix(uid))
            .arg(if s.ip.is_some() { "1" } else { "0" })
            .arg(if s.user_agent.is_some() { "1" } else { "0" })
            .arg(uid)
            .arg(s.audience.as_deref().unwrap_or(""))
            .arg(now.minus(cloakroom_core::session::MAX_LIFETIME).as_millis())
            .invoke_async(&mut self.conn())
            .await
            .map_err(|e| script_error(e, "session"))?;
        let expires = s.expires_at.as_millis();
        self.each(vec![
            redis::cmd("SET")
                .arg(token_key(&th))
                .arg(format!("{uid} {sid}"))
                .arg("PXAT")
                .arg(expires)
                .clone(),
            redis::cmd("SET").arg(sid_key(sid)).arg(uid).arg("PXAT").arg(expires).clone(),
        ])
        .await?;
        let evicted = pairs(evicted);
        let mut stale = pairs(pruned);
        stale.extend(evicted.iter().cloned());
        self.forget_hints(&stale).await;
        Ok(evicted.into_iter().map(|(s, _)| SessionId::from_stored(s)).collect())
    }

    async fn session_by_token(
        &self,
        hash: &TokenHash,
        now: Timestamp,
    ) -> StoreResult<Option<Authenticated>> {
        let th = hash.to_hex();
        let hint: Option<String> = self.conn().get(token_key(&th)).await.map_err(err)?;
        let Some((uid, sid)) = hint.as_deref().and_then(|h| h.split_once(' ')) else {
            return Ok(None);
        };
        self.load(uid, sid, Some(&th), now).await
    }

    async fn session_by_id(
        &self,
        id: &SessionId,
        now: Timestamp,
    ) -> StoreResult<Option<Authenticated>> {
        let Some(uid) = self.uid_of_session(id).await? else { return Ok(None) };
        self.load(&uid, id.as_str(), None, now).await
    }

    async fn touch(
        &self,
        id: &SessionId,
        now: Timestamp,
        idle_expires_at: Timestamp,
    ) -> StoreResult<bool> {
        let Some(uid) = self.uid_of_session(id).await? else { return Ok(false) };
        let done: i64 = self
            .scripts
            .touch
            .key(session_key(&uid, id.as_str()))
            .arg(now.as_millis())
            .arg(idle_expires_at.as_millis())
            .invoke_async(&mut self.conn())
            .await
            .map_err(err)?;
        Ok(done == 1)
    }

    async fn rotate(
        &self,
        id: &SessionId,
        from: &TokenHash,
        to: &TokenHash,
        csrf: &CsrfToken,
        now: Timestamp,
    ) -> StoreResult<bool> {
        let Some(uid) = self.uid_of_session(id).await? else { return Ok(false) };
        let (from, to) = (from.to_hex(), to.to_hex());
        let ticket = self.ticket();
        let mut script = self.scripts.rotate.prepare_invoke();
        script.key(session_key(&uid, id.as_str()));
        let expires: Option<String> = self
            .announced(&mut script)
            .arg(&from)
            .arg(&to)
            .arg(csrf.expose())
            .arg(now.as_millis())
            .arg(&uid)
            .invoke_async(&mut self.conn())
            .await
            .map_err(err)?;
        let Some(expires) = expires else { return Ok(false) };
        // The new token's hint is needed to find the session; the old one's finds nothing now.
        let _: () = self
            .conn()
            .set_options(
                token_key(&to),
                format!("{uid} {}", id.as_str()),
                redis::SetOptions::default().with_expiration(redis::SetExpiry::PXAT(
                    expires.parse().map_err(|_| corrupt("session deadline"))?,
                )),
            )
            .await
            .map_err(err)?;
        if let Err(e) = self.conn().del::<_, ()>(token_key(&from)).await {
            tracing::warn!(error = %e, "could not delete the lookup hint of a rotated token");
        }
        // The old token must not come back with a failover.
        self.replicated(ticket, &user_key(&uid)).await?;
        Ok(true)
    }

    async fn revoke_session(&self, id: &SessionId) -> StoreResult<Option<UserId>> {
        let ticket = self.ticket();
        let Some(uid) = self.uid_of_session(id).await? else { return Ok(None) };
        let mut script = self.scripts.revoke.prepare_invoke();
        script.key(session_key(&uid, id.as_str())).key(index_key(&uid));
        let th: Option<String> = self
            .announced(&mut script)
            .arg(id.as_str())
            .arg(&uid)
            .arg(Timestamp::now().as_millis())
            .invoke_async(&mut self.conn())
            .await
            .map_err(err)?;
        // Also when it was already gone: this may be a retry after an unacknowledged revocation,
        // whose write this connection's WAIT still covers.
        self.replicated(ticket, &user_key(&uid)).await?;
        let Some(th) = th else {
            let _: () = self.conn().del(sid_key(id.as_str())).await.map_err(err)?;
            return Ok(None);
        };
        self.forget_hints(&[(id.as_str().to_owned(), th)]).await;
        Ok(Some(UserId::from_stored(uid)))
    }

    async fn revoke_user_sessions(
        &self,
        user: &UserId,
        keep: Option<&SessionId>,
    ) -> StoreResult<Vec<SessionId>> {
        let uid = user.as_str();
        let ticket = self.ticket();
        let mut script = self.scripts.revoke_user.prepare_invoke();
        script.key(index_key(uid));
        let flat: Vec<String> = self
            .announced(&mut script)
            .arg(session_prefix(uid))
            .arg(keep.map_or("", SessionId::as_str))
            .arg(uid)
            .arg(Timestamp::now().as_millis())
            .invoke_async(&mut self.conn())
            .await
            .map_err(err)?;
        let revoked = pairs(flat);
        self.replicated(ticket, &index_key(uid)).await?;
        self.forget_hints(&revoked).await;
        Ok(revoked.into_iter().map(|(s, _)| SessionId::from_stored(s)).collect())
    }

    async fn list_sessions(
        &self,
        user: Option<&UserId>,
        now: Timestamp,
    ) -> StoreResult<Vec<Authenticated>> {
        let mut all = match user {
            Some(u) => self.sessions_of(u.as_str(), now).await?,
            None => {
                let mut all = Vec::new();
                for u in self.list_users().await? {
                    all.extend(self.sessions_of(u.id.as_str(), now).await?);
                }
                all
            }
        };
        all.sort_by(|a, b| {
            (b.session.created_at, &b.session.id).cmp(&(a.session.created_at, &a.session.id))
        });
        Ok(all)
    }

    async fn session_data(&self, id: &SessionId) -> StoreResult<Option<SessionData>> {
        let Some(uid) = self.uid_of_session(id).await? else { return Ok(None) };
        let (data, dv): (Option<String>, Option<u64>) = redis::cmd("HMGET")
            .arg(session_key(&uid, id.as_str()))
            .arg("data")
            .arg("dv")
            .query_async(&mut self.conn())
            .await
            .map_err(err)?;
        match (data, dv) {
            (Some(data), Some(version)) => Ok(Some(SessionData {
                value: serde_json::from_str(&data).map_err(|_| corrupt("session data"))?,
                version,
            })),
            _ => Ok(None),
        }
    }

    async fn put_session_data(
        &self,
        id: &SessionId,
        value: &serde_json::Value,
        if_version: Option<u64>,
    ) -> StoreResult<DataWrite> {
        let Some(uid) = self.uid_of_session(id).await? else { return Ok(DataWrite::Gone) };
        let (outcome, version): (String, u64) = self
            .scripts
            .put_data
            .key(session_key(&uid, id.as_str()))
            .arg(value.to_string())
            .arg(if_version.map(|v| v.to_string()).unwrap_or_default())
            .invoke_async(&mut self.conn())
            .await
            .map_err(err)?;
        Ok(match outcome.as_str() {
            "ok" => DataWrite::Stored(version),
            "mismatch" => DataWrite::VersionMismatch(version),
            _ => DataWrite::Gone,
        })
    }

    async fn delete_expired(&self, now: Timestamp) -> StoreResult<u64> {
        // Redis TTLs reclaim idle sessions by themselves; this also reclaims sessions dead by the
        // caller's clock and index entries, user by user.
        let mut deleted = 0;
        for u in self.list_users().await? {
            let uid = u.id.as_str();
            let flat: Vec<String> = self
                .scripts
                .sweep_user
                .key(index_key(uid))
                .arg(session_prefix(uid))
                .arg(now.as_millis())
                .invoke_async(&mut self.conn())
                .await
                .map_err(err)?;
            let gone = pairs(flat);
            deleted += gone.len() as u64;
            self.delete_hints(&gone).await?;
        }
        Ok(deleted)
    }
}

#[async_trait]
impl ApiKeyStore for RedisStore {
    async fn create_api_key(
        &self,
        name: &str,
        hash: &TokenHash,
        now: Timestamp,
    ) -> StoreResult<ApiKey> {
        let kh = hash.to_hex();
        let claimed: Option<String> = redis::cmd("SET")
            .arg(format!("cr:kn:{name}"))
            .arg(format!("{kh} {}", now.as_millis()))
            .arg("NX")
            .query_async(&mut self.conn())
            .await
            .map_err(err)?;
        if claimed.is_none() {
            return Err(StoreError::Conflict { what: "API key" });
        }
        self.each(vec![
            redis::cmd("SET").arg(format!("cr:k:{kh}")).arg(name).clone(),
            redis::cmd("ZADD").arg("cr:keys").arg(0).arg(name).clone(),
        ])
        .await?;
        Ok(ApiKey { name: name.to_owned(), created_at: now })
    }

    async fn api_key_by_hash(&self, hash: &TokenHash) -> StoreResult<Option<ApiKey>> {
        let name: Option<String> =
            self.conn().get(format!("cr:k:{}", hash.to_hex())).await.map_err(err)?;
        let Some(name) = name else { return Ok(None) };
        let record: Option<String> = self.conn().get(format!("cr:kn:{name}")).await.map_err(err)?;
        let Some(record) = record else { return Ok(None) };
        let (kh, created) = record.split_once(' ').ok_or(corrupt("API key"))?;
        if kh != hash.to_hex() {
            return Ok(None);
        }
        Ok(Some(ApiKey {
            name,
            created_at: Timestamp::from_millis(created.parse().map_err(|_| corrupt("API key"))?),
        }))
    }

    async fn list_api_keys(&self) -> StoreResult<Vec<ApiKey>> {
        let names: Vec<String> = self.conn().zrange("cr:keys", 0, -1).await.map_err(err)?;
        let mut out = Vec::new();
        for name in names {
            let record: Option<String> =
                self.conn().get(format!("cr:kn:{name}")).await.map_err(err)?;
            if let Some((_, created)) = record.as_deref().and_then(|r| r.split_once(' ')) {
                out.push(ApiKey {
                    name,
                    created_at: Timestamp::from_millis(created.parse().unwrap_or(0)),
                });
            }
        }
        Ok(out)
    }

    async fn revoke_api_key(&self, name: &str) -> StoreResult<bool> {
        let record: Option<String> = self.conn().get(format!("cr:kn:{name}")).await.map_err(err)?;
        let Some(record) = record else { return Ok(false) };
        let kh = record.split(' ').next().unwrap_or_default();
        self.each(vec![
            redis::cmd("DEL").arg(format!("cr:kn:{name}")).clone(),
            redis::cmd("DEL").arg(format!("cr:k:{kh}")).clone(),
            redis::cmd("ZREM").arg("cr:keys").arg(name).clone(),
        ])
        .await?;
        Ok(true)
    }
}

#[async_trait]
impl EventLogStore for RedisStore {
    async fn reserve_event(
        &self,
        key: &str,
        now: Timestamp,
        window: Duration,
        max: u32,
        enforce: bool,
    ) -> StoreResult<Reservation> {
        let mut unique = [0u8; 8];
        cloakroom_core::token::random_bytes(&mut unique).map_err(StoreError::unavailable)?;
        let member = format!("{}:{}", now.as_millis(), u64::from_le_bytes(unique));
        let (reserved, first): (i64, i64) = self
            .scripts
            .reserve_event
            .key(format!("cr:ev:{key}"))
            .arg(now.as_millis())
            .arg(u64::try_from(window.as_millis()).unwrap_or(u64::MAX))
            .arg(max)
            .arg(&member)
            .arg(if enforce { "1" } else { "0" })
            .invoke_async(&mut self.conn())
            .await
            .map_err(err)?;
        Ok(if reserved == 1 {
            Reservation::Reserved(EventId(member))
        } else {
            Reservation::Full(Timestamp::from_millis(first))
        })
    }

    async fn release_event(&self, key: &str, id: &EventId) -> StoreResult<()> {
        self.conn().zrem::<_, _, ()>(format!("cr:ev:{key}"), &id.0).await.map_err(err)
    }

    async fn event_log(
        &self,
        key: &str,
        now: Timestamp,
        window: Duration,
    ) -> StoreResult<Vec<Timestamp>> {
        let since = now.minus(window).as_millis();
        let scored: Vec<(String, i64)> = redis::cmd("ZRANGE")
            .arg(format!("cr:ev:{key}"))
            .arg(format!("({since}"))
            .arg("+inf")
            .arg("BYSCORE")
            .arg("WITHSCORES")
            .query_async(&mut self.conn())
            .await
            .map_err(err)?;
        Ok(scored.into_iter().map(|(_, at)| Timestamp::from_millis(at)).collect())
    }

    async fn forget_events(&self, key: &str) -> StoreResult<()> {
        self.conn().del::<_, ()>(format!("cr:ev:{key}")).await.map_err(err)
    }
}

#[async_trait]
impl GrantStore for RedisStore {
    async fn add_signing_key(
        &self,
        key: &SigningKeyRecord,
        retire_others_at: Option<Timestamp>,
    ) -> StoreResult<()> {
        let record = format!(
            "{}|{}|{}|{}|{}",
            key.created_at.as_millis(),
            key.active_from.as_millis(),
            key.retired_at.map_or_else(|| "-".to_owned(), |t| t.as_millis().to_string()),
            key.public,
            key.sealed
        );
        let _: i64 = self
            .scripts
            .add_signing_key
            .key(SIGNING_KEYS)
            .arg(&key.id)
            .arg(record)
            .arg(retire_others_at.map_or_else(String::new, |t| t.as_millis().to_string()))
            .invoke_async(&mut self.conn())
            .await
            .map_err(|e| script_error(e, "signing key"))?;
        Ok(())
    }

    async fn signing_keys(&self) -> StoreResult<Vec<SigningKeyRecord>> {
        let all: HashMap<String, String> = self.conn().hgetall(SIGNING_KEYS).await.map_err(err)?;
        let mut keys = all
            .into_iter()
            .map(|(id, v)| {
                let mut parts = v.splitn(5, '|');
                let mut next = || parts.next().ok_or(corrupt("signing key"));
                let ms = |s: &str| s.parse::<i64>().map_err(|_| corrupt("signing key"));
                let created_at = Timestamp::from_millis(ms(next()?)?);
                let active_from = Timestamp::from_millis(ms(next()?)?);
                let retired_at = match next()? {
                    "-" => None,
                    t => Some(Timestamp::from_millis(ms(t)?)),
                };
                Ok(SigningKeyRecord {
                    id,
                    created_at,
                    active_from,
                    retired_at,
                    public: next()?.to_owned(),
                    sealed: next()?.to_owned(),
                })
            })
            .collect::<StoreResult<Vec<_>>>()?;
        keys.sort_by(|a, b| (a.created_at, &a.id).cmp(&(b.created_at, &b.id)));
        Ok(keys)
    }

    async fn redeem_grant(&self, grant: &GrantUse, now: Timestamp) -> StoreResult<Redemption> {
        let ticket = self.ticket();
        let outcome: String = self
            .scripts
            .redeem_grant
            .key(grant_used_key(&grant.id))
            .key(grant_revoked_key(&grant.id))
            .arg(grant.expires_at.as_millis())
            .invoke_async(&mut self.conn())
            .await
            .map_err(err)?;
        match outcome.as_str() {
            "used" => return Ok(Redemption::AlreadyUsed),
            "revoked" => return Ok(Redemption::Revoked),
            _ => {}
        }
        // The user-wide revocation lives in the user's slot. Checked after the use was recorded:
        // a grant revoked here stays used up, and a revocation that lands between the two steps is
        // ordered after this redemption.
        let revoked_at: Option<i64> =
            self.conn().get(user_grants_revoked_key(grant.user.as_str())).await.map_err(err)?;
        if revoked_at.is_some_and(|at| at >= grant.issued_at.as_millis()) {
            return Ok(Redemption::Revoked);
        }
        // Used once means used once after a failover too.
        self.replicated(ticket, &grant_used_key(&grant.id)).await?;
        self.log_revocation(&GrantRevocation::grant(&grant.id, now, grant.expires_at)).await?;
        Ok(Redemption::Redeemed)
    }

    async fn revoke_grants(&self, r: &GrantRevocation) -> StoreResult<()> {
        let ticket = self.ticket();
        let written = match &r.subject {
            Revoked::Grant(id) => {
                let _: () = redis::cmd("SET")
                    .arg(grant_revoked_key(id))
                    .arg("1")
                    .arg("PXAT")
                    .arg(r.until.as_millis())
                    .query_async(&mut self.conn())
                    .await
                    .map_err(err)?;
                grant_revoked_key(id)
            }
            Revoked::User(uid) => {
                let _: i64 = self
                    .scripts
                    .revoke_user_grants
                    .key(user_grants_revoked_key(uid.as_str()))
                    .arg(r.at.as_millis())
                    .arg(r.until.as_millis())
                    .invoke_async(&mut self.conn())
                    .await
                    .map_err(err)?;
                user_grants_revoked_key(uid.as_str())
            }
        };
        self.replicated(ticket, &written).await?;
        self.log_revocation(r).await
    }

    async fn grant_revocations(
        &self,
        since: Timestamp,
        now: Timestamp,
    ) -> StoreResult<Vec<GrantRevocation>> {
        let members: Vec<String> = self
            .conn()
            .zrangebyscore(GRANT_REVOCATIONS, since.as_millis(), "+inf")
            .await
            .map_err(err)?;
        let mut out = Vec::with_capacity(members.len());
        for m in members {
            let mut parts = m.splitn(4, '|');
            let (Some(kind), Some(subject), Some(at), Some(until)) =
                (parts.next(), parts.next(), parts.next(), parts.next())
            else {
                return Err(corrupt("grant revocation"));
            };
            let ms = |s: &str| {
                s.parse::<i64>()
                    .map(Timestamp::from_millis)
                    .map_err(|_| corrupt("grant revocation"))
            };
            let subject = codec::revoked(kind, subject.to_owned())?;
            let r = GrantRevocation { subject, at: ms(at)?, until: ms(until)? };
            if r.until > now {
                out.push(r);
            }
        }
        Ok(out)
    }
}

#[async_trait]
impl AuditStore for RedisStore {
    async fn append_audit(&self, e: &AuditEvent) -> StoreResult<()> {
        let id = cloakroom_core::id::AuditId::generate().map_err(StoreError::unavailable)?;
        self.add_audit(&cloakroom_core::export::Audit::new(id.as_str().to_owned(), e)).await?;
        Ok(())
    }

    async fn list_audit(&self, filter: &AuditFilter) -> StoreResult<Vec<AuditEvent>> {
        let limit = filter.limit_or_default();
        let stream = match &filter.username {
            Some(u) => format!("cr:audit:n:{}", u.as_str()),
            None => "cr:audit".to_owned(),
        };
        let reply: redis::streams::StreamRangeReply =
            self.conn().xrevrange_count(&stream, "+", "-", limit).await.map_err(err)?;
        reply
            .ids
            .into_iter()
            .map(|entry| {
                let get = |k: &str| entry.get::<String>(k);
                let kind = codec::audit_kind(&get("kind").ok_or(corrupt("audit event"))?)?;
                Ok(AuditEvent {
                    at: Timestamp::from_millis(get("at").and_then(|a| a.parse().ok()).unwrap_or(0)),
                    kind,
                    actor: get("actor").unwrap_or_default(),
                    user_id: get("uid").map(UserId::from_stored),
                    username: get("username").map(Username::from_stored),
                    session_id: get("sid").map(SessionId::from_stored),
                    ip: get("ip"),
                    detail: get("detail"),
                })
            })
            .collect()
    }
}

#[async_trait]
impl ChangeFeed for RedisStore {
    async fn subscribe(&self) -> StoreResult<mpsc::Receiver<BusEvent>> {
        let (tx, rx) = mpsc::channel(1024);
        let nodes = self.bus_nodes.clone();
        let sequenced = !matches!(self.conn, Conn::Cluster(_));
        let mut conn = self.conn();
        tokio::spawn(async move {
            let mut connected = false;
            let mut next = 0usize;
            loop {
                // Try the nodes in turn: in a Cluster any node hears every PUBLISH. Under
                // Sentinel, the primary as they see it now (after a failover, the new one).
                let client = match (&conn, nodes.get(next % nodes.len().max(1))) {
                    (Conn::Sentinel(f), _) => f.primary().await.ok(),
                    (_, node) => node.cloned(),
                };
                next += 1;
                let pubsub = match client {
                    // Bounded: a server that accepts the connection and then says nothing must
                    // not hold the subscriber (and with it the recovery) forever.
                    Some(c) => tokio::time::timeout(BUS_TIMEOUT, async move {
                        let mut p = c.get_async_pubsub().await.ok()?;
                        p.subscribe(BUS).await.ok().map(|()| p)
                    })
                    .await
                    .ok()
                    .flatten(),
                    None => None,
                };
                // The change number at subscription: announcements after it must follow on
                // without a gap. (Ones up to it may still arrive; the flush covers them.)
                let baseline = match (&pubsub, sequenced) {
                    (None, _) => None,
                    (Some(_), false) => Some(Sequence::Unsequenced),
                    (Some(_), true) => redis::cmd("GET")
                        .arg(BUS_SEQ)
                        .query_async::<Option<u64>>(&mut conn)
                        .await
                        .ok()
                        .map(|seq| Sequence::Last(seq.unwrap_or(0))),
                };
                if let (Some(pubsub), Some(mut sequence)) = (pubsub, baseline) {
                    connected = true;
                    if tx.send(BusEvent::Connected).await.is_err() {
                        return;
                    }
                    // A heartbeat: a subscription whose server stops answering (a primary that
                    // vanished without closing TCP) is as lost as a closed one, and a gap in
                    // the change numbers would never show without a next message.
                    let (mut sink, mut messages) = pubsub.split();
                    let mut beat = tokio::time::interval(BUS_HEARTBEAT);
                    beat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                    beat.tick().await;
                    loop {
                        let msg = tokio::select! {
                            msg = messages.next() => match msg {
                                Some(msg) => msg,
                                None => break,
                            },
                            _ = beat.tick() => {
                                // Any reply: a subscribed RESP2 connection answers PING with
                                // the array ["pong", ""], not the string PONG.
                                let ping =
                                    tokio::time::timeout(BUS_TIMEOUT, sink.ping::<redis::Value>());
                                if matches!(ping.await, Ok(Ok(_))) {
                                    continue;
                                }
                                tracing::warn!("the invalidation subscription stopped answering");
                                break;
                            }
                        };
                        let Ok(payload) = msg.get_payload::<String>() else { continue };
                        let Some(message) = Announcement::parse(&payload) else {
                            tracing::warn!("ignored a malformed bus message");
                            continue;
                        };
                        let event = BusEvent::Invalidate { user: message.user, at: message.at };
                        if tx.send(event).await.is_err() {
                            return;
                        }
                        if sequence.follow(message.seq) {
                            continue;
                        }
                        // A change number was skipped: an announcement was lost. Stop trusting
                        // the cache until it has been flushed, as after a lost connection.
                        tracing::error!("a session invalidation was missed; flushing the cache");
                        if tx.send(BusEvent::Disconnected).await.is_err()
                            || tx.send(BusEvent::Connected).await.is_err()
                        {
                            return;
                        }
                    }
                    tracing::warn!("redis invalidation subscription lost");
                }

                if connected || tx.is_closed() {
                    connected = false;
                    if tx.send(BusEvent::Disconnected).await.is_err() {
                        return;
                    }
                }
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
        });
        Ok(rx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn min_replicas_is_taken_out_of_the_url_and_checked() {
        let split = |u: &str| split_min_replicas(u);
        assert_eq!(split("redis://h:6379/0").unwrap(), ("redis://h:6379/0".into(), 0));
        assert_eq!(split("redis://h/?min_replicas=2").unwrap(), ("redis://h/".into(), 2));
        assert_eq!(
            split("redis+sentinel://s1,s2/main?protocol=resp3&min_replicas=1").unwrap(),
            ("redis+sentinel://s1,s2/main?protocol=resp3".into(), 1)
        );
        for bad in
            ["redis://h/?min_replicas=", "redis://h/?min_replicas=-1", "redis://h/?min_replicas=17"]
        {
            let e = split(bad).unwrap_err();
            assert!(e.contains("min_replicas"), "{e}");
            assert!(check_url(bad).is_err());
        }
    }

    #[test]
    fn announcements_parse_with_and_without_a_change_number() {
        let a = Announcement::parse("usr_1 1700000000000 42").unwrap();
        assert_eq!(a.user, Some(UserId::from_stored("usr_1".into())));
        assert_eq!((a.at, a.seq), (Timestamp::from_millis(1_700_000_000_000), Some(42)));
        assert_eq!(Announcement::parse("usr_1 5 ").unwrap().seq, None, "a Cluster's");
        assert_eq!(Announcement::parse("usr_1 5").unwrap().seq, None, "an older node's");
        assert_eq!(Announcement::parse("* 5 7").unwrap().user, None);
        for bad in ["", " 5 1", "usr_1", "usr_1 soon 1", "usr_1 5 x"] {
            assert_eq!(Announcement::parse(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn a_skipped_change_number_is_a_gap() {
        let mut seq = Sequence::Last(10);
        assert!(seq.follow(Some(9)), "from before the subscription");
        assert!(seq.follow(Some(10)));
        assert!(seq.follow(Some(11)));
        assert!(seq.follow(None), "unnumbered");
        assert!(!seq.follow(Some(13)), "12 was lost");
        assert!(seq.follow(Some(14)), "and the count goes on from there");
        let mut cluster = Sequence::Unsequenced;
        assert!(cluster.follow(Some(3)) && cluster.follow(None));
    }
}
