"""Nomad's wire formats, pure: task object, job JSON, event-stream lines, states, log frames.

Theory of operation
-------------------
Contracts: Nomad's API docs and wire facts, copied in tests/samples/nomad/*.md with the
samples the tests use. Nothing here does I/O; `egw.providers.nomad` feeds it bytes and objects.

* A user's ``task`` object is either egw's short form (``job_id``, ``image``, ``command``...)
  or ``{"job": {...}}``, a Nomad JSON job passed through. `validate_task` checks it and
  returns the *spec*: the job without egw's marks plus what the provider needs later.
  `register_body` adds egw's marks at submit time: ``Meta.egw_task_id`` (so a re-submit can
  recognise the job it already registered) and the group's ``MaxRunDuration``.
* A job ID goes into URL paths, so egw accepts a URL-safe subset of Nomad's rule (Nomad only
  forbids empty IDs, spaces and NUL): 1-128 of ``A-Z a-z 0-9 . _ -``, starting alphanumeric.
* A task's state is derived from *all* it knows about the job (`job_observation`): the latest
  allocation of each slot (allocation ``Name``), the evaluations (placement failures) and the
  job itself (stopped, purged). Only allocations created after egw's registration
  (``CreateIndex > JobModifyIndex`` of the register answer) count, so an older run of the same
  job ID never leaks in.
* The event stream is NDJSON with ``{}`` heartbeats (`NdjsonSplitter`, `parse_stream_line`);
  the log stream is undelimited JSON frames with base64 ``Data`` (`FrameDecoder`), turned
  into valid UTF-8 chunks by `Utf8Chunker`.

Size: over the 500-line budget because it holds the whole of one backend's wire format
(four sections: task, event stream, states, logs); each is short and tested on its own.
"""

# Malformed upstream data raises ValueError, whatever is wrong with it (callers catch one type).
# ruff: noqa: TRY004

from __future__ import annotations

import base64
import binascii
import codecs
import copy
import json
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from egw.core.model import Observation, TaskState
from egw.errors import InvalidRequest

S = TaskState

#: the Meta key egw marks its jobs with (the egw task id)
META_TASK_ID = "egw_task_id"
#: group and task name of a short-form job
GROUP = "main"
TASK = "main"
DRIVERS = ("docker", "exec", "raw_exec")
TERMINAL_CLIENT = frozenset({"complete", "failed", "lost"})
#: the ClientDescription Nomad (>= 2.0.2, group ``max_run_duration``) gives a timed-out allocation
MAX_RUN_EXCEEDED = "allocation exceeded max_run_duration"
#: the prefix of Nomad's answer to a failed ``EnforceIndex`` check (an HTTP 500)
ENFORCE_INDEX_ERROR = "Enforcing job modify index"

_SHORT_KEYS = frozenset(
    {"job_id", "image", "command", "args", "env", "datacenters", "namespace", "region",
     "driver", "resources", "meta", "timeout_s"}
)
_JOB_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")
# Nomad's own namespace rule (structs.validNamespaceName)
_NAMESPACE = re.compile(r"[A-Za-z0-9-]{1,128}")
_REGION = re.compile(r"[A-Za-z0-9._-]{1,128}")
_DATACENTER = re.compile(r"[A-Za-z0-9._*-]{1,128}")
_NAME = re.compile(r"[A-Za-z0-9._-]{1,128}")
_ENV_KEY = re.compile(r"[A-Za-z_][A-Za-z0-9_.]{0,255}")
_META_KEY = re.compile(r"[A-Za-z0-9_.-]{1,128}")
_NS_PER_S = 1_000_000_000


# --- the task object ------------------------------------------------------------------------


def check_job_id(value: Any, field: str = "task.job_id") -> str:
    if not isinstance(value, str) or not value:
        raise InvalidRequest("a Nomad job id is required (a string)", field=field)
    if not _JOB_ID.fullmatch(value):
        raise InvalidRequest(
            f"invalid Nomad job id {value[:80]!r}: use 1-128 letters, digits, '.', '_' or '-',"
            " starting with a letter or digit",
            field=field,
        )
    return value


