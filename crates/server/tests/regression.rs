//! Regression tests for the smaller holes a red team found (issue 12, section 6), through the
//! router (`oneshot`) and the real `cloakroom` binary. Each test is named after the hole it pins.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::io::Read as _;
use std::process::{Command, Stdio};
use std::sync::Arc;

use axum::body::Body;
use axum::http::{Method, StatusCode, header};
use cloakroom_core::manager::ClientInfo;
use cloakroom_core::password::Cost;
use cloakroom_core::store::prelude::*;
use cloakroom_core::user::UserChange;
use cloakroom_core::{Role, Username};
use cloakroom_server::config::RawConfig;
use cloakroom_store_sqlite::SqliteStore;
use common::process::{BIN, cli};
use common::*;
use serde_json::{Value, json};

// ---------------------------------------------------------------- 1. X-Forwarded-For

/// A login from `peer` with these `X-Forwarded-For` headers; the IP its session recorded.
async fn recorded_ip(h: &Harness, peer: &str, forwarded: &[&str]) -> String {
    let body = json!({"username": "alice", "password": PASSWORD});
    let mut r = json_req(Method::POST, "/v1/login", body);
    let peer = std::net::SocketAddr::new(peer.parse().unwrap(), 40000);
    r.extensions_mut().insert(axum::extract::ConnectInfo(peer));
    for value in forwarded {
        r.headers_mut().append("x-forwarded-for", value.parse().unwrap());
    }
    let reply = h.send(r).await;
    assert_eq!(reply.status, StatusCode::OK);
    reply.json()["session"]["ip"].as_str().unwrap().to_owned()
}

#[tokio::test]
async fn forwarded_for_with_an_unparsable_hop_falls_back_to_the_peer() {
    let raw = RawConfig { trusted_proxies: Some(vec!["10.0.0.1".into()]), ..Default::default() };
    let h = harness_with(raw).await;
    h.add_user("alice", &[]).await;
    // The attacker wrote 6.6.6.6; a hop that is no bare address must not let it through.
    for hop in ["203.0.113.9:4711", "unknown", "[2001:db8::1]:443"] {
        let ip = recorded_ip(&h, "10.0.0.1", &[&format!("6.6.6.6, {hop}")]).await;
        assert_eq!(ip, "10.0.0.1", "{hop}");
    }
    // Several headers are one list, walked from the right.
    let ip = recorded_ip(&h, "10.0.0.1", &["6.6.6.6", "203.0.113.9"]).await;
    assert_eq!(ip, "203.0.113.9");
}

#[tokio::test]
async fn trusted_proxies_accept_networks() {
    let nets = vec!["10.0.0.0/8".into(), "fd00::/8".into()];
    let h = harness_with(RawConfig { trusted_proxies: Some(nets), ..Default::default() }).await;
    h.add_user("alice", &[]).await;
    let ip = recorded_ip(&h, "10.2.3.4", &["6.6.6.6, 203.0.113.9, 10.9.8.7"]).await;
    assert_eq!(ip, "203.0.113.9");
    let ip = recorded_ip(&h, "fd00::1", &["6.6.6.6, 2001:db8::7"]).await;
    assert_eq!(ip, "2001:db8::7");
    // Outside the networks, the header is not believed.
    let ip = recorded_ip(&h, "192.0.2.1", &["203.0.113.9"]).await;
    assert_eq!(ip, "192.0.2.1");
}

// ---------------------------------------------------------------- 2. logout of a scoped session

#[tokio::test]
async fn logout_with_an_exchanged_session_ends_it() {
    let h = harness().await;
    h.add_user("alice", &[]).await;
    let b = h.login("alice").await;
    let r = h.send(b.send(Method::POST, "/v1/grants", Some(json!({"audience": "app2"})))).await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", String::from_utf8_lossy(&r.body));
    let grant = r.json()["token"].as_str().unwrap().to_owned();
    let body = json!({"token": grant, "audience": "app2"});
    let r = h.send(json_req(Method::POST, "/v1/grants/exchange", body)).await;
    assert_eq!(r.status, StatusCode::CREATED);
    let scoped = r.json()["token"].as_str().unwrap().to_owned();
    let bearer = |method: Method, uri: &str| {
        req(method, uri)
            .header(header::AUTHORIZATION, format!("Bearer {scoped}"))
            .body(Body::empty())
            .unwrap()
    };
    assert_eq!(h.send(bearer(Method::GET, "/v1/auth/check?audience=app2")).await.status, 200);
    assert_eq!(h.send(bearer(Method::POST, "/v1/logout")).await.status, 204);
    let r = h.send(bearer(Method::GET, "/v1/auth/check?audience=app2")).await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    // The login session it came from is another session: it lives on.
    assert_eq!(h.send(b.get("/v1/session")).await.status, StatusCode::OK);
}

