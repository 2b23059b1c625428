"""A tracked task's state, recomputed from everything known about its job and reported to egw.

State is recomputed with `wire.job_observation` and reported only when it moves;
``queued`` (and ``running``, when the work did start) are reported first if egw has not
seen them, so histories are complete even when Nomad was faster than egw. Two stops egw
makes on its own: a placement failure is final for egw, so the job is stopped before a
blocked evaluation can place it later; a task egw ended while Nomad still runs it
(cancelled during registration) has its job stopped too.
"""

from __future__ import annotations

import asyncio

import structlog

from egw.background import BackgroundTasks
from egw.core.model import Observation, TaskState
from egw.core.states import can_move
from egw.errors import ProviderError
from egw.providers.base import SinkSlot
from egw.providers.nomad.client import SOURCE, JobClient
from egw.providers.nomad.logs import LogFollower
from egw.providers.nomad.tracked import Registry, Tracked

log = structlog.get_logger("egw.providers.nomad")

S = TaskState
_RECONCILE_CONCURRENCY = 8


class JobStates:
    """Turns what is known of each tracked job into observations, log followers and stops."""

    def __init__(
        self,
        client: JobClient,
        sink: SinkSlot,
        registry: Registry,
        logs: LogFollower,
        background: BackgroundTasks,
    ) -> None:
        self._client = client
        self._sink = sink
        self._registry = registry
        self._logs = logs
        self._background = background

    async def evaluate(self, tracked: Tracked) -> None:
        """Recompute the task's state, start log followers, report a move."""
        async with tracked.lock:
            if tracked.logs.completed or tracked.registering:
                return
            if self._registry.get(tracked.task_id) is not tracked:
                return  # no longer followed here (another replica's now, or replaced)
            await self._logs.sync(tracked)
            obs = tracked.observation()
            await self._emit(tracked, obs)
            # a blocked evaluation would place the job later, unseen; and a task egw ended
            # itself (cancelled while being registered) must not go on running: stop the job
            failed_placement = obs.detail.get("placement_failed") and tracked.status.terminal
            ended_by_egw = (
                tracked.status.terminal
                and not obs.state.terminal
                and not tracked.cancel_requested
                and not tracked.job.stopped
            )
            if (failed_placement or ended_by_egw) and not tracked.stop_sent:
                tracked.stop_sent = True
                _ = self._background.spawn(self._stop_job(tracked), name="nomad_stop_job")
            if tracked.status.terminal:
                self._logs.start_grace(tracked)
        await self._logs.maybe_complete(tracked)

    async def reconcile(self, tracked: Tracked) -> None:
        """Read the job now (no stream to tell), then evaluate it."""
        try:
            await self._client.refresh(tracked)
        except ProviderError as exc:
            log.warning("nomad_reconcile_failed", task_id=tracked.task_id, error=str(exc))
            return
        await self.evaluate(tracked)

    async def reconcile_namespace(self, ns: str) -> None:
        """Reconcile every task of ``ns``: from one listing of the namespace's jobs and
        allocations per region (a restart, a gap in the stream), each task on its own only if
        the listing fails or its evaluation must be read; a few at a time."""
        gate = asyncio.Semaphore(_RECONCILE_CONCURRENCY)

        async def one(tracked: Tracked) -> None:
            async with gate:
                await self.reconcile(tracked)

        async def evaluation(tracked: Tracked) -> None:
            async with gate:
                try:
                    await self._client.read_eval(tracked)
                except ProviderError as exc:
                    log.warning("nomad_reconcile_failed", task_id=tracked.task_id, error=str(exc))
                    return
            await self.evaluate(tracked)

        tracked = self._registry.in_namespace(ns)
        alone: list[Tracked] = []
        for region in {t.region for t in tracked}:
            here = [t for t in tracked if t.region == region]
            try:
                jobs, allocs = await self._client.list_namespace(ns, region)
            except ProviderError as exc:
                log.warning("nomad_list_failed", namespace=ns, region=region, error=str(exc))
                alone += here
                continue
            for t in here:
                t.job.absorb(allocs.get(t.job_id, []), jobs.get(t.job_id))
                if t.job.eval_id and not t.job.own_allocs():
                    alone.append(t)  # read its evaluation below, then evaluate
                else:
                    await self.evaluate(t)
            await asyncio.gather(*(evaluation(t) for t in alone if t in here))
            alone = [t for t in alone if t not in here]
        await asyncio.gather(*(one(t) for t in alone))

    async def _emit(self, tracked: Tracked, obs: Observation) -> None:
        sink = self._sink()
        task = await sink.get_task(tracked.task_id)
        if task is None:
            tracked.logs.completed = True  # the task is gone from egw: nothing to report to
            self._registry.remove(tracked)
            return
        if task.attempt != tracked.attempt:
            return  # a replaced attempt's registration (retired meanwhile): not the task's
        tracked.status = task.status
        if task.status in (S.CANCELLING, S.CANCEL_FAILED) and not tracked.cancel_requested:
            # cancelled through another replica (PostgreSQL): a stop is the cancel's
            tracked.cancel_requested = True
            obs = tracked.observation()
        if obs.state is task.status or not can_move(task.status, obs.state):
            return
        steps: list[Observation] = []
        attempt = tracked.attempt
        if task.status is S.PENDING and obs.state is not S.QUEUED:
            steps.append(Observation(state=S.QUEUED, reason="registered in Nomad", attempt=attempt))
        if (
            obs.state.terminal
            and obs.detail.get("started")
            and task.status in (S.PENDING, S.QUEUED)
        ):
            steps.append(Observation(state=S.RUNNING, reason="allocation started", attempt=attempt))
        steps.append(obs)
        for step in steps:
            # one delivery per state and attempt: attempt 2's ``queued`` is news
            after = await sink.observe(
                tracked.task_id,
                step,
                source=SOURCE,
                delivery_id=f"nomad:{tracked.key}:{step.state}",
            )
            if after is not None:
                tracked.status = after.status
        log.info(
            "nomad_observed",
            task_id=tracked.task_id,
            job_id=tracked.job_id,
            state=str(obs.state),
            reason=obs.reason,
        )

    async def _stop_job(self, tracked: Tracked) -> None:
        try:
            await self._client.stop_job(tracked)
        except ProviderError as exc:
            log.warning("nomad_stop_failed", job_id=tracked.job_id, error=str(exc))
