//! Sessions: listing, revoking one / the others / all of a user's, sessions made for an app that
//! checks credentials itself, validation, and a session's data.

use cloakroom_core::audit::{AuditEvent, AuditKind};
use cloakroom_core::manager::{ClientInfo, Issued};
use cloakroom_core::session::{DataWrite, SessionData};
use cloakroom_core::{ActiveSession, Authenticated, SessionId, Timestamp, UserId};
use serde_json::Value;

use crate::{Actor, Client, DomainError, DomainResult, Service, count_revocations};

/// Most bytes of a session's data, written compactly.
pub const DATA_LIMIT: usize = 16 * 1024;

/// Checks that `value` is a JSON object of at most [`DATA_LIMIT`] bytes written compactly;
/// `field` names it in the refusal.
pub fn check_data(field: &str, value: &Value) -> DomainResult<()> {
    if !value.is_object() {
        return Err(DomainError::Invalid(format!("{field} must be a JSON object")));
    }
    // A body within the limit may still grow when written compactly (`1e2` is `100.0`).
    if value.to_string().len() > DATA_LIMIT {
        return Err(DomainError::TooLarge("session data is limited to 16 KiB".into()));
    }
    Ok(())
}

impl Service {
    /// The live sessions of `user`, newest first.
    pub async fn sessions_of(&self, user: &UserId) -> DomainResult<Vec<Authenticated>> {
        Ok(self.store().list_sessions(Some(user), Timestamp::now()).await?)
    }

    /// The live sessions of the user named `username` (of everyone with `None`), for an
    /// operator.
    pub async fn list_sessions(
        &self,
        actor: &Actor,
        username: Option<&str>,
    ) -> DomainResult<Vec<Authenticated>> {
        actor.operator_only()?;
        let user = match username {
            Some(name) => Some(self.user(name).await?),
            None => None,
        };
        Ok(self.store().list_sessions(user.as_ref().map(|u| &u.id), Timestamp::now()).await?)
    }

    /// The whole record of a checked session (client details, times). Unauthenticated when it
    /// ended since the check.
    pub async fn session_details(&self, session: &ActiveSession) -> DomainResult<Authenticated> {
        self.manager().details(session).await?.ok_or(DomainError::Unauthenticated)
    }

    /// Revokes session `id`. An owner may revoke only their own sessions (anyone else's is not
    /// found, so ids cannot be probed); an operator any session.
    pub async fn revoke_session(
        &self,
        actor: &Actor,
        id: &str,
        client: &Client,
    ) -> DomainResult<()> {
        let not_found = || DomainError::NotFound("session");
        let id = SessionId::parse(id).ok_or_else(not_found)?;
        let found = self.store().session_by_id(&id, Timestamp::now()).await?;
        let allowed = match actor {
            Actor::Owner(me) => found.as_ref().is_some_and(|a| a.user.id == me.id),
            _ => actor.is_operator(),
        };
        if !allowed || self.manager().revoke(&id).await?.is_none() {
            return Err(not_found());
        }
        let (reason, detail) = match actor {
            Actor::Owner(me) if me.session == id => ("user", "revoked own current session"),
            Actor::Owner(_) => ("user", "revoked by owner"),
            Actor::Cli => ("admin", "revoked from the CLI"),
            _ => ("admin", "revoked through the service API"),
        };
        count_revocations(reason, 1);
        let mut e = AuditEvent::new(AuditKind::SessionRevoked, actor.audit_name())
            .session(&id)
            .ip(client.ip_text());
        if let Some(a) = found {
            e = e.user(Some(&a.user.id), &a.user.username);
        }
        self.audit(e.detail(detail)).await;
        Ok(())
    }

    /// Ends every session of `session`'s user but `session` itself ("log out everywhere else"),
    /// and every grant the user holds. How many ended.
    pub async fn revoke_other_sessions(
        &self,
        session: &ActiveSession,
        client: &Client,
    ) -> DomainResult<usize> {
        let (user, current) = (session.user_id(), session.session_id());
        let revoked = self.manager().revoke_user(&user, Some(&current)).await?;
        count_revocations("revoke_others", revoked.len());
        self.audit(
            AuditEvent::new(AuditKind::SessionsRevoked, "self")
                .of_session(session)
                .ip(client.ip_text())
                .detail(format!("revoke-others: {} session(s)", revoked.len())),
        )
        .await;
        Ok(revoked.len())
    }

