//! The layer and extractors in an app, against real stores: a SQLite file shared with another
//! "process" (a second manager on the same file, as the Cloakroom server would be), and a private
//! redis-server that dies mid-test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Body;
use axum::http::{Request, StatusCode};
use axum::routing::{get, post};
use cloakroom_axum::{CurrentSession, RequireRole, RoleName, Sessions};
use cloakroom_core::cache::{CacheConfig, SessionCache};
use cloakroom_core::manager::{Actor, ClientInfo, ManagerConfig};
use cloakroom_core::password::{Cost, PasswordHasher};
use cloakroom_core::{Role, SessionManager, Store, User, Username};
use cloakroom_store_redis::RedisStore;
use cloakroom_store_redis::testing::RedisServer;
use cloakroom_store_sqlite::SqliteStore;
use http_body_util::BodyExt as _;
use tower::ServiceExt as _;

struct Admin;
impl RoleName for Admin {
    const ROLE: &'static str = "admin";
}

const ORIGIN: &str = "https://app.example";

fn manager(store: Arc<dyn Store>) -> SessionManager {
    SessionManager::new(
        store,
        PasswordHasher::new(Cost::INSECURE_TEST, 1, None),
        ManagerConfig::default(),
    )
    .with_cache(Arc::new(SessionCache::new(CacheConfig::default())))
}

fn app(sessions: &Sessions) -> Router {
    Router::new()
        .route("/me", get(|s: CurrentSession| async move { s.username().to_owned() }))
        .route(
            "/maybe",
            get(|s: Option<CurrentSession>| async move {
                s.map_or("anonymous".to_owned(), |s| s.username().to_owned())
            }),
        )
        .route(
            "/notes",
            post(|s: CurrentSession| async move { format!("noted for {}", s.username()) }),
        )
        .route(
            "/admin",
            get(|s: RequireRole<Admin>| async move { format!("admin {}", s.username()) }),
        )
        .layer(sessions.layer())
}

struct Reply {
    status: StatusCode,
    body: String,
}

impl Reply {
    fn code(&self) -> String {
        serde_json::from_str::<serde_json::Value>(&self.body).unwrap()["error"]["code"]
            .as_str()
            .unwrap()
            .to_owned()
    }
}

async fn send(app: &Router, req: Request<Body>) -> Reply {
    let r = app.clone().oneshot(req).await.unwrap();
    let status = r.status();
    let body =
        String::from_utf8(r.into_body().collect().await.unwrap().to_bytes().to_vec()).unwrap();
    Reply { status, body }
}

fn get_with(uri: &str, cookie: Option<&str>) -> Request<Body> {
    let mut b = Request::get(uri);
    if let Some(c) = cookie {
        b = b.header("cookie", format!("__Host-cloakroom={c}"));
    }
    b.body(Body::empty()).unwrap()
}

async fn user(m: &SessionManager, name: &str, roles: &[&str]) -> User {
    let roles = roles.iter().map(|r| Role::parse(r).unwrap()).collect();
    m.create_user(Username::parse(name).unwrap(), None, roles).await.unwrap()
}

