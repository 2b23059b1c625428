"""Runs and jobs as GitHub reports them (pure): parsing, egw states, order, matching.

Also the log lines a job's progress becomes.

Payloads are parsed *tolerantly* (tests/samples/github/NOTES.md, "Schema caveats"):
older ones lack ``run_attempt`` or ``display_title``, newer ones carry fields no
schema lists; only the ids egw keys on are required.

Reports arrive late, twice and out of order (google/go-github#2706, runs-on/runs-on#539).
A run report is applied only if `is_newer` than the last one applied: ordered by
``run_attempt``, then ``updated_at`` (second resolution), and on a tie the further
state wins (``completed`` over ``in_progress`` over queued), so a late
``in_progress`` never overrides ``completed``. ``neutral`` and ``skipped``
conclusions map to ``succeeded`` (see `CONCLUSIONS`).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Final

from egw.core.model import Observation, TaskState, format_time
from egw.errors import InvalidRequest
from egw.wire.github.values import as_int, as_str, parse_time


@dataclass(frozen=True, slots=True, kw_only=True)
class Run:
    id: int
    attempt: int = 1
    status: str | None = None
    conclusion: str | None = None
    name: str | None = None
    display_title: str | None = None
    event: str | None = None
    head_branch: str | None = None
    workflow_id: int | None = None
    path: str | None = None
    url: str | None = None
    html_url: str | None = None
    created_at: datetime | None = None
    updated_at: datetime | None = None

    def to_json(self) -> dict[str, Any]:
        """What egw read of the run (what a stored delivery keeps of it)."""
        return {
            "id": self.id,
            "run_attempt": self.attempt,
            "status": self.status,
            "conclusion": self.conclusion,
            "name": self.name,
            "display_title": self.display_title,
            "event": self.event,
            "head_branch": self.head_branch,
            "workflow_id": self.workflow_id,
            "path": self.path,
            "url": self.url,
            "html_url": self.html_url,
            "created_at": format_time(self.created_at),
            "updated_at": format_time(self.updated_at),
        }


@dataclass(frozen=True, slots=True, kw_only=True)
class Step:
    number: int
    name: str
    status: str | None = None
    conclusion: str | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class Job:
    id: int
    run_id: int
    run_attempt: int = 1
    name: str = ""
    status: str | None = None
    conclusion: str | None = None
    html_url: str | None = None
    runner_name: str | None = None
    started_at: datetime | None = None
    steps: tuple[Step, ...] = ()

    def to_json(self) -> dict[str, Any]:
        return {
            "job_id": self.id,
            "run_id": self.run_id,
            "run_attempt": self.run_attempt,
            "name": self.name,
            "status": self.status,
            "conclusion": self.conclusion,
            "html_url": self.html_url,
            "runner_name": self.runner_name,
            "started_at": format_time(self.started_at),
            "steps": [
                {"number": s.number, "name": s.name, "status": s.status, "conclusion": s.conclusion}
                for s in self.steps
            ],
        }


def parse_run(obj: Any) -> Run:
    """A ``workflow-run`` (REST) or ``workflow_run`` (webhook) object, tolerantly."""
    if not isinstance(obj, Mapping) or as_int(obj.get("id")) is None:
        raise InvalidRequest("workflow_run must be an object with an integer id")
    return Run(
        id=int(obj["id"]),
        attempt=as_int(obj.get("run_attempt")) or 1,
        status=as_str(obj.get("status")),
        conclusion=as_str(obj.get("conclusion")),
        name=as_str(obj.get("name")),
        display_title=as_str(obj.get("display_title")),
        event=as_str(obj.get("event")),
        head_branch=as_str(obj.get("head_branch")),
        workflow_id=as_int(obj.get("workflow_id")),
        path=as_str(obj.get("path")),
        url=as_str(obj.get("url")),
        html_url=as_str(obj.get("html_url")),
        created_at=parse_time(obj.get("created_at")),
        updated_at=parse_time(obj.get("updated_at")),
    )


def parse_job(obj: Any) -> Job:
    """A ``job`` (REST) or ``workflow_job`` (webhook) object, tolerantly."""
    if not isinstance(obj, Mapping) or as_int(obj.get("id")) is None:
        raise InvalidRequest("workflow_job must be an object with an integer id")
    run_id = as_int(obj.get("run_id"))
    if run_id is None:
        raise InvalidRequest("workflow_job must carry an integer run_id")
    steps = []
    raw_steps = obj.get("steps")
    for i, raw in enumerate(raw_steps if isinstance(raw_steps, list) else []):
        if isinstance(raw, Mapping):
            steps.append(
                Step(
                    number=as_int(raw.get("number")) or i + 1,
                    name=as_str(raw.get("name")) or f"step {i + 1}",
                    status=as_str(raw.get("status")),
                    conclusion=as_str(raw.get("conclusion")),
                )
            )
    return Job(
        id=int(obj["id"]),
        run_id=run_id,
        run_attempt=as_int(obj.get("run_attempt")) or 1,
        name=as_str(obj.get("name")) or "",
        status=as_str(obj.get("status")),
        conclusion=as_str(obj.get("conclusion")),
        html_url=as_str(obj.get("html_url")),
        runner_name=as_str(obj.get("runner_name")),
        started_at=parse_time(obj.get("started_at")),
        steps=tuple(steps),
    )


# --- states ---------------------------------------------------------------------------------

S = TaskState

#: run ``status`` values before completion (tests/samples/github/NOTES.md, "Status values")
_WAITING_STATUSES: Final = frozenset({"requested", "queued", "pending", "waiting"})
#: ``conclusion`` of a completed run -> egw state. ``neutral`` and ``skipped`` count as
#: success, as GitHub itself counts them for required checks ("A job that is skipped will
#: report its status as Success"); the conclusion stays visible as the reason.
CONCLUSIONS: Final[Mapping[str, TaskState]] = {
    "success": S.SUCCEEDED,
    "neutral": S.SUCCEEDED,
    "skipped": S.SUCCEEDED,
    "cancelled": S.CANCELLED,
    "failure": S.FAILED,
    "timed_out": S.FAILED,
    "startup_failure": S.FAILED,
    "action_required": S.FAILED,
    "stale": S.FAILED,
}


def run_state(status: str | None, conclusion: str | None) -> tuple[TaskState, str | None]:
    """Map a run's (or job's) ``status``/``conclusion`` to an egw state and reason.

    A conclusion decides (some payloads carry one with a non-``completed`` status,
    e.g. ``requested.with-conclusion``); an unknown conclusion fails the task with
    the conclusion as reason; ``completed`` without one is a failure too.
    """
    if conclusion:
        state = CONCLUSIONS.get(conclusion, S.FAILED)
        return state, (None if conclusion == "success" else conclusion)
    if status == "completed":
        return S.FAILED, "completed without a conclusion"
    if status == "in_progress":
        return S.RUNNING, None
    if status in _WAITING_STATUSES or status is None:
        return S.QUEUED, status
    return S.QUEUED, status


def run_observation(run: Run, *, source: str = "webhook") -> Observation:
    state, reason = run_state(run.status, run.conclusion)
    return Observation(
        state=state,
        reason=reason,
        at=run.updated_at,
        detail={
            "run_id": run.id,
            "run_attempt": run.attempt,
            "status": run.status,
            "conclusion": run.conclusion,
            "html_url": run.html_url,
            "via": source,
        },
    )


_RANK: Final = {"completed": 2, "in_progress": 1}
_EPOCH: Final = datetime(1970, 1, 1, tzinfo=UTC)


def order_key(run: Run) -> tuple[int, datetime, int]:
    """(attempt, updated_at, stage): larger is newer; a tie prefers the terminal state."""
    stage = 2 if run.conclusion else _RANK.get(run.status or "", 0)
    return (run.attempt, run.updated_at or _EPOCH, stage)


def is_newer(candidate: Run, current: Run | None) -> bool:
    """Whether ``candidate`` should be applied after ``current`` was."""
    return current is None or order_key(candidate) > order_key(current)


_JOB_RANK: Final = {"completed": 2, "in_progress": 1}


def job_is_newer(candidate: Job, current: Job | None) -> bool:
    """Whether a job report is news: by attempt, stage, then finished steps."""
    if current is None:
        return True

    def key(job: Job) -> tuple[int, int, int]:
        done = sum(1 for s in job.steps if s.status == "completed")
        stage = 2 if job.conclusion else _JOB_RANK.get(job.status or "", 0)
        return (job.run_attempt, stage, done)

    return key(candidate) > key(current)


def matches_correlation(run: Run, correlation: str) -> bool:
    """The workflow echoed the correlation id into its run-name (``display_title``)."""
    return any(correlation in (text or "") for text in (run.display_title, run.name))


def pick_run(
    runs: list[Run],
    *,
    correlation: str | None,
    ref: str,
    since: datetime,
    claimed: set[int] | frozenset[int] = frozenset(),
) -> Run | None:
    """The run a dispatch created, among listed runs.

    With a correlation input the run whose run-name carries the id (exact). Without
    one, a heuristic (GitHub specifies no matching: tests/samples/github/NOTES.md): the
    oldest unclaimed ``workflow_dispatch`` run on the ref created since the dispatch.
    """
    if correlation is not None:
        return next((r for r in runs if matches_correlation(r, correlation)), None)
    branch = re.sub(r"^refs/(heads|tags)/", "", ref)
    candidates = [
        r
        for r in runs
        if r.id not in claimed
        and r.event in (None, "workflow_dispatch")
        and r.head_branch in (None, branch)
        and (r.created_at is None or r.created_at >= since)
    ]
    candidates.sort(key=lambda r: (r.created_at or _EPOCH, r.id))
    return candidates[0] if candidates else None


def created_filter(since: datetime) -> str:
    """The ``created`` query of list-workflow-runs (GitHub search date syntax)."""
    return ">=" + since.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def job_progress_lines(
    previous: Job | None, job: Job, *, environment: str | None = None
) -> list[str]:
    """Progress lines for the task's log: the job's and its steps' changes since
    ``previous`` (GitHub has no live log stream; these stand in while it runs). A job
    ``waiting`` for an ``environment`` says that it waits for that environment's review."""
    lines: list[str] = []
    label = f"job {job.name or job.id}"
    if job.run_attempt > 1:
        label += f" (attempt {job.run_attempt})"
    if previous is None or (previous.status, previous.conclusion) != (job.status, job.conclusion):
        text = f"[github] {label}: {job.status or 'unknown'}"
        if job.conclusion:
            text += f" ({job.conclusion})"
        elif job.status == "waiting" and environment:
            text += f" (environment {environment} needs an approval)"
        lines.append(text)
    before = {s.number: (s.status, s.conclusion) for s in (previous.steps if previous else ())}
    for step in job.steps:
        if step.status in (None, "queued", "pending", "waiting"):
            continue
        if before.get(step.number) == (step.status, step.conclusion):
            continue
        text = f"[github]   step {step.number} {step.name}: {step.status}"
        if step.conclusion:
            text += f" ({step.conclusion})"
        lines.append(text)
    return lines


def text_chunks(text: str, size: int = 16384) -> list[bytes]:
    """UTF-8 chunks that never split a character (for the log store)."""
    return [text[i : i + size].encode() for i in range(0, len(text), size)]
