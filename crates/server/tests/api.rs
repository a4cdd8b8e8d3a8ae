//! The HTTP API through the router (`oneshot`, no socket), against a real SQLite file.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use axum::body::Body;
use axum::http::{Method, StatusCode, header};
use cloakroom_server::config::RawConfig;
use common::*;
use serde_json::json;

#[tokio::test]
async fn login_sets_the_exact_cookie_and_keeps_the_token_out_of_the_body() {
    let h = harness().await;
    h.add_user("alice", &["staff"]).await;
    let r = h.login_attempt("Alice", PASSWORD).await;
    assert_eq!(r.status, StatusCode::OK);
    let cookies = r.set_cookies();
    assert_eq!(cookies.len(), 1);
    let token = r.cookie_token().unwrap();
    assert!(token.starts_with("crs_") && token.len() == 53);
    assert_eq!(
        cookies[0],
        format!("__Host-cloakroom={token}; HttpOnly; Secure; SameSite=Lax; Path=/")
    );
    assert!(!cookies[0].to_ascii_lowercase().contains("domain"));
    assert_eq!(r.header("cache-control"), Some("no-store"));
    let body = String::from_utf8(r.body.clone()).unwrap();
    assert!(!body.contains(&token), "the token never appears in a body");
    let v = r.json();
    assert_eq!(v["session"]["user"]["username"], "alice");
    assert_eq!(v["session"]["user"]["roles"], json!(["staff"]));
    assert!(v["session"]["id"].as_str().unwrap().starts_with("ses_"));
    assert!(v["csrf_token"].as_str().unwrap().len() >= 43);
    for key in ["created_at", "last_seen_at", "idle_expires_at", "expires_at"] {
        assert!(v["session"][key].as_str().unwrap().ends_with('Z'), "{key} is RFC 3339 UTC");
    }
}

