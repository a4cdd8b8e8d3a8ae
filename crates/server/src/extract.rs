//! Extractors: who is calling ([`Caller`], [`Operator`]), from where ([`Client`]), and request
//! bodies, paths and queries whose rejections become the contract's error bodies.
//!
//! CSRF defence for cookie-authenticated state changes, in order: an `Origin` header, when
//! present, must be an allowed origin; without one, `Sec-Fetch-Site` (when present) must be
//! `same-origin` or `none`; then the session's synchronizer token must arrive in `X-CSRF-Token` or
//! a `csrf_token` form field. Bearer-authenticated requests need none of it: browsers never attach
//! an `Authorization` header on their own.

use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};

use axum::Json;
use axum::extract::rejection::{FormRejection, JsonRejection, PathRejection, QueryRejection};
use axum::extract::{ConnectInfo, FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use cloakroom_core::ActiveSession;
use cloakroom_core::audit::{AuditEvent, AuditKind};
use cloakroom_core::manager::Checked;
use cloakroom_core::token::{SecretKind, Token};
use cloakroom_service::Actor;
use serde::de::DeserializeOwned;

use crate::config::{Config, TrustedProxies};
use crate::error::ApiError;
use crate::state::AppState;

pub use cloakroom_axum::request::{Via, find_cookie, is_unsafe};
pub use cloakroom_axum::resolve::{Audience, Intent};
use cloakroom_axum::resolve::{Refusal, Resolved, Rules, resolve};
pub use exact_json::ExactJson;

mod exact_json;

/// The token a request carries, and how (the one reading shared with `cloakroom-axum`); a
/// malformed `Authorization` header is 401.
pub fn credential<'a>(
    headers: &'a HeaderMap,
    cookie_name: &str,
) -> Result<Option<(&'a str, Via)>, ApiError> {
    cloakroom_axum::request::credential(headers, cookie_name)
        .map_err(|_| ApiError::unauthenticated())
}

/// Checks `Origin` / `Sec-Fetch-Site` for a state-changing request.
pub fn check_origin(headers: &HeaderMap, config: &Config) -> Result<(), ApiError> {
    if cloakroom_axum::request::origin_allowed(headers, &config.allowed_origins) {
        Ok(())
    } else {
        Err(ApiError::origin_mismatch())
    }
}

/// The `csrf_token` field of a form body, put in the request by [`form_csrf_field`].
#[derive(Clone, Debug)]
pub struct FormCsrfToken(pub String);

fn is_form(headers: &HeaderMap) -> bool {
    headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).is_some_and(|v| {
        v.trim_start().to_ascii_lowercase().starts_with("application/x-www-form-urlencoded")
    })
}

/// Whether the request is a state-changing form post, whose body [`lift_form_csrf`] reads.
pub fn has_form_body(req: &Request) -> bool {
    is_unsafe(req.method()) && is_form(req.headers())
}

/// Most bytes of a form body read for its CSRF field.
const FORM_LIMIT: usize = 64 * 1024;

/// For state-changing form posts, reads the body once, lifts its `csrf_token` into the request
/// extensions, and passes the body on unchanged. An oversized form is answered at once.
pub async fn lift_form_csrf(req: Request) -> Result<Request, Response> {
    if !has_form_body(&req) {
        return Ok(req);
    }
    let (parts, body) = req.into_parts();
    let bytes = match axum::body::to_bytes(body, FORM_LIMIT).await {
        Ok(b) => b,
        Err(_) => return Err(ApiError::payload_too_large("form body over 64 KiB").into_response()),
    };
    let token = serde_urlencoded::from_bytes::<Vec<(String, String)>>(&bytes)
        .ok()
        .and_then(|pairs| pairs.into_iter().find(|(k, _)| k == "csrf_token").map(|(_, v)| v));
    let mut req = Request::from_parts(parts, axum::body::Body::from(bytes));
    if let Some(t) = token {
        req.extensions_mut().insert(FormCsrfToken(t));
    }
    Ok(req)
}

/// A caller with a live session.
#[derive(Clone, Debug)]
pub struct Caller {
    /// The session, as the check saw it.
    pub session: ActiveSession,
    /// How the token came.
    pub via: Via,
    /// The token the caller presented (or the one it was just rotated to).
    pub token: Token,
}

/// Where a handler's extractor leaves a `Set-Cookie` (a token rotated on the way) for
/// [`set_cookie_slot`] to add to the response.
#[derive(Clone, Debug, Default)]
pub struct CookieSlot(Arc<Mutex<Option<HeaderValue>>>);