async fn until(limit: Duration, mut probe: impl AsyncFnMut() -> bool) {
    let start = Instant::now();
    while !probe().await {
        assert!(start.elapsed() < limit, "not within {limit:?}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sessions_roles_csrf_and_origins_on_the_embedded_store() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite:{}", dir.path().join("c.db").display());
    let m = manager(Arc::new(SqliteStore::connect(&url).await.unwrap()));
    let sessions = Sessions::new(m.clone()).allow_origin(ORIGIN);
    sessions.spawn_invalidations();
    let app = app(&sessions);
    let alice = user(&m, "alice", &["admin"]).await;
    let bob = user(&m, "bob", &[]).await;
    let a = m.create(&alice, ClientInfo::default(), None).await.unwrap();
    let b = m.create(&bob, ClientInfo::default(), None).await.unwrap();
    let (at, bt) = (a.token.expose(), b.token.expose());
    let csrf = a.auth.session.csrf.expose().to_owned();

    // Without a session.
    let r = send(&app, get_with("/me", None)).await;
    assert_eq!((r.status, r.code().as_str()), (StatusCode::UNAUTHORIZED, "unauthenticated"));
    assert_eq!(send(&app, get_with("/maybe", None)).await.body, "anonymous");
    assert_eq!(send(&app, get_with("/me", Some("crs_garbage"))).await.status, 401);
    let basic =
        Request::get("/maybe").header("authorization", "Basic eDp5").body(Body::empty()).unwrap();
    assert_eq!(send(&app, basic).await.status, 401, "a malformed Authorization is refused");

    // With one, by cookie and by bearer.
    assert_eq!(send(&app, get_with("/me", Some(&at))).await.body, "alice");
    assert_eq!(send(&app, get_with("/maybe", Some(&bt))).await.body, "bob");
    let bearer = Request::get("/me")
        .header("authorization", format!("Bearer {bt}"))
        .body(Body::empty())
        .unwrap();
    assert_eq!(send(&app, bearer).await.body, "bob");

    // Roles.
    assert_eq!(send(&app, get_with("/admin", Some(&at))).await.body, "admin alice");
    let r = send(&app, get_with("/admin", Some(&bt))).await;
    assert_eq!((r.status, r.code().as_str()), (StatusCode::FORBIDDEN, "forbidden"));

    // Cookie writes need the CSRF token and an allowed origin; bearer writes need neither.
    let post = |cookie: &str, csrf: Option<&str>, origin: Option<&str>| {
        let mut b = Request::post("/notes").header("cookie", format!("__Host-cloakroom={cookie}"));
        if let Some(c) = csrf {
            b = b.header("x-csrf-token", c);
        }
        if let Some(o) = origin {
            b = b.header("origin", o);
        }
        b.body(Body::empty()).unwrap()
    };
    let r = send(&app, post(&at, None, None)).await;
    assert_eq!((r.status, r.code().as_str()), (StatusCode::FORBIDDEN, "csrf_failed"));
    let r = send(&app, post(&at, Some("wrong"), Some(ORIGIN))).await;
    assert_eq!(r.code(), "csrf_failed");
    let r = send(&app, post(&at, Some(&csrf), Some("https://evil.example"))).await;
    assert_eq!((r.status, r.code().as_str()), (StatusCode::FORBIDDEN, "origin_mismatch"));
    assert_eq!(send(&app, post(&at, Some(&csrf), Some(ORIGIN))).await.body, "noted for alice");
    assert_eq!(send(&app, post(&at, Some(&csrf), None)).await.status, 200);
    // Another session's CSRF token is not this one's.
    let other = b.auth.session.csrf.expose().to_owned();
    assert_eq!(send(&app, post(&at, Some(&other), Some(ORIGIN))).await.code(), "csrf_failed");
    let bearer_post = Request::post("/notes")
        .header("authorization", format!("Bearer {bt}"))
        .header("origin", "https://evil.example")
        .body(Body::empty())
        .unwrap();
    assert_eq!(send(&app, bearer_post).await.status, 200);

    // A session scoped to another service is no session here; an app that names its audience
    // accepts the ones scoped to it.
    let scoped =
        m.create_scoped(&alice, ClientInfo::default(), None, Some("app2".into())).await.unwrap();
    let st = scoped.token.expose();
    assert_eq!(send(&app, get_with("/me", Some(&st))).await.status, 401);
    let app2 = self::app(&Sessions::new(m.clone()).audience("app2"));
    assert_eq!(send(&app2, get_with("/me", Some(&st))).await.body, "alice");
    let app3 = self::app(&Sessions::new(m.clone()).audience("app3"));
    assert_eq!(send(&app3, get_with("/me", Some(&st))).await.status, 401);

    // Revoked by another process on the same file (the Cloakroom server, the CLI): the app's
    // cache drops it through the invalidation feed within a second.
    let other = manager(Arc::new(SqliteStore::connect(&url).await.unwrap()));
    assert_eq!(send(&app, get_with("/me", Some(&bt))).await.status, 200);
    other.revoke_user(&bob.id, None).await.unwrap();
    until(Duration::from_secs(1), async || {
        send(&app, get_with("/me", Some(&bt))).await.status == 401
    })
    .await;
    // A role taken away elsewhere is seen as soon.
    other.update_user(Actor::Operator, &alice.id, Some(vec![]), None).await.unwrap();
    until(Duration::from_secs(1), async || {
        send(&app, get_with("/admin", Some(&at))).await.status == 403
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_redis_is_a_503_never_a_cached_yes() {
    let mut redis = RedisServer::start_persistent().await;
    let m = manager(Arc::new(RedisStore::connect(&redis.url()).await.unwrap()));
    let sessions = Sessions::new(m.clone());
    sessions.spawn_invalidations();
    let app = app(&sessions);
    until(Duration::from_secs(5), async || m.cache().unwrap().is_live()).await;
    let alice = user(&m, "alice", &[]).await;
    let a = m.create(&alice, ClientInfo::default(), None).await.unwrap();
    let at = a.token.expose();
    for _ in 0..3 {
        assert_eq!(send(&app, get_with("/me", Some(&at))).await.status, 200); // cached after the first
    }

    redis.kill();
    until(Duration::from_secs(5), async || {
        send(&app, get_with("/me", Some(&at))).await.status == 503
    })
    .await;
    for _ in 0..20 {
        let r = send(&app, get_with("/me", Some(&at))).await;
        assert_eq!(
            (r.status, r.code().as_str()),
            (StatusCode::SERVICE_UNAVAILABLE, "store_unavailable")
        );
    }
    redis.restart().await;
    until(Duration::from_secs(10), async || {
        send(&app, get_with("/me", Some(&at))).await.status == 200
    })
    .await;
}
