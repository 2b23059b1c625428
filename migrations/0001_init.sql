-- The event log, the task projection, task output and idempotency keys.

-- Append-only: one global, strictly increasing sequence (seq) for every event of every task.
CREATE TABLE events (
    seq         INTEGER PRIMARY KEY AUTOINCREMENT,
    task_id     TEXT    NOT NULL,
    provider    TEXT    NOT NULL,
    kind        TEXT    NOT NULL,   -- submitted, accepted, observed, cancel_requested, timed_out, progress kinds...
    status      TEXT    NOT NULL,   -- the task's status after this event
    prev_status TEXT,
    applied     INTEGER NOT NULL,   -- 0: recorded (stale, duplicate, progress) but did not move the task
    reason      TEXT,
    exit_code   INTEGER,
    actor       TEXT,
    source      TEXT    NOT NULL,   -- api, gateway, or the provider that reported it
    delivery_id TEXT,               -- upstream delivery id (webhook GUID, event-stream key) for dedupe
    at          TEXT    NOT NULL,
    data        TEXT    NOT NULL DEFAULT '{}'
);
CREATE INDEX events_task ON events (task_id, seq);
CREATE UNIQUE INDEX events_delivery ON events (source, delivery_id) WHERE delivery_id IS NOT NULL;

-- The projection of each task's events, written in the same transaction as its events.
CREATE TABLE tasks (
    id            TEXT PRIMARY KEY,
    submit_seq    INTEGER NOT NULL UNIQUE,  -- submission order (list order; never ties)
    provider      TEXT    NOT NULL,
    name          TEXT,
    labels        TEXT    NOT NULL DEFAULT '{}',
    spec          TEXT    NOT NULL,
    status        TEXT    NOT NULL,
    reason        TEXT,
    exit_code     INTEGER,
    upstream_id   TEXT,
    upstream_url  TEXT,
    upstream      TEXT    NOT NULL DEFAULT '{}',
    actor         TEXT,
    timeout_s     REAL,
    created_at    TEXT    NOT NULL,
    updated_at    TEXT    NOT NULL,
    started_at    TEXT,
    finished_at   TEXT,
    idx           INTEGER NOT NULL,          -- seq of the task's latest event
    logs_complete INTEGER NOT NULL DEFAULT 0,
    log_size      INTEGER NOT NULL DEFAULT 0 -- bytes of output stored
);
CREATE INDEX tasks_status ON tasks (status, submit_seq);
CREATE INDEX tasks_provider ON tasks (provider, submit_seq);
CREATE INDEX tasks_upstream ON tasks (provider, upstream_id);
CREATE INDEX tasks_finished ON tasks (finished_at);

-- A task's output: one ordered sequence of chunks, each tagged with its stream,
-- addressed by the byte offset of its first byte in that sequence.
CREATE TABLE log_chunks (
    task_id TEXT    NOT NULL,
    pos     INTEGER NOT NULL,  -- byte offset of the chunk's first byte
    stream  TEXT    NOT NULL,
    data    BLOB    NOT NULL,
    PRIMARY KEY (task_id, pos)
) WITHOUT ROWID;

-- Idempotency-Key: the same key and body give the same task.
CREATE TABLE idempotency_keys (
    actor        TEXT NOT NULL,
    key          TEXT NOT NULL,
    request_hash TEXT NOT NULL,
    task_id      TEXT NOT NULL,
    created_at   TEXT NOT NULL,
    PRIMARY KEY (actor, key)
);

-- Provider cursors (e.g. the last Nomad event-stream index).
CREATE TABLE cursors (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
);

-- What retention pruning removed: a cursor at or below pruned_seq may have lost events.
CREATE TABLE pruned (
    id         INTEGER PRIMARY KEY CHECK (id = 1),
    pruned_seq INTEGER NOT NULL
);
INSERT INTO pruned (id, pruned_seq) VALUES (1, 0);
