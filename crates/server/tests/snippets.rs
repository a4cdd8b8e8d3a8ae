//! The integration snippets of `examples/integrations/` (docs/integrations.md, "Apps in other
//! languages"), each run against the real `cloakroom` binary on a fresh store: the Express
//! middleware that validates the cookie through the service API, the Flask app behind the nginx
//! recipe that trusts the forward-auth headers, and the grant verifiers in Node (`paseto`) and
//! Python (`pyseto`). And docs/integrations.md shows each file as it is.
//!
//! Their packages are installed once, when missing or when their lock changed: `npm ci` in the
//! example's folder (`node_modules/` is ignored by git), `pip install --target` under Cargo's
//! target directory (never into the system's Python). Node, npm and Python must be there: a test
//! without them fails and says so, it is never skipped.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::io::{BufRead as _, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use base64::Engine as _;
use common::process::{Server, add_user, cli, http_login};
use common::proxy::{BASE_PATH, Browser, Killed, ProxiedSetup, start_nginx, wait_for};
use serde_json::{Value, json};

const PASSWORD: &str = "correct horse battery staple";

fn examples() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/integrations")
}

/// `tool --version`'s output; a panic that says how to get the tool when it is missing.
fn version(tool: &str, args: &[&str]) -> String {
    let how = match tool {
        "python3" => {
            "scripts/test needs it too (schemathesis); apt-get install python3 python3-pip"
        }
        _ => "scripts/test installs node and npm (apt-get install nodejs npm)",
    };
    let out = Command::new(tool)
        .args(args)
        .arg("--version")
        .output()
        .unwrap_or_else(|e| panic!("{tool} is not installed ({e}): {how}"));
    assert!(out.status.success(), "{tool} {args:?} --version failed: {how}");
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

/// The leading number of a version such as `v20.20.2` or `Python 3.11.7`, and the next one.
fn major_minor(version: &str) -> (u32, u32) {
    let digits = version.trim_start_matches(|c: char| !c.is_ascii_digit());
    let mut parts = digits.split('.').map(|p| p.parse::<u32>().unwrap_or(0));
    (parts.next().unwrap_or(0), parts.next().unwrap_or(0))
}

fn need_node() {
    let node = version("node", &[]);
    assert!(major_minor(&node).0 >= 20, "the snippets need Node 20 or later, found {node}");
    version("npm", &[]);
}

fn need_python() {
    let python = version("python3", &[]);
    assert!(major_minor(&python) >= (3, 10), "the snippets need Python 3.10 or later: {python}");
    version("python3", &["-m", "pip"]);
}

/// `npm ci` in the example's folder, unless its `node_modules` was installed from the same lock.
fn npm_ci(example: &str) -> PathBuf {
    need_node();
    let dir = examples().join(example);
    let lock = std::fs::read(dir.join("package-lock.json")).unwrap();
    let stamp = dir.join("node_modules/.cloakroom-installed-lock");
    if std::fs::read(&stamp).is_ok_and(|installed| installed == lock) {
        return dir;
    }
    let out = Command::new("npm")
        .args(["ci", "--no-audit", "--no-fund", "--loglevel=error"])
        .current_dir(&dir)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "npm ci in {}:\n{stderr}", dir.display());
    std::fs::write(stamp, lock).unwrap();
    dir
}

/// The example's `requirements.txt`, installed with `pip install --target` in a folder under
/// Cargo's target directory (again only when the requirements changed): the `PYTHONPATH`.
fn pip_install(example: &str) -> PathBuf {
    need_python();
    let requirements = examples().join(example).join("requirements.txt");
    let wanted = std::fs::read(&requirements).unwrap();
    let root = Path::new(env!("CARGO_TARGET_TMPDIR")).join("snippets");
    std::fs::create_dir_all(&root).unwrap();
    let site = root.join(format!("{example}-site"));
    let stamp = ".cloakroom-requirements.txt";
    if std::fs::read(site.join(stamp)).is_ok_and(|installed| installed == wanted) {
        return site;
    }
    // Into a fresh folder, then renamed into place: a half-done install is never used.
    let fresh = root.join(format!("{example}-site.{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&fresh);
    let out = Command::new("python3")
        .args(["-m", "pip", "install", "--quiet", "--disable-pip-version-check", "--no-input"])
        .arg("--target")
        .arg(&fresh)
        .arg("-r")
        .arg(&requirements)
        .env("PIP_ROOT_USER_ACTION", "ignore")
        .env("PIP_USER", "0")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "pip install -r {}:\n{stderr}", requirements.display());
    std::fs::write(fresh.join(stamp), wanted).unwrap();
    let _ = std::fs::remove_dir_all(&site);
    if std::fs::rename(&fresh, &site).is_err() {
        // Another run put its copy there first.
        let _ = std::fs::remove_dir_all(fresh);
    }
    site
}

/// docs/integrations.md shows each snippet as it is: the whole file, in a fenced block of the
/// section "Apps in other languages", named by its path.
#[test]
fn the_docs_show_the_snippets_as_they_are() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs/integrations.md");
    let doc = std::fs::read_to_string(path).unwrap();
    let start = doc.find("\n## Apps in other languages\n").expect("the section") + 1;
    let section = &doc[start..];
    let section = &section[..section[1..].find("\n## ").map_or(section.len(), |end| end + 1)];
    let files = [
        ("express/app.js", "js"),
        ("flask/app.py", "python"),
        ("node-grant/verify.js", "js"),
        ("python-grant/verify.py", "python"),
    ];
    for (file, lang) in files {
        let code = std::fs::read_to_string(examples().join(file)).unwrap();
        let block = format!("```{lang}\n{code}```\n");
        assert!(section.contains(&block), "the section shows {file} as it is (verbatim)");
        let named = format!("This is `examples/integrations/{file}`");
        assert!(section.contains(&named), "the section names examples/integrations/{file}");
    }
}

