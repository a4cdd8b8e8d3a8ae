//! `/metrics` and the logs as operators read them, through the real binary: every family has
//! `# HELP` and a unit or `_total` in its name; build info, live sessions, store operations and
//! process metrics are there; the check's latency resolves well under a millisecond; the
//! Grafana dashboard in `deploy/grafana/` names only metrics that exist. The access log names
//! route, status and session id, never a token; refused CSRF and Origin checks are logged with
//! their reason; a log that is no terminal has no colour codes.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::BTreeSet;
use std::path::Path;
use std::time::{Duration, Instant};

use common::process::{Server, add_user};
use serde_json::{Value, json};

const PASSWORD: &str = "correct horse battery staple";

/// The families a scrape declares (`# TYPE name kind`), with their kind.
fn families(page: &str) -> Vec<(String, String)> {
    page.lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .map(|l| {
            let mut parts = l.split_whitespace();
            (parts.next().unwrap().to_owned(), parts.next().unwrap().to_owned())
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_and_logs_are_what_operators_expect() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("m.db");
    add_user(&db, "alice", "staff", PASSWORD);
    let log = dir.path().join("m.log");
    let server = Server::start_with(&db, &log, &["--access-log", "true"]);
    let base = &server.base;
    let http = reqwest::Client::new();

    // Some of everything: a failed and two good logins, checks (a miss, then hits), a refused
    // cookie write, a revocation.
    let login = |password: &'static str| {
        http.post(format!("{base}/v1/login"))
            .json(&json!({"username": "alice", "password": password}))
            .send()
    };
    assert_eq!(login("wrong password!").await.unwrap().status(), 401);
    let r = login(PASSWORD).await.unwrap();
    let cookie = r.headers()["set-cookie"].to_str().unwrap().split(';').next().unwrap().to_owned();
    let token = cookie.split_once('=').unwrap().1.to_owned();
    let body: Value = r.json().await.unwrap();
    let csrf = body["csrf_token"].as_str().unwrap().to_owned();
    let session_id = body["session"]["id"].as_str().unwrap().to_owned();
    let _other = login(PASSWORD).await.unwrap();
    for _ in 0..3 {
        let r = http.get(format!("{base}/v1/auth/check")).header("cookie", &cookie);
        assert_eq!(r.send().await.unwrap().status(), 200);
    }
    let refused = http.post(format!("{base}/v1/sessions/revoke-others")).header("cookie", &cookie);
    assert_eq!(refused.send().await.unwrap().status(), 403);
    let revoke = http
        .post(format!("{base}/v1/sessions/revoke-others"))
        .header("cookie", &cookie)
        .header("x-csrf-token", &csrf);
    assert_eq!(revoke.send().await.unwrap().status(), 200);

    // The live-sessions gauge is set every 15 s, the first time at start; wait for one with 1.
    let start = Instant::now();
    let page = loop {
        let page = http.get(format!("{base}/metrics")).send().await.unwrap().text().await.unwrap();
        if page.lines().any(|l| l == "cloakroom_sessions_active 1") {
            break page;
        }
        assert!(start.elapsed() < Duration::from_secs(20), "no live-sessions gauge of 1:\n{page}");
        tokio::time::sleep(Duration::from_millis(500)).await;
    };

    let families = families(&page);
    for (name, kind) in &families {
        assert!(page.contains(&format!("# HELP {name} ")), "{name} has no HELP");
        let unit_ok = match kind.as_str() {
            "counter" => name.ends_with("_total"),
            "histogram" => name.ends_with("_seconds"),
            _ => true,
        };
        assert!(unit_ok, "{kind} {name} has no unit in its name");
    }
    let names: BTreeSet<&str> = families.iter().map(|(n, _)| n.as_str()).collect();
    for wanted in [
        "cloakroom_build_info",
        "cloakroom_sessions_active",
        "cloakroom_store_operation_duration_seconds",
        "cloakroom_http_request_duration_seconds",
        "cloakroom_auth_checks_total",
        "cloakroom_logins_total",
        "cloakroom_revocations_total",
        "process_cpu_seconds_total",
        "process_resident_memory_bytes",
        "process_open_fds",
        "process_max_fds",
    ] {
        assert!(names.contains(wanted), "no {wanted} in:\n{page}");
    }
    let version = format!("cloakroom_build_info{{version=\"{}\"}} 1", env!("CARGO_PKG_VERSION"));
    assert!(page.contains(&version), "{version}");
    assert!(
        page.contains(
            "cloakroom_store_operation_duration_seconds_count{operation=\"session_by_token\"}"
        ),
        "store operations are timed by operation"
    );
    // Buckets below 100 µs, where a cached check lands.
    let check_bucket = page.lines().find(|l| {
        l.starts_with("cloakroom_http_request_duration_seconds_bucket{route=\"/v1/auth/check\",le=\"0.00005\"}")
    });
    assert!(check_bucket.is_some(), "a 50 µs bucket for the check:\n{page}");

    // The dashboard names only metrics that exist.
    let dashboard =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../../deploy/grafana/cloakroom.json");
    let dashboard: Value =
        serde_json::from_str(&std::fs::read_to_string(dashboard).unwrap()).unwrap();
    let panels = dashboard["panels"].as_array().unwrap();
    assert!(panels.len() >= 10, "{} panels", panels.len());
    let mut used = BTreeSet::new();
    for panel in panels {
        for target in panel["targets"].as_array().unwrap() {
            let expr = target["expr"].as_str().unwrap();
            let words = expr.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'));
            for word in words.filter(|w| w.starts_with("cloakroom_") || w.starts_with("process_")) {
                let family = ["_bucket", "_sum", "_count"]
                    .iter()
                    .find_map(|s| word.strip_suffix(s).filter(|f| names.contains(f)))
                    .unwrap_or(word);
                used.insert(family.to_owned());
            }
        }
    }
    // A family that only appears after its first event (store errors) must at least be one
    // that the server describes.
    let source =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("src/metrics.rs"))
            .unwrap();
    for family in &used {
        let described = source.contains(&format!("\"{family}\""));
        assert!(
            names.contains(family.as_str()) || described,
            "the dashboard uses {family}, which the server neither exports nor describes"
        );
    }
    assert!(used.len() >= 12, "the dashboard shows {} metrics", used.len());

    // The logs.
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(!text.contains('\u{1b}'), "colour codes in a log that is no terminal");
    assert!(!text.contains(&token), "a session token in the log");
    let access = text.lines().filter(|l| l.contains("cloakroom::access")).collect::<Vec<_>>();
    assert!(
        access.iter().any(|l| l.contains("route=\"/v1/auth/check\"")
            && l.contains("status=200")
            && l.contains(&session_id)),
        "the check in the access log, with the session id:\n{}",
        access.join("\n")
    );
    assert!(
        access.iter().any(|l| l.contains("route=\"/v1/login\"") && l.contains("status=401")),
        "{}",
        access.join("\n")
    );
    let csrf_line = text.lines().find(|l| l.contains("cloakroom::csrf")).expect("a refusal logged");
    assert!(
        csrf_line.contains("csrf_failed") && csrf_line.contains("no CSRF token"),
        "{csrf_line}"
    );
}
