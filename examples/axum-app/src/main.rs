//! `axum-app`: a tiny app behind the same origin as a Cloakroom server (one reverse proxy in
//! front of both, so the browser sends the `__Host-cloakroom` cookie to both), checking sessions
//! in process on the server's store.
//!
//! ```sh
//! cloakroom serve &                                   # logins at /v1/login
//! CLOAKROOM_STORE=sqlite:./cloakroom.db APP_ORIGIN=https://app.example.com cargo run -p cloakroom-axum-app
//! ```
//! `GET /` greets the user or a guest, `GET /admin` needs the `admin` role, `POST /notes` is a
//! write (cookie callers send `X-CSRF-Token`; `GET /csrf` gives the page its token).

use std::process::ExitCode;
use std::sync::Arc;

use axum::Router;
use axum::routing::{get, post};
use cloakroom_axum::{CurrentSession, RequireRole, RoleName, Sessions};
use cloakroom_core::cache::{CacheConfig, SessionCache};
use cloakroom_core::manager::ManagerConfig;
use cloakroom_core::password::{Cost, PasswordHasher};
use cloakroom_core::{SessionManager, Store};

struct Admin;
impl RoleName for Admin {
    const ROLE: &'static str = "admin";
}

async fn home(session: Option<CurrentSession>) -> String {
    match session {
        Some(s) => format!("hello {}", s.username()),
        None => "hello guest: log in through Cloakroom".to_owned(),
    }
}

async fn csrf(session: CurrentSession) -> String {
    session.csrf_token()
}

async fn admin(who: RequireRole<Admin>) -> String {
    format!("admin area for {}", who.username())
}

async fn note(session: CurrentSession, body: String) -> String {
    format!("{} noted {} bytes", session.username(), body.len())
}

async fn open(url: &str) -> Result<Arc<dyn Store>, String> {
    if url.starts_with("sqlite:") {
        let s =
            cloakroom_store_sqlite::SqliteStore::connect(url).await.map_err(|e| e.to_string())?;
        return Ok(Arc::new(s));
    }
    let s = cloakroom_store_redis::RedisStore::connect(url).await.map_err(|e| e.to_string())?;
    Ok(Arc::new(s))
}

#[tokio::main]
async fn main() -> ExitCode {
    let var = |k: &str, d: &str| std::env::var(k).unwrap_or_else(|_| d.to_owned());
    let store_url = var("CLOAKROOM_STORE", "sqlite:./cloakroom.db");
    let listen = var("LISTEN", "127.0.0.1:3000");
    let store = match open(&store_url).await {
        Ok(s) => s,
        Err(e) => {
            eprintln!("axum-app: cannot open the store {store_url}: {e}");
            return ExitCode::FAILURE;
        }
    };
    // The app never hashes passwords (Cloakroom logs users in); the hasher is required by the
    // manager's type only.
    let manager = SessionManager::new(
        store,
        PasswordHasher::new(Cost::ASVS, 1, None),
        ManagerConfig::default(),
    )
    .with_cache(Arc::new(SessionCache::new(CacheConfig::default())));
    let sessions =
        Sessions::new(manager).allow_origin(var("APP_ORIGIN", &format!("http://{listen}")));
    sessions.spawn_invalidations();
    let app = Router::new()
        .route("/", get(home))
        .route("/csrf", get(csrf))
        .route("/admin", get(admin))
        .route("/notes", post(note))
        .layer(sessions.layer());
    let listener = match tokio::net::TcpListener::bind(&listen).await {
        Ok(l) => l,
        Err(e) => {
            eprintln!("axum-app: cannot listen on {listen}: {e}");
            return ExitCode::FAILURE;
        }
    };
    println!("axum-app listening on http://{listen}, sessions from {store_url}");
    match axum::serve(listener, app).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("axum-app: {e}");
            ExitCode::FAILURE
        }
    }
}
