//! The service API for an application's back end: users and sessions, authenticated by an API key
//! or an `admin` user's session.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Response;
use cloakroom_core::manager::ClientInfo;
use cloakroom_service::UserChanges;
use serde::Deserialize;
use serde_json::Value;

use crate::error::ApiResult;
use crate::extract::{ApiJson, ApiPath, ApiQuery, Client, ExactJson, Operator};
use crate::routes::bodies::{
    RevokedCount, SessionList, SessionOnly, SessionWithToken, UserResponse,
};
use crate::routes::no_store;
use crate::state::AppState;

/// `PUT /v1/admin/users/{username}` body.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PutUser {
    pub(crate) password: Option<String>,
    pub(crate) roles: Option<Vec<String>>,
    pub(crate) disabled: Option<bool>,
}

/// `PUT /v1/admin/users/{username}`: creates (201) or updates (200). A new password or disabling
/// revokes the user's sessions; role changes show on the next check. An admin's session cannot
/// disable its own account (409); an API key may disable anyone.
#[utoipa::path(put, path = "/v1/admin/users/{username}", tag = "service", request_body = PutUser,
    params(("username" = String, Path)),
    responses(
        (status = 200, description = "Updated", body = crate::openapi::UserResponse),
        (status = 201, description = "Created", body = crate::openapi::UserResponse),
        (status = 400, description = "invalid_request", body = crate::openapi::ErrorBody),
        (status = 401, description = "unauthenticated", body = crate::openapi::ErrorBody),
        (status = 403, description = "forbidden / csrf_failed", body = crate::openapi::ErrorBody),
        (status = 409, description = "conflict: an admin's session disabling its own account", body = crate::openapi::ErrorBody),
        (status = 503, description = "store_unavailable", body = crate::openapi::ErrorBody)))]
pub async fn put_user(
    State(state): State<AppState>,
    Operator(operator): Operator,
    ApiPath(name): ApiPath<String>,
    ApiJson(req): ApiJson<PutUser>,
) -> ApiResult<Response> {
    let changes = UserChanges { password: req.password, roles: req.roles, disabled: req.disabled };
    let (user, created) = state.service.put_user(&operator, &name, changes).await?;
    let status = if created { StatusCode::CREATED } else { StatusCode::OK };
    Ok(no_store((status, Json(UserResponse { user: &user }))))
}

/// `GET /v1/admin/users/{username}`.
#[utoipa::path(get, path = "/v1/admin/users/{username}", tag = "service",
    params(("username" = String, Path)),
    responses(
        (status = 200, description = "The user", body = crate::openapi::UserResponse),
        (status = 401, description = "unauthenticated", body = crate::openapi::ErrorBody),
        (status = 403, description = "forbidden", body = crate::openapi::ErrorBody),
        (status = 404, description = "not_found", body = crate::openapi::ErrorBody),
        (status = 503, description = "store_unavailable", body = crate::openapi::ErrorBody)))]
pub async fn get_user(
    State(state): State<AppState>,
    _operator: Operator,
    ApiPath(name): ApiPath<String>,
) -> ApiResult<Response> {
    let user = state.service.user(&name).await?;
    Ok(no_store(Json(UserResponse { user: &user })))
}

/// `POST /v1/admin/sessions` body.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateSession {
    username: String,
    ip: Option<String>,
    user_agent: Option<String>,
    data: Option<Value>,
}

/// `POST /v1/admin/sessions`: a session for an app that checks credentials itself. The token is
/// in the body: this is the one place it is.
#[utoipa::path(post, path = "/v1/admin/sessions", tag = "service", request_body = CreateSession,
    responses(
        (status = 201, description = "Created", body = crate::openapi::SessionWithToken),
        (status = 400, description = "invalid_request", body = crate::openapi::ErrorBody),
        (status = 401, description = "unauthenticated", body = crate::openapi::ErrorBody),
        (status = 403, description = "forbidden (or the user is disabled)", body = crate::openapi::ErrorBody),
        (status = 404, description = "not_found", body = crate::openapi::ErrorBody),
        (status = 413, description = "payload_too_large", body = crate::openapi::ErrorBody),
        (status = 503, description = "store_unavailable", body = crate::openapi::ErrorBody)))]
pub async fn create_session(
    State(state): State<AppState>,
    Operator(operator): Operator,
    ExactJson(req): ExactJson<CreateSession>,
) -> ApiResult<Response> {
    let client = ClientInfo { ip: req.ip, user_agent: req.user_agent };
    let issued =
        state.service.create_session_for(&operator, &req.username, client, req.data).await?;
    let body = SessionWithToken { token: issued.token.expose(), session: issued.auth.view(None) };
    Ok(no_store((StatusCode::CREATED, Json(body))))
}

