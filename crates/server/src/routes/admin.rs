//! The service API for an application's back end: users and sessions, authenticated by an API key
//! or an `admin` user's session.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Response;
use cloakroom_core::audit::{AuditEvent, AuditKind};
use cloakroom_core::password::Password;
use cloakroom_core::user::normalize_roles;
use cloakroom_core::{Role, SessionId, Timestamp, User, Username};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::error::{ApiError, ApiResult};
use crate::extract::{ApiJson, ApiPath, ApiQuery, Client, ExactJson, Service};
use crate::routes::no_store;
use crate::routes::session::DATA_LIMIT;
use crate::state::AppState;

fn username(text: &str) -> Result<Username, ApiError> {
    Username::parse(text).map_err(|e| ApiError::invalid(format!("invalid username: {e}")))
}

async fn existing_user(state: &AppState, name: &str) -> Result<User, ApiError> {
    // A name that cannot exist is simply not found.
    let Ok(name) = Username::parse(name) else {
        return Err(ApiError::not_found("user not found"));
    };
    state.manager.user(&name).await?.ok_or_else(|| ApiError::not_found("user not found"))
}

/// [`existing_user`] that is not disabled (403 otherwise): someone a session or grant may be
/// made for.
pub(crate) async fn active_user(state: &AppState, name: &str) -> Result<User, ApiError> {
    let user = existing_user(state, name).await?;
    if user.disabled {
        return Err(ApiError::forbidden("the user is disabled"));
    }
    Ok(user)
}

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
    service: Service,
    ApiPath(name): ApiPath<String>,
    ApiJson(req): ApiJson<PutUser>,
) -> ApiResult<Response> {
    let name = username(&name)?;
    let roles = req
        .roles
        .map(|rs| {
            rs.iter()
                .map(|r| {
                    Role::parse(r)
                        .map_err(|e| ApiError::invalid(format!("invalid role `{r}`: {e}")))
                })
                .collect::<Result<Vec<_>, _>>()
        })
        .transpose()?;
    // The domain refuses too many roles as well; checked here first so that a refused request
    // changes nothing (a new password would be set before the roles).
    if let Some(rs) = &roles {
        normalize_roles(rs.clone())
            .map_err(|e| ApiError::invalid(format!("invalid roles: {e}")))?;
    }
    let password = req.password.map(Password::new);
    if let Some(p) = &password {
        p.check_policy().map_err(|e| ApiError::invalid(e.to_string()))?;
    }
    let actor = service.actor.as_str();
    let (user, created) = match state.manager.user(&name).await? {
        None => {
            let user = state
                .manager
                .create_user(name.clone(), password.as_ref(), roles.clone().unwrap_or_default())
                .await?;
            state
                .audit(
                    AuditEvent::new(AuditKind::UserCreated, actor)
                        .user(Some(&user.id), &user.username),
                )
                .await;
            let user = if req.disabled == Some(true) {
                apply_flags(&state, &service, &user, None, Some(true)).await?
            } else {
                user
            };
            (user, true)
        }
        Some(user) => {
            let mut user = user;
            if let Some(p) = &password {
                let (updated, revoked) = state.manager.set_password(&user.id, p, None).await?;
                state
                    .audit(
                        AuditEvent::new(AuditKind::PasswordChanged, actor)
                            .user(Some(&user.id), &user.username)
                            .detail(format!("{} session(s) revoked", revoked.len())),
                    )
                    .await;
                metrics::counter!("cloakroom_revocations_total", "reason" => "password_changed")
                    .increment(revoked.len() as u64);
                user = updated;
            }
            if roles.is_some() || req.disabled.is_some() {
                user = apply_flags(&state, &service, &user, roles, req.disabled).await?;
            }
            (user, false)
        }
    };
    let status = if created { StatusCode::CREATED } else { StatusCode::OK };
    Ok(no_store((status, Json(json!({ "user": user })))))
}

