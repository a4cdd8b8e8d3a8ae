//! Server-rendered pages, usable without JavaScript: login, "your sessions", password change, an
//! admin page, and the first-run setup. Every form that changes state carries the session's CSRF
//! token as a `csrf_token` field and is checked like an API call (origin and token); the pages'
//! actions call the same use cases as the API and the CLI (`cloakroom_service`), so the rules,
//! audit events and metrics are the same.
//! Templates (`templates/*.html`, minijinja, HTML auto-escaping) are compiled into the binary;
//! `templates_dir` replaces them one by one, and `brand_*` names and colours them
//! ([`crate::branding`]).

use axum::Router;
use axum::extract::{Form, FromRequestParts, Query, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use cloakroom_core::{Role, Timestamp};
use cloakroom_service::{Actor, DomainError};
use minijinja::context;
use serde::Deserialize;

mod operator;

use crate::error::ApiError;
use crate::extract::{ApiPath, Audience, Caller, Client, Intent};
use crate::routes::auth;
use crate::state::AppState;

/// The page routes (merged into the app's router).
pub fn router() -> Router<AppState> {
    Router::new()
        .route(
            "/",
            get(|State(state): State<AppState>| async move { go(&state, "/account/sessions") }),
        )
        .route("/login", get(login_page).post(login_submit))
        .route("/account/logout", post(logout))
        .route("/account/sessions", get(sessions_page))
        .route("/account/sessions/revoke-others", post(revoke_others))
        .route("/account/sessions/{id}/revoke", post(revoke_one))
        .route("/account/password", get(password_page).post(password_submit))
        .route("/admin", get(admin_page))
        .route("/admin/users/{username}/sessions/{id}/revoke", post(admin_revoke))
        .route("/admin/users/{username}/disable", post(admin_disable))
        .route("/admin/users/{username}/enable", post(admin_enable))
        .route("/admin/users/{username}/logout-everywhere", post(admin_logout_everywhere))
        .route("/admin/users/{username}/roles", post(admin_roles))
        .route("/setup", get(setup_page).post(setup_submit))
        .route("/brand/logo", get(logo))
        .route("/assets/style.css", get(stylesheet))
        .merge(operator::routes())
}

/// The pages' stylesheet, with the brand's colour (a page may link nothing from elsewhere).
async fn stylesheet(State(state): State<AppState>) -> Response {
    let mut r = state.config.brand.stylesheet.clone().into_response();
    let h = r.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/css; charset=utf-8"));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("public, max-age=300"));
    r
}

/// The configured logo (`brand_logo`), 404 without one. An SVG is a document that could carry
/// script: its own CSP forbids everything but inline style, should someone open it directly.
async fn logo(State(state): State<AppState>) -> Response {
    let Some(logo) = &state.config.brand.logo else {
        return ApiError::not_found("no logo is configured").into_response();
    };
    let mut r = logo.bytes.clone().into_response();
    let h = r.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(logo.content_type));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("public, max-age=3600"));
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static("default-src 'none'; style-src 'unsafe-inline'; sandbox"),
    );
    r
}

/// Renders a page with the headers every page gets: no caching, no framing, a strict CSP (no
/// scripts at all), no referrer to other sites.
fn render(state: &AppState, status: StatusCode, name: &str, ctx: minijinja::Value) -> Response {
    let brand = &state.config.brand;
    let logo = brand.logo.is_some().then(|| format!("{}/brand/logo", state.config.base_path));
    let ctx = context! {
        base => state.config.base_path.as_str(),
        brand_name => brand.name.as_str(),
        brand_color => brand.color.as_deref(),
        brand_logo => logo,
        ..ctx
    };
    let html = brand.templates.get_template(name).and_then(|t| t.render(ctx));
    let html = match html {
        Ok(h) => h,
        Err(e) => {
            tracing::error!(template = name, error = %e, "page rendering failed");
            return ApiError::internal().into_response();
        }
    };
    let mut r = (status, html).into_response();
    let h = r.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/html; charset=utf-8"));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert("x-frame-options", HeaderValue::from_static("DENY"));
    // Not `no-referrer`: with it, browsers send `Origin: null` on form posts, which the origin
    // check must refuse.
    h.insert(header::REFERRER_POLICY, HeaderValue::from_static("same-origin"));
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'none'; style-src 'self'; img-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
        ),
    );
    r
}