    /// Ends every session (and grant) of the user named `username`, for an operator: a lost
    /// laptop, a suspected compromise. The account stays usable.
    pub async fn revoke_user_sessions(
        &self,
        actor: &Actor,
        username: &str,
        client: &Client,
    ) -> DomainResult<usize> {
        actor.operator_only()?;
        let user = self.user(username).await?;
        let revoked = self.manager().revoke_user(&user.id, None).await?;
        count_revocations("admin", revoked.len());
        self.audit(
            AuditEvent::new(AuditKind::SessionsRevoked, actor.audit_name())
                .user(Some(&user.id), &user.username)
                .ip(client.ip_text())
                .detail(format!("all sessions: {}", revoked.len())),
        )
        .await;
        Ok(revoked.len())
    }

    /// Ends every session of every user (the CLI's `session revoke --all`). How many ended.
    pub async fn revoke_everyone(&self, actor: &Actor) -> DomainResult<usize> {
        actor.operator_only()?;
        let mut total = 0;
        for user in self.store().list_users().await? {
            let revoked = self.manager().revoke_user(&user.id, None).await?;
            if revoked.is_empty() {
                continue;
            }
            total += revoked.len();
            count_revocations("admin", revoked.len());
            self.audit(
                AuditEvent::new(AuditKind::SessionsRevoked, actor.audit_name())
                    .user(Some(&user.id), &user.username)
                    .detail(format!("every session of every user: {}", revoked.len())),
            )
            .await;
        }
        Ok(total)
    }

    /// A session for an app that checks credentials itself (`POST /v1/admin/sessions`): for an
    /// enabled user, with the client details the app reports and optional data.
    pub async fn create_session_for(
        &self,
        actor: &Actor,
        username: &str,
        client: ClientInfo,
        data: Option<Value>,
    ) -> DomainResult<Issued> {
        actor.operator_only()?;
        let user = self.active_user(username).await?;
        if let Some(d) = &data {
            check_data("data", d)?;
        }
        if let Some(ip) = &client.ip
            && ip.parse::<std::net::IpAddr>().is_err()
        {
            return Err(DomainError::Invalid("ip must be an IP address".into()));
        }
        let issued = self.manager().create(&user, client, data).await?;
        metrics::counter!("cloakroom_sessions_created_total", "how" => "service").increment(1);
        self.audit(
            AuditEvent::new(AuditKind::SessionCreated, actor.audit_name())
                .user(Some(&user.id), &user.username)
                .session(&issued.auth.session.id),
        )
        .await;
        self.evicted(&issued).await;
        Ok(issued)
    }

    /// The live session `token` authenticates, for an operator validating a token its app was
    /// given; one scoped to a service only when `audience` names it.
    pub async fn validate(
        &self,
        actor: &Actor,
        token: &str,
        audience: Option<&str>,
    ) -> DomainResult<Authenticated> {
        actor.operator_only()?;
        let session =
            self.manager().authenticate(token).await?.ok_or(DomainError::Unauthenticated)?;
        if !session.valid_for(audience) {
            return Err(DomainError::Unauthenticated);
        }
        // The check (cached) decides; the answer shows the whole record, read from the store.
        self.session_details(&session).await
    }

    /// The data of `session` and its version.
    pub async fn session_data(&self, session: &ActiveSession) -> DomainResult<SessionData> {
        self.store().session_data(&session.session_id()).await?.ok_or(DomainError::Unauthenticated)
    }

    /// Replaces the data of `session`; with `if_version`, only if it is still at that version.
    /// The new version.
    pub async fn put_session_data(
        &self,
        session: &ActiveSession,
        value: &Value,
        if_version: Option<u64>,
    ) -> DomainResult<u64> {
        check_data("session data", value)?;
        match self.store().put_session_data(&session.session_id(), value, if_version).await? {
            DataWrite::Stored(version) => Ok(version),
            DataWrite::VersionMismatch(_) => Err(DomainError::VersionMismatch),
            DataWrite::Gone => Err(DomainError::Unauthenticated),
        }
    }
}