impl CookieSlot {
    fn put(&self, value: HeaderValue) {
        if let Ok(mut slot) = self.0.lock() {
            *slot = Some(value);
        }
    }
    fn take(&self) -> Option<HeaderValue> {
        self.0.lock().ok().and_then(|mut slot| slot.take())
    }
}

impl CookieSlot {
    /// Gives the request a slot; [`CookieSlot::apply`] sends what was put in it.
    pub fn attach(req: &mut Request) -> CookieSlot {
        let slot = CookieSlot::default();
        req.extensions_mut().insert(slot.clone());
        slot
    }

    /// Adds the `Set-Cookie` left in the slot, if any, to the response.
    pub fn apply(&self, response: &mut Response) {
        if let Some(cookie) = self.take() {
            response.headers_mut().append(header::SET_COOKIE, cookie);
        }
    }
}

impl Caller {
    /// The caller, `None` when the request has no valid session; CSRF, origin and store failures
    /// are still errors.
    /// A session scoped to one service (traded for a grant) is no session for Cloakroom's own
    /// endpoints: only the forward-auth check and the service API's validation accept it, for
    /// its audience.
    pub async fn optional(parts: &Parts, state: &AppState) -> Result<Option<Caller>, ApiError> {
        let intent = Intent::of(&parts.method);
        Self::optional_for(parts, state, intent, Audience::For(None), true).await
    }

    /// [`Caller::optional`] for a request with the given `intent` (the CSRF and Origin rules
    /// apply to cookie callers that write) and `audience`, through the one resolver shared with
    /// `cloakroom-axum` ([`cloakroom_axum::resolve`]). With `rotate`, a cookie whose token
    /// predates a privilege change gets a new token in this response; only where the response
    /// reaches the browser.
    pub async fn optional_for(
        parts: &Parts,
        state: &AppState,
        intent: Intent,
        audience: Audience<'_>,
        rotate: bool,
    ) -> Result<Option<Caller>, ApiError> {
        let config = &state.config;
        let rules = Rules {
            cookie_name: &config.cookie_name,
            allowed_origins: &config.allowed_origins,
            own_origins: config.own_origins(),
            audience,
        };
        let form = parts.extensions.get::<FormCsrfToken>().map(|t| t.0.as_str());
        let resolved = match resolve(&state.manager, &parts.headers, form, intent, &rules).await {
            Ok(Some(r)) => r,
            Ok(None) => return Ok(None),
            Err(Refusal::BadAuthorization) => return Err(ApiError::unauthenticated()),
            Err(Refusal::Origin(reason)) => {
                refused(parts, "origin_mismatch", reason);
                return Err(ApiError::origin_mismatch());
            }
            Err(Refusal::Csrf(reason)) => {
                refused(parts, "csrf_failed", reason);
                return Err(ApiError::csrf_failed());
            }
            Err(Refusal::Store(e)) => return Err(e.into()),
        };
        let Resolved { checked: Checked { token, session }, via } = resolved;
        if let Some(seen) = parts.extensions.get::<SessionSeen>() {
            let _ = seen.0.set(session.session_id_text().as_str().to_owned());
        }
        let mut caller = Caller { session, via, token };
        if rotate && via == Via::Cookie && caller.session.needs_new_token() {
            // Boxed: rare, and its future is large.
            Box::pin(caller.rotate_for_privileges(parts, state)).await?;
        }
        Ok(Some(caller))
    }
}

impl Caller {
    /// The user's privileges changed since this cookie's token was issued: a new token, sent with
    /// this response. The CSRF token stays, so a page's next write still works. Losing the race to
    /// a concurrent request of the same browser leaves the rotation to that request.
    async fn rotate_for_privileges(
        &mut self,
        parts: &Parts,
        state: &AppState,
    ) -> Result<(), ApiError> {
        let Some((token, session)) =
            state.manager.rotate(&self.session, &self.token, false).await?
        else {
            return Ok(());
        };
        if let Some(slot) = parts.extensions.get::<CookieSlot>() {
            slot.put(state.session_cookie(&token.expose()));
        }
        let event = AuditEvent::new(AuditKind::SessionRotated, "system").of_session(&session);
        state.service.audit(event.detail("privileges changed")).await;
        self.session = session;
        self.token = token;
        Ok(())
    }
}

