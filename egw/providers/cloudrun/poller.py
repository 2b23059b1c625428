"""`Poller`: one polling loop per job, reading its executions' states in pages, reporting changes.

Cloud Run pushes nothing. A job's unfinished executions that egw watches are read together:
``GET v2/{job}/executions`` (ListExecutions: ``pageSize``, ``pageToken``, ``showDeleted``, and
nothing else; its answer holds full Execution resources, conditions, counts and times, the same as
``executions.get``: the discovery document, run.projects.locations.jobs.executions.list and
GoogleCloudRunV2ListExecutionsResponse, in tests/samples/cloudrun/run-v2.discovery-subset.json
and run-v2-jobs.md; the simulator's ``list_order`` cites the proto's ListExecutionsRequest,
which names no order either). The list has no filter, and no
source documents its order, so a round reads pages until it has seen every execution it wants,
the list ends, or it has spent the pages those executions fill plus `_SPARE_PAGES`; whatever the
list did not show (deleted, beyond the pages read, or shifted between two pages) is read alone
(``executions.get``; a 404 means gone, which fails the task). A job with a single unfinished
execution is read alone too: one page would cost more than one get. (The parent ``jobs/-``
would list every job of a region at once, per the discovery document's ``parent``; a per-job
list keeps a round's pages to the executions egw watches.)

The interval is the job's, adaptive (``poll_min_s`` after a change or a new execution, growing by
half up to ``poll_max_s``) with jitter; `poll_soon` (a cancel) reads at once. Every state an
execution is seen in, in the order the reads were made, is compared with the last one reported:
only a change is reported, with the delivery id ``<execution>:<state>`` that makes a report after
a restart a no-op. A failed execution's exit code is read from its tasks.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any

import structlog

from egw.background import BackgroundTasks, cancel_and_wait
from egw.config import CloudRunConfig
from egw.core.model import Observation, TaskState
from egw.errors import CircuitOpen, ProviderError
from egw.providers.base import SinkSlot
from egw.providers.cloudrun.api import NAME, CloudRunAPI
from egw.providers.cloudrun.watch import Watch, jitter, nap
from egw.wire import cloudrun as wire

log = structlog.get_logger("egw.providers.cloudrun")

#: pages a round may read beyond those its executions would fill if they came first
_SPARE_PAGES = 2
#: a job is listed once it has this many unfinished executions watched (else each is read alone)
_LIST_FROM = 2


@dataclass(eq=False, slots=True)
class _Job:
    """One job's unfinished executions, by execution name, and its loop's schedule (monotonic)."""

    name: str
    watches: dict[str, Watch] = field(default_factory=dict)
    interval: float = 0.0
    next_round: float = math.inf
    #: the earliest time a new execution or a cancel asked for a round
    asked: float = math.inf
    nudge: asyncio.Event = field(default_factory=asyncio.Event)
    loop: asyncio.Task[None] | None = None


class Poller:
    """Reads executions: once (`observation`) or, by job, until they end (`watch`)."""

    #: executions per ``executions.list`` page (tests make it smaller)
    page_size = 100

    def __init__(
        self, cfg: CloudRunConfig, api: CloudRunAPI, sink: SinkSlot, tasks: BackgroundTasks
    ) -> None:
        self._cfg = cfg
        self._api = api
        self._sink = sink
        self._tasks = tasks
        self._jobs: dict[str, _Job] = {}

    async def observation(self, execution: Mapping[str, Any]) -> Observation:
        """The execution's state; a failed one's exit code comes from its tasks."""
        obs = wire.execution_observation(execution)
        if obs.state is TaskState.FAILED:  # the exit code is on the failed task
            try:
                tasks = await self._api.call(
                    "GET",
                    f"{self._api.execution_url(str(execution['name']))}/tasks",
                    operation="tasks.list",
                )
                obs = wire.execution_observation(execution, tasks.get("tasks") or [])
            except ProviderError as exc:
                log.warning("cloud_run_tasks_unread", error=str(exc))
        return obs

    def watch(self, watch: Watch, *, delay: bool) -> None:
        """Poll the execution with its job's others until it ends (``delay``: it was just read,
        so its first poll waits ``poll_min_s``)."""
        name = watch.ref.job_name
        job = self._jobs.get(name)
        if job is None:
            job = self._jobs[name] = _Job(name, interval=self._cfg.poll_min_s)
            job.loop = self._tasks.spawn(self._run(job), name=f"cloud_run-poll-{watch.ref.job}")
        job.watches[watch.ref.name] = watch
        job.interval = self._cfg.poll_min_s
        self._ask(job, jitter(self._cfg.poll_min_s) if delay else 0.0)

    def poll_soon(self, watch: Watch) -> None:
        """Read the execution (and its job's others) now."""
        job = self._jobs.get(watch.ref.job_name)
        if job is not None and watch.ref.name in job.watches:
            self._ask(job, 0.0)

    def close(self) -> None:
        """End every job's loop: at its next step, even if a cancel reached it just as it was
        woken (``asyncio.wait_for`` then returns instead of raising)."""
        for job in self._jobs.values():
            job.watches.clear()
            job.nudge.set()

    async def stop(self) -> None:
        """End every job's loop now, a round in flight too, and forget the jobs (the lease
        is lost: the next holder reads every execution again, and a state it reports that
        was reported here already is a repeated delivery id, a no-op)."""
        jobs = list(self._jobs.values())
        self._jobs.clear()
        for job in jobs:
            job.watches.clear()
            await cancel_and_wait(job.loop)

    @staticmethod
    def _ask(job: _Job, after: float) -> None:
        job.asked = min(job.asked, time.monotonic() + after)
        job.nudge.set()

    async def _run(self, job: _Job) -> None:
        try:
            while job.watches:
                wait = min(job.next_round, job.asked) - time.monotonic()
                if wait > 0:
                    await nap(wait, job.nudge)
                    continue  # asked again in the meantime: look at the schedule again
                job.asked = math.inf
                job.interval = await self._round_interval(job)
                job.next_round = time.monotonic() + jitter(job.interval)
        finally:
            if self._jobs.get(job.name) is job:
                del self._jobs[job.name]

    async def _round_interval(self, job: _Job) -> float:
        """One round; the interval until the next."""
        try:
            changed = await self._round(job)
        except ProviderError as exc:  # retries exhausted, or a final error (403...)
            log.warning("cloud_run_poll_failed", job=job.name, error=exc.message)
            if isinstance(exc, CircuitOpen):  # sleep until the breaker lets a probe by
                return max(self._cfg.poll_max_s, exc.retry_after_s or 0.0)
            return self._cfg.poll_max_s
        except Exception:  # a bug must not end the watch silently
            log.exception("cloud_run_poll_crashed", job=job.name)
            return self._cfg.poll_max_s
        if changed:
            return self._cfg.poll_min_s
        return min(job.interval * 1.5, self._cfg.poll_max_s)

    async def _round(self, job: _Job) -> bool:
        """Read every unfinished execution of the job once: listed, then the rest alone."""
        changed = False
        seen: set[str] = set()
        for name in [n for n, w in job.watches.items() if w.retired]:
            del job.watches[name]  # a replaced attempt's execution (on_stuck: resubmit)
        wanted = set(job.watches)  # one that joins during the round was just read by its submit
        if len(wanted) >= _LIST_FROM:
            changed = await self._list(job, wanted, seen)
        for name in wanted - seen:
            watch = job.watches.get(name)
            if watch is not None:
                changed = await self._get(job, watch) or changed
        return changed

    async def _list(self, job: _Job, wanted: set[str], seen: set[str]) -> bool:
        """Read the job's executions page by page until every wanted one has been seen; each
        sighting is applied in the order read (an execution may show on two pages if the list
        moves between them: the later page is the newer read)."""
        pages = math.ceil(len(wanted) / self.page_size) + _SPARE_PAGES
        changed = False
        token: str | None = None
        for _ in range(pages):
            params = {"pageSize": str(self.page_size), **({"pageToken": token} if token else {})}
            try:
                page = await self._api.call(
                    "GET",
                    f"{self._api.run_url}/v2/{job.name}/executions",
                    params=params,
                    operation="executions.list",
                )
            except ProviderError as exc:
                if exc.upstream_status != 404:
                    raise
                return changed  # the job is gone: each execution is read alone
            for execution in page.get("executions") or ():
                name = execution.get("name")
                watch = job.watches.get(name) if isinstance(name, str) else None
                if watch is not None:
                    seen.add(watch.ref.name)
                    changed = await self._apply(job, watch, execution) or changed
            token = page.get("nextPageToken")
            if not token or wanted <= seen:
                break
        return changed

    async def _get(self, job: _Job, watch: Watch) -> bool:
        """Read one execution (a 404: it is gone, and the task fails); True if it changed."""
        try:
            execution = await self._api.call(
                "GET", self._api.execution_url(watch.ref.name), operation="executions.get"
            )
        except ProviderError as exc:
            if exc.upstream_status != 404:
                raise
            if watch.report:  # deleted under us: nothing more will come
                gone = Observation(
                    state=TaskState.FAILED,
                    reason=f"execution is gone: {exc.message}",
                    attempt=watch.attempt,
                )
                await self._sink().observe(
                    watch.task_id, gone, source=NAME, delivery_id=f"{watch.ref.name}:gone"
                )
            self._end(job, watch)
            return True
        return await self._apply(job, watch, execution)

    async def _apply(self, job: _Job, watch: Watch, execution: Mapping[str, Any]) -> bool:
        """Take one read of the execution: report a change of state; True if it changed."""
        watch.task_count = max(1, int(execution.get("taskCount") or 1))
        created = execution.get("createTime")
        watch.created = created if isinstance(created, str) else watch.created
        watch.seen.set()
        state = wire.execution_observation(execution).state
        changed = state != watch.last
        if changed:
            # which attempt it is about: a read in flight when the attempt was replaced
            # (``retire``) is recorded by egw, never applied to the new attempt
            obs = replace(await self.observation(execution), attempt=watch.attempt)
            if watch.report:
                await self._sink().observe(
                    watch.task_id, obs, source=NAME, delivery_id=f"{watch.ref.name}:{obs.state}"
                )
            watch.last = obs.state
        if state.terminal:
            self._end(job, watch)
        return changed

    @staticmethod
    def _end(job: _Job, watch: Watch) -> None:
        job.watches.pop(watch.ref.name, None)
        watch.ended()
