"""Replicas on PostgreSQL: a local task's process lives on the replica that accepted it.

A cancel (or a timeout) of a local task may be recorded by any replica: the one that
took the request writes the ``cancel_requested`` (``timed_out``) event as always, and
leaves the process alone (`owned_elsewhere`). That event is the command: the owner
hears it through the feed of replicas (``egw/store/postgres/feed.py``: a row of
``changes`` and a NOTIFY) and stops the process (`OwnedCommands`). A log tail on any
replica needs nothing more: the feed brings the output. On SQLite no task is owned
elsewhere and no commit is another replica's: nothing here runs.

A replica that dies leaves its local tasks behind: the holder of the ``local-reaper``
lease looks every `REAP_S` for unfinished local tasks whose replica's heartbeat has
stopped (``store.live_replicas``), records itself as their replica and adopts them
(`reap`): one whose process was running ends ``failed: gateway lost`` (never left
``running``), one that never started runs here.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import structlog

from egw.background import BackgroundTasks
from egw.core.model import Task, TaskState
from egw.core.records import Commit
from egw.errors import EgwError
from egw.providers.base import Adopting

if TYPE_CHECKING:
    from egw.service.tasks import TaskService

log = structlog.get_logger("egw.service")

#: the providers whose work lives in the gateway's own process (the others' is upstream,
#: reachable from any replica)
IN_PROCESS = frozenset({"local"})
COMMANDS = frozenset({"cancel_requested", "timed_out"})
#: the lease of the replica that adopts dead replicas' local tasks, and how often it looks
REAPER = "local-reaper"
REAP_S = 2.0


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
                event.kind in COMMANDS
                and task is not None
                and task.provider in IN_PROCESS
                and task.upstream.get("replica") == me
                and task.status is TaskState.CANCELLING
            ):
                force = bool(event.data.get("force"))
                _ = self._background.spawn(self._cancel(task, force), name="replica_cancel")

    async def _cancel(self, task: Task, force: bool) -> None:
        try:
            await self._service.carry_out_cancel(task, force)
        except EgwError as exc:
            log.warning("replica_cancel_failed", task_id=task.id, error=exc.message)


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


__all__ = ["REAPER", "REAP_S", "OwnedCommands", "owned_elsewhere", "reap"]
