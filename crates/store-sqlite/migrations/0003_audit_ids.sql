-- Audit events get a stable identity (`aud_…`), given when they are appended and kept by
-- `cloakroom store copy`, so that a second copy to another store adds no duplicate. Events from
-- before get one now.
ALTER TABLE audit_events ADD COLUMN ref TEXT;
UPDATE audit_events SET ref = 'aud_' || lower(hex(randomblob(16)));
CREATE UNIQUE INDEX audit_by_ref ON audit_events (ref);
