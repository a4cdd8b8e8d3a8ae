//! The caller's sessions: list, revoke one, revoke all others.

use crate::routes::bodies::{RevokedCount, SessionList};
use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Response;
use cloakroom_service::Actor;

use crate::error::ApiResult;
use crate::extract::{ApiPath, Caller, Client};
use crate::routes::no_store;
use crate::state::AppState;

/// `GET /v1/sessions`: the caller's live sessions, newest first, the current one marked.
#[utoipa::path(get, path = "/v1/sessions", tag = "sessions",
    responses(
        (status = 200, description = "The caller's sessions, newest first", body = crate::openapi::SessionList),
        (status = 401, description = "unauthenticated", body = crate::openapi::ErrorBody),
        (status = 503, description = "store_unavailable", body = crate::openapi::ErrorBody)))]
pub async fn list(State(state): State<AppState>, caller: Caller) -> ApiResult<Response> {
    let all = state.service.sessions_of(&caller.session.user_id()).await?;
    let current = caller.session.session_id();
    let views: Vec<_> = all.iter().map(|a| a.view(Some(a.session.id == current))).collect();
    Ok(no_store(Json(SessionList { sessions: views })))
}

/// `DELETE /v1/sessions/{id}`: revokes one of the caller's sessions; 404 for anyone else's.
#[utoipa::path(delete, path = "/v1/sessions/{id}", tag = "sessions",
    params(("id" = String, Path, description = "ses_…")),
    responses(
        (status = 204, description = "Revoked"),
        (status = 401, description = "unauthenticated", body = crate::openapi::ErrorBody),
        (status = 403, description = "csrf_failed / origin_mismatch", body = crate::openapi::ErrorBody),
        (status = 404, description = "not_found (also anyone else's)", body = crate::openapi::ErrorBody),
        (status = 503, description = "store_unavailable", body = crate::openapi::ErrorBody)))]
pub async fn revoke(
    State(state): State<AppState>,
    caller: Caller,
    client: Client,
    ApiPath(id): ApiPath<String>,
) -> ApiResult<Response> {
    state.service.revoke_session(&Actor::owner(&caller.session), &id, &client).await?;
    Ok(no_store(StatusCode::NO_CONTENT))
}

/// `POST /v1/sessions/revoke-others`.
#[utoipa::path(post, path = "/v1/sessions/revoke-others", tag = "sessions",
    responses(
        (status = 200, description = "How many were revoked", body = crate::openapi::RevokedCount),
        (status = 401, description = "unauthenticated", body = crate::openapi::ErrorBody),
        (status = 403, description = "csrf_failed / origin_mismatch", body = crate::openapi::ErrorBody),
        (status = 503, description = "store_unavailable", body = crate::openapi::ErrorBody)))]
pub async fn revoke_others(
    State(state): State<AppState>,
    caller: Caller,
    client: Client,
) -> ApiResult<Response> {
    let revoked = state.service.revoke_other_sessions(&caller.session, &client).await?;
    Ok(no_store(Json(RevokedCount { revoked })))
}
