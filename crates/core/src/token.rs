//! Bearer secrets: session tokens (`crs_…`) and API keys (`crk_…`), and per-session CSRF tokens.
//!
//! A secret is 256 bits from the OS CSPRNG, written as its prefix, the bytes in base64url without
//! padding, and a 6-character checksum (CRC-32 of the bytes, base64url). The checksum lets a
//! garbled or made-up token be refused without a store lookup, and the fixed prefix lets secret
//! scanners find a leaked one. Stores keep only [`TokenHash`], the SHA-256 of the 32 bytes, so a
//! copy of the store authenticates nobody.

use std::fmt;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use sha2::{Digest, Sha256};

/// Random bytes in a secret.
pub const SECRET_BYTES: usize = 32;
const BODY_CHARS: usize = 43; // base64url of 32 bytes, no padding
const CHECK_CHARS: usize = 6; // base64url of 4 bytes, no padding
/// Length of a secret's text form.
pub const TOKEN_LEN: usize = 4 + BODY_CHARS + CHECK_CHARS;

/// What a secret is for, which decides its prefix.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SecretKind {
    /// A session token, `crs_`.
    Session,
    /// A service API key, `crk_`.
    ApiKey,
}

impl SecretKind {
    /// The text prefix of this kind.
    pub const fn prefix(self) -> &'static str {
        match self {
            SecretKind::Session => "crs_",
            SecretKind::ApiKey => "crk_",
        }
    }
}

/// Why a token's text was refused. Deliberately coarse: callers answer "unauthenticated" either way.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum TokenFormatError {
    /// Wrong length or prefix.
    #[error("malformed token")]
    Malformed,
    /// The body is not canonical base64url.
    #[error("malformed token encoding")]
    Encoding,
    /// The checksum does not match the body.
    #[error("token checksum mismatch")]
    Checksum,
}

/// The operating system's random generator failed; nothing can be issued.
#[derive(Debug, thiserror::Error)]
#[error("the OS random number generator failed")]
pub struct RandomError(#[source] pub getrandom::Error);

/// Fills `buf` from the OS CSPRNG.
pub fn random_bytes(buf: &mut [u8]) -> Result<(), RandomError> {
    getrandom::fill(buf).map_err(RandomError)
}

/// A session token or API key. The bytes never leave this type except through
/// [`Token::expose`], and `Debug` shows only the kind.
#[derive(Clone)]
pub struct Token {
    kind: SecretKind,
    bytes: [u8; SECRET_BYTES],
}

impl Token {
    /// A fresh secret of `kind` from the OS CSPRNG.
    pub fn generate(kind: SecretKind) -> Result<Self, RandomError> {
        let mut bytes = [0u8; SECRET_BYTES];
        random_bytes(&mut bytes)?;
        Ok(Self { kind, bytes })
    }

    /// Parses the text form, checking prefix, length, canonical encoding and checksum.
    pub fn parse(kind: SecretKind, text: &str) -> Result<Self, TokenFormatError> {
        let raw = text.as_bytes();
        if raw.len() != TOKEN_LEN || !text.starts_with(kind.prefix()) {
            return Err(TokenFormatError::Malformed);
        }
        let Some(bytes) = raw[4..4 + BODY_CHARS].try_into().ok().and_then(decode_body) else {
            return Err(TokenFormatError::Encoding);
        };
        let check = raw[4 + BODY_CHARS..].try_into().ok().and_then(decode_checksum);
        if check != Some(crc32fast::hash(&bytes)) {
            return Err(TokenFormatError::Checksum);
        }
        Ok(Self { kind, bytes })
    }

    /// The kind of secret.
    pub fn kind(&self) -> SecretKind {
        self.kind
    }

    /// The text form. Only for handing the secret to its owner (a cookie, a one-time print).
    pub fn expose(&self) -> String {
        let mut out = String::with_capacity(TOKEN_LEN);
        out.push_str(self.kind.prefix());
        B64.encode_string(self.bytes, &mut out);
        let mut check = [0u8; CHECK_CHARS];
        encode_checksum(&self.bytes, &mut check);
        out.push_str(std::str::from_utf8(&check).unwrap_or_default());
        out
    }

    /// The secret bytes, for the node-local cache's placement of the token's entry.
    pub(crate) fn secret(&self) -> &[u8; SECRET_BYTES] {
        &self.bytes
    }

    /// The hash that stores keep and look up by.
    pub fn hash(&self) -> TokenHash {
        TokenHash(Sha256::digest(self.bytes).into())
    }
}

/// base64url digit values, 0xFF for bytes outside the alphabet.
const DIGITS: [u8; 256] = {
    let alphabet = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut t = [0xFF; 256];
    let mut i = 0;
    while i < 64 {
        t[alphabet[i] as usize] = i as u8;
        i += 1;
    }
    t
};

/// Decodes the 43 base64url characters of a secret, refusing any character outside the
/// alphabet and a last character with bits beyond the 256 (so each secret has one spelling).
/// Every request's token goes through this: a fixed-size decoder without the general engine's
/// bookkeeping is about three times faster than `base64`'s `decode_slice` here.
fn decode_body(body: &[u8; BODY_CHARS]) -> Option<[u8; SECRET_BYTES]> {
    let mut out = [0u8; SECRET_BYTES];
    let mut invalid = 0u8;
    let d = |c: u8| u32::from(DIGITS[usize::from(c)]);
    for (chars, bytes) in body.chunks_exact(4).zip(out.chunks_exact_mut(3)) {
        let (a, b, c, e) = (d(chars[0]), d(chars[1]), d(chars[2]), d(chars[3]));
        invalid |= ((a | b | c | e) >> 6) as u8;
        let n = (a << 18) | (b << 12) | (c << 6) | e;
        bytes.copy_from_slice(&n.to_be_bytes()[1..]);
    }
    // 40 characters made 30 bytes; the last 3 carry 16 bits and 2 bits that must be zero.
    let (a, b, c) = (d(body[40]), d(body[41]), d(body[42]));
    invalid |= ((a | b | c) >> 6) as u8 | (c & 3) as u8;
    let n = (a << 10) | (b << 4) | (c >> 2);
    out[30..].copy_from_slice(&(n as u16).to_be_bytes());
    (invalid == 0).then_some(out)
}

/// The 32 bytes that `text` spells in canonical base64url (43 characters), or `None`: for CSRF
/// tokens, which have the format of a token's body.
pub(crate) fn decode_secret(text: &str) -> Option<[u8; SECRET_BYTES]> {
    text.as_bytes().try_into().ok().and_then(decode_body)
}

/// Decodes the 6 checksum characters: 32 bits and 4 bits that must be zero.
fn decode_checksum(chars: &[u8; CHECK_CHARS]) -> Option<u32> {
    let mut n = 0u64;
    let mut invalid = 0u8;
    for &c in chars {
        let v = DIGITS[usize::from(c)];
        invalid |= v >> 6;
        n = (n << 6) | u64::from(v & 63);
    }
    (invalid == 0 && n & 0xF == 0).then_some((n >> 4) as u32)
}

fn encode_checksum(bytes: &[u8; SECRET_BYTES], out: &mut [u8; CHECK_CHARS]) {
    let crc = crc32fast::hash(bytes).to_be_bytes();
    // 4 bytes encode to exactly 6 characters without padding.
    let _ = B64.encode_slice(crc, out);
}

impl fmt::Debug for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Token({}<redacted>)", self.kind.prefix())
    }
}

