//! Logging in with a password, logging out, changing one's password.

use cloakroom_core::audit::{AuditEvent, AuditKind};
use cloakroom_core::manager::{Issued, LoginOutcome};
use cloakroom_core::password::{MAX_CHARS, Password};
use cloakroom_core::token::Token;
use cloakroom_core::{ActiveSession, Authenticated, Username};

use crate::{Actor, Client, DomainError, DomainResult, Service, count_revocations};

/// The throttle key for a login name: normalized, bounded, even when it is no valid username.
fn account_key(name: &str) -> String {
    name.trim().to_ascii_lowercase().chars().take(64).collect()
}

/// A changed password: the caller's session has a new token (every other session ended).
#[derive(Debug)]
pub struct PasswordChanged {
    /// The new token of the caller's session: the old one no longer works.
    pub token: Token,
    /// The session as it now is.
    pub session: Authenticated,
    /// How many other sessions ended.
    pub revoked: usize,
}

impl Service {
    /// A password login. Throttled per account, account and IP, and IP, with the attempt reserved
    /// *before* the (slow) verification so that concurrent guesses cannot all pass the check; the
    /// same answer and the same Argon2 work for every failure; audit events and metrics for each
    /// outcome; a new session every time. `previous` is the session token the client presented,
    /// if any: that session ends here (a new token at every authentication).
    pub async fn log_in(
        &self,
        username: &str,
        password: String,
        client: &Client,
        previous: Option<&str>,
    ) -> DomainResult<Issued> {
        let attempt = match self.throttle().reserve(&account_key(username), client.ip).await? {
            Ok(attempt) => attempt,
            Err(retry_after) => {
                metrics::counter!("cloakroom_logins_total", "outcome" => "throttled").increment(1);
                let mut e = AuditEvent::new(AuditKind::LoginThrottled, "self").ip(client.ip_text());
                if let Ok(u) = Username::parse(username) {
                    e = e.user(None, &u);
                }
                self.audit(e).await;
                return Err(DomainError::Throttled { retry_after });
            }
        };
        let password = Password::new(password);
        let name = Username::parse(username).ok();
        let manager = self.manager();
        // Too long to be anyone's password, or no valid name: the same answer, the same work.
        let outcome = match &name {
            Some(name) if password.expose().chars().count() <= MAX_CHARS => {
                manager.check_password(name, &password).await?
            }
            _ => {
                manager
                    .hasher()
                    .verify(&password, None)
                    .await
                    .map_err(cloakroom_core::Error::from)?;
                LoginOutcome::Invalid { user: None }
            }
        };
        let record = match outcome {
            LoginOutcome::Success(record) => record,
            LoginOutcome::Invalid { user } => {
                attempt.failed();
                metrics::counter!("cloakroom_logins_total", "outcome" => "failed").increment(1);
                let mut e = AuditEvent::new(AuditKind::LoginFailed, "self").ip(client.ip_text());
                let detail = match &user {
                    None => "unknown user",
                    Some(u) if u.disabled => "account disabled",
                    Some(u) if !u.has_password => "no password set",
                    Some(_) => "wrong password",
                };
                if let Some(name) = &name {
                    e = e.user(user.as_ref().map(|u| &u.id), name);
                }
                self.audit(e.detail(detail)).await;
                return Err(DomainError::InvalidCredentials);
            }
        };
        attempt.succeeded().await?;

        let previous = match previous {
            Some(token) => manager.authenticate(token).await.ok().flatten(),
            None => None,
        };
        let issued = manager.create(&record.user, client.info(), None).await?;
        metrics::counter!("cloakroom_logins_total", "outcome" => "succeeded").increment(1);
        metrics::counter!("cloakroom_sessions_created_total", "how" => "login").increment(1);
        let user = &record.user;
        self.audit(
            AuditEvent::new(AuditKind::LoginSucceeded, "self")
                .user(Some(&user.id), &user.username)
                .session(&issued.auth.session.id)
                .ip(client.ip_text()),
        )
        .await;
        self.evicted(&issued).await;
        if let Some(prev) = previous
            && manager.revoke(&prev.session_id()).await.ok().flatten().is_some()
        {
            count_revocations("session_revoked", 1);
            self.audit(
                AuditEvent::new(AuditKind::SessionRevoked, "self")
                    .of_session(&prev)
                    .detail("replaced by a new login"),
            )
            .await;
        }
        Ok(issued)
    }

