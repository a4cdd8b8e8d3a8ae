//! Grants: `POST /v1/grants` (issue), `POST /v1/grants/redeem` (use once),
//! `POST /v1/grants/exchange` (use once, for a session scoped to the audience), `GET /v1/keys`
//! (the public keys as PASERK) and `GET /v1/revocations` (server-sent events).

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::Json;
use axum::extract::{FromRequestParts, State};
use axum::http::request::Parts;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use cloakroom_core::Timestamp;
use cloakroom_core::audit::{AuditEvent, AuditKind};
use cloakroom_core::grants::GrantRequest;
use cloakroom_core::manager::ClientInfo;
use cloakroom_grant::Grant;
use futures_util::stream::{self, Stream, StreamExt as _};
use serde::Deserialize;
use serde_json::json;
use tokio::sync::broadcast;

use super::admin::active_user;
use super::no_store;
use crate::error::{ApiError, ApiResult};
use crate::extract::{ApiJson, Caller, Client, api_key_name};
use crate::grants::{FeedEvent, Grants};
use crate::state::AppState;
use crate::throttle::UserAction;

/// Default grant lifetime.
const DEFAULT_TTL: u64 = 60;

fn grants(state: &AppState) -> Result<&Arc<Grants>, ApiError> {
    state.grants.as_ref().ok_or_else(ApiError::grants_off)
}

/// Who asks for a grant: a user's session (cookie with CSRF, or bearer), or an API key acting
/// for a named user.
pub enum Requester {
    /// A logged-in user, for themself.
    Session(Caller),
    /// A service, by API key name.
    Service(String),
}

impl FromRequestParts<AppState> for Requester {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        if let Some(name) = api_key_name(parts, state).await? {
            return Ok(Requester::Service(name));
        }
        Caller::from_request_parts(parts, state).await.map(Requester::Session)
    }
}

/// `POST /v1/grants` body.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct IssueBody {
    audience: String,
    action: Option<String>,
    resource: Option<String>,
    ttl_seconds: Option<u64>,
    /// With an API key only: the user the grant is for.
    username: Option<String>,
}

/// `POST /v1/grants` → 201 `{token, id, expires_at}`.
#[utoipa::path(post, path = "/v1/grants", tag = "grants", request_body = IssueBody,
    responses(
        (status = 201, description = "Issued", body = crate::openapi::GrantIssued),
        (status = 400, description = "invalid_request", body = crate::openapi::ErrorBody),
        (status = 401, description = "unauthenticated", body = crate::openapi::ErrorBody),
        (status = 403, description = "csrf_failed / origin_mismatch / the user is disabled", body = crate::openapi::ErrorBody),
        (status = 404, description = "not_found (API key callers naming no user)", body = crate::openapi::ErrorBody),
        (status = 429, description = "rate_limited: more than 120 grants a minute for this user", body = crate::openapi::ErrorBody),
        (status = 503, description = "store_unavailable / grants_not_configured", body = crate::openapi::ErrorBody)))]
pub async fn issue(
    State(state): State<AppState>,
    requester: Requester,
    ApiJson(body): ApiJson<IssueBody>,
) -> ApiResult<Response> {
    let grants = grants(&state)?;
    let (user, actor) = match requester {
        Requester::Session(caller) => {
            if body.username.is_some() {
                return Err(ApiError::invalid("username is for API-key callers only"));
            }
            (active_user(&state, caller.session.username()).await?, "self".to_owned())
        }
        Requester::Service(name) => {
            let username = body
                .username
                .as_deref()
                .ok_or_else(|| ApiError::invalid("username is required"))?;
            (active_user(&state, username).await?, format!("apikey:{name}"))
        }
    };
    if let Err(wait) = state.throttle.user_action(UserAction::GrantIssue, &user.id).await? {
        return Err(ApiError::rate_limited(wait));
    }
    let ttl = body.ttl_seconds.unwrap_or(DEFAULT_TTL);
    let req = GrantRequest {
        audience: body.audience,
        action: body.action,
        resource: body.resource,
        ttl: Duration::from_secs(ttl),
    };
    let issued = grants.issuer.issue(&user, &req).await?;
    metrics::counter!("cloakroom_grants_issued_total").increment(1);
    state
        .audit(
            AuditEvent::new(AuditKind::GrantIssued, actor)
                .user(Some(&user.id), &user.username)
                .detail(format!("{} for {}", issued.id, req.audience)),
        )
        .await;
    let body = json!({ "token": issued.token, "id": issued.id, "expires_at": issued.expires_at });
    Ok(no_store((StatusCode::CREATED, Json(body))))
}

