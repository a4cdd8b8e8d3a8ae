//! Grants: issuing (for oneself, or by an API key for a named user), redeeming once, trading for
//! a session scoped to the grant's audience, and rotating the signing key.

use cloakroom_core::audit::{AuditEvent, AuditKind};
use cloakroom_core::grant::SigningKeyRecord;
use cloakroom_core::grants::{GrantRequest, IssuedGrant};
use cloakroom_core::manager::Issued;
use cloakroom_core::{SessionId, Timestamp, User, UserId, Username};
use cloakroom_grant::Grant;

use crate::throttle::UserAction;
use crate::{Actor, Client, DomainError, DomainResult, Service};

impl Service {
    /// Issues a grant. An owner gets one for themself (`for_user` must be `None`); an API key
    /// names the user (`for_user`). The user must be enabled; issuing is rate-limited per user.
    pub async fn issue_grant(
        &self,
        actor: &Actor,
        for_user: Option<&str>,
        req: &GrantRequest,
    ) -> DomainResult<(IssuedGrant, User)> {
        let issuer = self.grants()?;
        let user = match (actor, for_user) {
            (Actor::Owner(_), Some(_)) => {
                return Err(DomainError::Invalid("username is for API-key callers only".into()));
            }
            (Actor::Owner(me), None) => self.active_user(me.username.as_str()).await?,
            (Actor::ApiKey(_), Some(name)) => self.active_user(name).await?,
            (Actor::ApiKey(_), None) => {
                return Err(DomainError::Invalid("username is required".into()));
            }
            _ => {
                return Err(DomainError::Forbidden(
                    "grants are issued to users and API keys".into(),
                ));
            }
        };
        if let Err(retry_after) =
            self.throttle().user_action(UserAction::GrantIssue, &user.id).await?
        {
            return Err(DomainError::Throttled { retry_after });
        }
        let issued = issuer.issue(&user, req).await?;
        metrics::counter!("cloakroom_grants_issued_total").increment(1);
        self.audit(
            AuditEvent::new(AuditKind::GrantIssued, actor.audit_name())
                .user(Some(&user.id), &user.username)
                .detail(format!("{} for {}", issued.id, req.audience)),
        )
        .await;
        Ok((issued, user))
    }

    /// Redeems a grant for `audience`: its claims, once.
    pub async fn redeem_grant(&self, token: &str, audience: &str) -> DomainResult<Grant> {
        let grant = self.grants()?.redeem(token, audience).await?;
        metrics::counter!("cloakroom_grants_redeemed_total", "how" => "redeem").increment(1);
        self.audit_use(&grant, AuditKind::GrantRedeemed, None).await;
        Ok(grant)
    }

    /// Trades a grant (used up) for a session of its user valid for its audience only. A user
    /// disabled since the grant was issued gets nothing.
    pub async fn exchange_grant(
        &self,
        token: &str,
        audience: &str,
        client: &Client,
    ) -> DomainResult<Issued> {
        let grant = self.grants()?.redeem(token, audience).await?;
        let user = match self.active_user(&grant.claims.username).await {
            Ok(u) if u.id.as_str() == grant.claims.sub => u,
            Ok(_) | Err(_) => {
                return Err(DomainError::InvalidGrant("the grant's user is not active".into()));
            }
        };
        let audience = Some(grant.claims.aud.clone());
        let issued = self.manager().create_scoped(&user, client.info(), None, audience).await?;
        metrics::counter!("cloakroom_grants_redeemed_total", "how" => "exchange").increment(1);
        self.audit_use(&grant, AuditKind::GrantExchanged, Some(&issued.auth.session.id)).await;
        self.evicted(&issued).await;
        Ok(issued)
    }

    async fn audit_use(&self, grant: &Grant, kind: AuditKind, session: Option<&SessionId>) {
        let user = UserId::parse(&grant.claims.sub);
        let Ok(name) = Username::parse(&grant.claims.username) else { return };
        let mut event = AuditEvent::new(kind, Actor::Grant.audit_name())
            .user(user.as_ref(), &name)
            .detail(format!("{} for {}", grant.claims.jti, grant.claims.aud));
        if let Some(s) = session {
            event = event.session(s);
        }
        self.audit(event).await;
    }

    /// The verification keys to publish now (`GET /v1/keys`).
    pub async fn published_keys(&self) -> DomainResult<Vec<SigningKeyRecord>> {
        Ok(self.grants()?.published(Timestamp::now()).await?)
    }

    /// Every signing key the store holds (creating the first when there is none).
    pub async fn signing_keys(&self, actor: &Actor) -> DomainResult<Vec<SigningKeyRecord>> {
        actor.operator_only()?;
        self.grants()?.ensure_key(Timestamp::now()).await?;
        Ok(self.store().signing_keys().await?)
    }

    /// Rotates the grant-signing key: a new one signs after the lead time; the previous ones
    /// verify until their grants expire.
    pub async fn rotate_signing_key(&self, actor: &Actor) -> DomainResult<SigningKeyRecord> {
        actor.operator_only()?;
        let issuer = self.grants()?;
        let now = Timestamp::now();
        issuer.ensure_key(now).await?;
        let key = issuer.rotate(now).await?;
        self.audit(
            AuditEvent::new(AuditKind::SigningKeyRotated, actor.audit_name())
                .detail(key.id.clone()),
        )
        .await;
        Ok(key)
    }
}
