"""Cloud Run Jobs and Cloud Logging wire formats (pure): names, RunJobRequest, Execution -> state, log entries.

Contracts: tests/samples/cloudrun/run-v2-jobs.md and logging-entries-list.md (copied, with the
discovery documents they summarise, into tests/samples/cloudrun/).

Theory of operation
-------------------
* User input (project, region, job, container, env names) is checked against Google's resource-name
  rules *before* it is put into a URL path, so ``/``, ``..``, ``:``, ``%2F`` or a newline can never
  steer a request to another resource. Names that come back from upstream (execution names) are
  parsed with the same rules before egw uses them as a path.
* Cloud Run has no request id on ``jobs:run``. egw sets an override env var ``EGW_TASK_ID=<task id>``
  on every execution it starts, so an execution can be matched to its task when an answer is lost
  (`execution_task_id`).
* `execution_observation` is THE mapping of an Execution to an egw state; it is an interpretation of
  the contract (the ``Completed`` condition, ``executionReason``, the task counts, ``startTime``).
* Logs are read oldest first with a filter on the execution; `LogCursor` remembers the newest
  timestamp read and the insert ids seen at exactly that timestamp, so the next read starts at that
  timestamp (``timestamp>=``) and drops what it has already seen: no line twice, none skipped.

Size: a little over the 500-line budget because it holds the formats of the two Google APIs the
one provider speaks (Run Admin v2 and Logging v2); split the Logging half out if it grows.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from egw.core.model import Observation, TaskState, parse_time
from egw.errors import InvalidRequest, ProviderError

#: the override env var that ties an execution to its egw task
CORRELATION_ENV = "EGW_TASK_ID"
#: the Cloud Logging resource type of Cloud Run job logs
LOG_RESOURCE_TYPE = "cloud_run_job"
LABEL_EXECUTION = "run.googleapis.com/execution_name"
LABEL_TASK_INDEX = "run.googleapis.com/task_index"
LABEL_TASK_ATTEMPT = "run.googleapis.com/task_attempt"
#: OAuth scope for both APIs (discovery documents, ``auth`` section)
SCOPE = "https://www.googleapis.com/auth/cloud-platform"

# Google's resource-name rules. Project ids: 6-30 lowercase letters, digits, hyphens, starting with
# a letter, not ending with a hyphen; a project number is all digits. (Legacy domain-scoped ids
# "example.com:p" contain ':' and are refused on purpose.)
_PROJECT = re.compile(r"[a-z][a-z0-9-]{4,28}[a-z0-9]|[0-9]{1,20}")
# Regions: asia-east1, us-central1, northamerica-northeast2, europe-west10 ...
_REGION = re.compile(r"[a-z]{2,}(?:-[a-z]+)+[0-9]{1,2}")
# Cloud Run job (and execution) names: lowercase letters, digits and hyphens, starting with a
# letter, not ending with a hyphen, at most 63 characters.
_JOB = re.compile(r"[a-z](?:[a-z0-9-]{0,61}[a-z0-9])?")
# Container names are DNS labels.
_CONTAINER = re.compile(r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?")
# Environment variable names (Kubernetes' rule, which Cloud Run follows).
_ENV_NAME = re.compile(r"[-._a-zA-Z][-._a-zA-Z0-9]{0,255}")
# Set by Cloud Run itself in a job's container (container contract): not overridable.
_RESERVED_ENV = ("CLOUD_RUN_JOB", "CLOUD_RUN_EXECUTION", "CLOUD_RUN_TASK_INDEX",
                 "CLOUD_RUN_TASK_ATTEMPT", "CLOUD_RUN_TASK_COUNT")

_TASK_KEYS = frozenset({"project", "region", "job", "args", "env", "container", "task_count",
                        "timeout_s"})
MAX_ARGS = 1000
MAX_ARG_BYTES = 32 * 1024
MAX_ENV_VALUE_BYTES = 32 * 1024
MAX_TASK_COUNT = 10000
#: Cloud Run's longest task timeout (168 h, `gcloud run jobs execute --task-timeout`)
MAX_TIMEOUT_S = 168 * 3600


# --- names ----------------------------------------------------------------------------------


def _name(value: Any, pattern: re.Pattern[str], field_path: str, rule: str) -> str:
    if not isinstance(value, str):
        raise InvalidRequest(f"{field_path} must be a string", field=field_path)
    if not pattern.fullmatch(value):
        raise InvalidRequest(f"{field_path} {value[:80]!r} is not a valid name: {rule}",
                             field=field_path)
    return value


def check_project(value: Any, field_path: str = "task.project") -> str:
    return _name(value, _PROJECT, field_path,
                 "a project id is 6-30 lowercase letters, digits or hyphens starting with a letter"
                 " (or a project number)")


def check_region(value: Any, field_path: str = "task.region") -> str:
    return _name(value, _REGION, field_path, "a region looks like us-central1")


def check_job(value: Any, field_path: str = "task.job") -> str:
    return _name(value, _JOB, field_path,
                 "use at most 63 lowercase letters, digits or hyphens, starting with a letter and"
                 " not ending with a hyphen")


@dataclass(frozen=True, slots=True)
class JobRef:
    project: str
    region: str
    job: str

    @property
    def name(self) -> str:
        """The job's resource name, ``projects/P/locations/R/jobs/J``."""
        return f"projects/{self.project}/locations/{self.region}/jobs/{self.job}"


