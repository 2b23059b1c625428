"""Workflow runs of the GitHub simulator: scripts, simulated time, and the run lifecycle.

A run goes ``queued`` -> ``in_progress`` -> ``completed`` on the simulated clock;
its jobs run one after another, each step for its scripted duration. A normal
cancel stops every job except those scripted ``always`` (``if: always()`` jobs
keep running, actions/runner#1846); a force-cancel stops them too.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from egw.testing.github.shapes import (
    API,
    WEB,
    SimRepo,
    SimWorkflow,
    head_commit,
    iso,
    node_id,
    repository_lite,
    user,
)

ACTOR = ("octocat", 1)


class SimClock:
    """Simulated time: ``time_scale`` real seconds per simulated second (0.01 in tests)."""

    def __init__(self, time_scale: float = 1.0) -> None:
        if time_scale <= 0:
            raise ValueError("time_scale must be greater than 0")
        self.time_scale = time_scale
        self._t0 = time.monotonic()
        self._base = datetime.now(UTC).replace(microsecond=0)

    def now(self) -> datetime:
        return self._base + timedelta(seconds=(time.monotonic() - self._t0) / self.time_scale)

    def real(self, sim_s: float) -> float:
        return max(0.0, sim_s * self.time_scale)

    async def sleep(self, sim_s: float) -> None:
        await asyncio.sleep(self.real(sim_s))


@dataclass
class StepScript:
    name: str
    duration_s: float = 1.0
    #: success, failure, skipped or cancelled
    conclusion: str = "success"
    #: the step's log text (lines)
    output: str = ""


@dataclass
class JobScript:
    name: str = "run"
    steps: list[StepScript] = field(default_factory=list)
    #: ``if: always()``: a normal cancel does not stop it, a force-cancel does
    always: bool = False
    #: simulated seconds after the job completes before its log can be downloaded (the
    #: runner uploads it last); until then the download answers 404 ``BlobNotFound``
    log_delay_s: float = 0.0
    #: the job targets this environment, whose protection rules need an approval: it is
    #: queued ``waiting`` with a ``deployment``, then delivered ``waiting`` (contracts:
    #: ``workflow_job/queued.with-deployment.payload.json``, ``waiting.payload.json``) and
    #: runs once approved (`GitHubSimulator.approve`, or after ``approval_s``)
    environment: str | None = None
    approval_s: float | None = None


@dataclass
class RunScript:
    """What a dispatched run does. ``jobs=None`` uses the default job (prints the inputs)."""

    jobs: list[JobScript] | None = None
    #: simulated seconds in ``queued`` before the first job starts
    queue_s: float = 0.5
    #: force the run's conclusion (e.g. ``startup_failure``, ``timed_out``, ``neutral``)
    conclusion: str | None = None
    #: answer cancel/force-cancel with 409 and this message (runs stuck in queued, GH13)
    cancel_conflict: str | None = None
    #: the run needs a maintainer's approval before it may run: it is requested already
    #: ``completed`` with conclusion ``action_required`` and nothing more happens
    #: (contracts: ``workflow_run/requested.with-conclusion.payload.json``)
    action_required: bool = False
    #: simulated seconds in ``pending`` (another run of its concurrency group holds it)
    #: before ``queued``; the ``requested`` delivery carries ``pending`` (GitHub's own
    #: schema lists it for requested; no example shows one: a guess)
    pending_s: float = 0.0


def runner_stamp(when: datetime) -> str:
    """A runner log line's timestamp: .NET's round-trip ``"O"`` format of UTC, seven
    fractional digits and ``Z`` (actions/runner ``src/Runner.Common/Logging.cs``,
    ``DateTime.UtcNow.ToString("O")``); Python keeps microseconds, the 7th digit is 0."""
    return when.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%f") + "0Z"


def default_jobs(workflow_name: str, inputs: dict[str, str]) -> list[JobScript]:
    args = " ".join(f"{k}={v}" for k, v in inputs.items()) or workflow_name
    return [
        JobScript(
            name="run",
            steps=[
                StepScript("Set up job", 0.5, output="Current runner version: '2.330.0'"),
                StepScript(f"Run {workflow_name}", 1.0, output=args),
                StepScript("Complete job", 0.2, output="Cleaning up orphan processes"),
            ],
        )
    ]


@dataclass
class SimStep:
    number: int
    script: StepScript
    status: str = "queued"
    conclusion: str | None = None
    started_at: datetime | None = None
    completed_at: datetime | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.script.name,
            "status": self.status,
            "conclusion": self.conclusion,
            "number": self.number,
            "started_at": iso(self.started_at),
            "completed_at": iso(self.completed_at),
        }


@dataclass
class SimJob:
    id: int
    run: SimRun
    attempt: int
    script: JobScript
    created_at: datetime
    status: str = "queued"
    conclusion: str | None = None
    started_at: datetime | None = None
    completed_at: datetime | None = None
    steps: list[SimStep] = field(default_factory=list)
    log: list[str] = field(default_factory=list)
    #: the id of the deployment to ``script.environment``, once created
    deployment_id: int | None = None

    def log_ready(self, now: datetime) -> bool:
        """Whether the runner's upload of the log has landed (never before completion)."""
        if self.status != "completed" or self.completed_at is None:
            return False
        return now >= self.completed_at + timedelta(seconds=self.script.log_delay_s)

    def to_json(self) -> dict[str, Any]:
        run, repo = self.run, self.run.workflow.repo.full_name
        started = self.status != "queued"
        return {
            "id": self.id,
            "run_id": run.id,
            "run_url": f"{API}/repos/{repo}/actions/runs/{run.id}",
            "run_attempt": self.attempt,
            "node_id": node_id("CheckRun", self.id),
            "head_sha": run.head_sha,
            "url": f"{API}/repos/{repo}/actions/jobs/{self.id}",
            "html_url": f"{WEB}/{repo}/actions/runs/{run.id}/job/{self.id}",
            "status": self.status,
            "conclusion": self.conclusion,
            "created_at": iso(self.created_at),
            "started_at": iso(self.started_at or self.created_at),
            "completed_at": iso(self.completed_at),
            "name": self.script.name,
            "steps": [s.to_json() for s in self.steps],
            "check_run_url": f"{API}/repos/{repo}/check-runs/{self.id}",
            "labels": ["ubuntu-latest"],
            "runner_id": 1 if started else None,
            "runner_name": "GitHub Actions 1" if started else None,
            "runner_group_id": 1 if started else None,
            "runner_group_name": "GitHub Actions" if started else None,
            "workflow_name": run.workflow.name,
            "head_branch": run.ref,
        }

    def log_text(self) -> str:
        """The log as the runner writes it: a byte order mark first (its ``StreamWriter``
        uses ``Encoding.UTF8``, actions/runner ``src/Runner.Common/Logging.cs``)."""
        return "\ufeff" + "".join(line + "\n" for line in self.log)


