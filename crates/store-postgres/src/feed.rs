//! The change feed over LISTEN/NOTIFY.
//!
//! Writing: every change that can make a cached session stale ends with `cloakroom_announce`
//! (a function in the schema), in the change's own transaction, as its last statement or inside
//! the change's own statement: it bumps the one row of `feed_counter` and calls `pg_notify` with
//! `epoch seq user at`, and raises (so the change rolls back) when the counter row is missing. PostgreSQL delivers a notification only when its transaction commits,
//! so a committed change is always announced and an aborted one never is; and because the
//! counter row stays locked until the commit, numbers are handed out in commit order, which is
//! the order in which listeners receive them, without holes (a rolled-back bump is undone).
//!
//! Listening: [`spawn`] keeps one connection (from its own pool of one, on `store_listen` when
//! given: LISTEN needs a session-level connection, which a transaction-pooling PgBouncer does
//! not give) and turns notifications into [`BusEvent`]s. It reports `Connected` when the LISTEN
//! is in place and the counter read (the number to follow on from), `Disconnected` whenever the
//! connection is lost or stops answering, and `Connected` again (flush, then serve) when a number
//! is skipped or the counter restarts (another epoch, or a number going back). A heartbeat every
//! [`HEARTBEAT`] reads the counter over the listening connection itself: a connection that does
//! not answer within [`HEARTBEAT`] is lost, and numbers the counter reached two beats ago that
//! were never heard mean announcements are not arriving (LISTEN through a transaction pooler):
//! the feed reports `Disconnected` and starts over.

use std::sync::Arc;
use std::time::Duration;

use cloakroom_core::store::BusEvent;
use cloakroom_core::{StoreError, Timestamp, UserId};
use sqlx::postgres::{PgListener, PgPool};
use sqlx::{PgConnection, Row as _};
use tokio::sync::mpsc;

use crate::{Outage, db_err};

/// The NOTIFY channel.
pub(crate) const CHANNEL: &str = "cloakroom_feed";
/// How often the listening connection is asked for the counter, and how long it may take.
pub const HEARTBEAT: Duration = Duration::from_secs(2);
/// Pause between attempts to reconnect a lost listener.
const RETRY: Duration = Duration::from_millis(250);
/// Events buffered for the subscriber.
const QUEUE: usize = 1024;

/// Announces a change to `user` (every user with `None`), in the caller's transaction. Run it as
/// the transaction's last statement: the counter row it locks is held until the commit.
pub(crate) async fn announce(
    conn: &mut PgConnection,
    user: Option<&UserId>,
) -> Result<(), StoreError> {
    sqlx::query("SELECT cloakroom_announce($1, $2, $3)")
        .bind(CHANNEL)
        .bind(user.map_or("*", UserId::as_str))
        .bind(Timestamp::now().as_millis())
        .execute(conn)
        .await
        .map_err(db_err)?;
    Ok(())
}

/// One notification: `epoch seq user at` (`*` for every user).
#[derive(Debug, PartialEq, Eq)]
struct Announcement {
    epoch: String,
    seq: u64,
    user: Option<UserId>,
    at: Timestamp,
}

impl Announcement {
    fn parse(payload: &str) -> Option<Self> {
        let mut parts = payload.split(' ');
        let epoch = parts.next().filter(|e| !e.is_empty())?.to_owned();
        let seq = parts.next()?.parse().ok()?;
        let user = match parts.next()? {
            "" => return None,
            "*" => None,
            uid => Some(UserId::from_stored(uid.to_owned())),
        };
        let at = Timestamp::from_millis(parts.next()?.parse().ok()?);
        parts.next().is_none().then_some(Self { epoch, seq, user, at })
    }
}

/// Where a listener is in the counter's numbers.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Sequence {
    epoch: String,
    /// The number read when listening began: notifications up to it may still arrive (their
    /// changes committed before the read, and the flush at `Connected` covers them).
    baseline: u64,
    /// The last number followed.
    last: u64,
}

/// What one number means for the listener.
#[derive(Debug, PartialEq, Eq)]
enum Step {
    /// The next one, or one from before listening began.
    InOrder,
    /// One or more numbers were skipped: announcements were lost.
    Gap,
    /// The counter started over (another epoch, or a number at or below one already followed).
    Restarted,
}

impl Sequence {
    fn new(epoch: &str, at: u64) -> Self {
        Self { epoch: epoch.to_owned(), baseline: at, last: at }
    }

