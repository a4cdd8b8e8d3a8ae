//! A cache-hit session check against JWT verification, in one criterion run.
//!
//! `cargo bench -p cloakroom-server --bench cache`. The node-local cache holds 1,000,000 live
//! sessions (realistic fields: IP, a 110-byte user agent, two roles); each iteration takes the
//! cookie of a different random session from a request's headers, parses and checksums the token,
//! hashes it and looks it up through `SessionManager::authenticate_token`, with the Prometheus
//! recorder installed (the hit counter is part of the cost). Beside it: `jsonwebtoken` 11
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
use cloakroom_core::session::{ExpiryPolicy, Session};
use cloakroom_core::{
    Authenticated, CsrfToken, Role, SecretKind, SessionId, SessionManager, Timestamp, Token, User,
    UserId, Username,
};
use cloakroom_server::extract::credential;
use cloakroom_store_sqlite::SqliteStore;
use criterion::{BatchSize, Criterion, criterion_group, criterion_main};
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};

const SESSIONS: usize = 1_000_000;
const COOKIES: usize = 100_000;
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

fn rss_bytes() -> u64 {
    std::fs::read_to_string("/proc/self/statm")
        .ok()
        .and_then(|s| s.split_whitespace().nth(1).and_then(|p| p.parse::<u64>().ok()))
        .map_or(0, |pages| pages * 4096)
}

fn session(now: Timestamp) -> Arc<Authenticated> {
    let user = UserId::generate().unwrap();
    Arc::new(Authenticated {
        session: Session {
            id: SessionId::generate().unwrap(),
            user_id: user.clone(),
            csrf: CsrfToken::generate().unwrap(),
            created_at: now,
            last_seen_at: now,
            token_issued_at: now,
            idle_expires_at: now.plus(Duration::from_secs(1800)),
            expires_at: now.plus(Duration::from_secs(43200)),
            ip: Some("203.0.113.77".into()),
            user_agent: Some(
                "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36"
                    .into(),
            ),
            audience: None,
        },
        user: User {
            id: user,
            username: Username::parse("someone@example.com").unwrap(),
            roles: vec![Role::parse("staff").unwrap(), Role::parse("billing").unwrap()],
            disabled: false,
            has_password: true,
            created_at: now,
            updated_at: now,
            privileges_changed_at: Timestamp::from_millis(0),
        },
    })
}

fn bench(c: &mut Criterion) {
    let _ = cloakroom_server::metrics::handle(); // the production recorder, as the server runs it
    let rt =
        tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let store = rt.block_on(SqliteStore::open(dir.path().join("b.db").to_str().unwrap())).unwrap();
    // Long TTL and touch interval: the bench must measure hits, not expiry.
    let cache = Arc::new(SessionCache::new(CacheConfig {
        capacity: 2 * SESSIONS,
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
    let before = rss_bytes();
    let mut tokens = Vec::with_capacity(COOKIES);
    for i in 0..SESSIONS {
        let token = Token::generate(SecretKind::Session).unwrap();
        cache.insert(cache.begin_miss(), token.hash(), session(now), now);
        // Keep every tenth token: the requests hit sessions spread over the whole cache.
        if i % (SESSIONS / COOKIES) == 0 {
            tokens.push(token.expose());
        }
    }
    let grown = rss_bytes().saturating_sub(before);
    eprintln!(
        "cache: {} sessions, resident memory grew by {} MiB = {} bytes per session",
        cache.len(),
        grown / (1 << 20),
        grown / SESSIONS as u64
    );
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
    group.bench_function("cloakroom cache hit, 1M sessions, cookie parsed", |b| {
        b.to_async(&rt).iter_batched(
            &mut next,
            |headers| {
                let manager = &manager;
                async move {
                    let (text, _) = credential(&headers, "__Host-cloakroom").unwrap().unwrap();
                    let token = Token::parse(SecretKind::Session, text).unwrap();
                    black_box(manager.authenticate_token(&token).await.unwrap().unwrap());
                    headers // dropped outside the timed part
                }
            },
            BatchSize::SmallInput,
        )
    });
    // The harness alone: the same async batched iteration with an empty routine.
    let mut next = next_request.clone();
    group.bench_function("floor: harness only", |b| {
        b.to_async(&rt).iter_batched(
            &mut next,
            |headers| async move { black_box(headers) },
            BatchSize::SmallInput,
        )
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
            BatchSize::SmallInput,
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
    let mut hashes: Vec<_> =
        tokens.iter().map(|t| Token::parse(SecretKind::Session, t).unwrap().hash()).collect();
    hashes.shrink_to_fit();
    let mut k = 0usize;
    group.bench_function("part: cache.get", |b| {
        b.iter(|| {
            k = (k + 7919) % hashes.len();
            black_box(cache.get(&hashes[k], now).unwrap())
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
