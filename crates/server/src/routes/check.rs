//! `GET /v1/auth/check`: forward-auth for nginx `auth_request`, Traefik and Caddy. An empty 200
//! with the user in `X-Cloakroom-*` headers, 401 without a valid session, 403 without the asked
//! role, 503 when the store cannot answer. The body is empty on success so proxies keep their
//! upstream connections alive. When the guarded request changes state (`X-Original-Method` /
//! `X-Forwarded-Method`), cookie callers need the CSRF token and an allowed origin, as for a
//! direct write.

use axum::extract::{Request, State};
use axum::http::request::Parts;
use axum::http::{HeaderName, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;

use crate::error::ApiError;
use crate::extract::{
    ApiQuery, Audience, Caller, ForwardedMethod, Intent, forwarded_method, is_unsafe,
};
use crate::state::AppState;

// The answer's header names, made once (a name given as text is parsed on every insert).
const X_USER_ID: HeaderName = HeaderName::from_static("x-cloakroom-user-id");
const X_USERNAME: HeaderName = HeaderName::from_static("x-cloakroom-username");
const X_ROLES: HeaderName = HeaderName::from_static("x-cloakroom-roles");
const X_SESSION_ID: HeaderName = HeaderName::from_static("x-cloakroom-session-id");
const X_CSRF_TOKEN: HeaderName = HeaderName::from_static("x-cloakroom-csrf-token");
const X_REASON: HeaderName = HeaderName::from_static("x-cloakroom-reason");
const X_LOGIN: HeaderName = HeaderName::from_static("x-cloakroom-login");
const X_ORIGINAL_URI: HeaderName = HeaderName::from_static("x-original-uri");
const X_FORWARDED_URI: HeaderName = HeaderName::from_static("x-forwarded-uri");

/// Query of the check.
#[derive(Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CheckQuery {
    role: Option<String>,
    /// Also accept a session scoped to this service (one traded for a grant).
    audience: Option<String>,
}

/// Forward-auth check for nginx `auth_request`, Traefik `forwardAuth` and Caddy `forward_auth`.
#[utoipa::path(get, path = "/v1/auth/check", tag = "forward-auth",
    params(
        ("role" = Option<String>, Query, description = "403 unless the user has this role"),
        ("audience" = Option<String>, Query, description = "Also accept a session scoped to this service")),
    responses(
        (status = 200, description = "Allowed: X-Cloakroom-User-Id, -Username, -Roles, -Session-Id and -Csrf-Token headers, empty body"),
        (status = 400, description = "Malformed query", body = crate::openapi::ErrorBody),
        (status = 401, description = "unauthenticated, with X-Cloakroom-Reason: login and X-Cloakroom-Login (the login page's URL, with the original URL as `next`)", body = crate::openapi::ErrorBody),
        (status = 403, description = "forbidden / csrf_failed / origin_mismatch", body = crate::openapi::ErrorBody),
        (status = 503, description = "store_unavailable", body = crate::openapi::ErrorBody)))]
pub async fn check(State(state): State<AppState>, req: Request) -> Response {
    // (`cloakroom serve` answers this route before the router, with [`answer`] from `serve.rs`:
    // it sits in front of every request of the apps behind a proxy.)
    let (parts, _) = req.into_parts();
    answer(&state, &parts).await
}

/// The check of the request whose head is `parts`.
///
/// The proxy asks with GET, but the request it guards may be a POST: when `X-Original-Method`
/// (nginx, by configuration) or `X-Forwarded-Method` (Traefik, Caddy) names a state-changing
/// method, a cookie caller must pass the same Origin and CSRF checks as a direct write. The check
/// never rotates a token: a proxy does not hand the check's `Set-Cookie` to the browser (the next
/// request to Cloakroom itself rotates), or a role change would log the user out.
pub async fn answer(state: &AppState, parts: &Parts) -> Response {
    let mut response = decide(state, parts).await;
    // Served before the router by `cloakroom serve`: the common headers are added here.
    crate::routes::harden(response.headers_mut(), &state.config);
    response
}

