-- `seq` NOT NULL, and a whole number. SQLite lets a primary key that is not INTEGER hold NULL,
-- and a NULL `seq` passes the append trigger (a comparison with NULL is never true), so a row
-- could sit in `audit_events` outside the chain, unseen by `audit verify`. A column's constraints
-- cannot be changed in place: the table is rebuilt with the same rows, then its indexes and
-- triggers are made again as 0001 made them. A database that already holds such a row fails
-- here (`NOT NULL constraint failed` or `CHECK constraint failed`) and keeps every row: see
-- docs/audit.md, "No invisible rows". Migrations are append-only: never edit a landed file.

CREATE TABLE audit_events_0003 (
    seq         BIGINT NOT NULL PRIMARY KEY CHECK (typeof(seq) = 'integer' AND seq > 0),
    at          BIGINT NOT NULL,
    actor       TEXT NOT NULL,
    action      TEXT NOT NULL,
    request_id  TEXT,
    entitlement TEXT,
    data        TEXT NOT NULL,
    prev_hash   TEXT NOT NULL,
    hash        TEXT NOT NULL UNIQUE
);
INSERT INTO audit_events_0003 (seq, at, actor, action, request_id, entitlement, data, prev_hash, hash)
    SELECT seq, at, actor, action, request_id, entitlement, data, prev_hash, hash
    FROM audit_events ORDER BY seq;
-- Dropping the table drops its indexes and triggers; it fires no trigger.
DROP TABLE audit_events;
ALTER TABLE audit_events_0003 RENAME TO audit_events;

CREATE INDEX audit_request ON audit_events (request_id);
CREATE INDEX audit_action ON audit_events (action, seq);

-- The log is append-only at the database level.
CREATE TRIGGER audit_no_update BEFORE UPDATE ON audit_events
BEGIN
    SELECT RAISE(ABORT, 'audit_events is append-only: UPDATE refused');
END;
CREATE TRIGGER audit_no_delete BEFORE DELETE ON audit_events
BEGIN
    SELECT RAISE(ABORT, 'audit_events is append-only: DELETE refused');
END;

-- Appends extend the chain: next sequence number, previous row's hash.
CREATE TRIGGER audit_append_in_chain BEFORE INSERT ON audit_events
WHEN NEW.seq <> COALESCE((SELECT MAX(seq) FROM audit_events), 0) + 1
  OR NEW.prev_hash <> COALESCE((SELECT hash FROM audit_events ORDER BY seq DESC LIMIT 1), '0000000000000000000000000000000000000000000000000000000000000000')
BEGIN
    SELECT RAISE(ABORT, 'audit append out of chain');
END;