/// Logs a refused cookie write with its reason and the headers that decided it (never a token).
fn refused(parts: &Parts, code: &'static str, reason: &'static str) {
    // At most 128 characters of a value, control characters shown as `?`: anyone can send these.
    let header = |name: &str| -> String {
        parts.headers.get(name).map_or_else(
            || "-".to_owned(),
            |v| {
                String::from_utf8_lossy(v.as_bytes())
                    .chars()
                    .take(128)
                    .map(|c| if c.is_control() { '?' } else { c })
                    .collect()
            },
        )
    };
    tracing::info!(
        target: "cloakroom::csrf",
        code,
        reason,
        method = %parts.method,
        path = parts.uri.path(),
        origin = %header("origin"),
        sec_fetch_site = %header("sec-fetch-site"),
        original_method = %header("x-original-method"),
        forwarded_method = %header("x-forwarded-method"),
        "refused a cookie request that changes state"
    );
}

/// The public id of the session a request turned out to carry, for the access log; put in
/// the request by the per-request layer, filled by [`Caller`].
#[derive(Clone, Debug, Default)]
pub struct SessionSeen(pub Arc<std::sync::OnceLock<String>>);

/// What a forward-auth proxy says of the method of the request it guards.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ForwardedMethod {
    /// Neither `X-Original-Method` nor `X-Forwarded-Method` came.
    Absent,
    /// Every value names a safe method.
    Safe,
    /// Some value names a state-changing method, or cannot be read (these headers can only make
    /// the check stricter).
    Unsafe,
}

/// Reads `X-Original-Method` (nginx, by configuration) and `X-Forwarded-Method` (Traefik,
/// Caddy), every value of each, in one pass.
pub fn forwarded_method(headers: &HeaderMap) -> ForwardedMethod {
    const X_ORIGINAL_METHOD: HeaderName = HeaderName::from_static("x-original-method");
    const X_FORWARDED_METHOD: HeaderName = HeaderName::from_static("x-forwarded-method");
    let mut seen = ForwardedMethod::Absent;
    for value in [X_ORIGINAL_METHOD, X_FORWARDED_METHOD].iter().flat_map(|n| headers.get_all(n)) {
        match value.to_str().ok().and_then(|m| Method::from_bytes(m.trim().as_bytes()).ok()) {
            Some(m) if !is_unsafe(&m) => seen = ForwardedMethod::Safe,
            _ => return ForwardedMethod::Unsafe,
        }
    }
    seen
}

impl FromRequestParts<AppState> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        Caller::optional(parts, state).await?.ok_or_else(ApiError::unauthenticated)
    }
}

/// A caller of the service API: an API key, or an `admin` user's session (with CSRF for cookies),
/// as the use cases' actor.
#[derive(Clone, Debug)]
pub struct Operator(pub Actor);

impl FromRequestParts<AppState> for Operator {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        if let Some(actor) = api_key(parts, state).await? {
            return Ok(Operator(actor));
        }
        let caller = Caller::from_request_parts(parts, state).await?;
        Actor::admin(&caller.session)
            .map(Operator)
            .map_err(|_| ApiError::forbidden("the service API needs an API key or the admin role"))
    }
}

/// The API key the request presents as `Authorization: Bearer crk_…`, as an actor; `None` when it
/// presents none (a session, or nothing), 401 for a key that does not exist.
pub async fn api_key(parts: &Parts, state: &AppState) -> Result<Option<Actor>, ApiError> {
    let Some((token, Via::Bearer)) = credential(&parts.headers, &state.config.cookie_name)? else {
        return Ok(None);
    };
    if !token.starts_with(SecretKind::ApiKey.prefix()) {
        return Ok(None);
    }
    let key = Token::parse(SecretKind::ApiKey, token).map_err(|_| ApiError::invalid_api_key())?;
    match state.service.api_key_actor(&key).await? {
        Some(actor) => Ok(Some(actor)),
        None => Err(ApiError::invalid_api_key()),
    }
}

/// The client's address (the peer, or the forwarded address when the peer is a trusted proxy)
/// and user agent: the use cases' [`Client`].
pub use cloakroom_service::Client;

impl FromRequestParts<AppState> for Client {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        let peer = parts.extensions.get::<ConnectInfo<SocketAddr>>().map(|c| c.0.ip());
        let ip = peer.map(|p| client_ip(&parts.headers, &state.config.trusted_proxies, p));
        let user_agent = parts
            .headers
            .get(header::USER_AGENT)
            .and_then(|v| v.to_str().ok())
            .map(|s| s.chars().take(512).collect());
        Ok(Client { ip, user_agent })
    }
}

