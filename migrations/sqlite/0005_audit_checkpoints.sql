-- Signed checkpoints of the audit chain (docs/audit.md, "Signed checkpoints"). The sinks off the
-- database host are the record that counts; this copy lets the broker extend one chain of
-- checkpoints across restarts, and the pages and exports show them. Append-only like the log.
-- Migrations are append-only: never edit a landed file.
CREATE TABLE audit_checkpoints (
    number BIGINT NOT NULL PRIMARY KEY CHECK (typeof(number) = 'integer' AND number > 0),
    seq    BIGINT NOT NULL CHECK (seq >= 0),
    hash   TEXT NOT NULL UNIQUE,
    body   TEXT NOT NULL
);
CREATE INDEX audit_checkpoints_seq ON audit_checkpoints (seq);

CREATE TRIGGER audit_checkpoints_no_update BEFORE UPDATE ON audit_checkpoints
BEGIN
    SELECT RAISE(ABORT, 'audit_checkpoints is append-only: UPDATE refused');
END;
CREATE TRIGGER audit_checkpoints_no_delete BEFORE DELETE ON audit_checkpoints
BEGIN
    SELECT RAISE(ABORT, 'audit_checkpoints is append-only: DELETE refused');
END;
