//! The admin's API keys and audit log pages: thin adapters of the service's use cases, as the
//! user pages in the parent module are.

use axum::Router;
use axum::extract::{Form, Query, State};
use axum::http::StatusCode;
use axum::response::Response;
use axum::routing::{get, post};
use cloakroom_core::Timestamp;
use cloakroom_core::audit::{AuditFilter, AuditKind};
use cloakroom_core::user::Username;
use minijinja::context;
use serde::Deserialize;

use super::{
    Notice, PageAdmin, ago, error_page, exact, go, notice_text, page_with_error, render, who,
};
use crate::error::ApiError;
use crate::extract::ApiPath;
use crate::state::AppState;

/// The routes of these pages.
pub(super) fn routes() -> Router<AppState> {
    Router::new()
        .route("/admin/api-keys", get(api_keys_page).post(api_key_create))
        .route("/admin/api-keys/{name}/revoke", post(api_key_revoke))
        .route("/admin/audit", get(audit_page))
}

/// The API keys, as rows.
async fn key_rows(
    state: &AppState,
    actor: &cloakroom_service::Actor,
) -> Result<Vec<minijinja::Value>, ApiError> {
    let now = Timestamp::now();
    let keys = state.service.api_keys(actor).await?;
    Ok(keys
        .iter()
        .map(|k| {
            context! {
                name => k.name.as_str(),
                created_at => k.created_at.to_string(),
                created_human => ago(k.created_at, now),
                created_exact => exact(k.created_at),
            }
        })
        .collect())
}

async fn api_keys_page(
    State(state): State<AppState>,
    PageAdmin { caller, actor }: PageAdmin,
    Query(n): Query<Notice>,
) -> Response {
    let keys = match key_rows(&state, &actor).await {
        Ok(k) => k,
        Err(e) => return error_page(&state, e, Some(&caller)),
    };
    let ctx =
        context! { title => "API keys", keys, notice => notice_text(&n), ..who(Some(&caller)) };
    render(&state, StatusCode::OK, "api_keys.html", ctx)
}

#[derive(Deserialize)]
struct NewKey {
    name: String,
}

/// Makes a key and shows it once, on the answer to the post itself (never in a URL, never
/// cached: the pages send `Cache-Control: no-store`).
async fn api_key_create(
    State(state): State<AppState>,
    PageAdmin { caller, actor }: PageAdmin,
    form: Result<Form<NewKey>, axum::extract::rejection::FormRejection>,
) -> Response {
    let Ok(Form(form)) = form else {
        return error_page(&state, ApiError::invalid("expected the API key form"), Some(&caller));
    };
    let made = state.service.create_api_key(&actor, form.name.trim()).await;
    let keys = match key_rows(&state, &actor).await {
        Ok(k) => k,
        Err(e) => return error_page(&state, e, Some(&caller)),
    };
    match made {
        Ok((key, secret)) => {
            let created = context! { name => key.name.as_str(), key => secret.expose() };
            let ctx = context! { title => "API keys", keys, created, ..who(Some(&caller)) };
            render(&state, StatusCode::OK, "api_keys.html", ctx)
        }
        Err(e) => {
            let ctx = context! { title => "API keys", keys, ..who(Some(&caller)) };
            page_with_error(&state, &e.into(), "api_keys.html", ctx)
        }
    }
}

async fn api_key_revoke(
    State(state): State<AppState>,
    PageAdmin { caller, actor }: PageAdmin,
    ApiPath(name): ApiPath<String>,
) -> Response {
    match state.service.revoke_api_key(&actor, &name).await {
        Ok(()) => go(&state, "/admin/api-keys?done=key-revoked"),
        Err(e) => error_page(&state, e.into(), Some(&caller)),
    }
}

/// How many of the newest events the audit page reads before its kind and time filters.
const AUDIT_PAGE_EVENTS: u32 = 500;

/// The time filters the audit page offers: (value, label, seconds).
const PERIODS: &[(&str, &str, u64)] = &[
    ("", "Any time", 0),
    ("1h", "The last hour", 3600),
    ("24h", "The last day", 86_400),
    ("7d", "The last week", 604_800),
];

#[derive(Deserialize)]
struct AuditQuery {
    user: Option<String>,
    kind: Option<String>,
    since: Option<String>,
}

async fn audit_page(
    State(state): State<AppState>,
    PageAdmin { caller, actor }: PageAdmin,
    Query(q): Query<AuditQuery>,
) -> Response {
    let user = q.user.as_deref().map(str::trim).filter(|u| !u.is_empty());
    let kind = q.kind.as_deref().filter(|k| !k.is_empty());
    let since = q.since.as_deref().unwrap_or("");
    let filter = context! { user => user.unwrap_or(""), kind => kind.unwrap_or(""), since };
    let kinds: Vec<&str> = AuditKind::ALL.iter().map(|k| k.as_str()).collect();
    let periods: Vec<minijinja::Value> =
        PERIODS.iter().map(|(value, label, _)| context! { value, label }).collect();
    let base = context! {
        title => "Audit log", filter, kinds, periods, limit => AUDIT_PAGE_EVENTS, ..who(Some(&caller))
    };
    let refuse = |e: ApiError| page_with_error(&state, &e, "audit.html", base.clone());
    let username = match user.map(Username::parse).transpose() {
        Ok(u) => u,
        Err(e) => return refuse(ApiError::invalid(format!("user: {e}"))),
    };
    let kind = match kind.map(str::parse::<AuditKind>).transpose() {
        Ok(k) => k,
        Err(()) => return refuse(ApiError::invalid("kind: not an audit event kind")),
    };
    let Some((_, _, seconds)) = PERIODS.iter().find(|(value, _, _)| *value == since) else {
        return refuse(ApiError::invalid("since: one of 1h, 24h, 7d"));
    };
    let now = Timestamp::now();
    let from = (*seconds > 0).then(|| now.minus(std::time::Duration::from_secs(*seconds)));
    let filter = AuditFilter { username, limit: AUDIT_PAGE_EVENTS };
    let events = match state.service.audit_log(&actor, &filter).await {
        Ok(e) => e,
        Err(e) => return error_page(&state, e.into(), Some(&caller)),
    };
    let rows: Vec<minijinja::Value> = events
        .iter()
        .filter(|e| kind.is_none_or(|k| e.kind == k) && from.is_none_or(|f| e.at >= f))
        .map(|e| {
            context! {
                at => e.at.to_string(),
                at_human => ago(e.at, now),
                at_exact => exact(e.at),
                kind => e.kind.as_str(),
                username => e.username.as_ref().map(|u| u.as_str()),
                actor => e.actor.as_str(),
                ip => e.ip.as_deref(),
                detail => e.detail.as_deref(),
            }
        })
        .collect();
    render(&state, StatusCode::OK, "audit.html", context! { events => rows, ..base })
}
