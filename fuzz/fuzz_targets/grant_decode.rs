//! The grant decoder on arbitrary input: it must refuse without panicking, and nothing but a
//! token signed by the trusted key may ever verify.
#![no_main]

use std::sync::LazyLock;
use std::time::{Duration, SystemTime};

use cloakroom_grant::{Claims, KeySet, SecretKey, Verifier, decode};
use libfuzzer_sys::fuzz_target;

struct Fixture {
    keys: KeySet,
    verifier: Verifier,
    valid: String,
}

static FIXTURE: LazyLock<Fixture> = LazyLock::new(|| {
    let key = SecretKey::generate().expect("key");
    let claims =
        Claims::new("grt_f", "usr_f", "f", "files", SystemTime::now(), Duration::from_secs(600));
    let valid = key.sign(&claims).expect("sign");
    let keys = KeySet::from_keys([key.public_key()]);
    Fixture { verifier: Verifier::new("files", keys.clone()), keys, valid }
});

fuzz_target!(|data: &[u8]| {
    let f = &*FIXTURE;
    let Ok(text) = std::str::from_utf8(data) else { return };
    let verdict = decode(text, "files", &f.keys, SystemTime::now(), Duration::from_secs(5));
    // Only the one token the fixture signed can verify.
    assert!(verdict.is_err() || text == f.valid, "accepted a token nobody signed: {text}");
    let _ = f.verifier.verify(text);
    // Also as a suffix of a genuine header, where the parser gets furthest.
    let spliced = format!("v4.public.{text}");
    assert!(decode(&spliced, "files", &f.keys, SystemTime::now(), Duration::ZERO).is_err()
        || spliced == f.valid);
});
