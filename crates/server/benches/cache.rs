//! A cache-hit session check against JWT verification, in one criterion run.
//!
//! `cargo bench -p cloakroom-server --bench cache`. The node-local cache holds 1,000,000 live
//! sessions (`CLOAKROOM_BENCH_SESSIONS` to change it), each of its own user (realistic fields: a
//! 19-character username, two roles; the IP and user agent are not cached); each iteration takes
//! the cookie of a different random session from a request's headers and checks it as the
//! server's extractor does (`SessionManager::check`: parse and checksum the token, hash it, look
//! it up), with the Prometheus recorder installed (the hit counter is part of the cost). Beside it: `jsonwebtoken` 11
//! (rust_crypto) decoding and verifying an HS256 and an EdDSA session JWT with the usual claims.
//! Prints the resident memory the cache grew by, per session.
#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used)]

use std::hint::black_box;
use std::sync::Arc;
use std::time::Duration;

use axum::http::{HeaderMap, HeaderValue, header};
use cloakroom_core::cache::{CacheConfig, SessionCache};
use cloakroom_core::manager::ManagerConfig;
use cloakroom_core::password::{Cost, PasswordHasher};
use cloakroom_core::session::ExpiryPolicy;
use cloakroom_core::{
    ActiveSession, Authenticated, Role, SecretKind, SessionManager, Timestamp, Token, UserId,
    Username,
};
use cloakroom_server::extract::credential;
use cloakroom_store_sqlite::SqliteStore;
use criterion::{BatchSize, Criterion, criterion_group, criterion_main};
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};

/// Sessions in the cache: `CLOAKROOM_BENCH_SESSIONS`, default 1,000,000.
fn sessions() -> usize {
    std::env::var("CLOAKROOM_BENCH_SESSIONS").ok().and_then(|v| v.parse().ok()).unwrap_or(1_000_000)
}
const ED_PRIVATE: &str = "-----BEGIN PRIVATE KEY-----\nMC4CAQAwBQYDK2VwBCIEIMxGNYtQeOPt4Grjlhh6vOOBi3C9doQdYOJxjUIiMtBi\n-----END PRIVATE KEY-----\n";
const ED_PUBLIC: &str = "-----BEGIN PUBLIC KEY-----\nMCowBQYDK2VwAyEAZ4zD+tc5ARThKjqGs+8KUAjO4IMN8S6ctEufIbwFAXI=\n-----END PUBLIC KEY-----\n";

#[derive(Serialize, Deserialize)]
struct Claims {
    sub: String,
    name: String,
    roles: Vec<String>,
    sid: String,
    iat: u64,
    exp: u64,
}

/// How much of the process is backed by transparent huge pages (the cache asks for them).
fn huge_pages() -> String {
    std::fs::read_to_string("/proc/self/smaps_rollup")
        .ok()
        .and_then(|s| s.lines().find(|l| l.starts_with("AnonHugePages")).map(str::to_owned))
        .unwrap_or_else(|| "AnonHugePages: unknown".into())
}

fn rss_bytes() -> u64 {
    std::fs::read_to_string("/proc/self/statm")
        .ok()
        .and_then(|s| s.split_whitespace().nth(1).and_then(|p| p.parse::<u64>().ok()))
        .map_or(0, |pages| pages * 4096)
}

/// A session of its own user (the worst case for memory: nothing shared between sessions).
fn session(now: Timestamp) -> ActiveSession {
    let mut auth = Authenticated::fixture(&UserId::generate().unwrap(), now);
    auth.user.username = Username::parse("someone@example.com").unwrap();
    auth.user.roles = vec![Role::parse("staff").unwrap(), Role::parse("billing").unwrap()];
    ActiveSession::new(&auth).unwrap()
}

/// `bytes` of memory as one random cycle through its cache lines: following it from any line
/// visits every line once, in an order the prefetchers cannot guess.
fn random_ring(bytes: usize) -> Vec<u64> {
    let lines = bytes / 64;
    let mut order: Vec<usize> = (0..lines).collect();
    let mut seed = 0x9e37_79b9_7f4a_7c15_u64;
    for i in (1..lines).rev() {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        order.swap(i, (seed % (i as u64 + 1)) as usize);
    }
    let mut ring = vec![0u64; bytes / 8];
    for w in 0..lines {
        ring[order[w] * 8] = (order[(w + 1) % lines] * 8) as u64;
    }
    ring
}