// ---------------------------------------------------------------- 3. unbounded roles

fn roles(n: usize, len: usize) -> Vec<String> {
    (0..n).map(|i| format!("{i:0len$}")).collect()
}

#[tokio::test]
async fn more_than_32_roles_or_a_role_over_64_bytes_is_refused() {
    let h = harness().await;
    let key = h.api_key().await;
    let put = |name: &str, body: Value| {
        req(Method::PUT, &format!("/v1/admin/users/{name}"))
            .header(header::AUTHORIZATION, format!("Bearer {key}"))
            .header(header::CONTENT_TYPE, "application/json")
            .body(Body::from(body.to_string()))
            .unwrap()
    };
    let r = h.send(put("bob", json!({"roles": roles(33, 64)}))).await;
    assert_eq!((r.status, r.code().as_str()), (StatusCode::BAD_REQUEST, "invalid_request"));
    assert!(r.json()["error"]["message"].as_str().unwrap().contains("at most 32 roles"));
    let r = h.send(put("bob", json!({"roles": roles(1, 65)}))).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    // The most there may be: created.
    let r = h.send(put("bob", json!({"roles": roles(32, 64)}))).await;
    assert_eq!(r.status, StatusCode::CREATED);
    // An update past the bound changes nothing, the password included.
    let body = json!({"roles": roles(40, 8), "password": "another fine password"});
    assert_eq!(h.send(put("bob", body)).await.status, StatusCode::BAD_REQUEST);
    let user = h.state.manager.user(&Username::parse("bob").unwrap()).await.unwrap().unwrap();
    assert_eq!(user.roles.len(), 32);
    assert!(!user.has_password);
}

#[test]
fn the_cli_refuses_more_than_32_roles() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("c.db");
    let many = roles(33, 3);
    let mut args = vec!["user", "add", "bob", "--no-password", "--create"];
    for r in &many {
        args.extend(["--role", r.as_str()]);
    }
    let (code, _, err) = cli(&db, &args, None);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("at most 32 roles"), "{err}");
    let (code, _, err) = cli(&db, &["user", "add", "bob", "--no-password"], None);
    assert_eq!(code, 0, "{err}");
    let mut args = vec!["user", "role", "bob"];
    for r in &many {
        args.extend(["--add", r.as_str()]);
    }
    let (code, _, err) = cli(&db, &args, None);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("at most 32 roles"), "{err}");
    assert!(!err.contains("panicked"), "{err}");
}

/// A store written before roles were bounded: 1,100 roles of 64 bytes (over 64 KiB, more than a
/// session's compact form can hold).
#[tokio::test]
async fn a_stored_user_with_roles_past_the_session_slot_never_panics() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("c.db");
    let (state, store) = state_on(&db).await;
    state.manager.create_user(Username::parse("alice").unwrap(), None, vec![]).await.unwrap();
    let alice = state.manager.user(&Username::parse("alice").unwrap()).await.unwrap().unwrap();
    let huge = roles(1100, 64).iter().map(|r| Role::from_stored(r.clone())).collect();
    let change = UserChange { roles: Some(huge), ..UserChange::default() };
    store.update_user(&alice.id, &change, None).await.unwrap();
    let issued = state.manager.create(&alice, ClientInfo::default(), None).await.unwrap();
    // The check fails closed, as for any record it cannot represent: 503, never a panic or a pass.
    let app = cloakroom_server::app(state.clone());
    let r = tower::ServiceExt::oneshot(
        app,
        req(Method::GET, "/v1/auth/check")
            .header(header::AUTHORIZATION, format!("Bearer {}", issued.token.expose()))
            .body(Body::empty())
            .unwrap(),
    )
    .await
    .unwrap();
    assert_eq!(r.status(), StatusCode::SERVICE_UNAVAILABLE);
    // The CLI lists the user, the cell cut short.
    let (code, out, err) = cli(&db, &["user", "list"], None);
    assert_eq!(code, 0, "{err}");
    assert!(!err.contains("panicked"), "{err}");
    let row = out.lines().find(|l| l.starts_with("alice")).unwrap();
    assert!(row.contains('…'), "{row}");
    assert!(row.chars().count() < 300, "{row}");
}

