"""Fan-out of committed changes: log chunks and events to live subscribers, and
wake-ups for blocking status queries.

The writer calls `Hub.on_commit` once per committed batch, on the event loop,
so every subscriber sees changes in commit order and only after they are
durable: a client that resumes from the database never misses what a live
subscriber already got. The SSE channels (`egw.service.channels`) subscribe here.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterable
from typing import Protocol, TypeVar

from egw.core.model import Event, Task
from egw.core.records import Commit, LogChunk

_T = TypeVar("_T")


class TaskSubscriber(Protocol):
    def on_log(self, chunk: LogChunk) -> None: ...

    def on_event(self, event: Event, task: Task | None) -> None: ...

    def on_logs_complete(self, task_id: str) -> None: ...


class EventSubscriber(Protocol):
    def on_event(self, event: Event, task: Task | None) -> None: ...


class Hub:
    """Hands each commit to the subscribers of its tasks and of all events, and wakes the
    blocking queries waiting on its tasks."""

    def __init__(self) -> None:
        self._tasks: dict[str, set[TaskSubscriber]] = {}
        self._all: set[EventSubscriber] = set()
        self._waiters: dict[str, set[asyncio.Future[None]]] = {}
        #: told ``(task id, True)`` when a task gets its first subscriber (a live log
        #: tailer) and ``(task id, False)`` when its last one leaves
        self.attention: list[Callable[[str, bool], None]] = []

    # --- subscriptions ---------------------------------------------------------------------

    def subscribe(self, task_id: str, sub: TaskSubscriber) -> None:
        subs = self._tasks.get(task_id)
        if subs is None:
            subs = self._tasks[task_id] = set()
            for listener in self.attention:
                listener(task_id, True)
        subs.add(sub)

    def unsubscribe(self, task_id: str, sub: TaskSubscriber) -> None:
        subs = self._tasks.get(task_id)
        if subs is not None:
            subs.discard(sub)
            if not subs:
                del self._tasks[task_id]
                for listener in self.attention:
                    listener(task_id, False)

    def subscribe_all(self, sub: EventSubscriber) -> None:
        self._all.add(sub)

    async def wait_change(self, task_id: str, timeout_s: float) -> bool:
        """Wait until the task changes, at most ``timeout_s``; True if it did."""
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        waiters = self._waiters.setdefault(task_id, set())
        waiters.add(fut)
        try:
            # asyncio.timeout, not wait_for: on 3.11 wait_for can swallow a cancellation
            # that races with the future completing
            async with asyncio.timeout(timeout_s):
                await fut
            return True
        except TimeoutError:
            return False
        finally:
            waiters.discard(fut)
            if not waiters:
                self._waiters.pop(task_id, None)

    # --- the writer's listener -------------------------------------------------------------

    def on_commit(self, commit: Commit) -> None:
        for chunk in commit.logs:
            for sub in _snapshot(self._tasks.get(chunk.task_id)):
                sub.on_log(chunk)
        for event in commit.events:
            task = commit.tasks.get(event.task_id)
            for sub in _snapshot(self._tasks.get(event.task_id)):
                sub.on_event(event, task)
            for every in _snapshot(self._all):
                every.on_event(event, task)
        for task_id in commit.logs_completed:
            for sub in _snapshot(self._tasks.get(task_id)):
                sub.on_logs_complete(task_id)
        for task_id in commit.tasks:
            for fut in self._waiters.get(task_id, ()):
                if not fut.done():
                    fut.set_result(None)


def _snapshot(subs: Iterable[_T] | None) -> tuple[_T, ...]:
    return tuple(subs) if subs else ()