def validate_task(
    task: Any, *, namespace: str, region: str | None, datacenters: Sequence[str]
) -> dict[str, Any]:
    """Check a submit's ``task`` object; the defaults come from ``providers.nomad``.

    Returns the spec: ``job_id``, ``namespace``, ``region``, ``job`` (Nomad JSON, without
    egw's marks), ``tasks`` (``[group, task]`` pairs), ``expected`` (allocations the job
    places) and ``timeout_s``. Raises `InvalidRequest` naming the field.
    """
    if not isinstance(task, Mapping):
        raise InvalidRequest("task must be an object", field="task")
    if "job" in task:
        return _validate_passthrough(task, namespace=namespace, region=region,
                                     datacenters=datacenters)
    for key in task:
        if key not in _SHORT_KEYS:
            raise InvalidRequest(f"unknown field {key!r}", field=f"task.{key}")
    job_id = check_job_id(task.get("job_id"))
    driver = task.get("driver", "docker")
    if driver not in DRIVERS:
        raise InvalidRequest(f"driver must be one of {', '.join(DRIVERS)}", field="task.driver")
    config: dict[str, Any] = {}
    image = task.get("image")
    if driver == "docker":
        if not isinstance(image, str) or not image.strip() or any(c.isspace() for c in image):
            raise InvalidRequest("the docker driver needs an image (a string without spaces)",
                                 field="task.image")
        config["image"] = image
    elif image is not None:
        raise InvalidRequest(f"image is only for the docker driver, not {driver}",
                             field="task.image")
    command = task.get("command")
    if command is not None and (not isinstance(command, str) or not command):
        raise InvalidRequest("command must be a non-empty string", field="task.command")
    if command is None and driver != "docker":
        raise InvalidRequest(f"the {driver} driver needs a command", field="task.command")
    if command is not None:
        config["command"] = command
    args = _string_list(task.get("args", []), "task.args", allow_empty=True)
    if args:
        config["args"] = args
    ns = _pattern(task.get("namespace", namespace), _NAMESPACE, "task.namespace",
                  "a namespace is 1-128 letters, digits or '-'")
    reg = task.get("region", region)
    if reg is not None:
        reg = _pattern(reg, _REGION, "task.region",
                       "a region is 1-128 letters, digits, '.', '_', '-'")
    dcs = _string_list(task.get("datacenters", list(datacenters)), "task.datacenters")
    for i, dc in enumerate(dcs):
        _pattern(dc, _DATACENTER, f"task.datacenters[{i}]", "invalid datacenter name")
    env = _string_map(task.get("env", {}), "task.env", _ENV_KEY, "an environment variable name")
    meta = _meta(task.get("meta", {}), "task.meta")
    timeout_s = _timeout(task.get("timeout_s"))
    nomad_task: dict[str, Any] = {"Name": TASK, "Driver": driver, "Config": config}
    if env:
        nomad_task["Env"] = env
    resources = _resources(task.get("resources"))
    if resources:
        nomad_task["Resources"] = resources
    job: dict[str, Any] = {
        "ID": job_id,
        "Name": job_id,
        "Type": "batch",
        "Namespace": ns,
        "Datacenters": dcs,
        "Meta": meta,
        "TaskGroups": [
            {
                "Name": GROUP,
                "Count": 1,
                # egw reports an exit as it is: no restart, no reschedule (a passed-through
                # job keeps its own policies)
                "RestartPolicy": {"Attempts": 0, "Mode": "fail", "Interval": 1800 * _NS_PER_S,
                                  "Delay": 15 * _NS_PER_S},
                "ReschedulePolicy": {"Attempts": 0, "Unlimited": False},
                "Tasks": [nomad_task],
            }
        ],
    }
    if reg is not None:
        job["Region"] = reg
    return {"job_id": job_id, "namespace": ns, "region": reg, "job": job,
            "tasks": [[GROUP, TASK]], "expected": 1, "timeout_s": timeout_s}