// ---------------------------------------------------------------- 4. CLI output

/// The state over a fresh SQLite file at `db`, and the store.
async fn state_on(db: &std::path::Path) -> (cloakroom_server::state::AppState, SqliteStore) {
    let store = SqliteStore::open(db.to_str().unwrap()).await.unwrap();
    let config = RawConfig::default().validate().unwrap();
    let state =
        cloakroom_server::serve::state(Arc::new(store.clone()), config, Cost::INSECURE_TEST);
    (state, store)
}

/// Many users, added in one transaction (one at a time would wait on thousands of fsyncs).
async fn many_users(store: &SqliteStore, n: u32) {
    sqlx::query(
        "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < ?)
         INSERT INTO users (id, username, roles, created_at, updated_at)
         SELECT printf('usr_%022d', i), printf('user%06d', i), '[\"staff\"]', 0, 0 FROM n",
    )
    .bind(n)
    .execute(store.pool())
    .await
    .unwrap();
}

#[tokio::test]
async fn the_cli_exits_quietly_when_stdout_closes_early() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("c.db");
    let (_state, store) = state_on(&db).await;
    // Far more than a pipe buffers (64 KiB), so the CLI is still writing when the reader leaves.
    many_users(&store, 5000).await;
    for args in [&["user", "list"][..], &["user", "list", "--json"]] {
        let mut child = Command::new(BIN)
            .args(args)
            .arg("--store")
            .arg(format!("sqlite:{}", db.display()))
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        // `| head -c 64`: the first bytes, then the reader is gone.
        let mut stdout = child.stdout.take().unwrap();
        let mut first = [0u8; 64];
        stdout.read_exact(&mut first).unwrap();
        drop(stdout);
        let out = child.wait_with_output().unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!err.contains("panicked"), "{args:?}: {err}");
        assert_eq!(out.status.code(), Some(0), "{args:?}: {err}");
        assert!(err.is_empty(), "{args:?}: {err}");
    }
}

#[tokio::test]
async fn the_cli_never_prints_control_characters_from_a_user_agent() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("c.db");
    let (state, _store) = state_on(&db).await;
    let alice =
        state.manager.create_user(Username::parse("alice").unwrap(), None, vec![]).await.unwrap();
    let ua = "curl\x1b[31m red \x1b]0;owned\x07\r\n\u{9b}2J\u{202e}gnp.exe";
    let client = ClientInfo { ip: None, user_agent: Some(ua.into()) };
    state.manager.create(&alice, client, None).await.unwrap();
    let (code, out, err) = cli(&db, &["session", "list"], None);
    assert_eq!(code, 0, "{err}");
    let row = out.lines().find(|l| l.contains("alice")).expect(&out);
    for raw in ['\x1b', '\x07', '\r', '\u{9b}', '\u{202e}'] {
        assert!(!out.contains(raw), "{raw:?} printed raw: {out:?}");
    }
    assert!(row.contains("curl\u{FFFD}[31m red"), "{row:?}");
    // JSON keeps the text, escaped by serde.
    let (code, out, _) = cli(&db, &["session", "list", "--json"], None);
    assert_eq!(code, 0);
    assert!(!out.contains('\x1b'));
    let v: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["sessions"][0]["user_agent"], ua);
}

// ---------------------------------------------------------------- 6. disabling oneself

#[tokio::test]
async fn an_admin_cannot_disable_their_own_account_by_any_spelling() {
    let h = harness().await;
    h.add_user("admin2", &["admin"]).await;
    let b = h.login("admin2").await;
    // The API, by an admin's session: 409, in any case of the name.
    for name in ["admin2", "ADMIN2", "Admin2"] {
        let uri = format!("/v1/admin/users/{name}");
        let r = h.send(b.send(Method::PUT, &uri, Some(json!({"disabled": true})))).await;
        assert_eq!((r.status, r.code().as_str()), (StatusCode::CONFLICT, "conflict"), "{name}");
    }
    // The admin page, the same rule.
    let form = req(Method::POST, "/admin/users/ADMIN2/disable")
        .header(header::COOKIE, b.cookie())
        .header(header::ORIGIN, ORIGIN)
        .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
        .body(Body::from(format!("csrf_token={}&confirm=yes", b.csrf)))
        .unwrap();
    assert_eq!(h.send(form).await.status, StatusCode::CONFLICT);
    let me = h.state.manager.user(&Username::parse("admin2").unwrap()).await.unwrap().unwrap();
    assert!(!me.disabled);
    assert_eq!(h.send(b.get("/v1/session")).await.status, StatusCode::OK);
    // Other changes to oneself, and disabling others, still work.
    h.add_user("bob", &[]).await;
    let r = h.send(b.send(Method::PUT, "/v1/admin/users/bob", Some(json!({"disabled": true}))));
    assert_eq!(r.await.status, StatusCode::OK);
    let r = h.send(b.send(Method::PUT, "/v1/admin/users/admin2", Some(json!({"disabled": false}))));
    assert_eq!(r.await.status, StatusCode::OK);
    // An API key is no user: it may disable anyone.
    let key = h.api_key().await;
    let r = h
        .send(
            req(Method::PUT, "/v1/admin/users/admin2")
                .header(header::AUTHORIZATION, format!("Bearer {key}"))
                .header(header::CONTENT_TYPE, "application/json")
                .body(Body::from(json!({"disabled": true}).to_string()))
                .unwrap(),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.json()["user"]["disabled"], true);
}