async fn decide(state: &AppState, parts: &Parts) -> Response {
    let query = match parts.uri.query() {
        None => Ok(CheckQuery::default()),
        Some(_) => ApiQuery::from_uri(&parts.uri),
    };
    let outcome = match query {
        Ok(q) => {
            // A scoped session passes only the check of its own audience.
            let audience = Audience::For(q.audience.as_deref());
            Caller::optional_for(parts, state, intent(parts), audience, false)
                .await
                .and_then(|c| c.ok_or_else(ApiError::unauthenticated))
                .and_then(|caller| allowed(caller, &q))
        }
        Err(e) => Err(e),
    };
    match outcome {
        Ok(caller) => {
            crate::metrics::auth_check("allowed");
            let s = &caller.session;
            let mut r = StatusCode::OK.into_response();
            let h = r.headers_mut();
            // Usernames, ids and roles are restricted to header-safe ASCII at validation.
            for (name, value) in [
                (X_USER_ID, s.user_id_text().as_str()),
                (X_USERNAME, s.username()),
                (X_ROLES, s.roles_joined()),
                (X_SESSION_ID, s.session_id_text().as_str()),
                // For apps that prefer tokens in their own forms (also under the proxy).
                (X_CSRF_TOKEN, s.csrf_token().expose()),
            ] {
                if let Ok(v) = HeaderValue::from_str(value) {
                    h.insert(name, v);
                }
            }
            h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
            r
        }
        Err(e) => {
            let outcome = match e.status() {
                StatusCode::UNAUTHORIZED => "unauthenticated",
                StatusCode::FORBIDDEN => "forbidden",
                _ => "error",
            };
            crate::metrics::auth_check(outcome);
            let login = e.status() == StatusCode::UNAUTHORIZED;
            let mut r = e.into_response();
            if login {
                let h = r.headers_mut();
                h.insert(X_REASON, HeaderValue::from_static("login"));
                if let Ok(v) = HeaderValue::from_str(&login_url(state, &parts.headers)) {
                    h.insert(X_LOGIN, v);
                }
            }
            r
        }
    }
}

/// The login page's URL with the guarded request's original URL as `next`, escaped here so
/// that a proxy's configuration can redirect to it as is (`return 302 $cr_login`). The original
/// URL comes from `X-Original-URI` (nginx) or `X-Forwarded-Uri` (Traefik, Caddy); one that
/// could lead off this origin is left out.
fn login_url(state: &AppState, headers: &axum::http::HeaderMap) -> String {
    let login = format!("{}/login", state.config.base_path);
    let original = [X_ORIGINAL_URI, X_FORWARDED_URI]
        .iter()
        .find_map(|name| headers.get(name))
        .and_then(|v| v.to_str().ok())
        .filter(|uri| crate::pages::is_safe_next(uri));
    match original {
        Some(uri) => {
            let query = serde_urlencoded::to_string([("next", uri)]).unwrap_or_default();
            format!("{login}?{query}")
        }
        None => login,
    }
}

/// What the guarded request is about to do. The write rules apply when the proxy reports a
/// state-changing method, and also to a WebSocket handshake (a GET, which a sibling site could
/// open with the `Lax` cookie) and to any request with an `Origin` when the proxy sends no
/// method header at all (browsers send `Origin` on every `POST`; a recipe that forgot
/// `X-Original-Method` must not open the app's forms to other sites; warned about once).
fn intent(parts: &Parts) -> Intent {
    static WARNED: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);
    let h = &parts.headers;
    let websocket = || {
        h.get("sec-fetch-mode").is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"websocket"))
            || h.contains_key(header::UPGRADE)
    };
    match forwarded_method(h) {
        ForwardedMethod::Unsafe => Intent::ForwardedWrite,
        _ if websocket() => Intent::ForwardedWrite,
        ForwardedMethod::Absent if h.contains_key(header::ORIGIN) => {
            if !WARNED.swap(true, std::sync::atomic::Ordering::Relaxed) {
                tracing::warn!(
                    "a forward-auth check came without X-Original-Method or X-Forwarded-Method: \
                     requests with an Origin get the write rules; set the header in the proxy \
                     (docs/integrations.md)"
                );
            }
            Intent::ForwardedWrite
        }
        _ if is_unsafe(&parts.method) => Intent::Write,
        _ => Intent::Read,
    }
}

/// The caller (whose session counts for the asked audience) passes if it holds the asked role.
fn allowed(caller: Caller, q: &CheckQuery) -> Result<Caller, ApiError> {
    match q.role.as_deref() {
        Some(role) if !caller.session.has_role(role) => {
            Err(ApiError::forbidden("the session's user lacks the required role"))
        }
        _ => Ok(caller),
    }
}
