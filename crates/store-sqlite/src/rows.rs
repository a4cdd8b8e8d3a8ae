//! Reading rows into Cloakroom's types, by column name, and the column lists the queries select.

use cloakroom_core::audit::AuditEvent;
use cloakroom_core::grant::{GrantRevocation, SigningKeyRecord};
use cloakroom_core::password::PasswordHash;
use cloakroom_core::session::Session;
use cloakroom_core::store::{ApiKey, codec};
use cloakroom_core::user::UserRecord;
use cloakroom_core::{
    Authenticated, CsrfToken, SessionId, StoreError, Timestamp, User, UserId, Username,
};
use sqlx::Row as _;
use sqlx::sqlite::SqliteRow;

use crate::db_err;

/// A user's columns, for [`user`].
pub(crate) const USER: &str =
    "id, username, password_hash, roles, disabled, created_at, updated_at, privileges_changed_at";

/// A session joined with its user (`sessions s JOIN users u`), for [`authenticated`].
pub(crate) const AUTH: &str = "s.id, s.user_id, s.csrf_token, s.created_at, s.last_seen_at, \
    s.token_issued_at, s.idle_expires_at, s.expires_at, s.ip, s.user_agent, s.audience, \
    u.username, u.roles, u.disabled, u.password_hash IS NOT NULL AS has_password, \
    u.created_at AS user_created_at, u.updated_at AS user_updated_at, u.privileges_changed_at";

fn get<'r, T>(row: &'r SqliteRow, column: &str) -> Result<T, StoreError>
where
    T: sqlx::Decode<'r, sqlx::Sqlite> + sqlx::Type<sqlx::Sqlite>,
{
    row.try_get(column).map_err(db_err)
}

fn time(row: &SqliteRow, column: &str) -> Result<Timestamp, StoreError> {
    get::<i64>(row, column).map(Timestamp::from_millis)
}

pub(crate) fn user(row: &SqliteRow) -> Result<UserRecord, StoreError> {
    let hash: Option<String> = get(row, "password_hash")?;
    Ok(UserRecord {
        user: User {
            id: UserId::from_stored(get(row, "id")?),
            username: Username::from_stored(get(row, "username")?),
            roles: codec::roles_from_json(&get::<String>(row, "roles")?)?,
            disabled: get(row, "disabled")?,
            has_password: hash.is_some(),
            created_at: time(row, "created_at")?,
            updated_at: time(row, "updated_at")?,
            privileges_changed_at: time(row, "privileges_changed_at")?,
        },
        password_hash: hash.map(PasswordHash::from_stored),
    })
}

pub(crate) fn authenticated(row: &SqliteRow) -> Result<Authenticated, StoreError> {
    let user_id = UserId::from_stored(get(row, "user_id")?);
    let session = Session {
        id: SessionId::from_stored(get(row, "id")?),
        user_id: user_id.clone(),
        csrf: CsrfToken::from_stored(get(row, "csrf_token")?),
        created_at: time(row, "created_at")?,
        last_seen_at: time(row, "last_seen_at")?,
        token_issued_at: time(row, "token_issued_at")?,
        idle_expires_at: time(row, "idle_expires_at")?,
        expires_at: time(row, "expires_at")?,
        ip: get(row, "ip")?,
        user_agent: get(row, "user_agent")?,
        audience: get(row, "audience")?,
    };
    let user = User {
        id: user_id,
        username: Username::from_stored(get(row, "username")?),
        roles: codec::roles_from_json(&get::<String>(row, "roles")?)?,
        disabled: get(row, "disabled")?,
        has_password: get(row, "has_password")?,
        created_at: time(row, "user_created_at")?,
        updated_at: time(row, "user_updated_at")?,
        privileges_changed_at: time(row, "privileges_changed_at")?,
    };
    Ok(Authenticated { session, user })
}

/// The `id` column of each row, as session ids.
pub(crate) fn session_ids(rows: &[SqliteRow]) -> Result<Vec<SessionId>, StoreError> {
    rows.iter().map(|r| get(r, "id").map(SessionId::from_stored)).collect()
}

pub(crate) fn api_key(row: &SqliteRow) -> Result<ApiKey, StoreError> {
    Ok(ApiKey { name: get(row, "name")?, created_at: time(row, "created_at")? })
}

pub(crate) fn signing_key(row: &SqliteRow) -> Result<SigningKeyRecord, StoreError> {
    Ok(SigningKeyRecord {
        id: get(row, "id")?,
        public: get(row, "public_key")?,
        sealed: get(row, "sealed_secret")?,
        created_at: time(row, "created_at")?,
        active_from: time(row, "active_from")?,
        retired_at: get::<Option<i64>>(row, "retired_at")?.map(Timestamp::from_millis),
    })
}

pub(crate) fn revocation(row: &SqliteRow) -> Result<GrantRevocation, StoreError> {
    let subject = codec::revoked(&get::<String>(row, "kind")?, get(row, "subject")?)?;
    Ok(GrantRevocation { subject, at: time(row, "at")?, until: time(row, "until")? })
}

pub(crate) fn audit_event(row: &SqliteRow) -> Result<AuditEvent, StoreError> {
    Ok(AuditEvent {
        at: time(row, "at")?,
        kind: codec::audit_kind(&get::<String>(row, "kind")?)?,
        actor: get(row, "actor")?,
        user_id: get::<Option<String>>(row, "user_id")?.map(UserId::from_stored),
        username: get::<Option<String>>(row, "username")?.map(Username::from_stored),
        session_id: get::<Option<String>>(row, "session_id")?.map(SessionId::from_stored),
        ip: get(row, "ip")?,
        detail: get(row, "detail")?,
    })
}
