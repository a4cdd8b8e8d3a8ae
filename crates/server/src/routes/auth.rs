//! Login, logout and password change.

use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use cloakroom_core::audit::{AuditEvent, AuditKind};
use cloakroom_core::manager::LoginOutcome;
use cloakroom_core::password::{MAX_CHARS, Password};
use cloakroom_core::{SessionId, UserId, Username};
use serde::Deserialize;

use crate::error::{ApiError, ApiResult};
use crate::extract::{ApiJson, Caller, Client, Intent, JsonOrForm, Via, check_origin, find_cookie};
use crate::routes::{no_store, session_body};
use crate::state::AppState;

/// `POST /v1/login` body (JSON or form).
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct LoginRequest {
    username: String,
    password: String,
    /// Sent by HTML forms; login needs no session CSRF token (Origin is checked instead).
    #[serde(default)]
    #[allow(dead_code)]
    csrf_token: Option<String>,
}

/// The throttle key for a login name: normalized, bounded, even when it is no valid username.
fn account_key(name: &str) -> String {
    name.trim().to_ascii_lowercase().chars().take(64).collect()
}

/// `POST /v1/login`.
#[utoipa::path(post, path = "/v1/login", tag = "sessions", security(()),
    request_body(content((LoginRequest = "application/json"), (LoginRequest = "application/x-www-form-urlencoded"))),
    responses(
        (status = 200, description = "Logged in: the cookie is set", body = crate::openapi::SessionWithCsrf),
        (status = 400, description = "Malformed body", body = crate::openapi::ErrorBody),
        (status = 401, description = "invalid_credentials", body = crate::openapi::ErrorBody),
        (status = 403, description = "origin_mismatch", body = crate::openapi::ErrorBody),
        (status = 429, description = "rate_limited, with Retry-After", body = crate::openapi::ErrorBody),
        (status = 503, description = "store_unavailable", body = crate::openapi::ErrorBody)))]
pub async fn login(
    State(state): State<AppState>,
    client: Client,
    headers: HeaderMap,
    JsonOrForm(req): JsonOrForm<LoginRequest>,
) -> ApiResult<Response> {
    let issued = password_login(&state, &client, &headers, &req.username, req.password).await?;
    let mut response = session_body(&issued.auth);
    response.headers_mut().append(header::SET_COOKIE, state.session_cookie(&issued.token.expose()));
    Ok(response)
}

