//! Keys: Ed25519 signing keys and their public halves, written as PASERK (`k4.secret.…`,
//! `k4.public.…`) and named by PASERK id (`k4.pid.…`); the set of keys a verifier trusts; and the
//! symmetric key that seals signing keys at rest.

use std::collections::HashMap;
use std::fmt;

use pasetors::keys::{AsymmetricKeyPair, AsymmetricPublicKey, AsymmetricSecretKey, Generate};
use pasetors::paserk::{FormatAsPaserk, Id};
use pasetors::token::UntrustedToken;
use pasetors::version4::{LocalToken, V4};
use pasetors::{Local, keys::SymmetricKey as PasetoSymmetricKey};

use crate::token::GrantError;

fn paserk(key: &dyn FormatAsPaserk) -> String {
    let mut s = String::new();
    // Writing to a String cannot fail.
    let _ = key.fmt(&mut s);
    s
}

/// A public verification key with its PASERK id.
#[derive(Clone)]
pub struct PublicKey {
    key: AsymmetricPublicKey<V4>,
    id: String,
}

impl PublicKey {
    fn new(key: AsymmetricPublicKey<V4>) -> Self {
        let id = paserk(&Id::from(&key));
        Self { key, id }
    }

    /// Parses a `k4.public.…` PASERK. Any other type or version is refused.
    pub fn from_paserk(s: &str) -> Result<Self, GrantError> {
        AsymmetricPublicKey::<V4>::try_from(s).map(Self::new).map_err(|_| GrantError::BadKey)
    }

    /// The key as a `k4.public.…` PASERK.
    pub fn to_paserk(&self) -> String {
        paserk(&self.key)
    }

    /// The PASERK id (`k4.pid.…`) that grants name in their footer.
    pub fn id(&self) -> &str {
        &self.id
    }

    pub(crate) fn key(&self) -> &AsymmetricPublicKey<V4> {
        &self.key
    }
}

impl fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("PublicKey").field(&self.id).finish()
    }
}

/// A signing key. Its `Debug` shows only the id; the secret bytes are wiped on drop (pasetors).
pub struct SecretKey {
    secret: AsymmetricSecretKey<V4>,
    public: PublicKey,
}

impl SecretKey {
    /// A fresh key from the OS random source.
    pub fn generate() -> Result<Self, GrantError> {
        let pair = AsymmetricKeyPair::<V4>::generate().map_err(|_| GrantError::BadKey)?;
        Ok(Self { secret: pair.secret, public: PublicKey::new(pair.public) })
    }

    /// Parses a `k4.secret.…` PASERK.
    pub fn from_paserk(s: &str) -> Result<Self, GrantError> {
        let secret = AsymmetricSecretKey::<V4>::try_from(s).map_err(|_| GrantError::BadKey)?;
        let public =
            AsymmetricPublicKey::<V4>::try_from(&secret).map_err(|_| GrantError::BadKey)?;
        Ok(Self { secret, public: PublicKey::new(public) })
    }

    /// The key as a `k4.secret.…` PASERK. Handle with care: this is the secret.
    pub fn to_paserk(&self) -> String {
        paserk(&self.secret)
    }

    /// The public half.
    pub fn public_key(&self) -> PublicKey {
        self.public.clone()
    }

    /// The PASERK id of the public half.
    pub fn id(&self) -> &str {
        self.public.id()
    }

    pub(crate) fn key(&self) -> &AsymmetricSecretKey<V4> {
        &self.secret
    }
}

impl fmt::Debug for SecretKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("SecretKey").field(&self.public.id).finish()
    }
}

/// The public keys a verifier trusts, by PASERK id.
#[derive(Clone, Debug, Default)]
pub struct KeySet {
    keys: HashMap<String, PublicKey>,
}

impl KeySet {
    /// A set of these keys.
    pub fn from_keys(keys: impl IntoIterator<Item = PublicKey>) -> Self {
        Self { keys: keys.into_iter().map(|k| (k.id.clone(), k)).collect() }
    }