def _validate_passthrough(
    task: Mapping[str, Any], *, namespace: str, region: str | None, datacenters: Sequence[str]
) -> dict[str, Any]:
    for key in task:
        if key not in ("job", "timeout_s"):
            raise InvalidRequest(f"unknown field {key!r} next to a full job", field=f"task.{key}")
    raw = task["job"]
    if not isinstance(raw, Mapping):
        raise InvalidRequest("job must be a Nomad JSON job object", field="task.job")
    try:
        job: dict[str, Any] = json.loads(json.dumps(raw))
    except (TypeError, ValueError):
        raise InvalidRequest("job must be plain JSON", field="task.job") from None
    job_id = check_job_id(job.get("ID"), "task.job.ID")
    job.setdefault("Name", job_id)
    kind = job.get("Type") or "batch"
    if kind != "batch":
        raise InvalidRequest("egw runs batch jobs only (a task must end)", field="task.job.Type")
    job["Type"] = "batch"
    ns = job.get("Namespace") or namespace
    job["Namespace"] = _pattern(ns, _NAMESPACE, "task.job.Namespace", "invalid namespace")
    reg = job.get("Region") or region
    if reg is not None:
        job["Region"] = _pattern(reg, _REGION, "task.job.Region", "invalid region")
    if not job.get("Datacenters"):
        job["Datacenters"] = list(datacenters)
    job["Meta"] = _meta(job.get("Meta") or {}, "task.job.Meta")
    for key in ("Periodic", "ParameterizedJob"):
        if job.get(key):
            raise InvalidRequest(f"{key} jobs are not run by egw (they start no evaluation)",
                                 field=f"task.job.{key}")
    groups = job.get("TaskGroups")
    if not isinstance(groups, list) or not groups:
        raise InvalidRequest("a job needs at least one task group", field="task.job.TaskGroups")
    pairs: list[list[str]] = []
    expected = 0
    for gi, group in enumerate(groups):
        where = f"task.job.TaskGroups[{gi}]"
        if not isinstance(group, dict):
            raise InvalidRequest("a task group must be an object", field=where)
        gname = _pattern(group.get("Name"), _NAME, f"{where}.Name", "invalid task group name")
        count = group.get("Count", 1)
        if count is None:
            count = 1
        if not isinstance(count, int) or isinstance(count, bool) or count < 0:
            raise InvalidRequest("Count must be a whole number >= 0", field=f"{where}.Count")
        expected += count
        tasks = group.get("Tasks")
        if not isinstance(tasks, list) or not tasks:
            raise InvalidRequest("a task group needs at least one task", field=f"{where}.Tasks")
        for ti, t in enumerate(tasks):
            tw = f"{where}.Tasks[{ti}]"
            if not isinstance(t, dict):
                raise InvalidRequest("a task must be an object", field=tw)
            tname = _pattern(t.get("Name"), _NAME, f"{tw}.Name", "invalid task name")
            if not isinstance(t.get("Driver"), str) or not t["Driver"]:
                raise InvalidRequest("a task needs a Driver", field=f"{tw}.Driver")
            pairs.append([gname, tname])
    return {"job_id": job_id, "namespace": job["Namespace"], "region": job.get("Region"),
            "job": job, "tasks": pairs, "expected": expected,
            "timeout_s": _timeout(task.get("timeout_s"))}


def register_body(
    spec: Mapping[str, Any], *, task_id: str, timeout_s: float | None, enforce_index: int
) -> dict[str, Any]:
    """The body of ``POST /v1/jobs`` (jobs.md "Create Job"), check-and-set on ``enforce_index``
    (0: only if the job is new). ``timeout_s`` becomes each group's ``MaxRunDuration`` (Nomad
    >= 2.0.2; older servers ignore the unknown field)."""
    job = copy.deepcopy(dict(spec["job"]))
    job["Meta"] = {**(job.get("Meta") or {}), META_TASK_ID: task_id}
    if timeout_s is not None:
        for group in job["TaskGroups"]:
            group["MaxRunDuration"] = int(timeout_s * _NS_PER_S)
    return {"Job": job, "EnforceIndex": True, "JobModifyIndex": enforce_index}


