-- Cloakroom schema, version 1. Times are milliseconds since the Unix epoch.
CREATE TABLE users (
    id            TEXT PRIMARY KEY,
    username      TEXT NOT NULL UNIQUE,
    password_hash TEXT,
    roles         TEXT NOT NULL DEFAULT '[]', -- JSON array of role names, sorted
    disabled      INTEGER NOT NULL DEFAULT 0,
    privileges_changed_at INTEGER NOT NULL DEFAULT 0, -- sessions whose token is older get a new one
    created_at    INTEGER NOT NULL,
    updated_at    INTEGER NOT NULL
) STRICT;

CREATE TABLE sessions (
    id              TEXT PRIMARY KEY,
    token_hash      BLOB NOT NULL UNIQUE,     -- SHA-256 of the token; the token itself is never stored
    csrf_token      TEXT NOT NULL,
    user_id         TEXT NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    created_at      INTEGER NOT NULL,
    last_seen_at    INTEGER NOT NULL,
    token_issued_at INTEGER NOT NULL,          -- when the current token was issued (login, rotation)
    idle_expires_at INTEGER NOT NULL,
    expires_at      INTEGER NOT NULL,
    ip              TEXT,
    user_agent      TEXT,
    data            TEXT NOT NULL DEFAULT '{}',
    data_version    INTEGER NOT NULL DEFAULT 1
) STRICT;
CREATE INDEX sessions_by_user ON sessions (user_id, created_at);
CREATE INDEX sessions_by_idle_expiry ON sessions (idle_expires_at);

CREATE TABLE api_keys (
    name       TEXT PRIMARY KEY,
    key_hash   BLOB NOT NULL UNIQUE,
    created_at INTEGER NOT NULL
) STRICT;

CREATE TABLE audit_events (
    id         INTEGER PRIMARY KEY AUTOINCREMENT,
    at         INTEGER NOT NULL,
    kind       TEXT NOT NULL,
    actor      TEXT NOT NULL,
    user_id    TEXT,
    username   TEXT,
    session_id TEXT,
    ip         TEXT,
    detail     TEXT
) STRICT;
CREATE INDEX audit_by_username ON audit_events (username, id);

-- The bus: every change that can make a node-local cache stale, written in the change's own
-- transaction and polled by every server on this file (the CLI included as a writer).
CREATE TABLE invalidations (
    seq     INTEGER PRIMARY KEY AUTOINCREMENT,
    user_id TEXT,                 -- NULL: every user
    at      INTEGER NOT NULL
) STRICT;

-- Sliding-window event logs (login throttling), shared by every server on this file.
CREATE TABLE event_log (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    key TEXT NOT NULL,
    at  INTEGER NOT NULL
) STRICT;
CREATE INDEX event_log_by_key ON event_log (key, at);