@dataclass(frozen=True, slots=True)
class ExecutionRef:
    project: str
    region: str
    job: str
    execution: str

    @property
    def name(self) -> str:
        return f"projects/{self.project}/locations/{self.region}/jobs/{self.job}/executions/{self.execution}"


def parse_execution_name(name: Any) -> ExecutionRef:
    """Check an execution's resource name from upstream before it is used as a URL path."""
    if not isinstance(name, str):
        raise ProviderError(f"Cloud Run returned an execution name that is not a string: {name!r}",
                            provider="cloud_run")
    parts = name.split("/")
    if (len(parts) != 8 or parts[0] != "projects" or parts[2] != "locations"
            or parts[4] != "jobs" or parts[6] != "executions"
            or not _PROJECT.fullmatch(parts[1]) or not _REGION.fullmatch(parts[3])
            or not _JOB.fullmatch(parts[5]) or not _JOB.fullmatch(parts[7])):
        raise ProviderError(f"Cloud Run returned an unexpected execution name {name[:200]!r}",
                            provider="cloud_run")
    return ExecutionRef(parts[1], parts[3], parts[5], parts[7])


def check_operation_name(name: Any) -> str:
    """An operation's resource name, ``projects/P/locations/R/operations/ID``, checked."""
    parts = name.split("/") if isinstance(name, str) else []
    if (len(parts) != 6 or parts[0] != "projects" or parts[2] != "locations"
            or parts[4] != "operations" or not _PROJECT.fullmatch(parts[1])
            or not _REGION.fullmatch(parts[3])
            or not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_-]{0,127}", parts[5])):
        raise ProviderError(f"Cloud Run returned an unexpected operation name {str(name)[:200]!r}",
                            provider="cloud_run")
    return str(name)


# --- the task spec ---------------------------------------------------------------------------


def validate_task(
    task: Mapping[str, Any], *, default_project: str | None = None,
    default_region: str | None = None,
) -> dict[str, Any]:
    """Check a submit's ``task`` object and return the normalised spec.

    ``{"project", "region", "job"}`` name the job (project and region default from config);
    the per-execution overrides are those of ``gcloud run jobs execute``: ``args`` (a list of
    strings; ``[]`` clears the job's args), ``env`` (an object of name -> value), ``container``
    (which container to override), ``task_count`` and ``timeout_s`` (the task timeout).
    Raises `InvalidRequest` naming the field.
    """
    if not isinstance(task, Mapping):
        raise InvalidRequest("task must be an object", field="task")
    unknown = sorted(set(task) - _TASK_KEYS)
    if unknown:
        raise InvalidRequest(f"task.{unknown[0]}: unknown field (known: {sorted(_TASK_KEYS)})",
                             field=f"task.{unknown[0]}")
    project = task.get("project", default_project)
    if project is None:
        raise InvalidRequest("task.project is required (no default project is configured)",
                             field="task.project")
    region = task.get("region", default_region)
    if region is None:
        raise InvalidRequest("task.region is required (no default region is configured)",
                             field="task.region")
    if "job" not in task:
        raise InvalidRequest("task.job is required", field="task.job")
    spec: dict[str, Any] = {
        "project": check_project(project),
        "region": check_region(region),
        "job": check_job(task["job"]),
        "args": None,
        "env": {},
        "container": None,
        "task_count": None,
        "timeout_s": None,
    }
    if task.get("args") is not None:
        spec["args"] = _args(task["args"])
    if task.get("env") is not None:
        spec["env"] = _env(task["env"])
    if task.get("container") is not None:
        spec["container"] = _name(task["container"], _CONTAINER, "task.container",
                                  "a container name is a DNS label (lowercase letters, digits, '-')")
    if task.get("task_count") is not None:
        spec["task_count"] = _int(task["task_count"], "task.task_count", 1, MAX_TASK_COUNT)
    if task.get("timeout_s") is not None:
        spec["timeout_s"] = _int(task["timeout_s"], "task.timeout_s", 1, MAX_TIMEOUT_S)
    return spec


