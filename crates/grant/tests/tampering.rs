//! Tampering: any single-character change to a grant, and any payload or footer re-encoded with
//! other contents, is refused; arbitrary input never panics the decoder.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::LazyLock;
use std::time::{Duration, SystemTime};

use cloakroom_grant::{Claims, GrantError, KeySet, SecretKey, decode};
use proptest::prelude::*;

struct Fixture {
    keys: KeySet,
    token: String,
    now: SystemTime,
}

static FIXTURE: LazyLock<Fixture> = LazyLock::new(|| {
    let key = SecretKey::generate().unwrap();
    let now = SystemTime::now();
    let claims = Claims::new("grt_a", "usr_a", "ada", "files", now, Duration::from_secs(3600))
        .with_resource("/f");
    Fixture { keys: KeySet::from_keys([key.public_key()]), token: key.sign(&claims).unwrap(), now }
});

fn check(token: &str) -> Result<cloakroom_grant::Grant, GrantError> {
    let f = &*FIXTURE;
    decode(token, "files", &f.keys, f.now, Duration::from_secs(5))
}

const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_.=+/ ";

#[test]
fn the_untampered_grant_verifies() {
    assert!(check(&FIXTURE.token).is_ok());
}

#[test]
fn every_single_character_substitution_is_refused() {
    // Exhaustive rather than sampled: every position, every other base64url character.
    let token = FIXTURE.token.as_bytes();
    let mut accepted = Vec::new();
    for i in 0..token.len() {
        for &c in ALPHABET {
            if c == token[i] {
                continue;
            }
            let mut t = token.to_vec();
            t[i] = c;
            let t = String::from_utf8(t).unwrap();
            if check(&t).is_ok() {
                accepted.push((i, c as char));
            }
        }
    }
    assert!(accepted.is_empty(), "accepted mutations: {accepted:?}");
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn single_byte_mutations_are_refused(i in 0usize..4096, b in any::<u8>()) {
        let mut t = FIXTURE.token.as_bytes().to_vec();
        let i = i % t.len();
        prop_assume!(t[i] != b);
        t[i] = b;
        let t = String::from_utf8_lossy(&t);
        prop_assert!(check(&t).is_err());
    }

    #[test]
    fn truncations_and_extensions_are_refused(cut in 0usize..4096, tail in "[A-Za-z0-9_.-]{1,8}") {
        let t = &FIXTURE.token;
        let cut = cut % t.len();
        prop_assert!(check(&t[..cut]).is_err());
        let extended = format!("{t}{tail}");
        prop_assert!(check(&extended).is_err());
    }

    #[test]
    fn arbitrary_input_never_panics(s in ".{0,600}") {
        let _ = check(&s);
        let _ = check(&format!("v4.public.{s}"));
    }
}
