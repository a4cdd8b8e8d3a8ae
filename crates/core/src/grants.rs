//! [`GrantIssuer`]: signs grants with the store's current key, redeems them exactly once, rotates
//! keys and lists the published ones. Every node sharing a store signs with and publishes the same
//! keys, because the keys live in the store, sealed with the configured key-encryption key.

use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime};

use cloakroom_grant::{Claims, Grant, GrantError, KeySet, SecretKey, SymmetricKey};

use crate::error::StoreError;
use crate::grant::{GrantUse, MAX_GRANT_TTL, Redemption, SigningKeyRecord};
use crate::id::UserId;
use crate::store::Store;
use crate::time::Timestamp;
use crate::token::RandomError;
use crate::user::User;

/// After `cloakroom keys rotate`, the new key is published this long before it signs, so that
/// verifiers following the revocation feed learn it (a `keys` event) before the first grant
/// signed with it arrives. The old key signs until then.
pub const ROTATION_LEAD: Duration = Duration::from_secs(10);

/// How long a node trusts its copy of the key list before reading the store again.
const KEYS_FRESH_FOR: Duration = Duration::from_secs(5);

/// Longest accepted audience, action and resource (bytes).
const MAX_AUDIENCE: usize = 128;
const MAX_ACTION: usize = 64;
const MAX_RESOURCE: usize = 1024;

/// What can go wrong issuing or redeeming a grant.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum GrantFailure {
    /// The store failed: nothing is issued or redeemed (fail closed).
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The request is not acceptable (empty audience, too long a resource, a TTL out of range).
    #[error("{0}")]
    Request(String),
    /// The token is not a valid grant for this audience (malformed, unknown key, bad signature,
    /// expired, …).
    #[error("invalid grant: {0}")]
    Invalid(GrantError),
    /// The grant was redeemed before.
    #[error("grant already used")]
    AlreadyUsed,
    /// The grant, or every grant of its user, was revoked.
    #[error("grant revoked")]
    Revoked,
    /// A stored key could not be opened with the configured key-encryption key, or a key could
    /// not be made.
    #[error("grant signing key unusable: {0}")]
    Key(String),
    /// The OS random generator failed.
    #[error(transparent)]
    Random(#[from] RandomError),
}

/// What to put in a grant.
#[derive(Clone, Debug)]
pub struct GrantRequest {
    /// The service it is for.
    pub audience: String,
    /// What the user may do there.
    pub action: Option<String>,
    /// On what.
    pub resource: Option<String>,
    /// How long it lives (at most [`MAX_GRANT_TTL`]).
    pub ttl: Duration,
}

/// An issued grant.
#[derive(Clone, Debug)]
pub struct IssuedGrant {
    /// The token: `v4.public.…`.
    pub token: String,
    /// `grt_…`
    pub id: String,
    /// Expiry.
    pub expires_at: Timestamp,
}

#[derive(Default)]
struct Keys {
    loaded_at: Option<std::time::Instant>,
    records: Vec<SigningKeyRecord>,
    /// Opened secret keys by id, for the keys that sign now or will soon.
    secrets: Vec<(String, Arc<SecretKey>)>,
    published: KeySet,
}

/// Signs and redeems grants. Cheap to share (`Arc`).
pub struct GrantIssuer {
    store: Arc<dyn Store>,
    kek: SymmetricKey,
    keys: RwLock<Keys>,
}

fn validate(field: &str, value: &str, max: usize) -> Result<(), GrantFailure> {
    if value.is_empty() || value.len() > max {
        return Err(GrantFailure::Request(format!("{field} must be 1 to {max} bytes")));
    }
    if value.chars().any(char::is_control) {
        return Err(GrantFailure::Request(format!("{field} must not contain control characters")));
    }
    Ok(())
}

impl GrantIssuer {
    /// An issuer over `store`, sealing and opening signing keys with `kek`.
    pub fn new(store: Arc<dyn Store>, kek: SymmetricKey) -> Self {
        Self { store, kek, keys: RwLock::new(Keys::default()) }
    }

