-- PostgreSQL twin of ../0006_replicas.sql, plus the change feed of replicas.
-- Times of liveness are the server's (now()), so that replicas' clocks never disagree.
CREATE TABLE replicas (
    id           TEXT PRIMARY KEY,
    host         TEXT NOT NULL,
    pid          INTEGER NOT NULL,
    started      TIMESTAMPTZ NOT NULL DEFAULT now(),
    heartbeat_at TIMESTAMPTZ NOT NULL DEFAULT now()
);
CREATE TABLE leases (
    name       TEXT PRIMARY KEY,
    holder     TEXT NOT NULL,
    expires_at TIMESTAMPTZ NOT NULL
);
-- One row per committed batch, numbered under the log's lock (so `mark` order is commit
-- order, as `seq` is): which replica wrote it, its events (seq_from, seq_to], and in `data`
-- (JSON) what it changed that no event says: the tasks it changed, output as
-- [task, from, to], tasks whose output is complete, tasks pruned. Other replicas read it
-- after a NOTIFY on `egw_log` (a hint) or a safety poll (egw/store/postgres/feed.py).
-- Rows older than a few minutes are deleted by the writer that prunes.
CREATE SEQUENCE changes_mark;
CREATE TABLE changes (
    mark     BIGINT PRIMARY KEY,
    replica  TEXT NOT NULL,
    at       TIMESTAMPTZ NOT NULL DEFAULT now(),
    seq_from BIGINT NOT NULL,
    seq_to   BIGINT NOT NULL,
    data     TEXT NOT NULL
);
