//! Grants: `POST /v1/grants` (issue), `POST /v1/grants/redeem` (use once),
//! `POST /v1/grants/exchange` (use once, for a session scoped to the audience), `GET /v1/keys`
//! (the public keys as PASERK) and `GET /v1/revocations` (server-sent events).

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use crate::routes::bodies::{
    GrantClaims, GrantIssued, GrantUser, KeyJson, KeysResponse, SessionWithToken,
};
use axum::Json;
use axum::extract::{FromRequestParts, State};
use axum::http::request::Parts;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use cloakroom_core::grants::GrantRequest;
use cloakroom_grant::Grant;
use futures_util::stream::{self, Stream, StreamExt as _};
use serde::Deserialize;
use tokio::sync::broadcast;

use super::no_store;
use crate::error::{ApiError, ApiResult};
use crate::extract::{ApiJson, Caller, Client, api_key};
use crate::grants::{FeedEvent, Grants};
use crate::state::AppState;
use cloakroom_service::Actor;

/// Default grant lifetime.
const DEFAULT_TTL: u64 = 60;

fn grants(state: &AppState) -> Result<&Arc<Grants>, ApiError> {
    state.grants.as_ref().ok_or_else(ApiError::grants_off)
}

/// Who asks for a grant: a user's session (cookie with CSRF, or bearer) as its owner, or an API
/// key acting for a named user.
pub struct Requester(pub Actor);

impl FromRequestParts<AppState> for Requester {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        if let Some(actor) = api_key(parts, state).await? {
            return Ok(Requester(actor));
        }
        let caller = Caller::from_request_parts(parts, state).await?;
        Ok(Requester(Actor::owner(&caller.session)))
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
    Requester(actor): Requester,
    ApiJson(body): ApiJson<IssueBody>,
) -> ApiResult<Response> {
    let req = GrantRequest {
        audience: body.audience,
        action: body.action,
        resource: body.resource,
        ttl: Duration::from_secs(body.ttl_seconds.unwrap_or(DEFAULT_TTL)),
    };
    let (issued, _) = state.service.issue_grant(&actor, body.username.as_deref(), &req).await?;
    let body = GrantIssued { token: &issued.token, id: &issued.id, expires_at: issued.expires_at };
    Ok(no_store((StatusCode::CREATED, Json(body))))
}

/// `POST /v1/grants/redeem` and `/exchange` body.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RedeemBody {
    token: String,
    audience: String,
}

fn claims_json(grant: &Grant) -> GrantClaims<'_> {
    let c = &grant.claims;
    GrantClaims {
        id: &c.jti,
        user: GrantUser { id: &c.sub, username: &c.username },
        audience: &c.aud,
        action: c.action.as_deref(),
        resource: c.resource.as_deref(),
        issued_at: &c.iat,
        expires_at: &c.exp,
    }
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
    let grant = state.service.redeem_grant(&body.token, &body.audience).await?;
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
    let issued = state.service.exchange_grant(&body.token, &body.audience, &client).await?;
    let body = SessionWithToken { token: issued.token.expose(), session: issued.auth.view(None) };
    Ok(no_store((StatusCode::CREATED, Json(body))))
}

/// `GET /v1/keys` → `{keys: [{id, paserk, created_at, active_from, retired_at}]}`: every key a
/// valid grant may carry, the signing one and those retired less than a grant lifetime ago.
#[utoipa::path(get, path = "/v1/keys", tag = "grants", security(()),
    responses(
        (status = 200, description = "Verification keys as PASERK", body = crate::openapi::KeysResponse),
        (status = 503, description = "store_unavailable / grants_not_configured", body = crate::openapi::ErrorBody)))]
pub async fn keys(State(state): State<AppState>) -> ApiResult<Response> {
    let keys = state.service.published_keys().await?;
    let keys = keys
        .iter()
        .map(|k| KeyJson {
            id: &k.id,
            paserk: &k.public,
            created_at: k.created_at,
            active_from: k.active_from,
            retired_at: k.retired_at,
        })
        .collect();
    let mut r = Json(KeysResponse { keys }).into_response();
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
