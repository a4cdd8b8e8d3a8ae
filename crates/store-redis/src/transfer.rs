//! Export and import ([`Transfer`]) over the layout in the crate docs, with bounded work per
//! page and no command that walks a whole keyspace at once:
//!
//! - users and API keys page through their name sets (`cr:users`, `cr:keys`) by name;
//!   sessions go user by user through each user's index (`cr:x:{uid}`), by creation time;
//! - grant revocations page through the revocation log (`cr:grv`) by time;
//! - grant uses (`cr:g:{gid}:u`) and event logs (`cr:ev:<key>`) have no index: they are found by
//!   `SCAN … MATCH`, on every master of a Cluster in turn;
//! - audit events page through the `cr:audit` stream by entry id.
//!
//! Imports write a record at a time, each in one script or one atomic pipeline over one slot;
//! users and sessions through scripts that leave the hash alone when it already holds the
//! record, so that a second copy writes nothing. Audit events are appended through `audit.lua`,
//! which also keeps the ids of each stream's events beside it (`{cr:audit}:ids`): a copied
//! event is appended once. Events appended before ids existed get one from their stream entry.

use async_trait::async_trait;
use cloakroom_core::export::{
    self, Batch, Cursor, EVENT_RETENTION, Imported, Kind, Page, RevocationKind, Transfer,
};
use cloakroom_core::grant::GrantRevocation as Revocation;
use cloakroom_core::store::{StoreResult, codec};
use cloakroom_core::{StoreError, Timestamp};
use redis::cluster_routing::{Route, RoutingInfo, SingleNodeRoutingInfo, SlotAddr};
use redis::{AsyncCommands as _, Script};

use crate::{
    AUDIT_MAX, BUS_SEQ, Conn, Fields, GRANT_REVOCATIONS, RedisStore, SIGNING_KEYS, corrupt, err,
    grant_revoked_key, grant_used_key, index_key, name_key, num, pairs, script_error, session_key,
    session_prefix, sid_key, token_key, user_grants_revoked_key, user_key,
};

/// The scripts imports (and audit appends) run.
pub(crate) struct Scripts {
    user: Script,
    session: Script,
    pub(crate) audit: Script,
    announce: Script,
}

impl Scripts {
    pub(crate) fn new() -> Self {
        Self {
            user: Script::new(concat!(
                include_str!("lua/common.lua"),
                include_str!("lua/records.lua"),
                include_str!("lua/import_user.lua")
            )),
            session: Script::new(concat!(
                include_str!("lua/records.lua"),
                include_str!("lua/import_session.lua")
            )),
            audit: Script::new(concat!(
                include_str!("lua/records.lua"),
                include_str!("lua/audit.lua")
            )),
            announce: Script::new(concat!(
                include_str!("lua/common.lua"),
                include_str!("lua/announce_all.lua")
            )),
        }
    }
}

/// The stream of an audit event's user, when it names one.
fn user_stream(username: &str) -> String {
    format!("cr:audit:n:{username}")
}

/// The set of the ids of a stream's events: in the stream's slot (its name is the hash tag).
fn ids_of(stream: &str) -> String {
    format!("{{{stream}}}:ids")
}

fn json_cursor<T: serde::Serialize>(at: &T) -> Cursor {
    Cursor(serde_json::to_string(at).unwrap_or_default())
}

fn parse_cursor<T: serde::de::DeserializeOwned>(after: Option<&Cursor>) -> StoreResult<Option<T>> {
    after.map(|c| serde_json::from_str(&c.0).map_err(|_| corrupt("export cursor"))).transpose()
}

/// Where a `SCAN` export is: the node, its scan cursor, and keys found but not yet exported.
#[derive(Default, serde::Serialize, serde::Deserialize)]
struct ScanAt {
    node: usize,
    cursor: u64,
    pending: Vec<String>,
}

/// Where a session export is: the user (by name), and the last index entry taken of its
/// sessions (`None`: the user is done).
#[derive(serde::Serialize, serde::Deserialize)]
struct SessionsAt {
    user: String,
    entry: Option<(i64, String)>,
}

