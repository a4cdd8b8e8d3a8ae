//! Cloakroom's application layer: every use case (log in, log out, revoke one / others / all,
//! change a password, manage users and roles, API keys, grants, the first-run setup) in one
//! place, shared by the HTTP API, the pages and the CLI.
//!
//! A use case takes an [`Actor`] (who asks) and, where it matters, the [`Client`] (from where),
//! applies the rules (throttling, ownership, the self-disable guard, sizes and policies), makes
//! the change through the [`SessionManager`] (which keeps node-local caches honest), writes the
//! audit event and bumps the metric itself, and answers with a domain outcome or a
//! [`DomainError`]. Front ends only parse, call and render: an HTTP handler maps the error to a
//! status in one place, a page to a message, the CLI to an exit code. So a rule added here holds
//! for every front end at once, and a new front end (or a second factor) is written once.
//!
//! The session check itself, on the hot path of every request, stays in
//! [`SessionManager::check`]: it decides nothing that needs an actor.

mod accounts;
mod auth;
mod error;
mod grants;
mod sessions;
mod setup;
pub mod throttle;

use std::net::IpAddr;
use std::sync::Arc;

use cloakroom_core::audit::{AuditEvent, AuditFilter};
use cloakroom_core::grants::GrantIssuer;
use cloakroom_core::manager::ClientInfo;
use cloakroom_core::{ActiveSession, Role, SessionId, SessionManager, UserId, Username};

pub use crate::accounts::{UserChanges, parse_roles};
pub use crate::auth::PasswordChanged;
pub use crate::error::{DomainError, DomainResult};
pub use crate::sessions::{DATA_LIMIT, check_data};
pub use crate::setup::{SETUP_VALID_FOR, SetupToken};
use crate::throttle::Throttle;

/// Who asks for a use case. The audit log names them ([`Actor::audit_name`]); the rules differ:
/// an owner acts on their own account and sessions only, an admin on anyone's but may not lock
/// themselves out, an operator with no account (an API key, the CLI) has no such guard.
#[derive(Clone, Debug)]
pub enum Actor {
    /// A signed-in user acting on their own account, from one of their sessions.
    Owner(Me),
    /// A signed-in user with the `admin` role acting on accounts (the service API, the admin
    /// pages). Made only by [`Actor::admin`], which checks the role.
    Admin(Me),
    /// A service, by API key name.
    ApiKey(String),
    /// The command line on the server's machine.
    Cli,
    /// The holder of the first-run setup link.
    Setup,
    /// A grant's bearer, redeeming or trading it.
    Grant,
    /// Cloakroom itself (evictions by the per-user cap, say).
    System,
}

/// A signed-in user acting, with the session they act from.
#[derive(Clone, Debug)]
pub struct Me {
    /// Their id.
    pub id: UserId,
    /// Their name.
    pub username: Username,
    /// The session the request came with.
    pub session: SessionId,
}

impl Me {
    fn of(session: &ActiveSession) -> Self {
        Me {
            id: session.user_id(),
            username: session.username_owned(),
            session: session.session_id(),
        }
    }
}

impl Actor {
    /// The owner of `session`, acting on their own account.
    pub fn owner(session: &ActiveSession) -> Self {
        Actor::Owner(Me::of(session))
    }

    /// The user of `session` as an admin: [`DomainError::Forbidden`] without the `admin` role.
    pub fn admin(session: &ActiveSession) -> DomainResult<Self> {
        if session.has_role(Role::ADMIN) {
            Ok(Actor::Admin(Me::of(session)))
        } else {
            Err(not_operator())
        }
    }

    /// How the audit log names the actor: `self`, `user:NAME`, `apikey:NAME`, `cli`, `setup`,
    /// `grant`, `system`.
    pub fn audit_name(&self) -> String {
        match self {
            Actor::Owner(_) => "self".into(),
            Actor::Admin(me) => format!("user:{}", me.username),
            Actor::ApiKey(name) => format!("apikey:{name}"),
            Actor::Cli => "cli".into(),
            Actor::Setup => "setup".into(),
            Actor::Grant => "grant".into(),
            Actor::System => "system".into(),
        }
    }

