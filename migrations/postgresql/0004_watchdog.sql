-- PostgreSQL twin of ../0004_watchdog.sql.
ALTER TABLE tasks ADD COLUMN status_at TEXT;
ALTER TABLE tasks ADD COLUMN output_at TEXT;
ALTER TABLE tasks ADD COLUMN stuck TEXT;
ALTER TABLE tasks ADD COLUMN attempt INTEGER NOT NULL DEFAULT 1;
CREATE INDEX tasks_stuck ON tasks (submit_seq) WHERE stuck IS NOT NULL;
