//! `cloakroom store copy --from URL --to URL`: moves everything one store holds into another,
//! of any kind, so that servers pointed at the new store accept every session of the old one.
//!
//! 1. **Refuse what is not a copy.** The same store twice (by URL, or by
//!    [`Transfer::instance`] behind two spellings), and a destination holding a user the source
//!    lacks (users are never deleted, so such a destination holds other data, not an earlier
//!    copy of this source), stop the copy before anything is written.
//! 2. **Copy**, kind by kind in [`Kind::ALL`] order (users before their sessions), a page at a
//!    time ([`Options::page`] records): memory holds one page, whatever the store's size. Each
//!    page is imported as the destination's upsert by identity, so a second run writes only what
//!    changed since (the delta) and never a duplicate.
//! 3. **Remove** from the destination what the source no longer has and an import cannot know
//!    of: sessions revoked, logged out or expired on the source since an earlier run, API keys
//!    revoked, event logs forgotten. They go through the ordinary revocations, which announce
//!    themselves, so a logout between two runs is not undone by the cut-over.
//! 4. **Verify**: both stores are read again, and each kind's count and order-independent
//!    checksum ([`Digest`]) must match. A source that changed meanwhile (servers still writing)
//!    makes them differ: the copy then fails, and a run after writes stop must match.
//!
//! The destination should be one that no server serves yet (the cut-over in the README):
//! revocations made *on the destination* between runs are not known to the source, and the
//! removal step treats sessions the source lacks as revoked. Imports still announce
//! invalidations, so a server that does run on the destination never serves a stale cache.

use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use anyhow::{Context as _, bail};
use cloakroom_core::export::{self, Batch, Digest, EVENT_RETENTION, Imported, Kind, Transfer};
use cloakroom_core::{SessionId, Store, Timestamp, Username};
use futures_util::StreamExt as _;
use serde::Serialize;

use crate::serve::{Open, open_store};

/// Lookups in flight at once while looking for what to remove.
const LOOKUPS: usize = 32;

/// What to copy, and how.
#[derive(Clone, Debug)]
pub struct Options {
    /// The store to read.
    pub from: String,
    /// The store to write.
    pub to: String,
    /// Certificate authorities for TLS to either store (`store_ca`).
    pub ca_pem: Option<Vec<u8>>,
    /// Records per page.
    pub page: usize,
    /// Whether to verify at the end.
    pub verify: bool,
}

/// A count and checksum, as printed.
#[derive(Clone, Debug, Serialize)]
pub struct Count {
    /// Records.
    pub count: u64,
    /// Order-independent checksum.
    pub checksum: String,
}

impl From<&Digest> for Count {
    fn from(d: &Digest) -> Self {
        Self { count: d.count, checksum: d.checksum() }
    }
}

/// The verification of one kind.
#[derive(Clone, Debug, Serialize)]
pub struct Check {
    /// What the source holds.
    pub source: Count,
    /// What the destination holds.
    pub destination: Count,
    /// Whether they are the same records.
    pub ok: bool,
}

/// What the copy did with one kind.
#[derive(Clone, Debug, Serialize)]
pub struct KindReport {
    /// The kind (`api_keys`).
    pub kind: Kind,
    /// Records read from the source.
    pub exported: u64,
    /// How long reading and writing them took.
    pub seconds: f64,
    /// What the imports did.
    #[serde(flatten)]
    pub imported: Imported,
    /// Records removed from the destination because the source no longer has them (only for
    /// the kinds that can be revoked: sessions, API keys, event logs).
    pub removed: Option<u64>,
    /// The verification.
    pub verified: Option<Check>,
}

/// What the copy did.
#[derive(Clone, Debug, Serialize)]
pub struct Report {
    /// The source, without credentials.
    pub from: String,
    /// The destination, without credentials.
    pub to: String,
    /// Kind by kind.
    pub kinds: Vec<KindReport>,
    /// Whether every kind matched; `None` without verification.
    pub verified: Option<bool>,
    /// The checksum over every kind of the source.
    pub checksum: Option<String>,
    /// How long the copy took (without the verification).
    pub copy_seconds: f64,
    /// How long it took in all.
    pub seconds: f64,
    /// Sessions copied per second of copying sessions.
    pub sessions_per_second: f64,
    /// What the operator must know to switch servers over (the grant key, say).
    pub notes: Vec<String>,
}

