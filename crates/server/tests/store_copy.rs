//! `cloakroom store copy` end to end, through the real binary: a store's contents go SQLite →
//! PostgreSQL → Redis → SQLite, and at every hop a server started on the new store accepts the
//! cookies of the original logins (the same session, deadlines, CSRF token, data and user), keeps
//! a revoked session revoked and a redeemed grant used, and a second run adds nothing. A run
//! after changes copies the delta, revocations included; bad input fails cleanly. Each test
//! starts its own PostgreSQL and Redis on free ports.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::path::Path;
use std::process::Command;

use cloakroom_store_postgres::testing::PgServer;
use cloakroom_store_redis::testing::RedisServer;
use common::nodes::PASSWORD;
use common::process::{BIN, HttpLogin, Server, cli_store, http_login};
use serde_json::{Value, json};

/// `cloakroom store copy --json --from FROM --to TO` with `env`, in small pages (so that every
/// kind pages): exit code, report, stderr.
fn copy(from: &str, to: &str, env: &[(&str, &str)]) -> (i32, Value, String) {
    copy_paged(from, to, env, "7")
}

/// [`copy`] with pages of `page` records.
fn copy_paged(from: &str, to: &str, env: &[(&str, &str)], page: &str) -> (i32, Value, String) {
    let out = Command::new(BIN)
        .args(["store", "copy", "--json", "--page-size", page, "--from", from, "--to", to])
        .envs(env.iter().copied())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let report = serde_json::from_str(&stdout).unwrap_or(Value::Null);
    (out.status.code().unwrap_or(-1), report, String::from_utf8_lossy(&out.stderr).into_owned())
}

/// A copy that must succeed and verify; its report.
fn copied(from: &str, to: &str, env: &[(&str, &str)]) -> Value {
    copied_paged(from, to, env, "7")
}

/// [`copied`] with pages of `page` records.
fn copied_paged(from: &str, to: &str, env: &[(&str, &str)], page: &str) -> Value {
    let (code, report, err) = copy_paged(from, to, env, page);
    assert_eq!(code, 0, "copy {from} -> {to} failed: {err}\n{report}");
    assert_eq!(report["verified"], true, "{report}");
    report
}

/// One kind's line of a report.
fn kind<'r>(report: &'r Value, name: &str) -> &'r Value {
    report["kinds"].as_array().unwrap().iter().find(|k| k["kind"] == name).unwrap()
}

/// The number of records of each kind a report says it read, and how many it wrote.
fn counts(report: &Value) -> Vec<(String, u64, u64)> {
    report["kinds"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| {
            let name = k["kind"].as_str().unwrap().to_owned();
            (name, k["exported"].as_u64().unwrap(), k["written"].as_u64().unwrap())
        })
        .collect()
}

fn audit_count(store: &str) -> usize {
    let (code, out, err) = cli_store(store, &["audit", "--json", "--limit", "10000"], None);
    assert_eq!(code, 0, "{err}");
    serde_json::from_str::<Value>(&out).unwrap()["events"].as_array().unwrap().len()
}

/// What a client sees of its session on `base` with `who`'s cookie: the status and body of
/// `GET /v1/session`.
async fn session(http: &reqwest::Client, base: &str, who: &HttpLogin) -> (u16, Value) {
    let r = http.get(format!("{base}/v1/session")).header("cookie", &who.cookie).send().await;
    let r = r.unwrap();
    (r.status().as_u16(), r.json().await.unwrap_or(Value::Null))
}

async fn check(http: &reqwest::Client, base: &str, who: &HttpLogin) -> (u16, Option<String>) {
    let r = http.get(format!("{base}/v1/auth/check")).header("cookie", &who.cookie).send().await;
    let r = r.unwrap();
    let user = r.headers().get("x-cloakroom-username").map(|v| v.to_str().unwrap().to_owned());
    (r.status().as_u16(), user)
}

async fn data(http: &reqwest::Client, base: &str, who: &HttpLogin) -> (Value, String) {
    let r = http.get(format!("{base}/v1/session/data")).header("cookie", &who.cookie).send();
    let r = r.await.unwrap();
    assert_eq!(r.status(), 200);
    let etag = r.headers()["etag"].to_str().unwrap().to_owned();
    (r.json().await.unwrap(), etag)
}