/// SHA-256 of a secret's bytes: how stores find a session or API key. Not secret in itself (it
/// cannot be turned back into a token), so it may be logged in short form.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct TokenHash(pub [u8; 32]);

impl TokenHash {
    /// The 32 bytes.
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// From stored bytes; `None` unless exactly 32.
    pub fn from_slice(bytes: &[u8]) -> Option<Self> {
        bytes.try_into().ok().map(Self)
    }

    /// From 64 hex digits (either case); `None` otherwise.
    pub fn from_hex(text: &str) -> Option<Self> {
        let digits = text.as_bytes();
        if digits.len() != 64 || !digits.iter().all(u8::is_ascii_hexdigit) {
            return None;
        }
        let mut bytes = [0u8; 32];
        for (b, pair) in bytes.iter_mut().zip(digits.chunks_exact(2)) {
            let pair = std::str::from_utf8(pair).ok()?;
            *b = u8::from_str_radix(pair, 16).ok()?;
        }
        Some(Self(bytes))
    }

    /// Lowercase hex, for stores that key by text.
    pub fn to_hex(&self) -> String {
        use fmt::Write as _;
        let mut s = String::with_capacity(64);
        for b in self.0 {
            let _ = write!(s, "{b:02x}");
        }
        s
    }
}

impl fmt::Debug for TokenHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "TokenHash({}…)", &self.to_hex()[..12])
    }
}

/// A session's synchronizer CSRF token: 256 random bits, base64url. Compared in constant time.
#[derive(Clone, PartialEq, Eq)]
pub struct CsrfToken(String);

impl CsrfToken {
    /// A fresh token.
    pub fn generate() -> Result<Self, RandomError> {
        let mut bytes = [0u8; SECRET_BYTES];
        random_bytes(&mut bytes)?;
        Ok(Self(B64.encode(bytes)))
    }

    /// Wraps a stored value.
    pub fn from_stored(value: String) -> Self {
        Self(value)
    }

