//! Forward-auth behind a real nginx (`auth_request`), started by the test on a free port in a
//! temp dir: a protected location reaches the upstream with the `X-Cloakroom-*` headers for a
//! logged-in user (and never with headers the client made up), redirects to the login page
//! otherwise, `?role=` gives 403, and a state-changing request through the proxy keeps its CSRF
//! and Origin checks. The configuration is the one `docs/integrations.md` recommends.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::net::SocketAddr;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::process::cli;
use common::proxy::{Killed, ProxiedSetup, guarded_app_keeps_the_contract, wait_for};

fn nginx_binary() -> String {
    ["/usr/sbin/nginx", "/usr/local/sbin/nginx", "/usr/bin/nginx"]
        .into_iter()
        .find(|p| Path::new(p).exists())
        .expect("nginx is not installed: scripts/test installs it (apt-get install nginx)")
        .to_owned()
}

fn nginx_conf(dir: &Path, port: u16, cloakroom: &str, app: SocketAddr) -> String {
    let d = dir.display();
    let auth = |name: &str, query: &str| {
        format!(
            "location = /{name} {{
            internal;
            proxy_pass http://cloakroom/v1/auth/check{query};
            proxy_pass_request_body off;
            proxy_set_header Content-Length \"\";
            proxy_set_header X-Original-Method $request_method;
            proxy_set_header X-Original-URI $request_uri;
            proxy_http_version 1.1;
            proxy_set_header Connection \"\";
        }}"
        )
    };
    let protected = |prefix: &str, auth: &str| {
        format!(
            "location {prefix} {{
            auth_request /{auth};
            auth_request_set $cr_user_id $upstream_http_x_cloakroom_user_id;
            auth_request_set $cr_username $upstream_http_x_cloakroom_username;
            auth_request_set $cr_roles $upstream_http_x_cloakroom_roles;
            auth_request_set $cr_session $upstream_http_x_cloakroom_session_id;
            proxy_set_header X-Cloakroom-User-Id $cr_user_id;
            proxy_set_header X-Cloakroom-Username $cr_username;
            proxy_set_header X-Cloakroom-Roles $cr_roles;
            proxy_set_header X-Cloakroom-Session-Id $cr_session;
            error_page 401 = @login;
            proxy_pass http://app;
        }}"
        )
    };
    format!(
        "daemon off;
master_process off;
worker_processes 1;
pid {d}/nginx.pid;
error_log {d}/error.log info;
events {{ worker_connections 256; }}
http {{
    access_log off;
    client_body_temp_path {d}/body;
    proxy_temp_path {d}/proxy;
    fastcgi_temp_path {d}/fastcgi;
    uwsgi_temp_path {d}/uwsgi;
    scgi_temp_path {d}/scgi;
    upstream cloakroom {{ server {cloakroom}; keepalive 16; }}
    upstream app {{ server {app}; }}
    server {{
        listen 127.0.0.1:{port};
        {auth_any}
        {auth_admin}
        {app_loc}
        {admin_loc}
        location @login {{ return 302 /login?next=$request_uri; }}
        location /v1/ {{ proxy_pass http://cloakroom; }}
    }}
}}
",
        auth_any = auth("_auth", ""),
        auth_admin = auth("_auth_admin", "?role=admin"),
        app_loc = protected("/app/", "_auth"),
        admin_loc = protected("/admin/", "_auth_admin"),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nginx_auth_request_guards_an_app_with_cloakroom() {
    let ProxiedSetup { dir, db, port, public, cloakroom: _cloakroom, app, upstream } =
        ProxiedSetup::start().await;
    let conf = dir.path().join("nginx.conf");
    std::fs::write(&conf, nginx_conf(dir.path(), port, &upstream, app)).unwrap();
    let _nginx = Killed(
        Command::new(nginx_binary())
            .arg("-p")
            .arg(dir.path())
            .arg("-c")
            .arg(&conf)
            .arg("-e")
            .arg(dir.path().join("error.log"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    wait_for(&format!("{public}/v1/auth/check")).await;

    let (alice, root) = guarded_app_keeps_the_contract(&public, &format!("{public}/login")).await;
    let csrf = alice.csrf.clone().unwrap();

    // Logout through nginx ends it; a revocation by the CLI ends the admin's.
    let r = alice
        .request(reqwest::Method::POST, "/v1/logout")
        .header("origin", &public)
        .header("x-csrf-token", &csrf)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 204);
    assert_eq!(
        alice.request(reqwest::Method::GET, "/app/reports").send().await.unwrap().status(),
        302
    );
    let (code, _, _) = cli(&db, &["session", "revoke", "--user", "root"], None);
    assert_eq!(code, 0);
    let start = Instant::now();
    while root.request(reqwest::Method::GET, "/admin/panel").send().await.unwrap().status() != 302 {
        assert!(
            start.elapsed() < Duration::from_secs(1),
            "the CLI revocation reaches the check within 1 s"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
