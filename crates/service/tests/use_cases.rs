//! The use cases' rules, through the service itself: they hold for every front end that calls it
//! (the HTTP API, the pages, the CLI), so they are pinned here once, over the embedded store.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;

use cloakroom_core::audit::{AuditFilter, AuditKind};
use cloakroom_core::manager::ManagerConfig;
use cloakroom_core::password::{Cost, PasswordHasher};
use cloakroom_core::{ActiveSession, SessionManager, Store};
use cloakroom_service::throttle::{Limits, Throttle};
use cloakroom_service::{Actor, Client, DomainError, Service, UserChanges};
use cloakroom_store_sqlite::SqliteStore;

const PASSWORD: &str = "correct horse battery";

async fn service() -> (Service, SqliteStore, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(dir.path().join("s.db").to_str().unwrap()).await.unwrap();
    let shared: Arc<dyn Store> = Arc::new(store.clone());
    let manager = SessionManager::new(
        Arc::clone(&shared),
        PasswordHasher::new(Cost::INSECURE_TEST, 4, None),
        ManagerConfig::default(),
    );
    let service = Service::new(manager, Throttle::new(shared, Limits::default()), None);
    (service, store, dir)
}

async fn add(service: &Service, name: &str, roles: &[&str]) {
    let roles: Vec<String> = roles.iter().map(|r| (*r).to_owned()).collect();
    service.create_user(&Actor::Cli, name, Some(PASSWORD.into()), &roles).await.unwrap();
}

async fn log_in(service: &Service, name: &str) -> ActiveSession {
    let issued = service.log_in(name, PASSWORD.into(), &Client::default(), None).await.unwrap();
    service.manager().authenticate(&issued.token.expose()).await.unwrap().unwrap()
}

async fn kinds(service: &Service, user: &str) -> Vec<(AuditKind, String)> {
    let username = Some(cloakroom_core::Username::parse(user).unwrap());
    let filter = AuditFilter { username, limit: 100 };
    let events = service.audit_log(&Actor::Cli, &filter).await.unwrap();
    events.into_iter().map(|e| (e.kind, e.actor)).collect()
}

#[tokio::test]
async fn an_owner_cannot_revoke_or_even_find_anyone_elses_session() {
    let (service, _store, _dir) = service().await;
    add(&service, "alice", &[]).await;
    add(&service, "bob", &[]).await;
    let alice = log_in(&service, "alice").await;
    let bob = log_in(&service, "bob").await;
    let id = bob.session_id();
    let e = service.revoke_session(&Actor::owner(&alice), id.as_str(), &Client::default()).await;
    assert!(matches!(e, Err(DomainError::NotFound("session"))), "{e:?}");
    // Bob's session lives on; his own revocation works.
    assert!(service.manager().details(&bob).await.unwrap().is_some());
    service.revoke_session(&Actor::owner(&bob), id.as_str(), &Client::default()).await.unwrap();
    assert!(service.manager().details(&bob).await.unwrap().is_none());
}

#[tokio::test]
async fn an_owner_is_no_operator() {
    let (service, _store, _dir) = service().await;
    add(&service, "alice", &[]).await;
    add(&service, "bob", &[]).await;
    let alice = Actor::owner(&log_in(&service, "alice").await);
    let client = Client::default();
    assert!(matches!(service.users(&alice).await, Err(DomainError::Forbidden(_))));
    let e = service.revoke_user_sessions(&alice, "bob", &client).await;
    assert!(matches!(e, Err(DomainError::Forbidden(_))), "{e:?}");
    let e = service.set_disabled(&alice, "bob", true).await;
    assert!(matches!(e, Err(DomainError::Forbidden(_))), "{e:?}");
    let e = service.create_api_key(&alice, "mine").await;
    assert!(matches!(e, Err(DomainError::Forbidden(_))), "{e:?}");
    assert!(!service.user("bob").await.unwrap().disabled);
}

#[tokio::test]
async fn the_admin_role_is_checked_when_the_actor_is_made() {
    let (service, _store, _dir) = service().await;
    add(&service, "alice", &[]).await;
    add(&service, "root", &["admin"]).await;
    assert!(Actor::admin(&log_in(&service, "alice").await).is_err());
    assert!(Actor::admin(&log_in(&service, "root").await).is_ok());
}

#[tokio::test]
async fn an_admin_cannot_disable_themself_on_any_front_end() {
    let (service, _store, _dir) = service().await;
    add(&service, "root", &["admin"]).await;
    let root = Actor::admin(&log_in(&service, "root").await).unwrap();
    let e = service.set_disabled(&root, "root", true).await;
    assert!(matches!(e, Err(DomainError::SelfDisable)), "{e:?}");
    let changes = UserChanges { disabled: Some(true), ..UserChanges::default() };
    let e = service.put_user(&root, "ROOT", changes).await;
    assert!(matches!(e, Err(DomainError::SelfDisable)), "{e:?}");
    assert!(!service.user("root").await.unwrap().disabled);
    // The command line has no account to lock out.
    let (user, revoked) = service.set_disabled(&Actor::Cli, "root", true).await.unwrap();
    assert!(user.disabled);
    assert_eq!(revoked, 1);
}

