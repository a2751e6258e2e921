-- Nothing to do on SQLite: its write transactions hold the database's one write lock from
-- their start, so an audit event is chained where it is written. PostgreSQL gets the
-- `audit_pending` table in its 0002 (docs/audit.md, "Appending").
SELECT 1;
