//! Thousands of generated bad requests at the router: none may get a 5xx or panic, and the
//! service still works afterwards. Deterministic (seeded), so a failure reproduces.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use axum::body::Body;
use axum::http::{HeaderValue, Method, Request, StatusCode, header};
use common::*;
use serde_json::{Value, json};

/// splitmix64: a tiny deterministic generator, enough to pick cases.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
    fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len())]
    }
    fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| self.next() as u8).collect()
    }
    fn text(&mut self, n: usize) -> String {
        const CHARS: &[char] = &[
            'a', 'Z', '0', '_', '-', '.', '/', '%', '"', '\\', '{', '}', '[', ']', ',', ':', 'é',
            '😀', '\u{0}', ' ', '=', ';', '&', '+',
        ];
        (0..n).map(|_| *self.pick(CHARS)).collect()
    }
    fn text_upto(&mut self, max: usize) -> String {
        let n = self.below(max);
        self.text(n)
    }
    fn bytes_upto(&mut self, max: usize) -> Vec<u8> {
        let n = self.below(max);
        self.bytes(n)
    }
    fn json(&mut self, depth: u32) -> Value {
        match self.below(if depth > 3 { 5 } else { 8 }) {
            0 => Value::Null,
            1 => json!(self.next() % 2 == 0),
            2 => json!(self.next() as i64),
            3 => json!(f64::from(self.next() as u32) / 7.0),
            4 => Value::String(self.text_upto(40)),
            5 => Value::Array((0..self.below(4)).map(|_| self.json(depth + 1)).collect()),
            _ => {
                let keys = [
                    "username",
                    "password",
                    "token",
                    "roles",
                    "disabled",
                    "data",
                    "ip",
                    "user_agent",
                    "current_password",
                    "new_password",
                    "audience",
                    "x",
                    "",
                ];
                let mut m = serde_json::Map::new();
                for _ in 0..self.below(5) {
                    m.insert(self.pick(&keys).to_string(), self.json(depth + 1));
                }
                Value::Object(m)
            }
        }
    }
}

const PATHS: &[&str] = &[
    "/v1/login",
    "/v1/logout",
    "/v1/password",
    "/v1/session",
    "/v1/session/data",
    "/v1/sessions",
    "/v1/sessions/revoke-others",
    "/v1/auth/check",
    "/v1/auth/check?role=admin",
    "/v1/auth/check?role=",
    "/v1/auth/check?role=a&role=b",
    "/v1/auth/check?x=1",
    "/v1/admin/users/alice",
    "/v1/admin/users/alice/sessions",
    "/v1/admin/sessions",
    "/v1/admin/sessions?username=alice",
    "/v1/admin/sessions?username=%ff",
    "/v1/admin/sessions/validate",
    "/v1/grants",
    "/v1/grants/redeem",
    "/v1/grants/exchange",
    "/v1/keys",
    "/v1/keys?x=1",
    "/healthz",
    "/readyz",
    "/metrics",
    "/",
    "/v1",
    "/v1/",
];

fn path(rng: &mut Rng) -> String {
    match rng.below(6) {
        0 => format!("/v1/sessions/{}", percent(rng)),
        1 => format!("/v1/admin/users/{}", percent(rng)),
        2 => format!("/v1/admin/sessions/{}", percent(rng)),
        3 => format!("/v1/admin/users/{}/sessions", percent(rng)),
        _ => rng.pick(PATHS).to_string(),
    }
}

fn percent(rng: &mut Rng) -> String {
    let raw = match rng.below(5) {
        0 => rng.bytes_upto(30),
        1 => "ses_".bytes().chain(rng.bytes(22)).collect(),
        2 => vec![b'a'; 3000],
        3 => b"..%2f..%2fetc%2fpasswd".to_vec(),
        _ => rng.text_upto(20).into_bytes(),
    };
    raw.iter().map(|b| format!("%{b:02X}")).collect()
}

fn header_value(rng: &mut Rng, valid: &[String]) -> HeaderValue {
    let candidate = match rng.below(7) {
        0 => rng.pick(valid).clone().into_bytes(),
        1 => rng.bytes_upto(64).into_iter().map(|b| b.max(0x20)).filter(|b| *b != 0x7f).collect(),
        2 => vec![b'x'; 9000],
        3 => format!("{}; {}", rng.pick(valid), rng.text(10)).into_bytes(),
        4 => b"\xff\xfe\xfd".to_vec(),
        5 => Vec::new(),
        _ => rng.text_upto(50).into_bytes(),
    };
    HeaderValue::from_bytes(&candidate).unwrap_or_else(|_| HeaderValue::from_static("junk"))
}