/// `POST /v1/grants/redeem` and `/exchange` body.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RedeemBody {
    token: String,
    audience: String,
}

fn claims_json(grant: &Grant) -> serde_json::Value {
    let c = &grant.claims;
    json!({
        "id": c.jti,
        "user": { "id": c.sub, "username": c.username },
        "audience": c.aud,
        "action": c.action,
        "resource": c.resource,
        "issued_at": c.iat,
        "expires_at": c.exp,
    })
}

/// `POST /v1/grants/redeem` → 200 the claims, once; 409 `grant_already_used` after.
#[utoipa::path(post, path = "/v1/grants/redeem", tag = "grants", security(()), request_body = RedeemBody,
    responses(
        (status = 200, description = "The claims, once", body = crate::openapi::GrantClaims),
        (status = 400, description = "invalid_request", body = crate::openapi::ErrorBody),
        (status = 401, description = "invalid_grant", body = crate::openapi::ErrorBody),
        (status = 409, description = "grant_already_used", body = crate::openapi::ErrorBody),
        (status = 503, description = "store_unavailable / grants_not_configured", body = crate::openapi::ErrorBody)))]
pub async fn redeem(
    State(state): State<AppState>,
    ApiJson(body): ApiJson<RedeemBody>,
) -> ApiResult<Response> {
    let grants = grants(&state)?;
    let grant = grants.issuer.redeem(&body.token, &body.audience).await?;
    metrics::counter!("cloakroom_grants_redeemed_total", "how" => "redeem").increment(1);
    audit_use(&state, &grant, AuditKind::GrantRedeemed, None).await;
    Ok(no_store(Json(claims_json(&grant))))
}

/// `POST /v1/grants/exchange` → 201 `{token, session}`: the grant used up, and a session for its
/// user valid for its audience only.
#[utoipa::path(post, path = "/v1/grants/exchange", tag = "grants", security(()), request_body = RedeemBody,
    responses(
        (status = 201, description = "A session valid for the audience only", body = crate::openapi::SessionWithToken),
        (status = 400, description = "invalid_request", body = crate::openapi::ErrorBody),
        (status = 401, description = "invalid_grant", body = crate::openapi::ErrorBody),
        (status = 409, description = "grant_already_used", body = crate::openapi::ErrorBody),
        (status = 503, description = "store_unavailable / grants_not_configured", body = crate::openapi::ErrorBody)))]
pub async fn exchange(
    State(state): State<AppState>,
    client: Client,
    ApiJson(body): ApiJson<RedeemBody>,
) -> ApiResult<Response> {
    let grants = grants(&state)?;
    let grant = grants.issuer.redeem(&body.token, &body.audience).await?;
    // The user as of now: one disabled since the grant was issued gets nothing.
    let user = match active_user(&state, &grant.claims.username).await {
        Ok(u) if u.id.as_str() == grant.claims.sub => u,
        Ok(_) | Err(_) => return Err(ApiError::invalid_grant("the grant's user is not active")),
    };
    let client: ClientInfo = client.info();
    let issued =
        state.manager.create_scoped(&user, client, None, Some(grant.claims.aud.clone())).await?;
    metrics::counter!("cloakroom_grants_redeemed_total", "how" => "exchange").increment(1);
    audit_use(&state, &grant, AuditKind::GrantExchanged, Some(&issued.auth.session.id)).await;
    let body = json!({ "token": issued.token.expose(), "session": issued.auth.view(None) });
    Ok(no_store((StatusCode::CREATED, Json(body))))
}