/// `POST /v1/admin/sessions/validate` body.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Validate {
    token: String,
    /// Also accept a session scoped to this audience (one traded for a grant).
    audience: Option<String>,
}

/// `POST /v1/admin/sessions/validate`: `{session}` for a live token, else 401.
#[utoipa::path(post, path = "/v1/admin/sessions/validate", tag = "service", request_body = Validate,
    responses(
        (status = 200, description = "Live", body = crate::openapi::SessionOnly),
        (status = 400, description = "invalid_request", body = crate::openapi::ErrorBody),
        (status = 401, description = "Not a live session (or the caller is not authenticated)", body = crate::openapi::ErrorBody),
        (status = 403, description = "forbidden", body = crate::openapi::ErrorBody),
        (status = 503, description = "store_unavailable", body = crate::openapi::ErrorBody)))]
pub async fn validate(
    State(state): State<AppState>,
    Operator(operator): Operator,
    ApiJson(req): ApiJson<Validate>,
) -> ApiResult<Response> {
    let auth = state.service.validate(&operator, &req.token, req.audience.as_deref()).await?;
    Ok(no_store(Json(SessionOnly { session: auth.view(None) })))
}

/// Query of the session list.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListQuery {
    username: String,
}

/// `GET /v1/admin/sessions?username=U`.
#[utoipa::path(get, path = "/v1/admin/sessions", tag = "service",
    params(("username" = String, Query)),
    responses(
        (status = 200, description = "The user's sessions", body = crate::openapi::SessionList),
        (status = 400, description = "invalid_request", body = crate::openapi::ErrorBody),
        (status = 401, description = "unauthenticated", body = crate::openapi::ErrorBody),
        (status = 403, description = "forbidden", body = crate::openapi::ErrorBody),
        (status = 404, description = "not_found", body = crate::openapi::ErrorBody),
        (status = 503, description = "store_unavailable", body = crate::openapi::ErrorBody)))]
pub async fn list_sessions(
    State(state): State<AppState>,
    Operator(operator): Operator,
    ApiQuery(q): ApiQuery<ListQuery>,
) -> ApiResult<Response> {
    let all = state.service.list_sessions(&operator, Some(&q.username)).await?;
    let views: Vec<_> = all.iter().map(|a| a.view(None)).collect();
    Ok(no_store(Json(SessionList { sessions: views })))
}

/// `DELETE /v1/admin/sessions/{id}`.
#[utoipa::path(delete, path = "/v1/admin/sessions/{id}", tag = "service",
    params(("id" = String, Path, description = "ses_…")),
    responses(
        (status = 204, description = "Revoked"),
        (status = 401, description = "unauthenticated", body = crate::openapi::ErrorBody),
        (status = 403, description = "forbidden", body = crate::openapi::ErrorBody),
        (status = 404, description = "not_found", body = crate::openapi::ErrorBody),
        (status = 503, description = "store_unavailable", body = crate::openapi::ErrorBody)))]
pub async fn revoke_session(
    State(state): State<AppState>,
    Operator(operator): Operator,
    client: Client,
    ApiPath(id): ApiPath<String>,
) -> ApiResult<Response> {
    state.service.revoke_session(&operator, &id, &client).await?;
    Ok(no_store(StatusCode::NO_CONTENT))
}

/// `DELETE /v1/admin/users/{username}/sessions`.
#[utoipa::path(delete, path = "/v1/admin/users/{username}/sessions", tag = "service",
    params(("username" = String, Path)),
    responses(
        (status = 200, description = "How many were revoked", body = crate::openapi::RevokedCount),
        (status = 401, description = "unauthenticated", body = crate::openapi::ErrorBody),
        (status = 403, description = "forbidden", body = crate::openapi::ErrorBody),
        (status = 404, description = "not_found", body = crate::openapi::ErrorBody),
        (status = 503, description = "store_unavailable", body = crate::openapi::ErrorBody)))]
pub async fn revoke_user_sessions(
    State(state): State<AppState>,
    Operator(operator): Operator,
    client: Client,
    ApiPath(name): ApiPath<String>,
) -> ApiResult<Response> {
    let revoked = state.service.revoke_user_sessions(&operator, &name, &client).await?;
    Ok(no_store(Json(RevokedCount { revoked })))
}
