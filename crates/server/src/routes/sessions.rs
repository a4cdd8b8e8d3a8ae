//! The caller's sessions: list, revoke one, revoke all others.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Response;
use cloakroom_core::audit::{AuditEvent, AuditKind};
use cloakroom_core::{SessionId, Timestamp};
use serde_json::json;

use crate::error::{ApiError, ApiResult};
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
    let all = state
        .manager
        .store()
        .list_sessions(Some(&caller.session.user_id()), Timestamp::now())
        .await?;
    let current = caller.session.session_id();
    let views: Vec<_> = all.iter().map(|a| a.view(Some(a.session.id == current))).collect();
    Ok(no_store(Json(json!({ "sessions": views }))))
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
    let id = SessionId::parse(&id).ok_or_else(|| ApiError::not_found("session not found"))?;
    let owned = state
        .manager
        .store()
        .session_by_id(&id, Timestamp::now())
        .await?
        .is_some_and(|a| a.user.id == caller.session.user_id());
    if !owned || state.manager.revoke(&id).await?.is_none() {
        return Err(ApiError::not_found("session not found"));
    }
    metrics::counter!("cloakroom_revocations_total", "reason" => "user").increment(1);
    state
        .audit(
            AuditEvent::new(AuditKind::SessionRevoked, "self")
                .of_session(&caller.session)
                .session(&id)
                .ip(client.ip_text())
                .detail(if id == caller.session.session_id() {
                    "revoked own current session"
                } else {
                    "revoked by owner"
                }),
        )
        .await;
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
    let (user, current) = (caller.session.user_id(), caller.session.session_id());
    let revoked = state.manager.revoke_user(&user, Some(&current)).await?;
    metrics::counter!("cloakroom_revocations_total", "reason" => "revoke_others")
        .increment(revoked.len() as u64);
    state
        .audit(
            AuditEvent::new(AuditKind::SessionsRevoked, "self")
                .of_session(&caller.session)
                .ip(client.ip_text())
                .detail(format!("revoke-others: {} session(s)", revoked.len())),
        )
        .await;
    Ok(no_store(Json(json!({ "revoked": revoked.len() }))))
}