/// A password login, as the API and the login page do it: origin check, throttling, the same
/// answer and Argon2 work for every failure, audit events, a new session that replaces the one
/// the browser had. The caller sends the cookie.
pub(crate) async fn password_login(
    state: &AppState,
    client: &Client,
    headers: &HeaderMap,
    username: &str,
    password: String,
) -> ApiResult<cloakroom_core::manager::Issued> {
    let state = state.clone();
    let req = LoginRequest { username: username.to_owned(), password, csrf_token: None };
    // Login CSRF: a cross-site page must not log the victim into the attacker's account.
    check_origin(headers, &state.config)?;
    let account = account_key(&req.username);
    let ip = client.ip;
    // The attempt takes its place in the windows before the (slow) verification, so concurrent
    // guesses cannot all pass the check.
    let attempt = match state.throttle.reserve(&account, ip).await? {
        Ok(attempt) => attempt,
        Err(wait) => {
            metrics::counter!("cloakroom_logins_total", "outcome" => "throttled").increment(1);
            let mut e = AuditEvent::new(AuditKind::LoginThrottled, "self").ip(client.ip_text());
            if let Ok(u) = Username::parse(&req.username) {
                e = e.user(None, &u);
            }
            state.audit(e).await;
            return Err(ApiError::rate_limited(wait));
        }
    };
    let password = Password::new(req.password);
    let username = Username::parse(&req.username).ok();
    // Too long to be anyone's password, or no valid name: the same answer, the same Argon2 work.
    let outcome = match &username {
        Some(name) if password.expose().chars().count() <= MAX_CHARS => {
            state.manager.check_password(name, &password).await?
        }
        _ => {
            state
                .manager
                .hasher()
                .verify(&password, None)
                .await
                .map_err(cloakroom_core::Error::from)?;
            LoginOutcome::Invalid { user: None }
        }
    };
    let record = match outcome {
        LoginOutcome::Success(record) => record,
        LoginOutcome::Invalid { user } => {
            attempt.failed();
            metrics::counter!("cloakroom_logins_total", "outcome" => "failed").increment(1);
            let mut e = AuditEvent::new(AuditKind::LoginFailed, "self").ip(client.ip_text());
            let detail = match &user {
                None => "unknown user",
                Some(u) if u.disabled => "account disabled",
                Some(u) if !u.has_password => "no password set",
                Some(_) => "wrong password",
            };
            if let Some(name) = &username {
                e = e.user(user.as_ref().map(|u| &u.id), name);
            }
            state.audit(e.detail(detail)).await;
            return Err(ApiError::invalid_credentials());
        }
    };
    attempt.succeeded().await?;

    // A session the client already had ends here: a new token at every authentication.
    let previous = match find_cookie(headers, &state.config.cookie_name) {
        Some(token) => state.manager.authenticate(token).await.ok().flatten(),
        None => None,
    };

    let issued = state.manager.create(&record.user, client.info(), None).await?;
    metrics::counter!("cloakroom_logins_total", "outcome" => "succeeded").increment(1);
    metrics::counter!("cloakroom_sessions_created_total", "how" => "login").increment(1);
    let user = &record.user;
    state
        .audit(
            AuditEvent::new(AuditKind::LoginSucceeded, "self")
                .user(Some(&user.id), &user.username)
                .session(&issued.auth.session.id)
                .ip(client.ip_text()),
        )
        .await;
    for id in &issued.evicted {
        let (kind, why) = (AuditKind::SessionEvicted, "max_sessions_per_user");
        revoked_audit(&state, kind, "system", (&user.id, &user.username), id, why).await;
    }
    if let Some(prev) = previous
        && state.manager.revoke(&prev.session_id()).await.ok().flatten().is_some()
    {
        let (kind, why) = (AuditKind::SessionRevoked, "replaced by a new login");
        let user = (&prev.user_id(), &prev.username_owned());
        revoked_audit(&state, kind, "self", user, &prev.session_id(), why).await;
    }
    Ok(issued)
}

async fn revoked_audit(
    state: &AppState,
    kind: AuditKind,
    actor: &str,
    (user_id, username): (&UserId, &Username),
    id: &SessionId,
    why: &str,
) {
    metrics::counter!("cloakroom_revocations_total", "reason" => kind.as_str()).increment(1);
    state
        .audit(AuditEvent::new(kind, actor).user(Some(user_id), username).session(id).detail(why))
        .await;
}

/// `POST /v1/logout`: ends the current session (a login session or one scoped to a service) and
/// clears the cookie. Without a valid session it still clears the cookie (idempotent); with one, a
/// cookie caller needs the CSRF token.
#[utoipa::path(post, path = "/v1/logout", tag = "sessions",
    responses(
        (status = 204, description = "Ended; the cookie is cleared"),
        (status = 401, description = "unauthenticated", body = crate::openapi::ErrorBody),
        (status = 403, description = "csrf_failed / origin_mismatch", body = crate::openapi::ErrorBody),
        (status = 503, description = "store_unavailable", body = crate::openapi::ErrorBody)))]
pub async fn logout(
    State(state): State<AppState>,
    parts: axum::http::request::Parts,
) -> ApiResult<Response> {
    // Any live session the request presents ends here, a scoped one (traded for a grant) too:
    // `Caller::optional` skips those, as they are no session for Cloakroom's own endpoints, but
    // ending one is what its holder asks, and answering 204 while it lived on would lie.
    // No rotation: the session is about to end.
    if let Some(caller) = Caller::optional_for(&parts, &state, Intent::Write, false).await? {
        if state.manager.revoke(&caller.session.session_id()).await?.is_some() {
            metrics::counter!("cloakroom_revocations_total", "reason" => "logout").increment(1);
            state
                .audit(AuditEvent::new(AuditKind::Logout, "self").of_session(&caller.session))
                .await;
        }
    }
    let mut response = no_store(StatusCode::NO_CONTENT);
    let headers = response.headers_mut();
    headers.append(header::SET_COOKIE, state.clear_cookie());
    headers.insert("clear-site-data", HeaderValue::from_static("\"cookies\""));
    Ok(response)
}

