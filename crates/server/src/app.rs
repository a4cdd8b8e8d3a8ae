//! The application: the forward-auth check's fast path in front of the router with every other
//! route, testable without a socket (`app(state).oneshot(req)`). `cloakroom serve` runs exactly
//! this: [`App::is_check`] and [`App::check`] for the one hot route, [`App::router`] for the rest,
//! so the tests exercise the path production runs.

use std::convert::Infallible;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Instant;

use axum::Router;
use axum::extract::{DefaultBodyLimit, MatchedPath, Request, State};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post, put};

use crate::error::ApiError;
use crate::extract::CookieSlot;
use crate::routes::{admin, auth, check, grants, harden, health, session, sessions};
use crate::state::AppState;
use crate::{extract, metrics};

/// Largest request body accepted anywhere.
pub const BODY_LIMIT: usize = 64 * 1024;

/// The path of the forward-auth check, under the base path.
pub const CHECK_ROUTE: &str = "/v1/auth/check";

/// The application: the fast path for the forward-auth check and the router for the rest.
/// Cheap to clone.
#[derive(Clone)]
pub struct App {
    router: Router,
    state: AppState,
    check_route: Arc<str>,
}

/// Builds the application.
pub fn app(state: AppState) -> App {
    let check_route = format!("{}{CHECK_ROUTE}", state.config.base_path).into();
    App { router: router(state.clone()), state, check_route }
}

impl App {
    /// Whether a request with this method and path is the forward-auth check, answered by
    /// [`App::check`] without the router (no routing, no boxed middleware: it sits in front of
    /// every request of every guarded app).
    pub fn is_check(&self, method: &axum::http::Method, path: &str) -> bool {
        matches!(*method, axum::http::Method::GET | axum::http::Method::HEAD)
            && path == &*self.check_route
    }

    /// Answers the forward-auth check from the request's head, with what the router's layer adds
    /// to every route: the common headers, the route's metrics and the access log line.
    pub async fn check(&self, parts: &axum::http::request::Parts) -> Response {
        let start = Instant::now();
        let response = check::answer(&self.state, parts).await;
        metrics::record_route(CHECK_ROUTE, start, response.status());
        if self.state.config.access_log {
            let session = response
                .headers()
                .get("x-cloakroom-session-id")
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned);
            let status = response.status();
            metrics::access_log(&parts.method, CHECK_ROUTE, status, start, session.as_ref());
        }
        response
    }

    /// The router with every route but the fast path (which it also serves, the slow way).
    pub fn router(&self) -> &Router {
        &self.router
    }

    /// The state.
    pub fn state(&self) -> &AppState {
        &self.state
    }
}

impl tower::Service<Request> for App {
    type Response = Response;
    type Error = Infallible;
    type Future = std::pin::Pin<
        Box<dyn std::future::Future<Output = Result<Response, Infallible>> + Send + 'static>,
    >;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        // The router is always ready.
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Request) -> Self::Future {
        let app = self.clone();
        Box::pin(async move {
            if app.is_check(req.method(), req.uri().path()) {
                let (parts, _) = req.into_parts();
                return Ok(app.check(&parts).await);
            }
            tower::ServiceExt::oneshot(app.router.clone(), req).await
        })
    }
}

/// The router with every route.
fn router(state: AppState) -> Router {
    let routes = Router::new()
        .route("/v1/login", post(auth::login))
        .route("/v1/logout", post(auth::logout))
        .route("/v1/password", post(auth::change_password))
        .route("/v1/session", get(session::get))
        .route("/v1/session/data", get(session::get_data).put(session::put_data))
        .route("/v1/sessions", get(sessions::list))
        .route("/v1/sessions/revoke-others", post(sessions::revoke_others))
        .route("/v1/sessions/{id}", delete(sessions::revoke))
        .route("/v1/auth/check", get(check::check))
        .route("/v1/admin/users/{username}", put(admin::put_user).get(admin::get_user))
        .route("/v1/admin/users/{username}/sessions", delete(admin::revoke_user_sessions))
        .route("/v1/admin/sessions", post(admin::create_session).get(admin::list_sessions))
        .route("/v1/admin/sessions/validate", post(admin::validate))
        .route("/v1/admin/sessions/{id}", delete(admin::revoke_session))
        .route("/v1/grants", post(grants::issue))
        .route("/v1/grants/redeem", post(grants::redeem))
        .route("/v1/grants/exchange", post(grants::exchange))
        .route("/v1/keys", get(grants::keys))
        .route("/v1/revocations", get(grants::revocations))
        .route("/v1/openapi.json", get(crate::openapi::openapi_json))
        .route("/healthz", get(health::healthz))
        .route("/readyz", get(health::readyz))
        .merge(crate::pages::router())
        // With `metrics_listen`, `/metrics` is served only there (`serve.rs`).
        .merge(match state.config.metrics_listen {
            None => Router::new().route("/metrics", get(health::metrics)),
            Some(_) => Router::new(),
        })
        .method_not_allowed_fallback(method_not_allowed)
        .route_layer(middleware::from_fn_with_state(state.clone(), per_request));
    // Under a base path, everything moves there; the rest of the host is not Cloakroom's.
    let routes = match state.config.base_path.as_str() {
        "" => routes,
        base => Router::new().nest(base, routes),
    };
    routes
        .fallback(not_found)
        .layer(middleware::from_fn_with_state(state.clone(), crate::cors::cors))
        .layer(DefaultBodyLimit::max(BODY_LIMIT))
        .with_state(state)
}

/// Every routed request passes here, once (one layer: each `from_fn` layer costs a boxed future
/// per request): the form CSRF field is lifted, a slot for a rotated cookie is attached, the
/// response gets the headers every response carries, and the request is counted and timed.
/// (`cloakroom serve` answers the forward-auth check, the one hot route, before the router:
/// `serve.rs`; `check::answer` adds the same headers.)
async fn per_request(State(state): State<AppState>, mut req: Request, next: Next) -> Response {
    let start = Instant::now();
    let route = req.extensions().get::<MatchedPath>().cloned();
    let slot = CookieSlot::attach(&mut req);
    let access = state.config.access_log.then(|| {
        let seen = extract::SessionSeen::default();
        req.extensions_mut().insert(seen.clone());
        (req.method().clone(), seen)
    });
    let mut response = match extract::lift_form_csrf(req).await {
        Ok(req) => next.run(req).await,
        Err(refused) => refused,
    };
    slot.apply(&mut response);
    harden(response.headers_mut(), &state.config);
    // Routes are labelled without the base path, as the fast path labels the check: one series
    // per route whatever the prefix.
    let route = route.as_ref().map_or("unmatched", MatchedPath::as_str);
    let route = route.strip_prefix(state.config.base_path.as_str()).unwrap_or(route);
    metrics::record_route(route, start, response.status());
    if let Some((method, seen)) = access {
        crate::metrics::access_log(&method, route, response.status(), start, seen.0.get());
    }
    response
}

// The fallbacks answer outside the route layer: they add the common headers themselves.

async fn not_found(State(state): State<AppState>) -> Response {
    let mut response = ApiError::not_found("no such route").into_response();
    harden(response.headers_mut(), &state.config);
    response
}

async fn method_not_allowed(State(state): State<AppState>) -> Response {
    let mut response = ApiError::method_not_allowed().into_response();
    harden(response.headers_mut(), &state.config);
    response
}
