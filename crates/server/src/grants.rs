//! Grants on the server side: where the key that seals signing keys comes from, and the hub that
//! turns the store's revocation log into the `/v1/revocations` feed.
//!
//! Every node polls the store's revocation log (every 250 ms, only while someone listens) and
//! re-reads the key list (every 2 s), and fans both out to its feed subscribers. A revocation made
//! on any node, or by the CLI, reaches every verifier within about a second.

use std::collections::HashSet;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use anyhow::Context as _;
use cloakroom_core::grant::{GrantRevocation, MAX_GRANT_TTL};
use cloakroom_core::grants::GrantIssuer;
use cloakroom_core::{Store, Timestamp};
use cloakroom_grant::SymmetricKey;
use tokio::sync::broadcast;

use crate::config::Config;

/// How often the revocation log is read while the feed has listeners.
pub const POLL_INTERVAL: Duration = Duration::from_millis(250);
/// How often the key list is re-read for `keys` events.
const KEYS_INTERVAL: Duration = Duration::from_secs(2);
/// Revocations written by other nodes carry their clocks: read back this far to catch a record
/// stamped a little before our last read.
const OVERLAP: Duration = Duration::from_secs(5);

/// The key that seals signing keys: `grant_key` when configured; for the embedded store, a key
/// file beside the database (`PATH.grant-key`, mode 0600, created on first use), so that grants
/// work with no configuration and a copy of the database file alone cannot sign. A shared store
/// (Redis) has no such place: without `grant_key`, grants are off (`None`) and say so.
pub fn sealing_key(config: &Config) -> anyhow::Result<Option<SymmetricKey>> {
    if let Some(bytes) = &config.grant_key {
        return Ok(Some(SymmetricKey::from_bytes(bytes).map_err(|e| anyhow::anyhow!("{e}"))?));
    }
    let local =
        crate::stores::backend_for(&config.store).and_then(|b| (b.local_file)(&config.store));
    let Some(path) = local else {
        return Ok(None);
    };
    let file = PathBuf::from(format!("{path}.grant-key"));
    key_file(&file).with_context(|| format!("grant key file {}", file.display())).map(Some)
}

fn key_file(path: &std::path::Path) -> anyhow::Result<SymmetricKey> {
    use base64::Engine as _;
    use std::io::Write as _;
    let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    match std::fs::read_to_string(path) {
        Ok(text) => {
            let bytes = crate::config::parse_grant_key(&text)
                .ok_or_else(|| anyhow::anyhow!("does not hold 32 bytes as base64url"))?;
            SymmetricKey::from_bytes(&bytes).map_err(|e| anyhow::anyhow!("{e}"))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let key = SymmetricKey::generate().map_err(|e| anyhow::anyhow!("{e}"))?;
            let mut options = std::fs::OpenOptions::new();
            options.write(true).create_new(true);
            #[cfg(unix)]
            std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
            match options.open(path) {
                Ok(mut f) => {
                    writeln!(f, "{}", b64.encode(key.as_bytes()))?;
                    f.sync_all()?;
                    tracing::info!(path = %path.display(), "created the grant key file");
                    Ok(key)
                }
                // Another process created it first: use theirs.
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => key_file(path),
                Err(e) => Err(e.into()),
            }
        }
        Err(e) => Err(e.into()),
    }
}

/// What the feed sends.
#[derive(Clone, Debug)]
pub enum FeedEvent {
    /// Grants revoked.
    Revoked(GrantRevocation),
    /// The published key set changed: fetch `/v1/keys` again.
    Keys,
}

/// Grants on this node: the issuer and the revocation feed.
pub struct Grants {
    /// Signs, redeems, rotates.
    pub issuer: Arc<GrantIssuer>,
    store: Arc<dyn Store>,
    tx: broadcast::Sender<FeedEvent>,
    polling: AtomicBool,
}

impl Grants {
    /// Grants over `store` with `issuer`. The poller starts with the first feed subscriber.
    pub fn new(store: Arc<dyn Store>, issuer: Arc<GrantIssuer>) -> Self {
        let (tx, _) = broadcast::channel(4096);
        Self { issuer, store, tx, polling: AtomicBool::new(false) }
    }

    /// A subscription to live feed events; the caller sends the snapshot itself (subscribe first,
    /// then read the snapshot, so nothing falls between the two).
    pub fn subscribe(self: &Arc<Self>) -> broadcast::Receiver<FeedEvent> {
        let rx = self.tx.subscribe();
        if !self.polling.swap(true, Ordering::SeqCst) {
            tokio::spawn(Arc::clone(self).poll());
        }
        rx
    }

    /// Every revocation that may still matter: the last grant lifetime's worth.
    pub async fn snapshot(&self) -> Result<Vec<GrantRevocation>, cloakroom_core::StoreError> {
        let now = Timestamp::now();
        self.store.grant_revocations(now.minus(MAX_GRANT_TTL), now).await
    }

    async fn poll(self: Arc<Self>) {
        let mut seen: HashSet<GrantRevocation> = HashSet::new();
        let mut cursor = Timestamp::now();
        let mut keys: Option<Vec<String>> = None;
        let mut last_keys = std::time::Instant::now() - KEYS_INTERVAL;
        let mut tick = tokio::time::interval(POLL_INTERVAL);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            let now = Timestamp::now();
            match self.store.grant_revocations(cursor.minus(OVERLAP), now).await {
                Ok(list) => {
                    cursor = now;
                    seen.retain(|r| r.until > now);
                    for r in list {
                        if seen.insert(r.clone()) {
                            // No receiver right now is fine: new subscribers read a snapshot.
                            let _ = self.tx.send(FeedEvent::Revoked(r));
                        }
                    }
                }
                Err(e) => tracing::warn!(error = %e, "cannot read grant revocations"),
            }
            if last_keys.elapsed() >= KEYS_INTERVAL {
                last_keys = std::time::Instant::now();
                match self.issuer.refresh(now).await {
                    Ok(ids) => {
                        if keys.as_ref().is_some_and(|k| *k != ids) {
                            let _ = self.tx.send(FeedEvent::Keys);
                        }
                        keys = Some(ids);
                    }
                    Err(e) => tracing::warn!(error = %e, "cannot read grant-signing keys"),
                }
            }
        }
    }
}

/// Builds the grants of a node, or `None` when no sealing key is available (see [`sealing_key`]).
pub fn grants(store: &Arc<dyn Store>, config: &Config) -> anyhow::Result<Option<Arc<Grants>>> {
    let Some(kek) = sealing_key(config)? else {
        tracing::warn!(
            "grants are off: set grant_key (CLOAKROOM_GRANT_KEY) to issue and redeem them on a shared store"
        );
        return Ok(None);
    };
    let issuer = Arc::new(GrantIssuer::new(Arc::clone(store), kek));
    Ok(Some(Arc::new(Grants::new(Arc::clone(store), issuer))))
}