def _pattern(value: Any, pattern: re.Pattern[str], field: str, problem: str) -> str:
    if not isinstance(value, str) or not pattern.fullmatch(value):
        raise InvalidRequest(problem, field=field)
    return value


def _string_list(value: Any, field: str, *, allow_empty: bool = False) -> list[str]:
    if not isinstance(value, list) or (not value and not allow_empty):
        raise InvalidRequest("must be a non-empty list of strings" if not allow_empty
                             else "must be a list of strings", field=field)
    for i, item in enumerate(value):
        if not isinstance(item, str) or "\x00" in item:
            raise InvalidRequest("must be a string", field=f"{field}[{i}]")
    return list(value)


def _string_map(value: Any, field: str, keys: re.Pattern[str], what: str) -> dict[str, str]:
    if not isinstance(value, Mapping):
        raise InvalidRequest("must be an object of strings", field=field)
    out: dict[str, str] = {}
    for k, v in value.items():
        if not isinstance(k, str) or not keys.fullmatch(k):
            raise InvalidRequest(f"invalid key: not {what}", field=f"{field}.{k}")
        if not isinstance(v, str) or "\x00" in v:
            raise InvalidRequest("must be a string", field=f"{field}.{k}")
        out[k] = v
    return out


def _meta(value: Any, field: str) -> dict[str, str]:
    meta = _string_map(value, field, _META_KEY, "a meta key (letters, digits, '.', '_', '-')")
    if META_TASK_ID in meta:
        raise InvalidRequest(f"{META_TASK_ID} is set by egw", field=f"{field}.{META_TASK_ID}")
    return meta


def _resources(value: Any) -> dict[str, int]:
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise InvalidRequest("resources must be an object", field="task.resources")
    out: dict[str, int] = {}
    for key, (nomad_key, minimum) in {"cpu": ("CPU", 1), "memory_mb": ("MemoryMB", 10)}.items():
        if key in value:
            v = value[key]
            if not isinstance(v, int) or isinstance(v, bool) or v < minimum:
                raise InvalidRequest(f"must be a whole number >= {minimum}",
                                     field=f"task.resources.{key}")
            out[nomad_key] = v
    for key in value:
        if key not in ("cpu", "memory_mb"):
            raise InvalidRequest(f"unknown field {key!r} (cpu, memory_mb)",
                                 field=f"task.resources.{key}")
    return out


def _timeout(value: Any) -> float | None:
    if value is None:
        return None
    if not isinstance(value, int | float) or isinstance(value, bool) or not 0 < value <= 31 * 86400:
        raise InvalidRequest("timeout_s must be a number of seconds > 0", field="task.timeout_s")
    return float(value)


# --- the event stream (event-stream.md) ----------------------------------------------------


@dataclass(frozen=True, slots=True)
class StreamEvent:
    topic: str
    type: str
    key: str
    namespace: str
    index: int
    payload: Mapping[str, Any]

    @property
    def object(self) -> Mapping[str, Any]:
        """The payload's one object (``{"Allocation": {...}}`` -> the allocation)."""
        value = self.payload.get(self.topic)
        return value if isinstance(value, Mapping) else {}

    @property
    def job_id(self) -> str | None:
        obj = self.object
        if self.topic == "Job":
            return str(obj.get("ID") or self.key) or None
        value = obj.get("JobID")
        return value if isinstance(value, str) else None


@dataclass(frozen=True, slots=True)
class StreamLine:
    """One NDJSON message: a heartbeat (``{}``, index None) or a batch of one raft index."""

    index: int | None
    events: tuple[StreamEvent, ...] = ()

    @property
    def heartbeat(self) -> bool:
        return self.index is None


