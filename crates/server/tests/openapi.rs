//! The OpenAPI document against the router: every documented operation reaches a handler (no
//! fallback 404, no 405), every route in `app.rs` is documented, and the document is 3.1.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::BTreeSet;

use axum::body::Body;
use axum::http::{Method, Request, StatusCode};
use common::harness;
use serde_json::Value;

async fn spec() -> Value {
    let h = harness().await;
    let r = h.send(Request::get("/v1/openapi.json").body(Body::empty()).unwrap()).await;
    assert_eq!(r.status, StatusCode::OK);
    r.json()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_documented_operation_is_routed() {
    let h = harness().await;
    let doc = spec().await;
    assert_eq!(doc["openapi"], "3.1.0");
    let mut operations = 0;
    for (path, item) in doc["paths"].as_object().unwrap() {
        if path == "/v1/revocations" {
            continue; // an endless event stream; covered by tests/grants.rs
        }
        let uri =
            path.replace("{id}", "ses_AAAAAAAAAAAAAAAAAAAAAA").replace("{username}", "nobody");
        for method in item.as_object().unwrap().keys() {
            let m = Method::from_bytes(method.to_uppercase().as_bytes()).unwrap();
            let r =
                h.send(Request::builder().method(m).uri(&uri).body(Body::empty()).unwrap()).await;
            let fallback = r.status == StatusCode::NOT_FOUND
                && r.json()["error"]["message"] == "no such route";
            assert!(!fallback, "{method} {path} is documented but not routed");
            assert_ne!(r.status, StatusCode::METHOD_NOT_ALLOWED, "{method} {path}");
            operations += 1;
        }
    }
    assert!(operations >= 25, "{operations}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_route_is_documented() {
    let doc = spec().await;
    let documented: BTreeSet<String> = doc["paths"].as_object().unwrap().keys().cloned().collect();
    let source = include_str!("../src/app.rs");
    let routed: BTreeSet<String> = source
        .split(".route(\"")
        .skip(1)
        .map(|rest| rest.split('"').next().unwrap().to_owned())
        .collect();
    assert!(routed.len() >= 20, "{routed:?}");
    let undocumented: Vec<_> = routed.difference(&documented).collect();
    assert!(undocumented.is_empty(), "routes missing from the OpenAPI document: {undocumented:?}");
    let unrouted: Vec<_> = documented.difference(&routed).collect();
    assert!(unrouted.is_empty(), "documented paths that app.rs does not route: {unrouted:?}");
}

/// Summaries are for the people who read the document (not the handlers' Rust doc text), and
/// the service API declares the API-key scheme it takes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn summaries_are_user_text_and_the_service_api_takes_an_api_key() {
    let doc = spec().await;
    let schemes = &doc["components"]["securitySchemes"];
    assert_eq!(schemes["apiKey"]["scheme"], "bearer");
    assert_eq!(schemes["apiKey"]["bearerFormat"], "crk_…");
    assert_eq!(schemes["bearer"]["bearerFormat"], "crs_…");
    for (path, item) in doc["paths"].as_object().unwrap() {
        for (method, op) in item.as_object().unwrap() {
            let summary = op["summary"].as_str().unwrap_or_default();
            assert!(
                !summary.is_empty() && !summary.contains('`') && !summary.contains("handler"),
                "{method} {path}: summary {summary:?}"
            );
            assert!(op.get("description").is_none(), "{method} {path}: Rust doc text");
            let service =
                path.starts_with("/v1/admin/") || (path == "/v1/grants" && method == "post");
            let takes_key = op["security"]
                .as_array()
                .is_some_and(|s| s.iter().any(|r| r.get("apiKey").is_some()));
            assert_eq!(service, takes_key, "{method} {path}: the apiKey scheme");
        }
    }
}