def _args(value: Any) -> list[str]:
    if not isinstance(value, list) or not all(isinstance(a, str) for a in value):
        raise InvalidRequest("task.args must be a list of strings", field="task.args")
    if len(value) > MAX_ARGS:
        raise InvalidRequest(f"task.args has more than {MAX_ARGS} items", field="task.args")
    for i, arg in enumerate(value):
        if len(arg.encode()) > MAX_ARG_BYTES or "\x00" in arg:
            raise InvalidRequest(f"task.args[{i}] is too long or holds a NUL character",
                                 field=f"task.args[{i}]")
    return list(value)


def _env(value: Any) -> dict[str, str]:
    if not isinstance(value, Mapping):
        raise InvalidRequest("task.env must be an object of name -> string value",
                             field="task.env")
    env: dict[str, str] = {}
    for name, val in value.items():
        where = f"task.env.{name}"
        if not isinstance(name, str) or not _ENV_NAME.fullmatch(name):
            raise InvalidRequest(f"{where}: not a valid environment variable name", field=where)
        if name == CORRELATION_ENV or name in _RESERVED_ENV:
            raise InvalidRequest(f"{where}: {name} is set by egw or Cloud Run itself",
                                 field=where)
        if not isinstance(val, str):
            raise InvalidRequest(f"{where} must be a string", field=where)
        if len(val.encode()) > MAX_ENV_VALUE_BYTES or "\x00" in val:
            raise InvalidRequest(f"{where} is too long or holds a NUL character", field=where)
        env[name] = val
    return env


def _int(value: Any, where: str, low: int, high: int) -> int:
    if (isinstance(value, bool) or not isinstance(value, int | float)
            or not math.isfinite(value) or int(value) != value):
        raise InvalidRequest(f"{where} must be a whole number", field=where)
    if not low <= value <= high:
        raise InvalidRequest(f"{where} must be between {low} and {high}", field=where)
    return int(value)


def job_ref(spec: Mapping[str, Any]) -> JobRef:
    """The job of a validated spec (re-checked: a stored spec is input too)."""
    return JobRef(check_project(spec["project"]), check_region(spec["region"]),
                  check_job(spec["job"]))


def run_job_request(spec: Mapping[str, Any], task_id: str) -> dict[str, Any]:
    """The ``RunJobRequest`` body for a validated spec, with ``EGW_TASK_ID=<task_id>`` added."""
    override: dict[str, Any] = {}
    if spec.get("container"):
        override["name"] = spec["container"]
    args = spec.get("args")
    if args is not None:
        if args:
            override["args"] = list(args)
        else:
            override["clearArgs"] = True
    env = [{"name": k, "value": v} for k, v in (spec.get("env") or {}).items()]
    env.append({"name": CORRELATION_ENV, "value": task_id})
    override["env"] = env
    overrides: dict[str, Any] = {"containerOverrides": [override]}
    if spec.get("task_count") is not None:
        overrides["taskCount"] = int(spec["task_count"])
    if spec.get("timeout_s") is not None:
        overrides["timeout"] = f"{int(spec['timeout_s'])}s"
    return {"overrides": overrides}


# --- operations and executions -----------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class RunOperation:
    """What a ``jobs:run`` (or ``executions:cancel``) operation says."""

    name: str | None
    done: bool
    #: the Execution from ``metadata`` (or ``response`` once done), without ``@type``
    execution: Mapping[str, Any] | None
    error: str | None = None


