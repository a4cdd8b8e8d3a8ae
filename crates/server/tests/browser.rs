//! The pages in real headless Chromium (Debian's `chromium`, driven by `playwright-core` from
//! npm; `scripts/test` installs both): `tests/browser/pages.mjs` against a real `cloakroom serve`.
//! Screenshots of each page are left in `target/browser-screenshots/` for review.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::path::Path;
use std::process::Command;

use common::process::{Server, cli};

#[test]
fn pages_work_in_headless_chromium() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let script = root.join("tests/browser/pages.mjs");
    assert!(
        Path::new("/usr/bin/chromium").exists() || std::env::var_os("CHROMIUM").is_some(),
        "chromium is not installed: scripts/test installs it (apt-get install chromium)"
    );
    assert!(
        root.join("tests/browser/node_modules/playwright-core").exists(),
        "playwright-core is not installed: scripts/test runs npm ci in tests/browser"
    );
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("c.db");
    let password = "correct horse battery staple";
    let (code, _, err) = cli(
        &db,
        &["user", "add", "alice", "--role", "admin", "--password-stdin"],
        Some(&format!("{password}\n")),
    );
    assert_eq!(code, 0, "{err}");
    let server = Server::start(&db, &dir.path().join("server.log"));
    // `localhost` rather than 127.0.0.1: Chromium keeps `Secure` cookies on http://localhost.
    let base = server.base.replace("127.0.0.1", "localhost");
    let shots = root.join("target/browser-screenshots");
    let out = Command::new("node")
        .arg(&script)
        .arg(&base)
        .arg(&shots)
        .arg("alice")
        .arg(password)
        .env("CLOAKROOM_TEST", "1")
        .output()
        .expect("node (scripts/test installs it with the browser tests' packages)");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    eprintln!("{stdout}{stderr}");
    assert!(out.status.success(), "browser test failed:\n{stdout}\n{stderr}");
    for name in ["login", "sessions", "csrf-refused", "password", "admin"] {
        assert!(shots.join(format!("{name}.png")).exists(), "no screenshot of {name}");
    }
}
