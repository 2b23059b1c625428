"""The simulator's world: jobs, their scripts, and executions that advance with the clock.

An execution's whole life is fixed when it is created (its tasks' start, end, output and exit
code, in simulated seconds scaled by ``time_scale`` into real ones); what an API call sees is
computed from the clock at that moment, so nothing runs in the background. A cancel cuts the
timeline: output after it is never written, and the execution ends ``CANCELLED`` a little later.

Field shapes follow the discovery documents (tests/samples/cloudrun/); values that the
documents do not pin down (condition messages, task names, insert ids) are the simulator's own.
Zero counts and false booleans are left out of the JSON, as proto3 JSON mapping does.
"""

from __future__ import annotations

import random
import string
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote

EXECUTION_TYPE = "type.googleapis.com/google.cloud.run.v2.Execution"


@dataclass(frozen=True, slots=True)
class TaskContext:
    """What a task of a simulated execution gets: its index, args and env (overrides applied)."""

    index: int
    task_count: int
    args: tuple[str, ...]
    env: Mapping[str, str]


@dataclass(frozen=True, slots=True)
class TaskOutput:
    """What one task does: lines (a str is a ``textPayload``, a dict a ``jsonPayload``), spread
    evenly over its duration, then it exits."""

    stdout: Sequence[str | Mapping[str, Any]] = ()
    stderr: Sequence[str | Mapping[str, Any]] = ()
    exit_code: int = 0
    duration_s: float | None = None


@dataclass(frozen=True, slots=True)
class JobScript:
    """How a simulated job's executions behave (all times in simulated seconds).

    With nothing scripted each task prints its args as one line on stdout and exits 0.
    ``per_task`` overrides everything per task; ``failing_tasks`` limits ``exit_code`` to some
    task indexes (default: all tasks exit with it).
    """

    stdout: Sequence[str | Mapping[str, Any]] | None = None
    stderr: Sequence[str | Mapping[str, Any]] = ()
    exit_code: int = 0
    failing_tasks: frozenset[int] | None = None
    duration_s: float = 2.0
    #: time an execution stays queued before its tasks start
    start_delay_s: float = 1.0
    #: time between a cancel and the execution's CANCELLED condition
    cancel_delay_s: float = 0.5
    #: Cloud Logging shows an entry only this long after its timestamp (plus up to the jitter)
    ingest_delay_s: float = 0.0
    ingest_jitter_s: float = 0.0
    #: a platform line ("Container called exit(N).") at each task's end
    system_messages: bool = True
    #: entries' timestamps cut to this many (real) seconds, as when a program's structured log
    #: lines carry their own coarse ``timestamp`` (https://cloud.google.com/logging/docs/
    #: structured-logging): many entries then share a timestamp (None: nanoseconds)
    timestamp_resolution_s: float | None = None
    #: lines are spread over this many first seconds of each task (None: its whole duration),
    #: e.g. a long job that says what it does at its start, then works silently
    output_span_s: float | None = None
    per_task: Callable[[TaskContext], TaskOutput] | None = None

    def output(self, ctx: TaskContext) -> TaskOutput:
        if self.per_task is not None:
            return self.per_task(ctx)
        fails = self.failing_tasks is None or ctx.index in self.failing_tasks
        stdout = (
            self.stdout if self.stdout is not None else ([" ".join(ctx.args)] if ctx.args else [])
        )
        return TaskOutput(
            stdout=list(stdout),
            stderr=list(self.stderr),
            exit_code=self.exit_code if fails else 0,
            duration_s=self.duration_s,
        )


@dataclass
class SimJob:
    project: str
    region: str
    name: str
    image: str = "us-docker.pkg.dev/cloudrun/container/job:latest"
    args: list[str] = field(default_factory=list)
    env: dict[str, str] = field(default_factory=dict)
    container: str = "job-1"
    task_count: int = 1
    timeout_s: int = 600
    script: JobScript = field(default_factory=JobScript)
    #: the scripts of the job's next executions, one each, before ``script`` applies again:
    #: e.g. an execution that stays queued (a huge ``start_delay_s``, as the executions that sit
    #: PENDING in PrefectHQ/prefect#16021), then one that runs
    then: list[JobScript] = field(default_factory=list)

    @property
    def resource(self) -> str:
        return f"projects/{self.project}/locations/{self.region}/jobs/{self.name}"


