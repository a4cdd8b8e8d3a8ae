//! The response bodies of the HTTP API: one type per shape, which the handler serializes and the
//! OpenAPI document describes (`derive(Serialize, ToSchema)`), so the two cannot drift apart.
//! Sessions and users are core's own views (`SessionView`, `User`, with the `openapi` feature).

use cloakroom_core::session::SessionView;
use cloakroom_core::{Timestamp, User};
use serde::Serialize;
use utoipa::ToSchema;

/// `{"error":{"code","message"}}`.
#[derive(Serialize, ToSchema)]
pub struct ErrorBody<'a> {
    /// The error.
    pub error: ErrorDetail<'a>,
}

/// The error inside [`ErrorBody`].
#[derive(Serialize, ToSchema)]
pub struct ErrorDetail<'a> {
    /// snake_case code (`unauthenticated`, `csrf_failed`, `grant_already_used`, …).
    pub code: &'a str,
    /// Human text.
    pub message: &'a str,
}

/// `{session, csrf_token}` (bearer callers of a password change also get `token`).
#[derive(Serialize, ToSchema)]
pub struct SessionWithCsrf<'a> {
    /// The session.
    pub session: SessionView<'a>,
    /// The session's CSRF token, for `X-CSRF-Token` or a `csrf_token` form field.
    pub csrf_token: &'a str,
    /// Only for bearer callers of `POST /v1/password`: the rotated token.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(required = false)]
    pub token: Option<String>,
}

/// `{session}`.
#[derive(Serialize, ToSchema)]
pub struct SessionOnly<'a> {
    /// The session.
    pub session: SessionView<'a>,
}

/// `{token, session}`: a session made for a service, with its token (the one place a token is in
/// a body).
#[derive(Serialize, ToSchema)]
pub struct SessionWithToken<'a> {
    /// `crs_…`
    pub token: String,
    /// The session.
    pub session: SessionView<'a>,
}

/// `{sessions}`, newest first.
#[derive(Serialize, ToSchema)]
pub struct SessionList<'a> {
    /// Sessions.
    pub sessions: Vec<SessionView<'a>>,
}

/// `{revoked}`: how many sessions were revoked.
#[derive(Serialize, ToSchema)]
pub struct RevokedCount {
    /// Count.
    pub revoked: usize,
}

/// `{user}`.
#[derive(Serialize, ToSchema)]
pub struct UserResponse<'a> {
    /// The user.
    pub user: &'a User,
}

/// `{token, id, expires_at}`.
#[derive(Serialize, ToSchema)]
pub struct GrantIssued<'a> {
    /// `v4.public.…`
    pub token: &'a str,
    /// `grt_…`
    pub id: &'a str,
    /// Expiry.
    #[schema(value_type = String)]
    pub expires_at: Timestamp,
}

/// The grant's user.
#[derive(Serialize, ToSchema)]
pub struct GrantUser<'a> {
    /// `usr_…`
    pub id: &'a str,
    /// Username at issue time.
    pub username: &'a str,
}

/// A redeemed grant's claims.
#[derive(Serialize, ToSchema)]
pub struct GrantClaims<'a> {
    /// `grt_…`
    pub id: &'a str,
    /// The user.
    pub user: GrantUser<'a>,
    /// The service it is for.
    pub audience: &'a str,
    /// What the user may do.
    pub action: Option<&'a str>,
    /// On what.
    pub resource: Option<&'a str>,
    /// Issue time.
    pub issued_at: &'a str,
    /// Expiry.
    pub expires_at: &'a str,
}

/// A published verification key.
#[derive(Serialize, ToSchema)]
pub struct KeyJson<'a> {
    /// PASERK id, `k4.pid.…`.
    pub id: &'a str,
    /// PASERK, `k4.public.…`.
    pub paserk: &'a str,
    /// Creation time.
    #[schema(value_type = String)]
    pub created_at: Timestamp,
    /// When it signs from.
    #[schema(value_type = String)]
    pub active_from: Timestamp,
    /// When it stopped signing, if it did.
    #[schema(value_type = Option<String>)]
    pub retired_at: Option<Timestamp>,
}

/// `{keys}`.
#[derive(Serialize, ToSchema)]
pub struct KeysResponse<'a> {
    /// The keys a valid grant may name.
    pub keys: Vec<KeyJson<'a>>,
}

/// `{status}` (and the store kind when ready).
#[derive(Serialize, ToSchema)]
pub struct Health {
    /// `ok` or `ready`.
    pub status: &'static str,
    /// Store kind (`sqlite`, `redis`, `postgres`).
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(required = false)]
    pub store: Option<&'static str>,
}
