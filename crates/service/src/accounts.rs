//! Users (create, password, roles, disable and enable) and API keys, for operators.

use cloakroom_core::audit::{AuditEvent, AuditKind};
use cloakroom_core::password::Password;
use cloakroom_core::store::ApiKey;
use cloakroom_core::token::{SecretKind, Token};
use cloakroom_core::user::normalize_roles;
use cloakroom_core::{Role, SessionId, Timestamp, User, Username};

use crate::{Actor, DomainError, DomainResult, Service, count_revocations};

/// What to change on a user, each part optional; a user that does not exist is created with it.
#[derive(Clone, Debug, Default)]
pub struct UserChanges {
    /// A new password (policy checked).
    pub password: Option<String>,
    /// The whole new role set, as text.
    pub roles: Option<Vec<String>>,
    /// Disable (ending every session) or enable.
    pub disabled: Option<bool>,
}

fn parse_username(text: &str) -> DomainResult<Username> {
    Username::parse(text).map_err(|e| DomainError::Invalid(format!("invalid username: {e}")))
}

/// Parses and normalizes a role set, refusing a malformed role or too many.
pub fn parse_roles(roles: &[String]) -> DomainResult<Vec<Role>> {
    let roles = roles
        .iter()
        .map(|r| {
            Role::parse(r).map_err(|e| DomainError::Invalid(format!("invalid role `{r}`: {e}")))
        })
        .collect::<Result<Vec<_>, _>>()?;
    normalize_roles(roles).map_err(|e| DomainError::Invalid(format!("invalid roles: {e}")))
}

/// A new password, refused unless it meets the policy.
fn policy_checked(password: String) -> DomainResult<Password> {
    let password = Password::new(password);
    password.check_policy().map_err(|e| DomainError::Invalid(e.to_string()))?;
    Ok(password)
}

impl Service {
    /// The user named `name`. A name that cannot exist is simply not found.
    pub async fn user(&self, name: &str) -> DomainResult<User> {
        let Ok(name) = Username::parse(name) else {
            return Err(DomainError::NotFound("user"));
        };
        self.manager().user(&name).await?.ok_or(DomainError::NotFound("user"))
    }

    /// [`Service::user`] that is not disabled ([`DomainError::Forbidden`] otherwise): someone a
    /// session or grant may be made for.
    pub async fn active_user(&self, name: &str) -> DomainResult<User> {
        let user = self.user(name).await?;
        if user.disabled {
            return Err(DomainError::Forbidden("the user is disabled".into()));
        }
        Ok(user)
    }

    /// Every user, ordered by name.
    pub async fn users(&self, actor: &Actor) -> DomainResult<Vec<User>> {
        actor.operator_only()?;
        Ok(self.store().list_users().await?)
    }

    /// Creates a user, with a password (policy checked) or none (for apps that check
    /// credentials themselves).
    pub async fn create_user(
        &self,
        actor: &Actor,
        username: &str,
        password: Option<String>,
        roles: &[String],
    ) -> DomainResult<User> {
        actor.operator_only()?;
        let name = parse_username(username)?;
        let roles = parse_roles(roles)?;
        let password = password.map(policy_checked).transpose()?;
        let user = self.manager().create_user(name, password.as_ref(), roles).await?;
        self.audit(
            AuditEvent::new(AuditKind::UserCreated, actor.audit_name())
                .user(Some(&user.id), &user.username),
        )
        .await;
        Ok(user)
    }

    /// Creates the user named `username` with `changes`, or applies them to the existing user.
    /// Every part is checked before anything changes, so a refused request changes nothing. A
    /// new password or disabling ends the user's sessions; role changes show on the next check.
    /// Whether the user was created.
    pub async fn put_user(
        &self,
        actor: &Actor,
        username: &str,
        changes: UserChanges,
    ) -> DomainResult<(User, bool)> {
        actor.operator_only()?;
        let name = parse_username(username)?;
        let roles = changes.roles.as_deref().map(parse_roles).transpose()?;
        let password = changes.password.map(policy_checked).transpose()?;
        match self.manager().user(&name).await? {
            None => {
                let created = self
                    .manager()
                    .create_user(name, password.as_ref(), roles.unwrap_or_default())
                    .await?;
                self.audit(
                    AuditEvent::new(AuditKind::UserCreated, actor.audit_name())
                        .user(Some(&created.id), &created.username),
                )
                .await;
                let user = if changes.disabled == Some(true) {
                    self.apply(actor, &created, None, Some(true)).await?.0
                } else {
                    created
                };
                Ok((user, true))
            }
            Some(mut user) => {
                if let Some(p) = &password {
                    user = self.new_password(actor, &user, p).await?.0;
                }
                if roles.is_some() || changes.disabled.is_some() {
                    user = self.apply(actor, &user, roles, changes.disabled).await?.0;
                }
                Ok((user, false))
            }
        }
    }

    /// Sets the password of the user named `username` (policy checked), ending every session.
    /// The user, and how many sessions ended.
    pub async fn set_password(
        &self,
        actor: &Actor,
        username: &str,
        password: String,
    ) -> DomainResult<(User, usize)> {
        actor.operator_only()?;
        let password = policy_checked(password)?;
        let user = self.user(username).await?;
        self.new_password(actor, &user, &password).await
    }

