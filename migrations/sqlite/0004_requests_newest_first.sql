-- Request lists are read newest first a page at a time (keyset pagination on `created_at`, `id`:
-- `GET /api/v1/requests?after=`); this index serves them without sorting the table. Migrations
-- are append-only: never edit a landed file.
CREATE INDEX requests_newest_first ON requests (created_at, id);