    /// A set parsed from `k4.public.…` PASERKs; any bad one fails the whole set.
    pub fn from_paserks<'a>(keys: impl IntoIterator<Item = &'a str>) -> Result<Self, GrantError> {
        let keys = keys.into_iter().map(PublicKey::from_paserk).collect::<Result<Vec<_>, _>>()?;
        Ok(Self::from_keys(keys))
    }

    /// The key with this PASERK id.
    pub fn get(&self, id: &str) -> Option<&PublicKey> {
        self.keys.get(id)
    }

    /// How many keys.
    pub fn len(&self) -> usize {
        self.keys.len()
    }

    /// Whether there is none.
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// The keys' ids.
    pub fn ids(&self) -> impl Iterator<Item = &str> {
        self.keys.keys().map(String::as_str)
    }
}

/// A 256-bit symmetric key that seals signing keys at rest (PASETO v4.local: XChaCha20 and
/// BLAKE2b-MAC), so that a copy of the store alone cannot sign grants.
pub struct SymmetricKey(PasetoSymmetricKey<V4>);

impl SymmetricKey {
    /// From 32 bytes.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, GrantError> {
        PasetoSymmetricKey::<V4>::from(bytes).map(Self).map_err(|_| GrantError::BadKey)
    }

    /// A fresh key from the OS random source.
    pub fn generate() -> Result<Self, GrantError> {
        PasetoSymmetricKey::<V4>::generate().map(Self).map_err(|_| GrantError::BadKey)
    }

    /// The raw 32 bytes.
    pub fn as_bytes(&self) -> &[u8] {
        self.0.as_bytes()
    }

    /// Seals `key` as a v4.local token bound (implicit assertion) to the key's id, so that a sealed
    /// key swapped onto another record does not open.
    pub fn seal(&self, key: &SecretKey) -> Result<String, GrantError> {
        LocalToken::encrypt(
            &self.0,
            key.to_paserk().as_bytes(),
            None,
            Some(seal_assertion(key.id()).as_bytes()),
        )
        .map_err(|_| GrantError::BadKey)
    }

    /// Opens what [`SymmetricKey::seal`] sealed for the key named `id`. Fails for another
    /// sealing key, another id, or any modification.
    pub fn open(&self, sealed: &str, id: &str) -> Result<SecretKey, GrantError> {
        let token =
            UntrustedToken::<Local, V4>::try_from(sealed).map_err(|_| GrantError::BadKey)?;
        let opened =
            LocalToken::decrypt(&self.0, &token, None, Some(seal_assertion(id).as_bytes()))
                .map_err(|_| GrantError::BadKey)?;
        let key = SecretKey::from_paserk(opened.payload())?;
        if key.id() != id {
            return Err(GrantError::BadKey);
        }
        Ok(key)
    }
}

impl fmt::Debug for SymmetricKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SymmetricKey(…)")
    }
}

fn seal_assertion(id: &str) -> String {
    format!("cloakroom-signing-key:{id}")
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn paserk_round_trips_and_ids_match() {
        let key = SecretKey::generate().unwrap();
        let again = SecretKey::from_paserk(&key.to_paserk()).unwrap();
        assert_eq!(again.id(), key.id());
        assert!(key.id().starts_with("k4.pid."));
        let public = PublicKey::from_paserk(&key.public_key().to_paserk()).unwrap();
        assert_eq!(public.id(), key.id());
        assert!(!format!("{key:?}").contains(&key.to_paserk()));
    }

    #[test]
    fn sealed_keys_open_only_with_the_same_key_and_id() {
        let kek = SymmetricKey::generate().unwrap();
        let key = SecretKey::generate().unwrap();
        let other = SecretKey::generate().unwrap();
        let sealed = kek.seal(&key).unwrap();
        assert!(!sealed.contains(&key.to_paserk()[10..]));
        assert_eq!(kek.open(&sealed, key.id()).unwrap().id(), key.id());
        assert_eq!(kek.open(&sealed, other.id()).unwrap_err(), GrantError::BadKey);
        let wrong = SymmetricKey::generate().unwrap();
        assert_eq!(wrong.open(&sealed, key.id()).unwrap_err(), GrantError::BadKey);
    }

    #[test]
    fn a_secret_paserk_is_not_a_public_key() {
        let key = SecretKey::generate().unwrap();
        assert_eq!(PublicKey::from_paserk(&key.to_paserk()).unwrap_err(), GrantError::BadKey);
        assert_eq!(
            SecretKey::from_paserk(&key.public_key().to_paserk()).unwrap_err(),
            GrantError::BadKey
        );
    }
}
