//! Liveness, readiness and metrics.

use crate::routes::bodies::Health;
use axum::Json;
use axum::extract::State;
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};

use crate::error::ApiError;
use crate::state::AppState;

/// `GET /healthz`: the process answers.
#[utoipa::path(get, path = "/healthz", tag = "meta", security(()),
    responses((status = 200, description = "Alive", body = crate::openapi::Health)))]
pub async fn healthz() -> Response {
    Json(Health { status: "ok", store: None }).into_response()
}

/// `GET /readyz`: the store answers.
#[utoipa::path(get, path = "/readyz", tag = "meta", security(()),
    responses(
        (status = 200, description = "The store answers", body = crate::openapi::Health),
        (status = 503, description = "store_unavailable", body = crate::openapi::ErrorBody)))]
pub async fn readyz(State(state): State<AppState>) -> Response {
    match state.service.ping().await {
        Ok(()) => Json(Health { status: "ready", store: Some(state.service.store_kind()) })
            .into_response(),
        Err(e) => ApiError::from(e).into_response(),
    }
}

/// `GET /metrics`: Prometheus text format.
#[utoipa::path(get, path = "/metrics", tag = "meta", security(()),
    responses((status = 200, description = "Prometheus text", content_type = "text/plain", body = String)))]
pub async fn metrics(State(state): State<AppState>) -> Response {
    let mut r = crate::metrics::render(&state.metrics).into_response();
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
    );
    r
}
