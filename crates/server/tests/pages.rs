//! The server-rendered pages through the router, as a browser without JavaScript uses them:
//! form posts with the `csrf_token` field, 303 redirects, cookies.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use axum::body::Body;
use axum::http::{Method, Request, StatusCode, header};
use common::{Browser, Harness, ORIGIN, PASSWORD, harness, req};

fn form(uri: &str, cookie: Option<&str>, fields: &[(&str, &str)]) -> Request<Body> {
    let mut b = req(Method::POST, uri)
        .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
        .header(header::ORIGIN, ORIGIN);
    if let Some(c) = cookie {
        b = b.header(header::COOKIE, c);
    }
    b.body(Body::from(serde_urlencoded::to_string(fields).unwrap())).unwrap()
}

fn text(r: &common::Reply) -> String {
    String::from_utf8_lossy(&r.body).into_owned()
}

async fn page_login(h: &Harness, user: &str, next: &str) -> (common::Reply, Option<String>) {
    let r = h
        .send(form("/login", None, &[("username", user), ("password", PASSWORD), ("next", next)]))
        .await;
    let token = r.cookie_token();
    (r, token)
}

fn browser(token: String) -> Browser {
    Browser { token, csrf: String::new(), session_id: String::new() }
}

/// The CSRF token a page embeds in its forms.
fn csrf_of(page: &str) -> String {
    let at = page.find("name=\"csrf_token\" value=\"").expect("a csrf field") + 25;
    page[at..].split('"').next().unwrap().to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn login_page_redirects_only_to_same_origin_paths() {
    let h = harness().await;
    h.add_user("alice", &[]).await;
    let r = h.send(req(Method::GET, "/login?next=/admin").body(Body::empty()).unwrap()).await;
    assert_eq!(r.status, StatusCode::OK);
    // (minijinja escapes `/` in attribute values.)
    assert!(text(&r).contains("name=\"next\" value=\"&#x2f;admin\""), "{}", text(&r));
    assert!(r.header("content-security-policy").unwrap().contains("default-src 'none'"));
    assert_eq!(r.header("x-frame-options"), Some("DENY"));

    let (r, token) = page_login(&h, "alice", "/account/password").await;
    assert_eq!(r.status, StatusCode::SEE_OTHER);
    assert_eq!(r.header("location"), Some("/account/password"));
    assert!(token.is_some());
    for evil in ["//evil.example/x", "https://evil.example", "/\\evil.example"] {
        let (r, _) = page_login(&h, "alice", evil).await;
        assert_eq!(r.header("location"), Some("/account/sessions"), "{evil}");
    }

    // A wrong password re-renders the form with one message, 401, and no cookie.
    let r = h.send(form("/login", None, &[("username", "alice"), ("password", "nope-nope")])).await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    assert!(text(&r).contains("role=\"alert\""));
    assert!(r.cookie_token().is_none());
    // Login CSRF: another origin's form is refused.
    let evil = req(Method::POST, "/login")
        .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
        .header(header::ORIGIN, "https://evil.example")
        .body(Body::from(format!("username=alice&password={PASSWORD}")))
        .unwrap();
    assert_eq!(h.send(evil).await.status, StatusCode::FORBIDDEN);
    // Markup in the username is escaped when the form is shown again.
    let r = h
        .send(form("/login", None, &[("username", "<script>x</script>"), ("password", "p")]))
        .await;
    assert!(!text(&r).contains("<script>x"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sessions_page_lists_marks_and_revokes_with_csrf_forms() {
    let h = harness().await;
    h.add_user("alice", &[]).await;
    // Not logged in: to the login page, and back here after.
    let r = h.send(req(Method::GET, "/account/sessions").body(Body::empty()).unwrap()).await;
    assert_eq!(r.status, StatusCode::SEE_OTHER);
    assert_eq!(r.header("location"), Some("/login?next=%2Faccount%2Fsessions"));

    let (_, a) = page_login(&h, "alice", "/").await;
    let (_, b) = page_login(&h, "alice", "/").await;
    let (a, b) = (browser(a.unwrap()), browser(b.unwrap()));
    let r = h.send(a.get("/account/sessions")).await;
    assert_eq!(r.status, StatusCode::OK);
    let page = text(&r);
    assert_eq!(page.matches("data-session=").count(), 2);
    assert!(page.contains(r#"<span class="tag">this device</span>"#));
    let csrf = csrf_of(&page);

    // The other session's id, from the page.
    let other = page
        .split("data-session=\"")
        .skip(1)
        .map(|s| s.split('"').next().unwrap().to_owned())
        .find(|id| !page.contains(&format!("data-session=\"{id}\" class=\"current\"")))
        .unwrap();

    // A tampered CSRF field is refused, and nothing is revoked.
    let uri = format!("/account/sessions/{other}/revoke");
    let r = h.send(form(&uri, Some(&a.cookie()), &[("csrf_token", "tampered")])).await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    assert_eq!(h.send(b.get("/account/sessions")).await.status, StatusCode::OK);

    let r = h.send(form(&uri, Some(&a.cookie()), &[("csrf_token", &csrf)])).await;
    assert_eq!(r.status, StatusCode::SEE_OTHER);
    assert_eq!(r.header("location"), Some("/account/sessions?done=revoked"));
    // The revoked browser is sent to log in on its next navigation.
    let r = h.send(b.get("/account/sessions")).await;
    assert_eq!(r.status, StatusCode::SEE_OTHER);
    assert!(r.header("location").unwrap().starts_with("/login"));

    // Log out all others.
    let (_, c) = page_login(&h, "alice", "/").await;
    let c = browser(c.unwrap());
    let r = h
        .send(form("/account/sessions/revoke-others", Some(&a.cookie()), &[("csrf_token", &csrf)]))
        .await;
    assert_eq!(r.status, StatusCode::SEE_OTHER);
    assert_eq!(h.send(c.get("/account/sessions")).await.status, StatusCode::SEE_OTHER);
    let r = h.send(a.get("/account/sessions?done=others")).await;
    assert!(text(&r).contains("Every other session was logged out."));

    // Log out.
    let r = h.send(form("/account/logout", Some(&a.cookie()), &[("csrf_token", &csrf)])).await;
    assert_eq!(r.status, StatusCode::SEE_OTHER);
    assert!(r.set_cookies().iter().any(|c| c.contains("Max-Age=0")));
    assert_eq!(h.send(a.get("/account/sessions")).await.status, StatusCode::SEE_OTHER);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn password_page_changes_it_and_keeps_this_session_with_a_new_token() {
    let h = harness().await;
    h.add_user("alice", &[]).await;
    let (_, a) = page_login(&h, "alice", "/").await;
    let (_, other) = page_login(&h, "alice", "/").await;
    let (a, other) = (browser(a.unwrap()), browser(other.unwrap()));
    let page = text(&h.send(a.get("/account/password")).await);
    let csrf = csrf_of(&page);
    let fields = [
        ("csrf_token", csrf.as_str()),
        ("current_password", "wrong-password"),
        ("new_password", "a brand new secret"),
    ];
    let r = h.send(form("/account/password", Some(&a.cookie()), &fields)).await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    // Typed twice, differently: refused, and nothing changed (this token still works).
    let typo = [
        ("csrf_token", csrf.as_str()),
        ("current_password", PASSWORD),
        ("new_password", "a brand new secret"),
        ("confirm_password", "a brand new secrte"),
    ];
    let r = h.send(form("/account/password", Some(&a.cookie()), &typo)).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert!(text(&r).contains("not the same"));
    assert_eq!(h.send(a.get("/account/sessions")).await.status, StatusCode::OK, "unchanged");
    let fields = [
        ("csrf_token", csrf.as_str()),
        ("current_password", PASSWORD),
        ("new_password", "a brand new secret"),
    ];
    let r = h.send(form("/account/password", Some(&a.cookie()), &fields)).await;
    assert_eq!(r.status, StatusCode::SEE_OTHER);
    let rotated = browser(r.cookie_token().expect("a new token for this session"));
    assert_eq!(h.send(rotated.get("/account/sessions")).await.status, StatusCode::OK);
    assert_eq!(h.send(a.get("/account/sessions")).await.status, StatusCode::SEE_OTHER, "old token");
    assert_eq!(
        h.send(other.get("/account/sessions")).await.status,
        StatusCode::SEE_OTHER,
        "other session"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_page_finds_users_revokes_and_disables() {
    let h = harness().await;
    h.add_user("root", &["admin"]).await;
    h.add_user("bob", &[]).await;
    let (_, admin) = page_login(&h, "root", "/").await;
    let (_, bob) = page_login(&h, "bob", "/").await;
    let (admin, bob) = (browser(admin.unwrap()), browser(bob.unwrap()));
    assert_eq!(h.send(bob.get("/admin")).await.status, StatusCode::FORBIDDEN);

    let page = text(&h.send(admin.get("/admin?username=bob")).await);
    assert_eq!(page.matches("data-session=").count(), 1);
    let csrf = csrf_of(&page);
    let sid = page.split("data-session=\"").nth(1).unwrap().split('"').next().unwrap().to_owned();
    let r = h
        .send(form(
            &format!("/admin/users/bob/sessions/{sid}/revoke"),
            Some(&admin.cookie()),
            &[("csrf_token", &csrf)],
        ))
        .await;
    assert_eq!(r.status, StatusCode::SEE_OTHER);
    assert_eq!(h.send(bob.get("/account/sessions")).await.status, StatusCode::SEE_OTHER);

    // Disabling asks first (issue 15: it fired at once); nothing changes until confirmed.
    let r = h
        .send(form("/admin/users/bob/disable", Some(&admin.cookie()), &[("csrf_token", &csrf)]))
        .await;
    assert_eq!(r.status, StatusCode::OK);
    assert!(text(&r).contains("Disable bob?"), "{}", text(&r));
    let (r, _) = page_login(&h, "bob", "/").await;
    assert_eq!(r.status, StatusCode::SEE_OTHER, "not disabled yet");
    let r = h
        .send(form(
            "/admin/users/bob/disable",
            Some(&admin.cookie()),
            &[("csrf_token", &csrf), ("confirm", "yes")],
        ))
        .await;
    assert_eq!(r.status, StatusCode::SEE_OTHER);
    let page = text(&h.send(admin.get("/admin?username=bob")).await);
    assert!(page.contains(r#"<span class="tag">disabled</span>"#), "{page}");
    let (r, _) = page_login(&h, "bob", "/").await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    let r = h
        .send(form("/admin/users/bob/enable", Some(&admin.cookie()), &[("csrf_token", "forged")]))
        .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    assert!(text(&h.send(admin.get("/admin?username=nobody")).await).contains("No such user."));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_setup_link_creates_the_first_admin_once() {
    let h = harness().await;
    let get = |uri: &str| req(Method::GET, uri).body(Body::empty()).unwrap();
    assert_eq!(h.send(get("/setup?token=guess")).await.status, StatusCode::FORBIDDEN);
    let token = h.state.arm_setup().unwrap();
    assert_eq!(h.send(get(&format!("/setup?token={token}"))).await.status, StatusCode::OK);
    assert_eq!(h.send(get("/setup?token=guess")).await.status, StatusCode::FORBIDDEN);

    // A policy failure keeps the link usable, and the name typed (issue 15: it was emptied).
    let r = h
        .send(form(
            "/setup",
            None,
            &[("token", &token), ("username", "root"), ("password", "short")],
        ))
        .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert!(text(&r).contains(r#"value="root""#), "the username is kept");
    // A second copy that differs is caught before anything is created.
    let typo = [
        ("token", token.as_str()),
        ("username", "root"),
        ("password", "a long admin secret"),
        ("confirm_password", "a long admin secreet"),
    ];
    let r = h.send(form("/setup", None, &typo)).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    let page = text(&r);
    assert!(page.contains("not the same") && page.contains(r#"value="root""#), "{page}");
    assert_eq!(h.send(get(&format!("/setup?token={token}"))).await.status, StatusCode::OK);
    let fields =
        [("token", token.as_str()), ("username", "root"), ("password", "a long admin secret")];
    let r = h.send(form("/setup", None, &fields)).await;
    assert_eq!(r.status, StatusCode::SEE_OTHER);
    let root = browser(r.cookie_token().expect("logged in"));
    let page = text(&h.send(root.get("/admin")).await);
    assert!(page.contains("Find a user"));
    // Spent.
    assert_eq!(h.send(form("/setup", None, &fields)).await.status, StatusCode::FORBIDDEN);
    assert_eq!(h.send(get(&format!("/setup?token={token}"))).await.status, StatusCode::FORBIDDEN);
}

/// Issue 15, brandable: `brand_name` in every title and header, `brand_color` as the accent,
/// `brand_logo` served by Cloakroom and shown in the header, and a `templates_dir` file in place
/// of the built-in template of its name (the others stay).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_brand_and_an_overridden_template_come_from_the_configuration() {
    use cloakroom_server::config::RawConfig;
    let dir = tempfile::tempdir().unwrap();
    let logo = dir.path().join("acme.svg");
    std::fs::write(&logo, "<svg xmlns='http://www.w3.org/2000/svg' width='8' height='8'/>")
        .unwrap();
    let templates = dir.path().join("templates");
    std::fs::create_dir(&templates).unwrap();
    std::fs::write(
        templates.join("login.html"),
        concat!(
            "{% extends \"base.html\" %}{% block content %}<p>Acme staff only</p>",
            "<form method=\"post\" action=\"{{ base }}/login\"><input name=\"username\">",
            "<input name=\"password\" type=\"password\"><button>Enter</button></form>",
            "{% endblock %}"
        ),
    )
    .unwrap();
    let h = common::harness_with(RawConfig {
        brand_name: Some("Acme Login".into()),
        brand_color: Some("#0A7".into()),
        brand_logo: Some(logo.to_str().unwrap().into()),
        templates_dir: Some(templates.to_str().unwrap().into()),
        ..Default::default()
    })
    .await;
    let get = |uri: &str| req(Method::GET, uri).body(Body::empty()).unwrap();

    // (minijinja writes `/` in attribute values as `&#x2f;`, which browsers read as `/`.)
    let login = text(&h.send(get("/login")).await).replace("&#x2f;", "/");
    assert!(login.contains("<title>Log in · Acme Login</title>"), "{login}");
    assert!(login.contains("Acme staff only"), "the override renders: {login}");
    assert!(login.contains(r#"<img src="/brand/logo" alt="">Acme Login</p>"#), "{login}");
    let css = h.send(get("/assets/style.css")).await;
    assert_eq!(css.headers[header::CONTENT_TYPE], "text/css; charset=utf-8");
    assert!(text(&css).contains("--brand: #0a7;"), "the accent colour is in the stylesheet");
    // The templates not overridden are the built-in ones, with the brand.
    h.add_user("alice", &[]).await;
    let (_, a) = page_login(&h, "alice", "/").await;
    let page = text(&h.send(browser(a.unwrap()).get("/account/sessions")).await);
    assert!(page.contains("<title>Your sessions · Acme Login</title>"), "{page}");

    let r = h.send(get("/brand/logo")).await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.headers[header::CONTENT_TYPE], "image/svg+xml");
    assert!(r.headers[header::CONTENT_SECURITY_POLICY].to_str().unwrap().contains("sandbox"));
    assert_eq!(r.body, std::fs::read(&logo).unwrap());

    // Without a logo there is none to fetch, and the default name stays.
    let plain = harness().await;
    assert_eq!(plain.send(get("/brand/logo")).await.status, StatusCode::NOT_FOUND);
    assert!(text(&plain.send(get("/login")).await).contains("<title>Log in · Cloakroom</title>"));
}

/// Issue 15, a real admin: a paged, searchable list of users, and "log out everywhere" for a lost
/// laptop, which ends every session and leaves the account enabled.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_admin_lists_searches_and_pages_users_and_logs_one_out_everywhere() {
    let h = harness().await;
    h.add_user("root", &["admin"]).await;
    for i in 0..30 {
        h.add_user(&format!("user{i:02}"), &[]).await;
    }
    let (_, admin) = page_login(&h, "root", "/").await;
    let admin = browser(admin.unwrap());
    let page = text(&h.send(admin.get("/admin")).await);
    assert_eq!(page.matches("data-user=").count(), 25, "one page of 25");
    assert!(page.contains("Page 1 of 2") && page.contains("rel=\"next\""), "{page}");
    let second = text(&h.send(admin.get("/admin?q=&page=2")).await);
    assert_eq!(second.matches("data-user=").count(), 6, "root and 30 users: 31");
    let found = text(&h.send(admin.get("/admin?q=USER1")).await);
    assert_eq!(found.matches("data-user=").count(), 10, "user10 to user19: {found}");
    let none = text(&h.send(admin.get("/admin?q=nobody")).await);
    assert!(none.contains("No user matches"), "{none}");

    let (_, one) = page_login(&h, "user07", "/").await;
    let (_, two) = page_login(&h, "user07", "/").await;
    let (one, two) = (browser(one.unwrap()), browser(two.unwrap()));
    let csrf = csrf_of(&text(&h.send(admin.get("/admin?username=user07")).await));
    let r = h
        .send(form(
            "/admin/users/user07/logout-everywhere",
            Some(&admin.cookie()),
            &[("csrf_token", &csrf)],
        ))
        .await;
    assert_eq!(r.status, StatusCode::SEE_OTHER);
    assert_eq!(h.send(one.get("/account/sessions")).await.status, StatusCode::SEE_OTHER);
    assert_eq!(h.send(two.get("/account/sessions")).await.status, StatusCode::SEE_OTHER);
    let page = text(&h.send(admin.get("/admin?username=user07&done=logged-out")).await);
    assert!(page.contains("the account stays enabled") && !page.contains(">disabled<"), "{page}");
    let (r, _) = page_login(&h, "user07", "/").await;
    assert_eq!(r.status, StatusCode::SEE_OTHER, "the user can log in again");

    // Roles, edited as one set; a bad one refused with nothing changed.
    let roles = |r: &str| {
        form(
            "/admin/users/user07/roles",
            Some(&admin.cookie()),
            &[("csrf_token", csrf.as_str()), ("roles", r)],
        )
    };
    assert_eq!(h.send(roles("staff, ops")).await.status, StatusCode::SEE_OTHER);
    let page = text(&h.send(admin.get("/admin?username=user07")).await);
    assert!(page.contains(r#"value="ops, staff""#), "{page}");
    assert_eq!(h.send(roles("staff, not a role!")).await.status, StatusCode::BAD_REQUEST);
    let page = text(&h.send(admin.get("/admin?username=user07")).await);
    assert!(page.contains(r#"value="ops, staff""#), "unchanged: {page}");
    let nobody = form(
        "/admin/users/nobody/roles",
        Some(&admin.cookie()),
        &[("csrf_token", csrf.as_str()), ("roles", "staff")],
    );
    assert_eq!(h.send(nobody).await.status, StatusCode::NOT_FOUND, "the form creates no one");
}

/// Issue 15, a real admin: API keys made on a page are shown once and work at once; revoking one
/// ends it; the audit log filters by user, kind and time.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_admin_makes_and_revokes_api_keys_and_reads_the_audit_log() {
    let h = harness().await;
    h.add_user("root", &["admin"]).await;
    h.add_user("bob", &[]).await;
    let (_, admin) = page_login(&h, "root", "/").await;
    let admin = browser(admin.unwrap());
    let (_, _) = page_login(&h, "bob", "/").await;
    let csrf = csrf_of(&text(&h.send(admin.get("/admin/api-keys")).await));
    let r = h
        .send(form(
            "/admin/api-keys",
            Some(&admin.cookie()),
            &[("csrf_token", &csrf), ("name", "ci-bot")],
        ))
        .await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.headers[header::CACHE_CONTROL], "no-store");
    let page = text(&r);
    let at = page.find("id=\"new-key\" type=\"text\" value=\"").expect("the key, once") + 32;
    let key = page[at..].split('"').next().unwrap().to_owned();
    let api = |key: &str| {
        req(Method::GET, "/v1/admin/users/bob")
            .header(header::AUTHORIZATION, format!("Bearer {key}"))
            .body(Body::empty())
            .unwrap()
    };
    assert_eq!(h.send(api(&key)).await.status, StatusCode::OK, "the new key works");
    let list = text(&h.send(admin.get("/admin/api-keys")).await);
    assert!(
        list.contains("data-key=\"ci-bot\"") && !list.contains(&key),
        "listed, never shown again"
    );
    // A second key of that name: refused, on the page.
    let r = h
        .send(form(
            "/admin/api-keys",
            Some(&admin.cookie()),
            &[("csrf_token", &csrf), ("name", "ci-bot")],
        ))
        .await;
    assert_eq!(r.status, StatusCode::CONFLICT);
    let r = h
        .send(form(
            "/admin/api-keys/ci-bot/revoke",
            Some(&admin.cookie()),
            &[("csrf_token", &csrf)],
        ))
        .await;
    assert_eq!(r.status, StatusCode::SEE_OTHER);
    let back = text(&h.send(admin.get(r.header("location").unwrap())).await);
    assert!(back.contains("The API key was revoked."), "{back}");
    assert_eq!(h.send(api(&key)).await.status, StatusCode::UNAUTHORIZED, "revoked at once");

    let all = text(&h.send(admin.get("/admin/audit")).await);
    let row = |kind: &str| format!(r#"<td data-label="Kind">{kind}</td>"#);
    assert!(
        all.contains(&row("api_key_created")) && all.contains(&row("login_succeeded")),
        "{all}"
    );
    let bobs =
        text(&h.send(admin.get("/admin/audit?user=bob&kind=login_succeeded&since=1h")).await);
    assert_eq!(bobs.matches(&row("login_succeeded")).count(), 1, "{bobs}");
    assert!(!bobs.contains(&row("api_key_created")), "{bobs}");
    let r = h.send(admin.get("/admin/audit?kind=nonsense")).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    // Only for admins.
    let (_, bob) = page_login(&h, "bob", "/").await;
    let bob = browser(bob.unwrap());
    assert_eq!(h.send(bob.get("/admin/audit")).await.status, StatusCode::FORBIDDEN);
    assert_eq!(h.send(bob.get("/admin/api-keys")).await.status, StatusCode::FORBIDDEN);
}
