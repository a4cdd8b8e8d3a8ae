//! The wire format: signing a grant and decoding one, in the order that ASVS V9 asks for (verify
//! before reading, one algorithm, keys only from the trusted set, type, audience and time checked).

use std::time::{Duration, SystemTime};

use pasetors::Public;
use pasetors::token::UntrustedToken;
use pasetors::version4::{PublicToken, V4};
use serde::{Deserialize, Serialize};

use crate::claims::{Claims, Grant, TOKEN_TYPE};
use crate::keys::{KeySet, SecretKey};

/// Longer tokens are refused before any parsing: a grant is a few hundred bytes.
pub const MAX_TOKEN_LEN: usize = 4096;

/// Why a grant was refused. Every failure is a refusal; none of them says more than needed.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum GrantError {
    /// Not a PASETO at all: bad structure, bad base64, too long, a footer that is not ours.
    #[error("malformed grant")]
    Malformed,
    /// A PASETO of another version or purpose than v4.public.
    #[error("unsupported token version or purpose (only v4.public)")]
    Unsupported,
    /// The footer names a key that is not in the trusted set.
    #[error("unknown signing key")]
    UnknownKey,
    /// The signature does not verify (tampered payload or footer, other key, other audience).
    #[error("invalid signature")]
    BadSignature,
    /// Signed, but not a grant (`typ`), or its claims are not well formed.
    #[error("not a grant")]
    WrongType,
    /// Signed for another audience.
    #[error("grant is for another audience")]
    WrongAudience,
    /// `exp` has passed.
    #[error("grant expired")]
    Expired,
    /// `nbf` or `iat` is in the future.
    #[error("grant not yet valid")]
    NotYetValid,
    /// Used before (this verifier's replay cache).
    #[error("grant already used")]
    Replayed,
    /// The grant, or every grant of its user up to some time, was revoked.
    #[error("grant revoked")]
    Revoked,
    /// This verifier follows a revocation feed that is down, so it cannot vouch for any grant.
    #[error("revocation feed unavailable")]
    RevocationsUnavailable,
    /// The replay cache is full of unexpired grants; refusing is safer than forgetting one.
    #[error("replay cache full")]
    ReplayCacheFull,
    /// A key that could not be parsed, generated, sealed or opened.
    #[error("bad key")]
    BadKey,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Footer {
    kid: String,
}

/// The implicit assertion that binds a grant to its audience.
pub fn implicit_assertion(audience: &str) -> String {
    format!("cloakroom-grant:{audience}")
}

impl SecretKey {
    /// Signs `claims` as a v4.public grant with this key's id in the footer and the audience as
    /// implicit assertion.
    pub fn sign(&self, claims: &Claims) -> Result<String, GrantError> {
        let payload = serde_json::to_vec(claims).map_err(|_| GrantError::Malformed)?;
        let footer = serde_json::to_vec(&Footer { kid: self.id().to_owned() })
            .map_err(|_| GrantError::Malformed)?;
        PublicToken::sign(
            self.key(),
            &payload,
            Some(&footer),
            Some(implicit_assertion(&claims.aud).as_bytes()),
        )
        .map_err(|_| GrantError::BadKey)
    }
}