def parse_stream_line(raw: bytes | str) -> StreamLine:
    """Parse one line of ``/v1/event/stream``; raises ValueError if it is not Nomad's shape."""
    data = json.loads(raw)
    if not isinstance(data, dict):
        raise ValueError("an event-stream line must be a JSON object")
    if not data:
        return StreamLine(None)
    index = data.get("Index")
    if not isinstance(index, int) or isinstance(index, bool):
        raise ValueError("an event-stream line without an integer Index")
    events: list[StreamEvent] = []
    for ev in data.get("Events") or []:
        if not isinstance(ev, dict):
            raise ValueError("an event must be a JSON object")
        events.append(StreamEvent(
            topic=str(ev.get("Topic", "")), type=str(ev.get("Type", "")),
            key=str(ev.get("Key", "")), namespace=str(ev.get("Namespace") or ""),
            index=int(ev.get("Index") or index),
            payload=payload if isinstance(payload := ev.get("Payload"), dict) else {},
        ))
    return StreamLine(index, tuple(events))


class NdjsonSplitter:
    """Cuts a byte stream into lines at ``\\n``; a line may arrive in any number of pieces."""

    def __init__(self, max_line: int = 64 * 1024 * 1024) -> None:
        self._buf = bytearray()
        self._max = max_line

    def feed(self, data: bytes) -> list[bytes]:
        self._buf += data
        lines: list[bytes] = []
        start = 0
        while (end := self._buf.find(b"\n", start)) >= 0:
            line = bytes(self._buf[start:end]).strip()
            if line:
                lines.append(line)
            start = end + 1
        del self._buf[:start]
        if len(self._buf) > self._max:
            raise ValueError(f"an event-stream line is longer than {self._max} bytes")
        return lines


# --- allocation, evaluation and job -> egw state ---------------------------------------------

#: an allocation's ClientStatus -> the egw state before refinement (common.md "Status values")
CLIENT_STATUS: Mapping[str, TaskState] = {
    "pending": S.QUEUED,
    "running": S.RUNNING,
    "unknown": S.RUNNING,  # the client is disconnected; the work may still run
    "complete": S.SUCCEEDED,
    "failed": S.FAILED,
    "lost": S.FAILED,
}
_FAILURE_EVENTS = {
    "Driver Failure": "DriverError",
    "Setup Failure": "SetupError",
    "Failed Validation": "ValidationError",
    "Failed Artifact Download": "DownloadError",
    "Sibling Task Failed": "FailedSibling",
}


