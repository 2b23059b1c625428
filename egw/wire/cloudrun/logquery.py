"""The Cloud Logging queries of execution logs (pure): RFC 3339 timestamps, filters, requests.

Logs are read oldest first with a filter on the executions, from a timestamp (``timestamp>=``, see
`egw.wire.cloudrun.entries.LogCursor`) up to an optional upper bound. `batch_filter` reads many
executions of a project in one request (their execution labels OR-ed), within Logging's limit on
a filter's length (`MAX_FILTER_CHARS`); `execution_key` demultiplexes the entries it returns.
Contract: tests/samples/cloudrun/logging-entries-list.md.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

from egw.wire.cloudrun.names import ExecutionRef

#: the Cloud Logging resource type of Cloud Run job logs
LOG_RESOURCE_TYPE = "cloud_run_job"
LABEL_EXECUTION = "run.googleapis.com/execution_name"
LABEL_TASK_INDEX = "run.googleapis.com/task_index"
#: "The maximum length of a filter is 20,000 characters." (ListLogEntriesRequest.filter)
MAX_FILTER_CHARS = 20_000


def normalize_timestamp(text: str) -> str:
    """An RFC 3339 timestamp as ``YYYY-MM-DDTHH:MM:SS.nnnnnnnnnZ`` (UTC, 9 digits), so two
    timestamps compare as strings in time order (Cloud Logging keeps nanoseconds)."""
    m = re.fullmatch(
        r"(\d{4}-\d{2}-\d{2})[Tt ](\d{2}:\d{2}:\d{2})(?:\.(\d{1,9}))?(Z|z|[+-]\d{2}:\d{2})", text
    )
    if not m:
        raise ValueError(f"not an RFC 3339 timestamp: {text!r}")
    day, clock, frac, zone = m.groups()
    nanos = (frac or "").ljust(9, "0")
    when = datetime.fromisoformat(f"{day}T{clock}{'+00:00' if zone in 'Zz' else zone}")
    return when.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S") + f".{nanos}Z"


def timestamp_from(when: datetime) -> str:
    """A datetime as a normalised RFC 3339 timestamp."""
    return when.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S") + f".{when.microsecond:06d}000Z"


def shift_timestamp(text: str, seconds: float) -> str:
    """``text`` moved by ``seconds`` (nanoseconds beyond microseconds are dropped)."""
    when = datetime.fromisoformat(normalize_timestamp(text)[:26] + "+00:00")
    return timestamp_from(when + timedelta(seconds=seconds))


def _quote(value: str) -> str:
    return json.dumps(value)  # the query language's strings use JSON-style escapes


def log_filter(ref: ExecutionRef, *, since: str | None = None, until: str | None = None) -> str:
    """The Logging query that selects one execution's entries, from ``since`` up to ``until``."""
    parts = [
        f"resource.type={_quote(LOG_RESOURCE_TYPE)}",
        f"resource.labels.job_name={_quote(ref.job)}",
        f"resource.labels.location={_quote(ref.region)}",
        f'labels."{LABEL_EXECUTION}"={_quote(ref.execution)}',
    ]
    if since is not None:
        parts.append(f"timestamp>={_quote(normalize_timestamp(since))}")
    if until is not None:
        parts.append(f"timestamp<={_quote(normalize_timestamp(until))}")
    return " AND ".join(parts)


def list_entries_request(
    ref: ExecutionRef,
    *,
    since: str | None = None,
    until: str | None = None,
    page_token: str | None = None,
    page_size: int = 1000,
) -> dict[str, Any]:
    """The ``ListLogEntriesRequest`` for one page of an execution's log, oldest first."""
    body: dict[str, Any] = {
        "resourceNames": [f"projects/{ref.project}"],
        "filter": log_filter(ref, since=since, until=until),
        "orderBy": "timestamp asc",
        "pageSize": page_size,
    }
    if page_token:
        body["pageToken"] = page_token
    return body


def label_clause(execution: str) -> str:
    """The comparison that selects one execution's entries by its label."""
    return f'labels."{LABEL_EXECUTION}"={_quote(execution)}'


def _or(clauses: Sequence[str]) -> str:
    return clauses[0] if len(clauses) == 1 else "(" + " OR ".join(clauses) + ")"


def batch_filter(
    live: Sequence[str],
    final: Sequence[str] = (),
    *,
    since: str | None = None,
    until: str | None = None,
) -> str:
    """One filter over many executions of a project (execution short ids): the ``live`` ones up
    to ``until``, the ``final`` ones (ended, settled) without an upper bound; all from ``since``,
    the oldest cursor among them (each execution's own cursor drops what it has read).

    ``resource.type="cloud_run_job" AND timestamp>="S" AND ((timestamp<="U" AND (labels."…"="a"
    OR …)) OR labels."…"="z" OR …)``. The caller keeps it within `MAX_FILTER_CHARS`
    (`batch_filter_length` says how long it will be)."""
    if not live and not final:
        raise ValueError("a batch reads at least one execution")
    parts = [f"resource.type={_quote(LOG_RESOURCE_TYPE)}"]
    if since is not None:
        parts.append(f"timestamp>={_quote(normalize_timestamp(since))}")
    selectors: list[str] = []
    if live:
        selected = _or([label_clause(e) for e in live])
        if until is not None:
            selected = f"(timestamp<={_quote(normalize_timestamp(until))} AND {selected})"
        selectors.append(selected)
    selectors += [label_clause(e) for e in final]
    parts.append(_or(selectors))
    return " AND ".join(parts)


#: what `batch_filter` adds around the clauses, at most (the bounds, parentheses, joins)
BATCH_OVERHEAD_CHARS = 200


def batch_filter_length(executions: Sequence[str]) -> int:
    """An upper bound of the length of `batch_filter` over ``executions`` (live or final)."""
    return BATCH_OVERHEAD_CHARS + sum(len(label_clause(e)) + 4 for e in executions)


def execution_key(entry: Mapping[str, Any]) -> tuple[str, str, str] | None:
    """(location, job, execution) of a Cloud Run job's log entry, to route it to its execution;
    None for an entry that names none (another resource)."""
    resource = entry.get("resource")
    labels = entry.get("labels")
    if not isinstance(resource, Mapping) or not isinstance(labels, Mapping):
        return None
    where = resource.get("labels")
    execution = labels.get(LABEL_EXECUTION)
    if not isinstance(where, Mapping) or not isinstance(execution, str):
        return None
    return str(where.get("location") or ""), str(where.get("job_name") or ""), execution


def batch_entries_request(
    project: str, filter_text: str, *, page_token: str | None = None, page_size: int = 1000
) -> dict[str, Any]:
    """The ``ListLogEntriesRequest`` for one page of a batch, oldest first (the other fields stay
    the same across the pages of one read, as ``pageToken`` requires)."""
    body: dict[str, Any] = {
        "resourceNames": [f"projects/{project}"],
        "filter": filter_text,
        "orderBy": "timestamp asc",
        "pageSize": page_size,
    }
    if page_token:
        body["pageToken"] = page_token
    return body
