//! The caller's own session: `GET /v1/session` and its data, `GET`/`PUT /v1/session/data`.

use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::Response;
use serde_json::Value;

use crate::error::{ApiError, ApiResult};
use crate::extract::{Caller, ExactJson};
use crate::routes::{no_store, session_body};
use crate::state::AppState;

/// Most bytes of session data.
pub const DATA_LIMIT: usize = cloakroom_service::DATA_LIMIT;

/// `GET /v1/session`.
#[utoipa::path(get, path = "/v1/session", tag = "sessions",
    responses(
        (status = 200, description = "The current session", body = crate::openapi::SessionWithCsrf),
        (status = 401, description = "unauthenticated", body = crate::openapi::ErrorBody),
        (status = 503, description = "store_unavailable", body = crate::openapi::ErrorBody)))]
pub async fn get(State(state): State<AppState>, caller: Caller) -> ApiResult<Response> {
    // Checks keep no client details in memory: this reads the whole record.
    Ok(session_body(&state.service.session_details(&caller.session).await?))
}

fn etag(version: u64) -> HeaderValue {
    HeaderValue::from_str(&format!("\"{version}\""))
        .unwrap_or_else(|_| HeaderValue::from_static("\"0\""))
}

/// `GET /v1/session/data`: the object, with its version as `ETag`.
#[utoipa::path(get, path = "/v1/session/data", tag = "sessions",
    responses(
        (status = 200, description = "The session's JSON object, with an ETag", body = Object),
        (status = 401, description = "unauthenticated", body = crate::openapi::ErrorBody),
        (status = 503, description = "store_unavailable", body = crate::openapi::ErrorBody)))]
pub async fn get_data(State(state): State<AppState>, caller: Caller) -> ApiResult<Response> {
    let data = state.service.session_data(&caller.session).await?;
    let mut r = no_store(axum::Json(data.value));
    r.headers_mut().insert(header::ETAG, etag(data.version));
    Ok(r)
}

/// Parses `If-Match`: `*`, `"N"` or `W/"N"`. `Ok(None)` when absent or `*` (any version).
fn if_match(headers: &HeaderMap) -> Result<Option<u64>, ApiError> {
    let Some(v) = headers.get(header::IF_MATCH) else {
        return Ok(None);
    };
    let v = v.to_str().map_err(|_| ApiError::invalid("malformed If-Match"))?.trim();
    if v == "*" {
        return Ok(None);
    }
    let v = v.strip_prefix("W/").unwrap_or(v);
    let n =
        v.strip_prefix('"').and_then(|v| v.strip_suffix('"')).and_then(|v| v.parse::<u64>().ok());
    // A well-formed tag we never issued can never match.
    Ok(Some(n.unwrap_or(0)))
}

/// `PUT /v1/session/data`: replaces the object; with `If-Match`, only if still at that version.
/// A body over 16 KiB is 413 before it is parsed; a number that would not come back exactly
/// (an integer beyond ±2^53, a decimal with more digits than a double keeps) is 400.
#[utoipa::path(put, path = "/v1/session/data", tag = "sessions", request_body = Object,
    params(("If-Match" = Option<String>, Header, description = "The ETag the write is based on")),
    responses(
        (status = 204, description = "Stored; the new ETag in the header"),
        (status = 400, description = "Not a JSON object, or a number that would not be kept exactly", body = crate::openapi::ErrorBody),
        (status = 401, description = "unauthenticated", body = crate::openapi::ErrorBody),
        (status = 403, description = "csrf_failed / origin_mismatch", body = crate::openapi::ErrorBody),
        (status = 412, description = "precondition_failed: If-Match no longer matches", body = crate::openapi::ErrorBody),
        (status = 413, description = "payload_too_large (16 KiB)", body = crate::openapi::ErrorBody),
        (status = 503, description = "store_unavailable", body = crate::openapi::ErrorBody)))]
pub async fn put_data(
    State(state): State<AppState>,
    caller: Caller,
    headers: HeaderMap,
    ExactJson(value): ExactJson<Value, DATA_LIMIT>,
) -> ApiResult<Response> {
    let expected = if_match(&headers)?;
    let version = state.service.put_session_data(&caller.session, &value, expected).await?;
    let mut r = no_store(StatusCode::NO_CONTENT);
    r.headers_mut().insert(header::ETAG, etag(version));
    Ok(r)
}