/// A redirect after a form post, with the pages' referrer policy: the page it leads to is
/// fetched under the redirect's policy.
fn see_other(to: &str) -> Response {
    let mut r = StatusCode::SEE_OTHER.into_response();
    let h = r.headers_mut();
    if let Ok(v) = HeaderValue::from_str(to) {
        h.insert(header::LOCATION, v);
    }
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert(header::REFERRER_POLICY, HeaderValue::from_static("same-origin"));
    r
}

/// A redirect to one of Cloakroom's own routes (`path` without the base path).
fn go(state: &AppState, path: &str) -> Response {
    see_other(&format!("{}{path}", state.config.base_path))
}

/// An error as a page (the API's status, its message).
fn error_page(state: &AppState, e: ApiError, caller: Option<&Caller>) -> Response {
    page_with_error(state, &e, "message.html", context! { title => "Error", ..who(caller) })
}

/// The page `name` showing `e`: its status, its message, and its `Retry-After` when throttled.
fn page_with_error(state: &AppState, e: &ApiError, name: &str, ctx: minijinja::Value) -> Response {
    let mut r = render(state, e.status(), name, context! { error => e.message(), ..ctx });
    if let Some(after) = e.retry_after() {
        r.headers_mut().insert(header::RETRY_AFTER, after);
    }
    r
}

/// The signed-in user for the page header.
fn who(caller: Option<&Caller>) -> minijinja::Value {
    match caller {
        Some(c) => context! {
            user => c.session.username(),
            csrf => c.session.csrf_token().expose(),
            is_admin => c.session.has_role(Role::ADMIN),
        },
        None => context! {},
    }
}

/// Whether `next` stays on this origin: a path, not `//host` or `/\host`, no control characters.
pub fn is_safe_next(next: &str) -> bool {
    next.starts_with('/')
        && !next.starts_with("//")
        && !next.starts_with("/\\")
        && !next.chars().any(|c| c.is_control() || c == '\\')
}

/// A `next` that stays on this origin, else the sessions page (under `base`).
pub fn safe_next(next: Option<&str>, base: &str) -> String {
    match next {
        Some(n) if is_safe_next(n) => n.to_owned(),
        _ => format!("{base}/account/sessions"),
    }
}

/// "Firefox on Linux" from a user agent, for people, not for security.
pub fn device(ua: Option<&str>) -> String {
    let Some(ua) = ua else { return "Unknown device".into() };
    let browser = [
        ("Edg/", "Edge"),
        ("OPR/", "Opera"),
        ("Firefox/", "Firefox"),
        ("Chrome/", "Chrome"),
        ("Safari/", "Safari"),
        ("curl/", "curl"),
    ]
    .iter()
    .find(|(k, _)| ua.contains(k))
    .map_or("Unknown browser", |(_, v)| v);
    let os = [
        ("Android", "Android"),
        ("iPhone", "iPhone"),
        ("iPad", "iPad"),
        ("Windows", "Windows"),
        ("Mac OS X", "macOS"),
        ("CrOS", "ChromeOS"),
        ("Linux", "Linux"),
    ]
    .iter()
    .find(|(k, _)| ua.contains(k))
    .map(|(_, v)| *v);
    match os {
        Some(os) => format!("{browser} on {os}"),
        None => browser.to_owned(),
    }
}

/// The rows of a sessions table; `current` marks the viewer's own session.
fn session_rows(
    list: &[cloakroom_core::Authenticated],
    current: Option<&cloakroom_core::SessionId>,
) -> Vec<minijinja::Value> {
    let now = Timestamp::now();
    list.iter()
        .map(|a| {
            let s = &a.session;
            context! {
                id => s.id.as_str(),
                device => device(s.user_agent.as_deref()),
                ip => s.ip.as_deref().unwrap_or("unknown"),
                created_at => s.created_at.to_string(),
                created_human => ago(s.created_at, now),
                created_exact => exact(s.created_at),
                last_seen_at => s.last_seen_at.to_string(),
                last_seen_human => ago(s.last_seen_at, now),
                last_seen_exact => exact(s.last_seen_at),
                current => current == Some(&s.id),
            }
        })
        .collect()
}