    /// The text, for the API response and the store.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for CsrfToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("CsrfToken(<redacted>)")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_hashes_round_trip_through_hex() {
        let hash = Token::generate(SecretKind::Session).unwrap().hash();
        assert_eq!(TokenHash::from_hex(&hash.to_hex()), Some(hash));
        assert_eq!(TokenHash::from_hex(&hash.to_hex().to_uppercase()), Some(hash));
        assert_eq!(TokenHash::from_hex(&"+1".repeat(32)), None);
        assert_eq!(TokenHash::from_hex("ab"), None);
    }

    #[test]
    fn the_body_decoder_agrees_with_the_base64_crate() {
        let mut seed = 0x2545_f491_4f6c_dd1d_u64;
        for _ in 0..2000 {
            let mut bytes = [0u8; SECRET_BYTES];
            for b in &mut bytes {
                seed ^= seed << 13;
                seed ^= seed >> 7;
                seed ^= seed << 17;
                *b = seed as u8;
            }
            let text = B64.encode(bytes);
            let body: [u8; BODY_CHARS] = text.as_bytes().try_into().unwrap();
            assert_eq!(decode_body(&body), Some(bytes));
            // Every single-character change: refused by both, or decoded alike by both.
            for i in 0..BODY_CHARS {
                for c in [b'A', b'B', b'Q', b'z', b'0', b'-', b'_', b'=', b'+', b'/', b'.', 0, 0xFF]
                {
                    let mut changed = body;
                    changed[i] = c;
                    let mut theirs = [0u8; SECRET_BYTES];
                    let expected = match B64.decode_slice(changed, &mut theirs) {
                        Ok(SECRET_BYTES) => Some(theirs),
                        _ => None,
                    };
                    assert_eq!(
                        decode_body(&changed),
                        expected,
                        "{:?}",
                        String::from_utf8_lossy(&changed)
                    );
                }
            }
        }
    }

    #[test]
    fn round_trips_and_hashes_consistently() {
        let t = Token::generate(SecretKind::Session).unwrap();
        let text = t.expose();
        assert_eq!(text.len(), TOKEN_LEN);
        assert!(text.starts_with("crs_"));
        let back = Token::parse(SecretKind::Session, &text).unwrap();
        assert_eq!(back.hash(), t.hash());
    }

    #[test]
    fn refuses_wrong_kind_length_encoding_and_checksum() {
        let text = Token::generate(SecretKind::Session).unwrap().expose();
        assert_eq!(
            Token::parse(SecretKind::ApiKey, &text).unwrap_err(),
            TokenFormatError::Malformed
        );
        assert_eq!(
            Token::parse(SecretKind::Session, &text[..TOKEN_LEN - 1]).unwrap_err(),
            TokenFormatError::Malformed
        );
        // Flip one body character: the checksum catches it.
        let mut garbled = text.clone().into_bytes();
        garbled[10] = if garbled[10] == b'A' { b'B' } else { b'A' };
        let garbled = String::from_utf8(garbled).unwrap();
        assert_eq!(
            Token::parse(SecretKind::Session, &garbled).unwrap_err(),
            TokenFormatError::Checksum
        );
        // Any other checksum character, including another spelling of the same bits.
        for i in 4 + BODY_CHARS..TOKEN_LEN {
            for c in b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_=+/" {
                let mut changed = text.clone().into_bytes();
                if changed[i] == *c {
                    continue;
                }
                changed[i] = *c;
                assert!(
                    Token::parse(SecretKind::Session, std::str::from_utf8(&changed).unwrap())
                        .is_err()
                );
            }
        }
        // Not base64url.
        let mut bad = text.into_bytes();
        bad[10] = b'*';
        assert_eq!(
            Token::parse(SecretKind::Session, &String::from_utf8(bad).unwrap()).unwrap_err(),
            TokenFormatError::Encoding
        );
    }

    #[test]
    fn refuses_non_ascii_without_panicking() {
        let s = "crs_ééééééééééééééééééééééééééé";
        assert!(Token::parse(SecretKind::Session, s).is_err());
        let s = format!("crs_{}", "é".repeat(24)); // 4 + 48 bytes, one short of TOKEN_LEN
        assert!(Token::parse(SecretKind::Session, &s).is_err());
        let s = format!("crs_{}a", "é".repeat(24));
        assert_eq!(s.len(), TOKEN_LEN);
        assert!(Token::parse(SecretKind::Session, &s).is_err());
    }

    #[test]
    fn debug_never_shows_the_secret() {
        let t = Token::generate(SecretKind::ApiKey).unwrap();
        let shown = format!("{t:?}");
        assert!(!shown.contains(&t.expose()[4..20]));
        let c = CsrfToken::generate().unwrap();
        assert!(!format!("{c:?}").contains(c.expose()));
    }
}