    /// Reads the key list from the store, opening the secret of every key that signs now or will
    /// (after a rotation). Returns the ids of the keys published now, so callers can tell when
    /// they changed.
    pub async fn refresh(&self, now: Timestamp) -> Result<Vec<String>, GrantFailure> {
        let records = self.store.signing_keys().await?;
        // A key id names one key (it is a hash of the public key, and the sealed secret is bound
        // to it), so keys opened or parsed by an earlier refresh are reused, not opened again.
        let (known_secrets, known_set) = {
            let keys = self.keys.read().unwrap_or_else(|e| e.into_inner());
            (keys.secrets.clone(), keys.published.clone())
        };
        let mut secrets = Vec::new();
        for r in records.iter().filter(|r| r.retired_at.is_none_or(|t| now < t)) {
            if let Some(known) = known_secrets.iter().find(|(id, _)| *id == r.id) {
                secrets.push(known.clone());
                continue;
            }
            let key = self.kek.open(&r.sealed, &r.id).map_err(|_| {
                GrantFailure::Key(format!(
                    "cannot open signing key {}: is grant_key the one it was sealed with?",
                    r.id
                ))
            })?;
            secrets.push((r.id.clone(), Arc::new(key)));
        }
        let published: Vec<_> = records.iter().filter(|r| r.published_at(now)).collect();
        let mut ids: Vec<String> = published.iter().map(|r| r.id.clone()).collect();
        ids.sort();
        let mut known_ids: Vec<&str> = known_set.ids().collect();
        known_ids.sort_unstable();
        let set = if known_ids == ids {
            known_set
        } else {
            KeySet::from_paserks(published.iter().map(|r| r.public.as_str()))
                .map_err(|_| GrantFailure::Key("a stored public key does not parse".into()))?
        };
        *self.keys.write().unwrap_or_else(|e| e.into_inner()) =
            Keys { loaded_at: Some(std::time::Instant::now()), records, secrets, published: set };
        Ok(ids)
    }

    async fn fresh(&self, now: Timestamp) -> Result<(), GrantFailure> {
        let stale = self
            .keys
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .loaded_at
            .is_none_or(|t| t.elapsed() >= KEYS_FRESH_FOR);
        if stale {
            self.refresh(now).await?;
        }
        Ok(())
    }

    fn signing_key(&self, now: Timestamp) -> Option<Arc<SecretKey>> {
        let keys = self.keys.read().unwrap_or_else(|e| e.into_inner());
        let record =
            keys.records.iter().filter(|r| r.signs_at(now)).max_by_key(|r| r.active_from)?;
        keys.secrets.iter().find(|(id, _)| *id == record.id).map(|(_, k)| Arc::clone(k))
    }

    fn new_record(
        &self,
        now: Timestamp,
        active_from: Timestamp,
    ) -> Result<SigningKeyRecord, GrantFailure> {
        let key = SecretKey::generate().map_err(|e| GrantFailure::Key(e.to_string()))?;
        let sealed = self.kek.seal(&key).map_err(|e| GrantFailure::Key(e.to_string()))?;
        Ok(SigningKeyRecord {
            id: key.id().to_owned(),
            public: key.public_key().to_paserk(),
            sealed,
            created_at: now,
            active_from,
            retired_at: None,
        })
    }

    /// Makes sure a key signs at `now`, creating the first one if the store has none.
    pub async fn ensure_key(&self, now: Timestamp) -> Result<(), GrantFailure> {
        self.fresh(now).await?;
        if self.signing_key(now).is_some() {
            return Ok(());
        }
        self.refresh(now).await?;
        if self.signing_key(now).is_none() {
            // Two nodes may race here; both keys are published and either signs (the newest).
            let record = self.new_record(now, now)?;
            self.store.add_signing_key(&record, None).await?;
            tracing::info!(key = %record.id, "created the first grant-signing key");
            self.refresh(now).await?;
        }
        Ok(())
    }

