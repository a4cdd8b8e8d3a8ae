//! The application state shared by every handler.

use std::ops::Deref;
use std::sync::Arc;

use axum::http::HeaderValue;
use cloakroom_core::SessionManager;
use cloakroom_service::Service;
use metrics_exporter_prometheus::PrometheusHandle;

use crate::config::Config;
use crate::grants::Grants;
use crate::throttle::Throttle;

/// Cheap to clone: one `Arc`.
#[derive(Clone)]
pub struct AppState(Arc<Inner>);

/// What the state holds.
pub struct Inner {
    /// The use cases every front end shares.
    pub service: Service,
    /// The session check and the invalidation feed (the service's own manager).
    pub manager: SessionManager,
    /// Validated configuration.
    pub config: Config,
    /// Renders `/metrics`.
    pub metrics: PrometheusHandle,
    /// The grants feed hub, when a sealing key is available (see [`crate::grants::sealing_key`]).
    pub grants: Option<Arc<Grants>>,
    /// Slots for event streams (`/v1/revocations`), capped in all and per client address.
    pub streams: crate::limits::Slots,
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
        let cap =
            crate::limits::connection_cap(config.max_connections, crate::limits::open_file_limit());
        let streams = crate::limits::Slots::for_streams(cap);
        let issuer = grants.as_ref().map(|g| Arc::clone(&g.issuer));
        let service = Service::new(manager.clone(), throttle, issuer);
        Self(Arc::new(Inner { service, manager, config, metrics, grants, streams }))
    }

    /// Makes a first-run setup token (replacing any) and returns it, for the link printed at
    /// start-up.
    pub fn arm_setup(&self) -> Result<String, cloakroom_core::token::RandomError> {
        self.service.arm_setup()
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