/// `POST /v1/password` body.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PasswordChange {
    pub(crate) current_password: String,
    pub(crate) new_password: String,
}

/// `POST /v1/password`: needs the current password; revokes every other session and gives the
/// current one a new token (in the cookie; in the body too for bearer callers, who hold it).
#[utoipa::path(post, path = "/v1/password", tag = "sessions", request_body = PasswordChange,
    responses(
        (status = 200, description = "Changed; other sessions revoked, this one rotated", body = crate::openapi::SessionWithCsrf),
        (status = 400, description = "Policy or malformed body", body = crate::openapi::ErrorBody),
        (status = 401, description = "unauthenticated / invalid_credentials", body = crate::openapi::ErrorBody),
        (status = 403, description = "csrf_failed / origin_mismatch", body = crate::openapi::ErrorBody),
        (status = 429, description = "rate_limited", body = crate::openapi::ErrorBody),
        (status = 503, description = "store_unavailable", body = crate::openapi::ErrorBody)))]
pub async fn change_password(
    State(state): State<AppState>,
    client: Client,
    caller: Caller,
    ApiJson(req): ApiJson<PasswordChange>,
) -> ApiResult<Response> {
    let (user_id, username) = (caller.session.user_id(), caller.session.username_owned());
    let account = account_key(username.as_str());
    let attempt = match state.throttle.reserve(&account, client.ip).await? {
        Ok(attempt) => attempt,
        Err(wait) => return Err(ApiError::rate_limited(wait)),
    };
    let current = Password::new(req.current_password);
    match state.manager.check_password(&username, &current).await? {
        LoginOutcome::Success(_) => attempt.succeeded().await?,
        LoginOutcome::Invalid { .. } => {
            attempt.failed();
            state
                .audit(
                    AuditEvent::new(AuditKind::LoginFailed, "self")
                        .of_session(&caller.session)
                        .ip(client.ip_text())
                        .detail("wrong current password on password change"),
                )
                .await;
            return Err(ApiError::invalid_credentials());
        }
    }
    let new = Password::new(req.new_password);
    if new.expose() == current.expose() {
        return Err(ApiError::invalid("the new password must differ from the current one"));
    }
    let current_id = caller.session.session_id();
    let (_, revoked) = state.manager.set_password(&user_id, &new, Some(&current_id)).await?;
    state
        .audit(
            AuditEvent::new(AuditKind::PasswordChanged, "self")
                .of_session(&caller.session)
                .ip(client.ip_text()),
        )
        .await;
    if !revoked.is_empty() {
        metrics::counter!("cloakroom_revocations_total", "reason" => "password_changed")
            .increment(revoked.len() as u64);
        state
            .audit(
                AuditEvent::new(AuditKind::SessionsRevoked, "self")
                    .user(Some(&user_id), &username)
                    .detail(format!(
                        "password changed: {} other session(s) revoked",
                        revoked.len()
                    )),
            )
            .await;
    }
    let Some((token, rotated)) = state.manager.rotate(&caller.session, &caller.token, true).await?
    else {
        return Err(ApiError::unauthenticated());
    };
    let event = AuditEvent::new(AuditKind::SessionRotated, "self").of_session(&rotated);
    state.audit(event.detail("password changed")).await;
    let auth = state.manager.details(&rotated).await?.ok_or_else(ApiError::unauthenticated)?;
    let body = match caller.via {
        Via::Cookie => {
            serde_json::json!({ "session": auth.view(None), "csrf_token": auth.session.csrf.expose() })
        }
        Via::Bearer => serde_json::json!({
            "session": auth.view(None), "csrf_token": auth.session.csrf.expose(), "token": token.expose()
        }),
    };
    let mut response = no_store(axum::Json(body));
    if caller.via == Via::Cookie {
        response.headers_mut().append(header::SET_COOKIE, state.session_cookie(&token.expose()));
    }
    Ok(response.into_response())
}