/// The client's address for a request from `peer`. From a trusted proxy, it is the first
/// `X-Forwarded-For` hop from the right (the nearest) that is not a trusted proxy itself, each
/// trusted hop vouching for the one to its left; several headers make one list, joined in order.
/// A hop that does not parse as a bare IP address (`ip:port`, `[v6]:port`, `unknown`, an empty
/// one, bytes that are not text) ends the walk before such an address is found, and the answer is
/// the peer: nothing vouches for what lies left of it, which the client itself may have written.
/// Skipping such hops instead made an attacker's leftmost value the client IP of the throttle
/// and the audit. When every hop is trusted, the leftmost is the client.
pub fn client_ip(headers: &HeaderMap, trusted: &TrustedProxies, peer: IpAddr) -> IpAddr {
    if !trusted.contains(peer) {
        return peer;
    }
    let mut nearest_trusted = peer;
    for value in headers.get_all(X_FORWARDED_FOR).iter().rev() {
        let Ok(value) = value.to_str() else { return peer };
        for hop in value.rsplit(',') {
            match hop.trim().parse::<IpAddr>() {
                Ok(ip) if trusted.contains(ip) => nearest_trusted = ip.to_canonical(),
                Ok(ip) => return ip.to_canonical(),
                Err(_) => return peer,
            }
        }
    }
    nearest_trusted
}

/// `X-Forwarded-For`.
const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");

// ---------------------------------------------------------------- bodies, paths, queries

/// A JSON body; refuses other content types, malformed JSON, unknown fields (where the type says
/// so) and bodies over the route's limit, with the contract's errors.
#[derive(Debug)]
pub struct ApiJson<T>(pub T);

fn json_rejection(e: JsonRejection) -> ApiError {
    match e {
        JsonRejection::MissingJsonContentType(_) => {
            ApiError::invalid("expected Content-Type: application/json")
        }
        JsonRejection::BytesRejection(b) if b.status() == StatusCode::PAYLOAD_TOO_LARGE => {
            ApiError::payload_too_large("request body too large")
        }
        other => ApiError::invalid(format!("invalid JSON body: {}", other.body_text())),
    }
}

impl<T: DeserializeOwned, S: Send + Sync> FromRequest<S> for ApiJson<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        Json::<T>::from_request(req, state).await.map(|Json(v)| ApiJson(v)).map_err(json_rejection)
    }
}

/// A JSON or form-encoded body, chosen by `Content-Type`.
#[derive(Debug)]
pub struct JsonOrForm<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequest<S> for JsonOrForm<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        if is_form(req.headers()) {
            axum::Form::<T>::from_request(req, state).await.map(|f| JsonOrForm(f.0)).map_err(|e| {
                match e {
                    FormRejection::BytesRejection(b)
                        if b.status() == StatusCode::PAYLOAD_TOO_LARGE =>
                    {
                        ApiError::payload_too_large("request body too large")
                    }
                    other => ApiError::invalid(format!("invalid form body: {}", other.body_text())),
                }
            })
        } else {
            ApiJson::<T>::from_request(req, state).await.map(|j| JsonOrForm(j.0))
        }
    }
}

/// A path parameter; a malformed one is 404 (it names nothing that exists).
#[derive(Debug)]
pub struct ApiPath<T>(pub T);

impl<T: DeserializeOwned + Send, S: Send + Sync> FromRequestParts<S> for ApiPath<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        axum::extract::Path::<T>::from_request_parts(parts, state)
            .await
            .map(|p| ApiPath(p.0))
            .map_err(|e: PathRejection| {
                ApiError::not_found(format!("no such resource: {}", e.body_text()))
            })
    }
}

/// A query string.
#[derive(Debug)]
pub struct ApiQuery<T>(pub T);

impl<T: DeserializeOwned + Send, S: Send + Sync> FromRequestParts<S> for ApiQuery<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, ApiError> {
        Self::from_uri(&parts.uri).map(ApiQuery)
    }
}

