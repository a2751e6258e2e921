-- A job's failed runs, apart from its claims (`attempts`): a broker that dies holding a job lets
-- its lease run out, which is a claim but not a failure, so the retry backoff (2^n s) follows
-- `failures` alone and restarts cost a removal no extra wait. Migrations are append-only: never
-- edit a landed file.
ALTER TABLE jobs ADD COLUMN failures BIGINT NOT NULL DEFAULT 0;
