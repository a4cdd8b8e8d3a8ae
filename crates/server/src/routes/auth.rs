//! Login, logout and password change.

use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;

use crate::error::ApiResult;
use crate::extract::{
    ApiJson, Audience, Caller, Client, Intent, JsonOrForm, Via, check_origin, find_cookie,
};
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

/// A password login as the API and the login page make it: the origin check (login CSRF: a
/// cross-site page must not log the victim into the attacker's account), then the use case with
/// the session token the browser had, which it replaces. The caller sends the cookie.
pub(crate) async fn password_login(
    state: &AppState,
    client: &Client,
    headers: &HeaderMap,
    username: &str,
    password: String,
) -> ApiResult<cloakroom_core::manager::Issued> {
    check_origin(headers, &state.config)?;
    let previous = find_cookie(headers, &state.config.cookie_name);
    Ok(state.service.log_in(username, password, client, previous).await?)
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
    if let Some(caller) =
        Caller::optional_for(&parts, &state, Intent::Write, Audience::Any, false).await?
    {
        state.service.log_out(&caller.session).await?;
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
    let changed = state
        .service
        .change_password(
            &caller.session,
            &caller.token,
            &client,
            req.current_password,
            req.new_password,
        )
        .await?;
    let (auth, token) = (changed.session, changed.token);
    // Bearer callers hold the token themselves: they get the new one in the body.
    let body = crate::routes::bodies::SessionWithCsrf {
        session: auth.view(None),
        csrf_token: auth.session.csrf.expose(),
        token: (caller.via == Via::Bearer).then(|| token.expose()),
    };
    let mut response = no_store(axum::Json(body));
    if caller.via == Via::Cookie {
        response.headers_mut().append(header::SET_COOKIE, state.session_cookie(&token.expose()));
    }
    Ok(response.into_response())
}
