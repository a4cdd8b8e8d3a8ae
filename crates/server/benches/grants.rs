//! Grants: offline verification in one criterion run (decode + verify, `Verifier::redeem` with the
//! replay cache, against HS256 JWT verification as a yardstick), then the redeem round trip over
//! HTTP: `POST /v1/grants/redeem` against a `cloakroom serve` process, p50 / p99.
//!
//! `cargo bench -p cloakroom-server --bench grants` (the HTTP part starts the release binary on a
//! temporary SQLite store and, when `redis-server` is installed, on a private Redis).
#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used, clippy::print_stdout)]

use std::io::{BufRead as _, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant, SystemTime};

use cloakroom_grant::{Claims, KeySet, SecretKey, Verifier, decode};
use criterion::{BatchSize, Criterion, black_box};
use serde_json::{Value, json};

fn offline(c: &mut Criterion) {
    let key = SecretKey::generate().unwrap();
    let keys = KeySet::from_keys([key.public_key()]);
    let now = SystemTime::now();
    let claims =
        Claims::new("grt_bench", "usr_bench", "ada", "files", now, Duration::from_secs(600))
            .with_action("download")
            .with_resource("/reports/q3.pdf");
    let token = key.sign(&claims).unwrap();
    let mut g = c.benchmark_group("grant");
    g.bench_function("decode_and_verify", |b| {
        b.iter(|| decode(black_box(&token), "files", &keys, now, Duration::from_secs(5)).unwrap())
    });
    let verifier = Verifier::new("files", keys.clone());
    let mut n = 0u64;
    g.bench_function("verifier_redeem_fresh_grant", |b| {
        b.iter_batched(
            || {
                n += 1;
                let c = Claims::new(
                    &format!("grt_{n}"),
                    "usr_b",
                    "ada",
                    "files",
                    now,
                    Duration::from_secs(600),
                );
                key.sign(&c).unwrap()
            },
            |t| verifier.redeem_at(&t, now).unwrap(),
            BatchSize::SmallInput,
        )
    });
    g.bench_function("sign", |b| b.iter(|| key.sign(black_box(&claims)).unwrap()));
    let secret = b"a shared secret that is long enough!!";
    let jwt = jsonwebtoken::encode(
        &jsonwebtoken::Header::default(),
        &json!({"sub": "usr_bench", "aud": "files", "exp": 4_000_000_000u64}),
        &jsonwebtoken::EncodingKey::from_secret(secret),
    )
    .unwrap();
    let dk = jsonwebtoken::DecodingKey::from_secret(secret);
    let mut v = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::HS256);
    v.set_audience(&["files"]);
    g.bench_function("jwt_hs256_verify", |b| {
        b.iter(|| jsonwebtoken::decode::<Value>(black_box(&jwt), &dk, &v).unwrap())
    });
    g.finish();
}

const PASSWORD: &str = "correct horse battery staple";
const ROUNDS: usize = 2000;

fn bin() -> String {
    env!("CARGO_BIN_EXE_cloakroom").to_owned()
}

fn run_cli(store: &str, args: &[&str], stdin: &str, env: &[(&str, String)]) {
    use std::io::Write as _;
    let mut child = Command::new(bin())
        .args(args)
        .args(["--store", store])
        .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(stdin.as_bytes()).unwrap();
    assert!(child.wait().unwrap().success());
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

async fn redeem_round_trip(store: &str, env: &[(&str, String)]) {
    run_cli(store, &["user", "add", "alice", "--password-stdin"], &format!("{PASSWORD}\n"), env);
    let mut child = Command::new(bin())
        .args(["serve", "--listen", "127.0.0.1:0", "--store", store])
        .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let line = BufReader::new(child.stdout.take().unwrap()).lines().next().unwrap().unwrap();
    let base = line.strip_prefix("cloakroom listening on ").unwrap().to_owned();
    let http = reqwest::Client::new();
    // Grants are issued with an API key (for alice); only the redemption is timed.
    let out = Command::new(bin())
        .args(["apikey", "create", "bench", "--store", store])
        .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
        .output()
        .unwrap();
    let key = String::from_utf8(out.stdout).unwrap().trim().to_owned();
    let mut tokens = Vec::with_capacity(ROUNDS);
    for _ in 0..ROUNDS {
        let r: Value = http
            .post(format!("{base}/v1/grants"))
            .bearer_auth(&key)
            .json(&json!({"audience": "app", "username": "alice", "ttl_seconds": 600}))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        tokens.push(r["token"].as_str().unwrap().to_owned());
    }
    let mut times = Vec::with_capacity(ROUNDS);
    for t in &tokens {
        let start = Instant::now();
        let r = http
            .post(format!("{base}/v1/grants/redeem"))
            .json(&json!({"token": t, "audience": "app"}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        let _ = r.bytes().await.unwrap();
        times.push(start.elapsed());
    }
    times.sort();
    println!(
        "redeem round trip over HTTP ({}), {ROUNDS} grants: p50 {:?}  p99 {:?}  max {:?}",
        store.split(':').next().unwrap(),
        percentile(&times, 0.5),
        percentile(&times, 0.99),
        times[times.len() - 1]
    );
    let _ = child.kill();
    let _ = child.wait();
}

fn main() {
    let mut c = Criterion::default().configure_from_args();
    offline(&mut c);
    c.final_summary();

    let rt =
        tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    rt.block_on(async {
        let dir = tempfile::tempdir().unwrap();
        let sqlite = format!("sqlite:{}", dir.path().join("bench.db").display());
        redeem_round_trip(&sqlite, &[]).await;
        if Command::new("redis-server").arg("--version").output().is_ok() {
            let redis = cloakroom_store_redis::testing::RedisServer::start().await;
            let env =
                [("CLOAKROOM_GRANT_KEY", "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA".to_owned())];
            redeem_round_trip(&redis.url(), &env).await;
        }
    });
}
