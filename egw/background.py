"""Background work that outlives the call that started it: spawned, tracked, logged, stopped.

The event loop holds tasks only weakly, so a task nobody keeps may vanish half
way; and a task that fails with nobody awaiting it fails silently. Every
long-lived part of egw (the task service, each provider) owns one
`BackgroundTasks` and starts its loops and one-off jobs through it, so that a
failure is always logged and ``close()`` stops everything it started.
"""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import Any, TypeVar

import structlog

from egw.errors import EgwError

log = structlog.get_logger("egw.background")

T = TypeVar("T")


class BackgroundTasks:
    """The tasks one owner (``"service"``, ``"nomad"``...) runs in the background."""

    def __init__(self, owner: str) -> None:
        self.owner = owner
        self._tasks: set[asyncio.Task[Any]] = set()

    def spawn(self, coro: Coroutine[Any, Any, T], *, name: str | None = None) -> asyncio.Task[T]:
        """Run ``coro`` in the background; it is kept until it ends and its failure is logged.

        An `EgwError` (an upstream refused, a task vanished) is expected in the life of
        a gateway and is logged as a warning; anything else is a bug, logged with its
        traceback. Whoever also awaits the returned task still gets its exception.
        """
        task = asyncio.get_running_loop().create_task(coro, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._finished)
        return task

    def _finished(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if task.cancelled():
            return
        exc = task.exception()
        if isinstance(exc, EgwError):
            log.warning(
                "background_failed", owner=self.owner, task=task.get_name(), error=exc.message
            )
        elif exc is not None:
            log.error(
                "background_failed",
                owner=self.owner,
                task=task.get_name(),
                error=repr(exc),
                exc_info=exc,
            )

    def __len__(self) -> int:
        return len(self._tasks)

    async def wait(self) -> None:
        """Wait until every task has ended on its own (nothing is cancelled): a provider
        that must let its work record how it ended before it stops."""
        while self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)

    async def close(self) -> None:
        """Cancel everything still running and wait until it has stopped."""
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)


async def cancel_and_wait(task: asyncio.Task[Any] | None) -> None:
    """Cancel one task (a loop kept outside a `BackgroundTasks`) and wait for it to end."""
    if task is None or task.done():
        return
    task.cancel()
    try:
        await task
    except asyncio.CancelledError:
        pass
