//! `cloakroom serve`: opens the store, builds the state, serves HTTP until SIGINT/SIGTERM, and
//! sweeps expired sessions in the background.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use cloakroom_core::cache::{CacheConfig, SessionCache};
use cloakroom_core::manager::ManagerConfig;
use cloakroom_core::password::{Cost, PasswordHasher};
use cloakroom_core::session::ExpiryPolicy;
use cloakroom_core::{SessionManager, Store, Timestamp};

use hyper::body::Incoming;

use crate::config::Config;
use crate::state::AppState;
use crate::throttle::{Limits, Throttle};

/// How to open a store.
#[derive(Clone, Copy, Debug)]
pub struct Open {
    /// Create the embedded store's file when it is missing (`serve`, and `--create`). Other
    /// commands refuse a missing file: run from the wrong directory, they would otherwise
    /// write users and keys into a new empty store that no server reads.
    pub create: bool,
}

/// Opens the store a URL names.
pub async fn open_store(
    url: &str,
    ca_pem: Option<&[u8]>,
    open: Open,
) -> anyhow::Result<Arc<dyn Store>> {
    open_store_with(url, ca_pem, None, open).await
}

/// Opens the store a URL names; a PostgreSQL store's change listener connects to `listen` when
/// given (`store_listen`).
pub async fn open_store_with(
    url: &str,
    ca_pem: Option<&[u8]>,
    listen: Option<&str>,
    open: Open,
) -> anyhow::Result<Arc<dyn Store>> {
    let Some(backend) = crate::stores::backend_for(url) else {
        anyhow::bail!("unsupported store URL: {}", crate::stores::redact(url))
    };
    let target = crate::stores::Target {
        url: url.to_owned(),
        ca_pem: ca_pem.map(<[u8]>::to_vec),
        listen: listen.map(str::to_owned),
        create: open.create,
    };
    crate::stores::open(backend, target).await
}

/// The session manager the configuration describes, with Argon2id at the ASVS cost.
pub fn manager(store: Arc<dyn Store>, config: &Config, cost: Cost) -> SessionManager {
    let _ = crate::metrics::handle(); // the recorder first: the manager registers its counters
    let hasher = PasswordHasher::with_niceness(
        cost,
        config.login_concurrency,
        config.password_pepper.clone(),
        config.login_niceness,
    );
    let expiry = ExpiryPolicy {
        idle: config.idle_timeout,
        absolute: config.absolute_timeout,
        ..ExpiryPolicy::default()
    };
    SessionManager::new(
        store,
        hasher,
        ManagerConfig { expiry, max_sessions_per_user: config.max_sessions_per_user },
    )
}

/// Builds the application state for `config` over `store`, without a cache: every check reads
/// the store. (What tests that count store reads, and the CLI, want.)
pub fn state(store: Arc<dyn Store>, config: Config, cost: Cost) -> AppState {
    let throttle = Throttle::new(Arc::clone(&store), Limits::default());
    let grants = grants_or_off(&store, &config);
    let manager = manager(store, &config, cost);
    AppState::new(manager, config, throttle, crate::metrics::handle(), grants)
}

/// Grants for an uncached state (tests, the CLI): a failure turns grants off, with an error in
/// the log. [`run`] builds them itself and refuses to start on a failure.
fn grants_or_off(store: &Arc<dyn Store>, config: &Config) -> Option<Arc<crate::grants::Grants>> {
    crate::grants::grants(store, config).unwrap_or_else(|e| {
        tracing::error!(error = format!("{e:#}"), "grants are off");
        None
    })
}

/// Builds the application state with the node-local session cache, and spawns the task that
/// feeds the store's invalidation bus into it. The cache serves nothing until the bus is up.
pub fn cached_state(
    store: Arc<dyn Store>,
    config: Config,
    cost: Cost,
    grants: Option<Arc<crate::grants::Grants>>,
) -> AppState {
    let cache = Arc::new(SessionCache::new(CacheConfig::default()));
    let throttle = Throttle::new(Arc::clone(&store), Limits::default());
    let manager = manager(store, &config, cost).with_cache(cache);
    manager.spawn_invalidations();
    AppState::new(manager, config, throttle, crate::metrics::handle(), grants)
}

