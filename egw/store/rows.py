"""Rows of the SQLite tables <-> the core dataclasses."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

import orjson

from egw.core.model import Event, Stuck, Task, TaskState, format_time, parse_time

#: the columns of ``tasks`` and ``events``, in the order of the tuples below
TASK_FIELDS = (
    "id", "submit_seq", "provider", "name", "labels", "spec", "status", "reason", "exit_code",
    "upstream_id", "upstream_url", "upstream", "actor", "timeout_s", "created_at", "updated_at",
    "started_at", "finished_at", "idx", "logs_complete", "log_size",
    "status_at", "output_at", "stuck", "attempt", "namespace",
)  # fmt: skip
EVENT_FIELDS = (
    "seq", "task_id", "provider", "kind", "status", "prev_status", "applied", "reason",
    "exit_code", "actor", "source", "delivery_id", "at", "data", "namespace",
)  # fmt: skip

TASK_COLUMNS = ", ".join(TASK_FIELDS)
EVENT_COLUMNS = ", ".join(EVENT_FIELDS)


def placeholders(fields: tuple[str, ...]) -> str:
    """``?, ?, ...``: one SQL parameter per column."""
    return ", ".join("?" * len(fields))


#: what `dumps` writes as json did: str() of dates and dataclasses, non-str keys as text
_ORJSON_OPTS = (
    orjson.OPT_NON_STR_KEYS | orjson.OPT_PASSTHROUGH_DATETIME | orjson.OPT_PASSTHROUGH_DATACLASS
)


def dumps(value: Any) -> str:
    """Compact JSON of an event's data, the labels, a spec. orjson: a stored webhook
    delivery (19.5 KB) encodes several times faster than with json (bench "webhooks")."""
    try:
        return orjson.dumps(value, default=str, option=_ORJSON_OPTS).decode()
    except TypeError:  # an integer past 64 bits, which orjson refuses: json writes it
        return json.dumps(value, separators=(",", ":"), ensure_ascii=False, default=str)


def loads(text: str) -> Any:
    """A stored JSON column: orjson (a restart reads every unfinished task's spec several
    times faster), the stdlib for what only it reads (``NaN``, which `dumps` may write)."""
    try:
        return orjson.loads(text)
    except orjson.JSONDecodeError:
        return json.loads(text)


def task_from_row(row: Sequence[Any]) -> Task:
    created = parse_time(row[14])
    updated = parse_time(row[15])
    assert created is not None and updated is not None
    return Task(
        id=row[0],
        submit_seq=row[1],
        provider=row[2],
        name=row[3],
        labels=loads(row[4]),
        spec=loads(row[5]),
        status=TaskState(row[6]),
        reason=row[7],
        exit_code=row[8],
        upstream_id=row[9],
        upstream_url=row[10],
        upstream=loads(row[11]),
        actor=row[12],
        timeout_s=row[13],
        created_at=created,
        updated_at=updated,
        started_at=parse_time(row[16]),
        finished_at=parse_time(row[17]),
        index=row[18],
        logs_complete=bool(row[19]),
        log_size=row[20],
        status_at=parse_time(row[21]),
        output_at=parse_time(row[22]),
        stuck=_stuck(row[23]),
        attempt=row[24],
        namespace=row[25],
    )


def _stuck(text: str | None) -> Stuck | None:
    if not text:
        return None
    raw = json.loads(text)
    since = parse_time(raw["since"])
    assert since is not None
    return Stuck(reason=raw["reason"], since=since)


def task_to_row(t: Task) -> tuple[Any, ...]:
    return (
        t.id,
        t.submit_seq,
        t.provider,
        t.name,
        dumps(dict(t.labels)),
        dumps(dict(t.spec)),
        str(t.status),
        t.reason,
        t.exit_code,
        t.upstream_id,
        t.upstream_url,
        dumps(dict(t.upstream)),
        t.actor,
        t.timeout_s,
        format_time(t.created_at),
        format_time(t.updated_at),
        format_time(t.started_at),
        format_time(t.finished_at),
        t.index,
        int(t.logs_complete),
        t.log_size,
        format_time(t.status_at),
        format_time(t.output_at),
        dumps(t.stuck.to_json()) if t.stuck is not None else None,
        t.attempt,
        t.namespace,
    )


def event_from_row(row: Sequence[Any]) -> Event:
    at = parse_time(row[12])
    assert at is not None
    return Event(
        seq=row[0],
        task_id=row[1],
        provider=row[2],
        kind=row[3],
        status=TaskState(row[4]),
        prev_status=TaskState(row[5]) if row[5] else None,
        applied=bool(row[6]),
        reason=row[7],
        exit_code=row[8],
        actor=row[9],
        source=row[10],
        at=at,
        data=loads(row[13]),
        namespace=row[14],
    )


def event_to_row(e: Event, delivery_id: str | None) -> tuple[Any, ...]:
    return (
        e.seq,
        e.task_id,
        e.provider,
        e.kind,
        str(e.status),
        str(e.prev_status) if e.prev_status else None,
        int(e.applied),
        e.reason,
        e.exit_code,
        e.actor,
        e.source,
        delivery_id,
        format_time(e.at),
        dumps(dict(e.data)),
        e.namespace,
    )
