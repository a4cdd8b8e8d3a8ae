//! The pages in real headless Chromium (Debian's `chromium`, driven by `playwright-core` from
//! npm; `scripts/test` installs both): `tests/browser/pages.mjs` against a real `cloakroom serve`.
//! Screenshots of each page are left in `target/browser-screenshots/` for review.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::io::{BufRead as _, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use common::process::{BIN, Server, add_user};

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn require_browser() {
    assert!(
        Path::new("/usr/bin/chromium").exists() || std::env::var_os("CHROMIUM").is_some(),
        "chromium is not installed: scripts/test installs it (apt-get install chromium)"
    );
    assert!(
        repo().join("tests/browser/node_modules/playwright-core").exists()
            && repo().join("tests/browser/node_modules/axe-core").exists(),
        "playwright-core or axe-core is not installed: scripts/test runs npm ci in tests/browser"
    );
}

/// Runs a script of `tests/browser` with `args`; panics with its output when it fails.
fn node(script: &str, args: &[&str]) {
    let out = Command::new("node")
        .arg(repo().join("tests/browser").join(script))
        .args(args)
        .output()
        .expect("node (scripts/test installs it with the browser tests' packages)");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    eprintln!("{stdout}{stderr}");
    assert!(out.status.success(), "browser test {script} failed:\n{stdout}\n{stderr}");
}

const PASSWORD: &str = "correct horse battery staple";

/// A server on a fresh store with the admin `alice`, and its base URL for Chromium: `localhost`
/// rather than 127.0.0.1, since Chromium keeps `Secure` cookies on http://localhost.
fn server_with_alice(dir: &Path) -> (Server, String) {
    let db = dir.join("c.db");
    add_user(&db, "alice", "admin", PASSWORD);
    let server = Server::start(&db, &dir.join("server.log"));
    let base = server.base.replace("127.0.0.1", "localhost");
    (server, base)
}

#[test]
fn pages_work_in_headless_chromium() {
    require_browser();
    let dir = tempfile::tempdir().unwrap();
    let (_server, base) = server_with_alice(dir.path());
    let password = PASSWORD;
    let shots = repo().join("target/browser-screenshots");
    node("pages.mjs", &[&base, shots.to_str().unwrap(), "alice", password]);
    for name in ["login", "sessions", "csrf-refused", "password", "admin"] {
        assert!(shots.join(format!("{name}.png")).exists(), "no screenshot of {name}");
    }
}