/// How long ago `then` was, as people say it: "just now", "5 minutes ago", "3 days ago".
fn ago(then: Timestamp, now: Timestamp) -> String {
    let secs = (now.as_millis() - then.as_millis()).max(0) / 1000;
    let (n, unit) = match secs {
        0..60 => return "just now".into(),
        60..3600 => (secs / 60, "minute"),
        3600..86_400 => (secs / 3600, "hour"),
        _ => (secs / 86_400, "day"),
    };
    format!("{n} {unit}{} ago", if n == 1 { "" } else { "s" })
}

/// The exact time, to the minute, in UTC: `2026-12-01 09:18 UTC`.
fn exact(at: Timestamp) -> String {
    let text = at.to_string();
    format!("{} UTC", text.get(..16).unwrap_or(&text).replacen('T', " ", 1))
}

/// A signed-in caller for a page, or the redirect to the login page that comes back here.
struct PageCaller(Caller);

impl FromRequestParts<AppState> for PageCaller {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Response> {
        match Caller::optional(parts, state).await {
            Ok(Some(c)) => Ok(PageCaller(c)),
            Ok(None) => {
                // The whole path the browser asked for, base path included.
                let uri = parts
                    .extensions
                    .get::<axum::extract::OriginalUri>()
                    .map_or(&parts.uri, |o| &o.0);
                let back = uri.path_and_query().map_or("/", |p| p.as_str());
                let query = serde_urlencoded::to_string([("next", back)]).unwrap_or_default();
                Err(go(state, &format!("/login?{query}")))
            }
            Err(e) => Err(error_page(state, e, None)),
        }
    }
}

/// A signed-in admin for a page: the caller, and the use cases' actor. Anyone else signed in gets
/// the forbidden page; a visitor without a session, the login page.
struct PageAdmin {
    caller: Caller,
    actor: Actor,
}

impl FromRequestParts<AppState> for PageAdmin {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Response> {
        let PageCaller(caller) = PageCaller::from_request_parts(parts, state).await?;
        match as_admin(&caller) {
            Ok(actor) => Ok(PageAdmin { caller, actor }),
            Err(e) => Err(error_page(state, e, Some(&caller))),
        }
    }
}

#[derive(Deserialize)]
struct NextQuery {
    next: Option<String>,
}

async fn login_page(
    State(state): State<AppState>,
    parts: Parts,
    Query(q): Query<NextQuery>,
) -> Response {
    if let Ok(Some(_)) = Caller::optional(&parts, &state).await {
        return see_other(&safe_next(q.next.as_deref(), &state.config.base_path));
    }
    render(
        &state,
        StatusCode::OK,
        "login.html",
        context! { title => "Log in", next => safe_next(q.next.as_deref(), &state.config.base_path), username => "" },
    )
}

#[derive(Deserialize)]
struct LoginForm {
    username: String,
    password: String,
    next: Option<String>,
}

async fn login_submit(
    State(state): State<AppState>,
    client: Client,
    headers: HeaderMap,
    form: Result<Form<LoginForm>, axum::extract::rejection::FormRejection>,
) -> Response {
    let Ok(Form(form)) = form else {
        return error_page(&state, ApiError::invalid("expected the login form"), None);
    };
    let next = safe_next(form.next.as_deref(), &state.config.base_path);
    match auth::password_login(&state, &client, &headers, &form.username, form.password).await {
        Ok(issued) => {
            let mut r = see_other(&next);
            r.headers_mut()
                .append(header::SET_COOKIE, state.session_cookie(&issued.token.expose()));
            r
        }
        Err(e) => page_with_error(
            &state,
            &e,
            "login.html",
            context! { title => "Log in", next, username => form.username },
        ),
    }
}

