-- Done jobs are deleted a week after they ran (store::jobs::DONE_KEPT_MS): each broker's
-- scheduler deletes the earliest done a batch at a time (store::jobs::delete_done). This index
-- holds the done jobs only, by when they were done, so a batch reads the rows it deletes and
-- stops, never the jobs still to run nor the done jobs that are kept; a sweep that finds
-- nothing to delete reads one index entry. A job enters it as it completes.
-- Migrations are append-only: never edit a landed file.
CREATE INDEX jobs_done ON jobs (done_at) WHERE done_at IS NOT NULL;