/// Issue 15: every page at 1280 and 390 px, light and dark, passes axe-core with no serious or
/// critical violation and does not scroll sideways; buttons name what they act on and are at
/// least 44 px tall; a refused login's error is an alert tied to its field.
#[test]
fn every_page_is_accessible_at_desktop_and_phone_width() {
    require_browser();
    let dir = tempfile::tempdir().unwrap();
    let (server, base) = server_with_alice(dir.path());
    let password = PASSWORD;
    // A second session, so the sessions page has another device to log out.
    let other = Command::new("curl")
        .args(["-sf", "-o", "/dev/null", "-H", "content-type: application/json"])
        .args(["-A", "Mozilla/5.0 (Windows NT 10.0; Win64; x64) Firefox/140.0", "-d"])
        .arg(format!(r#"{{"username":"alice","password":"{password}"}}"#))
        .arg(format!("{}/v1/login", server.base))
        .status()
        .expect("curl (scripts/test installs it)");
    assert!(other.success(), "the second login failed");
    let shots = repo().join("target/browser-screenshots");
    node("a11y.mjs", &[&base, shots.to_str().unwrap(), "alice", password]);
    let pages = ["login", "login-refused", "sessions", "password", "admin-list", "admin"];
    for page in pages.into_iter().chain(["api-keys", "audit", "message"]) {
        for width in ["1280", "390", "1280-dark", "390-dark"] {
            let shot = shots.join(format!("a11y-{page}-{width}.png"));
            assert!(shot.exists(), "no screenshot {}", shot.display());
        }
    }
}

/// Issue 15: every flow works with JavaScript switched off (the pages carry no script at all).
#[test]
fn the_pages_work_with_javascript_switched_off() {
    require_browser();
    let dir = tempfile::tempdir().unwrap();
    let (_server, base) = server_with_alice(dir.path());
    let shots = repo().join("target/browser-screenshots");
    node("nojs.mjs", &[&base, shots.to_str().unwrap(), "alice", PASSWORD]);
}

#[test]
fn the_setup_link_works_in_headless_chromium() {
    require_browser();
    let dir = tempfile::tempdir().unwrap();
    let mut child = Command::new(BIN)
        .args(["serve", "--listen", "127.0.0.1:0", "--store"])
        .arg(format!("sqlite:{}", dir.path().join("c.db").display()))
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let _listening = lines.next().unwrap().unwrap();
    let setup = lines.next().unwrap().unwrap();
    let link = setup.split_whitespace().find(|w| w.contains("/setup?token=")).expect(&setup);
    let shots = repo().join("target/browser-screenshots");
    node("setup.mjs", &[link, shots.to_str().unwrap(), "root", "a long admin secret"]);
    let _ = child.kill();
    let _ = child.wait();
}

/// An app's ordinary `<form method=post>` behind the nginx recipe of `docs/integrations.md`: it
/// posts (Chromium's `Sec-Fetch-Site: same-origin` stands in for the CSRF token the form cannot
/// send), and the same form served by another origin is refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_form_behind_nginx_posts_in_chromium() {
    use common::proxy::{ProxiedSetup, start_nginx, wait_for};
    require_browser();
    let setup = ProxiedSetup::start_as("localhost").await;
    let _nginx = start_nginx(setup.dir.path(), setup.port, &setup.upstream, setup.app);
    wait_for(&format!("http://127.0.0.1:{}/auth/healthz", setup.port)).await;

    // Another origin on the same site (another port of localhost) with the same form.
    let target = format!("{}/app/transfer", setup.public);
    let page = format!(
        "<!doctype html><html lang=en><title>Elsewhere</title><form method=post \
         action=\"{target}\"><input name=amount value=100><button>Send</button></form>"
    );
    let other = axum::Router::new().route(
        "/page",
        axum::routing::get(move || {
            let page = page.clone();
            async move { axum::response::Html(page) }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let other_url = format!("http://localhost:{}/page", listener.local_addr().unwrap().port());
    tokio::spawn(async move { axum::serve(listener, other).await });

    let shots = repo().join("target/browser-screenshots");
    let (public, shots) = (setup.public.clone(), shots.to_str().unwrap().to_owned());
    tokio::task::spawn_blocking(move || {
        let args = [public.as_str(), shots.as_str(), "alice", common::proxy::PASSWORD, &other_url];
        node("forms.mjs", &args);
    })
    .await
    .unwrap();
}

/// A single-page app on another origin (`--cors-origins`) logs in, reads its CSRF
/// token and writes with it, through CORS in Chromium; a page on an origin not allowed cannot
/// read the session.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_spa_on_another_origin_works_through_cors_in_chromium() {
    require_browser();
    let page = |title: &'static str| {
        axum::Router::new().route(
            "/",
            axum::routing::get(move || async move {
                axum::response::Html(format!("<!doctype html><html lang=en><title>{title}</title>"))
            }),
        )
    };
    let mut urls = Vec::new();
    for title in ["SPA", "Elsewhere"] {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        urls.push(format!("http://localhost:{}/", listener.local_addr().unwrap().port()));
        tokio::spawn(async move { axum::serve(listener, page(title)).await });
    }
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("c.db");
    let password = "correct horse battery staple";
    add_user(&db, "alice", "staff", password);
    let spa_origin = urls[0].trim_end_matches('/').to_owned();
    let server =
        Server::start_with(&db, &dir.path().join("s.log"), &["--cors-origins", &spa_origin]);
    let api = server.base.replace("127.0.0.1", "localhost");
    let shots = repo().join("target/browser-screenshots");
    let shots = shots.to_str().unwrap().to_owned();
    tokio::task::spawn_blocking(move || {
        node("spa.mjs", &[&api, &shots, "alice", password, &urls[0], &urls[1]]);
    })
    .await
    .unwrap();
}