async fn logout(State(state): State<AppState>, parts: Parts) -> Response {
    // As `POST /v1/logout`: any live session the form presents ends, a scoped one too.
    let ended =
        match Caller::optional_for(&parts, &state, Intent::Write, Audience::Any, false).await {
            Ok(Some(caller)) => state.service.log_out(&caller.session).await.map(|_| ()),
            Ok(None) => Ok(()),
            Err(e) => return error_page(&state, e, None),
        };
    if let Err(e) = ended {
        return error_page(&state, e.into(), None);
    }
    let mut r = go(&state, "/login");
    r.headers_mut().append(header::SET_COOKIE, state.clear_cookie());
    r.headers_mut().insert("clear-site-data", HeaderValue::from_static("\"cookies\""));
    r
}

#[derive(Deserialize)]
struct Notice {
    done: Option<String>,
}

fn notice_text(n: &Notice) -> Option<&'static str> {
    // Fixed texts by key: nothing from the URL is reflected into the page.
    match n.done.as_deref() {
        Some("revoked") => Some("The session was logged out."),
        Some("others") => Some("Every other session was logged out."),
        Some("password") => Some("Password changed. Every other session was logged out."),
        Some("disabled") => Some("The user was disabled and logged out everywhere."),
        Some("enabled") => Some("The user was enabled."),
        Some("roles") => Some("The roles were saved."),
        Some("key-revoked") => Some("The API key was revoked."),
        Some("logged-out") => {
            Some("The user was logged out everywhere; the account stays enabled.")
        }
        _ => None,
    }
}

async fn sessions_page(
    State(state): State<AppState>,
    PageCaller(caller): PageCaller,
    Query(n): Query<Notice>,
) -> Response {
    let list = match state.service.sessions_of(&caller.session.user_id()).await {
        Ok(l) => l,
        Err(e) => return error_page(&state, e.into(), Some(&caller)),
    };
    let rows = session_rows(&list, Some(&caller.session.session_id()));
    render(
        &state,
        StatusCode::OK,
        "sessions.html",
        context! { title => "Your sessions", sessions => rows, notice => notice_text(&n), ..who(Some(&caller)) },
    )
}

async fn revoke_one(
    State(state): State<AppState>,
    PageCaller(caller): PageCaller,
    client: Client,
    ApiPath(id): ApiPath<String>,
) -> Response {
    match state.service.revoke_session(&Actor::owner(&caller.session), &id, &client).await {
        Ok(()) => go(&state, "/account/sessions?done=revoked"),
        Err(e) => error_page(&state, e.into(), Some(&caller)),
    }
}

async fn revoke_others(
    State(state): State<AppState>,
    PageCaller(caller): PageCaller,
    client: Client,
) -> Response {
    match state.service.revoke_other_sessions(&caller.session, &client).await {
        Ok(_) => go(&state, "/account/sessions?done=others"),
        Err(e) => error_page(&state, e.into(), Some(&caller)),
    }
}

async fn password_page(State(state): State<AppState>, PageCaller(caller): PageCaller) -> Response {
    render(
        &state,
        StatusCode::OK,
        "password.html",
        context! { title => "Change password", ..who(Some(&caller)) },
    )
}

/// The password form (its `csrf_token` was checked by the caller extractor already).
#[derive(Deserialize)]
struct PasswordForm {
    current_password: String,
    new_password: String,
    /// The new password typed twice (the page's form always sends it; a script may leave it out).
    confirm_password: Option<String>,
}

/// A typing mistake in a new password, caught before it becomes the password: the form's
/// second copy, when sent, must be the same.
fn confirmed(password: &str, again: Option<&str>) -> Result<(), ApiError> {
    match again {
        Some(again) if again != password => {
            Err(ApiError::invalid("the two new passwords are not the same"))
        }
        _ => Ok(()),
    }
}