/// Applies roles and the disabled flag, auditing what changed.
async fn apply_flags(
    state: &AppState,
    service: &Service,
    before: &User,
    roles: Option<Vec<Role>>,
    disabled: Option<bool>,
) -> Result<User, ApiError> {
    let (user, revoked) =
        state.manager.update_user(service.as_actor(), &before.id, roles, disabled).await?;
    let actor = service.actor.as_str();
    if user.roles != before.roles {
        let list = user.roles.iter().map(Role::as_str).collect::<Vec<_>>().join(",");
        state
            .audit(
                AuditEvent::new(AuditKind::RolesChanged, actor)
                    .user(Some(&user.id), &user.username)
                    .detail(format!("roles: [{list}]")),
            )
            .await;
    }
    if user.disabled != before.disabled {
        let kind = if user.disabled { AuditKind::UserDisabled } else { AuditKind::UserEnabled };
        let mut e = AuditEvent::new(kind, actor).user(Some(&user.id), &user.username);
        if user.disabled {
            e = e.detail(format!("{} session(s) revoked", revoked.len()));
            metrics::counter!("cloakroom_revocations_total", "reason" => "user_disabled")
                .increment(revoked.len() as u64);
        }
        state.audit(e).await;
    }
    Ok(user)
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
    _service: Service,
    ApiPath(name): ApiPath<String>,
) -> ApiResult<Response> {
    let user = existing_user(&state, &name).await?;
    Ok(no_store(Json(json!({ "user": user }))))
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
    service: Service,
    ExactJson(req): ExactJson<CreateSession>,
) -> ApiResult<Response> {
    let user = active_user(&state, &req.username).await?;
    if let Some(d) = &req.data {
        if !d.is_object() {
            return Err(ApiError::invalid("data must be a JSON object"));
        }
        if d.to_string().len() > DATA_LIMIT {
            return Err(ApiError::payload_too_large("session data is limited to 16 KiB"));
        }
    }
    if let Some(ip) = &req.ip
        && ip.parse::<std::net::IpAddr>().is_err()
    {
        return Err(ApiError::invalid("ip must be an IP address"));
    }
    let client = cloakroom_core::manager::ClientInfo { ip: req.ip, user_agent: req.user_agent };
    let issued = state.manager.create(&user, client, req.data).await?;
    metrics::counter!("cloakroom_sessions_created_total", "how" => "service").increment(1);
    state
        .audit(
            AuditEvent::new(AuditKind::SessionCreated, service.actor.as_str())
                .user(Some(&user.id), &user.username)
                .session(&issued.auth.session.id),
        )
        .await;
    for id in &issued.evicted {
        state
            .audit(
                AuditEvent::new(AuditKind::SessionEvicted, "system")
                    .user(Some(&user.id), &user.username)
                    .session(id)
                    .detail("max_sessions_per_user"),
            )
            .await;
    }
    let body = json!({ "token": issued.token.expose(), "session": issued.auth.view(None) });
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
    _service: Service,
    ApiJson(req): ApiJson<Validate>,
) -> ApiResult<Response> {
    let session =
        state.manager.authenticate(&req.token).await?.ok_or_else(ApiError::unauthenticated)?;
    if !session.valid_for(req.audience.as_deref()) {
        return Err(ApiError::unauthenticated());
    }
    // The check (cached) decides; the answer shows the whole record, read from the store.
    let auth = state.manager.details(&session).await?.ok_or_else(ApiError::unauthenticated)?;
    Ok(no_store(Json(json!({ "session": auth.view(None) }))))
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
    _service: Service,
    ApiQuery(q): ApiQuery<ListQuery>,
) -> ApiResult<Response> {
    let user = existing_user(&state, &q.username).await?;
    let all = state.manager.store().list_sessions(Some(&user.id), Timestamp::now()).await?;
    let views: Vec<_> = all.iter().map(|a| a.view(None)).collect();
    Ok(no_store(Json(json!({ "sessions": views }))))
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
    service: Service,
    client: Client,
    ApiPath(id): ApiPath<String>,
) -> ApiResult<Response> {
    let id = SessionId::parse(&id).ok_or_else(|| ApiError::not_found("session not found"))?;
    let found = state.manager.store().session_by_id(&id, Timestamp::now()).await?;
    if state.manager.revoke(&id).await?.is_none() {
        return Err(ApiError::not_found("session not found"));
    }
    metrics::counter!("cloakroom_revocations_total", "reason" => "admin").increment(1);
    let mut e = AuditEvent::new(AuditKind::SessionRevoked, service.actor.as_str())
        .session(&id)
        .ip(client.ip_text());
    if let Some(a) = found {
        e = e.user(Some(&a.user.id), &a.user.username);
    }
    state.audit(e.detail("revoked through the service API")).await;
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
    service: Service,
    client: Client,
    ApiPath(name): ApiPath<String>,
) -> ApiResult<Response> {
    let user = existing_user(&state, &name).await?;
    let revoked = state.manager.revoke_user(&user.id, None).await?;
    metrics::counter!("cloakroom_revocations_total", "reason" => "admin")
        .increment(revoked.len() as u64);
    state
        .audit(
            AuditEvent::new(AuditKind::SessionsRevoked, service.actor.as_str())
                .user(Some(&user.id), &user.username)
                .ip(client.ip_text())
                .detail(format!("all sessions: {}", revoked.len())),
        )
        .await;
    Ok(no_store(Json(json!({ "revoked": revoked.len() }))))
}
