-- The audit query (GET /v1/events as JSON, `egw audit`) reads events in seq order, filtered.
-- A token without `admin` always filters by its own actor, and "who cancelled" filters by
-- kind: each of these finds its rows in order from the cursor on, whatever the log's size.
-- (task_id has events_task; the other filters are checked within a bounded seq window.)
CREATE INDEX events_actor ON events (actor, seq);
CREATE INDEX events_kind ON events (kind, seq);
