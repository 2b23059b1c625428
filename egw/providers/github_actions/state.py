"""What the GitHub provider follows: tracked runs, pending dispatches, per-task locks.

The reconciler is woken whenever a run or a pending dispatch is added or
rescheduled."""

from __future__ import annotations

import asyncio
import random
import time
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from egw.config import GitHubActionsConfig
from egw.core.model import Task
from egw.wire import github as gh

#: runs are listed from this long before the dispatch (clock skew between egw and GitHub)
CLOCK_SKEW = timedelta(seconds=120)


@dataclass
class Tracked:
    """A run egw follows: what was applied last, and when to poll it next."""

    task_id: str
    spec: gh.GitHubSpec
    run_id: int
    interval: float
    next_poll: float
    last: gh.Run | None = None
    #: the latest run attempt seen (a re-run is attempt + 1)
    attempt: int = 1
    etag: str | None = None
    jobs: dict[int, gh.Job] = field(default_factory=dict)
    fetched: set[int] = field(default_factory=set)
    #: jobs whose log (or its "not available" line) is in the store: kept in the task's
    #: ``upstream.logged_jobs``, so a restart or another replica never writes one again
    logged: set[int] = field(default_factory=set)

    def job_marks(self) -> dict[str, list[Any]]:
        """What the task's log says of each job so far, kept in ``upstream.job_marks`` with
        each progress line: a restart or the next holder writes only what changed since."""
        return {
            str(job.id): [
                job.run_attempt,
                job.status,
                job.conclusion,
                [[s.number, s.name, s.status, s.conclusion] for s in job.steps],
            ]
            for job in self.jobs.values()
        }

    finish_tries: int = 0
    completed: bool = False
    logs_done: bool = False


@dataclass
class Pending:
    """A dispatched run not yet identified (no run details)."""

    task_id: str
    spec: gh.GitHubSpec
    correlation: str | None
    since: datetime
    deadline: float
    next_poll: float
    cancelled: bool = False


class Follow:
    """The runs and pending dispatches the provider's parts share (one event loop: no lock
    guards these maps; a task's lock orders the reports applied to it)."""

    def __init__(self, cfg: GitHubActionsConfig) -> None:
        self.cfg = cfg
        self.runs: dict[int, Tracked] = {}
        #: runs whose logs this process completed (late deliveries must not reopen them)
        self.done: set[int] = set()
        self.pending: dict[str, Pending] = {}
        #: another replica holds the reconciler's lease (PostgreSQL): follow nothing, the
        #: holder loads what this replica dispatched and applies the deliveries it stored
        self.standby = False
        #: other replicas dispatch too: a delivery for a run not known here may be theirs
        self.shared = False
        #: dispatches waiting for GitHub's answer (a delivery may beat it: it is held)
        self.dispatching = 0
        self.wake = asyncio.Event()
        self._locks: dict[str, asyncio.Lock] = {}

    def lock(self, task_id: str) -> asyncio.Lock:
        return self._locks.setdefault(task_id, asyncio.Lock())

    def track(
        self,
        task_id: str,
        spec: gh.GitHubSpec,
        run_id: int,
        *,
        terminal: bool = False,
        logs_done: bool = False,
    ) -> Tracked:
        """Follow a run (once: a second call returns what is tracked already)."""
        tracked = self.runs.get(run_id)
        if tracked is None:
            tracked = Tracked(
                task_id,
                spec,
                run_id,
                interval=self.cfg.poll_min_s,
                next_poll=time.monotonic() + self.cfg.poll_min_s,
                completed=terminal,
                logs_done=logs_done,
            )
            self.runs[run_id] = tracked
            self.wake.set()
        return tracked

    def track_stored(self, task: Task, run_id: int) -> Tracked:
        """Follow the run of a task read from the store (a restart, a delivery for a run
        not followed here, the lease's holder picking up another replica's dispatch)."""
        tracked = self.track(
            task.id,
            gh.GitHubSpec.from_json(task.spec),
            run_id,
            terminal=task.status.terminal,
            logs_done=task.logs_complete or run_id in self.done,
        )
        tracked.attempt = int(task.upstream.get("run_attempt") or 1)
        logged = task.upstream.get("logged_jobs")
        if isinstance(logged, list):
            tracked.logged.update(j for j in logged if isinstance(j, int))
            tracked.fetched.update(tracked.logged)
        marks = task.upstream.get("job_marks")
        for key, mark in marks.items() if isinstance(marks, dict) else ():
            job = _job_from_mark(key, run_id, mark)
            if job is not None:
                tracked.jobs.setdefault(job.id, job)
        return tracked

    def correlate(self, task_id: str, spec: gh.GitHubSpec, corr: str, since: datetime) -> None:
        """Look for a dispatched run by listing runs (no run details came back)."""
        if task_id not in self.pending:
            self.pending[task_id] = Pending(
                task_id,
                spec,
                corr if spec.correlation_input else None,
                since - CLOCK_SKEW,
                deadline=time.monotonic() + self.cfg.correlation_timeout_s,
                next_poll=time.monotonic() + self.cfg.poll_min_s,
            )
            self.wake.set()

    def schedule(self, tracked: Tracked, delay_s: float) -> None:
        # +-10% jitter, so runs started together are not polled together
        tracked.next_poll = time.monotonic() + delay_s * random.uniform(0.9, 1.1)
        self.wake.set()

    def followed(self, task_id: str, upstream_id: str | None) -> bool:
        """Whether the task's run (or its dispatch still looking for one) is followed here,
        or was followed to its end."""
        if upstream_id is None or not upstream_id.isdigit():
            return task_id in self.pending
        return int(upstream_id) in self.runs or int(upstream_id) in self.done

    def clear(self) -> None:
        """Another replica leads now: forget every run and dispatch (it loads them)."""
        self.runs.clear()
        self.pending.clear()
        self._locks.clear()

    def forget(self, tracked: Tracked) -> None:
        """The run's logs are complete: stop following it, and never reopen it."""
        self.runs.pop(tracked.run_id, None)
        self.done.add(tracked.run_id)

    def drop_lock(self, task_id: str) -> None:
        self._locks.pop(task_id, None)


def _job_from_mark(key: str, run_id: int, mark: Any) -> gh.Job | None:
    """A job as `Tracked.job_marks` kept it (None: not one egw wrote)."""
    try:
        attempt, status, conclusion, marked = mark
        steps = tuple(
            gh.Step(number=n, name=name, status=st, conclusion=c) for n, name, st, c in marked
        )
        return gh.Job(
            id=int(key),
            run_id=run_id,
            run_attempt=int(attempt),
            status=status,
            conclusion=conclusion,
            steps=steps,
        )
    except (TypeError, ValueError):
        return None
