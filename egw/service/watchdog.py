"""The watchdog: one heap of deadlines for the whole gateway, and what happens at each.

Theory of operation
-------------------
The deadlines themselves are pure (`egw.core.watchdog.next_due`): a task's
cancel confirmation deadline while ``cancelling``, its stuck deadline while
``pending``, ``queued`` or ``running`` (silent). Here they are kept in *one* heap
of ``(when, task id)`` and *one* loop sleeps until the earliest; nothing runs per
task while it waits, and a task that writes output (which pushes its silence
deadline back) costs a dictionary lookup, not a heap push:

* Every committed change of a task (the writer's listener, `on_commit`) asks for
  its next deadline; an entry is pushed only if the task has none in the heap
  yet, or an earlier one. Entries are never removed when a task moves on.
* When an entry comes up, the task's current projection is asked again: no
  deadline any more (it ended, moved on), nothing happens; a later one (more
  output came), it goes back in the heap; past it, the verdict is recorded.

At start the heap is filled from the stored tasks (``status_at``, ``output_at``
are columns), so deadlines survive a restart, and one that passed while the
gateway was down is acted on at once.

Verdicts go through the writer's conditional operations (`egw.store.watchops`),
which do nothing if the task moved on meanwhile. ``cancel_failed`` is recorded;
a stuck task is flagged, then, by the provider's ``on_stuck``, cancelled or
resubmitted: the resubmit is recorded first (``pending``, a new ``attempt``,
no upstream; once per attempt number), then the previous attempt's upstream
work is stopped (`egw.providers.base.Resubmittable.retire`) and the new attempt
launched as any submit is, with the same care after a lost answer or a restart.
"""

from __future__ import annotations

import asyncio
import heapq
from collections.abc import Mapping
from datetime import datetime, timedelta
from typing import TYPE_CHECKING

import structlog

from egw.background import BackgroundTasks
from egw.config import Config
from egw.core.access import GATEWAY
from egw.core.model import Stuck, Task, utcnow
from egw.core.records import Commit
from egw.core.watchdog import (
    Due,
    OnStuck,
    Policy,
    Verdict,
    may_resubmit,
    next_due,
    overdue,
)
from egw.errors import EgwError
from egw.providers.base import Resubmittable
from egw.store.watchops import CancelFailed, FlagStuck, Resubmit, basis

if TYPE_CHECKING:
    from egw.service.tasks import TaskService

log = structlog.get_logger("egw.watchdog")

#: the actor of the watchdog's own cancels
ACTOR = "egw:watchdog"
#: the lease of the replica that records the verdicts (`egw.store.leases`)
LEASE = "watchdog"
#: a verdict the store could not record is tried again this much later
RETRY = timedelta(seconds=1)


def policy_of(cfg: Config, provider: str) -> Policy:
    """A provider's watchdog settings from its config section."""
    section = getattr(cfg.providers, provider, None)
    if section is None:
        return Policy()
    return Policy(
        cancel_timeout_s=section.cancel_timeout_s,
        pending_timeout_s=section.pending_timeout_s,
        queued_timeout_s=section.queued_timeout_s,
        silent_timeout_s=getattr(section, "silent_timeout_s", None),
        on_stuck=OnStuck(section.on_stuck),
        max_attempts=section.max_attempts,
    )


