-- Grants (PASETO v4.public single-use tokens) and sessions scoped to one service.

-- A session made by trading a grant (`POST /v1/grants/exchange`) is valid for that audience only.
ALTER TABLE sessions ADD COLUMN audience TEXT;

CREATE TABLE signing_keys (
    id            TEXT PRIMARY KEY,            -- PASERK id, k4.pid.…
    public_key    TEXT NOT NULL,               -- PASERK k4.public.…
    sealed_secret TEXT NOT NULL,               -- the secret key sealed with the grant_key (v4.local)
    created_at    INTEGER NOT NULL,
    active_from   INTEGER NOT NULL,
    retired_at    INTEGER
) STRICT;

-- Grants used up, kept until they expire (after that they fail verification anyway).
CREATE TABLE redeemed_grants (
    id         TEXT PRIMARY KEY,
    expires_at INTEGER NOT NULL
) STRICT;

-- Grants and users whose grants were revoked, kept until every grant they concern expired.
CREATE TABLE grant_revocations (
    seq     INTEGER PRIMARY KEY AUTOINCREMENT,
    kind    TEXT NOT NULL CHECK (kind IN ('grant', 'user')),
    subject TEXT NOT NULL,
    at      INTEGER NOT NULL,
    until   INTEGER NOT NULL
) STRICT;
CREATE INDEX grant_revocations_by_at ON grant_revocations (at);
CREATE INDEX grant_revocations_by_subject ON grant_revocations (kind, subject, at);