@dataclass
class SimEntry:
    """A log entry, visible to entries:list from ``visible_ns`` on."""

    ts_ns: int
    visible_ns: int
    body: dict[str, Any]


@dataclass
class SimTask:
    index: int
    start_ns: int
    end_ns: int
    exit_code: int


def rfc3339(ns: int) -> str:
    """Nanosecond epoch time as RFC 3339 in UTC with 0, 3, 6 or 9 fractional digits: the
    proto3 JSON form of a Timestamp ("uses 0, 3, 6 or 9 fractional digits", googleapis
    google/protobuf/timestamp.proto), so trailing zeros are left out as the LogEntry.timestamp
    description warns (logging-entries-list.md)."""
    when = datetime.fromtimestamp(ns // 1_000_000_000, UTC)
    nanos = ns % 1_000_000_000
    if nanos == 0:
        frac = ""
    elif nanos % 1_000_000 == 0:
        frac = f".{nanos // 1_000_000:03d}"
    elif nanos % 1000 == 0:
        frac = f".{nanos // 1000:06d}"
    else:
        frac = f".{nanos:09d}"
    return when.strftime("%Y-%m-%dT%H:%M:%S") + frac + "Z"


def _prune(obj: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in obj.items() if v not in (None, 0, False, "", [], {})}


class SimExecution:
    def __init__(
        self,
        job: SimJob,
        *,
        short_id: str,
        now_ns: int,
        scale: float,
        overrides: Mapping[str, Any],
        rng: random.Random,
    ) -> None:
        self.job = job
        self.short_id = short_id
        self.name = f"{job.resource}/executions/{short_id}"
        self.uid = str(uuid.UUID(int=rng.getrandbits(128), version=4))
        self.created_ns = now_ns
        self.scale = scale
        self.cancelled_ns: int | None = None
        script = self.script = job.then.pop(0) if job.then else job.script
        container = (overrides.get("containerOverrides") or [{}])[0]
        self.args = tuple(container.get("args") or ([] if container.get("clearArgs") else job.args))
        self.env = {
            **job.env,
            **{e["name"]: e.get("value", "") for e in container.get("env") or ()},
        }
        self.task_count = int(overrides.get("taskCount") or job.task_count)
        self.timeout = str(overrides.get("timeout") or f"{job.timeout_s}s")
        self.start_ns = now_ns + self._ns(script.start_delay_s)
        self.tasks: list[SimTask] = []
        self.entries: list[SimEntry] = []
        for index in range(self.task_count):
            out = script.output(TaskContext(index, self.task_count, self.args, dict(self.env)))
            end = self.start_ns + self._ns(
                out.duration_s if out.duration_s is not None else script.duration_s
            )
            self.tasks.append(SimTask(index, self.start_ns, end, out.exit_code))
            for stream, lines in (("stdout", out.stdout), ("stderr", out.stderr)):
                span = end - self.start_ns
                if script.output_span_s is not None:
                    span = min(span, self._ns(script.output_span_s))
                for k, payload in enumerate(lines):
                    ts = self.start_ns + span * (k + 1) // (len(lines) + 1)
                    self._entry(ts, stream, index, payload, rng)
            if script.system_messages:
                self._entry(
                    end, "varlog/system", index, f"Container called exit({out.exit_code}).", rng
                )
        self.entries.sort(key=lambda e: (e.ts_ns, e.body["logName"], e.body["insertId"]))
        self.cancel_delay_ns = self._ns(script.cancel_delay_s)

    def _ns(self, sim_seconds: float) -> int:
        return int(sim_seconds * self.scale * 1_000_000_000)

    def _entry(self, ts: int, log: str, index: int, payload: Any, rng: random.Random) -> None:
        script = self.script
        if script.timestamp_resolution_s:
            step = int(script.timestamp_resolution_s * 1_000_000_000)
            ts -= ts % step
        delay = script.ingest_delay_s + rng.uniform(0, script.ingest_jitter_s)
        body: dict[str, Any] = {
            "insertId": "".join(rng.choices(string.hexdigits.lower()[:16], k=16)),
            "logName": (
                f"projects/{self.job.project}/logs/{quote('run.googleapis.com/' + log, safe='')}"
            ),
            "resource": {
                "type": "cloud_run_job",
                "labels": {
                    "project_id": self.job.project,
                    "job_name": self.job.name,
                    "location": self.job.region,
                },
            },
            "labels": {
                "run.googleapis.com/execution_name": self.short_id,
                "run.googleapis.com/task_index": str(index),
                "run.googleapis.com/task_attempt": "0",
                "instanceId": f"00{self.uid.replace('-', '')[:30]}",
            },
            "timestamp": rfc3339(ts),
            "receiveTimestamp": rfc3339(ts + self._ns(delay) + 1000),
            "severity": "ERROR" if log == "stderr" else "INFO" if log == "stdout" else "DEFAULT",
        }
        if log == "varlog/system":
            body["labels"]["container_name"] = self.job.container
        if isinstance(payload, Mapping):
            body["jsonPayload"] = dict(payload)
            if isinstance(payload.get("severity"), str):  # a special key of structured logging
                body["severity"] = body["jsonPayload"].pop("severity")
        else:
            body["textPayload"] = str(payload)
        self.entries.append(SimEntry(ts, ts + self._ns(delay), body))

    # --- state at a moment ------------------------------------------------------------------

    def end_ns(self) -> int:
        """When the execution completes (or completed), cancel included."""
        natural = max(t.end_ns for t in self.tasks) if self.tasks else self.start_ns
        if self.cancelled_ns is not None and self.cancelled_ns < natural:
            return self.cancelled_ns + self.cancel_delay_ns
        return natural

    def done(self, now: int) -> bool:
        return now >= self.end_ns()

    def cut_ns(self) -> int | None:
        """The moment output stopped because of a cancel, if it did."""
        natural = max(t.end_ns for t in self.tasks) if self.tasks else self.start_ns
        if self.cancelled_ns is not None and self.cancelled_ns < natural:
            return self.cancelled_ns
        return None

    def visible_entries(self, now: int) -> list[dict[str, Any]]:
        cut = self.cut_ns()
        return [
            e.body for e in self.entries if e.visible_ns <= now and (cut is None or e.ts_ns <= cut)
        ]

    def task_phase(self, task: SimTask, now: int) -> str:
        cut = self.cut_ns()
        if cut is not None and now >= cut and task.end_ns > cut:
            if now >= self.end_ns():
                return "cancelled"
            return "running" if task.start_ns <= cut else "pending"  # being stopped
        if now < task.start_ns:
            return "pending"
        if now < task.end_ns:
            return "running"
        return "succeeded" if task.exit_code == 0 else "failed"

    def to_json(self, now: int, *, typed: bool = False) -> dict[str, Any]:
        phases = [self.task_phase(t, now) for t in self.tasks]
        cut = self.cut_ns()
        started = now >= self.start_ns and (cut is None or cut > self.start_ns)
        done = self.done(now)
        completed = self._completed_condition(now, phases, done)
        conditions = [
            self._cond(
                "ResourcesAvailable",
                "CONDITION_SUCCEEDED" if started or done else "CONDITION_PENDING",
                self.start_ns if started else self.created_ns,
            ),
            self._cond(
                "Started",
                "CONDITION_SUCCEEDED" if started else "CONDITION_PENDING",
                self.start_ns if started else self.created_ns,
            ),
            completed,
        ]
        body: dict[str, Any] = {
            "name": self.name,
            "uid": self.uid,
            "generation": "1",
            "createTime": rfc3339(self.created_ns),
            "startTime": rfc3339(self.start_ns) if started else None,
            "completionTime": rfc3339(self.end_ns()) if done else None,
            "updateTime": rfc3339(min(now, self.end_ns()) if done else now),
            "launchStage": "GA",
            "job": self.job.name,
            "parallelism": self.task_count,
            "taskCount": self.task_count,
            "template": {
                "containers": [
                    {
                        "name": self.job.container,
                        "image": self.job.image,
                        "args": list(self.args),
                        "env": [{"name": k, "value": v} for k, v in self.env.items()],
                        "resources": {"limits": {"cpu": "1000m", "memory": "512Mi"}},
                    }
                ],
                "maxRetries": 0,
                "timeout": self.timeout,
                "serviceAccount": f"{self.job.project}-compute@developer.gserviceaccount.com",
                "executionEnvironment": "EXECUTION_ENVIRONMENT_GEN2",
            },
            "reconciling": not done,
            "conditions": conditions,
            "observedGeneration": "1",
            "runningCount": phases.count("running"),
            "succeededCount": phases.count("succeeded"),
            "failedCount": phases.count("failed"),
            "cancelledCount": phases.count("cancelled"),
            "logUri": self.log_uri(),
            "etag": f'"{self.uid[:8]}-{len(phases)}"',
        }
        body = _prune(body)
        body["template"] = _prune(body["template"])
        if typed:
            body = {"@type": EXECUTION_TYPE, **body}
        return body

    def _completed_condition(self, now: int, phases: list[str], done: bool) -> dict[str, Any]:
        cut = self.cut_ns()
        if cut is not None and now >= cut:
            if done:
                return self._cond(
                    "Completed",
                    "CONDITION_FAILED",
                    self.end_ns(),
                    executionReason="CANCELLED",
                    message="The execution was cancelled.",
                )
            return self._cond(
                "Completed",
                "CONDITION_RECONCILING",
                cut,
                executionReason="CANCELLING",
                message="The execution is being cancelled.",
            )
        if done:
            failed = [t for t in self.tasks if t.exit_code != 0]
            if failed:
                first = failed[0]
                return self._cond(
                    "Completed",
                    "CONDITION_FAILED",
                    self.end_ns(),
                    executionReason="NON_ZERO_EXIT_CODE",
                    message=f"Task {self.short_id}-task{first.index} failed with message: The"
                    f" container exited with an error (exit code {first.exit_code}).",
                    severity="ERROR",
                )
            return self._cond(
                "Completed",
                "CONDITION_SUCCEEDED",
                self.end_ns(),
                message="Execution completed successfully.",
            )
        state = "CONDITION_RECONCILING" if "running" in phases else "CONDITION_PENDING"
        return self._cond("Completed", state, self.created_ns)

    @staticmethod
    def _cond(kind: str, state: str, when: int, **extra: str) -> dict[str, Any]:
        return {"type": kind, "state": state, "lastTransitionTime": rfc3339(when), **extra}

    def task_json(self, task: SimTask, now: int) -> dict[str, Any]:
        phase = self.task_phase(task, now)
        finished = phase in ("succeeded", "failed", "cancelled")
        body: dict[str, Any] = {
            "name": f"{self.name}/tasks/{self.short_id}-task{task.index}",
            "uid": str(uuid.uuid5(uuid.UUID(self.uid), str(task.index))),
            "job": self.job.name,
            "execution": self.short_id,
            "index": task.index,
            "createTime": rfc3339(self.created_ns),
            "startTime": rfc3339(task.start_ns) if phase != "pending" else None,
            "completionTime": rfc3339(min(task.end_ns, self.end_ns())) if finished else None,
            "timeout": self.timeout,
            "maxRetries": 0,
            "logUri": self.log_uri(),
            "conditions": [
                self._cond(
                    "Completed",
                    {
                        "succeeded": "CONDITION_SUCCEEDED",
                        "failed": "CONDITION_FAILED",
                        "cancelled": "CONDITION_FAILED",
                    }.get(phase, "CONDITION_PENDING"),
                    task.end_ns if finished else self.created_ns,
                )
            ],
        }
        if phase in ("succeeded", "failed"):
            body["lastAttemptResult"] = _prune(
                {
                    "exitCode": task.exit_code,
                    "status": _prune(
                        {
                            "code": 0 if task.exit_code == 0 else 2,
                            "message": ""
                            if task.exit_code == 0
                            else f"The container exited with exit code {task.exit_code}.",
                        }
                    ),
                }
            )
        return _prune(body)

    def log_uri(self) -> str:
        return (
            f"https://console.cloud.google.com/logs/viewer?project={self.job.project}"
            f"&advancedFilter=resource.type%3D%22cloud_run_job%22%0Aresource.labels.job_name"
            f"%3D%22{self.job.name}%22%0Alabels.%22run.googleapis.com/execution_name%22%3D%22"
            f"{self.short_id}%22"
        )
