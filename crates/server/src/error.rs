//! The one place that decides HTTP statuses: [`ApiError`] maps domain failures and extractor
//! rejections to the contract's `{"error":{"code","message"}}` bodies. Internals (driver errors,
//! paths, SQL) are logged, never shown.

use std::time::Duration;

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use cloakroom_core::{Error, StoreError};
use cloakroom_service::DomainError;

/// An error response.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    code: &'static str,
    message: String,
    retry_after: Option<Duration>,
}

impl ApiError {
    fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self { status, code, message: message.into(), retry_after: None }
    }

    /// 400 `invalid_request`.
    pub fn invalid(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "invalid_request", message)
    }
    /// 401 `unauthenticated`.
    pub fn unauthenticated() -> Self {
        Self::new(StatusCode::UNAUTHORIZED, "unauthenticated", "a valid session is required")
    }

    /// 401 for an `Authorization: Bearer crk_…` that is no live API key.
    pub fn invalid_api_key() -> Self {
        Self::new(
            StatusCode::UNAUTHORIZED,
            "unauthenticated",
            "the API key is not valid: revoked, mistyped, or made for another store",
        )
    }
    /// 401 `invalid_credentials`: one message for unknown user and wrong password alike.
    pub fn invalid_credentials() -> Self {
        Self::new(StatusCode::UNAUTHORIZED, "invalid_credentials", "invalid username or password")
    }
    /// 403 `csrf_failed`.
    pub fn csrf_failed() -> Self {
        Self::new(StatusCode::FORBIDDEN, "csrf_failed", "missing or invalid CSRF token")
    }
    /// 403 `origin_mismatch`.
    pub fn origin_mismatch() -> Self {
        Self::new(
            StatusCode::FORBIDDEN,
            "origin_mismatch",
            "cross-origin state-changing request refused",
        )
    }
    /// 403 `forbidden`.
    pub fn forbidden(message: impl Into<String>) -> Self {
        Self::new(StatusCode::FORBIDDEN, "forbidden", message)
    }
    /// 404 `not_found`.
    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, "not_found", message)
    }
    /// 405 `method_not_allowed`.
    pub fn method_not_allowed() -> Self {
        Self::new(
            StatusCode::METHOD_NOT_ALLOWED,
            "method_not_allowed",
            "method not allowed on this path",
        )
    }
    /// 409 `conflict`.
    pub fn conflict(message: impl Into<String>) -> Self {
        Self::new(StatusCode::CONFLICT, "conflict", message)
    }
    /// 412 `precondition_failed`.
    pub fn precondition_failed() -> Self {
        Self::new(
            StatusCode::PRECONDITION_FAILED,
            "precondition_failed",
            "If-Match does not match the current version",
        )
    }
    /// 413 `payload_too_large`.
    pub fn payload_too_large(message: impl Into<String>) -> Self {
        Self::new(StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large", message)
    }
    /// 503 `server_busy` with `Retry-After`: a node-wide cap on what clients may hold open
    /// (request bodies in flight, event streams) is reached; nothing was done.
    pub fn server_busy(message: impl Into<String>, retry_after: Duration) -> Self {
        let mut e = Self::new(StatusCode::SERVICE_UNAVAILABLE, "server_busy", message);
        e.retry_after = Some(retry_after);
        e
    }
    /// 429 `rate_limited` with `Retry-After`.
    pub fn rate_limited(retry_after: Duration) -> Self {
        let mut e = Self::new(
            StatusCode::TOO_MANY_REQUESTS,
            "rate_limited",
            "too many attempts; try again later",
        );
        e.retry_after = Some(retry_after);
        e
    }
    /// 503 `store_unavailable`.
    pub fn store_unavailable() -> Self {
        Self::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "store_unavailable",
            "the session store is unavailable",
        )
    }
    /// 401 `invalid_grant`: not a valid grant for this audience (malformed, unknown key, bad
    /// signature, expired, revoked).
    pub fn invalid_grant(message: impl Into<String>) -> Self {
        Self::new(StatusCode::UNAUTHORIZED, "invalid_grant", message)
    }
    /// 409 `grant_already_used`.
    pub fn grant_already_used() -> Self {
        Self::new(StatusCode::CONFLICT, "grant_already_used", "the grant was already used")
    }
    /// 503 `grants_not_configured`: no key to seal signing keys with (`grant_key`).
    pub fn grants_off() -> Self {
        Self::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "grants_not_configured",
            "grants need grant_key (CLOAKROOM_GRANT_KEY) on this store",
        )
    }
    /// 500 `internal`: only for faults of the server itself (no randomness, hashing failed).
    pub fn internal() -> Self {
        Self::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", "internal error")
    }

    /// The status.
    pub fn status(&self) -> StatusCode {
        self.status
    }

    /// The code.
    pub fn code(&self) -> &'static str {
        self.code
    }

    /// The human message.
    pub fn message(&self) -> &str {
        &self.message
    }

    /// `Retry-After`, for a throttled request.
    pub fn retry_after(&self) -> Option<HeaderValue> {
        let secs = self.retry_after?.as_secs().max(1);
        HeaderValue::from_str(&secs.to_string()).ok()
    }
}

