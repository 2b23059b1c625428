"""Launching a recorded task upstream: one submit per attempt, retried while ambiguous.

A submit that fails ambiguously (`ProviderUnavailable`: the upstream may or may
not have started the work) leaves the task ``pending`` and is tried again later;
providers look before they start anything twice (see ``providers/base.py``), so a
retry adopts what a lost answer made. Each attempt of a task (a resubmit by the
watchdog starts a new one, ``egw/service/watchdog.py``) has its own idempotency
key, and an answer that comes back for an attempt the task has left is not
recorded on it: its work is retired instead.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

import structlog

from egw.background import BackgroundTasks
from egw.core.model import Observation, Task, TaskState
from egw.errors import CircuitOpen, EgwError, ProviderError, ProviderUnavailable
from egw.providers.base import Provider, Resubmittable, Submission, attempt_key
from egw.service.accept import record_answer

if TYPE_CHECKING:
    from egw.service.tasks import TaskService

log = structlog.get_logger("egw.service")


class Launcher:
    def __init__(self, service: TaskService, background: BackgroundTasks) -> None:
        self._service = service
        self._background = background
        #: tasks whose submit is in flight (the watchdog does not resubmit them meanwhile)
        self.inflight: set[str] = set()

    def spawn(self, provider: Provider, task: Task) -> asyncio.Task[Task | None]:
        return self._background.spawn(self.launch(provider, task), name="launch")

    async def launch(
        self, provider: Provider, task: Task, attempt: int = 1, deferred: bool = False
    ) -> Task | None:
        """Submit ``task`` (its current attempt) upstream; ``attempt`` counts the tries of
        this submit after ambiguous failures; ``deferred``: an open breaker held it already.
        The task after the answer is recorded; None when the attempt was replaced meanwhile."""
        self.inflight.add(task.id)
        try:
            return await self._launch(provider, task, attempt, deferred)
        finally:
            self.inflight.discard(task.id)

    async def _launch(
        self, provider: Provider, task: Task, attempt: int, deferred: bool
    ) -> Task | None:
        service = self._service
        try:
            sub = await provider.submit(task, idempotency_key=attempt_key(task))
        except CircuitOpen as exc:
            # the breaker is open: the task stays pending, tried again once a probe may go,
            # without spending an attempt (providers look before they start anything twice)
            exc.details["task_id"] = task.id
            if not deferred:
                data = {**exc.details, "error": exc.message}
                await service.progress(task.id, "submit_deferred", data, source="gateway")
            again = self._relaunch(provider, task, attempt, exc.retry_after_s or 0.01, True)
            _ = self._background.spawn(again, name="relaunch")
            raise
        except ProviderUnavailable as exc:
            if attempt < service.submit_attempts:
                delay = service.submit_retry_s * 2 ** (attempt - 1)
                await service.progress(
                    task.id,
                    "submit_retry",
                    {"error": exc.message, "attempt": attempt, "retry_in_s": delay},
                    source="gateway",
                )
                _ = self._background.spawn(
                    self._relaunch(provider, task, attempt + 1, delay), name="relaunch"
                )
            else:
                await self._submit_failed(task, f"submit failed: {exc.message}")
            raise
        except EgwError as exc:
            verb = "failed" if isinstance(exc, ProviderError) else "refused"
            await self._submit_failed(task, f"submit {verb}: {exc.message}")
            raise
        current = await self._record(provider, task, sub)
        if current is None:
            return None
        if current.status is TaskState.CANCELLED and current.upstream_id is not None:
            # cancelled while its submit was in flight: stop what the submit started
            try:
                await provider.cancel(current, force=False)
            except EgwError as exc:
                log.warning("cancel_after_submit_failed", task_id=task.id, error=exc.message)
        return current

    async def _record(self, provider: Provider, task: Task, sub: Submission) -> Task | None:
        service = self._service
        current = await service.get(task.id)
        if current.attempt != task.attempt:
            # the task was resubmitted while this attempt's submit was in flight
            if isinstance(provider, Resubmittable):
                stale = task.evolve(upstream_id=sub.upstream_id, upstream_url=sub.upstream_url)
                await provider.retire(stale)
            return None
        # the upstream's id and what it saw, in one writer operation (bench part "submits")
        current = await record_answer(service.store, task.id, sub, provider.name)
        service.disarm(current)
        return current

    async def _relaunch(
        self, provider: Provider, task: Task, attempt: int, delay: float, deferred: bool = False
    ) -> None:
        await asyncio.sleep(delay)
        current = await self._service.get(task.id)
        if (
            current.status is not TaskState.PENDING
            or current.upstream.get("submitted")
            or current.attempt != task.attempt  # resubmitted meanwhile: launched by then
        ):
            return
        try:
            await self.launch(provider, current, attempt, deferred)
        except EgwError:
            pass  # recorded on the task by launch

    async def _submit_failed(self, task: Task, reason: str) -> None:
        service = self._service
        log.warning("submit_failed", task_id=task.id, provider=task.provider, reason=reason)
        current = await service.get(task.id)
        if current.attempt != task.attempt:
            return  # a replaced attempt's failure is not the task's
        await service.observe(
            task.id, Observation(state=TaskState.FAILED, reason=reason), source="gateway"
        )
        await service.logs_complete(task.id)
