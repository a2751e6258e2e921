-- Request lists filtered by state (`GET /api/v1/requests?state=pending`, the approvals page and
-- its badge) are read newest first a page at a time. With only `requests_state` (state) the
-- database read every request in the state and sorted them all for each page, so a page cost in
-- proportion to the state's rows (docs/performance.md, `lists`). This index walks one state's
-- requests in order and stops after the page; a list of several states reads a page of each and
-- merges them (store::requests::list). It covers what `requests_state`, its prefix, served.
-- Migrations are append-only: never edit a landed file.
CREATE INDEX requests_state_newest_first ON requests (state, created_at, id);
DROP INDEX requests_state;