def _events(ts: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    return [e for e in ts.get("Events") or [] if isinstance(e, Mapping)]


def task_started(ts: Mapping[str, Any]) -> bool:
    """Whether a task state shows the task was started (so it may have written logs)."""
    return ts.get("State") == "running" or any(e.get("Type") == "Started" for e in _events(ts))


def _task_failure(name: str, ts: Mapping[str, Any]) -> tuple[str, int | None]:
    """Why a task failed, and its exit code if it ran."""
    exit_code: int | None = None
    why: str | None = None
    for ev in _events(ts):
        kind = ev.get("Type")
        if kind == "Terminated":
            exit_code = int(ev.get("ExitCode") or 0)
            signal = int(ev.get("Signal") or 0)
            why = f"task {name!r} exited with code {exit_code}" + (
                f" (signal {signal})" if signal else "")
        elif kind in _FAILURE_EVENTS:
            detail = ev.get(_FAILURE_EVENTS[kind]) or ev.get("DisplayMessage") or ev.get("Message")
            why = f"task {name!r}: {kind}" + (f": {detail}" if detail else "")
    return why or f"task {name!r} failed", exit_code


def alloc_observation(alloc: Mapping[str, Any]) -> Observation:
    """The egw state one allocation shows (table `CLIENT_STATUS`, then refined).

    * stopped by Nomad (``DesiredStatus`` stop/evict) and its tasks killed -> cancelled
      (evicted -> failed: preempted);
    * complete with ``ClientDescription`` "allocation exceeded max_run_duration" -> timed_out;
    * failed -> the failing task's exit code or driver error; lost -> failed.
    """
    client = str(alloc.get("ClientStatus") or "pending")
    desired = str(alloc.get("DesiredStatus") or "run")
    states = alloc.get("TaskStates") or {}
    detail: dict[str, Any] = {
        "alloc_id": alloc.get("ID"), "client_status": client, "desired_status": desired,
        "node_id": alloc.get("NodeID") or None,
        "started": any(task_started(ts) for ts in states.values() if isinstance(ts, Mapping)),
    }
    state = CLIENT_STATUS.get(client, S.RUNNING)
    short = str(alloc.get("ID") or "")[:8]
    if state is S.QUEUED:
        return Observation(state=S.QUEUED, reason=f"allocation {short} pending", detail=detail)
    if state is S.RUNNING:
        return Observation(state=S.RUNNING, reason=f"allocation {short} {client}", detail=detail)
    killed = any(
        e.get("Type") in ("Killing", "Killed")
        for ts in states.values() if isinstance(ts, Mapping) for e in _events(ts)
    )
    description = str(alloc.get("ClientDescription") or "")
    if client == "lost":
        return Observation(state=S.FAILED, reason=f"allocation {short} lost: "
                           f"{alloc.get('DesiredDescription') or description or 'node down'}",
                           detail=detail)
    if MAX_RUN_EXCEEDED in description:
        return Observation(state=S.TIMED_OUT, reason=f"Nomad stopped allocation {short}: "
                           f"{MAX_RUN_EXCEEDED}", detail=detail)
    if desired == "evict" and killed:
        return Observation(state=S.FAILED, reason=f"allocation {short} evicted (preempted)",
                           detail=detail)
    if desired == "stop" and killed:
        why = alloc.get("DesiredDescription") or "stopped"
        return Observation(state=S.CANCELLED, reason=f"allocation {short} stopped: {why}",
                           detail=detail)
    failed = [(n, ts) for n, ts in sorted(states.items())
              if isinstance(ts, Mapping) and ts.get("Failed")]
    if client == "failed" or failed:
        name, ts = failed[0] if failed else (next(iter(sorted(states)), "?"), {})
        why, code = _task_failure(name, ts)
        return Observation(state=S.FAILED, reason=why, exit_code=code, detail=detail)
    codes = [_task_failure(n, ts)[1] for n, ts in states.items() if isinstance(ts, Mapping)]
    code = next((c for c in codes if c is not None), 0)
    return Observation(state=S.SUCCEEDED, reason=f"allocation {short} complete",
                       exit_code=code, detail=detail)


def describe_placement_failure(failed: Mapping[str, Any]) -> str:
    """A readable reason from an evaluation's ``FailedTGAllocs`` (allocations.md), in the
    words of ``nomad job status``."""
    parts: list[str] = []
    for group, metric in sorted(failed.items()):
        m = metric if isinstance(metric, Mapping) else {}
        bits: list[str] = []
        available = m.get("NodesAvailable") or {}
        if not m.get("NodesEvaluated"):
            if available and not any(available.values()):
                names = ", ".join(sorted(available))
                bits.append(f"no nodes are available in datacenter(s) {names}")
            else:
                bits.append("no nodes were eligible for evaluation")
        for cls, n in sorted((m.get("ClassFiltered") or {}).items()):
            bits.append(f"class {cls!r} filtered {n} node(s)")
        for constraint, n in sorted((m.get("ConstraintFiltered") or {}).items()):
            bits.append(f"constraint {constraint!r} filtered {n} node(s)")
        if m.get("NodesExhausted"):
            bits.append(f"resources exhausted on {m['NodesExhausted']} node(s)")
        for dim, n in sorted((m.get("DimensionExhausted") or {}).items()):
            bits.append(f"dimension {dim!r} exhausted on {n} node(s)")
        for quota in m.get("QuotaExhausted") or []:
            bits.append(f"quota limit hit {quota!r}")
        if m.get("CoalescedFailures"):
            bits.append(f"{m['CoalescedFailures']} more allocation(s) failed the same way")
        parts.append(f"task group {group!r}: " + "; ".join(bits or ["not placed"]))
    return "placement failed: " + " | ".join(parts)


def _index(obj: Mapping[str, Any], key: str) -> int:
    value = obj.get(key)
    return value if isinstance(value, int) and not isinstance(value, bool) else 0


def job_observation(
    *,
    allocs: Iterable[Mapping[str, Any]],
    evals: Iterable[Mapping[str, Any]],
    since: int,
    expected: int,
    stopped: bool = False,
    gone: bool = False,
    cancel_requested: bool = False,
) -> Observation:
    """The task's state from everything known about its job.

    ``since`` is the ``JobModifyIndex`` of egw's registration; ``expected`` the number of
    allocations the job places; ``stopped``: the job was stopped (``Stop`` or
    ``JobDeregistered``); ``gone``: the job no longer exists (404). Placement failures are
    final for egw (the provider then stops the job, so a blocked evaluation never runs it
    later); allocations being rescheduled keep the task running.
    """
    latest: dict[str, Mapping[str, Any]] = {}
    seen: list[str] = []
    for alloc in allocs:
        if _index(alloc, "CreateIndex") <= since:
            continue
        seen.append(str(alloc.get("ID")))
        slot = str(alloc.get("Name") or alloc.get("ID"))
        if slot not in latest or _index(alloc, "CreateIndex") > _index(latest[slot], "CreateIndex"):
            latest[slot] = alloc
    slots = {slot: alloc_observation(a) for slot, a in sorted(latest.items())}
    for slot, obs in list(slots.items()):
        alloc = latest[slot]
        if obs.state is S.FAILED and (alloc.get("NextAllocation") or alloc.get("FollowupEvalID")):
            slots[slot] = Observation(state=S.RUNNING, reason=f"{obs.reason}; rescheduling",
                                      exit_code=obs.exit_code,
                                      detail={**obs.detail, "rescheduling": True})
    placement: dict[str, Any] = {}
    eval_failure: Mapping[str, Any] | None = None
    for ev in evals:
        if _index(ev, "CreateIndex") < since:
            continue
        if ev.get("Status") == "failed":
            eval_failure = ev
        elif ev.get("Status") in ("complete", "blocked") and ev.get("FailedTGAllocs"):
            placement.update(ev["FailedTGAllocs"])
    started = any(o.detail.get("started") for o in slots.values())
    done = [o for o in slots.values() if o.state.terminal]
    live = [o for o in slots.values() if not o.state.terminal]
    base = {"allocations": sorted(seen), "started": started}

    if eval_failure is not None and not slots:
        return Observation(state=S.FAILED, reason="evaluation failed: "
                           f"{eval_failure.get('StatusDescription') or 'scheduler error'}",
                           detail={**base, "eval_id": eval_failure.get("ID")})
    if placement and len(slots) < max(expected, 1):
        return Observation(state=S.FAILED, reason=describe_placement_failure(placement),
                           detail={**base, "placement_failed": True,
                                   "failed_groups": sorted(placement)})
    if slots and not live and (len(slots) >= expected or stopped or gone):
        for wanted in (S.FAILED, S.TIMED_OUT, S.CANCELLED, S.SUCCEEDED):
            match = [o for o in done if o.state is wanted]
            if match:
                first = match[0]
                return Observation(state=wanted, reason=first.reason, exit_code=first.exit_code,
                                   detail={**first.detail, **base})
    if not slots and (stopped or gone):
        if gone and not stopped and not cancel_requested:
            return Observation(state=S.FAILED, detail=base, reason="the job no longer exists "
                               "in Nomad (purged or garbage-collected); its outcome is unknown")
        return Observation(state=S.CANCELLED, detail=base,
                           reason="job stopped before an allocation was placed")
    if stopped and live:
        return Observation(state=S.CANCELLING, detail=base,
                           reason="job stopped in Nomad; waiting for its allocations to stop")
    if any(o.state is S.RUNNING for o in live) or done:
        running = next((o for o in live if o.state is S.RUNNING), None)
        return Observation(state=S.RUNNING, detail={**base, "started": True},
                           reason=running.reason if running else "allocations running")
    if live:
        return Observation(state=S.QUEUED, reason=live[0].reason, detail=base)
    return Observation(state=S.QUEUED, reason="waiting for placement", detail=base)


# --- the log stream (client-fs-logs.md) ---------------------------------------------------------


@dataclass(frozen=True, slots=True)
class LogFrame:
    """One frame of ``/v1/client/fs/logs``; ``{}`` (a heartbeat) has no data and no file event."""

    offset: int | None = None
    data: bytes = b""
    file: str | None = None
    file_event: str | None = None

    @property
    def heartbeat(self) -> bool:
        return not self.data and self.file_event is None


def parse_frame(raw: bytes | str) -> LogFrame:
    obj = json.loads(raw)
    if not isinstance(obj, dict):
        raise ValueError("a log frame must be a JSON object")
    data = b""
    if obj.get("Data"):
        try:
            data = base64.b64decode(obj["Data"], validate=True)
        except (binascii.Error, TypeError) as exc:
            raise ValueError(f"a log frame's Data is not base64: {exc}") from None
    offset = obj.get("Offset")
    return LogFrame(
        offset=offset if isinstance(offset, int) else None,
        data=data,
        file=obj.get("File") if isinstance(obj.get("File"), str) else None,
        file_event=obj.get("FileEvent") if isinstance(obj.get("FileEvent"), str) else None,
    )


class FrameDecoder:
    """Splits the framed log stream, JSON objects written back to back with no delimiter,
    as bytes arrive in any pieces.

    A brace counter that knows JSON strings finds each object's end; bytes of multi-byte
    UTF-8 characters never equal ``{ } " \\``, so scanning bytes is safe.
    """

    def __init__(self, max_frame: int = 16 * 1024 * 1024) -> None:
        self._buf = bytearray()
        self._pos = 0
        self._depth = 0
        self._in_string = False
        self._escape = False
        self._max = max_frame

    def feed(self, data: bytes) -> list[LogFrame]:
        self._buf += data
        frames: list[LogFrame] = []
        buf = self._buf
        start = 0
        i = self._pos
        while i < len(buf):
            c = buf[i]
            if self._in_string:
                if self._escape:
                    self._escape = False
                elif c == 0x5C:  # backslash
                    self._escape = True
                elif c == 0x22:  # quote
                    self._in_string = False
            elif c == 0x22:
                self._in_string = True
            elif c == 0x7B:  # {
                if self._depth == 0:
                    start = i
                self._depth += 1
            elif c == 0x7D:  # }
                self._depth -= 1
                if self._depth < 0:
                    raise ValueError("unbalanced '}' in the log stream")
                if self._depth == 0:
                    frames.append(parse_frame(bytes(buf[start:i + 1])))
                    start = i + 1
            elif self._depth == 0 and c not in b" \t\r\n":
                raise ValueError(f"unexpected byte {c:#x} between log frames")
            i += 1
        if self._depth == 0:
            del buf[:i]
            self._pos = 0
        else:
            del buf[:start]
            self._pos = i - start
        if len(buf) > self._max:
            raise ValueError(f"a log frame is longer than {self._max} bytes")
        return frames


class Utf8Chunker:
    """Raw log bytes -> valid UTF-8 chunks: a character split across frames is held back
    until its last byte arrives; invalid bytes become U+FFFD."""

    def __init__(self) -> None:
        self._decoder = codecs.getincrementaldecoder("utf-8")("replace")

    def feed(self, data: bytes) -> bytes:
        return self._decoder.decode(data).encode("utf-8")

    @property
    def pending(self) -> int:
        """Bytes held back (the start of an unfinished character)."""
        return len(self._decoder.getstate()[0])

    def flush(self) -> bytes:
        return self._decoder.decode(b"", final=True).encode("utf-8")
