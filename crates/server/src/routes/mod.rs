//! HTTP routes, one file per resource, and the helpers they share.

pub mod admin;
pub mod auth;
pub mod check;
pub mod grants;
pub mod health;
pub mod session;
pub mod sessions;

use axum::Json;
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use cloakroom_core::Authenticated;
use serde_json::json;

/// `{session, csrf_token}` with `Cache-Control: no-store`.
pub(crate) fn session_body(auth: &Authenticated) -> Response {
    no_store(Json(json!({ "session": auth.view(None), "csrf_token": auth.session.csrf.expose() })))
}

/// Any response, with `Cache-Control: no-store`.
pub(crate) fn no_store(body: impl IntoResponse) -> Response {
    let mut r = body.into_response();
    r.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    r
}