/// A snippet's server, killed on drop, on the port it printed (`listening on PORT`).
struct App {
    port: u16,
    _process: Killed,
}

/// Starts `command` (told `PORT=0`) with its stderr in `log`, and waits for its `listening on`
/// line.
fn start_app(mut command: Command, log: &Path) -> App {
    let log_file = std::fs::File::create(log).unwrap();
    command.env("PORT", "0").stdout(Stdio::piped()).stderr(log_file);
    let mut child = command.spawn().unwrap();
    let stdout = child.stdout.take().unwrap();
    let process = Killed(child);
    let (tx, rx) = std::sync::mpsc::channel();
    // Reads stdout to the end, so that the app never writes to a closed pipe.
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let Ok(line) = rx.recv_timeout(Duration::from_secs(30)) else {
        fail(&command, log, "printed no `listening on` line")
    };
    let port = line.strip_prefix("listening on ").and_then(|p| p.trim().parse::<u16>().ok());
    let Some(port) = port else {
        fail(&command, log, &format!("printed `{line}`, not `listening on PORT`"))
    };
    App { port, _process: process }
}

fn fail(command: &Command, log: &Path, what: &str) -> ! {
    let log = std::fs::read_to_string(log).unwrap_or_default();
    panic!("{command:?} {what}:\n{log}")
}

/// Cloakroom on a fresh SQLite file with alice (role staff) and an API key:
/// (dir, db path, server, key).
fn cloakroom_with_alice() -> (tempfile::TempDir, PathBuf, Server, String) {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("cloakroom.db");
    add_user(&db, "alice", "staff", PASSWORD);
    let (code, key, err) = cli(&db, &["apikey", "create", "snippets"], None);
    assert_eq!(code, 0, "{err}");
    let key = key.trim().to_owned();
    assert!(key.starts_with("crk_"), "{key}");
    let server = Server::start(&db, &dir.path().join("cloakroom.log"));
    (dir, db, server, key)
}