/// Runs the server.
pub async fn run(mut config: Config) -> anyhow::Result<()> {
    let store = open_store_with(
        &config.store,
        config.store_ca.as_deref(),
        config.store_listen.as_deref(),
        Open { create: true },
    )
    .await?;
    let store: Arc<dyn Store> = Arc::new(crate::metered::MeteredStore::new(store));
    // A grant_key that does not open the stored signing keys is a start-up error, not a
    // surprise at the first grant.
    let grants = crate::grants::grants(&store, &config)?;
    if let Some(grants) = &grants {
        grants.issuer.ensure_key(Timestamp::now()).await.context("grant-signing keys")?;
    }
    let listen = config.listen;
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .with_context(|| format!("listening on {listen}"))?;
    let bound = listener.local_addr()?;
    config.bound_to(bound);
    // Every connection costs a file descriptor: take what the hard limit allows, and stay below
    // it, so a flood meets Cloakroom's caps and not "Too many open files".
    let open_files = crate::limits::raise_open_file_limit();
    config.max_connections = crate::limits::connection_cap(config.max_connections, open_files);
    let limits = ServeLimits {
        header_timeout: config.header_timeout,
        body_timeout: config.body_timeout,
        connections: config.max_connections,
    };
    tracing::info!(
        max_connections = limits.connections,
        open_files = open_files.unwrap_or(0),
        "connection limits"
    );
    let state = cached_state(Arc::clone(&store), config, Cost::ASVS, grants);
    if store.needs_sweep() {
        tokio::spawn(sweep(Arc::clone(&store)));
    }
    tokio::spawn(count_sessions(Arc::clone(&store)));
    tracing::info!(listen = %bound, store = state.service.store_kind(), "cloakroom listening");
    // A plain line on stdout too, for scripts and tests that start the binary on port 0.
    say(&format!("cloakroom listening on http://{bound}"));
    // First start on an empty store: a one-time link to create the first administrator. No
    // default account or password exists anywhere.
    if store.list_users().await.map(|u| u.is_empty()).unwrap_or(false) {
        let token = state.arm_setup()?;
        let minutes = cloakroom_service::SETUP_VALID_FOR.as_secs() / 60;
        // Browsers keep `Secure` cookies over plain HTTP for `localhost` only.
        let origin = if state.config.origin_from_listen && bound.ip().is_loopback() {
            format!("http://localhost:{}", bound.port())
        } else {
            state.config.public_origin.clone()
        };
        let url = format!("{origin}{}/setup?token={token}", state.config.base_path);
        say(&format!(
            "cloakroom setup: create the first administrator at {url} (valid {minutes} minutes, once)"
        ));
        // In JSON logs the link is a field too, for platforms where only the log is at hand
        // (it works once, for 15 minutes, while no user exists). Text logs leave it out.
        match state.config.log_format {
            crate::config::LogFormat::Json => tracing::warn!(
                setup_url = %url,
                "no user yet: a one-time setup link was printed on standard output"
            ),
            crate::config::LogFormat::Text => {
                tracing::warn!("no user yet: a one-time setup link was printed on standard output")
            }
        }
    }
    if let Some(addr) = state.config.metrics_listen {
        let metrics = tokio::net::TcpListener::bind(addr)
            .await
            .with_context(|| format!("binding metrics_listen {addr}"))?;
        let bound = metrics.local_addr()?;
        let app = axum::Router::new()
            .route("/metrics", axum::routing::get(crate::routes::health::metrics))
            .with_state(state.clone());
        tokio::spawn(async move {
            if let Err(e) = axum::serve(metrics, app).await {
                tracing::error!(error = %e, "the metrics listener stopped");
            }
        });
        tracing::info!(listen = %bound, "metrics listening (/metrics is served only there)");
    }
    serve_http(listener, state, limits, shutdown()).await;
    tracing::info!("cloakroom stopped");
    Ok(())
}

/// A line on standard output. A closed stdout (a supervisor that read the first line and went
/// away) must never take the server down, so errors are ignored, where `println!` would panic.
fn say(line: &str) {
    use std::io::Write as _;
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{line}");
    let _ = out.flush();
}

/// What [`serve_http`] lets clients hold.
#[derive(Clone, Copy, Debug)]
pub struct ServeLimits {
    /// A request's headers must arrive within this, or the connection is closed.
    pub header_timeout: Duration,
    /// A request's body must arrive within this, or the request fails.
    pub body_timeout: Duration,
    /// Most connections open at once; further clients wait in the listen queue.
    pub connections: usize,
}

