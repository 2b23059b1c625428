-- The watchdog's deadlines come from stored times, so they survive a restart.
ALTER TABLE tasks ADD COLUMN status_at TEXT;   -- when the task entered its status
ALTER TABLE tasks ADD COLUMN output_at TEXT;   -- when the task last wrote output
ALTER TABLE tasks ADD COLUMN stuck TEXT;       -- {"reason", "since"} while flagged stuck
ALTER TABLE tasks ADD COLUMN attempt INTEGER NOT NULL DEFAULT 1;  -- resubmits of the task
CREATE INDEX tasks_stuck ON tasks (submit_seq) WHERE stuck IS NOT NULL;
