//! The official PASETO v4 test vectors (`tests/vectors/v4.json`, from paseto-standard/test-vectors):
//! 4-E (v4.local, which seals signing keys at rest), 4-S (v4.public, which signs grants) and the
//! 4-F failures, each of which must be refused by the primitive and by [`cloakroom_grant::decode`].
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::{Duration, SystemTime};

use cloakroom_grant::{KeySet, PublicKey, decode};
use pasetors::keys::{AsymmetricPublicKey, AsymmetricSecretKey, SymmetricKey};
use pasetors::token::UntrustedToken;
use pasetors::version4::{LocalToken, PublicToken, V4};
use pasetors::{Local, Public};
use serde_json::Value;

fn hex(s: &str) -> Vec<u8> {
    (0..s.len()).step_by(2).map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap()).collect()
}

fn vectors() -> Vec<Value> {
    let doc: Value = serde_json::from_str(include_str!("vectors/v4.json")).unwrap();
    doc["tests"].as_array().unwrap().clone()
}

fn field<'a>(t: &'a Value, k: &str) -> &'a str {
    t[k].as_str().unwrap_or("")
}

fn opt(s: &str) -> Option<&[u8]> {
    (!s.is_empty()).then_some(s.as_bytes())
}

#[test]
fn v4_local_vectors_decrypt_to_their_payload() {
    let mut n = 0;
    for t in vectors().iter().filter(|t| field(t, "name").starts_with("4-E-")) {
        let key = SymmetricKey::<V4>::from(&hex(field(t, "key"))).unwrap();
        let token = UntrustedToken::<Local, V4>::try_from(field(t, "token")).unwrap();
        let footer = field(t, "footer");
        let implicit = field(t, "implicit-assertion");
        let opened = LocalToken::decrypt(&key, &token, opt(footer), opt(implicit))
            .unwrap_or_else(|e| panic!("{}: {e:?}", field(t, "name")));
        assert_eq!(opened.payload(), field(t, "payload"), "{}", field(t, "name"));
        n += 1;
    }
    assert_eq!(n, 10);
}

#[test]
fn v4_public_vectors_sign_and_verify_exactly() {
    let mut n = 0;
    for t in vectors().iter().filter(|t| field(t, "name").starts_with("4-S-")) {
        let name = field(t, "name");
        let secret = AsymmetricSecretKey::<V4>::from(&hex(field(t, "secret-key"))).unwrap();
        let public = AsymmetricPublicKey::<V4>::from(&hex(field(t, "public-key"))).unwrap();
        let (footer, implicit) = (field(t, "footer"), field(t, "implicit-assertion"));
        // Ed25519 is deterministic: our signing primitive must produce the vector byte for byte.
        let signed =
            PublicToken::sign(&secret, field(t, "payload").as_bytes(), opt(footer), opt(implicit))
                .unwrap();
        assert_eq!(signed, field(t, "token"), "{name}");
        let token = UntrustedToken::<Public, V4>::try_from(field(t, "token")).unwrap();
        let verified = PublicToken::verify(&public, &token, opt(footer), opt(implicit)).unwrap();
        assert_eq!(verified.payload(), field(t, "payload"), "{name}");
        // A wrong implicit assertion must fail: that is how grants bind their audience.
        assert!(PublicToken::verify(&public, &token, None, Some(b"other")).is_err(), "{name}");
        n += 1;
    }
    assert_eq!(n, 3);
}

#[test]
fn v4_failure_vectors_are_refused() {
    let mut n = 0;
    for t in vectors().iter().filter(|t| field(t, "name").starts_with("4-F-")) {
        let name = field(t, "name");
        assert!(t["expect-fail"].as_bool().unwrap());
        let token = field(t, "token");
        let (footer, implicit) = (field(t, "footer"), field(t, "implicit-assertion"));
        if !t["key"].is_null() {
            let key = SymmetricKey::<V4>::from(&hex(field(t, "key"))).unwrap();
            let refused = match UntrustedToken::<Local, V4>::try_from(token) {
                Ok(u) => LocalToken::decrypt(&key, &u, opt(footer), opt(implicit)).is_err(),
                Err(_) => true,
            };
            assert!(refused, "{name} decrypted");
        }
        if !t["public-key"].is_null() {
            let public = AsymmetricPublicKey::<V4>::from(&hex(field(t, "public-key"))).unwrap();
            let refused = match UntrustedToken::<Public, V4>::try_from(token) {
                Ok(u) => PublicToken::verify(&public, &u, opt(footer), opt(implicit)).is_err(),
                Err(_) => true,
            };
            assert!(refused, "{name} verified");
            // And through the grant decoder, with the vector's key trusted.
            let keys = KeySet::from_keys([PublicKey::from_paserk(&paserk_public(&hex(field(
                t,
                "public-key",
            ))))
            .unwrap()]);
            assert!(
                decode(token, "x", &keys, SystemTime::now(), Duration::ZERO).is_err(),
                "{name}"
            );
        }
        assert!(decode(token, "x", &KeySet::default(), SystemTime::now(), Duration::ZERO).is_err());
        n += 1;
    }
    assert_eq!(n, 5);
}

fn paserk_public(bytes: &[u8]) -> String {
    use base64::Engine as _;
    format!("k4.public.{}", base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes))
}