/// Serves HTTP/1.1 until `stop` resolves, then lets open requests finish (up to 10 seconds).
/// Unlike `axum::serve`, every way a client can hold the server is bounded ([`crate::limits`]):
/// headers must arrive within `header_timeout` (slowloris), a body within `body_timeout` and
/// only while a slot of the node's share for bodies is free (others get 503 `server_busy` at
/// once, without the body being read), connections up to `connections`.
///
/// `GET`/`HEAD /v1/auth/check` is answered before the router: it sits in front of every request
/// of every app behind a forward-auth proxy, and the router's generic machinery (route matching,
/// request extensions, boxed futures, the per-request layer) cost a tenth of its throughput. The
/// fast path is the application's own ([`crate::app::App::check`]), which the tests drive too.
async fn serve_http(
    listener: tokio::net::TcpListener,
    state: AppState,
    limits: ServeLimits,
    stop: impl std::future::Future<Output = ()>,
) {
    use hyper_util::rt::{TokioIo, TokioTimer};
    use tokio::sync::Semaphore;
    use tower::ServiceExt as _;

    let app = crate::app::app(state.clone());
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    let mut stop = std::pin::pin!(stop);
    let connections = Arc::new(Semaphore::new(limits.connections.max(1)));
    let bodies = Arc::new(crate::limits::Slots::for_bodies(limits.connections));
    loop {
        // A free connection slot first: at the cap, new clients wait in the kernel's listen
        // queue instead of taking descriptors the open connections need.
        let slot = tokio::select! {
            slot = Arc::clone(&connections).acquire_owned() => match slot {
                Ok(slot) => slot,
                Err(_) => break,
            },
            () = &mut stop => break,
        };
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    // Out of file descriptors and the like: pause instead of spinning.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = &mut stop => break,
        };
        let both = Arc::new((app.clone(), Arc::clone(&bodies), Arc::clone(&connections)));
        let cap = limits.connections;
        let body_timeout = limits.body_timeout;
        let service = hyper::service::service_fn(move |req: hyper::Request<Incoming>| {
            let both = Arc::clone(&both);
            async move {
                let (app, bodies, connections) = &*both;
                let state = app.state();
                if app.is_check(req.method(), req.uri().path()) {
                    let (parts, _) = req.into_parts();
                    let response = app.check(&parts).await;
                    return Ok(shed_when_full(response, connections, cap));
                }
                let mut req = if !crate::limits::has_body(&req) {
                    req.map(axum::body::Body::new)
                } else {
                    // A trusted proxy speaks for many clients: it gets the total, not one share.
                    let slot = if state.config.trusted_proxies.contains(peer.ip()) {
                        bodies.take_shared()
                    } else {
                        bodies.take(Some(peer.ip()))
                    };
                    let Some(slot) = slot else {
                        return Ok(too_many_bodies(&state.config));
                    };
                    req.map(|body| {
                        axum::body::Body::new(crate::limits::DeadlineBody::new(
                            body,
                            body_timeout,
                            slot,
                        ))
                    })
                };
                req.extensions_mut().insert(axum::extract::ConnectInfo(peer));
                let response = app.router().clone().oneshot(req).await?;
                Ok::<_, std::convert::Infallible>(shed_when_full(response, connections, cap))
            }
        });
        let connection = hyper::server::conn::http1::Builder::new()
            .timer(TokioTimer::new())
            .header_read_timeout(limits.header_timeout)
            .keep_alive(true)
            .serve_connection(TokioIo::new(stream), service);
        let connection = graceful.watch(connection);
        tokio::spawn(async move {
            if let Err(e) = connection.await {
                tracing::debug!(error = %e, "connection ended with an error");
            }
            drop(slot);
        });
    }
    drop(listener);
    if tokio::time::timeout(Duration::from_secs(10), graceful.shutdown()).await.is_err() {
        tracing::warn!("requests still open 10 s after shutdown began; stopping anyway");
    }
}

/// The answer when the node's share for request bodies is taken: 503 at once, without reading
/// the body, and the connection closed (its unread body cannot be skipped).
fn too_many_bodies(config: &Config) -> axum::response::Response {
    use axum::response::IntoResponse as _;
    let mut r = crate::error::ApiError::server_busy(
        "too many requests are sending a body; try again shortly",
        Duration::from_secs(1),
    )
    .into_response();
    crate::routes::harden(r.headers_mut(), config);
    r
}

/// Under pressure (less than an eighth of the connection slots free), a response closes its
/// connection instead of keeping it alive: idle keep-alive connections give their slots back
/// to clients that are waiting, and nothing else changes for the client.
fn shed_when_full(
    mut response: axum::response::Response,
    connections: &tokio::sync::Semaphore,
    cap: usize,
) -> axum::response::Response {
    if connections.available_permits() < cap / 8 {
        response
            .headers_mut()
            .insert(axum::http::header::CONNECTION, axum::http::HeaderValue::from_static("close"));
    }
    response
}

/// Deletes expired sessions once a minute. Expiry is enforced on every check regardless; this
/// only keeps the store small.
async fn sweep(store: Arc<dyn Store>) {
    let mut tick = tokio::time::interval(Duration::from_secs(60));
    loop {
        tick.tick().await;
        match store.delete_expired(Timestamp::now()).await {
            Ok(0) => {}
            Ok(n) => {
                metrics::counter!("cloakroom_expired_sessions_swept_total").increment(n);
                tracing::debug!(count = n, "swept expired sessions");
            }
            Err(e) => tracing::warn!(error = %e, "expired-session sweep failed"),
        }
    }
}

/// Sets the live-sessions gauge every 15 seconds, on stores that count cheaply.
async fn count_sessions(store: Arc<dyn Store>) {
    let mut tick = tokio::time::interval(Duration::from_secs(15));
    loop {
        tick.tick().await;
        match store.count_sessions(Timestamp::now()).await {
            #[allow(clippy::cast_precision_loss)]
            Ok(Some(n)) => metrics::gauge!("cloakroom_sessions_active").set(n as f64),
            Ok(None) => return,
            Err(e) => tracing::debug!(error = %e, "counting live sessions failed"),
        }
    }
}

async fn shutdown() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! { () = ctrl_c => {}, () = term => {} }
}