    /// Rotates: a new key, published at once and signing from `now + ROTATION_LEAD`, when every
    /// current key retires. Retired keys keep verifying until their last grant expired.
    pub async fn rotate(&self, now: Timestamp) -> Result<SigningKeyRecord, GrantFailure> {
        let switch = now.plus(ROTATION_LEAD);
        let record = self.new_record(now, switch)?;
        self.store.add_signing_key(&record, Some(switch)).await?;
        self.refresh(now).await?;
        Ok(record)
    }

    /// The keys to publish at `now` (`GET /v1/keys`), read from the store: a rotation made by
    /// another node or the CLI shows at once.
    pub async fn published(&self, now: Timestamp) -> Result<Vec<SigningKeyRecord>, GrantFailure> {
        self.refresh(now).await?;
        self.ensure_key(now).await?;
        let keys = self.keys.read().unwrap_or_else(|e| e.into_inner());
        Ok(keys.records.iter().filter(|r| r.published_at(now)).cloned().collect())
    }

    /// Signs a grant for `user`.
    pub async fn issue(
        &self,
        user: &User,
        req: &GrantRequest,
    ) -> Result<IssuedGrant, GrantFailure> {
        validate("audience", &req.audience, MAX_AUDIENCE)?;
        if let Some(a) = &req.action {
            validate("action", a, MAX_ACTION)?;
        }
        if let Some(r) = &req.resource {
            validate("resource", r, MAX_RESOURCE)?;
        }
        if req.ttl.is_zero() || req.ttl > MAX_GRANT_TTL {
            return Err(GrantFailure::Request(format!(
                "ttl_seconds must be 1 to {}",
                MAX_GRANT_TTL.as_secs()
            )));
        }
        let now = Timestamp::now();
        self.ensure_key(now).await?;
        let key =
            self.signing_key(now).ok_or_else(|| GrantFailure::Key("no signing key".into()))?;
        let id = crate::id::GrantId::generate()?.as_str().to_owned();
        let issued = now.to_system_time();
        let mut claims = Claims::new(
            &id,
            user.id.as_str(),
            user.username.as_str(),
            &req.audience,
            issued,
            req.ttl,
        );
        claims.action = req.action.clone();
        claims.resource = req.resource.clone();
        let token = key.sign(&claims).map_err(|e| GrantFailure::Key(e.to_string()))?;
        Ok(IssuedGrant { token, id, expires_at: now.plus(req.ttl) })
    }

    /// Verifies `token` for `audience` with the published keys (reading the store again once for
    /// an unknown key id: another node may have just rotated).
    pub async fn verify(&self, token: &str, audience: &str) -> Result<Grant, GrantFailure> {
        let now = Timestamp::now();
        self.fresh(now).await?;
        let decode = || {
            let keys = self.keys.read().unwrap_or_else(|e| e.into_inner());
            cloakroom_grant::decode(
                token,
                audience,
                &keys.published,
                SystemTime::now(),
                Duration::from_secs(5),
            )
        };
        match decode() {
            Err(GrantError::UnknownKey) => {
                self.refresh(now).await?;
                decode().map_err(GrantFailure::Invalid)
            }
            other => other.map_err(GrantFailure::Invalid),
        }
    }

    /// Verifies and uses up `token`, exactly once across every node sharing the store.
    pub async fn redeem(&self, token: &str, audience: &str) -> Result<Grant, GrantFailure> {
        let grant = self.verify(token, audience).await?;
        let user =
            UserId::parse(&grant.claims.sub).ok_or(GrantFailure::Invalid(GrantError::WrongType))?;
        let use_ = GrantUse {
            id: grant.claims.jti.clone(),
            user,
            issued_at: Timestamp::from_system_time(grant.issued_at),
            expires_at: Timestamp::from_system_time(grant.expires_at),
        };
        match self.store.redeem_grant(&use_, Timestamp::now()).await? {
            Redemption::Redeemed => Ok(grant),
            Redemption::AlreadyUsed => Err(GrantFailure::AlreadyUsed),
            Redemption::Revoked => Err(GrantFailure::Revoked),
        }
    }
}
