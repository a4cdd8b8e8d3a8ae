//! CORS for a single-page app on another origin named in `cors_origins` (empty by default: a
//! plain `allowed_origins` entry may write with the CSRF token but never read a response): its
//! `fetch(…, {credentials: "include"})` calls get `Access-Control-Allow-Origin` (that origin,
//! never `*`) with credentials, and preflights are answered. Any other origin gets no CORS
//! header, so the browser keeps the response from it; a preflight from it is 403.
//!
//! CORS only decides what a page may *read*. What a request may *do* is still the Origin and
//! CSRF rules of `extract.rs` (a CORS origin is also an allowed origin): an SPA reads its CSRF
//! token from `GET /v1/session` and sends it back as `X-CSRF-Token`.

use axum::extract::{Request, State};
use axum::http::{HeaderValue, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use crate::error::ApiError;
use crate::state::AppState;

/// What a preflight may ask for: every method and request header the API uses.
const METHODS: &str = "GET, POST, PUT, DELETE";
const HEADERS: &str = "content-type, x-csrf-token, if-match, authorization";
/// Response headers a page may read besides the simple ones.
const EXPOSE: &str = "etag, retry-after";

/// The layer: answers preflights, and marks responses to allowed origins readable.
pub async fn cors(State(state): State<AppState>, req: Request, next: Next) -> Response {
    let has_origin = req.headers().contains_key(header::ORIGIN);
    let origin = cloakroom_axum::request::allowed_origin(req.headers(), &state.config.cors_origins)
        .and_then(|o| HeaderValue::from_str(o).ok());
    let preflight = req.method() == Method::OPTIONS
        && req.headers().contains_key(header::ACCESS_CONTROL_REQUEST_METHOD);
    let mut response = if preflight {
        match &origin {
            Some(_) => {
                let mut r = StatusCode::NO_CONTENT.into_response();
                let h = r.headers_mut();
                h.insert(header::ACCESS_CONTROL_ALLOW_METHODS, HeaderValue::from_static(METHODS));
                h.insert(header::ACCESS_CONTROL_ALLOW_HEADERS, HeaderValue::from_static(HEADERS));
                h.insert(header::ACCESS_CONTROL_MAX_AGE, HeaderValue::from_static("600"));
                r
            }
            None => ApiError::origin_mismatch().into_response(),
        }
    } else {
        next.run(req).await
    };
    let h = response.headers_mut();
    if let Some(origin) = origin {
        h.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, origin);
        h.insert(header::ACCESS_CONTROL_ALLOW_CREDENTIALS, HeaderValue::from_static("true"));
        h.insert(header::ACCESS_CONTROL_EXPOSE_HEADERS, HeaderValue::from_static(EXPOSE));
    }
    if has_origin || !state.config.cors_origins.is_empty() {
        // The answer depends on the Origin: shared caches must not hand one origin's to another.
        h.append(header::VARY, HeaderValue::from_static("origin"));
    }
    if preflight {
        crate::routes::harden(h, &state.config);
    }
    response
}
