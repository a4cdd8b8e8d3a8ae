//! HTTP routes, one file per resource, and the helpers they share.

pub mod admin;
pub mod auth;
pub mod bodies;
pub mod check;
pub mod grants;
pub mod health;
pub mod session;
pub mod sessions;

use axum::Json;
use axum::http::{HeaderMap, HeaderValue, header};
use axum::response::{IntoResponse, Response};
use cloakroom_core::Authenticated;

use crate::config::Config;

/// Adds what every response carries, errors and the forward-auth check included:
/// `X-Content-Type-Options: nosniff` (a browser never runs a JSON body or an error as a script
/// or page), and, when the public origin is HTTPS, `Strict-Transport-Security` (a year), so a
/// browser that met Cloakroom once never sends the cookie's requests over plain HTTP again.
pub(crate) fn harden(headers: &mut HeaderMap, config: &Config) {
    headers.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    if config.public_origin.starts_with("https://") {
        headers.insert(
            header::STRICT_TRANSPORT_SECURITY,
            HeaderValue::from_static("max-age=31536000"),
        );
    }
}

/// `{session, csrf_token}` with `Cache-Control: no-store`.
pub(crate) fn session_body(auth: &Authenticated) -> Response {
    let csrf_token = auth.session.csrf.expose();
    no_store(Json(bodies::SessionWithCsrf { session: auth.view(None), csrf_token, token: None }))
}

/// Any response, with `Cache-Control: no-store`.
pub(crate) fn no_store(body: impl IntoResponse) -> Response {
    let mut r = body.into_response();
    r.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    r
}
