"""The Cloud Logging query for one execution's log (pure): RFC 3339 timestamps, filter, request.

Logs are read oldest first with a filter on the execution, from a timestamp (``timestamp>=``, see
`egw.wire.cloudrun.entries.LogCursor`) up to an optional upper bound. Contract:
tests/samples/cloudrun/logging-entries-list.md.
"""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime, timedelta
from typing import Any

from egw.wire.cloudrun.names import ExecutionRef

#: the Cloud Logging resource type of Cloud Run job logs
LOG_RESOURCE_TYPE = "cloud_run_job"
LABEL_EXECUTION = "run.googleapis.com/execution_name"
LABEL_TASK_INDEX = "run.googleapis.com/task_index"


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
