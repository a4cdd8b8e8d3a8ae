//! Cloakroom sessions inside a Rust app: a tower layer that checks every request's session
//! against the store (through the node-local cache), and axum extractors for handlers.
//!
//! The app shares Cloakroom's store: the embedded SQLite file of a `cloakroom serve` on the same
//! machine, or the Redis that a fleet of Cloakroom nodes uses. Users log in through Cloakroom (its
//! API or pages); the app sees the same sessions in process, revocations included, with no HTTP
//! hop per request.
//!
//! What the layer enforces, as the Cloakroom server does:
//! - the token comes from `Authorization: Bearer` or the session cookie, never from a URL;
//! - a cookie-authenticated request with an unsafe method (anything but GET, HEAD, OPTIONS,
//!   TRACE) must come from an allowed origin and carry the session's CSRF token in
//!   `X-CSRF-Token`, or it is refused (403) before the handler runs;
//! - a store that cannot answer is a 503, never a guess; a session scoped to another service
//!   (traded for a grant) is no session here.
//!
//! ```no_run
//! use axum::{Router, routing::get};
//! use cloakroom_axum::{CurrentSession, RequireRole, RoleName, Sessions};
//!
//! struct Admin;
//! impl RoleName for Admin {
//!     const ROLE: &'static str = "admin";
//! }
//!
//! async fn me(session: CurrentSession) -> String {
//!     format!("hello {}", session.username())
//! }
//!
//! async fn admin(_: RequireRole<Admin>) -> &'static str {
//!     "for admins"
//! }
//!
//! # async fn run(manager: cloakroom_core::SessionManager) {
//! let sessions = Sessions::new(manager).allow_origin("https://app.example.com");
//! sessions.spawn_invalidations(); // keeps the cache in step with revocations everywhere
//! let app: Router = Router::new()
//!     .route("/me", get(me))
//!     .route("/admin", get(admin))
//!     .layer(sessions.layer());
//! # }
//! ```

pub mod request;
pub mod resolve;

use std::convert::Infallible;
use std::future::Future;
use std::marker::PhantomData;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use axum::extract::{FromRequestParts, OptionalFromRequestParts, Request};
use axum::http::StatusCode;
use axum::http::request::Parts;
use axum::response::{IntoResponse, Response};
use cloakroom_core::active::IdText;
use cloakroom_core::{ActiveSession, Authenticated, SessionManager, StoreError};
use tower::{Layer, Service};

pub use request::Via;

/// The default cookie name, as the Cloakroom server sets it.
pub const DEFAULT_COOKIE: &str = "__Host-cloakroom";

#[derive(Clone)]
struct Config {
    manager: SessionManager,
    cookie_name: String,
    allowed_origins: Vec<String>,
    audience: Option<String>,
}

/// Sessions for an app: the manager (store and cache) and how requests carry sessions. Cheap to
/// clone.
#[derive(Clone)]
pub struct Sessions(Arc<Config>);

impl Sessions {
    /// Sessions checked through `manager` (give it a cache with
    /// [`SessionManager::with_cache`] and call [`Sessions::spawn_invalidations`] for checks that
    /// rarely leave the process). Cookie `__Host-cloakroom`; no origin allowed yet, so a
    /// cookie-authenticated write that carries an `Origin` header is refused until
    /// [`Sessions::allow_origin`] names the app's origin.
    pub fn new(manager: SessionManager) -> Self {
        Self(Arc::new(Config {
            manager,
            cookie_name: DEFAULT_COOKIE.to_owned(),
            allowed_origins: Vec::new(),
            audience: None,
        }))
    }

    fn config_mut(&mut self) -> &mut Config {
        // Builder methods run before the value is shared; a shared one is copied first.
        Arc::make_mut(&mut self.0)
    }

    /// The session cookie's name, if Cloakroom is configured with another.
    pub fn cookie_name(mut self, name: impl Into<String>) -> Self {
        self.config_mut().cookie_name = name.into();
        self
    }

    /// Allows cookie-authenticated writes from this origin (`https://app.example.com`).
    pub fn allow_origin(mut self, origin: impl Into<String>) -> Self {
        self.config_mut().allowed_origins.push(origin.into().to_ascii_lowercase());
        self
    }

