//! The OpenAPI 3.1 description of the HTTP API, served at `/v1/openapi.json`. Each operation is
//! declared on its handler (`#[utoipa::path]` in `routes/`); the response bodies, which handlers
//! build with `json!`, are described here. `tests/openapi.rs` checks the document against the
//! router, and `scripts/test` runs schemathesis against a live server with it.

use axum::Json;
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use utoipa::openapi::security::{
    ApiKey, ApiKeyValue, Http, HttpAuthScheme, SecurityRequirement, SecurityScheme,
};
use utoipa::{Modify, OpenApi, ToSchema};

use crate::routes::{admin, auth, check, grants, health, session, sessions};

/// `{"error":{"code","message"}}`.
#[derive(ToSchema)]
pub struct ErrorBody {
    /// The error.
    pub error: ErrorDetail,
}

/// The error inside [`ErrorBody`].
#[derive(ToSchema)]
pub struct ErrorDetail {
    /// snake_case code (`unauthenticated`, `csrf_failed`, `grant_already_used`, …).
    pub code: String,
    /// Human text.
    pub message: String,
}

/// A session's user.
#[derive(ToSchema)]
pub struct SessionUser {
    /// `usr_…`
    pub id: String,
    /// Username.
    pub username: String,
    /// Roles.
    pub roles: Vec<String>,
}

/// A session as the API shows it (RFC 3339 UTC times).
#[derive(ToSchema)]
pub struct SessionJson {
    /// `ses_…`
    pub id: String,
    /// The owner.
    pub user: SessionUser,
    /// Login time.
    pub created_at: String,
    /// Last recorded use.
    pub last_seen_at: String,
    /// End unless used again.
    pub idle_expires_at: String,
    /// End however used.
    pub expires_at: String,
    /// Client IP at login.
    pub ip: Option<String>,
    /// Client user agent at login.
    pub user_agent: Option<String>,
    /// For a session traded for a grant: the one service it is valid for.
    #[schema(required = false)]
    pub audience: Option<String>,
    /// In lists: the caller's own session.
    #[schema(required = false)]
    pub current: Option<bool>,
}

/// `{session, csrf_token}` (bearer callers of a password change also get `token`).
#[derive(ToSchema)]
pub struct SessionWithCsrf {
    /// The session.
    pub session: SessionJson,
    /// The session's CSRF token, for `X-CSRF-Token` or a `csrf_token` form field.
    pub csrf_token: String,
    /// Only for bearer callers of `POST /v1/password`: the rotated token.
    #[schema(required = false)]
    pub token: Option<String>,
}

/// `{session}`.
#[derive(ToSchema)]
pub struct SessionOnly {
    /// The session.
    pub session: SessionJson,
}

/// `{token, session}`: a session made for a service, with its token (the one place a token is in
/// a body).
#[derive(ToSchema)]
pub struct SessionWithToken {
    /// `crs_…`
    pub token: String,
    /// The session.
    pub session: SessionJson,
}

/// `{sessions}`, newest first.
#[derive(ToSchema)]
pub struct SessionList {
    /// Sessions.
    pub sessions: Vec<SessionJson>,
}

/// `{revoked}`: how many sessions were revoked.
#[derive(ToSchema)]
pub struct RevokedCount {
    /// Count.
    pub revoked: u64,
}

/// A user, without secrets.
#[derive(ToSchema)]
pub struct UserJson {
    /// `usr_…`
    pub id: String,
    /// Username.
    pub username: String,
    /// Roles.
    pub roles: Vec<String>,
    /// Disabled users cannot log in and have no sessions.
    pub disabled: bool,
    /// Whether a password is set.
    pub has_password: bool,
    /// Creation time.
    pub created_at: String,
    /// Last change.
    pub updated_at: String,
}

/// `{user}`.
#[derive(ToSchema)]
pub struct UserResponse {
    /// The user.
    pub user: UserJson,
}