async fn audit_use(
    state: &AppState,
    grant: &Grant,
    kind: AuditKind,
    session: Option<&cloakroom_core::SessionId>,
) {
    let user = cloakroom_core::UserId::parse(&grant.claims.sub);
    let Ok(name) = cloakroom_core::Username::parse(&grant.claims.username) else { return };
    let mut event = AuditEvent::new(kind, "grant")
        .user(user.as_ref(), &name)
        .detail(format!("{} for {}", grant.claims.jti, grant.claims.aud));
    if let Some(s) = session {
        event = event.session(s);
    }
    state.audit(event).await;
}

/// `GET /v1/keys` → `{keys: [{id, paserk, created_at, active_from, retired_at}]}`: every key a
/// valid grant may carry, the signing one and those retired less than a grant lifetime ago.
#[utoipa::path(get, path = "/v1/keys", tag = "grants", security(()),
    responses(
        (status = 200, description = "Verification keys as PASERK", body = crate::openapi::KeysResponse),
        (status = 503, description = "store_unavailable / grants_not_configured", body = crate::openapi::ErrorBody)))]
pub async fn keys(State(state): State<AppState>) -> ApiResult<Response> {
    let grants = grants(&state)?;
    let keys = grants.issuer.published(Timestamp::now()).await?;
    let keys: Vec<_> = keys
        .iter()
        .map(|k| {
            json!({
                "id": k.id,
                "paserk": k.public,
                "created_at": k.created_at,
                "active_from": k.active_from,
                "retired_at": k.retired_at,
            })
        })
        .collect();
    let mut r = Json(json!({ "keys": keys })).into_response();
    // Public, but it changes at a rotation: verifiers must not keep a stale copy.
    r.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    Ok(r)
}

/// `GET /v1/revocations`: server-sent events. First every revocation that may still matter
/// (`revoked`), then `ready`, then live `revoked` and `keys` events, with a comment every 10 s.
/// A subscriber that falls too far behind is disconnected (it reconnects and gets a snapshot).
#[utoipa::path(get, path = "/v1/revocations", tag = "grants", security(()),
    responses(
        (status = 200, description = "Server-sent events: `revoked` ({kind, id, at, until}), `ready`, `keys`", content_type = "text/event-stream", body = String),
        (status = 503, description = "store_unavailable / grants_not_configured / server_busy (too many streams: in all, or from this address)", body = crate::openapi::ErrorBody)))]
pub async fn revocations(State(state): State<AppState>, client: Client) -> ApiResult<Response> {
    let grants = grants(&state)?;
    // Streams are long-lived and need no credentials: each takes a capped slot, so a flood of
    // them cannot use up the node's connections.
    let Some(slot) = state.streams.take(client.ip) else {
        return Err(ApiError::server_busy("too many event streams", Duration::from_secs(5)));
    };
    let live = Live(grants.subscribe(), slot);
    metrics::gauge!("cloakroom_revocation_feed_subscribers").increment(1.0);
    let snapshot = grants.snapshot().await?;
    let events = stream::iter(snapshot.into_iter().map(|r| revoked_event(&r)))
        .chain(stream::once(async { Event::default().event("ready").data("{}") }))
        .chain(live_events(live));
    let sse = Sse::new(events.map(Ok::<_, Infallible>))
        .keep_alive(KeepAlive::new().interval(Duration::from_secs(10)));
    let mut r = sse.into_response();
    r.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    Ok(r)
}

fn revoked_event(r: &cloakroom_core::grant::GrantRevocation) -> Event {
    let data = serde_json::to_string(&r.to_wire()).unwrap_or_else(|_| "{}".into());
    Event::default().event("revoked").data(data)
}

/// A live subscription, holding its stream slot until the stream ends.
struct Live(broadcast::Receiver<FeedEvent>, #[allow(dead_code)] crate::limits::Slot);

impl Drop for Live {
    fn drop(&mut self) {
        metrics::gauge!("cloakroom_revocation_feed_subscribers").decrement(1.0);
    }
}

fn live_events(live: Live) -> impl Stream<Item = Event> {
    stream::unfold(live, |mut live| async move {
        match live.0.recv().await {
            Ok(FeedEvent::Revoked(r)) => Some((revoked_event(&r), live)),
            Ok(FeedEvent::Keys) => Some((Event::default().event("keys").data("{}"), live)),
            // Lagged or closed: end the stream; the client reconnects and reads a snapshot.
            Err(_) => None,
        }
    })
}
