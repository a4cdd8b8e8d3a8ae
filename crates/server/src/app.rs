//! The router: every route of the HTTP API, testable without a socket (`app(state).oneshot(req)`).

use std::convert::Infallible;
use std::pin::Pin;
use std::task::{Context, Poll, ready};
use std::time::Instant;

use axum::Router;
use axum::extract::{DefaultBodyLimit, MatchedPath, Request};
use axum::response::Response;
use axum::routing::{delete, get, post, put};

use crate::error::ApiError;
use crate::extract::CookieSlot;
use crate::routes::{admin, auth, check, grants, health, session, sessions};
use crate::state::AppState;
use crate::{extract, metrics};
use pin_project_lite::pin_project;
use tower::{Layer, Service, ServiceExt as _};

/// Largest request body accepted anywhere.
pub const BODY_LIMIT: usize = 64 * 1024;

/// Builds the application.
pub fn app(state: AppState) -> Router {
    Router::new()
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
        .route("/metrics", get(health::metrics))
        .merge(crate::pages::router())
        .method_not_allowed_fallback(|| async { ApiError::method_not_allowed() })
        .fallback(|| async { ApiError::not_found("no such route") })
        .route_layer(PerRequest)
        .layer(DefaultBodyLimit::max(BODY_LIMIT))
        .with_state(state)
}

/// Every routed request passes here, once: the form CSRF field is lifted, a slot for a rotated
/// cookie is attached, and the request is counted and timed. A hand-written layer rather than
/// `middleware::from_fn`, which boxes a future and clones the route's service on every request:
/// on the forward-auth path that was measurable. Only a form post (which reads its body first)
/// takes the boxed path.
#[derive(Clone, Copy, Debug, Default)]
struct PerRequest;

impl<S> Layer<S> for PerRequest {
    type Service = PerRequestService<S>;
    fn layer(&self, inner: S) -> Self::Service {
        PerRequestService { inner }
    }
}

#[derive(Clone, Debug)]
struct PerRequestService<S> {
    inner: S,
}

impl<S> Service<Request> for PerRequestService<S>
where
    S: Service<Request, Response = Response, Error = Infallible> + Clone + Send + 'static,
    S::Future: Send + 'static,
{
    type Response = Response;
    type Error = Infallible;
    type Future = PerRequestFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: Request) -> Self::Future {
        let start = Instant::now();
        let route = req.extensions().get::<MatchedPath>().cloned();
        let slot = CookieSlot::attach(&mut req);
        let stage = if extract::has_form_body(&req) {
            // The service that was polled ready goes into the future; a clone stays here.
            let clone = self.inner.clone();
            let inner = std::mem::replace(&mut self.inner, clone);
            Stage::Form {
                fut: Box::pin(async move {
                    match extract::lift_form_csrf(req).await {
                        Ok(req) => match inner.oneshot(req).await {
                            Ok(r) => r,
                            Err(never) => match never {},
                        },
                        Err(refused) => refused,
                    }
                }),
            }
        } else {
            Stage::Direct { fut: self.inner.call(req) }
        };
        PerRequestFuture { stage, start, route, slot }
    }
}

pin_project! {
    #[project = StageProj]
    enum Stage<F> {
        Direct { #[pin] fut: F },
        Form { fut: Pin<Box<dyn Future<Output = Response> + Send>> },
    }
}

pin_project! {
    struct PerRequestFuture<F> {
        #[pin]
        stage: Stage<F>,
        start: Instant,
        route: Option<MatchedPath>,
        slot: CookieSlot,
    }
}

impl<F: Future<Output = Result<Response, Infallible>>> Future for PerRequestFuture<F> {
    type Output = Result<Response, Infallible>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let mut response = match this.stage.project() {
            StageProj::Direct { fut } => match ready!(fut.poll(cx)) {
                Ok(r) => r,
                Err(never) => match never {},
            },
            StageProj::Form { fut } => ready!(fut.as_mut().poll(cx)),
        };
        this.slot.apply(&mut response);
        metrics::record(this.route.as_ref(), *this.start, response.status());
        Poll::Ready(Ok(response))
    }
}
