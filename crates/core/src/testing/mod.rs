//! The store conformance suite: every [`Store`] must pass it. A store crate runs it with
//!
//! ```ignore
//! cloakroom_core::store_conformance_tests!(async || {
//!     let dir = tempfile::tempdir().unwrap();
//!     let store = MyStore::open(dir.path()).await.unwrap();
//!     (store, dir) // the second value is dropped when the test ends (temp dirs, servers)
//! });
//! ```
//!
//! which expands to one `#[tokio::test]` per property, grouped as the store traits are: one file
//! and one test module per trait (`users`, `sessions`, `api_keys`, `event_logs`, `grants`, `audit`,
//! `feed`), and `transfer` for export and import. A failure names the trait and what broke. The
//! transfer pair properties get two stores from the factory: a source and a destination.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use serde_json::json;

use crate::id::{SessionId, UserId};
use crate::password::PasswordHash;
use crate::session::NewSession;
use crate::store::prelude::*;
use crate::time::Timestamp;
use crate::token::{CsrfToken, SecretKind, Token, TokenHash};
use crate::user::{NewUser, Role, User, Username};

pub mod api_keys;
pub mod audit;
pub mod event_logs;
pub mod feed;
pub mod grants;
pub mod sessions;
pub mod transfer;
pub mod users;

pub use transfer::*;

pub(crate) const MIN: Duration = Duration::from_secs(60);
pub(crate) const HOUR: Duration = Duration::from_secs(3600);

/// A fixed "now" for tests, with room before and after.
pub fn t0() -> Timestamp {
    Timestamp::from_millis(1_800_000_000_000)
}

/// Creates a user named `name` with `roles`.
pub async fn user(store: &dyn Store, name: &str, roles: &[&str]) -> User {
    let new = NewUser {
        id: UserId::generate().expect("rng"),
        username: Username::parse(name).expect("valid name"),
        roles: roles.iter().map(|r| Role::parse(r).expect("valid role")).collect(),
        password_hash: Some(PasswordHash::from_stored(
            "$argon2id$v=19$m=64,t=1,p=1$c2FsdHNhbHQ$aGFzaA".into(),
        )),
        created_at: t0(),
    };
    store.create_user(&new).await.expect("create user")
}

/// A new session for `user` created at `at`, idle 30 min, absolute 12 h, and its token.
pub fn new_session(user: &User, at: Timestamp) -> (Token, NewSession) {
    let token = Token::generate(SecretKind::Session).expect("rng");
    let s = NewSession {
        id: SessionId::generate().expect("rng"),
        token_hash: token.hash(),
        csrf: CsrfToken::generate().expect("rng"),
        user_id: user.id.clone(),
        created_at: at,
        idle_expires_at: at.plus(30 * MIN),
        expires_at: at.plus(12 * HOUR),
        ip: Some("192.0.2.1".into()),
        user_agent: Some("conformance".into()),
        audience: None,
        data: json!({}),
    };
    (token, s)
}

/// Creates a session for `user` at `at` (no cap) and returns its token and id.
pub async fn session(store: &dyn Store, user: &User, at: Timestamp) -> (Token, SessionId) {
    let (token, s) = new_session(user, at);
    store.create_session(&s, 0, at).await.expect("create session");
    (token, s.id)
}

pub(crate) fn random_hash() -> TokenHash {
    Token::generate(SecretKind::Session).expect("rng").hash()
}

/// Expands to one test per conformance property for the store that `$factory` builds, in one
/// module per store trait (`users::…`, `sessions::…`), so a failure names the trait and what
/// broke. The factory is an async closure returning `(store, guard)`; the guard lives until the
/// test ends.
#[macro_export]
macro_rules! store_conformance_tests {
    ($factory:expr) => {
        mod users {
            use super::*;
            $crate::store_conformance_tests!(@each $factory; users;
                user_changes, users_are_unique_and_listed,
                replace_password_hash_is_compare_and_set, privilege_changes_are_stamped);
        }
        mod sessions {
            use super::*;
            $crate::store_conformance_tests!(@each $factory; sessions;
                create_and_find, unknown_tokens_are_never_adopted, idle_expiry_and_touch,
                absolute_expiry, revoke_one, revoke_others_and_all, list_by_user, cap_per_user,
                rotate, session_data_compare_and_set, delete_expired,
                scoped_sessions_keep_their_audience);
            $crate::store_conformance_tests!(@shared $factory; sessions;
                concurrent_data_writers_never_overwrite, revoked_sessions_are_never_resurrected);
        }
        mod api_keys {
            use super::*;
            $crate::store_conformance_tests!(@each $factory; api_keys; api_keys);
        }
        mod event_logs {
            use super::*;
            $crate::store_conformance_tests!(@each $factory; event_logs; event_logs);
            $crate::store_conformance_tests!(@shared $factory; event_logs;
                event_reservations_hold_under_races);
        }
        mod grants {
            use super::*;
            $crate::store_conformance_tests!(@each $factory; grants;
                grant_revocations, signing_keys, user_grant_revocations_are_coalesced);
            $crate::store_conformance_tests!(@shared $factory; grants; grants_are_redeemed_once);
        }
        mod audit {
            use super::*;
            $crate::store_conformance_tests!(@each $factory; audit; audit_events);
        }
        mod feed {
            use super::*;
            $crate::store_conformance_tests!(@each $factory; feed; invalidations_reach_subscribers);
        }
        mod transfer {
            use super::*;
            $crate::store_conformance_tests!(@each $factory; transfer; imports_are_announced);
            $crate::store_conformance_tests!(@pair $factory; transfer;
                transfer_round_trip_preserves_everything, a_second_import_writes_nothing,
                imports_bring_the_delta_and_never_resurrect);
        }
    };
    (@each $factory:expr; $group:ident; $($name:ident),* $(,)?) => {$(
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn $name() {
            let (store, _guard) = ($factory)().await;
            $crate::testing::$group::$name(&store).await;
        }
    )*};
    (@pair $factory:expr; $group:ident; $($name:ident),* $(,)?) => {$(
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn $name() {
            let (source, _source_guard) = ($factory)().await;
            let (destination, _destination_guard) = ($factory)().await;
            $crate::testing::$group::$name(&source, &destination).await;
        }
    )*};
    (@shared $factory:expr; $group:ident; $($name:ident),* $(,)?) => {$(
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn $name() {
            let (store, _guard) = ($factory)().await;
            $crate::testing::$group::$name(::std::sync::Arc::new(store)).await;
        }
    )*};
}