/// Decodes and verifies `token` as a grant for `audience` at `now`, with keys from `keys`.
/// `leeway` tolerates clock skew on `nbf` and `iat` only; `exp` is strict.
///
/// Single use and revocations are not checked here: see [`crate::Verifier`].
pub fn decode(
    token: &str,
    audience: &str,
    keys: &KeySet,
    now: SystemTime,
    leeway: Duration,
) -> Result<Grant, GrantError> {
    if token.len() > MAX_TOKEN_LEN {
        return Err(GrantError::Malformed);
    }
    if !token.starts_with(PublicToken::HEADER) {
        let looks_like_paseto = token.split('.').count() >= 3 && token.starts_with('v');
        return Err(if looks_like_paseto {
            GrantError::Unsupported
        } else {
            GrantError::Malformed
        });
    }
    let untrusted =
        UntrustedToken::<Public, V4>::try_from(token).map_err(|_| GrantError::Malformed)?;
    // The footer is read before verification only to pick the key; the signature covers it.
    let footer: Footer =
        serde_json::from_slice(untrusted.untrusted_footer()).map_err(|_| GrantError::Malformed)?;
    let key = keys.get(&footer.kid).ok_or(GrantError::UnknownKey)?;
    let trusted = PublicToken::verify(
        key.key(),
        &untrusted,
        None,
        Some(implicit_assertion(audience).as_bytes()),
    )
    .map_err(|_| GrantError::BadSignature)?;

    let claims: Claims =
        serde_json::from_str(trusted.payload()).map_err(|_| GrantError::WrongType)?;
    if claims.typ != TOKEN_TYPE {
        return Err(GrantError::WrongType);
    }
    if claims.aud != audience {
        return Err(GrantError::WrongAudience);
    }
    let time = |s: &str| crate::parse_time(s).ok_or(GrantError::WrongType);
    let (issued_at, not_before, expires_at) =
        (time(&claims.iat)?, time(&claims.nbf)?, time(&claims.exp)?);
    if now >= expires_at {
        return Err(GrantError::Expired);
    }
    let skewed = now + leeway;
    if not_before > skewed || issued_at > skewed {
        return Err(GrantError::NotYetValid);
    }
    Ok(Grant { claims, issued_at, not_before, expires_at, key_id: footer.kid })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::keys::PublicKey;

    const AUD: &str = "files";

    fn setup() -> (SecretKey, KeySet, SystemTime) {
        let key = SecretKey::generate().unwrap();
        let keys = KeySet::from_keys([key.public_key()]);
        (key, keys, SystemTime::now())
    }

    fn claims(now: SystemTime) -> Claims {
        Claims::new("grt_x", "usr_x", "ada", AUD, now, Duration::from_secs(60))
    }

    fn check(token: &str, keys: &KeySet, now: SystemTime) -> Result<Grant, GrantError> {
        decode(token, AUD, keys, now, Duration::from_secs(5))
    }

    #[test]
    fn a_fresh_grant_verifies_for_its_audience_only() {
        let (key, keys, now) = setup();
        let token = key.sign(&claims(now).with_action("download")).unwrap();
        let grant = check(&token, &keys, now).unwrap();
        assert_eq!(grant.claims.action.as_deref(), Some("download"));
        assert_eq!(grant.key_id, key.id());
        // The implicit assertion carries the audience: another service's verifier fails the
        // signature, before any claim is read.
        assert_eq!(
            decode(&token, "billing", &keys, now, Duration::ZERO).unwrap_err(),
            GrantError::BadSignature
        );
    }

    #[test]
    fn time_claims_are_enforced() {
        let (key, keys, now) = setup();
        let token = key.sign(&claims(now)).unwrap();
        assert_eq!(
            check(&token, &keys, now + Duration::from_secs(60)).unwrap_err(),
            GrantError::Expired
        );
        assert!(check(&token, &keys, now - Duration::from_secs(4)).is_ok(), "within leeway");
        assert_eq!(
            check(&token, &keys, now - Duration::from_secs(30)).unwrap_err(),
            GrantError::NotYetValid
        );
    }

    #[test]
    fn unknown_keys_fail_closed() {
        let (key, _, now) = setup();
        let token = key.sign(&claims(now)).unwrap();
        let other = SecretKey::generate().unwrap();
        let keys = KeySet::from_keys([other.public_key()]);
        assert_eq!(check(&token, &keys, now).unwrap_err(), GrantError::UnknownKey);
        assert_eq!(check(&token, &KeySet::default(), now).unwrap_err(), GrantError::UnknownKey);
    }

    #[test]
    fn a_key_listed_under_another_id_does_not_verify() {
        // Key confusion: the footer names key A, the set maps A's id to... only A. A token signed
        // by B claiming A's id must fail the signature check.
        let (a, keys, now) = setup();
        let b = SecretKey::generate().unwrap();
        let mut token = b.sign(&claims(now)).unwrap();
        let footer = serde_json::to_vec(&Footer { kid: a.id().to_owned() }).unwrap();
        let cut = token.rfind('.').unwrap();
        token.truncate(cut + 1);
        token.push_str(&base64url(&footer));
        assert_eq!(check(&token, &keys, now).unwrap_err(), GrantError::BadSignature);
    }

    #[test]
    fn other_versions_and_purposes_are_refused() {
        let (_, keys, now) = setup();
        for t in ["v4.local.AAAA.BBBB", "v3.public.AAAA", "v2.public.AAAA", "v1.local.AA"] {
            assert_eq!(check(t, &keys, now).unwrap_err(), GrantError::Unsupported, "{t}");
        }
        for t in ["", "v4.public.", "v4.public.!!!!", "eyJhbGciOiJIUzI1NiJ9.e30.sig", "garbage"] {
            assert!(check(t, &keys, now).is_err(), "{t}");
        }
        let long = format!("v4.public.{}", "A".repeat(MAX_TOKEN_LEN));
        assert_eq!(check(&long, &keys, now).unwrap_err(), GrantError::Malformed);
    }

    #[test]
    fn a_signed_token_that_is_not_a_grant_is_refused() {
        let (key, keys, now) = setup();
        let mut c = claims(now);
        c.typ = "session".into();
        assert_eq!(check(&key.sign(&c).unwrap(), &keys, now).unwrap_err(), GrantError::WrongType);
        // Signed with the right implicit assertion but an `aud` claim that disagrees.
        let footer = serde_json::to_vec(&Footer { kid: key.id().to_owned() }).unwrap();
        let mut c = claims(now);
        c.aud = "billing".into();
        let payload = serde_json::to_vec(&c).unwrap();
        let token = PublicToken::sign(
            key.key(),
            &payload,
            Some(&footer),
            Some(implicit_assertion(AUD).as_bytes()),
        )
        .unwrap();
        assert_eq!(check(&token, &keys, now).unwrap_err(), GrantError::WrongAudience);
        let _ = PublicKey::from_paserk(&key.public_key().to_paserk()).unwrap();
    }

    fn base64url(bytes: &[u8]) -> String {
        use base64::Engine as _;
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
    }
}