impl<T: DeserializeOwned> ApiQuery<T> {
    /// The query of `uri`, or the error the extractor answers with.
    pub fn from_uri(uri: &axum::http::Uri) -> Result<T, ApiError> {
        axum::extract::Query::<T>::try_from_uri(uri).map(|q| q.0).map_err(|e: QueryRejection| {
            ApiError::invalid(format!("invalid query: {}", e.body_text()))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    #[test]
    fn finds_the_named_cookie_among_many() {
        let mut h = HeaderMap::new();
        h.append(header::COOKIE, HeaderValue::from_static("a=1; __Host-cloakroom=crs_x; b=2"));
        assert_eq!(find_cookie(&h, "__Host-cloakroom"), Some("crs_x"));
        assert_eq!(find_cookie(&h, "c"), None);
        let mut h = HeaderMap::new();
        h.append(header::COOKIE, HeaderValue::from_bytes(b"\xff\xfe=1").unwrap());
        h.append(header::COOKIE, HeaderValue::from_static("__Host-cloakroom=\"crs_y\""));
        assert_eq!(find_cookie(&h, "__Host-cloakroom"), Some("crs_y"));
    }

    #[test]
    fn bearer_wins_over_cookie_and_other_schemes_are_refused() {
        let mut h = HeaderMap::new();
        h.insert(header::COOKIE, HeaderValue::from_static("__Host-cloakroom=crs_c"));
        h.insert(header::AUTHORIZATION, HeaderValue::from_static("Bearer crs_b"));
        assert_eq!(credential(&h, "__Host-cloakroom").unwrap(), Some(("crs_b", Via::Bearer)));
        h.insert(header::AUTHORIZATION, HeaderValue::from_static("Basic YTpi"));
        assert!(credential(&h, "__Host-cloakroom").is_err());
    }

    fn walk(trusted: &[&str], peer: &str, headers: &[&'static [u8]]) -> IpAddr {
        let trusted = TrustedProxies::parse(trusted).unwrap();
        let mut h = HeaderMap::new();
        for v in headers {
            h.append("x-forwarded-for", HeaderValue::from_bytes(v).unwrap());
        }
        client_ip(&h, &trusted, peer.parse().unwrap())
    }

    fn ip(text: &str) -> IpAddr {
        text.parse().unwrap()
    }

    #[test]
    fn forwarded_for_takes_the_rightmost_untrusted_hop() {
        let xff: &[&[u8]] = &[b"6.6.6.6, 203.0.113.9, 10.0.0.1"];
        assert_eq!(walk(&["10.0.0.1"], "10.0.0.1", xff), ip("203.0.113.9"));
        // Through a trusted network of proxies.
        let xff: &[&[u8]] = &[b"6.6.6.6, 203.0.113.9, 10.0.0.7, 10.1.0.3"];
        assert_eq!(walk(&["10.0.0.0/8"], "10.0.0.1", xff), ip("203.0.113.9"));
        // From a peer that is no trusted proxy, the header counts for nothing.
        assert_eq!(walk(&["10.0.0.1"], "198.51.100.4", xff), ip("198.51.100.4"));
        // Every hop trusted: the leftmost.
        assert_eq!(walk(&["10.0.0.0/8"], "10.0.0.1", &[b"10.0.0.9, 10.0.0.8"]), ip("10.0.0.9"));
        // No header: the peer.
        assert_eq!(walk(&["10.0.0.1"], "10.0.0.1", &[]), ip("10.0.0.1"));
    }

    #[test]
    fn forwarded_for_with_an_unparsable_hop_falls_back_to_the_peer() {
        for bad in [
            &b"6.6.6.6, 203.0.113.9:4711"[..],
            b"6.6.6.6, unknown",
            b"6.6.6.6, [2001:db8::1]:443",
            b"6.6.6.6, , 10.0.0.2",
            b"6.6.6.6, \xff",
        ] {
            assert_eq!(walk(&["10.0.0.0/8"], "10.0.0.1", &[bad]), ip("10.0.0.1"), "{bad:?}");
        }
        // An unparsable hop left of the first untrusted one no longer matters.
        let xff: &[&[u8]] = &[b"garbage, 203.0.113.9, 10.0.0.2"];
        assert_eq!(walk(&["10.0.0.0/8"], "10.0.0.1", xff), ip("203.0.113.9"));
    }

    #[test]
    fn several_forwarded_for_headers_are_one_list_in_order() {
        let xff: &[&[u8]] = &[b"6.6.6.6", b"203.0.113.9, 10.0.0.2"];
        assert_eq!(walk(&["10.0.0.0/8"], "10.0.0.1", xff), ip("203.0.113.9"));
        let xff: &[&[u8]] = &[b"6.6.6.6, 203.0.113.9", b"10.0.0.2"];
        assert_eq!(walk(&["10.0.0.0/8"], "10.0.0.1", xff), ip("203.0.113.9"));
        let xff: &[&[u8]] = &[b"6.6.6.6", b"unknown", b"10.0.0.2"];
        assert_eq!(walk(&["10.0.0.0/8"], "10.0.0.1", xff), ip("10.0.0.1"));
    }
}
