"""Replicas on PostgreSQL: a local task's process lives on the replica that accepted it.

A cancel (or a timeout) of a local task may be recorded by any replica: the one that
took the request writes the ``cancel_requested`` (``timed_out``) event as always, and
leaves the process alone (`owned_elsewhere`). That event is the command: the owner
hears it through the feed of replicas (``egw/store/postgres/feed.py``: a row of
``changes`` and a NOTIFY) and stops the process (`OwnedCommands`). A force cancel of a task
already cancelling leaves the status as it is, so it is recorded unapplied (``ops.Command``)
for the owner to hear: it kills the process group. A log tail on any
replica needs nothing more: the feed brings the output. On SQLite no task is owned
elsewhere and no commit is another replica's: nothing here runs.

A replica that dies leaves its local tasks behind: the holder of the ``local-reaper``
lease looks every `REAP_S` for unfinished local tasks whose replica's heartbeat has
stopped (``store.live_replicas``), records itself as their replica and adopts them
(`reap`): one whose process was running ends ``failed: gateway lost`` (never left
``running``), one that never started runs here.

A provider whose following runs on one replica at a time (`Leading`: Nomad's event stream,
Cloud Run's pollers and log readers, GitHub's reconciler) stands by on every replica until
it holds the provider's lease (`lead_while_held`): the holder follows every unfinished task
of the database, loaded from the store, from the stored cursors; it looks every `FOLLOW_S`
for tasks other replicas submitted since (one query of the unfinished tasks, on the holder
only); when its lease runs out unrenewed it stops at once (the loop wakes at that moment:
before the lease's row expires on the server, so before another replica can take it).
The others submit and cancel, which are upstream calls of the accepting replica. What
reaches another replica from upstream (a GitHub webhook delivery) is stored there and
applied by the holder, which hears the commit through the feed (`Relay`, `Hearing`).
"""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine, Mapping
from typing import TYPE_CHECKING, Any

import structlog

from egw.background import BackgroundTasks
from egw.core.model import Task, TaskState
from egw.core.records import Commit
from egw.errors import EgwError
from egw.providers.base import Adopting, Hearing, Leading

if TYPE_CHECKING:
    from egw.service.tasks import TaskService

log = structlog.get_logger("egw.service")

#: the providers whose work lives in the gateway's own process (the others' is upstream,
#: reachable from any replica)
IN_PROCESS = frozenset({"local"})
#: the events that are commands to the task's replica, and the status each leaves the task in
#: (a force cancel of a task already cancelling is recorded too, not applied: still cancelling)
COMMANDS = {"cancel_requested": TaskState.CANCELLING, "timed_out": TaskState.TIMED_OUT}
#: the lease of the replica that adopts dead replicas' local tasks, and how often it looks
REAPER = "local-reaper"
REAP_S = 2.0
#: how often the holder of a stream's lease looks for tasks submitted on other replicas
FOLLOW_S = 0.5


def owned_elsewhere(task: Task, replica: str | None) -> bool:
    """The task's process is another replica's (PostgreSQL; never on SQLite)."""
    owner = task.upstream.get("replica")
    return task.provider in IN_PROCESS and owner is not None and owner != replica


class OwnedCommands:
    """The writer's listener: another replica's cancel of a task of this replica's."""

    def __init__(self, service: TaskService, background: BackgroundTasks) -> None:
        self._service = service
        self._background = background

    def on_commit(self, commit: Commit) -> None:
        if not commit.replicated:
            return
        me = self._service.store.replica
        for event in commit.events:
            task = commit.tasks.get(event.task_id)
            if (
                task is not None
                and task.provider in IN_PROCESS
                and task.upstream.get("replica") == me
                and task.status is COMMANDS.get(event.kind)
            ):
                force = bool(event.data.get("force"))
                _ = self._background.spawn(self._cancel(task, force), name="replica_cancel")

    async def _cancel(self, task: Task, force: bool) -> None:
        try:
            if task.status is TaskState.TIMED_OUT:
                await self._service.stop_timed_out(task)
            else:
                await self._service.carry_out_cancel(task, force)
        except EgwError as exc:
            log.warning("replica_cancel_failed", task_id=task.id, error=exc.message)


