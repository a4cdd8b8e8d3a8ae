//! Benchmarks of the session check without any cache (every check reads the store) and of login.
//!
//! `cargo bench -p cloakroom-server --bench check`. Numbers and how to read them are in
//! docs/benchmarks.md. Groups:
//! - `check/manager`: `SessionManager::authenticate` (token parse, SHA-256, SQLite lookup by hash),
//!   with 1 and with 20,000 live sessions in the table.
//! - `check_postgres/manager`, `check_postgres/router/auth_check`: the same on a private
//!   PostgreSQL started by the bench (over TCP on 127.0.0.1, the pool's defaults).
//! - `check/router`: the whole `GET /v1/auth/check` through the axum router (cookie parsing,
//!   headers), beside `GET /healthz` through the same router as the floor, and the same check on
//!   a server with its node-local cache (a hit).
//! - `login`: `POST /v1/login` with Argon2id at the ASVS cost (m=19 MiB, t=2, p=1).
#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;

use axum::body::Body;
use axum::http::{Request, header};
use cloakroom_core::password::{Cost, Password};
use cloakroom_core::{SessionManager, Username};
use cloakroom_server::config::RawConfig;
use cloakroom_store_postgres::PgStore;
use cloakroom_store_postgres::testing::PgServer;
use cloakroom_store_sqlite::SqliteStore;
use criterion::{Criterion, criterion_group, criterion_main};
use tower::ServiceExt as _;

const PASSWORD: &str = "correct horse battery staple";

struct Fixture {
    manager: SessionManager,
    app: cloakroom_server::app::App,
    token: String,
    _dir: Option<tempfile::TempDir>,
    _pg: Option<PgServer>,
}

async fn fixture(extra_sessions: usize, cost: Cost, cached: bool) -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(dir.path().join("bench.db").to_str().unwrap()).await.unwrap();
    let filler = |user: cloakroom_core::User| {
        let store = store.clone();
        async move {
            let mut tx = store.pool().begin().await.unwrap();
            for _ in 0..extra_sessions {
                let (_, s) = filler_session(&user);
                sqlx_insert(&mut tx, &s).await;
            }
            tx.commit().await.unwrap();
        }
    };
    let mut f = fixture_on(Arc::new(store.clone()), extra_sessions, cost, cached, filler).await;
    f._dir = Some(dir);
    f
}

/// A fixture on a private PostgreSQL, uncached.
async fn pg_fixture(extra_sessions: usize) -> Fixture {
    let pg = PgServer::start().await;
    let store = PgStore::connect(&pg.url()).await.unwrap();
    let filler = |user: cloakroom_core::User| {
        let pool = store.pool().clone();
        async move {
            // Random 32-byte token hashes, made by the server in one statement.
            sqlx::query(
                "INSERT INTO sessions (id, token_hash, csrf_token, user_id, created_at,
                     last_seen_at, token_issued_at, idle_expires_at, expires_at)
                 SELECT 'ses_filler' || i,
                        decode(md5(random()::text) || md5(random()::text), 'hex'),
                        'csrf', $1, $2, $2, $2, $2 + 1800000, $2 + 43200000
                 FROM generate_series(1, $3) AS i",
            )
            .bind(user.id.as_str())
            .bind(cloakroom_core::Timestamp::now().as_millis())
            .bind(i32::try_from(extra_sessions).unwrap())
            .execute(&pool)
            .await
            .unwrap();
        }
    };
    let mut f =
        fixture_on(Arc::new(store.clone()), extra_sessions, Cost::INSECURE_TEST, false, filler)
            .await;
    f._pg = Some(pg);
    f
}

