//! The OpenAPI 3.1 description of the HTTP API, served at `/v1/openapi.json`. Each operation is
//! declared on its handler (`#[utoipa::path]` in `routes/`); the response bodies are the very
//! types the handlers serialize (`routes/bodies.rs`). `tests/openapi.rs` checks the document against the
//! router, and `scripts/test` runs schemathesis against a live server with it.

use axum::Json;
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use utoipa::openapi::security::{
    ApiKey, ApiKeyValue, Http, HttpAuthScheme, SecurityRequirement, SecurityScheme,
};
use utoipa::{Modify, OpenApi};

use crate::routes::{admin, auth, check, grants, health, session, sessions};

// The bodies as the handlers' `#[utoipa::path]` attributes name them (the document needs no
// lifetimes).
use crate::routes::bodies;
/// [`bodies::ErrorBody`].
pub type ErrorBody = bodies::ErrorBody<'static>;
/// [`bodies::SessionWithCsrf`].
pub type SessionWithCsrf = bodies::SessionWithCsrf<'static>;
/// [`bodies::SessionOnly`].
pub type SessionOnly = bodies::SessionOnly<'static>;
/// [`bodies::SessionWithToken`].
pub type SessionWithToken = bodies::SessionWithToken<'static>;
/// [`bodies::SessionList`].
pub type SessionList = bodies::SessionList<'static>;
/// [`bodies::UserResponse`].
pub type UserResponse = bodies::UserResponse<'static>;
/// [`bodies::GrantIssued`].
pub type GrantIssued = bodies::GrantIssued<'static>;
/// [`bodies::GrantClaims`].
pub type GrantClaims = bodies::GrantClaims<'static>;
/// [`bodies::KeysResponse`].
pub type KeysResponse = bodies::KeysResponse<'static>;
pub use bodies::{Health, RevokedCount};

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