    fn follow(&mut self, epoch: &str, seq: u64) -> Step {
        if epoch != self.epoch {
            *self = Self::new(epoch, seq);
            return Step::Restarted;
        }
        if seq == self.last + 1 {
            self.last = seq;
            return Step::InOrder;
        }
        if seq <= self.baseline && self.last == self.baseline {
            return Step::InOrder;
        }
        if seq > self.last {
            self.last = seq;
            return Step::Gap;
        }
        *self = Self::new(epoch, seq);
        Step::Restarted
    }
}

/// What the heartbeat's reading of the counter means.
#[derive(Debug, PartialEq, Eq)]
enum Beat {
    Fine,
    /// The counter started over: flush and follow on from its value.
    Restarted,
    /// Numbers the counter reached a beat ago were never heard.
    Missing,
}

/// Compares the counter as read now with what was heard. `pending` is the value read at the
/// previous beat when it was ahead of what had been heard then.
fn check_beat(seq: &mut Sequence, pending: &mut Option<u64>, epoch: &str, now: u64) -> Beat {
    if epoch != seq.epoch || now < seq.last {
        *seq = Sequence::new(epoch, now);
        *pending = None;
        return Beat::Restarted;
    }
    if let Some(p) = *pending {
        if seq.last < p {
            return Beat::Missing;
        }
    }
    *pending = (now > seq.last).then_some(now);
    Beat::Fine
}

/// Starts a listener on `pool` (a pool of one connection, for the listener alone), which notes
/// in `outage` when it loses its connection.
pub(crate) fn spawn(
    pool: PgPool,
    connect_timeout: Duration,
    outage: Arc<Outage>,
) -> mpsc::Receiver<BusEvent> {
    let (tx, rx) = mpsc::channel(QUEUE);
    tokio::spawn(run(pool, connect_timeout, outage, tx));
    rx
}

async fn run(
    pool: PgPool,
    connect_timeout: Duration,
    outage: Arc<Outage>,
    tx: mpsc::Sender<BusEvent>,
) {
    let mut connected = false;
    loop {
        if tx.is_closed() {
            return;
        }
        match tokio::time::timeout(connect_timeout + HEARTBEAT, listen(&pool)).await {
            Ok(Ok((listener, sequence))) => {
                connected = true;
                if tx.send(BusEvent::Connected).await.is_err() {
                    return;
                }
                match follow(listener, sequence, &tx).await {
                    Ended::Unsubscribed => return,
                    Ended::Lost(why) => {
                        outage.record();
                        tracing::warn!(reason = %why, "PostgreSQL change listener lost");
                    }
                }
            }
            Ok(Err(e)) => tracing::debug!(error = %e, "PostgreSQL change listener cannot connect"),
            Err(_) => tracing::debug!("PostgreSQL change listener: connecting timed out"),
        }
        if connected {
            connected = false;
            if tx.send(BusEvent::Disconnected).await.is_err() {
                return;
            }
        }
        tokio::time::sleep(RETRY).await;
    }
}

/// A listening connection and the counter's value once it listens.
async fn listen(pool: &PgPool) -> Result<(PgListener, Sequence), sqlx::Error> {
    let mut listener = PgListener::connect_with(pool).await?;
    // A lost connection is reported, and reconnected here, not silently behind our back.
    listener.eager_reconnect(false);
    listener.listen(CHANNEL).await?;
    let (epoch, seq) = counter(&mut listener).await?;
    Ok((listener, Sequence::new(&epoch, seq)))
}

async fn counter(listener: &mut PgListener) -> Result<(String, u64), sqlx::Error> {
    let row = sqlx::query("SELECT epoch, seq FROM feed_counter").fetch_one(&mut *listener).await?;
    let epoch: String = row.try_get("epoch")?;
    let seq: i64 = row.try_get("seq")?;
    Ok((epoch, u64::try_from(seq).unwrap_or(0)))
}

enum Ended {
    Unsubscribed,
    Lost(String),
}

