"""Cloud Logging entries rendered as log lines (pure), and `LogCursor`: no line twice, none skipped.

`LogCursor` remembers the newest timestamp read and the insert ids seen at exactly that timestamp,
so the next read starts at that timestamp (``timestamp>=``) and drops what it has already seen.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from egw.wire.cloudrun.logquery import LABEL_TASK_INDEX, normalize_timestamp


@dataclass(frozen=True, slots=True)
class LogLine:
    """One rendered log entry."""

    stream: str
    text: str
    task_index: int | None
    timestamp: str
    insert_id: str


def render_entry(entry: Mapping[str, Any]) -> LogLine:
    """A LogEntry as a line: ``textPayload`` as is, ``jsonPayload`` as its ``message`` followed by
    its other fields as compact JSON; platform messages (``varlog/system``) go to stderr marked
    ``[cloud run]``. The stream comes from the log name (``run.googleapis.com/stdout|stderr``)."""
    log_name = str(entry.get("logName") or "")
    log_id = log_name.rsplit("/logs/", 1)[-1].replace("%2F", "/").replace("%2f", "/")
    stream = "stderr" if log_id.endswith("stderr") else "stdout"
    system = log_id.endswith("varlog/system")
    if "textPayload" in entry:
        text = str(entry["textPayload"])
    elif isinstance(entry.get("jsonPayload"), Mapping):
        text = _render_json(entry["jsonPayload"], entry.get("severity"))
    elif isinstance(entry.get("protoPayload"), Mapping):
        text = json.dumps(entry["protoPayload"], separators=(",", ":"), ensure_ascii=False)
    else:
        text = ""
    if system:
        stream, text = "stderr", f"[cloud run] {text}"
    labels = entry.get("labels") or {}
    index = labels.get(LABEL_TASK_INDEX)
    return LogLine(
        stream=stream,
        text=text.rstrip("\n"),
        task_index=int(index) if isinstance(index, str) and index.isdigit() else None,
        timestamp=normalize_timestamp(
            str(entry.get("timestamp") or entry.get("receiveTimestamp") or _EPOCH)
        ),
        insert_id=str(entry.get("insertId") or ""),
    )


_EPOCH = "1970-01-01T00:00:00Z"


def _render_json(payload: Mapping[str, Any], severity: Any) -> str:
    rest = {
        k: v
        for k, v in payload.items()
        if k != "message" and not k.startswith("logging.googleapis.com/")
    }
    head = str(payload["message"]) if "message" in payload else ""
    tail = (
        json.dumps(rest, separators=(",", ":"), ensure_ascii=False, sort_keys=True) if rest else ""
    )
    text = f"{head} {tail}" if head and tail else head or tail
    if isinstance(severity, str) and severity not in ("DEFAULT", "INFO", ""):
        text = f"{severity} {text}"
    return text


def format_line(line: LogLine, *, multi_task: bool) -> str:
    """The text egw stores for a line: ``[task N] `` in front if an execution has several tasks."""
    if multi_task and line.task_index is not None:
        return (
            "\n".join(f"[task {line.task_index}] {part}" for part in line.text.split("\n")) + "\n"
        )
    return line.text + "\n"


@dataclass(frozen=True, slots=True)
class LogCursor:
    """How far an execution's log was read: the newest timestamp, and the insert ids seen at it."""

    timestamp: str | None = None
    insert_ids: frozenset[str] = field(default_factory=frozenset)

    def accept(self, entries: Iterable[Mapping[str, Any]]) -> tuple[list[LogLine], LogCursor]:
        """The lines not seen before (in the order given, which is upstream's time order), and the
        cursor after them. An entry older than the cursor is dropped: it was read before, or it
        arrived after the settle window (see `CloudRunConfig.logging_settle_s`)."""
        lines: list[LogLine] = []
        ts, ids = self.timestamp, set(self.insert_ids)
        for entry in entries:
            line = render_entry(entry)
            if ts is not None and line.timestamp < ts:
                continue
            if line.timestamp == ts:
                if line.insert_id in ids:
                    continue
                ids.add(line.insert_id)
            else:
                ts, ids = line.timestamp, {line.insert_id}
            lines.append(line)
        return lines, LogCursor(ts, frozenset(ids))

    def to_json(self) -> str:
        return json.dumps({"timestamp": self.timestamp, "insert_ids": sorted(self.insert_ids)})

    @classmethod
    def from_json(cls, text: str | None) -> LogCursor:
        if not text:
            return cls()
        try:
            data = json.loads(text)
            ts = data.get("timestamp")
            return cls(
                normalize_timestamp(ts) if ts else None,
                frozenset(str(i) for i in data.get("insert_ids") or ()),
            )
        except (ValueError, AttributeError, TypeError):
            return cls()