async fn password_submit(
    State(state): State<AppState>,
    PageCaller(caller): PageCaller,
    client: Client,
    form: Result<Form<PasswordForm>, axum::extract::rejection::FormRejection>,
) -> Response {
    let Ok(Form(form)) = form else {
        return error_page(&state, ApiError::invalid("expected the password form"), Some(&caller));
    };
    if let Err(e) = confirmed(&form.new_password, form.confirm_password.as_deref()) {
        let ctx = context! { title => "Change password", ..who(Some(&caller)) };
        return page_with_error(&state, &e, "password.html", ctx);
    }
    let changed = state
        .service
        .change_password(
            &caller.session,
            &caller.token,
            &client,
            form.current_password,
            form.new_password,
        )
        .await;
    match changed {
        Ok(changed) => {
            // The session got a new token: the cookie carries it.
            let mut r = go(&state, "/account/sessions?done=password");
            r.headers_mut()
                .append(header::SET_COOKIE, state.session_cookie(&changed.token.expose()));
            r
        }
        Err(e) => page_with_error(
            &state,
            &e.into(),
            "password.html",
            context! { title => "Change password", ..who(Some(&caller)) },
        ),
    }
}

/// An admin for a page: the caller with the `admin` role, as the use cases' actor.
fn as_admin(caller: &Caller) -> Result<Actor, ApiError> {
    Actor::admin(&caller.session).map_err(|_| ApiError::forbidden("this page needs the admin role"))
}

#[derive(Deserialize)]
struct AdminQuery {
    username: Option<String>,
    done: Option<String>,
    /// Users whose name contains this (the list, when no `username` is given).
    q: Option<String>,
    /// The list's page, from 1.
    page: Option<usize>,
}

/// A user for the admin pages: `{username, roles, disabled}`.
fn user_row(u: &cloakroom_core::User) -> minijinja::Value {
    context! {
        username => u.username.as_str(),
        roles => u.roles.iter().map(|r| r.as_str().to_owned()).collect::<Vec<_>>(),
        disabled => u.disabled,
    }
}

/// Users per page of the admin's list.
const USERS_PER_PAGE: usize = 25;

/// One page of the users whose names contain `q` (case-insensitive), and the page count.
fn users_page(
    all: &[cloakroom_core::User],
    q: &str,
    page: usize,
) -> (Vec<minijinja::Value>, usize) {
    let q = q.trim().to_lowercase();
    let matching: Vec<_> =
        all.iter().filter(|u| q.is_empty() || u.username.as_str().contains(q.as_str())).collect();
    let pages = matching.len().div_ceil(USERS_PER_PAGE).max(1);
    let rows = matching
        .iter()
        .skip((page.clamp(1, pages) - 1) * USERS_PER_PAGE)
        .take(USERS_PER_PAGE)
        .map(|u| user_row(u))
        .collect();
    (rows, pages)
}

async fn admin_page(
    State(state): State<AppState>,
    PageAdmin { caller, actor }: PageAdmin,
    Query(q): Query<AdminQuery>,
) -> Response {
    let notice = notice_text(&Notice { done: q.done.clone() });
    let query = q.username.clone().unwrap_or_default();
    let mut error = None;
    let mut found = None;
    let mut rows = Vec::new();
    if let Some(name) = q.username.as_deref().filter(|n| !n.is_empty()) {
        match state.service.user(name).await {
            Ok(user) => {
                match state.service.list_sessions(&actor, Some(name)).await {
                    Ok(list) => rows = session_rows(&list, None),
                    Err(e) => return error_page(&state, e.into(), Some(&caller)),
                }
                found = Some(user_row(&user));
            }
            Err(DomainError::NotFound(_)) => error = Some("No such user."),
            Err(e) => return error_page(&state, e.into(), Some(&caller)),
        }
    }
    let (mut users, mut pages, mut page) = (Vec::new(), 1, 1);
    let filter = q.q.clone().unwrap_or_default();
    if found.is_none() {
        match state.service.users(&actor).await {
            Ok(all) => {
                (users, pages) = users_page(&all, &filter, q.page.unwrap_or(1));
                page = q.page.unwrap_or(1).clamp(1, pages);
            }
            Err(e) => return error_page(&state, e.into(), Some(&caller)),
        }
    }
    let ctx = context! {
        title => "Admin", query, found, sessions => rows, error, notice,
        users, filter, page, pages, confirming => false, ..who(Some(&caller))
    };
    render(&state, StatusCode::OK, "admin.html", ctx)
}

