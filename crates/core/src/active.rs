//! [`ActiveSession`]: what a session check knows of a live session, in a compact fixed-size form.
//!
//! Every check answers with one, and the node-local cache holds one per active session, so its
//! size is the cache's memory per session: ids and the CSRF token as raw bytes (not text), the
//! username, roles and audience packed into one short inline buffer (a heap string only when they
//! do not fit), and no client details (IP, user agent, times), which only a few endpoints show and
//! read from the store ([`crate::SessionManager::details`]). Copying one is a plain memory copy.

use std::fmt;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use subtle::ConstantTimeEq;
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout};

use crate::id::{SessionId, UserId};
use crate::session::Authenticated;
use crate::token::{CsrfToken, SECRET_BYTES, decode_secret};
use crate::user::Username;

const ID_BYTES: usize = 16;
const ID_BODY: usize = 22;
const ID_TEXT: usize = 4 + ID_BODY;
/// Bytes of username, roles and audience kept inline; longer ones go to the heap.
pub(crate) const INLINE: usize = 48;

const SCOPED: u8 = 1;
const NEEDS_NEW_TOKEN: u8 = 2;

/// The fixed-size part of an [`ActiveSession`]: plain bytes (any bit pattern is a value), so the
/// cache can keep it in memory it maps itself.
#[derive(Clone, Copy, FromBytes, IntoBytes, KnownLayout, Immutable)]
#[repr(C)]
pub(crate) struct Packed {
    session_id: [u8; ID_BYTES],
    pub(crate) user_id: [u8; ID_BYTES],
    csrf: [u8; SECRET_BYTES],
    /// Username, then the roles joined by `,`, then the audience; when `text_len` is over
    /// [`INLINE`], the text is elsewhere (see [`ActiveSession::overflow`]).
    text: [u8; INLINE],
    text_len: u16,
    roles_len: u16,
    username_len: u8,
    flags: u8,
}

// What the cache pays per session, on top of its key and deadlines: keep it small.
const _: () = assert!(std::mem::size_of::<Packed>() == 118);

impl Packed {
    /// Whether the text did not fit inline.
    pub(crate) fn overflows(&self) -> bool {
        usize::from(self.text_len) > INLINE
    }
}

/// A live session as a check sees it: its id, its user (id, name, roles), its CSRF token, the one
/// service it is scoped to (if any), and whether its token predates a change of the user's
/// privileges. Cheap to copy; it carries no secret but the CSRF token, which `Debug` redacts.
#[derive(Clone)]
pub struct ActiveSession {
    packed: Packed,
    /// The text when it does not fit in `packed.text` (long usernames, many roles).
    overflow: Option<Box<str>>,
}

