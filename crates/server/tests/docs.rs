//! The examples of `docs/api.md` run as written: every ```sh block from the walkthrough on, in
//! order, in one bash with `set -e`, against the real binary on a fresh store (only the port
//! changes). What the docs show a command printing (`# ` lines; `…` stands for what differs per
//! run; a comment ending with `:` is prose) must appear in the output, in order.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::path::Path;
use std::process::Command;

use common::process::{Server, add_user};

fn api_doc() -> String {
    std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs/api.md"))
        .unwrap()
}

/// The `sh` blocks of `doc` from the heading `from` on.
fn sh_blocks(doc: &str, from: &str) -> Vec<String> {
    let start = doc.find(&format!("\n{from}\n")).unwrap_or_else(|| panic!("no {from}"));
    common::proxy::fenced(&doc[start..], "sh")
}

/// Whether `line` matches `pattern`, where each `…` stands for any text.
fn matches(pattern: &str, line: &str) -> bool {
    let mut parts = pattern.split('…');
    let first = parts.next().unwrap_or_default();
    let Some(mut rest) = line.strip_prefix(first) else { return false };
    let parts: Vec<&str> = parts.collect();
    for (i, part) in parts.iter().enumerate() {
        if i + 1 == parts.len() {
            return rest.ends_with(part);
        }
        match rest.find(part) {
            Some(at) => rest = &rest[at + part.len()..],
            None => return false,
        }
    }
    rest.is_empty()
}

/// Runs `script` in one `bash -e -o pipefail` in `dir`; its standard output, or a panic that
/// shows both outputs.
fn run_bash(script: &str, dir: &Path, what: &str) -> String {
    let out = Command::new("bash")
        .args(["-e", "-o", "pipefail", "-c", script])
        .current_dir(dir)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{what} failed:\n{stdout}\n{stderr}");
    stdout
}

#[test]
fn the_api_reference_examples_run_as_written() {
    for tool in ["curl", "jq"] {
        let found = Command::new(tool).arg("--version").output().is_ok();
        assert!(found, "{tool} is not installed: scripts/test installs it");
    }
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("cloakroom.db");
    let server = Server::start(&db, &dir.path().join("server.log"));
    let port = server.base.rsplit(':').next().unwrap().to_owned();
    add_user(&db, "admin", "admin", "correct horse battery staple");

    let blocks = sh_blocks(&api_doc(), "## Walkthrough");
    assert!(blocks.len() >= 20, "the reference keeps its examples ({} blocks)", blocks.len());
    let script = blocks.join("\n").replace("localhost:7878", &format!("localhost:{port}"));
    let stdout = run_bash(&script, dir.path(), "the examples");

    let expected = blocks.iter().flat_map(|b| b.lines()).filter_map(|l| l.strip_prefix("# "));
    let mut lines = stdout.lines().map(str::trim_end);
    for want in expected.filter(|w| !w.ends_with(':') && *w != "…") {
        assert!(
            lines.any(|line| matches(want, line)),
            "docs/api.md shows `{want}`, which the run did not print (in this order):\n{stdout}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_route_is_in_the_reference() {
    let doc = api_doc();
    let h = common::harness().await;
    let request = axum::http::Request::get("/v1/openapi.json");
    let spec = h.send(request.body(axum::body::Body::empty()).unwrap()).await.json();
    let mut routes = 0;
    for (path, item) in spec["paths"].as_object().unwrap() {
        for method in item.as_object().unwrap().keys() {
            let route = format!("`{} {path}", method.to_uppercase());
            assert!(doc.contains(&route), "docs/api.md does not document {route}`");
            routes += 1;
        }
    }
    assert!(routes >= 20, "{routes} routes");
    // Every error code the server constructs (`Self::new(StatusCode::…, "code", …)`).
    let source =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("src/error.rs"))
            .unwrap();
    let mut codes = 0;
    for call in source.split("Self::new(").skip(1) {
        let after_status = &call[call.find(',').unwrap() + 1..];
        let code = after_status.split('"').nth(1).unwrap();
        assert!(doc.contains(&format!("`{code}`")), "docs/api.md does not list the code {code}");
        codes += 1;
    }
    assert!(codes >= 15, "{codes} codes");
}

/// The README's "Five minutes with curl", as written, with `cloakroom` the binary on the test's
/// store and the port the test's.
#[test]
fn the_readme_walkthrough_runs_as_written() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("cloakroom.db");
    let server = Server::start(&db, &dir.path().join("server.log"));
    let port = server.base.rsplit(':').next().unwrap().to_owned();
    let readme =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("../../README.md"))
            .unwrap();
    let block = sh_blocks(&readme, "## Five minutes with curl").remove(0);
    let alias = "alias cloakroom=./target/release/cloakroom";
    let block = common::proxy::replace_once(&block, alias, "")
        .replace("localhost:7878", &format!("localhost:{port}"));
    let bin = common::process::BIN;
    let script =
        format!("cloakroom() {{ '{bin}' --store 'sqlite:{}' \"$@\"; }}\n{block}", db.display());
    let stdout = run_bash(&script, dir.path(), "the README walkthrough");
    assert!(stdout.contains("x-cloakroom-username: alice"), "the check: {stdout}");
    assert!(stdout.contains("{\"revoked\":1}"), "revoke-others: {stdout}");
    assert!(stdout.lines().any(|l| l.trim() == "401"), "the revoked device is out: {stdout}");
}