async fn admin_logout_everywhere(
    State(state): State<AppState>,
    PageAdmin { caller, actor }: PageAdmin,
    client: Client,
    ApiPath(username): ApiPath<String>,
) -> Response {
    match state.service.revoke_user_sessions(&actor, &username, &client).await {
        Ok(_) => admin_back(&state, &username, "logged-out"),
        Err(e) => error_page(&state, e.into(), Some(&caller)),
    }
}

/// The roles form: the whole new set, separated by commas or spaces.
#[derive(Deserialize)]
struct RolesForm {
    roles: String,
}

async fn admin_roles(
    State(state): State<AppState>,
    PageAdmin { caller, actor }: PageAdmin,
    ApiPath(username): ApiPath<String>,
    form: Result<Form<RolesForm>, axum::extract::rejection::FormRejection>,
) -> Response {
    let Ok(Form(form)) = form else {
        return error_page(&state, ApiError::invalid("expected the roles form"), Some(&caller));
    };
    // Only an existing user's roles: this form never creates anyone.
    if let Err(e) = state.service.user(&username).await {
        return error_page(&state, e.into(), Some(&caller));
    }
    let roles: Vec<String> = form
        .roles
        .split(|c: char| c == ',' || c.is_whitespace())
        .filter(|r| !r.is_empty())
        .map(str::to_owned)
        .collect();
    let changes = cloakroom_service::UserChanges { roles: Some(roles), ..Default::default() };
    match state.service.put_user(&actor, &username, changes).await {
        Ok(_) => admin_back(&state, &username, "roles"),
        Err(e) => error_page(&state, e.into(), Some(&caller)),
    }
}

/// The disable form's confirmation: the first post asks, the second (`confirm=yes`) does it.
#[derive(Deserialize)]
struct Confirm {
    confirm: Option<String>,
}

fn admin_back(state: &AppState, username: &str, done: &str) -> Response {
    let query =
        serde_urlencoded::to_string([("username", username), ("done", done)]).unwrap_or_default();
    go(state, &format!("/admin?{query}"))
}

async fn admin_revoke(
    State(state): State<AppState>,
    PageAdmin { caller, actor }: PageAdmin,
    client: Client,
    ApiPath((username, id)): ApiPath<(String, String)>,
) -> Response {
    match state.service.revoke_session(&actor, &id, &client).await {
        Ok(()) => admin_back(&state, &username, "revoked"),
        Err(e) => error_page(&state, e.into(), Some(&caller)),
    }
}

async fn set_disabled(
    state: AppState,
    admin: PageAdmin,
    username: String,
    disabled: bool,
) -> Response {
    let PageAdmin { caller, actor } = admin;
    // Disabling one's own account is refused by the use case, for this page and the API alike.
    match state.service.set_disabled(&actor, &username, disabled).await {
        Ok(_) => admin_back(&state, &username, if disabled { "disabled" } else { "enabled" }),
        Err(e) => error_page(&state, e.into(), Some(&caller)),
    }
}

async fn admin_disable(
    State(state): State<AppState>,
    admin: PageAdmin,
    ApiPath(username): ApiPath<String>,
    form: Result<Form<Confirm>, axum::extract::rejection::FormRejection>,
) -> Response {
    let confirmed = form.is_ok_and(|Form(f)| f.confirm.as_deref() == Some("yes"));
    if confirmed {
        return set_disabled(state, admin, username, true).await;
    }
    let caller = admin.caller;
    let user = match state.service.user(&username).await {
        Ok(u) => u,
        Err(e) => return error_page(&state, e.into(), Some(&caller)),
    };
    let found = context! { username => user.username.as_str(), disabled => user.disabled };
    let ctx =
        context! { title => "Disable a user", found, confirming => true, ..who(Some(&caller)) };
    render(&state, StatusCode::OK, "admin.html", ctx)
}

async fn admin_enable(
    State(state): State<AppState>,
    admin: PageAdmin,
    ApiPath(username): ApiPath<String>,
) -> Response {
    set_disabled(state, admin, username, false).await
}

