-- Scheduled access (issue 24 item 3): a request may name `start_at`, the time its grant begins.
-- Approved in advance, it waits in the new state `scheduled` until the scheduler starts it.
-- A scheduled request is open: it counts for "one open request per person and entitlement".
--
-- SQLite cannot change a CHECK in place: `requests` is rebuilt with the same rows. With foreign
-- keys on, renaming a table rewrites the references to it, and dropping a table that rows still
-- reference fails; so `requests` is renamed away (taking `approvals`' reference along), the new
-- table is filled, `approvals` is rebuilt to reference it, and only then is the old one dropped.
-- Indexes are made again as 0001 and 0004 made them. Migrations are append-only: never edit a
-- landed file.

ALTER TABLE requests RENAME TO requests_0006;
CREATE TABLE requests (
    id                 TEXT PRIMARY KEY,
    entitlement        TEXT NOT NULL,
    kind               TEXT NOT NULL,
    requester_key      TEXT NOT NULL REFERENCES users(key),
    requester_email    TEXT NOT NULL,
    state              TEXT NOT NULL CHECK (state IN ('pending','approved','scheduled','active','expired','denied','cancelled','timed_out','revoked','failed')),
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
    reviewed_at        BIGINT,
    start_at           BIGINT
);
-- Extensions come after the request they extend: filed later, so copied later.
INSERT INTO requests (id, entitlement, kind, requester_key, requester_email, state, duration_secs,
        justification, ticket, approvals_required, break_glass, extends_id, root_id, target_key,
        simulated, created_at, pending_until, decided_at, activated_at, expires_at, ended_at,
        failure_reason, provider_ref, deprovisioned_at, reviewed_by, reviewed_at)
    SELECT id, entitlement, kind, requester_key, requester_email, state, duration_secs,
        justification, ticket, approvals_required, break_glass, extends_id, root_id, target_key,
        simulated, created_at, pending_until, decided_at, activated_at, expires_at, ended_at,
        failure_reason, provider_ref, deprovisioned_at, reviewed_by, reviewed_at
    FROM requests_0006 ORDER BY created_at, id;

ALTER TABLE approvals RENAME TO approvals_0006;
CREATE TABLE approvals (
    request_id     TEXT NOT NULL REFERENCES requests(id),
    approver_key   TEXT NOT NULL,
    approver_email TEXT NOT NULL,
    decision       TEXT NOT NULL CHECK (decision IN ('approve','deny')),
    comment        TEXT,
    at             BIGINT NOT NULL,
    PRIMARY KEY (request_id, approver_key)
);
INSERT INTO approvals (request_id, approver_key, approver_email, decision, comment, at)
    SELECT request_id, approver_key, approver_email, decision, comment, at FROM approvals_0006;
DROP TABLE approvals_0006;
-- Nothing references the old table now; dropping it drops its indexes.
DROP TABLE requests_0006;

-- One open request per person and entitlement; more time comes through extensions.
CREATE UNIQUE INDEX requests_one_open ON requests (requester_key, entitlement)
    WHERE state IN ('pending','approved','scheduled','active') AND extends_id IS NULL;
-- One open extension per request.
CREATE UNIQUE INDEX requests_one_open_extension ON requests (extends_id)
    WHERE state IN ('pending','approved') AND extends_id IS NOT NULL;
CREATE INDEX requests_state ON requests (state);
CREATE INDEX requests_requester ON requests (requester_key, created_at);
CREATE INDEX requests_target ON requests (target_key) WHERE deprovisioned_at IS NULL;
CREATE INDEX requests_newest_first ON requests (created_at, id);