async fn get(http: &reqwest::Client, url: &str, cookie: Option<&str>) -> (u16, Value) {
    let mut request = http.get(url);
    if let Some(c) = cookie {
        request = request.header("cookie", c);
    }
    let r = request.send().await.unwrap();
    (r.status().as_u16(), r.json().await.unwrap_or(Value::Null))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn express_validates_the_cookie_through_the_service_api() {
    let example = npm_ci("express");
    let (dir, db, server, key) = cloakroom_with_alice();
    let mut node = Command::new("node");
    node.arg(example.join("app.js"))
        .env("CLOAKROOM_URL", &server.base)
        .env("CLOAKROOM_API_KEY", key);
    let app = start_app(node, &dir.path().join("express.log"));
    let me = format!("http://127.0.0.1:{}/me", app.port);
    let http = reqwest::Client::new();

    // A live session: 200 with the user, among the browser's other cookies too.
    let alice = http_login(&http, &server.base, "alice", PASSWORD).await;
    let (status, user) = get(&http, &me, Some(alice.cookie.as_str())).await;
    assert_eq!(status, 200, "{user}");
    assert_eq!(user["username"], "alice");
    assert_eq!(user["roles"], json!(["staff"]));
    assert!(user["id"].as_str().unwrap().starts_with("usr_"), "{user}");
    let among_others = format!("theme=dark; {}", alice.cookie);
    let (status, user) = get(&http, &me, Some(among_others.as_str())).await;
    assert_eq!(status, 200, "{user}");
    assert_eq!(user["username"], "alice");

    // No cookie, a made-up one, an empty one: 401.
    for cookie in [None, Some("__Host-cloakroom=crs_made_up"), Some("__Host-cloakroom=")] {
        assert_eq!(get(&http, &me, cookie).await.0, 401, "{cookie:?}");
    }

    // Every session of alice revoked through the CLI: the next request is refused.
    let (code, _, err) = cli(&db, &["session", "revoke", "--user", "alice"], None);
    assert_eq!(code, 0, "{err}");
    let start = Instant::now();
    while get(&http, &me, Some(alice.cookie.as_str())).await.0 != 401 {
        assert!(start.elapsed() < Duration::from_secs(1), "a CLI revocation reaches the app");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    // Cloakroom down: 503 for everyone, the live session included (fail closed).
    let again = http_login(&http, &server.base, "alice", PASSWORD).await;
    assert_eq!(get(&http, &me, Some(again.cookie.as_str())).await.0, 200);
    server.kill9();
    let (status, body) = get(&http, &me, Some(again.cookie.as_str())).await;
    assert_eq!(status, 503, "{body}");
    assert_eq!(get(&http, &me, None).await.0, 401, "no cookie: no need to ask");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flask_trusts_the_forward_auth_headers_behind_nginx() {
    let site = pip_install("flask");
    // Cloakroom with alice (role staff) as the nginx recipe runs it; the recipe's /app/ goes to
    // the Flask app instead of the setup's echoing one.
    let ProxiedSetup { dir, port, public, cloakroom: _cloakroom, upstream, .. } =
        ProxiedSetup::start().await;
    let mut python = Command::new("python3");
    python
        .arg(examples().join("flask/app.py"))
        .env("PYTHONPATH", site)
        .env("PYTHONDONTWRITEBYTECODE", "1");
    let flask = start_app(python, &dir.path().join("flask.log"));
    let flask_addr = SocketAddr::from(([127, 0, 0, 1], flask.port));
    let _nginx = start_nginx(dir.path(), port, &upstream, flask_addr);
    wait_for(&format!("{public}{BASE_PATH}/healthz")).await;

    let http =
        reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().unwrap();
    let mut alice = Browser { http: http.clone(), base: public.clone(), cookie: None, csrf: None };

    // Anonymous: the proxy sends browsers to the login page and API clients a 401; headers the
    // client makes up get nobody in.
    let r = alice.request(reqwest::Method::GET, "/app/me").send().await.unwrap();
    assert_eq!(r.status(), 302);
    let r = alice
        .request(reqwest::Method::GET, "/app/me")
        .header("accept", "application/json")
        .header("X-Cloakroom-User-Id", "usr_forged")
        .header("X-Cloakroom-Username", "root")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);

    // Logged in: the app sees alice as Cloakroom's check found her, whatever the client sends.
    alice.login("alice").await;
    let r = alice
        .request(reqwest::Method::GET, "/app/me")
        .header("X-Cloakroom-User-Id", "usr_forged")
        .header("X-Cloakroom-Username", "root")
        .header("X-Cloakroom-Roles", "admin")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let user: Value = r.json().await.unwrap();
    assert_eq!(user["username"], "alice");
    assert_eq!(user["roles"], json!(["staff"]));
    let id = user["id"].as_str().unwrap();
    assert!(id.starts_with("usr_") && id != "usr_forged", "{user}");

    // A plain form post: the browser's same-origin word is enough, the app needs no token of
    // its own; from another site, or with no sign at all, the proxy refuses it first.
    let page = alice.request(reqwest::Method::GET, "/app/transfer").send().await.unwrap();
    assert_eq!(page.status(), 200);
    assert!(page.text().await.unwrap().contains("<form method=\"post\">"));
    let post = |headers: &[(&str, &str)]| {
        let mut b = alice.request(reqwest::Method::POST, "/app/transfer");
        for (k, v) in headers {
            b = b.header(*k, *v);
        }
        b.form(&[("amount", "100")]).send()
    };
    let r = post(&[("sec-fetch-site", "same-origin"), ("origin", public.as_str())]).await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.json::<Value>().await.unwrap(), json!({"user": "alice", "amount": 100}));
    let evil = "https://evil.example";
    let r = post(&[("sec-fetch-site", "cross-site"), ("origin", evil)]).await.unwrap();
    assert_eq!(r.status(), 403, "a form on another site");
    let nothing: &[(&str, &str)] = &[];
    assert_eq!(post(nothing).await.unwrap().status(), 403, "no sign of the post's origin");

    // The app itself refuses a request that reached it without the proxy's headers. (With
    // headers, it believes them: that is why it must be reachable only through the proxy.)
    let direct = format!("http://{flask_addr}/app/me");
    assert_eq!(http.get(direct).send().await.unwrap().status(), 401);
}

/// `POST /v1/grants` with the API key, for alice: (token, grant id).
async fn issue(http: &reqwest::Client, base: &str, key: &str, mut body: Value) -> (String, String) {
    body["username"] = json!("alice");
    let r = http.post(format!("{base}/v1/grants")).bearer_auth(key).json(&body).send().await;
    let r = r.unwrap();
    assert_eq!(r.status(), 201);
    let issued: Value = r.json().await.unwrap();
    (issued["token"].as_str().unwrap().to_owned(), issued["id"].as_str().unwrap().to_owned())
}

/// `token` with one bit of its signed payload flipped.
fn tampered(token: &str) -> String {
    let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let mut parts: Vec<String> = token.split('.').map(str::to_owned).collect();
    let mut payload = b64.decode(&parts[2]).unwrap();
    payload[20] ^= 1;
    parts[2] = b64.encode(payload);
    parts.join(".")
}

/// What a grant verifier snippet must do, run as `verify(args)` → (exit code, stdout, stderr):
/// the claims for a fresh grant and its audience; exit 1 for another audience, a tampered or
/// expired grant and garbage; with `--redeem`, once only. And what it cannot do offline: know
/// that a grant was used.
async fn verifier_keeps_the_grant_rules(
    base: &str,
    key: &str,
    verify: impl Fn(&[&str]) -> (i32, String, String),
) {
    let http = reqwest::Client::new();
    let body = json!({"audience": "files", "action": "download", "resource": "/report.txt"});
    let (grant, id) = issue(&http, base, key, body).await;
    let token = grant.as_str();

    let (code, out, err) = verify(&[token, "files"]);
    assert_eq!(code, 0, "{out}{err}");
    let claims: Value = serde_json::from_str(out.trim()).unwrap();
    assert_eq!(claims["typ"], "cloakroom-grant");
    assert_eq!(claims["jti"], id.as_str());
    assert_eq!(claims["aud"], "files");
    assert_eq!(claims["username"], "alice");
    assert!(claims["sub"].as_str().unwrap().starts_with("usr_"), "{claims}");
    assert_eq!(claims["action"], "download");
    assert_eq!(claims["resource"], "/report.txt");
    assert!(claims["exp"].as_str().unwrap().ends_with('Z'), "{claims}");

    let refused = |args: &[&str], what: &str| {
        let (code, out, err) = verify(args);
        assert_eq!(code, 1, "{what}: {out}{err}");
        assert!(out.trim().is_empty(), "{what}: no claims on stdout: {out}");
        err
    };
    refused(&[token, "billing"], "another audience");
    let bad = tampered(token);
    refused(&[bad.as_str(), "files"], "a tampered grant");
    refused(&["v4.public.AAAA", "files"], "garbage");
    refused(&["not a token", "files"], "not a PASETO");

    let (short, _) = issue(&http, base, key, json!({"audience": "files", "ttl_seconds": 1})).await;
    assert_eq!(verify(&[short.as_str(), "files"]).0, 0);
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let err = refused(&[short.as_str(), "files"], "an expired grant");
    assert!(err.contains("expired"), "{err}");

    // Single use is the server's: redeemed once, then 409.
    let (code, out, err) = verify(&[token, "files", "--redeem"]);
    assert_eq!(code, 0, "{out}{err}");
    let err = refused(&[token, "files", "--redeem"], "a second redemption");
    assert!(err.contains("grant_already_used"), "{err}");
    // Offline, the used grant still verifies: what the snippets' comments warn about.
    assert_eq!(verify(&[token, "files"]).0, 0);
}

fn output(command: &mut Command) -> (i32, String, String) {
    let out = command.output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn node_verifies_grants_with_paseto() {
    let example = npm_ci("node-grant");
    let (_dir, _db, server, key) = cloakroom_with_alice();
    let script = example.join("verify.js");
    let verify = |args: &[&str]| {
        output(Command::new("node").arg(&script).args(args).env("CLOAKROOM_URL", &server.base))
    };
    verifier_keeps_the_grant_rules(&server.base, &key, verify).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_verifies_grants_with_pyseto() {
    let site = pip_install("python-grant");
    let (_dir, _db, server, key) = cloakroom_with_alice();
    let script = examples().join("python-grant/verify.py");
    let verify = |args: &[&str]| {
        output(
            Command::new("python3")
                .arg(&script)
                .args(args)
                .env("CLOAKROOM_URL", &server.base)
                .env("PYTHONPATH", &site)
                .env("PYTHONDONTWRITEBYTECODE", "1"),
        )
    };
    verifier_keeps_the_grant_rules(&server.base, &key, verify).await;
}