// ---------------------------------------------------------------- 7. security headers

fn assert_hardened(r: &Reply, hsts: bool, what: &str) {
    assert_eq!(r.header("x-content-type-options"), Some("nosniff"), "{what}");
    let expected = hsts.then_some("max-age=31536000");
    assert_eq!(r.header("strict-transport-security"), expected, "{what}");
}

#[tokio::test]
async fn every_response_carries_nosniff_and_hsts_when_the_origin_is_https() {
    for (origin, hsts) in [(None, false), (Some("https://app.example.com"), true)] {
        let raw = RawConfig { public_origin: origin.map(str::to_owned), ..Default::default() };
        let h = harness_with(raw).await;
        h.add_user("alice", &[]).await;
        let b = h.login("alice").await;
        let get = |uri: &str| req(Method::GET, uri).body(Body::empty()).unwrap();
        let cases = [
            (h.send(b.get("/v1/session")).await, "an API response"),
            (h.send(get("/v1/session")).await, "an error"),
            (h.send(get("/no/such/route")).await, "a 404"),
            (h.send(req(Method::DELETE, "/healthz").body(Body::empty()).unwrap()).await, "a 405"),
            (h.send(get("/login")).await, "a page"),
            (h.send(get("/")).await, "a page's redirect"),
            (h.send(b.get("/v1/auth/check")).await, "the routed check"),
        ];
        for (r, what) in &cases {
            assert_hardened(r, hsts, what);
        }
        // Pages keep the referrer on this origin, redirects included.
        for (r, what) in &cases[4..6] {
            assert_eq!(r.header("referrer-policy"), Some("same-origin"), "{what}");
        }
        // The check as `cloakroom serve` answers it, before the router, allowed and refused.
        for cookie in [b.cookie(), "__Host-cloakroom=crs_nothing".into()] {
            let (parts, _) = req(Method::GET, "/v1/auth/check")
                .header(header::COOKIE, cookie)
                .body(())
                .unwrap()
                .into_parts();
            let r = cloakroom_server::routes::check::answer(&h.state, &parts).await;
            let reply = Reply { status: r.status(), headers: r.headers().clone(), body: vec![] };
            assert_hardened(&reply, hsts, "the check's fast path");
        }
    }
}

// ---------------------------------------------------------------- 8. several Origin headers

#[tokio::test]
async fn several_origin_or_sec_fetch_site_headers_are_an_origin_mismatch() {
    let h = harness().await;
    h.add_user("alice", &[]).await;
    let b = h.login("alice").await;
    let _other = h.login("alice").await;
    for (name, values) in [
        ("origin", [ORIGIN, "https://evil.example"]),
        ("origin", [ORIGIN, ORIGIN]),
        ("sec-fetch-site", ["same-origin", "cross-site"]),
    ] {
        let mut r = req(Method::POST, "/v1/sessions/revoke-others")
            .header(header::COOKIE, b.cookie())
            .header("x-csrf-token", &b.csrf)
            .body(Body::empty())
            .unwrap();
        for v in values {
            r.headers_mut().append(name, v.parse().unwrap());
        }
        let reply = h.send(r).await;
        assert_eq!(
            (reply.status, reply.code().as_str()),
            (StatusCode::FORBIDDEN, "origin_mismatch"),
            "{name}: {values:?}"
        );
    }
    assert_eq!(h.send(b.get("/v1/sessions")).await.json()["sessions"].as_array().unwrap().len(), 2);
}

// ---------------------------------------------------------------- 9, 10. session data