@dataclass
class SimRun:
    id: int
    workflow: SimWorkflow
    run_number: int
    ref: str
    inputs: dict[str, str]
    display_title: str
    script: RunScript
    created_at: datetime
    head_sha: str
    attempt: int = 1
    status: str = "queued"
    conclusion: str | None = None
    updated_at: datetime | None = None
    run_started_at: datetime | None = None
    #: False until GitHub has created it (a 204 dispatch creates runs asynchronously)
    visible: bool = False
    jobs: list[SimJob] = field(default_factory=list)
    old_jobs: list[SimJob] = field(default_factory=list)
    cancel_requested: bool = False
    force: bool = False
    cancel_event: asyncio.Event = field(default_factory=asyncio.Event)
    force_event: asyncio.Event = field(default_factory=asyncio.Event)
    #: set by `GitHubSimulator.approve`: the environments waiting for review are approved
    approved: asyncio.Event = field(default_factory=asyncio.Event)

    @property
    def repo(self) -> SimRepo:
        return self.workflow.repo

    def stopping(self, job: SimJob) -> bool:
        return self.force or (self.cancel_requested and not job.script.always)

    def to_json(self) -> dict[str, Any]:
        repo = self.repo.full_name
        base = f"{API}/repos/{repo}/actions/runs/{self.id}"
        lite = repository_lite(self.repo)
        return {
            "id": self.id,
            "name": self.workflow.name,
            "node_id": node_id("WorkflowRun", self.id),
            "check_suite_id": self.id + 1000,
            "check_suite_node_id": node_id("CheckSuite", self.id + 1000),
            "head_branch": self.ref,
            "head_sha": self.head_sha,
            "path": self.workflow.path,
            "run_number": self.run_number,
            "run_attempt": self.attempt,
            "event": "workflow_dispatch",
            "display_title": self.display_title,
            "status": self.status,
            "conclusion": self.conclusion,
            "workflow_id": self.workflow.id,
            "url": base,
            "html_url": f"{WEB}/{repo}/actions/runs/{self.id}",
            "pull_requests": [],
            "created_at": iso(self.created_at),
            "updated_at": iso(self.updated_at or self.created_at),
            "actor": user(*ACTOR),
            "triggering_actor": user(*ACTOR),
            "run_started_at": iso(self.run_started_at or self.created_at),
            "jobs_url": f"{base}/jobs",
            "logs_url": f"{base}/logs",
            "check_suite_url": f"{API}/repos/{repo}/check-suites/{self.id + 1000}",
            "artifacts_url": f"{base}/artifacts",
            "cancel_url": f"{base}/cancel",
            "rerun_url": f"{base}/rerun",
            "previous_attempt_url": (
                f"{base}/attempts/{self.attempt - 1}" if self.attempt > 1 else None
            ),
            "workflow_url": f"{API}/repos/{repo}/actions/workflows/{self.workflow.id}",
            "head_commit": head_commit(self.head_sha, "Simulated commit", self.created_at),
            "repository": lite,
            "head_repository": lite,
        }


