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

use common::proxy::{Killed, ProxiedSetup, guarded_app_keeps_the_contract, wait_for};

fn caddyfile(port: u16, cloakroom: &str, app: SocketAddr) -> String {
    let guard = |role: &str| {
        format!(
            "forward_auth {cloakroom} {{
            uri /v1/auth/check{role}
            copy_headers X-Cloakroom-User-Id X-Cloakroom-Username X-Cloakroom-Roles X-Cloakroom-Session-Id
            @unauthorized status 401
            handle_response @unauthorized {{
                redir * /login?next={{uri}}
            }}
        }}"
        )
    };
    format!(
        "{{
    admin off
    auto_https off
}}
http://127.0.0.1:{port} {{
    handle /v1/* {{
        reverse_proxy {cloakroom}
    }}
    handle /app/* {{
        {app_guard}
        reverse_proxy {app}
    }}
    handle /admin/* {{
        {admin_guard}
        reverse_proxy {app}
    }}
}}
",
        app_guard = guard("?"),
        admin_guard = guard("?role=admin"),
    )
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
    wait_for(&format!("{public}/v1/auth/check")).await;

    let (alice, _) = guarded_app_keeps_the_contract(&public, "/login").await;
    // The client's query string never reaches the check: an `audience` or `role` of the client's
    // choosing must not change what the check decides.
    let status = async |path: &str| {
        alice.request(reqwest::Method::GET, path).send().await.unwrap().status().as_u16()
    };
    assert_eq!(status("/admin/panel?role=staff&audience=x").await, 403);
    assert_eq!(status("/app/r?audience=x&role=nope").await, 200);
}
