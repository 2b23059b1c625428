"""`Spinner`: one line on stderr while a followed task waits to run (a terminal only)."""

from __future__ import annotations

import asyncio
import contextlib
import sys
from typing import TextIO

#: the statuses of a task that has not started: what the spinner waits through
WAITING = frozenset({"pending", "queued"})
_FRAMES = "|/-\\"


class Spinner:
    """Shows ``<frame> <status>`` on ``stream`` and redraws it every ``interval_s`` while a
    followed task is pending or queued; erases it before any output is written. Does
    nothing unless ``stream`` is a terminal, so pipes and files never see it."""

    def __init__(self, stream: TextIO | None = None, *, interval_s: float = 0.1) -> None:
        self._stream = stream or sys.stderr
        self._interval_s = interval_s
        self._label = ""
        self._task: asyncio.Task[None] | None = None
        self.enabled = self._stream.isatty()

    def status(self, status: str) -> None:
        """The task's status now: spin while it waits, stop once it runs or ended."""
        if status in WAITING:
            self._label = status
            if self.enabled and self._task is None:
                self._task = asyncio.get_running_loop().create_task(self._spin())
        else:
            self.stop()

    def stop(self) -> None:
        """Erase the line (before output, or at the end)."""
        if self._task is None:
            return
        self._task.cancel()
        self._task = None
        self._stream.write("\r\x1b[K")
        self._stream.flush()

    async def _spin(self) -> None:
        frame = 0
        with contextlib.suppress(asyncio.CancelledError):
            while True:
                self._stream.write(f"\r{_FRAMES[frame % len(_FRAMES)]} {self._label}")
                self._stream.flush()
                frame += 1
                await asyncio.sleep(self._interval_s)