fn exported_user(f: &Fields) -> StoreResult<export::User> {
    let text = |k: &'static str| f.get(k).cloned().ok_or(corrupt("user"));
    Ok(export::User {
        id: text("id")?,
        username: text("username")?,
        password_hash: f.get("pw").filter(|p| !p.is_empty()).cloned(),
        roles: serde_json::from_str(f.get("roles").map_or("[]", String::as_str))
            .map_err(|_| corrupt("user roles"))?,
        disabled: f.get("disabled").is_some_and(|d| d == "1"),
        created_at: num(f, "created")?,
        updated_at: num(f, "updated")?,
        privileges_changed_at: num(f, "priv").unwrap_or(0),
    })
}

/// The hash of a user as a copy writes it: the fields `create_user` and `update_user` keep.
fn user_fields(u: &export::User) -> Vec<(&'static str, String)> {
    let mut fields = vec![
        ("id", u.id.clone()),
        ("username", u.username.clone()),
        ("roles", serde_json::to_string(&u.roles).unwrap_or_else(|_| "[]".into())),
        ("disabled", if u.disabled { "1" } else { "0" }.to_owned()),
        ("created", u.created_at.to_string()),
        ("updated", u.updated_at.to_string()),
        ("priv", u.privileges_changed_at.to_string()),
    ];
    if let Some(pw) = &u.password_hash {
        fields.push(("pw", pw.clone()));
    }
    fields
}

fn exported_session(f: &Fields) -> StoreResult<Option<export::Session>> {
    if f.is_empty() {
        return Ok(None);
    }
    let text = |k: &'static str| f.get(k).cloned().ok_or(corrupt("session"));
    Ok(Some(export::Session {
        id: text("id")?,
        user_id: text("uid")?,
        token_hash: text("th")?,
        csrf: text("csrf")?,
        created_at: num(f, "created")?,
        last_seen_at: num(f, "seen")?,
        token_issued_at: num(f, "issued")?,
        idle_expires_at: num(f, "idle")?,
        expires_at: num(f, "exp")?,
        ip: f.get("ip").cloned(),
        user_agent: f.get("ua").cloned(),
        audience: f.get("aud").cloned(),
        data: text("data")?,
        data_version: u64::try_from(num(f, "dv")?).unwrap_or(0),
    }))
}

/// The hash of a session as a copy writes it: the fields `create_session` and later changes
/// keep (`ip`, `ua` and `aud` only when there are any).
fn session_fields(s: &export::Session) -> Vec<(&'static str, String)> {
    let mut fields = vec![
        ("id", s.id.clone()),
        ("uid", s.user_id.clone()),
        ("th", s.token_hash.clone()),
        ("csrf", s.csrf.clone()),
        ("created", s.created_at.to_string()),
        ("seen", s.last_seen_at.to_string()),
        ("issued", s.token_issued_at.to_string()),
        ("idle", s.idle_expires_at.to_string()),
        ("exp", s.expires_at.to_string()),
        ("data", s.data.clone()),
        ("dv", s.data_version.to_string()),
    ];
    let optional = [("ip", &s.ip), ("ua", &s.user_agent), ("aud", &s.audience)];
    for (name, value) in optional {
        match value {
            Some(v) if name != "aud" || !v.is_empty() => fields.push((name, v.clone())),
            _ => {}
        }
    }
    fields
}

/// A revocation-log member (`kind|subject|at|until`) as a record.
fn exported_revocation(member: &str) -> StoreResult<export::GrantRevocation> {
    let mut parts = member.splitn(4, '|');
    let (Some(kind), Some(subject), Some(at), Some(until)) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(corrupt("grant revocation"));
    };
    let kind = codec::revocation_kind(kind)?;
    let ms = |s: &str| s.parse::<i64>().map_err(|_| corrupt("grant revocation"));
    Ok(export::GrantRevocation {
        kind,
        subject: subject.to_owned(),
        at: ms(at)?,
        until: ms(until)?,
    })
}

fn revocation_member(r: &export::GrantRevocation) -> String {
    let kind = codec::revocation_kind_name(r.kind);
    format!("{kind}|{}|{}|{}", r.subject, r.at, r.until)
}

/// A stream entry as an audit record; entries from before ids get one from their entry id.
fn exported_audit(entry: &redis::streams::StreamId) -> export::Audit {
    let get = |k: &str| entry.get::<String>(k);
    export::Audit {
        id: get("ref").unwrap_or_else(|| format!("aud_redis_{}", entry.id)),
        at: get("at").and_then(|a| a.parse().ok()).unwrap_or(0),
        kind: get("kind").unwrap_or_default(),
        actor: get("actor").unwrap_or_default(),
        user_id: get("uid"),
        username: get("username"),
        session_id: get("sid"),
        ip: get("ip"),
        detail: get("detail"),
    }
}

