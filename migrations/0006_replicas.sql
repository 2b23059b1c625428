-- Replicas (issue #17): several gateways on one PostgreSQL database. On SQLite, one
-- process per database (the flock), these tables stay empty; they exist so that both
-- dialects have the same numbered migrations and `egw migrate --to postgresql://` copies
-- the same schema. See migrations/postgresql/0006_replicas.sql.
CREATE TABLE replicas (
    id           TEXT PRIMARY KEY,  -- host:pid:random, new at each start
    host         TEXT NOT NULL,
    pid          INTEGER NOT NULL,
    started      TEXT NOT NULL,
    heartbeat_at TEXT NOT NULL
);
CREATE TABLE leases (
    name       TEXT PRIMARY KEY,    -- the singleton work: "nomad:<namespace>", "watchdog"...
    holder     TEXT NOT NULL,       -- a replicas.id
    expires_at TEXT NOT NULL
);
