-- Appends that do not serialise commits. A transaction writes its audit events to
-- `audit_pending`, in the same transaction as the change, without the chain lock; the broker
-- chains them into `audit_events` moments after commit, under the lock, many in one
-- transaction (src/server/src/store/seal.rs, docs/audit.md). Migrations are append-only:
-- never edit a landed file.

-- Which pending event a chained row came from (not part of the hash).
ALTER TABLE audit_events ADD COLUMN pending_id BIGINT;
CREATE UNIQUE INDEX audit_events_pending_id ON audit_events (pending_id) WHERE pending_id IS NOT NULL;

CREATE TABLE audit_pending (
    id          BIGSERIAL PRIMARY KEY,
    at          BIGINT NOT NULL,
    actor       TEXT NOT NULL,
    action      TEXT NOT NULL,
    request_id  TEXT,
    entitlement TEXT,
    data        TEXT NOT NULL
);

-- A pending event is never changed, and leaves only by being chained: a DELETE is refused
-- unless the chain holds the event, field for field, as it was written.
CREATE FUNCTION audit_pending_refuse_change() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'audit_pending is append-only until chained: % refused', TG_OP;
END
$$;
CREATE TRIGGER audit_pending_no_update BEFORE UPDATE ON audit_pending
    FOR EACH ROW EXECUTE FUNCTION audit_pending_refuse_change();
CREATE TRIGGER audit_pending_no_truncate BEFORE TRUNCATE ON audit_pending
    FOR EACH STATEMENT EXECUTE FUNCTION audit_pending_refuse_change();

CREATE FUNCTION audit_pending_check_delete() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF NOT EXISTS (
        SELECT 1 FROM audit_events e
        WHERE e.pending_id = OLD.id
          AND e.at = OLD.at
          AND e.actor = OLD.actor
          AND e.action = OLD.action
          AND e.request_id IS NOT DISTINCT FROM OLD.request_id
          AND e.entitlement IS NOT DISTINCT FROM OLD.entitlement
          AND e.data = OLD.data
    ) THEN
        RAISE EXCEPTION 'audit_pending: event % is not in the chain: DELETE refused', OLD.id;
    END IF;
    RETURN OLD;
END
$$;
CREATE TRIGGER audit_pending_chained_only BEFORE DELETE ON audit_pending
    FOR EACH ROW EXECUTE FUNCTION audit_pending_check_delete();