async fn follow(
    mut listener: PgListener,
    mut sequence: Sequence,
    tx: &mpsc::Sender<BusEvent>,
) -> Ended {
    let mut beat = tokio::time::interval(HEARTBEAT);
    beat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    beat.tick().await;
    let mut pending = None;
    loop {
        let flush = tokio::select! {
            next = listener.try_recv() => match next {
                Ok(Some(n)) => match Announcement::parse(n.payload()) {
                    Some(a) => {
                        let event = BusEvent::Invalidate { user: a.user, at: a.at };
                        if tx.send(event).await.is_err() {
                            return Ended::Unsubscribed;
                        }
                        match sequence.follow(&a.epoch, a.seq) {
                            Step::InOrder => false,
                            Step::Gap => {
                                tracing::error!("a session invalidation was missed; flushing the cache");
                                true
                            }
                            Step::Restarted => {
                                tracing::warn!("the change counter started over; flushing the cache");
                                // What the heartbeat saw ahead was in the old numbering.
                                pending = None;
                                true
                            }
                        }
                    }
                    None => {
                        // Not ours to read: whatever it announced, the cache cannot vouch.
                        tracing::warn!("unreadable notification on the change feed; flushing the cache");
                        true
                    }
                },
                Ok(None) => return Ended::Lost("the connection closed".into()),
                Err(e) => return Ended::Lost(e.to_string()),
            },
            _ = beat.tick() => {
                if tx.is_closed() {
                    return Ended::Unsubscribed;
                }
                match tokio::time::timeout(HEARTBEAT, counter(&mut listener)).await {
                    Ok(Ok((epoch, now))) => match check_beat(&mut sequence, &mut pending, &epoch, now) {
                        Beat::Fine => false,
                        Beat::Restarted => {
                            tracing::warn!("the change counter started over; flushing the cache");
                            true
                        }
                        Beat::Missing => {
                            tracing::error!(
                                "changes are committed but their notifications do not arrive \
                                 (LISTEN through a transaction-pooling PgBouncer? set store_listen \
                                 to a direct URL)"
                            );
                            return Ended::Lost("announcements are not arriving".into());
                        }
                    },
                    Ok(Err(e)) => return Ended::Lost(e.to_string()),
                    Err(_) => return Ended::Lost("the heartbeat was not answered in time".into()),
                }
            }
        };
        if flush && tx.send(BusEvent::Connected).await.is_err() {
            return Ended::Unsubscribed;
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn announcements_parse_strictly() {
        let a = Announcement::parse("e1 42 usr_1 1700000000000").unwrap();
        assert_eq!(a.epoch, "e1");
        assert_eq!(a.seq, 42);
        assert_eq!(a.user, Some(UserId::from_stored("usr_1".into())));
        assert_eq!(a.at, Timestamp::from_millis(1_700_000_000_000));
        assert_eq!(Announcement::parse("e1 1 * 5").unwrap().user, None);
        for bad in ["", "e1", "e1 x usr 5", "e1 1  5", "e1 1 usr", "e1 1 usr 5 extra", " 1 u 5"] {
            assert_eq!(Announcement::parse(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn numbers_are_followed_without_gaps() {
        let mut s = Sequence::new("e", 10);
        assert_eq!(s.follow("e", 9), Step::InOrder, "from before listening began");
        assert_eq!(s.follow("e", 10), Step::InOrder);
        assert_eq!(s.follow("e", 11), Step::InOrder);
        assert_eq!(s.follow("e", 12), Step::InOrder);
        assert_eq!(s.follow("e", 14), Step::Gap, "13 was lost");
        assert_eq!(s.follow("e", 15), Step::InOrder, "and the count goes on from there");
        assert_eq!(s.follow("e", 3), Step::Restarted, "the counter went back");
        assert_eq!(s.follow("e", 4), Step::InOrder);
        assert_eq!(s.follow("f", 1), Step::Restarted, "another epoch");
        assert_eq!(s.follow("f", 2), Step::InOrder);
    }

    #[test]
    fn the_heartbeat_notices_numbers_never_heard() {
        let mut s = Sequence::new("e", 5);
        let mut pending = None;
        assert_eq!(check_beat(&mut s, &mut pending, "e", 5), Beat::Fine);
        // 6 committed; its notification may still be on its way at this beat.
        assert_eq!(check_beat(&mut s, &mut pending, "e", 6), Beat::Fine);
        assert_eq!(s.follow("e", 6), Step::InOrder);
        assert_eq!(check_beat(&mut s, &mut pending, "e", 6), Beat::Fine, "heard by the next");
        assert_eq!(check_beat(&mut s, &mut pending, "e", 7), Beat::Fine);
        assert_eq!(check_beat(&mut s, &mut pending, "e", 8), Beat::Missing, "7 never came");
        let mut s = Sequence::new("e", 5);
        let mut pending = None;
        assert_eq!(check_beat(&mut s, &mut pending, "other", 1), Beat::Restarted);
        assert_eq!(s, Sequence::new("other", 1));
        assert_eq!(check_beat(&mut s, &mut pending, "other", 0), Beat::Restarted, "went back");
    }
}
