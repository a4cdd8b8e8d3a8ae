//! `redis+sentinel://[user:pass@]host:port[,host:port…]/MASTER_NAME`: a primary that Sentinels
//! watch and replace. [`Failover`] is the one connection the store shares; it asks the Sentinels
//! where the primary is, checks that the node it reaches says it is the primary (`ROLE`), and
//! asks again whenever the connection fails or a node answers `READONLY` (a demoted primary), so
//! it follows a failover by itself.
//!
//! The credentials are the data nodes'. Sentinels are asked with the same credentials and, when
//! that fails (a Sentinel without a password refuses `AUTH`), without any.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use cloakroom_core::StoreError;
use cloakroom_core::store::StoreResult;
use redis::aio::{ConnectionLike, MultiplexedConnection};
use redis::{AsyncConnectionConfig, Client, ErrorKind, RedisError, ServerErrorKind};

/// Where the Sentinels are and what they watch.
#[derive(Clone)]
struct Target {
    /// `user:pass@` or empty.
    auth: String,
    sentinels: Vec<String>,
    master: String,
    timeout: Duration,
}

/// A connection to whichever node the Sentinels call the primary.
#[derive(Clone)]
pub(crate) struct Failover {
    inner: Arc<Inner>,
}

struct Inner {
    target: Target,
    /// The live connection and its generation (bumped at every reconnect).
    current: std::sync::Mutex<Option<(MultiplexedConnection, u64)>>,
    /// One reconnect at a time: the others wait for it and share its connection.
    connecting: tokio::sync::Mutex<()>,
    generation: AtomicU64,
}

impl Failover {
    /// Parses the URL and connects to the primary it names now.
    pub(crate) async fn connect(url: &str, timeout: Duration) -> StoreResult<Self> {
        let rest = url.strip_prefix("redis+sentinel://").ok_or_else(|| bad(url, "scheme"))?;
        let (auth, rest) = match rest.rsplit_once('@') {
            Some((auth, rest)) => (format!("{auth}@"), rest),
            None => (String::new(), rest),
        };
        let (hosts, master) = rest.split_once('/').ok_or_else(|| bad(url, "master name"))?;
        let master = master.trim_end_matches('/');
        let sentinels: Vec<String> =
            hosts.split(',').filter(|h| !h.is_empty()).map(str::to_owned).collect();
        if sentinels.is_empty() {
            return Err(bad(url, "Sentinel"));
        }
        if master.is_empty() || master.contains('/') {
            return Err(bad(url, "master name"));
        }
        let target = Target { auth, sentinels, master: master.to_owned(), timeout };
        let failover = Failover {
            inner: Arc::new(Inner {
                target,
                current: std::sync::Mutex::new(None),
                connecting: tokio::sync::Mutex::new(()),
                generation: AtomicU64::new(0),
            }),
        };
        failover.connection().await.map_err(StoreError::unavailable)?;
        Ok(failover)
    }

    /// A client for the primary as the Sentinels see it now, checked with `ROLE`: where the bus
    /// subscribes.
    pub(crate) async fn primary(&self) -> Result<Client, RedisError> {
        self.inner.target.primary().await
    }

    /// The generation of the connection commands go out on now (0: none yet). A write and a
    /// `WAIT` prove something together only on one connection: `WAIT` counts the writes of the
    /// client that sends it.
    pub(crate) fn generation(&self) -> u64 {
        self.inner.current.lock().map_or(0, |c| c.as_ref().map_or(0, |(_, g)| *g))
    }

    /// The live connection, reconnecting (to wherever the primary is now) when there is none.
    async fn connection(&self) -> Result<(MultiplexedConnection, u64), RedisError> {
        if let Some(live) = self.live() {
            return Ok(live);
        }
        let _one = self.inner.connecting.lock().await;
        if let Some(live) = self.live() {
            return Ok(live);
        }
        let client = self.inner.target.primary().await?;
        let t = self.inner.target.timeout;
        let config = AsyncConnectionConfig::new()
            .set_connection_timeout(Some(t))
            .set_response_timeout(Some(t));
        let conn = client.get_multiplexed_async_connection_with_config(&config).await?;
        let generation = self.inner.generation.fetch_add(1, Ordering::Relaxed) + 1;
        if let Ok(mut current) = self.inner.current.lock() {
            *current = Some((conn.clone(), generation));
        }
        Ok((conn, generation))
    }

    fn live(&self) -> Option<(MultiplexedConnection, u64)> {
        self.inner.current.lock().ok().and_then(|c| c.clone())
    }

    /// Drops connection `generation` (if still current) so the next command finds the primary.
    fn forget(&self, generation: u64) {
        if let Ok(mut current) = self.inner.current.lock() {
            if current.as_ref().is_some_and(|(_, g)| *g == generation) {
                *current = None;
            }
        }
    }

    async fn run(&self, req: Request<'_>) -> Result<Reply, RedisError> {
        let (mut conn, generation) = self.connection().await?;
        match req.send(&mut conn).await {
            Err(e) if is_read_only(&e) => {
                // A demoted primary: nothing was written. Find the new one and try once more.
                self.forget(generation);
                let (mut conn, generation) = self.connection().await?;
                let result = req.send(&mut conn).await;
                if result.as_ref().is_err_and(is_lost) {
                    self.forget(generation);
                }
                result
            }
            Err(e) if is_lost(&e) => {
                self.forget(generation);
                Err(e)
            }
            other => other,
        }
    }
}