#[derive(Deserialize)]
struct SetupQuery {
    token: Option<String>,
}

fn setup_refused(state: &AppState) -> Response {
    error_page(
        state,
        ApiError::forbidden(
            "this setup link is not valid: it expired, was used, or an administrator exists",
        ),
        None,
    )
}

/// A refusal of the link itself, not of what was typed.
fn setup_link_refused(e: &DomainError) -> bool {
    matches!(e, DomainError::Forbidden(_))
}

async fn setup_page(State(state): State<AppState>, Query(q): Query<SetupQuery>) -> Response {
    let ok = q.token.as_deref().is_some_and(|t| state.service.setup_link_valid(t));
    if !ok {
        return setup_refused(&state);
    }
    render(
        &state,
        StatusCode::OK,
        "setup.html",
        context! { title => "Set up", token => q.token.unwrap_or_default(), username => "" },
    )
}

#[derive(Deserialize)]
struct SetupForm {
    token: String,
    username: String,
    password: String,
    /// The password typed twice (see [`PasswordForm::confirm_password`]).
    confirm_password: Option<String>,
}

async fn setup_submit(
    State(state): State<AppState>,
    client: Client,
    headers: HeaderMap,
    form: Result<Form<SetupForm>, axum::extract::rejection::FormRejection>,
) -> Response {
    let Ok(Form(form)) = form else { return setup_refused(&state) };
    if let Err(e) = crate::extract::check_origin(&headers, &state.config) {
        return error_page(&state, e, None);
    }
    // Whatever the user can fix keeps the link usable and what they typed as their name.
    let again = |state: &AppState, e: &ApiError| {
        let ctx = context! { title => "Set up", token => &form.token, username => &form.username };
        page_with_error(state, e, "setup.html", ctx)
    };
    if let Err(e) = confirmed(&form.password, form.confirm_password.as_deref()) {
        return again(&state, &e);
    }
    let done = state.service.complete_setup(&form.token, &form.username, form.password, &client);
    match done.await {
        // Straight into their sessions page, logged in.
        Ok(issued) => {
            let mut r = go(&state, "/account/sessions");
            r.headers_mut()
                .append(header::SET_COOKIE, state.session_cookie(&issued.token.expose()));
            r
        }
        Err(e) if setup_link_refused(&e) => setup_refused(&state),
        Err(e) => again(&state, &e.into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn next_stays_on_this_origin() {
        assert_eq!(safe_next(Some("/admin?x=1"), ""), "/admin?x=1");
        for bad in
            ["//evil.example", "/\\evil.example", "https://evil.example", "", "/a\\b", "/a\nb"]
        {
            assert_eq!(safe_next(Some(bad), ""), "/account/sessions", "{bad:?}");
            assert_eq!(safe_next(Some(bad), "/auth"), "/auth/account/sessions", "{bad:?}");
        }
        assert_eq!(safe_next(None, ""), "/account/sessions");
    }

    #[test]
    fn times_read_like_people_say_them() {
        let now = Timestamp::from_millis(1_800_000_000_000);
        let before = |secs: i64| Timestamp::from_millis(now.as_millis() - secs * 1000);
        assert_eq!(ago(before(5), now), "just now");
        assert_eq!(ago(before(60), now), "1 minute ago");
        assert_eq!(ago(before(150), now), "2 minutes ago");
        assert_eq!(ago(before(3 * 3600), now), "3 hours ago");
        assert_eq!(ago(before(86_400), now), "1 day ago");
        assert_eq!(ago(now.plus(std::time::Duration::from_secs(9)), now), "just now");
        assert_eq!(exact(now), "2027-01-15 08:00 UTC");
    }

    #[test]
    fn devices_read_like_people_say_them() {
        let firefox = "Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0";
        assert_eq!(device(Some(firefox)), "Firefox on Linux");
        let chrome = "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36";
        assert_eq!(device(Some(chrome)), "Chrome on Windows");
        assert_eq!(device(Some("curl/8.5.0")), "curl");
        assert_eq!(device(None), "Unknown device");
    }
}