class Relay:
    """The writer's listener: another replica's events a `Hearing` provider's lease holder
    acts on (the GitHub deliveries stored by the replica GitHub reached)."""

    def __init__(self, providers: Mapping[str, object]) -> None:
        self._hearing = {n: p for n, p in providers.items() if isinstance(p, Hearing)}

    def on_commit(self, commit: Commit) -> None:
        if not commit.replicated or not self._hearing:
            return
        for task in commit.tasks.values():
            if (provider := self._hearing.get(task.provider)) is not None:
                provider.heard_task(task)
        for event in commit.events:
            provider = self._hearing.get(event.provider)
            if provider is not None and event.kind in provider.heard_kinds:
                provider.heard(event.task_id, event.kind, event.data)


def hear_replicas(service: TaskService, background: BackgroundTasks) -> None:
    """Listen to the writer's commits for what other replicas ask of this one: cancels and
    timeouts of its local tasks (`OwnedCommands`), deliveries for a lease holder (`Relay`)."""
    listeners = service.store.writer.listeners
    listeners.append(OwnedCommands(service, background).on_commit)
    listeners.append(Relay(service.providers).on_commit)


async def reap(service: TaskService) -> None:
    """Adopt the unfinished in-process tasks of replicas that are gone (see above)."""
    store = service.store
    me = store.replica
    if me is None:
        return
    live = await store.live_replicas() | {me}
    for name, provider in service.providers.items():
        if not isinstance(provider, Adopting):
            continue
        orphans = [
            t
            for t in await store.reader.active(name)
            if t.upstream.get("replica") is not None and t.upstream.get("replica") not in live
        ]
        if not orphans:
            continue
        gone = sorted({str(t.upstream.get("replica")) for t in orphans})
        log.warning("replica_tasks_adopted", provider=name, tasks=len(orphans), replicas=gone)
        adopted = [await store.writer.set_upstream(t.id, data={"replica": me}) for t in orphans]
        await provider.adopt(service, adopted, lost="gateway lost")


def leaders(service: TaskService) -> list[Coroutine[Any, Any, None]]:
    """On PostgreSQL, make each `Leading` provider stand by (before its ``start``) and
    return the loops that make it lead while this replica holds its lease; on SQLite
    none: every provider leads from ``start``, at no cost."""
    if service.store.replica is None:
        return []
    found = [p for p in service.providers.values() if isinstance(p, Leading)]
    for provider in found:
        provider.stand_by()
    return [lead_while_held(service, provider) for provider in found]


async def lead_while_held(service: TaskService, provider: Leading) -> None:
    """Lead when the lease is taken, follow new tasks while held, step down when lost."""
    leases = service.store.leases
    name = provider.stream_lease
    leases.want(name)
    look_s = min(FOLLOW_S, leases.lease_s / 6)
    leading = False
    while True:
        held = leases.held(name)
        try:
            if held and not leading:
                leading = True
                log.info("stream_lease_leading", lease=name)
                await provider.lead()
            elif held:
                await provider.follow_new()
            elif leading:
                leading = False
                await provider.step_down()
        # the store or upstream failed this look: the next one tries again
        except Exception as exc:  # noqa: BLE001
            log.warning("stream_lease_follow_failed", lease=name, error=repr(exc))
        # awake when the lease would run out unrenewed: step down before another can take it
        left = leases.left_s(name)
        await asyncio.sleep(min(look_s, left + 0.001) if left else look_s)


__all__ = [
    "FOLLOW_S",
    "REAPER",
    "REAP_S",
    "OwnedCommands",
    "Relay",
    "hear_replicas",
    "leaders",
    "owned_elsewhere",
    "reap",
]
