//! Forward-auth behind a real Caddy (`forward_auth`), started by the test on a free port in a temp
//! dir, with the configuration `docs/integrations.md` recommends: the app gets the
//! `X-Cloakroom-*` headers of a logged-in user (never ones the client made up), anonymous visitors
//! are redirected to the login page, `?role=` gives 403, and a state-changing request through
//! Caddy keeps its CSRF and Origin checks (Caddy sends `X-Forwarded-Method`).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::net::SocketAddr;
use std::path::Path;
use std::process::{Command, Stdio};

use common::proxy::{
    BASE_PATH, Killed, ProxiedSetup, doc_block, guarded_app_keeps_the_contract, replace_once,
    wait_for,
};

/// The recipe of `docs/integrations.md`, as written: only the addresses change.
fn caddyfile(port: u16, cloakroom: &str, app: SocketAddr) -> String {
    let recipe = doc_block("## Caddy", "caddyfile");
    let recipe = replace_once(&recipe, "app.example.com {", &format!("http://127.0.0.1:{port} {{"));
    let recipe = recipe.replace("cloakroom:7878", cloakroom).replace("app:8080", &app.to_string());
    format!("{{\n    admin off\n    auto_https off\n}}\n{recipe}")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn caddy_forward_auth_guards_an_app_with_cloakroom() {
    let caddy_bin = ["/usr/bin/caddy", "/usr/local/bin/caddy"]
        .into_iter()
        .find(|p| Path::new(p).exists())
        .expect("caddy is not installed: scripts/test installs it (apt-get install caddy)");
    let ProxiedSetup { dir, db: _, port, public, cloakroom: _cloakroom, app, upstream } =
        ProxiedSetup::start().await;
    let conf = dir.path().join("Caddyfile");
    std::fs::write(&conf, caddyfile(port, &upstream, app)).unwrap();
    let _caddy = Killed(
        Command::new(caddy_bin)
            .args(["run", "--adapter", "caddyfile", "--config"])
            .arg(&conf)
            // Caddy keeps state under $HOME / XDG dirs: keep it in the temp dir.
            .env("HOME", dir.path())
            .env("XDG_DATA_HOME", dir.path().join("data"))
            .env("XDG_CONFIG_HOME", dir.path().join("config"))
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(dir.path().join("caddy.log")).unwrap())
            .spawn()
            .unwrap(),
    );
    wait_for(&format!("{public}{BASE_PATH}/healthz")).await;

    let (alice, _) = guarded_app_keeps_the_contract(&public).await;
    // The client's query string never reaches the check: an `audience` or `role` of the client's
    // choosing must not change what the check decides.
    let status = async |path: &str| {
        alice.request(reqwest::Method::GET, path).send().await.unwrap().status().as_u16()
    };
    assert_eq!(status("/admin/panel?role=staff&audience=x").await, 403);
    assert_eq!(status("/app/r?audience=x&role=nope").await, 200);
}