    /// The actor as the manager's rules see it: a user (bound by the self-disable guard) or an
    /// operator.
    fn for_manager(&self) -> cloakroom_core::manager::Actor<'_> {
        match self {
            Actor::Owner(me) | Actor::Admin(me) => cloakroom_core::manager::Actor::User(&me.id),
            _ => cloakroom_core::manager::Actor::Operator,
        }
    }

    /// Whether the actor may act on any account (admin, API key, CLI), not only its own.
    fn is_operator(&self) -> bool {
        matches!(self, Actor::Admin(_) | Actor::ApiKey(_) | Actor::Cli)
    }

    fn operator_only(&self) -> DomainResult<()> {
        if self.is_operator() { Ok(()) } else { Err(not_operator()) }
    }
}

/// The refusal of an operator's use case to anyone else.
fn not_operator() -> DomainError {
    DomainError::Forbidden("this needs an API key or the admin role".into())
}

/// Where a request comes from: the client's address (already resolved through trusted proxies)
/// and user agent.
#[derive(Clone, Debug, Default)]
pub struct Client {
    /// Client IP.
    pub ip: Option<IpAddr>,
    /// User agent (at most 512 bytes are kept with a session).
    pub user_agent: Option<String>,
}

impl Client {
    /// As recorded with a session.
    pub fn info(&self) -> ClientInfo {
        ClientInfo { ip: self.ip.map(|ip| ip.to_string()), user_agent: self.user_agent.clone() }
    }

    /// The IP as text, for audit events.
    pub fn ip_text(&self) -> Option<String> {
        self.ip.map(|ip| ip.to_string())
    }
}

/// The use cases, over one [`SessionManager`]. Cheap to clone: one `Arc`.
#[derive(Clone)]
pub struct Service(Arc<Inner>);

struct Inner {
    manager: SessionManager,
    throttle: Throttle,
    grants: Option<Arc<GrantIssuer>>,
    setup: std::sync::Mutex<Option<SetupToken>>,
}

impl std::fmt::Debug for Service {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Service").field("manager", &self.0.manager).finish_non_exhaustive()
    }
}

impl Service {
    /// The use cases over `manager`, throttled by `throttle`, with grants when `grants` is given.
    pub fn new(
        manager: SessionManager,
        throttle: Throttle,
        grants: Option<Arc<GrantIssuer>>,
    ) -> Self {
        Self(Arc::new(Inner { manager, throttle, grants, setup: std::sync::Mutex::new(None) }))
    }

    /// The manager: for the session check and the invalidation feed.
    pub fn manager(&self) -> &SessionManager {
        &self.0.manager
    }

    /// The throttle.
    pub fn throttle(&self) -> &Throttle {
        &self.0.throttle
    }

    fn grants(&self) -> DomainResult<&Arc<GrantIssuer>> {
        self.0.grants.as_ref().ok_or(DomainError::GrantsOff)
    }

    fn store(&self) -> &Arc<dyn cloakroom_core::Store> {
        self.0.manager.store()
    }

    /// The store's short name (`sqlite`, `redis`, `postgres`), for logs.
    pub fn store_kind(&self) -> &'static str {
        self.store().kind()
    }

    /// Whether the store answers (`/readyz`).
    pub async fn ping(&self) -> DomainResult<()> {
        Ok(self.store().ping().await?)
    }

    /// Records an audit event in the store and in the log (target `cloakroom::audit`). A store
    /// failure is logged, never fatal to the use case: the change was made, and the log line
    /// still carries the event.
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
        if let Err(e) = self.store().append_audit(&event).await {
            tracing::error!(error = %e, kind = %event.kind, "could not store audit event");
        }
    }

    /// The audit log, newest first, filtered.
    pub async fn audit_log(
        &self,
        actor: &Actor,
        filter: &AuditFilter,
    ) -> DomainResult<Vec<AuditEvent>> {
        actor.operator_only()?;
        Ok(self.store().list_audit(filter).await?)
    }
}

/// Counts revocations by reason (`cloakroom_revocations_total`).
fn count_revocations(reason: &'static str, n: usize) {
    metrics::counter!("cloakroom_revocations_total", "reason" => reason).increment(n as u64);
}