def parse_operation(op: Any) -> RunOperation:
    """Read a GoogleLongrunningOperation whose metadata/response is an Execution."""
    if not isinstance(op, Mapping):
        raise ProviderError("Cloud Run answered with something that is not an operation",
                            provider="cloud_run")
    execution: Mapping[str, Any] | None = None
    for key in ("response", "metadata"):
        value = op.get(key)
        if isinstance(value, Mapping) and value.get("name"):
            execution = {k: v for k, v in value.items() if k != "@type"}
            break
    error = None
    if isinstance(op.get("error"), Mapping):
        err = op["error"]
        error = f"{_code_name(err.get('code'))}: {err.get('message') or 'operation failed'}"
    name = op.get("name")
    return RunOperation(name=name if isinstance(name, str) else None, done=bool(op.get("done")),
                        execution=execution, error=error)


def execution_task_id(execution: Mapping[str, Any]) -> str | None:
    """The ``EGW_TASK_ID`` egw set on the execution's containers, if any."""
    template = execution.get("template") or {}
    for container in template.get("containers") or ():
        for env in container.get("env") or ():
            if env.get("name") == CORRELATION_ENV and isinstance(env.get("value"), str):
                return str(env["value"])
    return None


def _completed(execution: Mapping[str, Any]) -> Mapping[str, Any]:
    for cond in execution.get("conditions") or ():
        if cond.get("type") == "Completed":
            return cond  # type: ignore[no-any-return]
    return {}


def execution_observation(
    execution: Mapping[str, Any], tasks: Sequence[Mapping[str, Any]] | None = None
) -> Observation:
    """Map an Execution (and, if read, its Tasks) to an egw observation.

    The interpretation (run-v2-jobs.md, "Execution state"):

    * ``Completed`` ``CONDITION_SUCCEEDED``             -> succeeded (exit code 0)
    * ``Completed`` ``CONDITION_FAILED`` + ``CANCELLED`` -> cancelled
    * ``Completed`` ``CONDITION_FAILED`` otherwise      -> failed, with executionReason and message
      (exit code from the first failed Task's ``lastAttemptResult``, when the tasks are given)
    * not completed, ``executionReason`` ``CANCELLING`` -> cancelling
    * not completed, ``startTime`` set or ``runningCount`` > 0 -> running
    * otherwise                                         -> queued
    """
    cond = _completed(execution)
    cstate = cond.get("state")
    exec_reason = cond.get("executionReason")
    message = cond.get("message") or ""
    count = _counts(execution)
    detail: dict[str, Any] = {"execution": execution.get("name"), **count}
    if exec_reason:
        detail["execution_reason"] = exec_reason
    if cond.get("reason"):
        detail["condition_reason"] = cond["reason"]
    finished = parse_time(execution.get("completionTime"))
    if cstate == "CONDITION_SUCCEEDED":
        return Observation(state=TaskState.SUCCEEDED, exit_code=0, at=finished, detail=detail,
                           reason=f"{count['succeeded']}/{count['task_count']} tasks succeeded")
    if cstate == "CONDITION_FAILED":
        if exec_reason == "CANCELLED":
            return Observation(state=TaskState.CANCELLED, at=finished, detail=detail,
                               reason=_join_reason("cancelled", message))
        why = exec_reason or cond.get("reason") or "FAILED"
        return Observation(state=TaskState.FAILED, at=finished, detail=detail,
                           exit_code=_failed_exit_code(tasks),
                           reason=_join_reason(why, message))
    if exec_reason == "CANCELLING":
        return Observation(state=TaskState.CANCELLING, detail=detail,
                           reason=_join_reason("cancelling", message))
    started = parse_time(execution.get("startTime"))
    if started is not None or count["running"] > 0:
        return Observation(state=TaskState.RUNNING, at=started, detail=detail,
                           reason=f"{count['running']}/{count['task_count']} tasks running")
    return Observation(state=TaskState.QUEUED, at=parse_time(execution.get("createTime")),
                       detail=detail, reason="execution created, not started yet")


def _counts(execution: Mapping[str, Any]) -> dict[str, int]:
    def n(key: str) -> int:
        value = execution.get(key)
        return int(value) if isinstance(value, int | str) and str(value).isdigit() else 0

    return {"task_count": n("taskCount"), "running": n("runningCount"),
            "succeeded": n("succeededCount"), "failed": n("failedCount"),
            "cancelled": n("cancelledCount"), "retried": n("retriedCount")}


