-- Events of the gateway itself, which concern no task: each move of a circuit breaker
-- toward an upstream (see egw/core/circuit.py). Kept apart from `events`, whose every row
-- belongs to a task, so that per-task streams, `GET /v1/events` and retention by task
-- stay as they are; read with `GET /v1/gateway/events`, pruned by age.
CREATE TABLE gateway_events (
    seq      INTEGER PRIMARY KEY AUTOINCREMENT,
    kind     TEXT NOT NULL,             -- circuit_open, circuit_half_open, circuit_closed
    provider TEXT NOT NULL,
    target   TEXT NOT NULL,             -- the upstream target: a Nomad region, an API host
    at       TEXT NOT NULL,
    data     TEXT NOT NULL DEFAULT '{}' -- the state before, failures, open_s
);
CREATE INDEX gateway_events_at ON gateway_events (at);
