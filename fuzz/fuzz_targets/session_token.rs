//! Session-token and API-key parsing (cookie values and bearer tokens come straight from
//! clients): never a panic, and a token that parses prints back as the same text.
#![no_main]

use cloakroom_core::token::{SecretKind, Token};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    for kind in [SecretKind::Session, SecretKind::ApiKey] {
        if let Ok(token) = Token::parse(kind, text) {
            assert_eq!(token.expose(), text);
        }
    }
});