class Watchdog:
    def __init__(self, service: TaskService) -> None:
        self._service = service
        self._policies: dict[str, Policy] = {}
        self._heap: list[tuple[datetime, str]] = []
        #: the earliest entry each task has in the heap
        self._queued: dict[str, datetime] = {}
        self._wake: asyncio.Event | None = None
        self._background = BackgroundTasks("watchdog")

    def configure(self, cfg: Config) -> None:
        self._policies = {name: policy_of(cfg, name) for name in self._service.providers}

    def policy(self, provider: str) -> Policy:
        return self._policies.get(provider) or Policy()

    async def start(self, tasks: list[Task]) -> None:
        # every replica keeps the deadlines of every task (it hears the others' commits);
        # the holder of the lease records the verdicts (PostgreSQL; SQLite holds it)
        self._service.store.leases.want(LEASE)
        self._wake = asyncio.Event()
        for task in tasks:
            self._schedule(task)
        _ = self._background.spawn(self._loop(), name="watchdog")

    async def close(self) -> None:
        await self._background.close()

    def on_commit(self, commit: Commit) -> None:
        """Writer listener: each changed task's next deadline."""
        for task in commit.tasks.values():
            self._schedule(task)

    def _schedule(self, task: Task) -> None:
        policy = self._policies.get(task.provider)
        if policy is None or not policy.watches:
            return
        due = next_due(task, policy)
        if due is None:
            return
        queued = self._queued.get(task.id)
        if queued is None or due.at < queued:
            self._push(task.id, due.at)

    def _push(self, task_id: str, at: datetime) -> None:
        """The task's entry (an earlier one left in the heap is skipped when it comes up)."""
        self._queued[task_id] = at
        first = not self._heap or at < self._heap[0][0]
        heapq.heappush(self._heap, (at, task_id))
        if first and self._wake is not None:
            self._wake.set()  # the loop sleeps until the earliest entry: wake it

    async def _loop(self) -> None:
        assert self._wake is not None
        while True:
            self._wake.clear()
            now = utcnow()
            while self._heap and self._heap[0][0] <= now:
                at, task_id = heapq.heappop(self._heap)
                if self._queued.get(task_id) == at:
                    del self._queued[task_id]
                    await self._check(task_id, now)
            wait = (self._heap[0][0] - now).total_seconds() if self._heap else None
            try:
                await asyncio.wait_for(self._wake.wait(), wait)
            except TimeoutError:
                pass

    async def _check(self, task_id: str, now: datetime) -> None:
        task = await self._service.get_task(task_id)
        if task is None:
            return
        due = overdue(task, self.policy(task.provider), now)
        if due is None:  # moved on, or a later deadline now (more output came)
            self._schedule(task)
            return
        if not self._service.store.leases.held(LEASE):
            self._retry(task)  # another replica's verdict; look again in case it dies
            return
        _ = self._background.spawn(self._act(task, due), name="watchdog_verdict")

    async def _act(self, task: Task, due: Due) -> None:
        try:
            if due.verdict is Verdict.CANCEL_FAILED:
                op = CancelFailed(task.id, due.reason, "gateway", {"deadline": True}, basis(task))
                _, changed = await self._service.store.writer.verdict(op)
            else:
                changed = await self._stuck(task, due)
        except EgwError as exc:
            # the store refused it (disk full...): asked again in a while
            log.warning("watchdog_verdict_failed", task_id=task.id, error=exc.message)
            changed = False
        if not changed:
            # void (the task moved on: its commit scheduled what is next), or not recorded
            current = await self._service.get_task(task.id)
            if current is not None and basis(current) == basis(task):
                self._retry(current)

    def _retry(self, task: Task) -> None:
        """The verdict was not recorded and nothing changed: look again a little later."""
        self._push(task.id, utcnow() + RETRY)

    async def _stuck(self, task: Task, due: Due) -> bool:
        policy = self.policy(task.provider)
        action = policy.on_stuck
        if action is OnStuck.RESUBMIT and not may_resubmit(task, policy):
            action = OnStuck.FLAG  # no attempts left: the flag says so
        stuck = Stuck(reason=due.reason, since=due.since)
        data = {"on_stuck": str(action), "attempt": task.attempt}
        op = FlagStuck(task.id, stuck, basis(task), data)
        flagged, changed = await self._service.store.writer.verdict(op)
        if not changed:
            return False
        log.info("task_stuck", task_id=task.id, reason=due.reason, on_stuck=str(action))
        if action is OnStuck.CANCEL:
            await self._service.cancel(task.id, actor=ACTOR, access=GATEWAY)
        elif action is OnStuck.RESUBMIT:
            await self._resubmit(flagged)
        return True

    async def _resubmit(self, task: Task) -> None:
        service = self._service
        provider = service.providers.get(task.provider)
        if not isinstance(provider, Resubmittable) or service.launching(task.id):
            # a launch in flight may still record its run: resubmitting now could start two
            await service.progress(
                task.id, "resubmit_skipped", {"attempt": task.attempt}, source="gateway"
            )
            return
        fresh, changed = await service.store.writer.verdict(Resubmit(task.id, task.attempt + 1))
        if not changed:
            return
        log.info("task_resubmitted", task_id=task.id, attempt=fresh.attempt)
        if task.upstream_id is not None or task.upstream:
            try:
                await provider.retire(task)
            except EgwError as exc:  # the new attempt goes ahead; the event says what is left
                await service.progress(
                    task.id,
                    "retire_failed",
                    {"attempt": task.attempt, "upstream_id": task.upstream_id, **_error(exc)},
                    source=task.provider,
                )
        await service.launch(fresh)


def _error(exc: EgwError) -> Mapping[str, object]:
    return {"error": exc.to_json()["error"]}
