"""`Watch`: what egw knows of one execution it watches, and `Watches`, the executions by task id.

Cloud Run pushes nothing, so every execution egw follows is polled with its job's others
(`egw.providers.cloudrun.poller`), and its log is followed by its project's log reader
(`egw.providers.cloudrun.logs`). They meet in the execution's `Watch`: the poller says when the
execution was first seen and when it ended, the log reader keeps its cursor there. The reader
ends last and drops the watch.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

from egw.core.model import TaskState
from egw.providers.base import split_key
from egw.wire import cloudrun as wire


@dataclass(slots=True)
class Watch:
    """What the poller and the log reader know of an execution."""

    task_id: str
    ref: wire.ExecutionRef
    task_count: int = 1
    seen: asyncio.Event = field(default_factory=asyncio.Event)
    terminal: asyncio.Event = field(default_factory=asyncio.Event)
    terminal_at: float | None = None
    #: how far the log has been read (advanced page by page, so a failed read resumes there)
    cursor: wire.LogCursor = field(default_factory=wire.LogCursor)
    cursor_loaded: bool = False
    #: the execution's ``createTime`` (a fresh log is read from a little before it)
    created: str | None = None
    #: the log reader's schedule (monotonic): the next read, and the next try of a failed last one
    following: bool = False
    next_read: float = 0.0
    final_after: float = 0.0
    final_failures: int = 0
    #: the last state reported (the submit's own observation counts), and whether the poller
    #: reports changes (not for an execution that had ended before a restart)
    last: TaskState | None = None
    report: bool = True
    #: the attempt's key (``<task id>.<attempt>`` from the second attempt on; "" for the first)
    key: str = ""
    #: the attempt was replaced (``on_stuck: resubmit``): nothing of it reaches the task any more
    retired: bool = False

    @property
    def attempt(self) -> int:
        """The task's attempt this execution is (what its observations say they are about)."""
        return split_key(self.key)[1] if self.key else 1

    @property
    def cursor_key(self) -> str:
        """Where the log reader persists this execution's cursor (one per attempt)."""
        return f"cloud_run:logs:{self.key or self.task_id}"

    def ended(self) -> None:
        """The execution has ended (or is gone): only its logs are left to read."""
        self.terminal_at = time.monotonic()
        self.seen.set()
        self.terminal.set()


#: starts a new watch's loops: (watch, report its states, first poll after an interval)
Starter = Callable[[Watch, bool, bool], None]


class Watches:
    """The executions being watched, by task id; ``start`` gives each new one its loops.

    Standing by (PostgreSQL, a replica that does not hold the provider's lease: see
    `CloudRunProvider.stand_by`) nothing is watched: `ensure` hands back a watch that is
    neither kept nor started, so a submit, a cancel or an adopted lost run on this replica
    leaves the polling and the log to the holder."""

    def __init__(self, start: Starter) -> None:
        self._start = start
        self._by_task: dict[str, Watch] = {}
        self.standby = False

    def __contains__(self, task_id: str) -> bool:
        return task_id in self._by_task

    def __iter__(self) -> Iterator[Watch]:
        return iter(list(self._by_task.values()))

    def ensure(
        self,
        task_id: str,
        ref: wire.ExecutionRef,
        *,
        ended: bool,
        delay: bool = False,
        key: str = "",
    ) -> Watch:
        """The execution's watch, started once (``ended``: only its logs are left to read;
        ``delay``: the execution was just read, so the first poll waits an interval; ``key``:
        the attempt's key, when it is not the first attempt)."""
        watch = self._by_task.get(task_id)
        if watch is None:
            watch = Watch(task_id, ref, key="" if key == task_id else key)
            if self.standby:  # the lease's holder watches it
                return watch
            self._by_task[task_id] = watch
            self._start(watch, not ended, delay)
        return watch

    def get(self, task_id: str) -> Watch | None:
        return self._by_task.get(task_id)

    def drop(self, watch: Watch) -> None:
        """Forget ``watch`` (not a newer attempt's watch of the same task)."""
        if self._by_task.get(watch.task_id) is watch:
            del self._by_task[watch.task_id]

    def retire(self, task_id: str, execution: str) -> Watch | None:
        """Stop following ``execution`` for the task (a replaced attempt's): marked retired, it
        is polled no more, and neither the poller nor the log reader report anything of it."""
        watch = self._by_task.get(task_id)
        if watch is None or watch.ref.name != execution:
            return None
        del self._by_task[task_id]
        watch.retired, watch.report = True, False
        watch.ended()
        return watch

    def clear(self) -> None:
        self._by_task.clear()

    def watching(self) -> int:
        """Executions not yet ended."""
        return sum(1 for w in self if not w.terminal.is_set())

    def readers(self, project: str | None = None) -> int:
        """Executions whose log is still being read (of ``project``, if given)."""
        return sum(1 for w in self if w.following and project in (None, w.ref.project))


def jitter(seconds: float) -> float:
    """``seconds`` give or take 20%, so that pollers and readers do not move in step."""
    return seconds * random.uniform(0.8, 1.2)


async def nap(seconds: float, wake: asyncio.Event, *, clear: bool = True) -> None:
    """Sleep, or less if ``wake`` is set (and then clear it, if asked)."""
    try:
        await asyncio.wait_for(wake.wait(), timeout=seconds)
    except TimeoutError:
        pass
    if clear:
        wake.clear()
