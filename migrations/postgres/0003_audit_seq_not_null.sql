-- `seq` NOT NULL. Here the primary key already refuses NULL (and the column is BIGINT, so a
-- whole number); the constraint is stated so both engines say the same, and SQLite's 0003,
-- which needs a rebuild of its table for it, has its PostgreSQL counterpart. Migrations are
-- append-only: never edit a landed file.
ALTER TABLE audit_events ALTER COLUMN seq SET NOT NULL;