fn put_data(b: &Browser, body: impl Into<Body>) -> axum::http::Request<Body> {
    req(Method::PUT, "/v1/session/data")
        .header(header::COOKIE, b.cookie())
        .header("x-csrf-token", &b.csrf)
        .header(header::ORIGIN, ORIGIN)
        .header(header::CONTENT_TYPE, "application/json")
        .body(body.into())
        .unwrap()
}

#[tokio::test]
async fn session_data_numbers_beyond_2_pow_53_are_refused_not_rounded() {
    let h = harness().await;
    h.add_user("alice", &[]).await;
    let b = h.login("alice").await;
    for bad in [
        r#"{"n": 9007199254740993}"#,
        r#"{"n": -9007199254740993}"#,
        r#"{"n": [1, 18446744073709551616]}"#,
        r#"{"x": 0.30000000000000000001}"#,
        r#"{"x": 9007199254740993.0}"#,
    ] {
        let r = h.send(put_data(&b, bad)).await;
        assert_eq!(
            (r.status, r.code().as_str()),
            (StatusCode::BAD_REQUEST, "invalid_request"),
            "{bad}"
        );
    }
    // What is exact is kept, digit for digit.
    let good =
        r#"{"n":9007199254740992,"m":-9007199254740992,"x":0.1,"y":1.5,"s":"9007199254740993"}"#;
    assert_eq!(h.send(put_data(&b, good)).await.status, StatusCode::NO_CONTENT);
    let stored = h.send(b.get("/v1/session/data")).await;
    assert_eq!(stored.json(), serde_json::from_str::<Value>(good).unwrap());
    assert!(String::from_utf8_lossy(&stored.body).contains("9007199254740992"));
    // The service API's session data too.
    let key = h.api_key().await;
    let body = r#"{"username": "alice", "data": {"n": 9007199254740993}}"#;
    let r = h
        .send(
            req(Method::POST, "/v1/admin/sessions")
                .header(header::AUTHORIZATION, format!("Bearer {key}"))
                .header(header::CONTENT_TYPE, "application/json")
                .body(Body::from(body))
                .unwrap(),
        )
        .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn session_data_over_16_kib_is_413_before_it_is_parsed() {
    let h = harness().await;
    h.add_user("alice", &[]).await;
    let b = h.login("alice").await;
    for body in ["x".repeat(20_000), format!("{{\"a\":\"{}\"}}", "y".repeat(17_000))] {
        let r = h.send(put_data(&b, body)).await;
        assert_eq!(
            (r.status, r.code().as_str()),
            (StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large")
        );
    }
    // Past the route's own limit (64 KiB), the same.
    let r = h.send(put_data(&b, "x".repeat(70_000))).await;
    assert_eq!(r.status, StatusCode::PAYLOAD_TOO_LARGE);
    // Small and malformed stays a 400.
    assert_eq!(h.send(put_data(&b, "not json")).await.status, StatusCode::BAD_REQUEST);
}

/// Issue 14: the CLI run from the wrong directory created a new empty `./cloakroom.db` and wrote
/// an API key into it (exit 0). Only `serve` and `--create` may make a store.
#[test]
fn the_cli_never_creates_a_store_unasked() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("elsewhere.db");
    for args in [&["apikey", "create", "billing"][..], &["user", "list"], &["audit"]] {
        let (code, _, err) = cli(&db, args, None);
        assert_eq!(code, 1, "{args:?}: {err}");
        assert!(err.contains(&db.display().to_string()), "the message names the path: {err}");
        assert!(err.contains("--create"), "and says how to make one: {err}");
        assert!(!db.exists(), "{args:?} created {}", db.display());
    }
    // A `file:` URI names the same file: no way around the rule.
    let uri = format!("sqlite:file:{}?cache=shared", db.display());
    let (code, _, err) = common::process::cli_store(&uri, &["user", "list"], None);
    assert_eq!(code, 1, "{err}");
    assert!(!db.exists(), "a file: URI created {}", db.display());
    let (code, _, err) = cli(&db, &["user", "add", "bob", "--no-password", "--create"], None);
    assert_eq!(code, 0, "{err}");
    let (code, out, err) = cli(&db, &["user", "list"], None);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("bob"), "{out}");
}