fn body(rng: &mut Rng) -> (Option<&'static str>, Vec<u8>) {
    let ct = *rng.pick(&[
        Some("application/json"),
        Some("application/json; charset=utf-8"),
        Some("application/x-www-form-urlencoded"),
        Some("text/plain"),
        Some("multipart/form-data; boundary=x"),
        Some("application/jsonx"),
        Some(""),
        None,
    ]);
    let bytes = match rng.below(10) {
        8 => json!({
            "token": format!("v4.public.{}", rng.text_upto(300)),
            "audience": rng.text_upto(200),
        })
        .to_string()
        .into_bytes(),
        9 => json!({
            "audience": rng.text_upto(300),
            "action": rng.text_upto(80),
            "resource": rng.text_upto(2000),
            "ttl_seconds": rng.below(1000),
        })
        .to_string()
        .into_bytes(),
        0 => Vec::new(),
        1 => rng.bytes_upto(200),
        2 => rng.json(0).to_string().into_bytes(),
        3 => format!("{}{}", "[".repeat(200), "]".repeat(200)).into_bytes(),
        4 => format!(
            "username={}&password={}&csrf_token={}",
            rng.text(5),
            rng.text(300),
            rng.text(3)
        )
        .into_bytes(),
        5 => json!({"username": "alice", "password": rng.text_upto(200)}).to_string().into_bytes(),
        6 => vec![b'a'; 70_000],
        _ => json!({"data": {"x": "y".repeat(rng.below(20_000))}}).to_string().into_bytes(),
    };
    (ct, bytes)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn thousands_of_bad_requests_never_get_a_5xx() {
    let h = harness().await;
    h.add_user("alice", &["admin"]).await;
    let browser = h.login("alice").await;
    let key = h.api_key().await;
    let cookies = vec![
        browser.cookie(),
        format!("__Host-cloakroom={}x", browser.token),
        "__Host-cloakroom=crs_AAAA".into(),
        format!("a=b; __Host-cloakroom={}; __Host-cloakroom=junk", browser.token),
        "__Host-cloakroom".into(),
        "=;=;;".into(),
    ];
    let auths = vec![
        format!("Bearer {}", browser.token),
        format!("Bearer {key}"),
        format!("Bearer {key}x"),
        "Bearer".into(),
        "Bearer ".into(),
        "Basic YWxpY2U6cHc=".into(),
        "bearer crk_".into(),
    ];
    let csrfs = vec![browser.csrf.clone(), "wrong".into(), String::new()];
    let origins = vec![ORIGIN.to_owned(), "https://evil.example".into(), "null".into()];
    let matches = vec!["\"1\"".to_owned(), "*".into(), "W/\"99\"".into(), "\"".into()];
    let methods = [
        Method::GET,
        Method::POST,
        Method::PUT,
        Method::DELETE,
        Method::PATCH,
        Method::HEAD,
        Method::OPTIONS,
        Method::from_bytes(b"BREW").unwrap(),
    ];

    let mut rng = Rng(0xC10A_4B00);
    let mut statuses = std::collections::BTreeMap::new();
    let mut sent = 0;
    for i in 0..3000 {
        let mut b = Request::builder().method(rng.pick(&methods).clone());
        let uri = path(&mut rng);
        b = b.uri(uri.as_str());
        if rng.below(2) == 0 {
            b = b.header(header::COOKIE, header_value(&mut rng, &cookies));
        }
        if rng.below(3) == 0 {
            b = b.header(header::AUTHORIZATION, header_value(&mut rng, &auths));
        }
        if rng.below(2) == 0 {
            b = b.header("x-csrf-token", header_value(&mut rng, &csrfs));
        }
        if rng.below(3) == 0 {
            b = b.header(header::ORIGIN, header_value(&mut rng, &origins));
        }
        if rng.below(4) == 0 {
            b = b.header(header::IF_MATCH, header_value(&mut rng, &matches));
        }
        if rng.below(5) == 0 {
            b = b.header(
                "sec-fetch-site",
                header_value(&mut rng, &["cross-site".into(), "same-origin".into()]),
            );
        }
        let (ct, bytes) = body(&mut rng);
        if let Some(ct) = ct {
            b = b.header(header::CONTENT_TYPE, ct);
        }
        let Ok(request) = b.body(Body::from(bytes)) else {
            continue;
        };
        let request = if i % 7 == 0 { from_ip(request, "192.0.2.44") } else { request };
        let r = h.send(request).await;
        sent += 1;
        assert!(
            r.status.as_u16() < 500,
            "request {i} {uri} got {}: {}",
            r.status,
            String::from_utf8_lossy(&r.body)
        );
        if r.status.is_client_error() && !r.body.is_empty() {
            assert!(
                r.json()["error"]["code"].is_string(),
                "error bodies follow the contract: {uri}"
            );
        }
        *statuses.entry(r.status.as_u16()).or_insert(0) += 1;
    }
    assert!(sent > 2500, "only {sent} requests could be built");
    // The mix really reached the handlers, not only the router's 404.
    for s in [200u16, 400, 401, 403, 404] {
        assert!(statuses.get(&s).copied().unwrap_or(0) > 10, "too few {s}s: {statuses:?}");
    }
    // And the service still works.
    h.add_user("zed", &[]).await;
    let z = h.login("zed").await;
    assert_eq!(h.send(z.get("/v1/auth/check")).await.status, StatusCode::OK);
}