/// A member for an event-log entry: its time and random bits, like `reserve_event`'s.
fn event_member(at: i64) -> StoreResult<String> {
    let mut unique = [0u8; 8];
    cloakroom_core::token::random_bytes(&mut unique).map_err(StoreError::unavailable)?;
    Ok(format!("{at}:{}", u64::from_le_bytes(unique)))
}

/// Writes `records` one after the other with `write`, which says whether it wrote each.
async fn one_by_one<'a, T, F>(records: &'a [T], write: impl Fn(&'a T) -> F) -> StoreResult<Imported>
where
    F: std::future::Future<Output = StoreResult<bool>>,
{
    let mut done = Imported::default();
    for record in records {
        tally(&mut done, write(record).await?);
    }
    Ok(done)
}

fn tally(done: &mut Imported, written: bool) {
    if written {
        done.written += 1;
    } else {
        done.unchanged += 1;
    }
}

impl RedisStore {
    /// Appends an audit event to its streams (the whole log, and its user's), each unless it
    /// holds one with this id already; whether the whole log did not have it.
    pub(crate) async fn add_audit(&self, e: &export::Audit) -> StoreResult<bool> {
        let mut fields: Vec<(&str, &str)> =
            vec![("kind", e.kind.as_str()), ("actor", e.actor.as_str())];
        let at = e.at.to_string();
        fields.push(("at", &at));
        let optional = [
            ("uid", &e.user_id),
            ("username", &e.username),
            ("sid", &e.session_id),
            ("ip", &e.ip),
            ("detail", &e.detail),
        ];
        for (name, value) in optional {
            if let Some(v) = value {
                fields.push((name, v));
            }
        }
        let mut streams = vec!["cr:audit".to_owned()];
        if let Some(u) = &e.username {
            streams.push(user_stream(u));
        }
        let now = Timestamp::now().as_millis();
        let appends = streams.iter().map(|stream| {
            let mut script = self.scripts.transfer.audit.prepare_invoke();
            script.key(stream).key(ids_of(stream)).arg(&e.id).arg(AUDIT_MAX).arg(now);
            for (k, v) in &fields {
                script.arg(*k).arg(*v);
            }
            let mut conn = self.conn();
            async move { script.invoke_async::<i64>(&mut conn).await }
        });
        let added = futures_util::future::try_join_all(appends).await.map_err(err)?;
        Ok(added.first() == Some(&1))
    }

    /// Up to `n` members of the sorted set `key` after `name` in lexical order (all scores 0).
    async fn names_after(
        &self,
        key: &str,
        after: Option<&str>,
        n: usize,
    ) -> StoreResult<Vec<String>> {
        let min = after.map_or_else(|| "-".to_owned(), |a| format!("({a}"));
        redis::cmd("ZRANGE")
            .arg(key)
            .arg(min)
            .arg("+")
            .arg("BYLEX")
            .arg("LIMIT")
            .arg(0)
            .arg(n)
            .query_async(&mut self.conn())
            .await
            .map_err(err)
    }

    /// Up to `n` entries of the sorted set `key` after `after` in (score, member) order, which
    /// is the set's own order: members with one score sort by their bytes.
    async fn entries_after(
        &self,
        key: &str,
        after: Option<&(i64, String)>,
        n: usize,
    ) -> StoreResult<Vec<(String, i64)>> {
        let min = after.map_or_else(|| "-inf".to_owned(), |(score, _)| score.to_string());
        let mut fetch = n + 1;
        loop {
            let got: Vec<(String, i64)> = redis::cmd("ZRANGEBYSCORE")
                .arg(key)
                .arg(&min)
                .arg("+inf")
                .arg("WITHSCORES")
                .arg("LIMIT")
                .arg(0)
                .arg(fetch)
                .query_async(&mut self.conn())
                .await
                .map_err(err)?;
            let whole = got.len() < fetch;
            let later: Vec<(String, i64)> = got
                .into_iter()
                .filter(|(m, s)| after.is_none_or(|(at, am)| s > at || (s == at && m > am)))
                .take(n)
                .collect();
            // Entries at `after`'s score that come before it filled the fetch: fetch more.
            if later.len() >= n || whole {
                return Ok(later);
            }
            fetch = fetch.saturating_mul(2);
        }
    }

    /// Where `SCAN` runs: a slot of each master of a Cluster, in slot order; else the one
    /// server (`None`).
    async fn scan_nodes(&self) -> StoreResult<Vec<Option<u16>>> {
        if !matches!(self.conn, Conn::Cluster(_)) {
            return Ok(vec![None]);
        }
        let slots: redis::Value =
            redis::cmd("CLUSTER").arg("SLOTS").query_async(&mut self.conn()).await.map_err(err)?;
        let redis::Value::Array(ranges) = slots else { return Err(corrupt("cluster slots")) };
        let mut masters: Vec<(i64, String)> = Vec::new();
        for range in ranges {
            let redis::Value::Array(parts) = range else { continue };
            let (Some(redis::Value::Int(start)), Some(master)) = (parts.first(), parts.get(2))
            else {
                continue;
            };
            let node = match master {
                redis::Value::Array(node) => {
                    format!("{:?}", node.iter().take(2).collect::<Vec<_>>())
                }
                _ => continue,
            };
            masters.push((*start, node));
        }
        masters.sort();
        let mut seen = std::collections::HashSet::new();
        Ok(masters
            .into_iter()
            .filter(|(_, node)| seen.insert(node.clone()))
            .map(|(start, _)| u16::try_from(start).ok())
            .collect())
    }

    /// Up to `limit` keys matching `pattern`, from where `after` left off.
    async fn scan_page(
        &self,
        pattern: &str,
        after: Option<&Cursor>,
        limit: usize,
    ) -> StoreResult<(Vec<String>, Option<Cursor>)> {
        let mut at: ScanAt = parse_cursor(after)?.unwrap_or_default();
        let nodes = self.scan_nodes().await?;
        let mut keys = std::mem::take(&mut at.pending);
        while keys.len() < limit && at.node < nodes.len() {
            let mut scan = redis::cmd("SCAN");
            scan.arg(at.cursor).arg("MATCH").arg(pattern).arg("COUNT").arg(1000);
            let reply = match (&self.conn, nodes[at.node]) {
                (Conn::Cluster(c), Some(slot)) => {
                    let route = Route::new(slot, SlotAddr::Master);
                    let routing =
                        RoutingInfo::SingleNode(SingleNodeRoutingInfo::SpecificNode(route));
                    let value = c.clone().route_command(scan, routing).await.map_err(err)?;
                    redis::from_redis_value(value).map_err(|e| err(e.into()))
                }
                _ => scan.query_async(&mut self.conn()).await.map_err(err),
            };
            let (next, found): (u64, Vec<String>) = reply?;
            keys.extend(found);
            (at.node, at.cursor) = if next == 0 { (at.node + 1, 0) } else { (at.node, next) };
        }
        if keys.len() > limit {
            at.pending = keys.split_off(limit);
        }
        let done = at.node >= nodes.len() && at.pending.is_empty();
        Ok((keys, (!done).then(|| json_cursor(&at))))
    }

    async fn export_users(&self, after: Option<&Cursor>, limit: usize) -> StoreResult<Page> {
        let names = self.names_after("cr:users", after.map(|c| c.0.as_str()), limit).await?;
        let users = names.iter().map(|name| async move {
            let uid: Option<String> = self.conn().get(name_key(name)).await.map_err(err)?;
            let Some(uid) = uid else { return Ok(None) };
            let f = self.user_fields(&uid).await?;
            if f.is_empty() { Ok(None) } else { exported_user(&f).map(Some) }
        });
        let users: Vec<_> =
            futures_util::future::try_join_all(users).await?.into_iter().flatten().collect();
        let next = (names.len() >= limit).then(|| names.last().cloned()).flatten().map(Cursor);
        Ok(Page { batch: Batch::Users(users), next })
    }

    /// The live sessions of the user named `name` after index entry `entry`, into `out` until
    /// it holds `limit`; the last index entry looked at.
    async fn sessions_of_user(
        &self,
        name: &str,
        mut entry: Option<(i64, String)>,
        limit: usize,
        now: Timestamp,
        out: &mut Vec<export::Session>,
    ) -> StoreResult<Option<(i64, String)>> {
        let uid: Option<String> = self.conn().get(name_key(name)).await.map_err(err)?;
        let Some(uid) = uid else { return Ok(entry) };
        let user = self.user_fields(&uid).await?;
        if user.is_empty() || user.get("disabled").is_some_and(|d| d == "1") {
            return Ok(entry);
        }
        loop {
            let want = limit.saturating_sub(out.len());
            let entries = self.entries_after(&index_key(&uid), entry.as_ref(), want).await?;
            let Some((last, score)) = entries.last() else { return Ok(entry) };
            entry = Some((*score, last.clone()));
            // One slot (the user's): one pipeline.
            let mut pipe = redis::pipe();
            for (sid, _) in &entries {
                pipe.hgetall(session_key(&uid, sid));
            }
            let hashes: Vec<Fields> = pipe.query_async(&mut self.conn()).await.map_err(err)?;
            for f in &hashes {
                if let Some(s) = exported_session(f)?.filter(|s| s.is_live(now)) {
                    out.push(s);
                }
            }
            if out.len() >= limit || entries.len() < want {
                return Ok(entry);
            }
        }
    }

    async fn export_sessions(
        &self,
        after: Option<&Cursor>,
        limit: usize,
        now: Timestamp,
    ) -> StoreResult<Page> {
        let mut at: Option<SessionsAt> = parse_cursor(after)?;
        let mut out = Vec::new();
        loop {
            let names = match &at {
                Some(SessionsAt { user, entry: Some(_) }) => vec![user.clone()],
                other => {
                    let after = other.as_ref().map(|a| a.user.as_str());
                    self.names_after("cr:users", after, 64).await?
                }
            };
            if names.is_empty() {
                return Ok(Page { batch: Batch::Sessions(out), next: None });
            }
            for name in names {
                let entry = at.take().filter(|a| a.user == name).and_then(|a| a.entry);
                let last = self.sessions_of_user(&name, entry, limit, now, &mut out).await?;
                if out.len() >= limit {
                    let next = json_cursor(&SessionsAt { user: name, entry: last });
                    return Ok(Page { batch: Batch::Sessions(out), next: Some(next) });
                }
                at = Some(SessionsAt { user: name, entry: None });
            }
        }
    }

    async fn export_api_keys(&self, after: Option<&Cursor>, limit: usize) -> StoreResult<Page> {
        let names = self.names_after("cr:keys", after.map(|c| c.0.as_str()), limit).await?;
        let mut keys = Vec::new();
        for name in &names {
            let record: Option<String> =
                self.conn().get(format!("cr:kn:{name}")).await.map_err(err)?;
            let Some((kh, created)) = record.as_deref().and_then(|r| r.split_once(' ')) else {
                continue;
            };
            keys.push(export::ApiKey {
                name: name.clone(),
                key_hash: kh.to_owned(),
                created_at: created.parse().map_err(|_| corrupt("API key"))?,
            });
        }
        let next = (names.len() >= limit).then(|| names.last().cloned()).flatten().map(Cursor);
        Ok(Page { batch: Batch::ApiKeys(keys), next })
    }

    async fn export_signing_keys(&self, after: Option<&Cursor>, limit: usize) -> StoreResult<Page> {
        // Few (one per rotation): read whole, paged by id.
        use cloakroom_core::store::GrantStore as _;
        let mut keys: Vec<export::SigningKey> =
            self.signing_keys().await?.iter().map(export::SigningKey::from).collect();
        keys.sort_by(|a, b| a.id.cmp(&b.id));
        keys.retain(|k| after.is_none_or(|c| k.id > c.0));
        let more = keys.len() > limit;
        keys.truncate(limit);
        let next = more.then(|| keys.last().map(|k| Cursor(k.id.clone()))).flatten();
        Ok(Page { batch: Batch::SigningKeys(keys), next })
    }

    async fn export_revocations(
        &self,
        after: Option<&Cursor>,
        limit: usize,
        now: Timestamp,
    ) -> StoreResult<Page> {
        let after: Option<(i64, String)> = parse_cursor(after)?;
        let entries = self.entries_after(GRANT_REVOCATIONS, after.as_ref(), limit).await?;
        let mut revocations = Vec::new();
        for (member, _) in &entries {
            let r = exported_revocation(member)?;
            if r.until > now.as_millis() {
                revocations.push(r);
            }
        }
        let next = match entries.last() {
            Some((member, score)) if entries.len() >= limit => {
                Some(json_cursor(&(*score, member.clone())))
            }
            _ => None,
        };
        Ok(Page { batch: Batch::GrantRevocations(revocations), next })
    }

    async fn export_grant_uses(
        &self,
        after: Option<&Cursor>,
        limit: usize,
        now: Timestamp,
    ) -> StoreResult<Page> {
        let (keys, next) = self.scan_page("cr:g:{*}:u", after, limit).await?;
        let uses = keys.iter().map(|key| async move {
            let expires: i64 = redis::cmd("PEXPIRETIME")
                .arg(key)
                .query_async(&mut self.conn())
                .await
                .map_err(err)?;
            let id = key.strip_prefix("cr:g:{").and_then(|k| k.strip_suffix("}:u"));
            Ok::<_, StoreError>(
                id.filter(|_| expires > now.as_millis())
                    .map(|id| export::GrantUse { id: id.to_owned(), expires_at: expires }),
            )
        });
        let uses = futures_util::future::try_join_all(uses).await?.into_iter().flatten().collect();
        Ok(Page { batch: Batch::GrantUses(uses), next })
    }

    async fn export_event_logs(
        &self,
        after: Option<&Cursor>,
        limit: usize,
        now: Timestamp,
    ) -> StoreResult<Page> {
        let (keys, next) = self.scan_page("cr:ev:*", after, limit).await?;
        let since = now.minus(EVENT_RETENTION).as_millis();
        let logs = keys.iter().map(|key| async move {
            let scored: Vec<(String, i64)> =
                self.conn().zrange_withscores(key, 0, -1).await.map_err(err)?;
            let events: Vec<i64> =
                scored.into_iter().map(|(_, at)| at).filter(|at| *at > since).collect();
            let key = key.strip_prefix("cr:ev:").unwrap_or(key).to_owned();
            Ok::<_, StoreError>((!events.is_empty()).then_some(export::EventLog { key, events }))
        });
        let logs = futures_util::future::try_join_all(logs).await?.into_iter().flatten().collect();
        Ok(Page { batch: Batch::EventLogs(logs), next })
    }

    async fn export_audit(&self, after: Option<&Cursor>, limit: usize) -> StoreResult<Page> {
        let start = after.map_or_else(|| "-".to_owned(), |c| format!("({}", c.0));
        let reply: redis::streams::StreamRangeReply =
            self.conn().xrange_count("cr:audit", start, "+", limit).await.map_err(err)?;
        let next = match reply.ids.last() {
            Some(last) if reply.ids.len() >= limit => Some(Cursor(last.id.clone())),
            _ => None,
        };
        let events = reply.ids.iter().map(exported_audit).collect();
        Ok(Page { batch: Batch::Audit(events), next })
    }

    async fn import_users(&self, users: &[export::User]) -> StoreResult<Imported> {
        let mut done = Imported::default();
        for u in users {
            // The name first, as `create_user` claims it: a name held by another user is a
            // conflict, and nothing of this user is written.
            let claimed: Option<String> = redis::cmd("SET")
                .arg(name_key(&u.username))
                .arg(&u.id)
                .arg("NX")
                .arg("GET")
                .query_async(&mut self.conn())
                .await
                .map_err(err)?;
            if claimed.is_some_and(|held| held != u.id) {
                return Err(StoreError::Conflict { what: "user" });
            }
            let mut script = self.scripts.transfer.user.prepare_invoke();
            script
                .key(user_key(&u.id))
                .key(index_key(&u.id))
                .arg(session_prefix(&u.id))
                .arg(if u.disabled { "1" } else { "0" });
            for (k, v) in user_fields(u) {
                script.arg(k).arg(v);
            }
            let (written, removed): (i64, Vec<String>) =
                script.invoke_async(&mut self.conn()).await.map_err(|e| script_error(e, "user"))?;
            self.conn().zadd::<_, _, _, ()>("cr:users", &u.username, 0).await.map_err(err)?;
            self.forget_hints(&pairs(removed)).await;
            tally(&mut done, written == 1);
        }
        Ok(done)
    }

    /// Writes one session; `None` when it was skipped, else whether it was written.
    async fn import_session(
        &self,
        s: &export::Session,
        now: Timestamp,
    ) -> StoreResult<Option<bool>> {
        if !s.is_live(now) {
            return Ok(None);
        }
        let (uid, sid) = (s.user_id.as_str(), s.id.as_str());
        let mut script = self.scripts.transfer.session.prepare_invoke();
        script
            .key(user_key(uid))
            .key(index_key(uid))
            .key(session_key(uid, sid))
            .arg(s.idle_expires_at)
            .arg(s.expires_at)
            .arg(s.created_at)
            .arg(sid);
        for (k, v) in session_fields(s) {
            script.arg(k).arg(v);
        }
        let (outcome, old): (String, String) =
            script.invoke_async(&mut self.conn()).await.map_err(err)?;
        let written = match outcome.as_str() {
            "nouser" => return Err(StoreError::NotFound { what: "user" }),
            "disabled" => return Ok(None),
            "same" => false,
            _ => true,
        };
        // The lookup hints, also when the hash was already there: a run that stopped between
        // the script and these left them out.
        let mut hints = vec![
            redis::cmd("SET")
                .arg(token_key(&s.token_hash))
                .arg(format!("{uid} {sid}"))
                .arg("PXAT")
                .arg(s.expires_at)
                .clone(),
            redis::cmd("SET").arg(sid_key(sid)).arg(uid).arg("PXAT").arg(s.expires_at).clone(),
        ];
        if !old.is_empty() && old != s.token_hash {
            hints.push(redis::cmd("DEL").arg(token_key(&old)).clone());
        }
        self.each(hints).await?;
        Ok(Some(written))
    }

    async fn import_sessions(
        &self,
        sessions: &[export::Session],
        now: Timestamp,
    ) -> StoreResult<Imported> {
        let all = sessions.iter().map(|s| self.import_session(s, now));
        let mut done = Imported::default();
        for outcome in futures_util::future::try_join_all(all).await? {
            match outcome {
                None => done.skipped += 1,
                Some(written) => tally(&mut done, written),
            }
        }
        Ok(done)
    }

    async fn import_api_key(&self, k: &export::ApiKey) -> StoreResult<bool> {
        let record = format!("{} {}", k.key_hash, k.created_at);
        let name = format!("cr:kn:{}", k.name);
        let held: Option<String> = self.conn().get(&name).await.map_err(err)?;
        let mut cmds = Vec::new();
        if held.as_deref() != Some(record.as_str()) {
            cmds.push(redis::cmd("SET").arg(&name).arg(&record).clone());
        }
        if let Some(old) = held.as_deref().and_then(|h| h.split(' ').next()) {
            if old != k.key_hash {
                cmds.push(redis::cmd("DEL").arg(format!("cr:k:{old}")).clone());
            }
        }
        let written = !cmds.is_empty();
        // The hash's lookup and the listing, also when the name was there (a repair).
        cmds.push(redis::cmd("SET").arg(format!("cr:k:{}", k.key_hash)).arg(&k.name).clone());
        cmds.push(redis::cmd("ZADD").arg("cr:keys").arg(0).arg(&k.name).clone());
        self.each(cmds).await?;
        Ok(written)
    }

    async fn import_signing_key(&self, k: &export::SigningKey) -> StoreResult<bool> {
        let record = format!(
            "{}|{}|{}|{}|{}",
            k.created_at,
            k.active_from,
            k.retired_at.map_or_else(|| "-".to_owned(), |t| t.to_string()),
            k.public,
            k.sealed
        );
        let held: Option<String> = self.conn().hget(SIGNING_KEYS, &k.id).await.map_err(err)?;
        if held.as_deref() == Some(record.as_str()) {
            return Ok(false);
        }
        self.conn().hset::<_, _, _, ()>(SIGNING_KEYS, &k.id, record).await.map_err(err)?;
        Ok(true)
    }

    async fn import_grant_use(&self, g: &export::GrantUse) -> StoreResult<bool> {
        let set: Option<String> = redis::cmd("SET")
            .arg(grant_used_key(&g.id))
            .arg("1")
            .arg("PXAT")
            .arg(g.expires_at)
            .arg("NX")
            .query_async(&mut self.conn())
            .await
            .map_err(err)?;
        Ok(set.is_some())
    }

    async fn import_revocation(&self, r: &export::GrantRevocation) -> StoreResult<bool> {
        // The marker redemptions check, then the log entry that `/v1/revocations` serves.
        match r.kind {
            RevocationKind::Grant => {
                redis::cmd("SET")
                    .arg(grant_revoked_key(&r.subject))
                    .arg("1")
                    .arg("PXAT")
                    .arg(r.until)
                    .query_async::<()>(&mut self.conn())
                    .await
                    .map_err(err)?;
            }
            RevocationKind::User => {
                self.scripts
                    .revoke_user_grants
                    .key(user_grants_revoked_key(&r.subject))
                    .arg(r.at)
                    .arg(r.until)
                    .invoke_async::<i64>(&mut self.conn())
                    .await
                    .map_err(err)?;
            }
        }
        let held: Option<f64> =
            self.conn().zscore(GRANT_REVOCATIONS, revocation_member(r)).await.map_err(err)?;
        if held.is_some() {
            return Ok(false);
        }
        self.log_revocation(&Revocation::from(r)).await?;
        Ok(true)
    }

    async fn import_event_log(&self, log: &export::EventLog) -> StoreResult<bool> {
        let key = format!("cr:ev:{}", log.key);
        let held: Vec<(String, i64)> =
            self.conn().zrange_withscores(&key, 0, -1).await.map_err(err)?;
        if held.iter().map(|(_, at)| *at).eq(log.events.iter().copied()) {
            return Ok(false);
        }
        let mut pipe = redis::pipe();
        pipe.atomic().del(&key).ignore();
        for at in &log.events {
            pipe.zadd(&key, event_member(*at)?, *at).ignore();
        }
        if let Some(newest) = log.events.iter().max() {
            let until = Timestamp::from_millis(*newest).plus(EVENT_RETENTION);
            pipe.cmd("PEXPIREAT").arg(&key).arg(until.as_millis()).ignore();
        }
        pipe.query_async::<()>(&mut self.conn()).await.map_err(err)?;
        Ok(true)
    }

    /// Announces that every user's cached sessions may be stale.
    async fn announce_all(&self) -> StoreResult<()> {
        let mut script = self.scripts.transfer.announce.prepare_invoke();
        if !matches!(self.conn, Conn::Cluster(_)) {
            script.key(BUS_SEQ);
        }
        script
            .arg(Timestamp::now().as_millis())
            .invoke_async::<i64>(&mut self.conn())
            .await
            .map_err(err)?;
        Ok(())
    }
}

#[async_trait]
impl Transfer for RedisStore {
    async fn instance(&self) -> StoreResult<String> {
        // The server that holds `cr:users` (a Cluster's master of its slot) and the database.
        let info: String = self.on_primary_of("cr:users", redis::cmd("INFO").arg("server")).await?;
        let run = info
            .lines()
            .find_map(|l| l.strip_prefix("run_id:"))
            .ok_or(corrupt("INFO server"))?
            .trim();
        let db = redis::aio::ConnectionLike::get_db(&self.conn);
        Ok(format!("redis:{run}/{db}"))
    }

    async fn export(
        &self,
        kind: Kind,
        after: Option<&Cursor>,
        limit: usize,
        now: Timestamp,
    ) -> StoreResult<Page> {
        let limit = limit.max(1);
        match kind {
            Kind::Users => self.export_users(after, limit).await,
            Kind::Sessions => self.export_sessions(after, limit, now).await,
            Kind::ApiKeys => self.export_api_keys(after, limit).await,
            Kind::SigningKeys => self.export_signing_keys(after, limit).await,
            Kind::GrantUses => self.export_grant_uses(after, limit, now).await,
            Kind::GrantRevocations => self.export_revocations(after, limit, now).await,
            Kind::EventLogs => self.export_event_logs(after, limit, now).await,
            Kind::Audit => self.export_audit(after, limit).await,
        }
    }

    async fn import(&self, batch: &Batch, now: Timestamp) -> StoreResult<Imported> {
        let done = match batch {
            Batch::Users(users) => self.import_users(users).await?,
            Batch::Sessions(sessions) => self.import_sessions(sessions, now).await?,
            Batch::ApiKeys(keys) => one_by_one(keys, |k| self.import_api_key(k)).await?,
            Batch::SigningKeys(keys) => one_by_one(keys, |k| self.import_signing_key(k)).await?,
            Batch::GrantUses(uses) => one_by_one(uses, |g| self.import_grant_use(g)).await?,
            Batch::GrantRevocations(revocations) => {
                one_by_one(revocations, |r| self.import_revocation(r)).await?
            }
            Batch::EventLogs(logs) => one_by_one(logs, |l| self.import_event_log(l)).await?,
            Batch::Audit(events) => one_by_one(events, |e| self.add_audit(e)).await?,
        };
        if matches!(batch, Batch::Users(_) | Batch::Sessions(_)) && done.written > 0 {
            self.announce_all().await?;
        }
        Ok(done)
    }
}