/// Issue 14: Kubernetes injects `CLOAKROOM_PORT=tcp://…` and friends for a Service named
/// `cloakroom`; the strict environment check refused them and the pod crash-looped.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubernetes_service_variables_do_not_stop_the_server() {
    let dir = tempfile::tempdir().unwrap();
    let store = format!("sqlite:{}", dir.path().join("k.db").display());
    let env = [
        ("CLOAKROOM_PORT", "tcp://10.96.0.12:7878"),
        ("CLOAKROOM_PORT_7878_TCP", "tcp://10.96.0.12:7878"),
        ("CLOAKROOM_PORT_7878_TCP_ADDR", "10.96.0.12"),
        ("CLOAKROOM_SERVICE_HOST", "10.96.0.12"),
        ("CLOAKROOM_SERVICE_PORT", "7878"),
        ("CLOAKROOM_SERVICE_PORT_HTTP", "7878"),
    ];
    let log = dir.path().join("k.log");
    let server = common::process::Server::start_env(&store, &log, &[], &env);
    let r = reqwest::get(format!("{}/healthz", server.base)).await.unwrap();
    assert_eq!(r.status(), 200);
    // A typo still stops it, naming the variable.
    let out = Command::new(BIN)
        .args(["serve", "--listen", "127.0.0.1:0", "--store", &store])
        .env("CLOAKROOM_IDLE_TIMOUT", "5m")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("CLOAKROOM_IDLE_TIMOUT"));
}

/// `base_path`: every route moves under the prefix, and nothing answers outside it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_base_path_moves_every_route() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("b.db");
    common::process::add_user(&db, "alice", "staff", "correct horse battery staple");
    let log = dir.path().join("b.log");
    let server = common::process::Server::start_with(&db, &log, &["--base-path", "/auth/"]);
    let http =
        reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().unwrap();
    let get = |path: &str| http.get(format!("{}{path}", server.base)).send();
    for (path, status) in [
        ("/auth/healthz", 200),
        ("/auth/v1/openapi.json", 200),
        ("/auth/login", 200),
        ("/auth/v1/auth/check", 401),
        ("/healthz", 404),
        ("/v1/auth/check", 404),
        ("/login", 404),
    ] {
        assert_eq!(get(path).await.unwrap().status().as_u16(), status, "{path}");
    }
    // The pages' redirects and the check's login link stay under the prefix.
    let r = get("/auth/account/sessions").await.unwrap();
    assert_eq!(r.headers()["location"], "/auth/login?next=%2Fauth%2Faccount%2Fsessions");
    let r = get("/auth/v1/auth/check").await.unwrap();
    assert_eq!(r.headers()["x-cloakroom-login"], "/auth/login");
    assert_eq!(r.headers()["x-cloakroom-reason"], "login");
    let spec: Value = get("/auth/v1/openapi.json").await.unwrap().json().await.unwrap();
    assert_eq!(spec["servers"][0]["url"], "/auth");
    // Metrics label routes without the prefix, as the fast path labels the check.
    let metrics = get("/auth/metrics").await.unwrap().text().await.unwrap();
    assert!(metrics.contains("route=\"/healthz\""), "{metrics}");
    assert!(!metrics.contains("route=\"/auth/"), "{metrics}");
    // A login under the prefix sets the cookie for the whole host.
    let r = http
        .post(format!("{}/auth/v1/login", server.base))
        .json(&json!({"username": "alice", "password": "correct horse battery staple"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let cookie = r.headers()["set-cookie"].to_str().unwrap();
    assert!(cookie.contains("; Path=/") && !cookie.contains("Path=/auth"), "{cookie}");
}

/// `metrics_listen`: `/metrics` moves to its own address (kept off the public listener).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_listen_serves_metrics_only_there() {
    let dir = tempfile::tempdir().unwrap();
    let port = common::proxy::free_port();
    let addr = format!("127.0.0.1:{port}");
    let server = common::process::Server::start_with(
        &dir.path().join("m.db"),
        &dir.path().join("m.log"),
        &["--metrics-listen", &addr],
    );
    let main = reqwest::get(format!("{}/metrics", server.base)).await.unwrap();
    assert_eq!(main.status(), 404, "no /metrics on the main listener");
    let start = std::time::Instant::now();
    let page = loop {
        if let Ok(r) = reqwest::get(format!("http://{addr}/metrics")).await {
            break r.text().await.unwrap();
        }
        assert!(
            start.elapsed() < std::time::Duration::from_secs(5),
            "metrics_listen never came up"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    };
    assert!(page.contains("cloakroom_build_info"), "{page}");
    let other = reqwest::get(format!("http://{addr}/healthz")).await.unwrap();
    assert_eq!(other.status(), 404, "only /metrics there");
}
