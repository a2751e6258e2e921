-- jit schema, PostgreSQL dialect. Migrations are append-only: never edit a landed file.

CREATE TABLE users (
    key         TEXT PRIMARY KEY,
    email       TEXT NOT NULL,
    name        TEXT NOT NULL,
    oid         TEXT,
    groups_json TEXT NOT NULL DEFAULT '[]',
    updated_at  BIGINT NOT NULL
);

CREATE TABLE requests (
    id                 TEXT PRIMARY KEY,
    entitlement        TEXT NOT NULL,
    kind               TEXT NOT NULL,
    requester_key      TEXT NOT NULL REFERENCES users(key),
    requester_email    TEXT NOT NULL,
    state              TEXT NOT NULL CHECK (state IN ('pending','approved','active','expired','denied','cancelled','timed_out','revoked','failed')),
    duration_secs      BIGINT NOT NULL CHECK (duration_secs > 0),
    justification      TEXT NOT NULL,
    ticket             TEXT,
    approvals_required BIGINT NOT NULL CHECK (approvals_required >= 0),
    break_glass        BIGINT NOT NULL DEFAULT 0,
    extends_id         TEXT REFERENCES requests(id),
    root_id            TEXT NOT NULL,
    target_key         TEXT NOT NULL,
    simulated          BIGINT NOT NULL DEFAULT 0,
    created_at         BIGINT NOT NULL,
    pending_until      BIGINT,
    decided_at         BIGINT,
    activated_at       BIGINT,
    expires_at         BIGINT,
    ended_at           BIGINT,
    failure_reason     TEXT,
    provider_ref       TEXT,
    deprovisioned_at   BIGINT,
    reviewed_by        TEXT,
    reviewed_at        BIGINT
);
-- One open request per person and entitlement; more time comes through extensions.
CREATE UNIQUE INDEX requests_one_open ON requests (requester_key, entitlement)
    WHERE state IN ('pending','approved','active') AND extends_id IS NULL;
-- One open extension per request.
CREATE UNIQUE INDEX requests_one_open_extension ON requests (extends_id)
    WHERE state IN ('pending','approved') AND extends_id IS NOT NULL;
CREATE INDEX requests_state ON requests (state);
CREATE INDEX requests_requester ON requests (requester_key, created_at);
CREATE INDEX requests_target ON requests (target_key) WHERE deprovisioned_at IS NULL;

CREATE TABLE approvals (
    request_id     TEXT NOT NULL REFERENCES requests(id),
    approver_key   TEXT NOT NULL,
    approver_email TEXT NOT NULL,
    decision       TEXT NOT NULL CHECK (decision IN ('approve','deny')),
    comment        TEXT,
    at             BIGINT NOT NULL,
    PRIMARY KEY (request_id, approver_key)
);

CREATE TABLE jobs (
    id           TEXT PRIMARY KEY,
    kind         TEXT NOT NULL,
    request_id   TEXT,
    payload      TEXT NOT NULL DEFAULT '{}',
    dedupe_key   TEXT UNIQUE,
    due_at       BIGINT NOT NULL,
    attempts     BIGINT NOT NULL DEFAULT 0,
    locked_until BIGINT,
    last_error   TEXT,
    done_at      BIGINT,
    created_at   BIGINT NOT NULL
);
CREATE INDEX jobs_due ON jobs (due_at) WHERE done_at IS NULL;

CREATE TABLE sessions (
    id_hash      TEXT PRIMARY KEY,
    user_key     TEXT,
    data         TEXT NOT NULL,
    csrf_token   TEXT NOT NULL,
    created_at   BIGINT NOT NULL,
    last_seen_at BIGINT NOT NULL,
    expires_at   BIGINT NOT NULL
);
CREATE INDEX sessions_expiry ON sessions (expires_at);

CREATE TABLE audit_events (
    seq         BIGINT PRIMARY KEY CHECK (seq > 0),
    at          BIGINT NOT NULL,
    actor       TEXT NOT NULL,
    action      TEXT NOT NULL,
    request_id  TEXT,
    entitlement TEXT,
    data        TEXT NOT NULL,
    prev_hash   TEXT NOT NULL,
    hash        TEXT NOT NULL UNIQUE
);
CREATE INDEX audit_request ON audit_events (request_id);
CREATE INDEX audit_action ON audit_events (action, seq);

-- The log is append-only at the database level.
CREATE FUNCTION audit_refuse_change() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'audit_events is append-only: % refused', TG_OP;
END
$$;
CREATE TRIGGER audit_no_update_delete BEFORE UPDATE OR DELETE ON audit_events
    FOR EACH ROW EXECUTE FUNCTION audit_refuse_change();
CREATE TRIGGER audit_no_truncate BEFORE TRUNCATE ON audit_events
    FOR EACH STATEMENT EXECUTE FUNCTION audit_refuse_change();

-- Appends extend the chain: next sequence number, previous row's hash.
CREATE FUNCTION audit_check_append() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    last_seq  BIGINT;
    last_hash TEXT;
BEGIN
    SELECT seq, hash INTO last_seq, last_hash FROM audit_events ORDER BY seq DESC LIMIT 1;
    IF NEW.seq <> COALESCE(last_seq, 0) + 1
       OR NEW.prev_hash <> COALESCE(last_hash, repeat('0', 64)) THEN
        RAISE EXCEPTION 'audit append out of chain: seq % after %', NEW.seq, last_seq;
    END IF;
    RETURN NEW;
END
$$;
CREATE TRIGGER audit_append_in_chain BEFORE INSERT ON audit_events
    FOR EACH ROW EXECUTE FUNCTION audit_check_append();