/// A stored record this form cannot hold: an id or CSRF token that is not what Cloakroom
/// generates. Only a store edited by hand holds one; the check fails closed on it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("the stored session has a malformed {0}")]
pub struct Malformed(pub &'static str);

/// Decodes the body of a generated id (`ses_` / `usr_` + 22 canonical base64url characters).
pub(crate) fn id_bytes(text: &str, prefix: &str) -> Option<[u8; ID_BYTES]> {
    let body = text.strip_prefix(prefix)?;
    let mut out = [0u8; ID_BYTES];
    (body.len() == ID_BODY && B64.decode_slice(body, &mut out).ok()? == ID_BYTES).then_some(out)
}

impl ActiveSession {
    /// The compact form of a session read from the store.
    pub fn new(auth: &Authenticated) -> Result<Self, Malformed> {
        let (s, u) = (&auth.session, &auth.user);
        let session_id =
            id_bytes(s.id.as_str(), SessionId::PREFIX).ok_or(Malformed("session id"))?;
        let user_id = id_bytes(u.id.as_str(), UserId::PREFIX).ok_or(Malformed("user id"))?;
        let csrf = decode_secret(s.csrf.expose()).ok_or(Malformed("CSRF token"))?;
        let username = u.username.as_str();
        let mut text = String::with_capacity(INLINE);
        text.push_str(username);
        for (i, role) in u.roles.iter().enumerate() {
            if i > 0 {
                text.push(',');
            }
            text.push_str(role.as_str());
        }
        let roles_len = text.len() - username.len();
        if let Some(a) = &s.audience {
            text.push_str(a);
        }
        let mut flags = 0;
        if s.audience.is_some() {
            flags |= SCOPED;
        }
        if u.privileges_changed_at > s.token_issued_at {
            flags |= NEEDS_NEW_TOKEN;
        }
        let mut packed = Packed {
            session_id,
            user_id,
            csrf,
            text: [0; INLINE],
            text_len: u16::try_from(text.len()).map_err(|_| Malformed("role list"))?,
            roles_len: u16::try_from(roles_len).map_err(|_| Malformed("role list"))?,
            username_len: u8::try_from(username.len()).map_err(|_| Malformed("username"))?,
            flags,
        };
        let overflow = if text.len() <= INLINE {
            packed.text[..text.len()].copy_from_slice(text.as_bytes());
            None
        } else {
            Some(text.into_boxed_str())
        };
        Ok(Self { packed, overflow })
    }

    /// Reassembles a session from what the cache kept; `None` when the text overflowed and
    /// `overflow` does not hold it.
    pub(crate) fn from_parts(packed: Packed, overflow: Option<&str>) -> Option<Self> {
        let overflow = match (packed.overflows(), overflow) {
            (false, _) => None,
            (true, Some(t)) if t.len() == usize::from(packed.text_len) => Some(t.into()),
            (true, _) => return None,
        };
        Some(Self { packed, overflow })
    }

    /// The fixed-size part, for the cache.
    pub(crate) fn packed(&self) -> &Packed {
        &self.packed
    }

    /// The text, when it did not fit in the fixed-size part.
    pub(crate) fn overflow(&self) -> Option<&str> {
        self.overflow.as_deref()
    }

    fn text(&self) -> &str {
        match &self.overflow {
            Some(t) => t,
            // Built from a `&str`, and cut only at the lengths recorded with it.
            None => self
                .packed
                .text
                .get(..usize::from(self.packed.text_len))
                .and_then(|b| std::str::from_utf8(b).ok())
                .unwrap_or_default(),
        }
    }

    /// The session's public id (`ses_…`), as text without allocating.
    pub fn session_id_text(&self) -> IdText {
        IdText::encode(SessionId::PREFIX, &self.packed.session_id)
    }

    /// The session's public id.
    pub fn session_id(&self) -> SessionId {
        SessionId::from_stored(self.session_id_text().as_str().to_owned())
    }

    /// The user's id (`usr_…`), as text without allocating.
    pub fn user_id_text(&self) -> IdText {
        IdText::encode(UserId::PREFIX, &self.packed.user_id)
    }

    /// The user's id.
    pub fn user_id(&self) -> UserId {
        UserId::from_stored(self.user_id_text().as_str().to_owned())
    }

    /// The username.
    pub fn username(&self) -> &str {
        self.text().get(..usize::from(self.packed.username_len)).unwrap_or_default()
    }

    /// The username, owned.
    pub fn username_owned(&self) -> Username {
        Username::from_stored(self.username().to_owned())
    }

    /// The roles, sorted, joined by `,` (roles never contain one): the `X-Cloakroom-Roles` value.
    pub fn roles_joined(&self) -> &str {
        let start = usize::from(self.packed.username_len);
        self.text().get(start..start + usize::from(self.packed.roles_len)).unwrap_or_default()
    }

    /// The roles.
    pub fn roles(&self) -> impl Iterator<Item = &str> {
        self.roles_joined().split(',').filter(|r| !r.is_empty())
    }

    /// Whether the user holds `role`.
    pub fn has_role(&self, role: &str) -> bool {
        self.roles().any(|r| r == role)
    }

    /// The one service a session traded for a grant is valid for; `None` for a login session.
    pub fn audience(&self) -> Option<&str> {
        let start = usize::from(self.packed.username_len) + usize::from(self.packed.roles_len);
        (self.packed.flags & SCOPED != 0).then(|| self.text().get(start..).unwrap_or_default())
    }

    /// Whether the session counts where sessions scoped to `audience` are also accepted (`None`:
    /// only login sessions). A login session counts everywhere; a scoped one only for its own
    /// audience.
    pub fn valid_for(&self, audience: Option<&str>) -> bool {
        self.packed.flags & SCOPED == 0 || self.audience() == audience
    }

    /// Whether `presented` is the session's CSRF token, in time independent of where they differ.
    pub fn csrf_matches(&self, presented: &str) -> bool {
        decode_secret(presented).is_some_and(|p| bool::from(p.ct_eq(&self.packed.csrf)))
    }

    /// The CSRF token, to hand to the session's own client (a response body, a form field).
    pub fn csrf_token(&self) -> CsrfToken {
        CsrfToken::from_stored(B64.encode(self.packed.csrf))
    }

    /// The same session after its token was replaced (and its CSRF token, possibly): the new
    /// token is newer than any privilege change so far.
    pub fn rotated(&self, csrf: &CsrfToken) -> Self {
        let mut s = self.clone();
        s.packed.csrf = decode_secret(csrf.expose()).unwrap_or(self.packed.csrf);
        s.packed.flags &= !NEEDS_NEW_TOKEN;
        s
    }

    /// Whether the token predates a change of the user's privileges, so that it must be replaced
    /// ("a new token whenever a user's privileges change for that session").
    pub fn needs_new_token(&self) -> bool {
        self.packed.flags & NEEDS_NEW_TOKEN != 0
    }
}

impl fmt::Debug for ActiveSession {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ActiveSession")
            .field("session_id", &self.session_id_text().as_str())
            .field("user_id", &self.user_id_text().as_str())
            .field("username", &self.username())
            .field("roles", &self.roles_joined())
            .field("audience", &self.audience())
            .field("csrf", &"<redacted>")
            .finish()
    }
}