#[tokio::test]
async fn login_accepts_forms_and_refuses_bad_bodies() {
    let h = harness().await;
    h.add_user("alice", &[]).await;
    let form = req(Method::POST, "/v1/login")
        .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
        .body(Body::from("username=alice&password=correct+horse+battery"))
        .unwrap();
    assert_eq!(h.send(form).await.status, StatusCode::OK);

    let cases = [
        req(Method::POST, "/v1/login")
            .header(header::CONTENT_TYPE, "text/plain")
            .body(Body::from("x"))
            .unwrap(),
        req(Method::POST, "/v1/login")
            .header(header::CONTENT_TYPE, "application/json")
            .body(Body::from("{not json"))
            .unwrap(),
        json_req(
            Method::POST,
            "/v1/login",
            json!({"username": "alice", "password": PASSWORD, "admin": true}),
        ),
        json_req(Method::POST, "/v1/login", json!({"username": "alice"})),
    ];
    for c in cases {
        let r = h.send(c).await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{}", String::from_utf8_lossy(&r.body));
        assert_eq!(r.code(), "invalid_request");
    }
    let huge = json!({"username": "alice", "password": "x".repeat(70_000)});
    let r = h.send(json_req(Method::POST, "/v1/login", huge)).await;
    assert_eq!((r.status, r.code().as_str()), (StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large"));
}

#[tokio::test]
async fn unknown_user_and_wrong_password_get_the_same_answer() {
    let h = harness().await;
    h.add_user("alice", &[]).await;
    h.add_user("dave", &[]).await;
    h.send(json_req(Method::PUT, "/v1/admin/users/dave", json!({}))).await; // no-op without auth
    let wrong = h.login_attempt("alice", "wrong password!").await;
    let unknown = h.login_attempt("mallory", "wrong password!").await;
    let invalid_name = h.login_attempt("not a name", "x").await;
    for r in [&wrong, &unknown, &invalid_name] {
        assert_eq!(r.status, StatusCode::UNAUTHORIZED);
        assert_eq!(r.body, wrong.body);
        assert!(r.set_cookies().is_empty());
    }
    assert_eq!(wrong.code(), "invalid_credentials");
}

#[tokio::test]
async fn every_login_issues_a_new_token_and_ends_the_previous_session() {
    let h = harness().await;
    h.add_user("alice", &[]).await;
    let first = h.login("alice").await;
    let login_again = req(Method::POST, "/v1/login")
        .header(header::CONTENT_TYPE, "application/json")
        .header(header::COOKIE, first.cookie())
        .body(Body::from(json!({"username": "alice", "password": PASSWORD}).to_string()))
        .unwrap();
    let r = h.send(login_again).await;
    let second = r.cookie_token().unwrap();
    assert_ne!(second, first.token);
    assert_eq!(
        h.send(first.get("/v1/session")).await.status,
        StatusCode::UNAUTHORIZED,
        "old session ended (no fixation)"
    );
    let r = h
        .send(
            req(Method::GET, "/v1/session")
                .header(header::COOKIE, format!("__Host-cloakroom={second}"))
                .body(Body::empty())
                .unwrap(),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK);
}

#[tokio::test]
async fn made_up_and_garbled_tokens_are_refused() {
    let h = harness().await;
    h.add_user("alice", &[]).await;
    let b = h.login("alice").await;
    let well_formed_unknown =
        cloakroom_core::Token::generate(cloakroom_core::SecretKind::Session).unwrap().expose();
    let mut garbled = b.token.clone().into_bytes();
    garbled[20] = if garbled[20] == b'A' { b'B' } else { b'A' };
    for token in
        [well_formed_unknown, String::from_utf8(garbled).unwrap(), "crs_".into(), "x".repeat(5000)]
    {
        let r = h
            .send(
                req(Method::GET, "/v1/session")
                    .header(header::COOKIE, format!("__Host-cloakroom={token}"))
                    .body(Body::empty())
                    .unwrap(),
            )
            .await;
        assert_eq!((r.status, r.code().as_str()), (StatusCode::UNAUTHORIZED, "unauthenticated"));
        let r = h
            .send(
                req(Method::GET, "/v1/session")
                    .header(header::AUTHORIZATION, format!("Bearer {token}"))
                    .body(Body::empty())
                    .unwrap(),
            )
            .await;
        assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    }
    // The bearer form of a real token works.
    let r = h
        .send(
            req(Method::GET, "/v1/session")
                .header(header::AUTHORIZATION, format!("Bearer {}", b.token))
                .body(Body::empty())
                .unwrap(),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(
        h.store.list_sessions_count().await,
        1,
        "no session was adopted for an unknown token"
    );
}

trait Count {
    async fn list_sessions_count(&self) -> usize;
}
impl Count for cloakroom_store_sqlite::SqliteStore {
    async fn list_sessions_count(&self) -> usize {
        use cloakroom_core::store::prelude::*;
        self.list_sessions(None, cloakroom_core::Timestamp::now()).await.unwrap().len()
    }
}

#[tokio::test]
async fn cookie_writes_need_the_csrf_token_and_an_allowed_origin() {
    let h = harness().await;
    h.add_user("alice", &[]).await;
    let b = h.login("alice").await;
    let _other = h.login("alice").await;
    let post = |csrf: Option<&str>, origin: Option<&str>, fetch_site: Option<&str>| {
        let mut r =
            req(Method::POST, "/v1/sessions/revoke-others").header(header::COOKIE, b.cookie());
        if let Some(c) = csrf {
            r = r.header("x-csrf-token", c);
        }
        if let Some(o) = origin {
            r = r.header(header::ORIGIN, o);
        }
        if let Some(s) = fetch_site {
            r = r.header("sec-fetch-site", s);
        }
        r.body(Body::empty()).unwrap()
    };
    let cases = [
        (post(None, None, None), "csrf_failed"),
        (post(Some("wrong"), None, None), "csrf_failed"),
        (post(Some(&b.csrf[1..]), None, None), "csrf_failed"),
        (post(Some(&b.csrf), Some("https://evil.example"), None), "origin_mismatch"),
        (post(Some(&b.csrf), Some("null"), None), "origin_mismatch"),
        (post(Some(&b.csrf), None, Some("cross-site")), "origin_mismatch"),
        (post(Some(&b.csrf), None, Some("same-site")), "origin_mismatch"),
    ];
    for (request, code) in cases {
        let r = h.send(request).await;
        assert_eq!((r.status, r.code().as_str()), (StatusCode::FORBIDDEN, code));
    }
    // Nothing was revoked by the refused requests.
    let r = h.send(b.get("/v1/sessions")).await;
    assert_eq!(r.json()["sessions"].as_array().unwrap().len(), 2);
    // Same-origin with the token goes through.
    let r = h.send(post(Some(&b.csrf), Some(ORIGIN), Some("same-origin"))).await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.json()["revoked"], 1);
}

#[tokio::test]
async fn csrf_token_may_come_as_a_form_field_and_bearer_needs_none() {
    let h = harness().await;
    h.add_user("alice", &[]).await;
    let b = h.login("alice").await;
    let form = |token: &str| {
        req(Method::POST, "/v1/sessions/revoke-others")
            .header(header::COOKIE, b.cookie())
            .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
            .body(Body::from(format!("csrf_token={token}")))
            .unwrap()
    };
    assert_eq!(h.send(form("tampered")).await.code(), "csrf_failed");
    assert_eq!(h.send(form(&b.csrf)).await.status, StatusCode::OK);
    let bearer = req(Method::POST, "/v1/sessions/revoke-others")
        .header(header::AUTHORIZATION, format!("Bearer {}", b.token))
        .body(Body::empty())
        .unwrap();
    assert_eq!(h.send(bearer).await.status, StatusCode::OK);
}

#[tokio::test]
async fn login_from_another_origin_is_refused() {
    let h = harness().await;
    h.add_user("alice", &[]).await;
    let r = h
        .send(
            req(Method::POST, "/v1/login")
                .header(header::CONTENT_TYPE, "application/json")
                .header(header::ORIGIN, "https://evil.example")
                .body(Body::from(json!({"username": "alice", "password": PASSWORD}).to_string()))
                .unwrap(),
        )
        .await;
    assert_eq!((r.status, r.code().as_str()), (StatusCode::FORBIDDEN, "origin_mismatch"));
}

#[tokio::test]
async fn logout_ends_the_session_and_clears_the_cookie() {
    let h = harness().await;
    h.add_user("alice", &[]).await;
    let b = h.login("alice").await;
    let r = h
        .send(
            req(Method::POST, "/v1/logout")
                .header(header::COOKIE, b.cookie())
                .body(Body::empty())
                .unwrap(),
        )
        .await;
    assert_eq!(r.code(), "csrf_failed", "logout by cookie needs the CSRF token");
    let r = h.send(b.send(Method::POST, "/v1/logout", None)).await;
    assert_eq!(r.status, StatusCode::NO_CONTENT);
    assert_eq!(r.header("clear-site-data"), Some("\"cookies\""));
    assert_eq!(r.header("cache-control"), Some("no-store"));
    assert_eq!(
        r.set_cookies(),
        ["__Host-cloakroom=; HttpOnly; Secure; SameSite=Lax; Path=/; Max-Age=0"]
    );
    assert_eq!(h.send(b.get("/v1/session")).await.status, StatusCode::UNAUTHORIZED);
    // Logging out again is harmless.
    assert_eq!(
        h.send(b.send(Method::POST, "/v1/logout", None)).await.status,
        StatusCode::NO_CONTENT
    );
}

#[tokio::test]
async fn session_data_has_etags_and_refuses_lost_updates() {
    let h = harness().await;
    h.add_user("alice", &[]).await;
    let b = h.login("alice").await;
    let r = h.send(b.get("/v1/session/data")).await;
    assert_eq!((r.status, r.json()), (StatusCode::OK, json!({})));
    let etag = r.header("etag").unwrap().to_owned();

    let put = |body: serde_json::Value, if_match: Option<&str>| {
        let mut r = b.send(Method::PUT, "/v1/session/data", Some(body));
        if let Some(m) = if_match {
            r.headers_mut().insert(header::IF_MATCH, m.parse().unwrap());
        }
        r
    };
    let r = h.send(put(json!({"cart": [1]}), Some(&etag))).await;
    assert_eq!(r.status, StatusCode::NO_CONTENT);
    let new_etag = r.header("etag").unwrap().to_owned();
    assert_ne!(new_etag, etag);
    let r = h.send(put(json!({"cart": [2]}), Some(&etag))).await;
    assert_eq!(
        (r.status, r.code().as_str()),
        (StatusCode::PRECONDITION_FAILED, "precondition_failed")
    );
    assert_eq!(
        h.send(put(json!({"cart": [2]}), Some("\"garbage\""))).await.status,
        StatusCode::PRECONDITION_FAILED
    );
    let r = h.send(b.get("/v1/session/data")).await;
    assert_eq!(r.json(), json!({"cart": [1]}));
    assert_eq!(r.header("etag"), Some(new_etag.as_str()));

    assert_eq!(h.send(put(json!([1, 2]), None)).await.code(), "invalid_request");
    let r = h.send(put(json!({"blob": "x".repeat(17 * 1024)}), None)).await;
    assert_eq!((r.status, r.code().as_str()), (StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large"));
    assert_eq!(
        h.send(put(json!({"ok": "x".repeat(15 * 1024)}), None)).await.status,
        StatusCode::NO_CONTENT
    );
}

#[tokio::test]
async fn users_list_and_revoke_their_own_sessions_only() {
    let h = harness().await;
    h.add_user("alice", &[]).await;
    h.add_user("bob", &[]).await;
    let a1 = h.login("alice").await;
    let a2 = h.login("alice").await;
    let bob = h.login("bob").await;

    let r = h.send(a1.get("/v1/sessions")).await;
    let list = r.json()["sessions"].as_array().unwrap().clone();
    assert_eq!(list.len(), 2);
    assert_eq!(list[0]["id"], a2.session_id.as_str(), "newest first");
    assert_eq!(list[1]["current"], true);
    assert_eq!(list[0]["current"], false);
    assert_eq!(r.header("cache-control"), Some("no-store"));

    let r =
        h.send(a1.send(Method::DELETE, &format!("/v1/sessions/{}", bob.session_id), None)).await;
    assert_eq!((r.status, r.code().as_str()), (StatusCode::NOT_FOUND, "not_found"));
    assert_eq!(h.send(bob.get("/v1/session")).await.status, StatusCode::OK);
    assert_eq!(
        h.send(a1.send(Method::DELETE, "/v1/sessions/not-an-id", None)).await.status,
        StatusCode::NOT_FOUND
    );

    let r = h.send(a1.send(Method::DELETE, &format!("/v1/sessions/{}", a2.session_id), None)).await;
    assert_eq!(r.status, StatusCode::NO_CONTENT);
    assert_eq!(h.send(a2.get("/v1/session")).await.status, StatusCode::UNAUTHORIZED);
    assert_eq!(h.send(a1.get("/v1/session")).await.status, StatusCode::OK);
}

#[tokio::test]
async fn password_change_needs_the_current_one_revokes_others_and_rotates() {
    let h = harness().await;
    h.add_user("alice", &[]).await;
    let b = h.login("alice").await;
    let other = h.login("alice").await;
    let change = |current: &str, new: &str| {
        b.send(
            Method::POST,
            "/v1/password",
            Some(json!({"current_password": current, "new_password": new})),
        )
    };
    assert_eq!(
        h.send(change("wrong password!", "a brand new passphrase")).await.code(),
        "invalid_credentials"
    );
    let r = h.send(change(PASSWORD, "short")).await;
    assert_eq!((r.status, r.code().as_str()), (StatusCode::BAD_REQUEST, "invalid_request"));
    assert_eq!(
        h.send(change(PASSWORD, "password123")).await.code(),
        "invalid_request",
        "common password"
    );
    assert_eq!(
        h.send(other.get("/v1/session")).await.status,
        StatusCode::OK,
        "refused changes revoke nothing"
    );

    let r = h.send(change(PASSWORD, "a brand new passphrase")).await;
    assert_eq!(r.status, StatusCode::OK);
    let new_token = r.cookie_token().expect("rotated cookie");
    assert_ne!(new_token, b.token);
    let new_csrf = r.json()["csrf_token"].as_str().unwrap().to_owned();
    assert_ne!(new_csrf, b.csrf, "a new CSRF token with the new session token");
    assert!(r.json().get("token").is_none(), "cookie callers never get the token in a body");
    assert_eq!(
        h.send(b.get("/v1/session")).await.status,
        StatusCode::UNAUTHORIZED,
        "old token ended"
    );
    assert_eq!(
        h.send(other.get("/v1/session")).await.status,
        StatusCode::UNAUTHORIZED,
        "other session revoked"
    );
    let rotated = Browser { token: new_token, csrf: new_csrf, session_id: b.session_id.clone() };
    let r = h.send(rotated.get("/v1/session")).await;
    assert_eq!(r.json()["session"]["id"], b.session_id.as_str(), "same session, new token");
    // The new password logs in; the old one does not.
    let r = h.login_attempt("alice", "a brand new passphrase").await;
    assert_eq!(r.status, StatusCode::OK);
    let r = h.login_attempt("alice", PASSWORD).await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn auth_check_answers_for_forward_auth() {
    let h = harness().await;
    h.add_user("alice", &["billing", "staff"]).await;
    let b = h.login("alice").await;
    let r = h.send(b.get("/v1/auth/check")).await;
    assert_eq!(r.status, StatusCode::OK);
    assert!(r.body.is_empty(), "an empty 200 keeps proxy connections alive");
    assert_eq!(r.header("x-cloakroom-username"), Some("alice"));
    assert_eq!(r.header("x-cloakroom-roles"), Some("billing,staff"));
    assert_eq!(r.header("x-cloakroom-session-id"), Some(b.session_id.as_str()));
    assert!(r.header("x-cloakroom-user-id").unwrap().starts_with("usr_"));
    assert_eq!(h.send(b.get("/v1/auth/check?role=staff")).await.status, StatusCode::OK);
    let r = h.send(b.get("/v1/auth/check?role=admin")).await;
    assert_eq!((r.status, r.code().as_str()), (StatusCode::FORBIDDEN, "forbidden"));
    let r = h.send(req(Method::GET, "/v1/auth/check").body(Body::empty()).unwrap()).await;
    assert_eq!((r.status, r.code().as_str()), (StatusCode::UNAUTHORIZED, "unauthenticated"));
    let r = h
        .send(
            req(Method::HEAD, "/v1/auth/check")
                .header(header::COOKIE, b.cookie())
                .body(Body::empty())
                .unwrap(),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "HEAD works too (proxy_method HEAD)");
}

#[tokio::test]
async fn the_store_failing_is_a_503_never_a_pass() {
    let h = harness().await;
    h.add_user("alice", &[]).await;
    let b = h.login("alice").await;
    h.store.pool().close().await;
    for uri in ["/v1/auth/check", "/v1/session", "/readyz"] {
        let r = h.send(b.get(uri)).await;
        assert_eq!(
            (r.status, r.code().as_str()),
            (StatusCode::SERVICE_UNAVAILABLE, "store_unavailable"),
            "{uri}"
        );
        assert!(r.header("x-cloakroom-user-id").is_none());
    }
    let r = h.login_attempt("alice", PASSWORD).await;
    assert_eq!(r.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(
        h.send(req(Method::GET, "/healthz").body(Body::empty()).unwrap()).await.status,
        StatusCode::OK
    );
}

#[tokio::test]
async fn login_failures_are_throttled_with_retry_after() {
    let h = harness().await;
    h.add_user("alice", &[]).await;
    let attempt = |pw: &str| {
        from_ip(
            json_req(Method::POST, "/v1/login", json!({"username": "alice", "password": pw})),
            "198.51.100.7",
        )
    };
    for _ in 0..10 {
        assert_eq!(h.send(attempt("wrong password!")).await.status, StatusCode::UNAUTHORIZED);
    }
    let r = h.send(attempt(PASSWORD)).await;
    assert_eq!((r.status, r.code().as_str()), (StatusCode::TOO_MANY_REQUESTS, "rate_limited"));
    let retry: u64 = r.header("retry-after").unwrap().parse().unwrap();
    assert!(retry > 0 && retry <= 15 * 60);
    // Another client address is not blocked by this one's failures.
    let other = from_ip(
        json_req(Method::POST, "/v1/login", json!({"username": "alice", "password": PASSWORD})),
        "203.0.113.9",
    );
    assert_eq!(h.send(other).await.status, StatusCode::OK);
}

#[tokio::test]
async fn sessions_per_user_are_capped_oldest_first() {
    let h =
        harness_with(RawConfig { max_sessions_per_user: Some("2".into()), ..Default::default() })
            .await;
    h.add_user("alice", &[]).await;
    let first = h.login("alice").await;
    let second = h.login("alice").await;
    let third = h.login("alice").await;
    assert_eq!(h.send(first.get("/v1/session")).await.status, StatusCode::UNAUTHORIZED);
    assert_eq!(h.send(second.get("/v1/session")).await.status, StatusCode::OK);
    assert_eq!(h.send(third.get("/v1/session")).await.status, StatusCode::OK);
}

#[tokio::test]
async fn service_api_with_an_api_key() {
    let h = harness().await;
    let key = h.api_key().await;
    let svc = |method: Method, uri: &str, body: Option<serde_json::Value>| {
        let b = req(method, uri).header(header::AUTHORIZATION, format!("Bearer {key}"));
        match body {
            Some(v) => b
                .header(header::CONTENT_TYPE, "application/json")
                .body(Body::from(v.to_string()))
                .unwrap(),
            None => b.body(Body::empty()).unwrap(),
        }
    };
    // No or a wrong key.
    let r = h.send(json_req(Method::PUT, "/v1/admin/users/carol", json!({}))).await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    let fake =
        cloakroom_core::Token::generate(cloakroom_core::SecretKind::ApiKey).unwrap().expose();
    let r = h
        .send(
            req(Method::GET, "/v1/admin/users/carol")
                .header(header::AUTHORIZATION, format!("Bearer {fake}"))
                .body(Body::empty())
                .unwrap(),
        )
        .await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);

    let r = h
        .send(svc(
            Method::PUT,
            "/v1/admin/users/carol",
            Some(json!({"password": PASSWORD, "roles": ["staff"]})),
        ))
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", String::from_utf8_lossy(&r.body));
    assert!(!String::from_utf8_lossy(&r.body).contains("argon2"), "no secret in user JSON");
    assert_eq!(
        h.send(svc(
            Method::PUT,
            "/v1/admin/users/carol",
            Some(json!({"roles": ["staff", "admin"]}))
        ))
        .await
        .status,
        StatusCode::OK
    );
    let r = h.send(svc(Method::GET, "/v1/admin/users/carol", None)).await;
    assert_eq!(r.json()["user"]["roles"], json!(["admin", "staff"]));
    assert_eq!(
        h.send(svc(Method::GET, "/v1/admin/users/nobody", None)).await.status,
        StatusCode::NOT_FOUND
    );
    let r = h
        .send(svc(Method::PUT, "/v1/admin/users/carol", Some(json!({"roles": ["bad,role"]}))))
        .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    let r =
        h.send(svc(Method::PUT, "/v1/admin/users/carol", Some(json!({"password": "short"})))).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);

    // A session created for an app that checks credentials itself.
    let r = h.send(svc(Method::POST, "/v1/admin/sessions", Some(json!({"username": "carol", "ip": "192.0.2.5", "user_agent": "app", "data": {"k": 1}})))).await;
    assert_eq!(r.status, StatusCode::CREATED);
    let token = r.json()["token"].as_str().unwrap().to_owned();
    let sid = r.json()["session"]["id"].as_str().unwrap().to_owned();
    assert_eq!(r.json()["session"]["ip"], "192.0.2.5");
    let r = h
        .send(svc(Method::POST, "/v1/admin/sessions/validate", Some(json!({"token": token}))))
        .await;
    assert_eq!(
        (r.status, r.json()["session"]["id"].as_str()),
        (StatusCode::OK, Some(sid.as_str()))
    );
    let r = h
        .send(svc(Method::POST, "/v1/admin/sessions/validate", Some(json!({"token": "crs_nope"}))))
        .await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    let r = h.send(svc(Method::GET, "/v1/admin/sessions?username=carol", None)).await;
    assert_eq!(r.json()["sessions"].as_array().unwrap().len(), 1);
    assert_eq!(
        h.send(svc(Method::GET, "/v1/admin/sessions", None)).await.status,
        StatusCode::BAD_REQUEST
    );

    // Role change is seen by the next check; a password change revokes sessions.
    let browser = h.login("carol").await;
    assert_eq!(
        h.send(browser.get("/v1/auth/check?role=billing")).await.status,
        StatusCode::FORBIDDEN
    );
    h.send(svc(Method::PUT, "/v1/admin/users/carol", Some(json!({"roles": ["billing"]})))).await;
    assert_eq!(h.send(browser.get("/v1/auth/check?role=billing")).await.status, StatusCode::OK);
    h.send(svc(
        Method::PUT,
        "/v1/admin/users/carol",
        Some(json!({"password": "another long passphrase"})),
    ))
    .await;
    assert_eq!(h.send(browser.get("/v1/auth/check")).await.status, StatusCode::UNAUTHORIZED);
    let r = h
        .send(svc(Method::POST, "/v1/admin/sessions/validate", Some(json!({"token": token}))))
        .await;
    assert_eq!(
        r.status,
        StatusCode::UNAUTHORIZED,
        "password change revoked the service-created session"
    );

    // Revoke one, revoke all, disable.
    let make = || svc(Method::POST, "/v1/admin/sessions", Some(json!({"username": "carol"})));
    let s1 = h.send(make()).await.json()["session"]["id"].as_str().unwrap().to_owned();
    h.send(make()).await;
    assert_eq!(
        h.send(svc(Method::DELETE, &format!("/v1/admin/sessions/{s1}"), None)).await.status,
        StatusCode::NO_CONTENT
    );
    assert_eq!(
        h.send(svc(Method::DELETE, &format!("/v1/admin/sessions/{s1}"), None)).await.status,
        StatusCode::NOT_FOUND
    );
    let r = h.send(svc(Method::DELETE, "/v1/admin/users/carol/sessions", None)).await;
    assert_eq!(r.json()["revoked"], 1);
    let t = h.send(make()).await.json()["token"].as_str().unwrap().to_owned();
    let r =
        h.send(svc(Method::PUT, "/v1/admin/users/carol", Some(json!({"disabled": true})))).await;
    assert_eq!(r.json()["user"]["disabled"], true);
    let r =
        h.send(svc(Method::POST, "/v1/admin/sessions/validate", Some(json!({"token": t})))).await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED, "disabling revoked the sessions");
    assert_eq!(
        h.send(make()).await.status,
        StatusCode::FORBIDDEN,
        "no sessions for a disabled user"
    );
    let r = h.login_attempt("carol", "another long passphrase").await;
    assert_eq!(
        r.code(),
        "invalid_credentials",
        "a disabled user cannot log in, and is told nothing more"
    );
}

#[tokio::test]
async fn service_api_with_an_admin_session_needs_csrf_and_the_role() {
    let h = harness().await;
    h.add_user("root", &["admin"]).await;
    h.add_user("eve", &["staff"]).await;
    let admin = h.login("root").await;
    let eve = h.login("eve").await;
    let r = h
        .send(eve.send(Method::PUT, "/v1/admin/users/eve", Some(json!({"roles": ["admin"]}))))
        .await;
    assert_eq!((r.status, r.code().as_str()), (StatusCode::FORBIDDEN, "forbidden"));
    let mut no_csrf =
        admin.send(Method::PUT, "/v1/admin/users/frank", Some(json!({"password": PASSWORD})));
    no_csrf.headers_mut().remove("x-csrf-token");
    assert_eq!(h.send(no_csrf).await.code(), "csrf_failed");
    let r = h
        .send(admin.send(Method::PUT, "/v1/admin/users/frank", Some(json!({"password": PASSWORD}))))
        .await;
    assert_eq!(r.status, StatusCode::CREATED);
    assert_eq!(h.send(admin.get("/v1/admin/users/frank")).await.status, StatusCode::OK);
}

#[tokio::test]
async fn audit_records_authentication_events_without_secrets() {
    let h = harness().await;
    h.add_user("alice", &[]).await;
    h.login_attempt("alice", "wrong password!").await;
    let b = h.login("alice").await;
    h.send(b.send(Method::POST, "/v1/logout", None)).await;
    use cloakroom_core::store::prelude::*;
    let events = h.store.list_audit(&Default::default()).await.unwrap();
    let kinds: Vec<_> = events.iter().map(|e| e.kind.as_str()).collect();
    assert_eq!(kinds, ["logout", "login_succeeded", "login_failed"]);
    assert_eq!(events[2].detail.as_deref(), Some("wrong password"));
    let dump = serde_json::to_string(&events).unwrap();
    assert!(
        !dump.contains(&b.token)
            && !dump.contains("crs_")
            && !dump.contains(PASSWORD)
            && !dump.contains("wrong password!")
    );
    assert!(!dump.contains(&b.csrf));
}

#[tokio::test]
async fn health_readiness_metrics_and_unknown_routes() {
    let h = harness().await;
    let get = |uri: &str| req(Method::GET, uri).body(Body::empty()).unwrap();
    assert_eq!(h.send(get("/healthz")).await.status, StatusCode::OK);
    let r = h.send(get("/readyz")).await;
    assert_eq!((r.status, r.json()["store"].as_str()), (StatusCode::OK, Some("sqlite")));
    h.send(get("/v1/auth/check")).await;
    let r = h.send(get("/metrics")).await;
    assert_eq!(r.status, StatusCode::OK);
    assert!(String::from_utf8_lossy(&r.body).contains("cloakroom_http_requests_total"));
    let r = h.send(get("/nope")).await;
    assert_eq!((r.status, r.code().as_str()), (StatusCode::NOT_FOUND, "not_found"));
    let r = h.send(req(Method::DELETE, "/v1/login").body(Body::empty()).unwrap()).await;
    assert_eq!(r.status, StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(r.code(), "method_not_allowed");
}

#[tokio::test]
async fn a_role_change_gives_the_cookie_a_new_token_on_its_next_request() {
    let h = harness().await;
    h.add_user("alice", &["staff"]).await;
    let key = h.api_key().await;
    let b = h.login("alice").await;
    let bearer = h.login("alice").await;
    let r = h.send(b.get("/v1/session")).await;
    assert!(r.set_cookies().is_empty(), "no rotation without a privilege change");

    tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    let grant = req(Method::PUT, "/v1/admin/users/alice")
        .header(header::AUTHORIZATION, format!("Bearer {key}"))
        .header(header::CONTENT_TYPE, "application/json")
        .body(Body::from(json!({"roles": ["staff", "billing"]}).to_string()))
        .unwrap();
    assert_eq!(h.send(grant).await.status, StatusCode::OK);

    let r = h.send(b.get("/v1/auth/check?role=billing")).await;
    assert_eq!(r.status, StatusCode::OK, "the new role applies at once");
    let r = h.send(b.get("/v1/session")).await;
    assert_eq!(r.status, StatusCode::OK);
    let new_token = r.cookie_token().expect("a new token with the new privileges");
    assert_ne!(new_token, b.token);
    assert_eq!(
        h.send(b.get("/v1/session")).await.status,
        StatusCode::UNAUTHORIZED,
        "the old token ended"
    );
    let rotated = Browser { token: new_token, ..b.clone() };
    let r = h.send(rotated.get("/v1/session")).await;
    assert_eq!(r.status, StatusCode::OK);
    assert!(r.set_cookies().is_empty(), "rotated once, not on every request");
    assert_eq!(
        r.json()["csrf_token"],
        b.csrf.as_str(),
        "the CSRF token stays valid for open pages"
    );
    assert_eq!(
        h.send(rotated.send(Method::POST, "/v1/sessions/revoke-others", None)).await.status,
        StatusCode::OK
    );
    // A bearer token is never swapped under a program's feet (it was revoked above, by revoke-others).
    let r = h
        .send(
            req(Method::GET, "/v1/session")
                .header(header::AUTHORIZATION, format!("Bearer {}", bearer.token))
                .body(Body::empty())
                .unwrap(),
        )
        .await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    use cloakroom_core::store::prelude::*;
    let events = h.store.list_audit(&Default::default()).await.unwrap();
    assert!(events.iter().any(|e| e.kind.as_str() == "session_rotated"
        && e.detail.as_deref() == Some("privileges changed")));
}

#[tokio::test]
async fn bearer_sessions_keep_their_token_across_a_role_change() {
    let h = harness().await;
    h.add_user("alice", &[]).await;
    let b = h.login("alice").await;
    tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    h.set_roles("alice", &["billing"]).await;
    let bearer = |t: &str| {
        req(Method::GET, "/v1/auth/check?role=billing")
            .header(header::AUTHORIZATION, format!("Bearer {t}"))
            .body(Body::empty())
            .unwrap()
    };
    let r = h.send(bearer(&b.token)).await;
    assert_eq!(r.status, StatusCode::OK);
    assert!(r.set_cookies().is_empty());
    assert_eq!(h.send(bearer(&b.token)).await.status, StatusCode::OK);
}

#[tokio::test]
async fn tokens_in_urls_are_never_accepted() {
    let h = harness().await;
    h.add_user("alice", &[]).await;
    let b = h.login("alice").await;
    for uri in [
        format!("/v1/session?token={}", b.token),
        format!("/v1/auth/check?session={}", b.token),
        format!("/v1/session?__Host-cloakroom={}", b.token),
    ] {
        let r = h.send(req(Method::GET, &uri).body(Body::empty()).unwrap()).await;
        assert!(
            r.status == StatusCode::UNAUTHORIZED || r.status == StatusCode::BAD_REQUEST,
            "{uri}: {}",
            r.status
        );
    }
}

#[tokio::test]
async fn forward_auth_of_a_state_changing_request_keeps_csrf_and_origin_checks() {
    let h = harness().await;
    h.add_user("alice", &[]).await;
    let b = h.login("alice").await;
    let check = |method_header: &str, method: &str, csrf: Option<&str>, origin: Option<&str>| {
        let mut r = req(Method::GET, "/v1/auth/check")
            .header(header::COOKIE, b.cookie())
            .header(method_header, method);
        if let Some(c) = csrf {
            r = r.header("x-csrf-token", c);
        }
        if let Some(o) = origin {
            r = r.header(header::ORIGIN, o);
        }
        r.body(Body::empty()).unwrap()
    };
    for name in ["x-original-method", "x-forwarded-method"] {
        assert_eq!(
            h.send(check(name, "GET", None, None)).await.status,
            StatusCode::OK,
            "safe methods need nothing"
        );
        assert_eq!(h.send(check(name, "POST", None, None)).await.code(), "csrf_failed");
        assert_eq!(h.send(check(name, "DELETE", Some("wrong"), None)).await.code(), "csrf_failed");
        assert_eq!(
            h.send(check(name, "POST", Some(&b.csrf), Some("https://evil.example"))).await.code(),
            "origin_mismatch"
        );
        assert_eq!(
            h.send(check(name, "not a method", Some("x"), None)).await.code(),
            "csrf_failed",
            "unreadable = unsafe"
        );
        let r = h.send(check(name, "PUT", Some(&b.csrf), Some(ORIGIN))).await;
        assert_eq!(r.status, StatusCode::OK);
        assert_eq!(r.header("x-cloakroom-username"), Some("alice"));
        assert_eq!(r.header("x-cloakroom-csrf-token"), Some(b.csrf.as_str()));
        // A form behind the proxy: the browser's own signals stand in for the token.
        let r = h.send(check(name, "POST", None, Some(ORIGIN))).await;
        assert_eq!(r.status, StatusCode::OK, "an allowed Origin without Fetch Metadata");
        for (site, want) in
            [("same-origin", 200), ("none", 200), ("same-site", 403), ("cross-site", 403)]
        {
            let mut request = check(name, "POST", None, None);
            request.headers_mut().insert("sec-fetch-site", site.parse().unwrap());
            assert_eq!(h.send(request).await.status.as_u16(), want, "Sec-Fetch-Site: {site}");
        }
        // An app page under `Referrer-Policy: no-referrer` sends `Origin: null`.
        let mut request = check(name, "POST", None, Some("null"));
        request.headers_mut().insert("sec-fetch-site", "same-origin".parse().unwrap());
        assert_eq!(h.send(request).await.status, StatusCode::OK, "Origin: null, same-origin");
        let mut request = check(name, "POST", None, Some("null"));
        request.headers_mut().insert("sec-fetch-site", "cross-site".parse().unwrap());
        assert_eq!(h.send(request).await.status, StatusCode::FORBIDDEN, "Origin: null, cross-site");
    }
    // Without any method header (a recipe that forgot it), a request with an Origin, and a
    // WebSocket handshake, still get the write rules.
    let bare = |headers: &[(&'static str, &'static str)]| {
        let mut r = req(Method::GET, "/v1/auth/check").header(header::COOKIE, b.cookie());
        for (k, v) in headers {
            r = r.header(*k, *v);
        }
        r.body(Body::empty()).unwrap()
    };
    let evil = ("origin", "https://evil.example");
    assert_eq!(h.send(bare(&[evil])).await.code(), "origin_mismatch");
    let sibling = [("sec-fetch-site", "same-site"), ("origin", ORIGIN)];
    assert_eq!(h.send(bare(&sibling)).await.status, StatusCode::FORBIDDEN);
    let ws = ("sec-fetch-mode", "websocket");
    assert_eq!(h.send(bare(&[ws, evil])).await.code(), "origin_mismatch");
    let same = ("sec-fetch-site", "same-origin");
    assert_eq!(h.send(bare(&[ws, same])).await.status, StatusCode::OK);
    assert_eq!(h.send(bare(&[])).await.status, StatusCode::OK, "a plain navigation");
    let link = ("sec-fetch-site", "cross-site");
    assert_eq!(h.send(bare(&[link])).await.status, StatusCode::OK, "a link from elsewhere");
    // Asked directly, a write still needs the token: Fetch Metadata is no substitute there.
    let direct = req(Method::POST, "/v1/sessions/revoke-others")
        .header(header::COOKIE, b.cookie())
        .header("sec-fetch-site", "same-origin")
        .header(header::ORIGIN, ORIGIN)
        .body(Body::empty())
        .unwrap();
    assert_eq!(h.send(direct).await.code(), "csrf_failed");
    // Bearer callers need no CSRF token, whatever the method.
    let r = h
        .send(
            req(Method::GET, "/v1/auth/check")
                .header(header::AUTHORIZATION, format!("Bearer {}", b.token))
                .header("x-forwarded-method", "POST")
                .body(Body::empty())
                .unwrap(),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK);
}

/// Regression: behind a proxy the check's Set-Cookie never reaches the browser, so a rotation
/// there (after a role change) would have logged forward-auth users out.
#[tokio::test]
async fn the_forward_auth_check_never_rotates_the_token() {
    let h = harness().await;
    h.add_user("alice", &[]).await;
    let b = h.login("alice").await;
    tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    h.set_roles("alice", &["billing"]).await;
    for _ in 0..3 {
        let r = h.send(b.get("/v1/auth/check?role=billing")).await;
        assert_eq!(r.status, StatusCode::OK);
        assert!(r.set_cookies().is_empty(), "no rotation through forward-auth");
    }
    // Cloakroom's own endpoint rotates it.
    assert!(h.send(b.get("/v1/session")).await.cookie_token().is_some());
}

/// CORS for an SPA on another allowed origin: preflights answered, responses readable with
/// credentials by that origin only (never `*`), and the Origin and CSRF rules unchanged.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_spa_on_an_allowed_origin_gets_cors_and_others_do_not() {
    let spa = "https://spa.example.com";
    let h = harness_with(RawConfig {
        cors_origins: Some(vec![spa.to_owned()]),
        allowed_origins: Some(vec!["https://www.example.com".to_owned()]),
        ..Default::default()
    })
    .await;
    h.add_user("alice", &[]).await;
    let b = h.login("alice").await;
    let preflight = |origin: &str| {
        req(Method::OPTIONS, "/v1/sessions/revoke-others")
            .header(header::ORIGIN, origin)
            .header("access-control-request-method", "POST")
            .header("access-control-request-headers", "x-csrf-token, content-type")
            .body(Body::empty())
            .unwrap()
    };
    let r = h.send(preflight(spa)).await;
    assert_eq!(r.status, StatusCode::NO_CONTENT);
    assert_eq!(r.header("access-control-allow-origin"), Some(spa));
    assert_eq!(r.header("access-control-allow-credentials"), Some("true"));
    assert!(r.header("access-control-allow-methods").unwrap().contains("POST"));
    assert!(r.header("access-control-allow-headers").unwrap().contains("x-csrf-token"));
    assert_eq!(r.header("vary"), Some("origin"));
    let r = h.send(preflight("https://evil.example")).await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    assert_eq!(r.header("access-control-allow-origin"), None);

    // A read: the SPA may see the body (its CSRF token), another origin may not.
    let read = |origin: &str| {
        req(Method::GET, "/v1/session")
            .header(header::COOKIE, b.cookie())
            .header(header::ORIGIN, origin)
            .body(Body::empty())
            .unwrap()
    };
    let r = h.send(read(spa)).await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.header("access-control-allow-origin"), Some(spa));
    assert!(r.header("access-control-expose-headers").unwrap().contains("etag"));
    for other in ["https://evil.example", "https://www.example.com"] {
        // An allowed origin that is no CORS origin may write with the token, never read.
        let r = h.send(read(other)).await;
        assert_eq!(r.header("access-control-allow-origin"), None, "{other}");
        assert_eq!(r.header("vary"), Some("origin"));
    }

    // A write from the SPA still needs the CSRF token; with it, it works.
    let write = |csrf: Option<&str>| {
        let mut r = req(Method::POST, "/v1/sessions/revoke-others")
            .header(header::COOKIE, b.cookie())
            .header(header::ORIGIN, spa);
        if let Some(c) = csrf {
            r = r.header("x-csrf-token", c);
        }
        r.body(Body::empty()).unwrap()
    };
    assert_eq!(h.send(write(None)).await.code(), "csrf_failed");
    let r = h.send(write(Some(&b.csrf))).await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.header("access-control-allow-origin"), Some(spa));
}
