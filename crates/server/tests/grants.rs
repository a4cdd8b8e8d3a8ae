//! Grants end to end, through the real `cloakroom` binary: issue, redeem once, exchange for a
//! scoped session, keys and rotation, revocations pushed to an offline verifier, signing keys
//! sealed at rest; and `examples/download-server` (in process, over real HTTP) serving a file
//! once per grant and refusing replays, expired grants, other audiences and revoked users.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::sync::Arc;
use std::time::Duration;

use cloakroom_download_server::Files;
use cloakroom_grant::Verifier;
use cloakroom_store_redis::testing::RedisServer;
use common::process::{BIN, HttpLogin, Server, cli, cli_store, http_login, until};
use serde_json::{Value, json};

const PASSWORD: &str = "correct horse battery staple";

type Login = HttpLogin;

async fn login(http: &reqwest::Client, base: &str) -> Login {
    http_login(http, base, "alice", PASSWORD).await
}

async fn grant(http: &reqwest::Client, base: &str, who: &Login, body: Value) -> (u16, Value) {
    let r = who
        .write(http, reqwest::Method::POST, format!("{base}/v1/grants"))
        .json(&body)
        .send()
        .await
        .unwrap();
    (r.status().as_u16(), r.json().await.unwrap_or(Value::Null))
}

async fn download_grant(http: &reqwest::Client, base: &str, who: &Login, file: &str) -> String {
    let (status, body) = grant(
        http,
        base,
        who,
        json!({"audience": "files", "action": "download", "resource": file}),
    )
    .await;
    assert_eq!(status, 201, "{body}");
    body["token"].as_str().unwrap().to_owned()
}

async fn post(http: &reqwest::Client, url: String, body: Value) -> (u16, Value) {
    let r = http.post(url).json(&body).send().await.unwrap();
    (r.status().as_u16(), r.json().await.unwrap_or(Value::Null))
}

fn add_alice(store: &str) {
    let (code, out, err) = cli_store(
        store,
        &["user", "add", "alice", "--password-stdin", "--create"],
        Some(&format!("{PASSWORD}\n")),
    );
    assert_eq!(code, 0, "{out}{err}");
}

/// A server on a fresh SQLite file with alice logged in: (dir, db path, server, client, login).
async fn embedded() -> (tempfile::TempDir, std::path::PathBuf, Server, reqwest::Client, Login) {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("c.db");
    add_alice(&format!("sqlite:{}", db.display()));
    let server = Server::start(&db, &dir.path().join("server.log"));
    let http = reqwest::Client::new();
    let alice = login(&http, &server.base).await;
    (dir, db, server, http, alice)
}

/// The download server, in process on a free port, following `base`.
struct DownloadServer {
    url: String,
    verifier: Arc<Verifier>,
    _files: tempfile::TempDir,
}

