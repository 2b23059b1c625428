-- Namespaces: every task belongs to one (egw.core.access). The events keep their task's
-- namespace too, so that a filtered event stream or replay reads one table, without a join.
-- Rows from before namespaces existed belong to `default`, as their tasks always did.

ALTER TABLE tasks ADD COLUMN namespace TEXT NOT NULL DEFAULT 'default';
ALTER TABLE events ADD COLUMN namespace TEXT NOT NULL DEFAULT 'default';
CREATE INDEX tasks_namespace ON tasks (namespace, submit_seq);
CREATE INDEX events_namespace ON events (namespace, seq);