#[tokio::test]
async fn a_refused_user_change_changes_nothing() {
    let (service, _store, _dir) = service().await;
    add(&service, "alice", &[]).await;
    let session = log_in(&service, "alice").await;
    let too_many: Vec<String> = (0..100).map(|i| format!("r{i}")).collect();
    let changes = UserChanges {
        password: Some("a whole new password".into()),
        roles: Some(too_many),
        disabled: None,
    };
    let e = service.put_user(&Actor::Cli, "alice", changes).await;
    assert!(matches!(e, Err(DomainError::Invalid(_))), "{e:?}");
    // The password was not set before the roles were refused: the session and password stand.
    assert!(service.manager().details(&session).await.unwrap().is_some());
    service.log_in("alice", PASSWORD.into(), &Client::default(), None).await.unwrap();
}

#[tokio::test]
async fn revocations_from_the_cli_are_audited_as_the_cli() {
    let (service, _store, _dir) = service().await;
    add(&service, "alice", &[]).await;
    let session = log_in(&service, "alice").await;
    log_in(&service, "alice").await;
    let n = service.revoke_user_sessions(&Actor::Cli, "alice", &Client::default()).await.unwrap();
    assert_eq!(n, 2);
    assert!(service.manager().details(&session).await.unwrap().is_none());
    let events = kinds(&service, "alice").await;
    assert!(events.contains(&(AuditKind::SessionsRevoked, "cli".into())), "{events:?}");
}

#[tokio::test]
async fn a_login_ends_the_session_the_client_had() {
    let (service, _store, _dir) = service().await;
    add(&service, "alice", &[]).await;
    let first = service.log_in("alice", PASSWORD.into(), &Client::default(), None).await.unwrap();
    let token = first.token.expose();
    let second =
        service.log_in("alice", PASSWORD.into(), &Client::default(), Some(&token)).await.unwrap();
    assert!(service.manager().authenticate(&token).await.unwrap().is_none());
    assert!(service.manager().authenticate(&second.token.expose()).await.unwrap().is_some());
}

#[tokio::test]
async fn a_wrong_current_password_is_its_own_answer_and_changes_nothing() {
    let (service, _store, _dir) = service().await;
    add(&service, "alice", &[]).await;
    let issued = service.log_in("alice", PASSWORD.into(), &Client::default(), None).await.unwrap();
    let checked = service.manager().check(&issued.token.expose()).await.unwrap().unwrap();
    let e = service
        .change_password(
            &checked.session,
            &checked.token,
            &Client::default(),
            "not the password".into(),
            "a whole new password".into(),
        )
        .await;
    assert!(matches!(e, Err(DomainError::WrongCurrentPassword)), "{e:?}");
    let changed = service
        .change_password(
            &checked.session,
            &checked.token,
            &Client::default(),
            PASSWORD.into(),
            "a whole new password".into(),
        )
        .await
        .unwrap();
    // The old token is dead, the new one lives, the new password works.
    assert!(service.manager().authenticate(&issued.token.expose()).await.unwrap().is_none());
    assert!(service.manager().authenticate(&changed.token.expose()).await.unwrap().is_some());
    service.log_in("alice", "a whole new password".into(), &Client::default(), None).await.unwrap();
}

#[tokio::test]
async fn a_setup_link_creates_one_administrator_even_when_posts_race() {
    let (service, _store, _dir) = service().await;
    let token = service.arm_setup().unwrap();
    let mut tasks = Vec::new();
    for i in 0..8 {
        let (service, token) = (service.clone(), token.clone());
        tasks.push(tokio::spawn(async move {
            let name = format!("admin{i}");
            service.complete_setup(&token, &name, PASSWORD.into(), &Client::default()).await
        }));
    }
    let mut ok = 0;
    for t in tasks {
        match t.await.unwrap() {
            Ok(_) => ok += 1,
            Err(DomainError::Forbidden(_)) => {}
            Err(e) => panic!("{e:?}"),
        }
    }
    assert_eq!(ok, 1);
    let users = service.users(&Actor::Cli).await.unwrap();
    assert_eq!(users.len(), 1);
    assert!(users[0].roles.iter().any(|r| r.as_str() == "admin"));
    assert!(!service.setup_link_valid(&token));
}

#[tokio::test]
async fn a_fixable_setup_mistake_keeps_the_link() {
    let (service, _store, _dir) = service().await;
    let token = service.arm_setup().unwrap();
    let e = service.complete_setup(&token, "root", "short".into(), &Client::default()).await;
    assert!(matches!(e, Err(DomainError::Invalid(_))), "{e:?}");
    assert!(service.setup_link_valid(&token));
    service.complete_setup(&token, "root", PASSWORD.into(), &Client::default()).await.unwrap();
    let again = service.complete_setup(&token, "other", PASSWORD.into(), &Client::default()).await;
    assert!(matches!(again, Err(DomainError::Forbidden(_))), "{again:?}");
    assert!(service.user("other").await.is_err());
}