impl Report {
    /// The kinds whose verification failed, with what differs, for the error message.
    pub fn differences(&self) -> Vec<String> {
        self.kinds
            .iter()
            .filter_map(|k| {
                let check = k.verified.as_ref().filter(|c| !c.ok)?;
                Some(format!(
                    "{}: the source holds {} (checksum {}), the destination {} (checksum {})",
                    k.kind.label(),
                    check.source.count,
                    check.source.checksum,
                    check.destination.count,
                    check.destination.checksum
                ))
            })
            .collect()
    }
}

/// A store URL without its credentials.
pub fn redact(url: &str) -> String {
    crate::stores::redact(url)
}

/// The file a store on this machine lives in (an embedded store), as it is on disk when it
/// exists.
fn local_path(url: &str) -> Option<std::path::PathBuf> {
    let file = crate::stores::backend_for(url).and_then(|b| (b.db_file)(url))?;
    Some(std::fs::canonicalize(&file).unwrap_or_else(|_| Path::new(&file).to_path_buf()))
}

/// Opens one side; `which` is `--from` or `--to`, for messages.
async fn open(
    which: &str,
    url: &str,
    ca_pem: Option<&[u8]>,
    create: bool,
) -> anyhow::Result<Arc<dyn Store>> {
    if url.trim().is_empty() {
        bail!("{which} names no store");
    }
    if url.starts_with("sqlite:") {
        let path = local_path(url).with_context(|| format!("{which}: {url} names no file"))?;
        if !create && !path.exists() {
            bail!("{which}: no store at {}", path.display());
        }
    }
    // Only the destination's file may be made; the source's was checked above.
    open_store(url, ca_pem, Open { create: true }).await.with_context(|| which.to_owned())
}

fn transfer_of<'s>(which: &str, store: &'s Arc<dyn Store>) -> anyhow::Result<&'s dyn Transfer> {
    store.transfer().with_context(|| format!("{which}: the {} store cannot export", store.kind()))
}

/// Refuses a destination that holds a user the source lacks, or has under another id.
async fn check_destination(from: &dyn Store, to: &dyn Transfer, page: usize) -> anyhow::Result<()> {
    let mut after = None;
    loop {
        let next = to.export(Kind::Users, after.as_ref(), page, Timestamp::now()).await?;
        let Batch::Users(users) = &next.batch else { bail!("the destination exported no users") };
        let foreign: Vec<anyhow::Result<Option<&export::User>>> = futures_util::stream::iter(users)
            .map(|u| async move {
                let held = from.user_by_name(&Username::from_stored(u.username.clone())).await?;
                Ok(held.is_none_or(|h| h.user.id.as_str() != u.id).then_some(u))
            })
            .buffer_unordered(LOOKUPS)
            .collect()
            .await;
        for u in foreign {
            if let Some(u) = u? {
                bail!(
                    "the destination already holds the user {} ({}), which the source does not \
                     have: it is not an earlier copy of this source. Copy into an empty store, \
                     or into one that a copy from this source made.",
                    u.username,
                    u.id
                );
            }
        }
        match next.next {
            Some(cursor) => after = Some(cursor),
            None => return Ok(()),
        }
    }
}

/// Copies every record of `kind`; how many were read, and what the imports did.
async fn copy_kind(
    from: &dyn Transfer,
    to: &dyn Transfer,
    kind: Kind,
    page: usize,
) -> anyhow::Result<(u64, Imported)> {
    let (mut exported, mut imported) = (0, Imported::default());
    let mut after = None;
    loop {
        let now = Timestamp::now();
        let next = from
            .export(kind, after.as_ref(), page, now)
            .await
            .with_context(|| format!("reading {} from the source", kind.label()))?;
        exported += next.batch.len() as u64;
        imported += to
            .import(&next.batch, now)
            .await
            .with_context(|| format!("writing {} to the destination", kind.label()))?;
        match next.next {
            Some(cursor) => after = Some(cursor),
            None => return Ok((exported, imported)),
        }
    }
}