    /// Also accepts sessions scoped to this audience (traded for a grant through
    /// `POST /v1/grants/exchange`). Sessions scoped to any other audience are never accepted.
    pub fn audience(mut self, audience: impl Into<String>) -> Self {
        self.config_mut().audience = Some(audience.into());
        self
    }

    /// The manager.
    pub fn manager(&self) -> &SessionManager {
        &self.0.manager
    }

    /// The tower layer to put in front of the app's routes.
    pub fn layer(&self) -> SessionLayer {
        SessionLayer { sessions: self.clone() }
    }

    /// Follows the store's invalidation feed in the background, so the node-local cache drops
    /// revoked and changed sessions as soon as any node or the CLI changes them (and is bypassed
    /// whenever the feed is down). Resubscribes after a failure. Needs a Tokio runtime.
    pub fn spawn_invalidations(&self) -> tokio::task::JoinHandle<()> {
        self.0.manager.spawn_invalidations()
    }

    /// The session of a request, after the CSRF and origin rules; `Ok(None)` when it has none.
    async fn resolve(&self, parts: &Parts) -> Result<Option<CurrentSession>, SessionRejection> {
        let c = &self.0;
        let rules = resolve::Rules {
            cookie_name: &c.cookie_name,
            allowed_origins: &c.allowed_origins,
            own_origins: &[],
            audience: resolve::Audience::For(c.audience.as_deref()),
        };
        let intent = resolve::Intent::of(&parts.method);
        match resolve::resolve(&c.manager, &parts.headers, None, intent, &rules).await {
            Ok(Some(r)) => Ok(Some(CurrentSession {
                session: r.checked.session,
                via: r.via,
                sessions: self.clone(),
            })),
            Ok(None) => Ok(None),
            Err(resolve::Refusal::BadAuthorization) => Err(SessionRejection::Unauthenticated),
            Err(resolve::Refusal::Origin(_)) => Err(SessionRejection::OriginMismatch),
            Err(resolve::Refusal::Csrf(_)) => Err(SessionRejection::CsrfFailed),
            Err(resolve::Refusal::Store(e)) => {
                tracing::error!(error = %e, "session store unavailable");
                Err(SessionRejection::StoreUnavailable)
            }
        }
    }
}

/// See [`Sessions::layer`].
#[derive(Clone)]
pub struct SessionLayer {
    sessions: Sessions,
}

impl<S> Layer<S> for SessionLayer {
    type Service = SessionService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        SessionService { inner, sessions: self.sessions.clone() }
    }
}

/// The service [`SessionLayer`] wraps around the app.
#[derive(Clone)]
pub struct SessionService<S> {
    inner: S,
    sessions: Sessions,
}

impl<S> Service<Request> for SessionService<S>
where
    S: Service<Request, Response = Response, Error = Infallible> + Clone + Send + 'static,
    S::Future: Send + 'static,
{
    type Response = Response;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Response, Infallible>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request) -> Self::Future {
        // The clone that was polled ready is the one to call.
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let sessions = self.sessions.clone();
        Box::pin(async move {
            let (mut parts, body) = req.into_parts();
            match sessions.resolve(&parts).await {
                Ok(Some(session)) => {
                    parts.extensions.insert(session);
                }
                Ok(None) => {}
                Err(rejection) => return Ok(rejection.into_response()),
            }
            inner.call(Request::from_parts(parts, body)).await
        })
    }
}

/// The request's live session. As an extractor: 401 when the request has none (use
/// `Option<CurrentSession>` where a session is optional).
#[derive(Clone)]
pub struct CurrentSession {
    session: ActiveSession,
    via: Via,
    sessions: Sessions,
}

impl std::fmt::Debug for CurrentSession {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CurrentSession")
            .field("session", &self.session)
            .field("via", &self.via)
            .finish()
    }
}

impl CurrentSession {
    /// The session as the check saw it: ids, user name and roles (as of this request), audience.
    pub fn session(&self) -> &ActiveSession {
        &self.session
    }

    /// The session's public id (`ses_…`).
    pub fn session_id(&self) -> IdText {
        self.session.session_id_text()
    }

    /// The user's id (`usr_…`).
    pub fn user_id(&self) -> IdText {
        self.session.user_id_text()
    }

