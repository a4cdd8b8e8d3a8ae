//! Router-test harness: the real app over a fresh SQLite file, driven with `oneshot`.
#![allow(clippy::unwrap_used, clippy::expect_used, dead_code, unreachable_pub)]

pub mod nodes;
pub mod process;
pub mod proxy;

use std::net::SocketAddr;
use std::sync::Arc;

use axum::body::Body;
use axum::extract::ConnectInfo;
use axum::http::{HeaderMap, Method, Request, StatusCode, header};
use cloakroom_core::Role;
use cloakroom_core::manager::Actor;
use cloakroom_core::password::{Cost, Password};
use cloakroom_server::app::App;
use cloakroom_server::config::{Config, RawConfig};
use cloakroom_server::state::AppState;
use cloakroom_store_sqlite::SqliteStore;
use http_body_util::BodyExt as _;
use serde_json::Value;
use tower::ServiceExt as _;

pub const PASSWORD: &str = "correct horse battery";
pub const ORIGIN: &str = "http://127.0.0.1:7878";

pub struct Harness {
    pub state: AppState,
    pub store: SqliteStore,
    pub app: App,
    _dir: tempfile::TempDir,
}

pub struct Reply {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Vec<u8>,
}

impl Reply {
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or(Value::Null)
    }
    pub fn code(&self) -> String {
        self.json()["error"]["code"].as_str().unwrap_or_default().to_owned()
    }
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
    pub fn set_cookies(&self) -> Vec<String> {
        self.headers
            .get_all(header::SET_COOKIE)
            .iter()
            .map(|v| v.to_str().unwrap().to_owned())
            .collect()
    }
    /// The session token from a `Set-Cookie`, if one was set.
    pub fn cookie_token(&self) -> Option<String> {
        self.set_cookies()
            .iter()
            .filter_map(|c| {
                c.split(';').next()?.strip_prefix("__Host-cloakroom=").map(str::to_owned)
            })
            .find(|t| !t.is_empty())
    }
}

/// A logged-in browser: its cookie token and CSRF token.
#[derive(Clone, Debug)]
pub struct Browser {
    pub token: String,
    pub csrf: String,
    pub session_id: String,
}

pub async fn harness() -> Harness {
    harness_with(RawConfig::default()).await
}

pub async fn harness_with(raw: RawConfig) -> Harness {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("test.db");
    let store = SqliteStore::open(path.to_str().unwrap()).await.unwrap();
    let config: Config = raw.validate().unwrap();
    let state =
        cloakroom_server::serve::state(Arc::new(store.clone()), config, Cost::INSECURE_TEST);
    let app = cloakroom_server::app(state.clone());
    Harness { state, store, app, _dir: dir }
}

impl Harness {
    pub async fn add_user(&self, name: &str, roles: &[&str]) {
        let roles = roles.iter().map(|r| Role::parse(r).unwrap()).collect();
        self.state
            .manager
            .create_user(
                cloakroom_core::Username::parse(name).unwrap(),
                Some(&Password::new(PASSWORD.into())),
                roles,
            )
            .await
            .unwrap();
    }

    /// Replaces a user's roles through the manager (a privilege change).
    pub async fn set_roles(&self, name: &str, roles: &[&str]) {
        let m = &self.state.manager;
        let user = m.user(&cloakroom_core::Username::parse(name).unwrap()).await.unwrap().unwrap();
        let roles = roles.iter().map(|r| Role::parse(r).unwrap()).collect();
        m.update_user(Actor::Operator, &user.id, Some(roles), None).await.unwrap();
    }

    pub async fn api_key(&self) -> String {
        let actor = cloakroom_service::Actor::Cli;
        let (_, key) = self.state.service.create_api_key(&actor, "test").await.unwrap();
        key.expose()
    }

    pub async fn send(&self, req: Request<Body>) -> Reply {
        let response = self.app.clone().oneshot(req).await.unwrap();
        let status = response.status();
        let headers = response.headers().clone();
        let body = response.into_body().collect().await.unwrap().to_bytes().to_vec();
        Reply { status, headers, body }
    }

    /// `POST /v1/login` with JSON credentials, whatever the outcome.
    pub async fn login_attempt(&self, username: &str, password: &str) -> Reply {
        let body = serde_json::json!({"username": username, "password": password});
        self.send(json_req(Method::POST, "/v1/login", body)).await
    }

    pub async fn login(&self, name: &str) -> Browser {
        let r = self.login_attempt(name, PASSWORD).await;
        assert_eq!(r.status, StatusCode::OK, "login failed: {}", String::from_utf8_lossy(&r.body));
        let body = r.json();
        Browser {
            token: r.cookie_token().expect("session cookie"),
            csrf: body["csrf_token"].as_str().unwrap().to_owned(),
            session_id: body["session"]["id"].as_str().unwrap().to_owned(),
        }
    }
}

pub fn req(method: Method, uri: &str) -> axum::http::request::Builder {
    Request::builder().method(method).uri(uri)
}

pub fn json_req(method: Method, uri: &str, body: Value) -> Request<Body> {
    req(method, uri)
        .header(header::CONTENT_TYPE, "application/json")
        .body(Body::from(body.to_string()))
        .unwrap()
}

pub fn from_ip(mut r: Request<Body>, ip: &str) -> Request<Body> {
    let addr: SocketAddr = format!("{ip}:40000").parse().unwrap();
    r.extensions_mut().insert(ConnectInfo(addr));
    r
}

impl Browser {
    pub fn cookie(&self) -> String {
        format!("__Host-cloakroom={}", self.token)
    }
    /// A request carrying the cookie (no CSRF token).
    pub fn get(&self, uri: &str) -> Request<Body> {
        req(Method::GET, uri).header(header::COOKIE, self.cookie()).body(Body::empty()).unwrap()
    }
    /// A state-changing request with cookie and CSRF header, as a same-origin page sends it.
    pub fn send(&self, method: Method, uri: &str, body: Option<Value>) -> Request<Body> {
        let mut b = req(method, uri)
            .header(header::COOKIE, self.cookie())
            .header("x-csrf-token", &self.csrf)
            .header(header::ORIGIN, ORIGIN);
        match body {
            Some(v) => {
                b = b.header(header::CONTENT_TYPE, "application/json");
                b.body(Body::from(v.to_string())).unwrap()
            }
            None => b.body(Body::empty()).unwrap(),
        }
    }
}