/// Revokes on the destination the sessions, API keys and event logs the source no longer has;
/// how many, by kind.
async fn remove_gone(
    from: &dyn Store,
    to: &dyn Store,
    kind: Kind,
    page: usize,
) -> anyhow::Result<Option<u64>> {
    let Some(export) = to.transfer() else { return Ok(None) };
    let mut removed = 0;
    match kind {
        Kind::ApiKeys => {
            // Few, and listed whole by the ordinary API.
            let held: std::collections::HashSet<String> =
                from.list_api_keys().await?.into_iter().map(|k| k.name).collect();
            for key in to.list_api_keys().await? {
                if !held.contains(&key.name) && to.revoke_api_key(&key.name).await? {
                    removed += 1;
                }
            }
            return Ok(Some(removed));
        }
        Kind::Sessions | Kind::EventLogs => {}
        _ => return Ok(None),
    }
    let mut after = None;
    loop {
        let now = Timestamp::now();
        let next = export.export(kind, after.as_ref(), page, now).await?;
        let gone: Vec<anyhow::Result<bool>> = match &next.batch {
            Batch::Sessions(sessions) => {
                futures_util::stream::iter(sessions)
                    .map(|s| async move {
                        let id = SessionId::from_stored(s.id.clone());
                        if from.session_by_id(&id, now).await?.is_some() {
                            return Ok(false);
                        }
                        Ok(to.revoke_session(&id).await?.is_some())
                    })
                    .buffer_unordered(LOOKUPS)
                    .collect()
                    .await
            }
            Batch::EventLogs(logs) => {
                futures_util::stream::iter(logs)
                    .map(|log| async move {
                        if !from.event_log(&log.key, now, EVENT_RETENTION).await?.is_empty() {
                            return Ok(false);
                        }
                        to.forget_events(&log.key).await?;
                        Ok(true)
                    })
                    .buffer_unordered(LOOKUPS)
                    .collect()
                    .await
            }
            _ => Vec::new(),
        };
        for g in gone {
            removed += u64::from(g?);
        }
        match next.next {
            Some(cursor) => after = Some(cursor),
            None => return Ok(Some(removed)),
        }
    }
}

/// The key file beside an embedded store (`PATH.grant-key`), which seals its signing keys when
/// no `grant_key` is configured: where the server looks for it (`crate::grants::sealing_key`).
fn key_file(url: &str) -> Option<std::path::PathBuf> {
    let path = crate::stores::backend_for(url).and_then(|b| (b.local_file)(url))?;
    Some(format!("{path}.grant-key").into())
}

/// The signing keys are sealed with the source servers' key: copies the embedded store's key
/// file to an embedded destination that has none, and says what else the new servers need.
fn grant_key_notes(from: &str, to: &str) -> anyhow::Result<Vec<String>> {
    let source = key_file(from).filter(|f| f.exists());
    let mut notes = Vec::new();
    match (source, key_file(to)) {
        (Some(source), Some(destination)) if !destination.exists() => {
            let mut options = std::fs::OpenOptions::new();
            options.write(true).create_new(true);
            #[cfg(unix)]
            std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
            let mut file = options
                .open(&destination)
                .with_context(|| format!("writing {}", destination.display()))?;
            std::io::Write::write_all(&mut file, &std::fs::read(&source)?)?;
            file.sync_all()?;
            notes.push(format!(
                "copied the grant key file {} to {}: the destination's servers open the signing \
                 keys with it (unless they are given grant_key)",
                source.display(),
                destination.display()
            ));
        }
        (Some(source), Some(destination)) => {
            if std::fs::read(&source)? != std::fs::read(&destination)? {
                notes.push(format!(
                    "{} differs from the source's {}: servers on the destination must be given \
                     the source's key (grant_key) to open the copied signing keys",
                    destination.display(),
                    source.display()
                ));
            }
        }
        (Some(source), None) => notes.push(format!(
            "the signing keys are sealed with the key in {}: give the destination's servers that \
             key as grant_key (CLOAKROOM_GRANT_KEY)",
            source.display()
        )),
        (None, _) => notes.push(
            "the signing keys are sealed with the source servers' grant_key: give the \
             destination's servers the same one"
                .to_owned(),
        ),
    }
    Ok(notes)
}