async fn redeem(http: &reqwest::Client, base: &str, grant: &str) -> (u16, Value) {
    let r = http
        .post(format!("{base}/v1/grants/redeem"))
        .json(&json!({"token": grant, "audience": "files"}))
        .send()
        .await
        .unwrap();
    (r.status().as_u16(), r.json().await.unwrap_or(Value::Null))
}

/// What the original store showed, to compare every later store with.
struct Seen {
    kept: HttpLogin,
    revoked: HttpLogin,
    session: Value,
    data: (Value, String),
    grant: String,
}

/// A server on `store` with the shared grant key, logging to `dir/name.log`.
fn serve(store: &str, dir: &Path, name: &str, key: &str) -> Server {
    Server::start_env(store, &dir.join(format!("{name}.log")), &[], &[("CLOAKROOM_GRANT_KEY", key)])
}

/// The server on `store` accepts the original cookies exactly as the first store did.
async fn accepts_everything(
    http: &reqwest::Client,
    store: &str,
    dir: &Path,
    key: &str,
    seen: &Seen,
) {
    let server = serve(store, dir, store.split(':').next().unwrap(), key);
    let base = &server.base;
    let (status, now) = session(http, base, &seen.kept).await;
    assert_eq!(status, 200, "{store}: the original cookie works: {now}");
    let (was, is) = (&seen.session["session"], &now["session"]);
    for field in ["id", "created_at", "expires_at", "ip", "user_agent", "user"] {
        assert_eq!(is[field], was[field], "{store}: {field}");
    }
    // A touch may have moved the idle deadline on, never back.
    assert!(is["idle_expires_at"].as_str() >= was["idle_expires_at"].as_str(), "{store}");
    assert_eq!(now["csrf_token"], seen.session["csrf_token"], "{store}: the same CSRF token");
    assert_eq!(check(http, base, &seen.kept).await, (200, Some("alice".into())), "{store}");
    assert_eq!(data(http, base, &seen.kept).await, seen.data, "{store}: data and its version");
    assert_eq!(session(http, base, &seen.revoked).await.0, 401, "{store}: revoked stays revoked");
    assert_eq!(check(http, base, &seen.revoked).await.0, 401, "{store}");
    let (status, body) = redeem(http, base, &seen.grant).await;
    assert_eq!((status, body["error"]["code"].as_str()), (409, Some("grant_already_used")));
    // The copied password hash logs alice in; a wrong password is still refused.
    http_login(http, base, "alice", PASSWORD).await;
    let r = http
        .post(format!("{base}/v1/login"))
        .json(&json!({"username": "alice", "password": "not her password at all"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_to_postgres_to_redis_to_sqlite_logs_nobody_out() {
    let dir = tempfile::tempdir().unwrap();
    let first = format!("sqlite:{}", dir.path().join("first.db").display());
    let last = format!("sqlite:{}", dir.path().join("last.db").display());
    let pg = PgServer::start().await;
    let redis = RedisServer::start().await;
    let (postgres, redis_url) = (pg.url(), redis.url());
    let (code, key, _) = cli_store(&first, &["keys", "secret"], None);
    assert_eq!(code, 0);
    let key = key.trim().to_owned();
    let env = [("CLOAKROOM_GRANT_KEY", key.as_str())];
    let (code, out, err) = cli_store(
        &first,
        &["user", "add", "alice", "--role", "staff", "--password-stdin", "--create"],
        Some(&format!("{PASSWORD}\n")),
    );
    assert_eq!(code, 0, "{out}{err}");
    let (code, _, err) = cli_store(&first, &["apikey", "create", "billing"], None);
    assert_eq!(code, 0, "{err}");

    // On the first store: two logins, one then logged out; data written; a grant redeemed; a
    // failed login (a throttle window and an audit event).
    let http = reqwest::Client::new();
    let seen = {
        let server = serve(&first, dir.path(), "first", &key);
        let base = &server.base;
        let kept = http_login(&http, base, "alice", PASSWORD).await;
        let revoked = http_login(&http, base, "alice", PASSWORD).await;
        let r = revoked.write(&http, reqwest::Method::POST, format!("{base}/v1/logout"));
        assert_eq!(r.send().await.unwrap().status(), 204);
        let r = kept
            .write(&http, reqwest::Method::PUT, format!("{base}/v1/session/data"))
            .json(&json!({"cart": [3, 7], "theme": "dark"}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 204);
        let r = kept
            .write(&http, reqwest::Method::POST, format!("{base}/v1/grants"))
            .json(&json!({"audience": "files", "resource": "/q4.pdf", "ttl_seconds": 600}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 201);
        let grant = r.json::<Value>().await.unwrap()["token"].as_str().unwrap().to_owned();
        assert_eq!(redeem(&http, base, &grant).await.0, 200);
        let r = http
            .post(format!("{base}/v1/login"))
            .json(&json!({"username": "alice", "password": "wrong guess of a password"}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 401);
        let (status, session) = session(&http, base, &kept).await;
        assert_eq!(status, 200);
        let data = data(&http, base, &kept).await;
        assert_eq!(data.1, "\"2\"");
        Seen { kept, revoked, session, data, grant }
        // Writes stop here: the first server stops.
    };

    let mut from = first.clone();
    for to in [&postgres, &redis_url, &last] {
        let report = copied(&from, to, &env);
        eprintln!("{from} -> {to}: {report}");
        for (name, at_least) in [
            ("users", 1),
            ("sessions", 1),
            ("api_keys", 1),
            ("signing_keys", 1),
            ("grant_uses", 1),
            ("grant_revocations", 1),
            ("event_logs", 1),
            ("audit", 4),
        ] {
            let k = kind(&report, name);
            assert!(k["exported"].as_u64().unwrap() >= at_least, "{from} -> {to}: {name}: {k}");
            assert_eq!(k["exported"], k["written"], "{from} -> {to}: {name} all new: {k}");
        }
        // A second run writes nothing and doubles nothing.
        let again = copied(&from, to, &env);
        for (name, exported, written) in counts(&again) {
            assert_eq!(written, 0, "{from} -> {to}: {name} written again");
            assert_eq!(exported, kind(&report, &name)["exported"].as_u64().unwrap(), "{name}");
        }
        assert_eq!(audit_count(to), audit_count(&from), "{from} -> {to}: the audit log");
        assert_eq!(again["checksum"], report["checksum"], "the same records, the same checksum");

        accepts_everything(&http, to, dir.path(), &key, &seen).await;
        from = to.clone();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_run_copies_the_delta_and_revocations() {
    let dir = tempfile::tempdir().unwrap();
    let source = format!("sqlite:{}", dir.path().join("source.db").display());
    let redis = RedisServer::start().await;
    let destination = redis.url();
    let (code, out, err) = cli_store(
        &source,
        &["user", "add", "alice", "--password-stdin", "--create"],
        Some(&format!("{PASSWORD}\n")),
    );
    assert_eq!(code, 0, "{out}{err}");
    let http = reqwest::Client::new();
    let server = Server::start_store(&source, &dir.path().join("source.log"), &[]);
    let base = server.base.clone();
    let stays = http_login(&http, &base, "alice", PASSWORD).await;
    let leaves = http_login(&http, &base, "alice", PASSWORD).await;
    let (code, _, err) = cli_store(&source, &["apikey", "create", "old"], None);
    assert_eq!(code, 0, "{err}");

    // A first pass while the server still serves.
    let (code, first, err) = copy(&source, &destination, &[]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(kind(&first, "sessions")["written"], 2);

    // Meanwhile: a logout, a new login, new data, an API key revoked.
    let r = leaves.write(&http, reqwest::Method::POST, format!("{base}/v1/logout"));
    assert_eq!(r.send().await.unwrap().status(), 204);
    let newer = http_login(&http, &base, "alice", PASSWORD).await;
    let r = stays
        .write(&http, reqwest::Method::PUT, format!("{base}/v1/session/data"))
        .json(&json!({"step": 2}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 204);
    let (code, _, err) = cli_store(&source, &["apikey", "revoke", "old"], None);
    assert_eq!(code, 0, "{err}");
    drop(server);

    // Writes stopped: the second run brings the rest and verifies.
    let second = copied(&source, &destination, &[]);
    let sessions = kind(&second, "sessions");
    assert_eq!((sessions["exported"].as_u64(), sessions["written"].as_u64()), (Some(2), Some(2)));
    assert_eq!(sessions["removed"], 1, "the logout between the runs: {second}");
    assert_eq!(kind(&second, "api_keys")["removed"], 1);
    assert_eq!(kind(&second, "users")["written"], 0);

    let server = Server::start_store(&destination, &dir.path().join("destination.log"), &[]);
    let base = &server.base;
    assert_eq!(check(&http, base, &stays).await.0, 200);
    assert_eq!(check(&http, base, &newer).await.0, 200, "the login after the first run");
    assert_eq!(check(&http, base, &leaves).await.0, 401, "logged out after the first run");
    assert_eq!(data(&http, base, &stays).await.0, json!({"step": 2}));
}

/// Runs `store copy` with `args` after it: exit code and standard error.
fn copy_args(args: &[&str]) -> (i32, String) {
    let out = Command::new(BIN).args(["store", "copy"]).args(args).output().unwrap();
    (out.status.code().unwrap_or(-1), String::from_utf8_lossy(&out.stderr).into_owned())
}

#[test]
fn bad_input_fails_with_a_message_and_writes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("a.db");
    let a = format!("sqlite:{}", path.display());
    let (code, _, err) =
        cli_store(&a, &["--create", "user", "add", "alice", "--no-password"], None);
    assert_eq!(code, 0, "{err}");
    let b = format!("sqlite:{}", dir.path().join("b.db").display());
    let refuse = |args: &[&str], says: &str| {
        let (code, err) = copy_args(args);
        assert_eq!(code, 1, "{args:?}: {err}");
        assert!(err.contains(says), "{args:?}: {err}");
        assert!(!err.contains("panicked"), "{err}");
    };
    refuse(&["--from", &a, "--to", &a], "the same store");
    let other_spelling = format!("sqlite://{}", path.display());
    refuse(&["--from", &a, "--to", &other_spelling], "the same store");
    refuse(&["--from", "sqlite:", "--to", &b], "names no file");
    refuse(&["--from", &format!("{a}.missing"), "--to", &b], "no store at");
    refuse(&["--from", "mysql://localhost/x", "--to", &b], "unsupported store URL");
    refuse(&["--from", &a, "--to", "redis://127.0.0.1:1"], "--to: connecting to the store");
    refuse(
        &["--from", &a, "--to", "postgres://postgres@127.0.0.1:1/x?connect_timeout=1"],
        "--to: connecting to the store",
    );
    let (code, err) = copy_args(&["--from", &a]);
    assert_eq!(code, 2, "a usage error: {err}");
    assert!(!dir.path().join("b.db").exists(), "nothing was made for a refused copy");

    // A destination that holds another alice is not a copy of this source: refused before
    // anything is written.
    let (code, _, err) =
        cli_store(&b, &["--create", "user", "add", "alice", "--no-password"], None);
    assert_eq!(code, 0, "{err}");
    let (code, _, _) = cli_store(&a, &["apikey", "create", "k"], None);
    assert_eq!(code, 0);
    refuse(&["--from", &a, "--to", &b], "not an earlier copy of this source");
    let (_, keys, _) = cli_store(&b, &["apikey", "list", "--json"], None);
    assert_eq!(serde_json::from_str::<Value>(&keys).unwrap()["api_keys"], json!([]));

    // Something the source cannot account for on the destination fails the verification.
    let c = format!("sqlite:{}", dir.path().join("c.db").display());
    let (code, _, err) = copy(&a, &c, &[]);
    assert_eq!(code, 0, "{err}");
    // (Enabling an enabled user changes nothing and is not audited; ending a user's sessions is,
    // even when there were none.)
    let (code, _, _) = cli_store(&c, &["session", "revoke", "--user", "alice"], None);
    assert_eq!(code, 0, "an audit event only the destination has");
    let (code, report, err) = copy(&a, &c, &[]);
    assert_eq!(code, 1, "{err}");
    assert_eq!(report["verified"], false);
    assert!(err.contains("verification failed") && err.contains("audit events"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_embedded_store_brings_its_grant_key_file_along() {
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = (dir.path().join("a.db"), dir.path().join("b.db"));
    let (from, to) = (format!("sqlite:{}", a.display()), format!("sqlite:{}", b.display()));
    let http = reqwest::Client::new();
    let keys = async |base: &str| -> Value {
        http.get(format!("{base}/v1/keys")).send().await.unwrap().json().await.unwrap()
    };
    // The first start makes the key file and a signing key sealed with it.
    let server = Server::start_store(&from, &dir.path().join("a.log"), &[]);
    let published = keys(&server.base).await;
    assert_eq!(published["keys"].as_array().unwrap().len(), 1, "{published}");
    drop(server);
    let report = copied(&from, &to, &[]);
    assert!(report["notes"][0].as_str().unwrap().starts_with("copied the grant key file"));
    let copied_key = std::fs::read(dir.path().join("b.db.grant-key")).unwrap();
    assert_eq!(copied_key, std::fs::read(dir.path().join("a.db.grant-key")).unwrap());
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        let mode = std::fs::metadata(dir.path().join("b.db.grant-key")).unwrap().permissions();
        assert_eq!(mode.mode() & 0o777, 0o600);
    }
    // A server on the copy opens the signing keys and publishes the same ones.
    let server = Server::start_store(&to, &dir.path().join("b.log"), &[]);
    assert_eq!(keys(&server.base).await, published);
    // Into a shared store, the report says which key the new servers need.
    let redis = RedisServer::start().await;
    let report = copied(&from, &redis.url(), &[]);
    let note = report["notes"][0].as_str().unwrap();
    assert!(note.contains("a.db.grant-key") && note.contains("grant_key"), "{note}");
}

/// Throughput of `store copy` (docs/benchmarks.md): 20,000 sessions of 2,000 users on SQLite,
/// copied by the binary into a fresh PostgreSQL and a fresh Redis, then once more (nothing to
/// write). Run with
/// `cargo nextest run --release -p cloakroom-server --test store_copy --run-ignored only --no-capture`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a measurement: run by hand, see docs/benchmarks.md"]
async fn copy_throughput() {
    use cloakroom_core::Timestamp;
    use cloakroom_core::export::{self, Batch};
    use cloakroom_core::store::prelude::*;

    const USERS: usize = 2_000;
    const PER_USER: usize = 10;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("source.db");
    let source = format!("sqlite:{}", path.display());
    let store = cloakroom_store_sqlite::SqliteStore::open(path.to_str().unwrap()).await.unwrap();
    let transfer = store.transfer().unwrap();
    let now = Timestamp::now();
    let id = |prefix: &str, n: usize| format!("{prefix}{n:022}");
    let users: Vec<export::User> = (0..USERS)
        .map(|u| export::User {
            id: id("usr_", u),
            username: format!("user{u}"),
            password_hash: Some("$argon2id$v=19$m=19456,t=2,p=1$c2FsdHNhbHQ$aGFzaA".into()),
            roles: vec!["staff".into()],
            disabled: false,
            created_at: now.as_millis(),
            updated_at: now.as_millis(),
            privileges_changed_at: 0,
        })
        .collect();
    for page in users.chunks(1000) {
        transfer.import(&Batch::Users(page.to_vec()), now).await.unwrap();
    }
    let sessions: Vec<export::Session> = (0..USERS * PER_USER)
        .map(|n| {
            let hash =
                cloakroom_core::Token::generate(cloakroom_core::SecretKind::Session).unwrap();
            export::Session {
                id: id("ses_", n),
                user_id: id("usr_", n % USERS),
                token_hash: hash.hash().to_hex(),
                csrf: "c".repeat(43),
                created_at: now.as_millis(),
                last_seen_at: now.as_millis(),
                token_issued_at: now.as_millis(),
                idle_expires_at: now.as_millis() + 1_800_000,
                expires_at: now.as_millis() + 43_200_000,
                ip: Some("192.0.2.1".into()),
                user_agent: Some("Mozilla/5.0 (X11; Linux x86_64) Firefox/140.0".into()),
                audience: None,
                data: r#"{"cart":[3,7],"theme":"dark"}"#.into(),
                data_version: 2,
            }
        })
        .collect();
    for page in sessions.chunks(1000) {
        transfer.import(&Batch::Sessions(page.to_vec()), now).await.unwrap();
    }
    drop(store);

    let pg = PgServer::start().await;
    let redis = RedisServer::start().await;
    for (name, to) in [("PostgreSQL", pg.url()), ("Redis", redis.url())] {
        for run in ["first run", "second run"] {
            // The default page size.
            let report = copied_paged(&source, &to, &[], "1000");
            let s = kind(&report, "sessions");
            assert_eq!(s["exported"], USERS * PER_USER);
            eprintln!(
                "SQLite -> {name}, {run}: sessions {:.2} s ({:.0} sessions/s; {} written), \
                 whole copy {:.2} s, with verification {:.2} s",
                s["seconds"].as_f64().unwrap(),
                report["sessions_per_second"].as_f64().unwrap(),
                s["written"],
                report["copy_seconds"].as_f64().unwrap(),
                report["seconds"].as_f64().unwrap(),
            );
        }
    }
}