def _join_reason(head: str, message: str) -> str:
    return f"{head}: {message}" if message else head


def _failed_exit_code(tasks: Sequence[Mapping[str, Any]] | None) -> int | None:
    for task in sorted(tasks or (), key=lambda t: int(t.get("index") or 0)):
        result = task.get("lastAttemptResult") or {}
        code = result.get("exitCode")
        if isinstance(code, int) and code != 0:
            return code
    return None


# --- Cloud Logging ------------------------------------------------------------------------------


def normalize_timestamp(text: str) -> str:
    """An RFC 3339 timestamp as ``YYYY-MM-DDTHH:MM:SS.nnnnnnnnnZ`` (UTC, 9 digits), so two
    timestamps compare as strings in time order (Cloud Logging keeps nanoseconds)."""
    m = re.fullmatch(
        r"(\d{4}-\d{2}-\d{2})[Tt ](\d{2}:\d{2}:\d{2})(?:\.(\d{1,9}))?(Z|z|[+-]\d{2}:\d{2})", text)
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
    ref: ExecutionRef, *, since: str | None = None, until: str | None = None,
    page_token: str | None = None, page_size: int = 1000,
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
            str(entry.get("timestamp") or entry.get("receiveTimestamp") or _EPOCH)),
        insert_id=str(entry.get("insertId") or ""),
    )


_EPOCH = "1970-01-01T00:00:00Z"


def _render_json(payload: Mapping[str, Any], severity: Any) -> str:
    rest = {k: v for k, v in payload.items()
            if k != "message" and not k.startswith("logging.googleapis.com/")}
    head = str(payload["message"]) if "message" in payload else ""
    tail = json.dumps(rest, separators=(",", ":"), ensure_ascii=False, sort_keys=True) if rest else ""
    text = f"{head} {tail}" if head and tail else head or tail
    if isinstance(severity, str) and severity not in ("DEFAULT", "INFO", ""):
        text = f"{severity} {text}"
    return text


def format_line(line: LogLine, *, multi_task: bool) -> str:
    """The text egw stores for a line: ``[task N] `` in front when an execution has several tasks."""
    if multi_task and line.task_index is not None:
        return "\n".join(f"[task {line.task_index}] {part}" for part in line.text.split("\n")) + "\n"
    return line.text + "\n"


@dataclass(frozen=True, slots=True)
class LogCursor:
    """How far an execution's log has been read: the newest timestamp, and the insert ids seen at it."""

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
            return cls(normalize_timestamp(ts) if ts else None,
                       frozenset(str(i) for i in data.get("insert_ids") or ()))
        except (ValueError, AttributeError, TypeError):
            return cls()


# --- errors -----------------------------------------------------------------------------------

#: google.rpc.Code numbers -> names (googleapis google/rpc/code.proto)
_CODES = {0: "OK", 1: "CANCELLED", 2: "UNKNOWN", 3: "INVALID_ARGUMENT", 4: "DEADLINE_EXCEEDED",
          5: "NOT_FOUND", 6: "ALREADY_EXISTS", 7: "PERMISSION_DENIED", 8: "RESOURCE_EXHAUSTED",
          9: "FAILED_PRECONDITION", 10: "ABORTED", 11: "OUT_OF_RANGE", 12: "UNIMPLEMENTED",
          13: "INTERNAL", 14: "UNAVAILABLE", 15: "DATA_LOSS", 16: "UNAUTHENTICATED"}


def _code_name(code: Any) -> str:
    return _CODES.get(code, str(code)) if isinstance(code, int) else str(code or "UNKNOWN")


@dataclass(frozen=True, slots=True)
class GoogleError:
    http_status: int
    status: str
    message: str


def parse_error(http_status: int, body: bytes) -> GoogleError:
    """Read an AIP-193 error body ``{"error": {"code", "message", "status", "details"}}``;
    anything else (an HTML page from a proxy) becomes a short plain message."""
    try:
        data = json.loads(body)
        err = data["error"]
        return GoogleError(http_status, str(err.get("status") or _code_name(err.get("code"))),
                           str(err.get("message") or "").strip() or f"HTTP {http_status}")
    except (ValueError, KeyError, TypeError, AttributeError):
        text = body.decode("utf-8", "replace").strip()
        return GoogleError(http_status, f"HTTP {http_status}",
                           text[:200] if text else f"HTTP {http_status} with no body")