/// The count and checksum of every record of `kind` that `store` exports at `now`.
async fn digest(
    store: &dyn Transfer,
    kind: Kind,
    page: usize,
    now: Timestamp,
) -> anyhow::Result<Digest> {
    let mut digest = Digest::default();
    let mut after = None;
    loop {
        let next = store.export(kind, after.as_ref(), page, now).await?;
        digest.add(&next.batch);
        match next.next {
            Some(cursor) => after = Some(cursor),
            None => return Ok(digest),
        }
    }
}

/// Runs the copy; `progress` hears a line as each step ends (for standard error). A failed
/// verification is a report with `verified == Some(false)`, not an error: the caller prints it,
/// then fails.
pub async fn run(options: &Options, progress: &mut dyn FnMut(&str)) -> anyhow::Result<Report> {
    let start = Instant::now();
    let (from_url, to_url) = (options.from.trim(), options.to.trim());
    let same_file = match (local_path(from_url), local_path(to_url)) {
        (Some(a), Some(b)) => a == b,
        _ => false,
    };
    if from_url == to_url || same_file {
        bail!("--from and --to name the same store ({}): nothing to copy", redact(from_url));
    }
    let page = options.page.clamp(1, 100_000);
    let ca = options.ca_pem.as_deref();
    let source = open("--from", from_url, ca, false).await?;
    let destination = open("--to", to_url, ca, true).await?;
    let (from, to) = (transfer_of("--from", &source)?, transfer_of("--to", &destination)?);
    let (a, b) = (from.instance().await?, to.instance().await?);
    if a == b {
        bail!("--from and --to are the same store ({a}): nothing to copy");
    }
    check_destination(&*source, to, page).await?;

    let mut kinds = Vec::new();
    for kind in Kind::ALL {
        let began = Instant::now();
        let (exported, imported) = copy_kind(from, to, kind, page).await?;
        let seconds = began.elapsed().as_secs_f64();
        progress(&format!(
            "{}: {exported} read, {} written, {} unchanged ({seconds:.2} s)",
            kind.label(),
            imported.written,
            imported.unchanged
        ));
        kinds.push(KindReport { kind, exported, seconds, imported, removed: None, verified: None });
    }
    for report in &mut kinds {
        let kind = report.kind;
        report.removed = remove_gone(&*source, &*destination, kind, page)
            .await
            .with_context(|| format!("removing {} the source no longer has", kind.label()))?;
        if let Some(n) = report.removed.filter(|n| *n > 0) {
            progress(&format!("{}: {n} the source no longer has removed", kind.label()));
        }
    }
    let keys = kinds.iter().find(|k| k.kind == Kind::SigningKeys).map_or(0, |k| k.exported);
    let notes = if keys > 0 { grant_key_notes(from_url, to_url)? } else { Vec::new() };
    for note in &notes {
        progress(note);
    }
    let copy_seconds = start.elapsed().as_secs_f64();
    let sessions_per_second = kinds
        .iter()
        .find(|k| k.kind == Kind::Sessions)
        .map_or(0.0, |k| k.exported as f64 / k.seconds.max(1e-9));

    let (mut verified, mut checksum) = (None, None);
    if options.verify {
        let now = Timestamp::now();
        let mut all = Digest::default();
        for report in &mut kinds {
            let kind = report.kind;
            let (s, d) = tokio::join!(digest(from, kind, page, now), digest(to, kind, page, now));
            let (s, d) =
                (s.context("verifying the source")?, d.context("verifying the destination")?);
            all.merge(&s);
            report.verified =
                Some(Check { source: Count::from(&s), destination: Count::from(&d), ok: s == d });
        }
        verified = Some(kinds.iter().all(|k| k.verified.as_ref().is_some_and(|c| c.ok)));
        checksum = Some(all.checksum());
    }
    Ok(Report {
        from: redact(from_url),
        to: redact(to_url),
        kinds,
        verified,
        checksum,
        copy_seconds,
        seconds: start.elapsed().as_secs_f64(),
        sessions_per_second,
        notes,
    })
}