Emit = Callable[[str, str, Any], Awaitable[None]]


async def drive(run: SimRun, clock: SimClock, emit: Emit, changed: Callable[[], None]) -> None:
    """Play one attempt of ``run`` to its end, emitting webhook events on the way.

    ``emit(event, action, obj)`` sends a workflow_run (obj = run) or workflow_job
    (obj = job) delivery; ``changed()`` wakes anyone waiting on the simulator.
    """

    def touch() -> datetime:
        run.updated_at = clock.now()
        changed()
        return run.updated_at

    async def wait(job: SimJob, sim_s: float) -> bool:
        """Sleep ``sim_s``; True if the job must stop first."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + clock.real(sim_s)
        while True:
            if run.stopping(job):
                return True
            remaining = deadline - loop.time()
            if remaining <= 0:
                return False
            event = run.force_event if run.cancel_requested else run.cancel_event
            try:
                async with asyncio.timeout(remaining):  # not wait_for: it may eat a cancel
                    await event.wait()
            except TimeoutError:
                return False

    async def approval(job: SimJob) -> bool:
        """Wait for the environment's approval; True if the job must stop first."""
        run.status = "waiting"
        touch()
        await emit("workflow_job", "waiting", job)
        loop = asyncio.get_running_loop()
        after = job.script.approval_s
        deadline = None if after is None else loop.time() + clock.real(after)
        while not run.approved.is_set():
            if run.stopping(job):
                return True
            left = None if deadline is None else deadline - loop.time()
            if left is not None and left <= 0:
                return False
            stop = run.force_event if run.cancel_requested else run.cancel_event
            waiters = [asyncio.ensure_future(e.wait()) for e in (run.approved, stop)]
            try:
                await asyncio.wait(waiters, timeout=left, return_when=asyncio.FIRST_COMPLETED)
            finally:
                for waiter in waiters:
                    waiter.cancel()
        return False

    for job in run.jobs:
        if job.script.environment:
            job.status = "waiting"
        await emit("workflow_job", "queued", job)
    probe = run.jobs[0] if run.jobs else None
    if probe is not None:
        await wait(probe, run.script.queue_s)
    else:
        await clock.sleep(run.script.queue_s)
    started = False
    for job in run.jobs:
        if job.script.environment and not run.stopping(job):
            await approval(job)  # a cancel meanwhile completes it as cancelled, below
        if run.stopping(job):
            job.status, job.conclusion = "completed", "cancelled"
            job.completed_at = touch()
            await emit("workflow_job", "completed", job)
            continue
        if started and run.status == "waiting":
            run.status = "in_progress"  # no second workflow_run in_progress (a guess)
        if not started:
            started = True
            run.status = "in_progress"
            run.run_started_at = touch()
            await emit("workflow_run", "in_progress", run)
        now = touch()
        job.status, job.started_at = "in_progress", now
        job.steps = [SimStep(i + 1, s) for i, s in enumerate(job.script.steps)]
        if job.steps:
            job.steps[0].status, job.steps[0].started_at = "in_progress", now
        await emit("workflow_job", "in_progress", job)
        failed = stopped = False
        for step in job.steps:
            if failed or stopped:
                step.status, step.conclusion = "completed", "skipped"
                step.started_at = step.completed_at = touch()
                continue
            step.status = "in_progress"
            step.started_at = step.started_at or touch()
            stamp = runner_stamp(step.started_at)
            job.log.append(f"{stamp} ##[group]{step.script.name}")
            for line in step.script.output.splitlines():
                job.log.append(f"{stamp} {line}")
            if await wait(job, step.script.duration_s):
                stopped = True
                step.conclusion = "cancelled"
                job.log.append(f"{runner_stamp(clock.now())} ##[error]The operation was canceled.")
            else:
                step.conclusion = step.script.conclusion
                if step.conclusion == "failure":
                    failed = True
                    job.log.append(
                        f"{runner_stamp(clock.now())} ##[error]Process completed with exit code 1."
                    )
            job.log.append(f"{runner_stamp(clock.now())} ##[endgroup]")
            step.status, step.completed_at = "completed", touch()
        job.status = "completed"
        job.conclusion = "cancelled" if stopped else ("failure" if failed else "success")
        job.completed_at = touch()
        await emit("workflow_job", "completed", job)
    conclusions = {j.conclusion for j in run.jobs}
    if run.cancel_requested:
        run.conclusion = "cancelled"
    elif run.script.conclusion:
        run.conclusion = run.script.conclusion
    else:
        run.conclusion = "failure" if "failure" in conclusions else "success"
    run.status = "completed"
    touch()
    await emit("workflow_run", "completed", run)
