//! `GET /v1/auth/check`: forward-auth for nginx `auth_request`, Traefik and Caddy. An empty 200
//! with the user in `X-Cloakroom-*` headers, 401 without a valid session, 403 without the asked
//! role, 503 when the store cannot answer. The body is empty on success so proxies keep their
//! upstream connections alive. When the guarded request changes state (`X-Original-Method` /
//! `X-Forwarded-Method`), cookie callers need the CSRF token and an allowed origin, as for a
//! direct write.

use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;

use crate::error::ApiError;
use crate::extract::{ApiQuery, ForwardedCaller};

/// Query of the check.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CheckQuery {
    role: Option<String>,
    /// Also accept a session scoped to this service (one traded for a grant).
    audience: Option<String>,
}

/// The handler.
#[utoipa::path(get, path = "/v1/auth/check", tag = "forward-auth",
    params(
        ("role" = Option<String>, Query, description = "403 unless the user has this role"),
        ("audience" = Option<String>, Query, description = "Also accept a session scoped to this service")),
    responses(
        (status = 200, description = "Allowed: X-Cloakroom-User-Id, -Username, -Roles, -Session-Id headers, empty body"),
        (status = 400, description = "Malformed query", body = crate::openapi::ErrorBody),
        (status = 401, description = "unauthenticated", body = crate::openapi::ErrorBody),
        (status = 403, description = "forbidden / csrf_failed / origin_mismatch", body = crate::openapi::ErrorBody),
        (status = 503, description = "store_unavailable", body = crate::openapi::ErrorBody)))]
pub async fn check(
    ApiQuery(q): ApiQuery<CheckQuery>,
    ForwardedCaller(caller): ForwardedCaller,
) -> Response {
    let outcome = caller.and_then(|caller| match q.role.as_deref() {
        // A scoped session passes only the check of its own audience.
        _ if !caller.session.valid_for(q.audience.as_deref()) => Err(ApiError::unauthenticated()),
        Some(role) if !caller.session.has_role(role) => {
            Err(ApiError::forbidden("the session's user lacks the required role"))
        }
        _ => Ok(caller),
    });
    match outcome {
        Ok(caller) => {
            metrics::counter!("cloakroom_auth_checks_total", "outcome" => "allowed").increment(1);
            let s = &caller.session;
            let mut r = StatusCode::OK.into_response();
            let h = r.headers_mut();
            // Usernames, ids and roles are restricted to header-safe ASCII at validation.
            for (name, value) in [
                ("x-cloakroom-user-id", s.user_id_text().as_str()),
                ("x-cloakroom-username", s.username()),
                ("x-cloakroom-roles", s.roles_joined()),
                ("x-cloakroom-session-id", s.session_id_text().as_str()),
            ] {
                if let Ok(v) = HeaderValue::from_str(value) {
                    h.insert(name, v);
                }
            }
            h.insert(axum::http::header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
            r
        }
        Err(e) => {
            let outcome = match e.status() {
                StatusCode::UNAUTHORIZED => "unauthenticated",
                StatusCode::FORBIDDEN => "forbidden",
                _ => "error",
            };
            metrics::counter!("cloakroom_auth_checks_total", "outcome" => outcome).increment(1);
            e.into_response()
        }
    }
}
