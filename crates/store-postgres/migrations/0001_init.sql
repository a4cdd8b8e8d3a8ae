-- Cloakroom schema for PostgreSQL, version 1. Times are milliseconds since the Unix epoch
-- (BIGINT), decided by the caller, as in every other store.

CREATE TABLE users (
    id                    TEXT PRIMARY KEY,
    username              TEXT NOT NULL UNIQUE,
    password_hash         TEXT,                       -- PHC string; NULL: no password login
    roles                 TEXT[] NOT NULL DEFAULT '{}',
    disabled              BOOLEAN NOT NULL DEFAULT FALSE,
    privileges_changed_at BIGINT NOT NULL DEFAULT 0,  -- sessions whose token is older get a new one
    created_at            BIGINT NOT NULL,
    updated_at            BIGINT NOT NULL
);

CREATE TABLE sessions (
    id              TEXT PRIMARY KEY,
    token_hash      BYTEA NOT NULL UNIQUE,   -- SHA-256 of the token; the token itself is never stored
    csrf_token      TEXT NOT NULL,
    user_id         TEXT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    created_at      BIGINT NOT NULL,
    last_seen_at    BIGINT NOT NULL,
    token_issued_at BIGINT NOT NULL,         -- when the current token was issued (login, rotation)
    idle_expires_at BIGINT NOT NULL,
    expires_at      BIGINT NOT NULL,
    ip              TEXT,
    user_agent      TEXT,
    audience        TEXT,                    -- a session traded for a grant serves this audience only
    data            TEXT NOT NULL DEFAULT '{}', -- the application's JSON, kept byte for byte
    data_version    BIGINT NOT NULL DEFAULT 1
);
CREATE INDEX sessions_by_user ON sessions (user_id, created_at);
CREATE INDEX sessions_by_idle_expiry ON sessions (idle_expires_at);
CREATE INDEX sessions_by_expiry ON sessions (expires_at);

CREATE TABLE api_keys (
    name       TEXT PRIMARY KEY,
    key_hash   BYTEA NOT NULL UNIQUE,
    created_at BIGINT NOT NULL
);

CREATE TABLE audit_events (
    id         BIGSERIAL PRIMARY KEY,
    at         BIGINT NOT NULL,
    kind       TEXT NOT NULL,
    actor      TEXT NOT NULL,
    user_id    TEXT,
    username   TEXT,
    session_id TEXT,
    ip         TEXT,
    detail     TEXT
);
CREATE INDEX audit_by_username ON audit_events (username, id);

-- Sliding-window event logs (login throttling), shared by every node.
CREATE TABLE event_log (
    seq BIGSERIAL PRIMARY KEY,
    key TEXT NOT NULL,
    at  BIGINT NOT NULL
);
CREATE INDEX event_log_by_key ON event_log (key, at);
CREATE INDEX event_log_by_at ON event_log (at);

CREATE TABLE signing_keys (
    id            TEXT PRIMARY KEY,            -- PASERK id, k4.pid.…
    public_key    TEXT NOT NULL,               -- PASERK k4.public.…
    sealed_secret TEXT NOT NULL,               -- the secret key sealed with the grant_key (v4.local)
    created_at    BIGINT NOT NULL,
    active_from   BIGINT NOT NULL,
    retired_at    BIGINT
);

-- Grants used up, kept until they expire (after that they fail verification anyway).
CREATE TABLE redeemed_grants (
    id         TEXT PRIMARY KEY,
    expires_at BIGINT NOT NULL
);

-- Grants and users whose grants were revoked, kept until every grant they concern expired.
-- A user has at most one row (later revocations are coalesced into it).
CREATE TABLE grant_revocations (
    seq     BIGSERIAL PRIMARY KEY,
    kind    TEXT NOT NULL CHECK (kind IN ('grant', 'user')),
    subject TEXT NOT NULL,
    at      BIGINT NOT NULL,
    until   BIGINT NOT NULL
);
CREATE INDEX grant_revocations_by_at ON grant_revocations (at);
CREATE UNIQUE INDEX grant_revocations_one_per_user ON grant_revocations (subject) WHERE kind = 'user';
CREATE INDEX grant_revocations_by_grant ON grant_revocations (subject) WHERE kind = 'grant';

-- The change feed's counter: one row, bumped in the transaction of every change it announces
-- (so numbers are handed out in commit order, and an aborted change uses none up). `epoch` is
-- drawn when the schema is made: a listener that sees another one knows the counter restarted.
CREATE TABLE feed_counter (
    one   BOOLEAN PRIMARY KEY DEFAULT TRUE CHECK (one),
    epoch TEXT NOT NULL DEFAULT md5(random()::text || clock_timestamp()::text),
    seq   BIGINT NOT NULL DEFAULT 0
);
INSERT INTO feed_counter DEFAULT VALUES;

-- Announces a change to `uid` ('*': every user) on `channel`, in the caller's transaction: bumps
-- the counter and queues the notification, which PostgreSQL delivers only if that transaction
-- commits. Without the counter row it raises, so the change cannot commit unannounced. Being a
-- function, it lets a change and its announcement be one statement (one round trip).
CREATE FUNCTION cloakroom_announce(channel TEXT, uid TEXT, at BIGINT) RETURNS BIGINT
LANGUAGE plpgsql VOLATILE AS $$
DECLARE
    e TEXT;
    n BIGINT;
BEGIN
    UPDATE feed_counter SET seq = seq + 1 RETURNING epoch, seq INTO e, n;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'cloakroom: the change feed counter is missing; the change is not made';
    END IF;
    PERFORM pg_notify(channel, e || ' ' || n::text || ' ' || uid || ' ' || at::text);
    RETURN n;
END
$$;
