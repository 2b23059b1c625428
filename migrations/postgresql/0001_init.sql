-- PostgreSQL twin of ../0001_init.sql: the same tables and columns, in PostgreSQL's types.
-- JSON stays `text` (egw renders it back verbatim: `jsonb` would reorder keys), output is
-- `bytea` (byte-exact), times are the fixed-width RFC 3339 text egw writes (text order is
-- time order, as in SQLite), flags stay integers (0/1) as the rows code reads them.

-- Append-only: one global, strictly increasing sequence (seq) for every event of every task.
-- egw assigns seq itself, under the log's advisory lock (egw/store/postgres/writes.py).
CREATE TABLE events (
    seq         BIGINT  PRIMARY KEY,
    task_id     TEXT    NOT NULL,
    provider    TEXT    NOT NULL,
    kind        TEXT    NOT NULL,
    status      TEXT    NOT NULL,
    prev_status TEXT,
    applied     INTEGER NOT NULL,
    reason      TEXT,
    exit_code   BIGINT,
    actor       TEXT,
    source      TEXT    NOT NULL,
    delivery_id TEXT,
    at          TEXT    NOT NULL,
    data        TEXT    NOT NULL DEFAULT '{}'
);
CREATE INDEX events_task ON events (task_id, seq);
CREATE UNIQUE INDEX events_delivery ON events (source, delivery_id) WHERE delivery_id IS NOT NULL;

CREATE TABLE tasks (
    id            TEXT PRIMARY KEY,
    submit_seq    BIGINT  NOT NULL UNIQUE,
    provider      TEXT    NOT NULL,
    name          TEXT,
    labels        TEXT    NOT NULL DEFAULT '{}',
    spec          TEXT    NOT NULL,
    status        TEXT    NOT NULL,
    reason        TEXT,
    exit_code     BIGINT,
    upstream_id   TEXT,
    upstream_url  TEXT,
    upstream      TEXT    NOT NULL DEFAULT '{}',
    actor         TEXT,
    timeout_s     DOUBLE PRECISION,
    created_at    TEXT    NOT NULL,
    updated_at    TEXT    NOT NULL,
    started_at    TEXT,
    finished_at   TEXT,
    idx           BIGINT  NOT NULL,
    logs_complete INTEGER NOT NULL DEFAULT 0,
    log_size      BIGINT  NOT NULL DEFAULT 0
);
CREATE INDEX tasks_status ON tasks (status, submit_seq);
CREATE INDEX tasks_provider ON tasks (provider, submit_seq);
CREATE INDEX tasks_upstream ON tasks (provider, upstream_id);
CREATE INDEX tasks_finished ON tasks (finished_at);

CREATE TABLE log_chunks (
    task_id TEXT   NOT NULL,
    pos     BIGINT NOT NULL,
    stream  TEXT   NOT NULL,
    data    BYTEA  NOT NULL,
    PRIMARY KEY (task_id, pos)
);

CREATE TABLE idempotency_keys (
    actor        TEXT NOT NULL,
    key          TEXT NOT NULL,
    request_hash TEXT NOT NULL,
    task_id      TEXT NOT NULL,
    created_at   TEXT NOT NULL,
    PRIMARY KEY (actor, key)
);

CREATE TABLE cursors (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
);

CREATE TABLE pruned (
    id         INTEGER PRIMARY KEY CHECK (id = 1),
    pruned_seq BIGINT  NOT NULL
);
INSERT INTO pruned (id, pruned_seq) VALUES (1, 0);
