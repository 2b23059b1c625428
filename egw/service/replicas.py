"""Replicas on PostgreSQL: a local task's process lives on the replica that accepted it.

A cancel (or a timeout) of a local task may be recorded by any replica: the one that
took the request writes the ``cancel_requested`` (``timed_out``) event as always, and
leaves the process alone (`owned_elsewhere`). That event is the command: the owner
hears it through the feed of replicas (``egw/store/postgres/feed.py``: a row of
``changes`` and a NOTIFY) and stops the process (`OwnedCommands`). A log tail on any
replica needs nothing more: the feed brings the output. On SQLite no task is owned
elsewhere and no commit is another replica's: nothing here runs.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import structlog

from egw.background import BackgroundTasks
from egw.core.model import Task, TaskState
from egw.core.records import Commit
from egw.errors import EgwError

if TYPE_CHECKING:
    from egw.service.tasks import TaskService

log = structlog.get_logger("egw.service")

#: the providers whose work lives in the gateway's own process (the others' is upstream,
#: reachable from any replica)
IN_PROCESS = frozenset({"local"})
COMMANDS = frozenset({"cancel_requested", "timed_out"})


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


__all__ = ["OwnedCommands", "owned_elsewhere"]