/// The one status map: every domain outcome a use case can refuse with, as the contract's status
/// and code. Internals are logged here and answered without detail.
impl From<DomainError> for ApiError {
    fn from(e: DomainError) -> Self {
        match e {
            DomainError::InvalidCredentials => ApiError::invalid_credentials(),
            DomainError::WrongCurrentPassword => Self::new(
                StatusCode::UNAUTHORIZED,
                "invalid_credentials",
                "the current password is wrong",
            ),
            DomainError::Throttled { retry_after } => ApiError::rate_limited(retry_after),
            DomainError::Unauthenticated => ApiError::unauthenticated(),
            DomainError::NotFound(what) => ApiError::not_found(format!("{what} not found")),
            DomainError::Conflict(m) => ApiError::conflict(m),
            DomainError::Invalid(m) => ApiError::invalid(m),
            DomainError::Forbidden(m) => ApiError::forbidden(m),
            // 409: the request is well-formed and allowed in general; it conflicts with who makes
            // it (the account it would disable is the caller's own).
            DomainError::SelfDisable => ApiError::conflict(e.to_string()),
            DomainError::VersionMismatch => ApiError::precondition_failed(),
            DomainError::TooLarge(m) => ApiError::payload_too_large(m),
            DomainError::GrantsOff => ApiError::grants_off(),
            DomainError::InvalidGrant(m) => ApiError::invalid_grant(m),
            DomainError::GrantAlreadyUsed => ApiError::grant_already_used(),
            DomainError::Store(other) => {
                tracing::error!(error = %other, source = ?std::error::Error::source(&other), "store failure");
                ApiError::store_unavailable()
            }
            other => {
                tracing::error!(error = %other, "internal failure");
                ApiError::internal()
            }
        }
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        DomainError::from(e).into()
    }
}

impl From<Error> for ApiError {
    fn from(e: Error) -> Self {
        DomainError::from(e).into()
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let detail = crate::routes::bodies::ErrorDetail { code: self.code, message: &self.message };
        let body = crate::routes::bodies::ErrorBody { error: detail };
        let mut response = (self.status, axum::Json(body)).into_response();
        let headers = response.headers_mut();
        headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
        if let Some(after) = self.retry_after {
            let secs = after.as_secs().max(1);
            if let Ok(v) = HeaderValue::from_str(&secs.to_string()) {
                headers.insert(header::RETRY_AFTER, v);
            }
        }
        if self.code == "server_busy" {
            // A refused client must not keep holding the connection it was refused on.
            headers.insert(header::CONNECTION, HeaderValue::from_static("close"));
        }
        response
    }
}

/// Result of a handler.
pub type ApiResult<T> = Result<T, ApiError>;
