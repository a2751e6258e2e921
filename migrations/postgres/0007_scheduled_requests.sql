-- Scheduled access (issue 24 item 3): a request may name `start_at`, the time its grant begins.
-- Approved in advance, it waits in the new state `scheduled` until the scheduler starts it.
-- A scheduled request is open: it counts for "one open request per person and entitlement".
-- Migrations are append-only: never edit a landed file.
ALTER TABLE requests ADD COLUMN start_at BIGINT;
ALTER TABLE requests DROP CONSTRAINT requests_state_check;
ALTER TABLE requests ADD CONSTRAINT requests_state_check CHECK (state IN
    ('pending','approved','scheduled','active','expired','denied','cancelled','timed_out','revoked','failed'));
DROP INDEX requests_one_open;
CREATE UNIQUE INDEX requests_one_open ON requests (requester_key, entitlement)
    WHERE state IN ('pending','approved','scheduled','active') AND extends_id IS NULL;