async fn fixture_on<F: std::future::Future<Output = ()>>(
    store: Arc<dyn cloakroom_core::Store>,
    extra_sessions: usize,
    cost: Cost,
    cached: bool,
    filler: impl FnOnce(cloakroom_core::User) -> F,
) -> Fixture {
    let config = RawConfig::default().validate().unwrap();
    let state = if cached {
        let state = cloakroom_server::serve::cached_state(store, config, cost, None);
        while !state.manager.cache().is_some_and(|c| c.is_live()) {
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
        state
    } else {
        cloakroom_server::serve::state(store, config, cost)
    };
    let manager = state.manager.clone();
    let user = manager
        .create_user(
            Username::parse("alice").unwrap(),
            Some(&Password::new(PASSWORD.into())),
            vec![],
        )
        .await
        .unwrap();
    // Filler sessions of another user, in one transaction.
    if extra_sessions > 0 {
        let other =
            manager.create_user(Username::parse("filler").unwrap(), None, vec![]).await.unwrap();
        filler(other).await;
    }
    let issued = manager.create(&user, Default::default(), None).await.unwrap();
    let app = cloakroom_server::app(state);
    Fixture { manager, app, token: issued.token.expose(), _dir: None, _pg: None }
}

fn filler_session(
    user: &cloakroom_core::User,
) -> (cloakroom_core::Token, cloakroom_core::session::NewSession) {
    use cloakroom_core::{CsrfToken, SecretKind, SessionId, Timestamp, Token};
    let token = Token::generate(SecretKind::Session).unwrap();
    let now = Timestamp::now();
    let s = cloakroom_core::session::NewSession {
        id: SessionId::generate().unwrap(),
        token_hash: token.hash(),
        csrf: CsrfToken::generate().unwrap(),
        user_id: user.id.clone(),
        created_at: now,
        idle_expires_at: now.plus(std::time::Duration::from_secs(1800)),
        expires_at: now.plus(std::time::Duration::from_secs(43200)),
        ip: None,
        user_agent: None,
        audience: None,
        data: serde_json::json!({}),
    };
    (token, s)
}

async fn sqlx_insert(
    tx: &mut sqlx::Transaction<'static, sqlx::Sqlite>,
    s: &cloakroom_core::session::NewSession,
) {
    sqlx::query(
        "INSERT INTO sessions (id, token_hash, csrf_token, user_id, created_at, last_seen_at, token_issued_at,
             idle_expires_at, expires_at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?5, ?5, ?6, ?7)",
    )
    .bind(s.id.as_str())
    .bind(s.token_hash.as_bytes().as_slice())
    .bind(s.csrf.expose())
    .bind(s.user_id.as_str())
    .bind(s.created_at.as_millis())
    .bind(s.idle_expires_at.as_millis())
    .bind(s.expires_at.as_millis())
    .execute(&mut **tx)
    .await
    .unwrap();
}

/// `GET /v1/auth/check` with the fixture's session cookie through the router.
async fn auth_check(f: &Fixture) {
    let req = Request::get("/v1/auth/check")
        .header(header::COOKIE, format!("__Host-cloakroom={}", f.token))
        .body(Body::empty())
        .unwrap();
    let r = f.app.clone().oneshot(req).await.unwrap();
    assert_eq!(r.status(), 200);
}

/// The uncached checks on the store `make` builds with `extra` filler sessions: through the
/// manager with 1 and 20k sessions, and through the router (with its floor when `floor`).
fn uncached<F: std::future::Future<Output = Fixture>>(
    group: &mut criterion::BenchmarkGroup<'_, criterion::measurement::WallTime>,
    rt: &tokio::runtime::Runtime,
    make: impl Fn(usize) -> F,
    floor: bool,
) {
    for extra in [0usize, 20_000] {
        let f = rt.block_on(make(extra));
        let label = if extra == 0 { "1 session" } else { "20k sessions" };
        group.bench_function(format!("manager/{label}"), |b| {
            b.to_async(rt).iter(|| async {
                assert!(f.manager.authenticate(&f.token).await.unwrap().is_some())
            })
        });
        if extra == 0 {
            group.bench_function("router/auth_check", |b| b.to_async(rt).iter(|| auth_check(&f)));
        }
        if extra == 0 && floor {
            group.bench_function("router/healthz (floor)", |b| {
                b.to_async(rt).iter(|| async {
                    let req = Request::get("/healthz").body(Body::empty()).unwrap();
                    let r = f.app.clone().oneshot(req).await.unwrap();
                    assert_eq!(r.status(), 200);
                })
            });
        }
    }
}

fn checks(c: &mut Criterion) {
    let rt =
        tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let mut group = c.benchmark_group("check");
    uncached(&mut group, &rt, |extra| fixture(extra, Cost::INSECURE_TEST, false), true);
    // The same route on a server with its node-local cache (every check after the first a hit):
    // what the forward-auth path costs in process, socket and HTTP parsing aside.
    let f = rt.block_on(fixture(0, Cost::INSECURE_TEST, true));
    group.bench_function("router/auth_check (cache hit)", |b| {
        b.to_async(&rt).iter(|| auth_check(&f))
    });
    group.finish();

    let mut group = c.benchmark_group("check_postgres");
    uncached(&mut group, &rt, pg_fixture, false);
    group.finish();
}

fn login(c: &mut Criterion) {
    let rt =
        tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let f = rt.block_on(fixture(0, Cost::ASVS, false));
    let body = serde_json::json!({"username": "alice", "password": PASSWORD}).to_string();
    let mut group = c.benchmark_group("login");
    group.sample_size(20);
    group.bench_function("argon2id m=19MiB t=2 p=1", |b| {
        b.to_async(&rt).iter(|| async {
            let req = Request::post("/v1/login")
                .header(header::CONTENT_TYPE, "application/json")
                .body(Body::from(body.clone()))
                .unwrap();
            let r = f.app.clone().oneshot(req).await.unwrap();
            assert_eq!(r.status(), 200);
        })
    });
    group.finish();
}

criterion_group!(benches, checks, login);
criterion_main!(benches);