    async fn new_password(
        &self,
        actor: &Actor,
        user: &User,
        password: &Password,
    ) -> DomainResult<(User, usize)> {
        let (updated, revoked) =
            self.manager().set_password(&user.id, password, None::<&SessionId>).await?;
        count_revocations("password_changed", revoked.len());
        self.audit(
            AuditEvent::new(AuditKind::PasswordChanged, actor.audit_name())
                .user(Some(&user.id), &user.username)
                .detail(format!("{} session(s) revoked", revoked.len())),
        )
        .await;
        Ok((updated, revoked.len()))
    }

    /// Adds and removes roles of the user named `username`.
    pub async fn change_roles(
        &self,
        actor: &Actor,
        username: &str,
        add: &[String],
        remove: &[String],
    ) -> DomainResult<User> {
        actor.operator_only()?;
        let (add, remove) = (parse_roles(add)?, parse_roles(remove)?);
        let user = self.user(username).await?;
        let mut roles: Vec<Role> =
            user.roles.iter().filter(|r| !remove.contains(r)).cloned().collect();
        roles.extend(add);
        let roles = normalize_roles(roles)
            .map_err(|e| DomainError::Invalid(format!("invalid roles: {e}")))?;
        Ok(self.apply(actor, &user, Some(roles), None).await?.0)
    }

    /// Disables (ending every session and grant) or enables the user named `username`. An
    /// admin may not disable their own account. The user, and how many sessions ended.
    pub async fn set_disabled(
        &self,
        actor: &Actor,
        username: &str,
        disabled: bool,
    ) -> DomainResult<(User, usize)> {
        actor.operator_only()?;
        let user = self.user(username).await?;
        self.apply(actor, &user, None, Some(disabled)).await
    }

    /// Applies roles and the disabled flag, auditing what changed. The user as it now is, and how
    /// many sessions ended.
    async fn apply(
        &self,
        actor: &Actor,
        before: &User,
        roles: Option<Vec<Role>>,
        disabled: Option<bool>,
    ) -> DomainResult<(User, usize)> {
        let (user, revoked) =
            self.manager().update_user(actor.for_manager(), &before.id, roles, disabled).await?;
        if user.roles != before.roles {
            let list = user.roles.iter().map(Role::as_str).collect::<Vec<_>>().join(",");
            self.audit(
                AuditEvent::new(AuditKind::RolesChanged, actor.audit_name())
                    .user(Some(&user.id), &user.username)
                    .detail(format!("roles: [{list}]")),
            )
            .await;
        }
        if user.disabled != before.disabled {
            let kind = if user.disabled { AuditKind::UserDisabled } else { AuditKind::UserEnabled };
            let mut e =
                AuditEvent::new(kind, actor.audit_name()).user(Some(&user.id), &user.username);
            if user.disabled {
                e = e.detail(format!("{} session(s) revoked", revoked.len()));
                count_revocations("user_disabled", revoked.len());
            }
            self.audit(e).await;
        }
        Ok((user, revoked.len()))
    }

    // ------------------------------------------------------------ API keys

    /// Creates an API key named `name`: the key itself, shown once and stored only as a hash.
    pub async fn create_api_key(&self, actor: &Actor, name: &str) -> DomainResult<(ApiKey, Token)> {
        actor.operator_only()?;
        if name.is_empty()
            || name.len() > 64
            || !name.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
        {
            return Err(DomainError::Invalid(
                "an API key name is 1 to 64 characters from A-Z a-z 0-9 - _ .".into(),
            ));
        }
        let key = Token::generate(SecretKind::ApiKey)?;
        let created =
            self.store().create_api_key(name, &key.hash(), Timestamp::now()).await.map_err(
                |e| match e {
                    cloakroom_core::StoreError::Conflict { .. } => {
                        DomainError::Conflict(format!("an API key named {name} already exists"))
                    }
                    other => other.into(),
                },
            )?;
        self.audit(
            AuditEvent::new(AuditKind::ApiKeyCreated, actor.audit_name())
                .detail(format!("apikey:{name}")),
        )
        .await;
        Ok((created, key))
    }

    /// Every API key (names and creation times).
    pub async fn api_keys(&self, actor: &Actor) -> DomainResult<Vec<ApiKey>> {
        actor.operator_only()?;
        Ok(self.store().list_api_keys().await?)
    }

    /// Revokes the API key named `name`: it stops working at once.
    pub async fn revoke_api_key(&self, actor: &Actor, name: &str) -> DomainResult<()> {
        actor.operator_only()?;
        if !self.store().revoke_api_key(name).await? {
            return Err(DomainError::NotFound("API key"));
        }
        self.audit(
            AuditEvent::new(AuditKind::ApiKeyRevoked, actor.audit_name())
                .detail(format!("apikey:{name}")),
        )
        .await;
        Ok(())
    }

    /// The API key a caller presents, as the actor it makes; `None` for no live key.
    pub async fn api_key_actor(&self, key: &Token) -> DomainResult<Option<Actor>> {
        Ok(self.store().api_key_by_hash(&key.hash()).await?.map(|k| Actor::ApiKey(k.name)))
    }
}
