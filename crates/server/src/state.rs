//! The application state shared by every handler.

use std::ops::Deref;
use std::sync::Arc;

use axum::http::HeaderValue;
use cloakroom_core::SessionManager;
use cloakroom_core::audit::AuditEvent;
use metrics_exporter_prometheus::PrometheusHandle;

use crate::config::Config;
use crate::grants::Grants;
use crate::throttle::Throttle;

/// Cheap to clone: one `Arc`.
#[derive(Clone)]
pub struct AppState(Arc<Inner>);

/// What the state holds.
pub struct Inner {
    /// Sessions and users.
    pub manager: SessionManager,
    /// Validated configuration.
    pub config: Config,
    /// Login throttle.
    pub throttle: Throttle,
    /// Renders `/metrics`.
    pub metrics: PrometheusHandle,
    /// Grants, when a sealing key is available (see [`crate::grants::sealing_key`]).
    pub grants: Option<Arc<Grants>>,
    /// Slots for event streams (`/v1/revocations`), capped in all and per client address.
    pub streams: crate::limits::Slots,
    /// The first-run setup link's token, while one is valid.
    setup: std::sync::Mutex<Option<crate::pages::SetupToken>>,
}

impl Deref for AppState {
    type Target = Inner;
    fn deref(&self) -> &Inner {
        &self.0
    }
}

impl AppState {
    /// Builds the state.
    pub fn new(
        manager: SessionManager,
        config: Config,
        throttle: Throttle,
        metrics: PrometheusHandle,
        grants: Option<Arc<Grants>>,
    ) -> Self {
        let setup = std::sync::Mutex::new(None);
        let cap =
            crate::limits::connection_cap(config.max_connections, crate::limits::open_file_limit());
        let streams = crate::limits::Slots::for_streams(cap);
        Self(Arc::new(Inner { manager, config, throttle, metrics, grants, streams, setup }))
    }

    /// Makes a first-run setup token (replacing any) and returns it, for the link printed at
    /// start-up.
    pub fn arm_setup(&self) -> Result<String, cloakroom_core::token::RandomError> {
        let token = crate::pages::SetupToken::generate()?;
        let text = token.expose().to_owned();
        *self.setup.lock().unwrap_or_else(|e| e.into_inner()) = Some(token);
        Ok(text)
    }

    /// Whether `presented` is the live setup token.
    pub(crate) fn setup_matches(&self, presented: &str) -> bool {
        let guard = self.setup.lock().unwrap_or_else(|e| e.into_inner());
        guard.as_ref().is_some_and(|t| t.matches(presented))
    }

    /// Takes the setup token out if `presented` is it (one use), for [`Self::restore_setup`] if
    /// the attempt fails for a reason the user can fix.
    pub(crate) fn take_setup(&self, presented: &str) -> Option<crate::pages::SetupToken> {
        let mut guard = self.setup.lock().unwrap_or_else(|e| e.into_inner());
        if guard.as_ref().is_some_and(|t| t.matches(presented)) { guard.take() } else { None }
    }

    /// Puts back a token taken by [`Self::take_setup`].
    pub(crate) fn restore_setup(&self, token: crate::pages::SetupToken) {
        *self.setup.lock().unwrap_or_else(|e| e.into_inner()) = Some(token);
    }

    /// Records an audit event in the store and in the log. A store failure is logged, never
    /// fatal to the request: the log line still carries the event.
    pub async fn audit(&self, event: AuditEvent) {
        tracing::info!(
            target: "cloakroom::audit",
            kind = %event.kind,
            actor = %event.actor,
            username = event.username.as_ref().map(|u| u.as_str()),
            session_id = event.session_id.as_ref().map(|s| s.as_str()),
            ip = event.ip.as_deref(),
            detail = event.detail.as_deref(),
            "audit"
        );
        if let Err(e) = self.manager.store().append_audit(&event).await {
            tracing::error!(error = %e, kind = %event.kind, "could not store audit event");
        }
    }

    /// `Set-Cookie` for a new session token.
    pub fn session_cookie(&self, token: &str) -> HeaderValue {
        let v =
            format!("{}={token}; HttpOnly; Secure; SameSite=Lax; Path=/", self.config.cookie_name);
        HeaderValue::from_str(&v).unwrap_or_else(|_| HeaderValue::from_static(""))
    }

    /// `Set-Cookie` that removes the session cookie.
    pub fn clear_cookie(&self) -> HeaderValue {
        let v = format!(
            "{}=; HttpOnly; Secure; SameSite=Lax; Path=/; Max-Age=0",
            self.config.cookie_name
        );
        HeaderValue::from_str(&v).unwrap_or_else(|_| HeaderValue::from_static(""))
    }
}
