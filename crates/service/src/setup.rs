//! The first-run setup: while the store has no user, a one-time link (printed at start-up)
//! lets its holder create the first administrator and be logged in as them.

use std::time::{Duration, Instant};

use cloakroom_core::audit::{AuditEvent, AuditKind};
use cloakroom_core::manager::Issued;
use cloakroom_core::password::Password;
use cloakroom_core::{Role, Username};
use subtle::ConstantTimeEq as _;

use crate::{Actor, Client, DomainError, DomainResult, Service};

/// How long the first-run setup link works.
pub const SETUP_VALID_FOR: Duration = Duration::from_secs(15 * 60);

/// The first-run setup token: made at start-up when the store has no user, printed once, valid
/// for [`SETUP_VALID_FOR`], used once.
pub struct SetupToken {
    token: String,
    until: Instant,
}

impl std::fmt::Debug for SetupToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SetupToken(…)")
    }
}

impl SetupToken {
    /// A fresh token.
    pub fn generate() -> Result<Self, cloakroom_core::token::RandomError> {
        let mut bytes = [0u8; 32];
        cloakroom_core::token::random_bytes(&mut bytes)?;
        use base64::Engine as _;
        let token = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes);
        Ok(Self { token, until: Instant::now() + SETUP_VALID_FOR })
    }

    /// The token, for the link.
    pub fn expose(&self) -> &str {
        &self.token
    }

    fn matches(&self, presented: &str) -> bool {
        Instant::now() < self.until && bool::from(self.token.as_bytes().ct_eq(presented.as_bytes()))
    }
}

/// Why a setup link is refused: expired, used, or an administrator exists.
fn refused() -> DomainError {
    DomainError::Forbidden(
        "this setup link is not valid: it expired, was used, or an administrator exists".into(),
    )
}

impl Service {
    /// Makes a first-run setup token (replacing any) and returns it, for the link printed at
    /// start-up.
    pub fn arm_setup(&self) -> Result<String, cloakroom_core::token::RandomError> {
        let token = SetupToken::generate()?;
        let text = token.expose().to_owned();
        *self.setup_slot() = Some(token);
        Ok(text)
    }

    fn setup_slot(&self) -> std::sync::MutexGuard<'_, Option<SetupToken>> {
        self.0.setup.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Whether `presented` is the live setup token (to show the form).
    pub fn setup_link_valid(&self, presented: &str) -> bool {
        self.setup_slot().as_ref().is_some_and(|t| t.matches(presented))
    }

    /// Creates the first administrator with the setup link's token and logs them in. The link
    /// is taken before anything else, so racing posts cannot both succeed; it works again only
    /// after a failure the user can fix (a weak password, a bad name) or a store failure.
    pub async fn complete_setup(
        &self,
        presented: &str,
        username: &str,
        password: String,
        client: &Client,
    ) -> DomainResult<Issued> {
        let taken = {
            let mut slot = self.setup_slot();
            if !slot.as_ref().is_some_and(|t| t.matches(presented)) {
                return Err(refused());
            }
            slot.take()
        };
        let restore = |service: &Service| {
            if let Some(t) = taken {
                *service.setup_slot() = Some(t);
            }
        };
        match self.store().list_users().await {
            Ok(users) if users.is_empty() => {}
            Ok(_) => return Err(refused()),
            Err(e) => {
                restore(self);
                return Err(e.into());
            }
        }
        let created = match Username::parse(username) {
            Ok(name) => {
                let admin = Role::parse(Role::ADMIN).into_iter().collect();
                let password = Password::new(password);
                self.manager().create_user(name, Some(&password), admin).await.map_err(Into::into)
            }
            Err(e) => Err(DomainError::Invalid(format!("username: {e}"))),
        };
        let user = match created {
            Ok(u) => u,
            Err(e) => {
                restore(self);
                return Err(e);
            }
        };
        self.audit(
            AuditEvent::new(AuditKind::UserCreated, Actor::Setup.audit_name())
                .user(Some(&user.id), &user.username)
                .ip(client.ip_text())
                .detail("first administrator, from the setup link"),
        )
        .await;
        tracing::info!(username = %user.username, "first administrator created; the setup link is spent");
        let issued = self.manager().create(&user, client.info(), None).await?;
        metrics::counter!("cloakroom_sessions_created_total", "how" => "setup").increment(1);
        Ok(issued)
    }
}