    /// Audits (and counts) the sessions a new one evicted under `max_sessions_per_user`.
    pub(crate) async fn evicted(&self, issued: &Issued) {
        let user = &issued.auth.user;
        count_revocations("session_evicted", issued.evicted.len());
        for id in &issued.evicted {
            self.audit(
                AuditEvent::new(AuditKind::SessionEvicted, Actor::System.audit_name())
                    .user(Some(&user.id), &user.username)
                    .session(id)
                    .detail("max_sessions_per_user"),
            )
            .await;
        }
    }

    /// Ends `session` (a login session or one scoped to a service). `false` when it had ended
    /// already.
    pub async fn log_out(&self, session: &ActiveSession) -> DomainResult<bool> {
        if self.manager().revoke(&session.session_id()).await?.is_none() {
            return Ok(false);
        }
        count_revocations("logout", 1);
        self.audit(AuditEvent::new(AuditKind::Logout, "self").of_session(session)).await;
        Ok(true)
    }

    /// Changes the password of `session`'s user, who proves it with `current` (throttled like a
    /// login). Every other session of the user ends; this one gets a new token and CSRF token.
    pub async fn change_password(
        &self,
        session: &ActiveSession,
        token: &Token,
        client: &Client,
        current: String,
        new: String,
    ) -> DomainResult<PasswordChanged> {
        let (user_id, username) = (session.user_id(), session.username_owned());
        let attempt =
            match self.throttle().reserve(&account_key(username.as_str()), client.ip).await? {
                Ok(attempt) => attempt,
                Err(retry_after) => return Err(DomainError::Throttled { retry_after }),
            };
        let current = Password::new(current);
        match self.manager().check_password(&username, &current).await? {
            LoginOutcome::Success(_) => attempt.succeeded().await?,
            LoginOutcome::Invalid { .. } => {
                attempt.failed();
                self.audit(
                    AuditEvent::new(AuditKind::LoginFailed, "self")
                        .of_session(session)
                        .ip(client.ip_text())
                        .detail("wrong current password on password change"),
                )
                .await;
                return Err(DomainError::WrongCurrentPassword);
            }
        }
        let new = Password::new(new);
        if new.expose() == current.expose() {
            return Err(DomainError::Invalid(
                "the new password must differ from the current one".into(),
            ));
        }
        let keep = session.session_id();
        let (_, revoked) = self.manager().set_password(&user_id, &new, Some(&keep)).await?;
        self.audit(
            AuditEvent::new(AuditKind::PasswordChanged, "self")
                .of_session(session)
                .ip(client.ip_text()),
        )
        .await;
        count_revocations("password_changed", revoked.len());
        if !revoked.is_empty() {
            self.audit(
                AuditEvent::new(AuditKind::SessionsRevoked, "self")
                    .user(Some(&user_id), &username)
                    .detail(format!(
                        "password changed: {} other session(s) revoked",
                        revoked.len()
                    )),
            )
            .await;
        }
        let Some((token, rotated)) = self.manager().rotate(session, token, true).await? else {
            return Err(DomainError::Unauthenticated);
        };
        let event = AuditEvent::new(AuditKind::SessionRotated, "self").of_session(&rotated);
        self.audit(event.detail("password changed")).await;
        let session =
            self.manager().details(&rotated).await?.ok_or(DomainError::Unauthenticated)?;
        Ok(PasswordChanged { token, session, revoked: revoked.len() })
    }
}