/// A command or a pipeline, as [`ConnectionLike`] sends them.
#[derive(Clone, Copy)]
enum Request<'a> {
    One(&'a redis::Cmd),
    Many(&'a redis::Pipeline, usize, usize),
}

enum Reply {
    One(redis::Value),
    Many(Vec<redis::Value>),
}

impl Request<'_> {
    async fn send(self, conn: &mut MultiplexedConnection) -> Result<Reply, RedisError> {
        match self {
            Request::One(cmd) => conn.req_packed_command(cmd).await.map(Reply::One),
            Request::Many(p, offset, count) => {
                conn.req_packed_commands(p, offset, count).await.map(Reply::Many)
            }
        }
    }
}

fn mismatch() -> RedisError {
    RedisError::from((ErrorKind::Client, "a reply of the wrong shape"))
}

fn is_read_only(e: &RedisError) -> bool {
    matches!(e.kind(), ErrorKind::Server(ServerErrorKind::ReadOnly))
        || e.to_string().contains("READONLY")
}

/// The connection is gone or the node no longer serves: ask the Sentinels again.
fn is_lost(e: &RedisError) -> bool {
    e.is_io_error()
        || e.is_timeout()
        || e.is_connection_dropped()
        || e.is_connection_refusal()
        || is_read_only(e)
}

fn bad(url: &str, what: &str) -> StoreError {
    StoreError::unavailable(format!(
        "bad {what} in the Sentinel URL {} (expected redis+sentinel://[user:pass@]host:port[,host:port…]/MASTER_NAME)",
        crate::redact(url)
    ))
}

impl Target {
    /// Asks each Sentinel in turn for the primary's address, and checks that the node there
    /// says it is a primary (a Sentinel may lag behind a failover).
    async fn primary(&self) -> Result<Client, RedisError> {
        let mut last = RedisError::from((ErrorKind::Io, "no Sentinel answered"));
        for sentinel in &self.sentinels {
            match self.ask(sentinel).await {
                Ok(Some((host, port))) => match self.check(&host, port).await {
                    Ok(client) => return Ok(client),
                    Err(e) => last = e,
                },
                Ok(None) => {
                    last = RedisError::from((
                        ErrorKind::Io,
                        "a Sentinel does not know the master name",
                    ));
                }
                Err(e) => last = e,
            }
        }
        Err(last)
    }

    async fn ask(&self, sentinel: &str) -> Result<Option<(String, u16)>, RedisError> {
        let mut cmd = redis::cmd("SENTINEL");
        cmd.arg("get-master-addr-by-name").arg(&self.master);
        let with = format!("redis://{}{sentinel}/", self.auth);
        match self.query::<Option<(String, u16)>>(&with, &cmd).await {
            Err(_) if !self.auth.is_empty() => {
                self.query(&format!("redis://{sentinel}/"), &cmd).await
            }
            answer => answer,
        }
    }

    async fn check(&self, host: &str, port: u16) -> Result<Client, RedisError> {
        let client = Client::open(format!("redis://{}{host}:{port}/", self.auth))?;
        let role: redis::Role = self.query_on(&client, &redis::cmd("ROLE")).await?;
        match role {
            redis::Role::Primary { .. } => Ok(client),
            _ => Err(RedisError::from((
                ErrorKind::Io,
                "the node the Sentinels named is not a primary",
            ))),
        }
    }

    async fn query<T: redis::FromRedisValue>(
        &self,
        url: &str,
        cmd: &redis::Cmd,
    ) -> Result<T, RedisError> {
        self.query_on(&Client::open(url)?, cmd).await
    }

    async fn query_on<T: redis::FromRedisValue>(
        &self,
        client: &Client,
        cmd: &redis::Cmd,
    ) -> Result<T, RedisError> {
        let config = AsyncConnectionConfig::new()
            .set_connection_timeout(Some(self.timeout))
            .set_response_timeout(Some(self.timeout));
        let mut conn = client.get_multiplexed_async_connection_with_config(&config).await?;
        cmd.query_async(&mut conn).await
    }
}

impl ConnectionLike for Failover {
    fn req_packed_command<'a>(
        &'a mut self,
        cmd: &'a redis::Cmd,
    ) -> redis::RedisFuture<'a, redis::Value> {
        Box::pin(async move {
            match self.run(Request::One(cmd)).await? {
                Reply::One(v) => Ok(v),
                Reply::Many(_) => Err(mismatch()),
            }
        })
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        cmd: &'a redis::Pipeline,
        offset: usize,
        count: usize,
    ) -> redis::RedisFuture<'a, Vec<redis::Value>> {
        Box::pin(async move {
            match self.run(Request::Many(cmd, offset, count)).await? {
                Reply::Many(v) => Ok(v),
                Reply::One(_) => Err(mismatch()),
            }
        })
    }

    fn get_db(&self) -> i64 {
        0
    }
}
