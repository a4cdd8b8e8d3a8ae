//! The one security sequence that turns a request into a session, shared by this crate's layer
//! and the Cloakroom server's extractors (its API, its pages and its forward-auth check), so both
//! judge every request alike:
//!
//! 1. the credential: `Authorization: Bearer` or the session cookie (a malformed `Authorization`
//!    is refused, never skipped);
//! 2. for a cookie request that changes state, the origin: an allowed `Origin`, or without one a
//!    `Sec-Fetch-Site` of `same-origin` / `none` (checked before the store is asked, so a
//!    cross-site write costs no lookup);
//! 3. the check itself, through the node-local cache ([`SessionManager::check`]); a store that
//!    cannot answer is an error, never a session;
//! 4. the audience: a session scoped to one service (traded for a grant) counts only where that
//!    service is named;
//! 5. for a cookie request that changes state, the session's CSRF token (`X-CSRF-Token`, or a form
//!    field the caller lifted from the body), or behind forward-auth without one, the browser's own
//!    word that the request is same-origin.

use axum::http::HeaderMap;
use cloakroom_core::manager::Checked;
use cloakroom_core::{SessionManager, StoreError};

use crate::request::{self, Via};

/// What a request is about to do, for the CSRF rules of cookie callers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Intent {
    /// Reads only: no CSRF rule.
    Read,
    /// Changes state, asked of the service directly: an allowed origin and the CSRF token.
    Write,
    /// Changes state behind a forward-auth proxy (the check of a guarded `POST`): an allowed
    /// origin, and the CSRF token or, without one, the browser's word that the request comes
    /// from the guarded app's own origin (`Sec-Fetch-Site`, or without Fetch Metadata an own
    /// `Origin`).
    ForwardedWrite,
}

impl Intent {
    /// [`Intent::Write`] for a state-changing method, else [`Intent::Read`].
    pub fn of(method: &axum::http::Method) -> Self {
        if request::is_unsafe(method) { Intent::Write } else { Intent::Read }
    }
}

/// Which sessions a request may resolve to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Audience<'a> {
    /// Login sessions, and sessions scoped to this service when it is named.
    For(Option<&'a str>),
    /// Any live session, scoped ones too (ending a session is what any holder may ask).
    Any,
}

/// The rules a request is resolved under.
#[derive(Clone, Copy, Debug)]
pub struct Rules<'a> {
    /// The session cookie's name.
    pub cookie_name: &'a str,
    /// Origins (lowercase) from which cookie requests may change state.
    pub allowed_origins: &'a [String],
    /// The guarded app's own origins, for [`Intent::ForwardedWrite`] without a token.
    pub own_origins: &'a [String],
    /// Which sessions count.
    pub audience: Audience<'a>,
}

/// Why a request was refused. Each carries the reason for the log; none reveals whether a
/// session exists.
#[derive(Debug)]
pub enum Refusal {
    /// A malformed `Authorization` header.
    BadAuthorization,
    /// A cookie write from an origin that is not allowed.
    Origin(&'static str),
    /// A cookie write without the session's CSRF token.
    Csrf(&'static str),
    /// The store could not vouch for the session: fail closed.
    Store(StoreError),
}

/// A request that resolved to a live session.
#[derive(Debug)]
pub struct Resolved {
    /// The presented token and its session.
    pub checked: Checked,
    /// How the token came.
    pub via: Via,
}

/// Resolves a request to its session under `rules`: `Ok(None)` when it presents no session that
/// counts (none, unknown, revoked, expired, another service's), an error when it must be refused.
/// `form_csrf` is a `csrf_token` form field the caller read from the body, if any.
pub async fn resolve(
    manager: &SessionManager,
    headers: &HeaderMap,
    form_csrf: Option<&str>,
    intent: Intent,
    rules: &Rules<'_>,
) -> Result<Option<Resolved>, Refusal> {
    let (token, via) = match request::credential(headers, rules.cookie_name) {
        Ok(Some(found)) => found,
        Ok(None) => return Ok(None),
        Err(request::BadAuthorization) => return Err(Refusal::BadAuthorization),
    };
    let cookie_write = via == Via::Cookie && intent != Intent::Read;
    // `Origin: null` with `Sec-Fetch-Site: same-origin` is an app page under
    // `Referrer-Policy: no-referrer` (a page with an opaque origin is always `cross-site`).
    let null_same_origin =
        intent == Intent::ForwardedWrite && request::null_origin_same_origin(headers);
    if cookie_write && !null_same_origin && !request::origin_allowed(headers, rules.allowed_origins)
    {
        return Err(Refusal::Origin("the Origin (or Sec-Fetch-Site) is not allowed"));
    }
    let Some(checked) = manager.check(token).await.map_err(Refusal::Store)? else {
        return Ok(None);
    };
    if let Audience::For(audience) = rules.audience
        && !checked.session.valid_for(audience)
    {
        return Ok(None);
    }
    if cookie_write {
        // A header that is there but no text counts as a wrong token, not as none.
        let presented = match headers.get(request::X_CSRF_TOKEN) {
            Some(v) => Some(v.to_str().unwrap_or("\u{fffd}")),
            None => form_csrf,
        };
        match presented {
            Some(p) if checked.session.csrf_matches(p) => {}
            Some(_) => return Err(Refusal::Csrf("a CSRF token that is not the session's")),
            // A form behind forward-auth cannot send the header, and the proxy does not forward
            // its body: the browser's own signals stand in for the token there, for the guarded
            // app's own origin only (another allowed origin may write with the token, not by the
            // browser's word).
            None if intent == Intent::ForwardedWrite => {
                if !(null_same_origin
                    || request::browser_says_same_origin(headers, rules.own_origins))
                {
                    return Err(Refusal::Csrf("no CSRF token and no same-origin signal"));
                }
            }
            None => return Err(Refusal::Csrf("no CSRF token")),
        }
    }
    Ok(Some(Resolved { checked, via }))
}