/// `{token, id, expires_at}`.
#[derive(ToSchema)]
pub struct GrantIssued {
    /// `v4.public.…`
    pub token: String,
    /// `grt_…`
    pub id: String,
    /// Expiry.
    pub expires_at: String,
}

/// The grant's user.
#[derive(ToSchema)]
pub struct GrantUser {
    /// `usr_…`
    pub id: String,
    /// Username at issue time.
    pub username: String,
}

/// A redeemed grant's claims.
#[derive(ToSchema)]
pub struct GrantClaims {
    /// `grt_…`
    pub id: String,
    /// The user.
    pub user: GrantUser,
    /// The service it is for.
    pub audience: String,
    /// What the user may do.
    pub action: Option<String>,
    /// On what.
    pub resource: Option<String>,
    /// Issue time.
    pub issued_at: String,
    /// Expiry.
    pub expires_at: String,
}

/// A published verification key.
#[derive(ToSchema)]
pub struct KeyJson {
    /// PASERK id, `k4.pid.…`.
    pub id: String,
    /// PASERK, `k4.public.…`.
    pub paserk: String,
    /// Creation time.
    pub created_at: String,
    /// When it signs from.
    pub active_from: String,
    /// When it stopped signing, if it did.
    pub retired_at: Option<String>,
}

/// `{keys}`.
#[derive(ToSchema)]
pub struct KeysResponse {
    /// The keys a valid grant may name.
    pub keys: Vec<KeyJson>,
}

/// `{status}` (and the store kind when ready).
#[derive(ToSchema)]
pub struct Health {
    /// `ok` or `ready`.
    pub status: String,
    /// Store kind (`sqlite`, `redis`).
    #[schema(required = false)]
    pub store: Option<String>,
}

struct Security;

impl Modify for Security {
    fn modify(&self, api: &mut utoipa::openapi::OpenApi) {
        let components = api.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "cookie",
            SecurityScheme::ApiKey(ApiKey::Cookie(ApiKeyValue::with_description(
                "__Host-cloakroom",
                "The session cookie; state-changing requests also need X-CSRF-Token",
            ))),
        );
        let bearer = |format: &str, description: &str| {
            let mut http = Http::new(HttpAuthScheme::Bearer);
            http.bearer_format = Some(format.to_owned());
            http.description = Some(description.to_owned());
            SecurityScheme::Http(http)
        };
        components.add_security_scheme(
            "bearer",
            bearer("crs_…", "A session token (Authorization: Bearer crs_…), for programs"),
        );
        components.add_security_scheme(
            "apiKey",
            bearer(
                "crk_…",
                "A service API key (Authorization: Bearer crk_…) from `cloakroom apikey create NAME`",
            ),
        );
        // The service API takes an API key, or the session of a user with the role admin.
        let service = vec![
            SecurityRequirement::new("apiKey", Vec::<String>::new()),
            SecurityRequirement::new("cookie", Vec::<String>::new()),
            SecurityRequirement::new("bearer", Vec::<String>::new()),
        ];
        for (path, item) in api.paths.paths.iter_mut() {
            for (method, op) in operations(item) {
                if path.starts_with("/v1/admin/") || (path == "/v1/grants" && method == "post") {
                    op.security = Some(service.clone());
                }
                // The handler's doc text is for Rust readers; the document gets the user's words
                // (`tests/openapi.rs` checks that every operation has them).
                let summary = SUMMARIES.iter().find(|(m, p, _)| *m == method && *p == path);
                op.summary = summary.map(|(_, _, text)| (*text).to_owned());
                op.description = None;
            }
        }
    }
}

/// The operations of a path item, with their method.
fn operations(
    item: &mut utoipa::openapi::PathItem,
) -> Vec<(&'static str, &mut utoipa::openapi::path::Operation)> {
    [
        ("get", item.get.as_mut()),
        ("put", item.put.as_mut()),
        ("post", item.post.as_mut()),
        ("delete", item.delete.as_mut()),
        ("patch", item.patch.as_mut()),
        ("head", item.head.as_mut()),
    ]
    .into_iter()
    .filter_map(|(m, op)| op.map(|op| (m, op)))
    .collect()
}