    /// The user's name.
    pub fn username(&self) -> &str {
        self.session.username()
    }

    /// The user's roles, as of this request.
    pub fn roles(&self) -> impl Iterator<Item = &str> {
        self.session.roles()
    }

    /// How the token came: cookie or bearer.
    pub fn via(&self) -> Via {
        self.via
    }

    /// Whether the user has `role`.
    pub fn has_role(&self, role: &str) -> bool {
        self.session.has_role(role)
    }

    /// The CSRF token to put in pages' forms and scripts (`X-CSRF-Token`).
    pub fn csrf_token(&self) -> String {
        self.session.csrf_token().expose().to_owned()
    }

    /// The whole session record (client IP and user agent, login and expiry times), read from
    /// the store; checks do not keep it in memory. `None` when the session ended since.
    pub async fn details(&self) -> Result<Option<Authenticated>, StoreError> {
        self.sessions.0.manager.details(&self.session).await
    }
}

impl<S: Send + Sync> FromRequestParts<S> for CurrentSession {
    type Rejection = SessionRejection;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, SessionRejection> {
        parts.extensions.get::<CurrentSession>().cloned().ok_or(SessionRejection::Unauthenticated)
    }
}

impl<S: Send + Sync> OptionalFromRequestParts<S> for CurrentSession {
    type Rejection = Infallible;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Option<Self>, Infallible> {
        Ok(parts.extensions.get::<CurrentSession>().cloned())
    }
}

/// Names a role for [`RequireRole`].
pub trait RoleName: Send + Sync + 'static {
    /// The role.
    const ROLE: &'static str;
}

/// The request's session, whose user has the role `R`: 401 without a session, 403 without the
/// role.
pub struct RequireRole<R: RoleName>(pub CurrentSession, PhantomData<R>);

impl<R: RoleName> std::ops::Deref for RequireRole<R> {
    type Target = CurrentSession;
    fn deref(&self) -> &CurrentSession {
        &self.0
    }
}

impl<S: Send + Sync, R: RoleName> FromRequestParts<S> for RequireRole<R> {
    type Rejection = SessionRejection;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, SessionRejection> {
        let session =
            <CurrentSession as FromRequestParts<S>>::from_request_parts(parts, state).await?;
        if !session.has_role(R::ROLE) {
            return Err(SessionRejection::Forbidden(R::ROLE));
        }
        Ok(RequireRole(session, PhantomData))
    }
}

/// Why a request was refused, answered as Cloakroom's API does:
/// `{"error":{"code":"…","message":"…"}}`.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum SessionRejection {
    /// 401 `unauthenticated`: no valid session.
    Unauthenticated,
    /// 403 `forbidden`: the user lacks the role.
    Forbidden(&'static str),
    /// 403 `csrf_failed`: a cookie-authenticated write without the session's CSRF token.
    CsrfFailed,
    /// 403 `origin_mismatch`: a cookie-authenticated write from an origin not allowed.
    OriginMismatch,
    /// 503 `store_unavailable`: the store could not vouch for the session.
    StoreUnavailable,
}

impl IntoResponse for SessionRejection {
    fn into_response(self) -> Response {
        let (status, code, message) = match self {
            Self::Unauthenticated => {
                (StatusCode::UNAUTHORIZED, "unauthenticated", "a valid session is required".into())
            }
            Self::Forbidden(role) => {
                (StatusCode::FORBIDDEN, "forbidden", format!("the role {role} is required"))
            }
            Self::CsrfFailed => (
                StatusCode::FORBIDDEN,
                "csrf_failed",
                "missing or wrong X-CSRF-Token for this session".into(),
            ),
            Self::OriginMismatch => {
                (StatusCode::FORBIDDEN, "origin_mismatch", "request origin not allowed".into())
            }
            Self::StoreUnavailable => (
                StatusCode::SERVICE_UNAVAILABLE,
                "store_unavailable",
                "the session store is unavailable".into(),
            ),
        };
        let body = serde_json::json!({ "error": { "code": code, "message": message } });
        let mut r = (status, axum::Json(body)).into_response();
        r.headers_mut().insert(
            axum::http::header::CACHE_CONTROL,
            axum::http::HeaderValue::from_static("no-store"),
        );
        r
    }
}
