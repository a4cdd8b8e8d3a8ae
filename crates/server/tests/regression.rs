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
use cloakroom_core::user::UserChange;
use cloakroom_core::{Role, Store as _, Username};
use cloakroom_server::config::RawConfig;
use cloakroom_store_sqlite::SqliteStore;
use common::process::{BIN, cli};
use common::*;
use serde_json::{Value, json};

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