/// Each operation's summary, for the people who read the document (docs/api.md has the rest).
const SUMMARIES: &[(&str, &str, &str)] = &[
    ("post", "/v1/login", "Log in with a username and password"),
    ("post", "/v1/logout", "Log out: end the current session and clear the cookie"),
    ("post", "/v1/password", "Change your password (logs out your other sessions)"),
    ("get", "/v1/session", "The current session and its CSRF token"),
    ("get", "/v1/session/data", "Read the session's own JSON data (with its ETag)"),
    ("put", "/v1/session/data", "Replace the session's own JSON data (If-Match for safe updates)"),
    ("get", "/v1/sessions", "List your live sessions"),
    ("delete", "/v1/sessions/{id}", "Log out one of your sessions"),
    ("post", "/v1/sessions/revoke-others", "Log out all your other sessions"),
    ("get", "/v1/auth/check", "Forward-auth check for a reverse proxy"),
    ("put", "/v1/admin/users/{username}", "Create or update a user (password, roles, disabled)"),
    ("get", "/v1/admin/users/{username}", "Look up a user"),
    ("delete", "/v1/admin/users/{username}/sessions", "Log a user out everywhere"),
    (
        "post",
        "/v1/admin/sessions",
        "Create a session for a user (apps that check credentials themselves)",
    ),
    ("get", "/v1/admin/sessions", "List a user's live sessions"),
    ("post", "/v1/admin/sessions/validate", "Validate a session token an app received"),
    ("delete", "/v1/admin/sessions/{id}", "Revoke any session by id"),
    ("post", "/v1/grants", "Issue a short-lived, single-use grant"),
    ("post", "/v1/grants/redeem", "Redeem a grant once, returning its claims"),
    ("post", "/v1/grants/exchange", "Trade a grant for a session scoped to its service"),
    ("get", "/v1/keys", "The public keys that grants are signed with"),
    ("get", "/v1/revocations", "Stream of grant and session revocations (server-sent events)"),
    ("get", "/healthz", "Liveness: the process answers"),
    ("get", "/readyz", "Readiness: the store answers"),
    ("get", "/metrics", "Prometheus metrics"),
    ("get", "/v1/openapi.json", "This OpenAPI document"),
];

/// The document.
#[derive(OpenApi)]
#[openapi(
    info(title = "Cloakroom", description = "Server-side sessions, revocable at once, and single-use grants."),
    paths(
        auth::login, auth::logout, auth::change_password,
        session::get, session::get_data, session::put_data,
        sessions::list, sessions::revoke, sessions::revoke_others,
        check::check,
        admin::put_user, admin::get_user, admin::create_session, admin::validate,
        admin::list_sessions, admin::revoke_session, admin::revoke_user_sessions,
        grants::issue, grants::redeem, grants::exchange, grants::keys, grants::revocations,
        health::healthz, health::readyz, health::metrics, openapi_json,
    ),
    modifiers(&Security),
    security(("cookie" = []), ("bearer" = [])),
)]
pub struct ApiDoc;

/// `GET /v1/openapi.json`: this document.
#[utoipa::path(get, path = "/v1/openapi.json", tag = "meta", security(()),
    responses((status = 200, description = "The OpenAPI 3.1 document", content_type = "application/json")))]
pub async fn openapi_json(
    axum::extract::State(state): axum::extract::State<crate::state::AppState>,
) -> Response {
    let mut doc = ApiDoc::openapi();
    if !state.config.base_path.is_empty() {
        // The paths below are relative to the base path.
        doc.servers = Some(vec![utoipa::openapi::Server::new(state.config.base_path.as_str())]);
    }
    let mut r = Json(doc).into_response();
    r.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    r
}
