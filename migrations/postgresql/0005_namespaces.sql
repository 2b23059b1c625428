-- PostgreSQL twin of ../0005_namespaces.sql.
ALTER TABLE tasks ADD COLUMN namespace TEXT NOT NULL DEFAULT 'default';
ALTER TABLE events ADD COLUMN namespace TEXT NOT NULL DEFAULT 'default';
CREATE INDEX tasks_namespace ON tasks (namespace, submit_seq);
CREATE INDEX events_namespace ON events (namespace, seq);