fn bench(c: &mut Criterion) {
    let _ = cloakroom_server::metrics::handle(); // the production recorder, as the server runs it
    let rt =
        tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let store = rt.block_on(SqliteStore::open(dir.path().join("b.db").to_str().unwrap())).unwrap();
    let sessions = sessions();
    // Long TTL and touch interval: the bench must measure hits, not expiry.
    let cache = Arc::new(SessionCache::new(CacheConfig {
        capacity: 2 * sessions,
        ttl: Duration::from_secs(3600),
    }));
    cache.connected();
    let expiry =
        ExpiryPolicy { touch_interval: Duration::from_secs(3600), ..ExpiryPolicy::default() };
    let manager = SessionManager::new(
        Arc::new(store),
        PasswordHasher::new(Cost::INSECURE_TEST, 1, None),
        ManagerConfig { expiry, max_sessions_per_user: 0 },
    )
    .with_cache(Arc::clone(&cache));

    let now = Timestamp::now();
    let until = now.plus(Duration::from_secs(3600));
    // Requests name every tenth session (at most 100,000): spread over the whole cache.
    let cookies = (sessions / 10).clamp(1, 100_000);
    let mut tokens = Vec::with_capacity(cookies);
    let before = rss_bytes();
    for i in 0..sessions {
        let token = Token::generate(SecretKind::Session).unwrap();
        cache.insert(cache.begin_miss(), &token, &token.hash(), &session(now), until, now);
        // Keep every tenth token: the requests hit sessions spread over the whole cache.
        if i % (sessions / cookies) == 0 {
            tokens.push(token.expose());
        }
        // Memory per session at several sizes: tables grow in steps, so it varies with the count.
        if (i + 1) % (sessions / 4).max(1) == 0 {
            let grown = rss_bytes().saturating_sub(before);
            eprintln!(
                "cache: {} sessions, resident memory grew by {} MiB = {} bytes per session",
                cache.len(),
                grown / (1 << 20),
                grown / (i as u64 + 1)
            );
        }
    }
    eprintln!("cache: {}", huge_pages());
    let requests: Vec<HeaderMap> = tokens
        .iter()
        .map(|t| {
            let mut h = HeaderMap::new();
            h.insert(
                header::COOKIE,
                HeaderValue::from_str(&format!("_ga=GA1.2.3; __Host-cloakroom={t}; theme=dark"))
                    .unwrap(),
            );
            h
        })
        .collect();

    let claims = Claims {
        sub: "usr_0123456789abcdefghijkl".into(),
        name: "someone@example.com".into(),
        roles: vec!["staff".into(), "billing".into()],
        sid: "ses_0123456789abcdefghijkl".into(),
        iat: 1_900_000_000,
        exp: 4_000_000_000,
    };
    let hs_key = b"a 32-byte secret for HS256 only!";
    let hs = jsonwebtoken::encode(
        &Header::new(Algorithm::HS256),
        &claims,
        &EncodingKey::from_secret(hs_key),
    )
    .unwrap();
    let hs_dec = DecodingKey::from_secret(hs_key);
    let hs_val = Validation::new(Algorithm::HS256);
    let ed = jsonwebtoken::encode(
        &Header::new(Algorithm::EdDSA),
        &claims,
        &EncodingKey::from_ed_pem(ED_PRIVATE.as_bytes()).unwrap(),
    )
    .unwrap();
    let ed_dec = DecodingKey::from_ed_pem(ED_PUBLIC.as_bytes()).unwrap();
    let ed_val = Validation::new(Algorithm::EdDSA);

    let mut group = c.benchmark_group("session_check");
    // Inputs are made in batches of 32 before each timed batch: small enough to still be in the
    // CPU's caches when they are used (a batch of thousands of requests, criterion's default for
    // small inputs, would leave most of them in memory, and the check would pay their misses),
    // large enough that the clock reads around each batch do not count.
    const HOT: BatchSize = BatchSize::NumIterations(32);
    // Each iteration's request headers are built outside the timed part (a server has just parsed
    // them, so they are hot), while the sessions looked up are spread over the whole cache.
    let fixed_headers = requests[0].clone();
    let next_request = {
        let mut i = 0usize;
        let tokens = tokens.clone();
        move || {
            // Fresh bytes, as a server that has just parsed the request holds them.
            i = (i + 7919) % tokens.len();
            let mut h = HeaderMap::new();
            let cookie = format!("_ga=GA1.2.3; __Host-cloakroom={}; theme=dark", tokens[i]);
            h.insert(header::COOKIE, HeaderValue::from_str(&cookie).unwrap());
            h
        }
    };
    let mut next = next_request.clone();
    group.bench_function("cloakroom cache hit, cookie parsed", |b| {
        b.to_async(&rt).iter_batched(
            &mut next,
            |headers| {
                let manager = &manager;
                async move {
                    // As the server's extractor: find the cookie, then check it.
                    let (text, _) = credential(&headers, "__Host-cloakroom").unwrap().unwrap();
                    black_box(manager.check(text).await.unwrap().unwrap());
                    headers // dropped outside the timed part
                }
            },
            HOT,
        )
    });
    // The same from the token's text, as `jsonwebtoken::decode` below starts from the JWT's.
    let mut j = 0usize;
    let mut next_text = || {
        j = (j + 7919) % tokens.len();
        tokens[j].clone()
    };
    group.bench_function("cloakroom cache hit, token text", |b| {
        b.to_async(&rt).iter_batched(
            &mut next_text,
            |text| {
                let manager = &manager;
                async move {
                    black_box(manager.check(&text).await.unwrap().unwrap());
                    text
                }
            },
            HOT,
        )
    });
    // The harness alone: the same async batched iteration with an empty routine.
    let mut next = next_request.clone();
    group.bench_function("floor: harness only", |b| {
        b.to_async(&rt).iter_batched(&mut next, |headers| async move { black_box(headers) }, HOT)
    });
    // The parts of a hit, to see where the time goes.
    let mut next = next_request.clone();
    group.bench_function("part: cookie + parse + sha256", |b| {
        b.iter_batched_ref(
            &mut next,
            |headers| {
                let (text, _) = credential(headers, "__Host-cloakroom").unwrap().unwrap();
                black_box(Token::parse(SecretKind::Session, text).unwrap().hash())
            },
            HOT,
        )
    });
    let fixed = tokens[0].clone();
    group.bench_function("part: cookie only (hot)", |b| {
        b.iter(|| {
            black_box(credential(black_box(&fixed_headers), "__Host-cloakroom").unwrap().unwrap())
        })
    });
    group.bench_function("part: Token::parse only (hot)", |b| {
        b.iter(|| black_box(Token::parse(SecretKind::Session, black_box(&fixed)).unwrap()))
    });
    let parsed = Token::parse(SecretKind::Session, &fixed).unwrap();
    group.bench_function("part: sha256 only (hot)", |b| {
        b.iter(|| black_box(black_box(&parsed).hash()))
    });
    let mut parsed: Vec<Token> =
        tokens.iter().map(|t| Token::parse(SecretKind::Session, t).unwrap()).collect();
    parsed.shrink_to_fit();
    // The tokens are handed over parsed (hot, as after the cookie was read), the sessions they
    // name are spread over the whole cache.
    let mut k = 0usize;
    let mut next_token = || {
        k = (k + 7919) % parsed.len();
        parsed[k].clone()
    };
    group.bench_function("part: cache lookup (sha256 + get)", |b| {
        b.iter_batched(&mut next_token, |t| black_box(cache.lookup(&t).hit.unwrap()), HOT)
    });
    // What one read from memory costs on this machine: a chain of dependent random reads over
    // 256 MiB (each index comes from the previous read), the floor of any lookup at this size.
    let ring = random_ring(256 << 20);
    let mut at = 0usize;
    group.bench_function("floor: one random read of 256 MiB", |b| {
        b.iter(|| {
            at = ring[at] as usize;
            at
        })
    });
    // The same in memory backed by 2 MiB pages, as the cache's tables ask for: what is left
    // when address translation is (mostly) out of the way.
    let mut huge = memmap2::MmapOptions::new().len((256 << 20) + (2 << 20)).map_anon().unwrap();
    let start = (2usize << 20) - huge.as_ptr() as usize % (2 << 20);
    huge.advise_range(memmap2::Advice::HugePage, start, 256 << 20).unwrap();
    for (i, next) in ring.iter().enumerate() {
        huge[start + i * 8..start + i * 8 + 8].copy_from_slice(&next.to_le_bytes());
    }
    drop(ring);
    eprintln!("floor ring: {}", huge_pages());
    let ring = &huge[start..start + (256 << 20)];
    let mut at = 0usize;
    group.bench_function("floor: one random read of 256 MiB in huge pages", |b| {
        b.iter(|| {
            at = u64::from_le_bytes(ring[at * 8..at * 8 + 8].try_into().unwrap()) as usize;
            at
        })
    });
    group.bench_function("jwt HS256 decode+verify", |b| {
        b.iter(|| {
            black_box(jsonwebtoken::decode::<Claims>(black_box(&hs), &hs_dec, &hs_val).unwrap())
        })
    });
    group.bench_function("jwt EdDSA decode+verify", |b| {
        b.iter(|| {
            black_box(jsonwebtoken::decode::<Claims>(black_box(&ed), &ed_dec, &ed_val).unwrap())
        })
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
