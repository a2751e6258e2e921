-- Signed checkpoints of the audit chain (docs/audit.md, "Signed checkpoints"). The sinks off the
-- database host are the record that counts; this copy lets brokers that share the database
-- extend one chain of checkpoints, and the pages and exports show them. Append-only like the
-- log. Migrations are append-only: never edit a landed file.
CREATE TABLE audit_checkpoints (
    number BIGINT NOT NULL PRIMARY KEY CHECK (number > 0),
    seq    BIGINT NOT NULL CHECK (seq >= 0),
    hash   TEXT NOT NULL UNIQUE,
    body   TEXT NOT NULL
);
CREATE INDEX audit_checkpoints_seq ON audit_checkpoints (seq);

CREATE FUNCTION audit_checkpoints_refuse_change() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'audit_checkpoints is append-only: % refused', TG_OP;
END
$$;
CREATE TRIGGER audit_checkpoints_no_update_delete BEFORE UPDATE OR DELETE ON audit_checkpoints
    FOR EACH ROW EXECUTE FUNCTION audit_checkpoints_refuse_change();
CREATE TRIGGER audit_checkpoints_no_truncate BEFORE TRUNCATE ON audit_checkpoints
    FOR EACH STATEMENT EXECUTE FUNCTION audit_checkpoints_refuse_change();
