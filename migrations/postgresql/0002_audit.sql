-- PostgreSQL twin of ../0002_audit.sql.
CREATE INDEX events_actor ON events (actor, seq);
CREATE INDEX events_kind ON events (kind, seq);
