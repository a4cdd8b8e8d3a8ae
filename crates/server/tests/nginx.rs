//! Forward-auth behind a real nginx (`auth_request`), started by the test on a free port in a
//! temp dir: a protected location reaches the upstream with the `X-Cloakroom-*` headers for a
//! logged-in user (and never with headers the client made up), redirects to the login page
//! otherwise, `?role=` gives 403, and a state-changing request through the proxy keeps its CSRF
//! and Origin checks. The configuration is the one `docs/integrations.md` recommends.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::{Duration, Instant};

use common::process::cli;
use common::proxy::{
    BASE_PATH, ProxiedSetup, guarded_app_keeps_the_contract, start_nginx, wait_for,
};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nginx_auth_request_guards_an_app_with_cloakroom() {
    let ProxiedSetup { dir, db, port, public, cloakroom, app, upstream } =
        ProxiedSetup::start().await;
    let _nginx = start_nginx(dir.path(), port, &upstream, app);
    wait_for(&format!("{public}{BASE_PATH}/healthz")).await;

    let (alice, root) = guarded_app_keeps_the_contract(&public).await;
    let csrf = alice.csrf.clone().unwrap();

    // Logout through nginx ends it; a revocation by the CLI ends the admin's.
    let r = alice
        .request(reqwest::Method::POST, &format!("{BASE_PATH}/v1/logout"))
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

    // API clients get a 401 in JSON, not a redirect to a page.
    let r = alice
        .request(reqwest::Method::GET, "/app/reports")
        .header("accept", "application/json")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    assert_eq!(r.json::<serde_json::Value>().await.unwrap()["error"]["code"], "unauthenticated");

    // Cloakroom's own pages live under the base path, beside the app's /admin/, and link there.
    let mut admin = common::proxy::Browser { cookie: None, csrf: None, ..root };
    admin.login("root").await;
    let page = admin.request(reqwest::Method::GET, &format!("{BASE_PATH}/admin?username=alice"));
    let page = page.send().await.unwrap();
    assert_eq!(page.status(), 200);
    let html = page.text().await.unwrap().replace("&#x2f;", "/");
    assert!(html.contains(&format!("action=\"{BASE_PATH}/admin/users/alice/disable\"")), "{html}");
    assert!(!html.contains("action=\"/admin"), "no form leaves the base path: {html}");

    // Cloakroom down: nobody gets through, and visitors see a page that says so.
    cloakroom.kill9();
    let r = admin.request(reqwest::Method::GET, "/app/reports").send().await.unwrap();
    assert_eq!(r.status(), 503);
    assert_eq!(r.headers()["retry-after"], "5");
    assert!(r.text().await.unwrap().contains("Sign-in is unavailable"));
}
