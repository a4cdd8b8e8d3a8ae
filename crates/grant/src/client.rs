//! Keys and revocations over HTTP (feature `client`): [`fetch_keys`] reads `GET /v1/keys`, and
//! [`follow`] keeps a [`Verifier`] subscribed to `GET /v1/revocations` (server-sent events).
//!
//! The feed protocol: on connect the server sends every revocation that may still matter (the
//! last grant lifetime's worth) as `revoked` events, then one `ready` event; after that, live
//! `revoked` events, `keys` when the key set changed, and a comment every few seconds. The verifier
//! refuses every grant from the moment the feed is lost until a new connection reached `ready`,
//! so a revocation sent while it was away is never missed.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use eventsource_stream::Eventsource;
use futures_util::StreamExt;
use serde::Deserialize;

use crate::keys::{KeySet, PublicKey};
use crate::verifier::{Revocation, Verifier};

/// Longest silence (the server sends a comment every 10 s) before the feed counts as lost.
const IDLE: Duration = Duration::from_secs(30);

/// Why talking to the server failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ClientError {
    /// The request failed or the server answered with an error status.
    #[error("request failed: {0}")]
    Http(#[from] reqwest::Error),
    /// The answer was not what the protocol says.
    #[error("unexpected answer: {0}")]
    Protocol(String),
    /// The feed ended or went silent.
    #[error("revocation feed lost")]
    Lost,
}

#[derive(Deserialize)]
struct KeysDoc {
    keys: Vec<KeyDoc>,
}

#[derive(Deserialize)]
struct KeyDoc {
    id: String,
    paserk: String,
}

/// The public keys the server at `base_url` publishes (`GET {base_url}/v1/keys`). A key whose
/// id does not match its PASERK fails the whole answer.
pub async fn fetch_keys(http: &reqwest::Client, base_url: &str) -> Result<KeySet, ClientError> {
    let url = format!("{}/v1/keys", base_url.trim_end_matches('/'));
    let doc: KeysDoc = http.get(url).send().await?.error_for_status()?.json().await?;
    let mut keys = Vec::with_capacity(doc.keys.len());
    for k in doc.keys {
        let key = PublicKey::from_paserk(&k.paserk)
            .map_err(|_| ClientError::Protocol(format!("bad key {}", k.id)))?;
        if key.id() != k.id {
            return Err(ClientError::Protocol(format!("key id mismatch for {}", k.id)));
        }
        keys.push(key);
    }
    Ok(KeySet::from_keys(keys))
}

/// Keeps `verifier` following the server at `base_url`: keys and revocations, reconnecting with
/// backoff (250 ms doubling to 5 s) whenever the feed is lost. The verifier refuses grants while
/// the feed is not live. Runs until the task is aborted.
pub fn follow(
    http: reqwest::Client,
    verifier: Arc<Verifier>,
    base_url: String,
) -> tokio::task::JoinHandle<()> {
    verifier.set_feed_live(false);
    tokio::spawn(async move {
        let mut backoff = Duration::from_millis(250);
        loop {
            let result = follow_once(&http, &verifier, &base_url).await;
            verifier.set_feed_live(false);
            if let Err(ClientError::Lost) = result {
                // A feed that was live and ended: try again at once.
                backoff = Duration::from_millis(250);
            }
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(Duration::from_secs(5));
        }
    })
}

async fn follow_once(
    http: &reqwest::Client,
    verifier: &Verifier,
    base_url: &str,
) -> Result<(), ClientError> {
    let url = format!("{}/v1/revocations", base_url.trim_end_matches('/'));
    let response =
        http.get(url).header("accept", "text/event-stream").send().await?.error_for_status()?;
    let mut events = response.bytes_stream().eventsource();
    loop {
        let event =
            tokio::time::timeout(IDLE, events.next()).await.map_err(|_| ClientError::Lost)?;
        let event = event.ok_or(ClientError::Lost)?.map_err(|_| ClientError::Lost)?;
        match event.event.as_str() {
            "revoked" => {
                let r: Revocation = serde_json::from_str(&event.data)
                    .map_err(|e| ClientError::Protocol(e.to_string()))?;
                verifier.revoke(&r, SystemTime::now());
            }
            "keys" => verifier.set_keys(fetch_keys(http, base_url).await?),
            "ready" => {
                verifier.set_keys(fetch_keys(http, base_url).await?);
                verifier.set_feed_live(true);
            }
            _ => {}
        }
    }
}