async fn download_server(base: &str) -> DownloadServer {
    let files = tempfile::tempdir().unwrap();
    std::fs::write(files.path().join("report.txt"), "quarterly numbers").unwrap();
    std::fs::write(files.path().join("other.txt"), "not yours").unwrap();
    let verifier = cloakroom_download_server::follow(base, "files");
    let app = cloakroom_download_server::app(Files {
        verifier: Arc::clone(&verifier),
        root: files.path().to_owned(),
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    // Grants are refused until the revocation feed is live.
    until(Duration::from_secs(5), async || verifier.feed_live() == Some(true)).await;
    DownloadServer { url, verifier, _files: files }
}

async fn fetch(
    http: &reqwest::Client,
    ds: &DownloadServer,
    file: &str,
    token: &str,
) -> (u16, String) {
    let r = http.get(format!("{}/files{file}?grant={token}", ds.url)).send().await.unwrap();
    (r.status().as_u16(), r.text().await.unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_download_server_serves_a_file_once_per_grant() {
    let (_dir, db, server, http, alice) = embedded().await;
    let base = server.base.clone();
    let ds = download_server(&base).await;

    // Once: 200 with the file. Again: 403.
    let token = download_grant(&http, &base, &alice, "/report.txt").await;
    assert_eq!(fetch(&http, &ds, "/report.txt", &token).await, (200, "quarterly numbers".into()));
    assert_eq!(fetch(&http, &ds, "/report.txt", &token).await.0, 403, "replay");

    // A grant for one file opens no other.
    let token = download_grant(&http, &base, &alice, "/report.txt").await;
    assert_eq!(fetch(&http, &ds, "/other.txt", &token).await.0, 403);
    // ... and was not used up by that attempt.
    assert_eq!(fetch(&http, &ds, "/report.txt", &token).await.0, 200);

    // Expired.
    let (status, body) = grant(
        &http,
        &base,
        &alice,
        json!({"audience": "files", "action": "download", "resource": "/report.txt", "ttl_seconds": 1}),
    )
    .await;
    assert_eq!(status, 201);
    tokio::time::sleep(Duration::from_millis(1100)).await;
    assert_eq!(fetch(&http, &ds, "/report.txt", body["token"].as_str().unwrap()).await.0, 403);

    // Another audience.
    let (status, body) = grant(
        &http,
        &base,
        &alice,
        json!({"audience": "billing", "action": "download", "resource": "/report.txt"}),
    )
    .await;
    assert_eq!(status, 201);
    assert_eq!(fetch(&http, &ds, "/report.txt", body["token"].as_str().unwrap()).await.0, 403);

    // No grant, garbage, a session token: all refused.
    assert_eq!(
        http.get(format!("{}/files/report.txt", ds.url)).send().await.unwrap().status(),
        401
    );
    assert_eq!(fetch(&http, &ds, "/report.txt", "v4.public.garbage").await.0, 403);

    // The user is revoked (every session, through the CLI): the outstanding grant dies at the
    // download server within a second, pushed over /v1/revocations.
    let pending = download_grant(&http, &base, &alice, "/report.txt").await;
    assert!(ds.verifier.verify(&pending).is_ok());
    let (code, _, err) = cli(&db, &["session", "revoke", "--user", "alice"], None);
    assert_eq!(code, 0, "{err}");
    let lag = until(Duration::from_secs(1), async || ds.verifier.verify(&pending).is_err()).await;
    eprintln!("user revocation reached the verifier after {lag:?}");
    assert_eq!(fetch(&http, &ds, "/report.txt", &pending).await.0, 403);

    // The same for a password change and for disabling the user (both through the CLI).
    let new_password = "a different long secret";
    for (args, stdin) in [
        (vec!["user", "passwd", "alice", "--password-stdin"], Some(format!("{new_password}\n"))),
        (vec!["user", "disable", "alice"], None),
    ] {
        // Log in again with whichever password is current (the previous step revoked the session).
        let password = if args[1] == "passwd" { PASSWORD } else { new_password };
        let again = http_login(&http, &base, "alice", password).await;
        let pending = download_grant(&http, &base, &again, "/report.txt").await;
        assert!(ds.verifier.verify(&pending).is_ok());
        let (code, _, err) = cli(&db, &args, stdin.as_deref());
        assert_eq!(code, 0, "{err}");
        until(Duration::from_secs(1), async || ds.verifier.verify(&pending).is_err()).await;
        assert_eq!(fetch(&http, &ds, "/report.txt", &pending).await.0, 403, "{args:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redeem_once_and_exchange_for_a_scoped_session() {
    let (_dir, db, server, http, alice) = embedded().await;
    let base = server.base.clone();

    // Issuing needs the CSRF token with the cookie, and sane parameters.
    let r = http
        .post(format!("{base}/v1/grants"))
        .header("cookie", &alice.cookie)
        .json(&json!({"audience": "files"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    for bad in [
        json!({"audience": ""}),
        json!({"audience": "files", "ttl_seconds": 601}),
        json!({"audience": "files", "ttl_seconds": 0}),
        json!({"audience": "files", "extra": 1}),
        json!({"audience": "files", "username": "bob"}),
    ] {
        assert_eq!(grant(&http, &base, &alice, bad.clone()).await.0, 400, "{bad}");
    }
    assert_eq!(
        http.post(format!("{base}/v1/grants"))
            .json(&json!({"audience": "x"}))
            .send()
            .await
            .unwrap()
            .status(),
        401
    );

    let (status, issued) =
        grant(&http, &base, &alice, json!({"audience": "app2", "resource": "r1"})).await;
    assert_eq!(status, 201);
    let token = issued["token"].as_str().unwrap();
    assert!(token.starts_with("v4.public."));
    assert!(issued["id"].as_str().unwrap().starts_with("grt_"));

    // Wrong audience, garbage: 401 invalid_grant, and the grant is not used up.
    let (s, body) = post(
        &http,
        format!("{base}/v1/grants/redeem"),
        json!({"token": token, "audience": "files"}),
    )
    .await;
    assert_eq!((s, body["error"]["code"].as_str()), (401, Some("invalid_grant")));
    let (s, _) = post(
        &http,
        format!("{base}/v1/grants/redeem"),
        json!({"token": "v4.public.AAAA", "audience": "app2"}),
    )
    .await;
    assert_eq!(s, 401);
    let (s, body) = post(&http, format!("{base}/v1/grants/redeem"), json!({"token": 7})).await;
    assert_eq!(s, 400, "{body}");

    // Exactly once.
    let (s, claims) = post(
        &http,
        format!("{base}/v1/grants/redeem"),
        json!({"token": token, "audience": "app2"}),
    )
    .await;
    assert_eq!(s, 200);
    assert_eq!(claims["user"]["username"], "alice");
    assert_eq!(claims["resource"], "r1");
    assert_eq!(claims["id"], issued["id"]);
    let (s, body) = post(
        &http,
        format!("{base}/v1/grants/redeem"),
        json!({"token": token, "audience": "app2"}),
    )
    .await;
    assert_eq!((s, body["error"]["code"].as_str()), (409, Some("grant_already_used")));

    // Exchange: a session of app2's own, valid for app2 only.
    let (_, issued) = grant(&http, &base, &alice, json!({"audience": "app2"})).await;
    let token = issued["token"].as_str().unwrap();
    let (s, body) = post(
        &http,
        format!("{base}/v1/grants/exchange"),
        json!({"token": token, "audience": "app2"}),
    )
    .await;
    assert_eq!(s, 201, "{body}");
    assert_eq!(body["session"]["audience"], "app2");
    let scoped = body["token"].as_str().unwrap().to_owned();
    let (s, _) = post(
        &http,
        format!("{base}/v1/grants/exchange"),
        json!({"token": token, "audience": "app2"}),
    )
    .await;
    assert_eq!(s, 409);
    let bearer = |url: String| http.get(url).bearer_auth(&scoped).send();
    // Not a session for Cloakroom itself, nor for other apps behind the proxy...
    assert_eq!(bearer(format!("{base}/v1/session")).await.unwrap().status(), 401);
    assert_eq!(bearer(format!("{base}/v1/auth/check")).await.unwrap().status(), 401);
    assert_eq!(bearer(format!("{base}/v1/auth/check?audience=files")).await.unwrap().status(), 401);
    // ... but for app2.
    let r = bearer(format!("{base}/v1/auth/check?audience=app2")).await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["x-cloakroom-username"], "alice");
    // And it cannot mint grants.
    let r = http
        .post(format!("{base}/v1/grants"))
        .bearer_auth(&scoped)
        .json(&json!({"audience": "files"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);

    // The service API validates it for its audience only.
    let (code, key, _) = cli(&db, &["apikey", "create", "svc"], None);
    assert_eq!(code, 0);
    let key = key.trim();
    let validate = async |body: Value| {
        http.post(format!("{base}/v1/admin/sessions/validate"))
            .bearer_auth(key)
            .json(&body)
            .send()
            .await
            .unwrap()
            .status()
            .as_u16()
    };
    assert_eq!(validate(json!({"token": scoped})).await, 401);
    assert_eq!(validate(json!({"token": scoped, "audience": "app2"})).await, 200);

    // An API key issues grants for a named, active user.
    let as_service = async |body: Value| {
        let r = http.post(format!("{base}/v1/grants")).bearer_auth(key).json(&body).send();
        r.await.unwrap().status().as_u16()
    };
    assert_eq!(as_service(json!({"audience": "files", "username": "alice"})).await, 201);
    assert_eq!(as_service(json!({"audience": "files"})).await, 400);
    assert_eq!(as_service(json!({"audience": "files", "username": "nobody"})).await, 404);

    // A disabled user's grants can no longer be redeemed or exchanged.
    let (_, issued) = grant(&http, &base, &alice, json!({"audience": "app2"})).await;
    let (code, _, _) = cli(&db, &["user", "disable", "alice"], None);
    assert_eq!(code, 0);
    let (s, _) = post(
        &http,
        format!("{base}/v1/grants/exchange"),
        json!({"token": issued["token"], "audience": "app2"}),
    )
    .await;
    assert_eq!(s, 401);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_are_published_rotated_and_sealed_at_rest() {
    let (dir, db, server, http, alice) = embedded().await;
    let store = format!("sqlite:{}", db.display());
    let base = server.base.clone();
    let ds = download_server(&base).await;

    let keys: Value =
        http.get(format!("{base}/v1/keys")).send().await.unwrap().json().await.unwrap();
    let first = keys["keys"].as_array().unwrap().clone();
    assert_eq!(first.len(), 1);
    assert!(first[0]["paserk"].as_str().unwrap().starts_with("k4.public."));
    assert!(first[0]["id"].as_str().unwrap().starts_with("k4.pid."));
    let old_grant = download_grant(&http, &base, &alice, "/report.txt").await;

    // Rotate through the CLI: the new key is published at once (and pushed to verifiers as a
    // `keys` event); the old one keeps verifying its grants.
    let (code, out, err) = cli(&db, &["keys", "rotate"], None);
    assert_eq!(code, 0, "{out}{err}");
    let keys: Value =
        http.get(format!("{base}/v1/keys")).send().await.unwrap().json().await.unwrap();
    assert_eq!(keys["keys"].as_array().unwrap().len(), 2);
    until(Duration::from_secs(5), async || ds.verifier.key_ids().len() == 2).await;
    assert_eq!(fetch(&http, &ds, "/report.txt", &old_grant).await.0, 200);
    let (code, out, _) = cli(&db, &["keys", "list", "--json"], None);
    assert_eq!(code, 0);
    let listed: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(listed["keys"].as_array().unwrap().len(), 2);

    // The database holds no usable secret key: only sealed ones.
    drop(server);
    // The database and its write-ahead log, whichever holds the pages now.
    let mut raw = std::fs::read(&db).unwrap();
    raw.extend(std::fs::read(dir.path().join("c.db-wal")).unwrap_or_default());
    if let Some(at) = raw.windows(10).position(|w| w == b"k4.secret.") {
        let context =
            String::from_utf8_lossy(&raw[at.saturating_sub(200)..(at + 100).min(raw.len())]);
        panic!("a signing key in the clear: {context}");
    }
    let key_file = dir.path().join("c.db.grant-key");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        assert_eq!(std::fs::metadata(&key_file).unwrap().permissions().mode() & 0o777, 0o600);
    }
    // Another grant_key cannot open them: the server refuses to start, and says why.
    let other = "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA";
    let out = std::process::Command::new(BIN)
        .args(["serve", "--listen", "127.0.0.1:0", "--store", &store])
        .env("CLOAKROOM_GRANT_KEY", other)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("grant_key"), "{stderr}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_nodes_on_redis_redeem_each_grant_once_and_share_revocations() {
    let redis = RedisServer::start().await;
    let store = redis.url();
    let dir = tempfile::tempdir().unwrap();
    add_alice(&store);
    let (code, secret, _) = cli_store(&store, &["keys", "secret"], None);
    assert_eq!(code, 0);
    let env = [("CLOAKROOM_GRANT_KEY", secret.trim())];
    let a = Server::start_env(&store, &dir.path().join("a.log"), &[], &env);
    let b = Server::start_env(&store, &dir.path().join("b.log"), &[], &env);
    let http = reqwest::Client::new();

    // Both nodes publish the same keys.
    let keys = async |base: &str| -> Value {
        http.get(format!("{base}/v1/keys")).send().await.unwrap().json().await.unwrap()
    };
    assert_eq!(keys(&a.base).await, keys(&b.base).await);

    // Racing redemptions on two nodes: exactly one wins, every time.
    let alice = login(&http, &a.base).await;
    for _ in 0..10 {
        let (_, issued) = grant(&http, &b.base, &alice, json!({"audience": "app"})).await;
        let body = json!({"token": issued["token"], "audience": "app"});
        let (ra, rb) = tokio::join!(
            post(&http, format!("{}/v1/grants/redeem", a.base), body.clone()),
            post(&http, format!("{}/v1/grants/redeem", b.base), body.clone()),
        );
        let mut statuses = [ra.0, rb.0];
        statuses.sort_unstable();
        assert_eq!(statuses, [200, 409]);
    }

    // A verifier following node A hears of a revocation made through node B.
    let ds = download_server(&a.base).await;
    let pending = download_grant(&http, &a.base, &alice, "/report.txt").await;
    assert!(ds.verifier.verify(&pending).is_ok());
    let r = alice
        .write(&http, reqwest::Method::POST, format!("{}/v1/sessions/revoke-others", b.base))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let lag = until(Duration::from_secs(1), async || ds.verifier.verify(&pending).is_err()).await;
    eprintln!("revocation via node B reached A's verifier after {lag:?}");

    // Without grant_key on a shared store, grants are off and say so.
    let c = Server::start_store(&store, &dir.path().join("c.log"), &[]);
    let (s, body) = grant(&http, &c.base, &alice, json!({"audience": "app"})).await;
    assert_eq!((s, body["error"]["code"].as_str()), (503, Some("grants_not_configured")));
}