/// A public id as text on the stack (`ses_…`, `usr_…`).
#[derive(Clone, Copy)]
pub struct IdText([u8; ID_TEXT]);

impl IdText {
    fn encode(prefix: &str, bytes: &[u8; ID_BYTES]) -> Self {
        let mut out = [0u8; ID_TEXT];
        out[..4].copy_from_slice(prefix.as_bytes());
        // 16 bytes always encode to exactly 22 characters.
        let _ = B64.encode_slice(bytes, &mut out[4..]);
        Self(out)
    }

    /// The text.
    pub fn as_str(&self) -> &str {
        std::str::from_utf8(&self.0).unwrap_or_default()
    }
}

impl fmt::Display for IdText {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl fmt::Debug for IdText {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::time::Timestamp;
    use crate::user::Role;

    fn auth(username: &str, roles: &[&str], audience: Option<&str>) -> Authenticated {
        let mut a = Authenticated::fixture(&UserId::generate().unwrap(), Timestamp::now());
        a.user.username = Username::parse(username).unwrap();
        a.user.roles = roles.iter().map(|r| Role::parse(r).unwrap()).collect();
        a.session.audience = audience.map(str::to_owned);
        a
    }

    #[test]
    fn keeps_everything_a_check_needs() {
        for (name, roles, audience) in [
            ("alice", vec![], None),
            ("someone@example.com", vec!["billing", "staff"], None),
            ("bob", vec!["admin"], Some("files")),
            // Longer than the inline buffer: kept on the heap, read the same way.
            (&*"long.name".repeat(7), vec!["a-role-with-a-long-name", "b:read", "c"], Some("x")),
        ] {
            let a = auth(name, &roles, audience);
            let s = ActiveSession::new(&a).unwrap();
            assert_eq!(s.session_id(), a.session.id);
            assert_eq!(s.session_id_text().as_str(), a.session.id.as_str());
            assert_eq!(s.user_id(), a.user.id);
            assert_eq!(s.username(), name);
            assert_eq!(s.roles().collect::<Vec<_>>(), roles);
            assert_eq!(s.roles_joined(), roles.join(","));
            assert_eq!(s.audience(), audience);
            assert!(s.has_role("admin") == roles.contains(&"admin"));
            assert!(!s.has_role(""), "an empty role is never held");
            assert!(s.csrf_matches(a.session.csrf.expose()));
            assert_eq!(s.csrf_token(), a.session.csrf);
            assert!(s.valid_for(audience));
            assert_eq!(s.valid_for(None), audience.is_none());
            assert!(!s.needs_new_token());
        }
    }

    #[test]
    fn csrf_must_match_exactly() {
        let a = auth("alice", &["staff"], None);
        let s = ActiveSession::new(&a).unwrap();
        let good = a.session.csrf.expose();
        assert!(!s.csrf_matches(""));
        assert!(!s.csrf_matches(&good[1..]));
        assert!(!s.csrf_matches(&format!("{good}A")));
        assert!(!s.csrf_matches(CsrfToken::generate().unwrap().expose()));
        // The same bytes in a non-canonical spelling are refused too: the last character of 32
        // bytes carries 2 bits and 4 zero bits (A, Q, g or w); the next letter sets a zero bit.
        let mut other = good.as_bytes().to_vec();
        let last = other.len() - 1;
        other[last] += 1;
        assert!(!s.csrf_matches(std::str::from_utf8(&other).unwrap()));
        assert!(!format!("{s:?}").contains(good), "Debug never shows the CSRF token");
    }

    #[test]
    fn a_token_older_than_a_privilege_change_needs_replacing() {
        let mut a = auth("alice", &["staff"], None);
        a.user.privileges_changed_at = a.session.token_issued_at.plus(Duration::from_millis(1));
        assert!(ActiveSession::new(&a).unwrap().needs_new_token());
    }

    #[test]
    fn records_cloakroom_never_generates_are_refused() {
        let mut a = auth("alice", &[], None);
        a.session.id = SessionId::from_stored("ses_short".into());
        assert_eq!(ActiveSession::new(&a).unwrap_err(), Malformed("session id"));
        let mut a = auth("alice", &[], None);
        a.session.csrf = CsrfToken::from_stored("not base64!".into());
        assert_eq!(ActiveSession::new(&a).unwrap_err(), Malformed("CSRF token"));
    }
}
