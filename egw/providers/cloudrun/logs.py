"""`LogReader`: one Cloud Logging reader per execution, inside the project's `ReadBudget`.

Each reader reads ``entries:list`` oldest first, page by page, from the `LogCursor` (persisted with
``sink.set_cursor``) up to ``now - logging_settle_s`` (Logging ingests late). Every read spends one
request of the project's `ReadBudget` (``logging_reads_per_minute``, shared by all executions of
the project), and readers space their reads to stay inside it. Once the execution has ended and
the settle time has passed, a last read without upper bound takes the rest, then
``sink.logs_complete``; a last read that keeps failing gives up after `_FINAL_READ_TRIES`, saying
so in the task's stderr.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from datetime import UTC, datetime, timedelta
from typing import Any

import structlog

from egw.config import CloudRunConfig
from egw.errors import CircuitOpen, ProviderError
from egw.providers.base import SinkSlot
from egw.providers.cloudrun.api import CloudRunAPI
from egw.providers.cloudrun.watch import Watch, Watches, jitter, nap
from egw.wire import cloudrun as wire

log = structlog.get_logger("egw.providers.cloudrun")

#: a final log read that keeps failing gives up after this many tries (noted in the log)
_FINAL_READ_TRIES = 5


class ReadBudget:
    """At most ``per_window`` reads in any ``window_s`` (a sliding window), waited for in order."""

    def __init__(self, per_window: int, window_s: float = 60.0) -> None:
        self.per_window = per_window
        self.window_s = window_s
        self._reads: deque[float] = deque()
        self._lock = asyncio.Lock()

    def _trim(self, now: float) -> None:
        while self._reads and self._reads[0] <= now - self.window_s:
            self._reads.popleft()

    def used(self) -> int:
        self._trim(time.monotonic())
        return len(self._reads)

    async def acquire(self) -> None:
        async with self._lock:
            while True:
                now = time.monotonic()
                self._trim(now)
                if len(self._reads) < self.per_window:
                    self._reads.append(now)
                    return
                await asyncio.sleep(self._reads[0] + self.window_s - now)


class LogReader:
    """Reads the logs of the watched executions into the sink."""

    #: entries per entries:list page (Logging's largest is 1000)
    page_size = 1000

    def __init__(
        self, cfg: CloudRunConfig, api: CloudRunAPI, sink: SinkSlot, watches: Watches
    ) -> None:
        self._cfg = cfg
        self._api = api
        self._sink = sink
        self._watches = watches
        self._budgets: dict[str, ReadBudget] = {}

    def reads_last_minute(self) -> dict[str, int]:
        """Reads spent in the last minute, by project."""
        return {project: budget.used() for project, budget in self._budgets.items()}

    def _budget(self, project: str) -> ReadBudget:
        budget = self._budgets.get(project)
        if budget is None:
            budget = self._budgets[project] = ReadBudget(self._cfg.logging_reads_per_minute)
        return budget

    def _interval(self, project: str) -> float:
        """Spread the project's budget over its readers: each reads every ``n * 60 / budget`` s."""
        readers = self._watches.readers(project)
        share = 60.0 * max(1, readers) / self._cfg.logging_reads_per_minute
        return max(self._cfg.poll_min_s, share)

    async def run(self, watch: Watch) -> None:
        """Read the execution's log until all of it is in the sink, then drop the watch."""
        sink = self._sink()
        key = f"cloud_run:logs:{watch.task_id}"
        watch.cursor = wire.LogCursor.from_json(await sink.get_cursor(key))
        await watch.seen.wait()  # the task count decides the line prefix
        settle = self._cfg.logging_settle_s
        failures = 0
        while True:
            since_end = time.monotonic() - (watch.terminal_at or 0.0)
            settled = watch.terminal.is_set() and since_end >= settle
            until = (
                None
                if settled or settle == 0
                else wire.timestamp_from(datetime.now(UTC) - timedelta(seconds=settle))
            )
            error = None
            try:
                await self._read_pages(watch, until, key)
            except CircuitOpen as exc:  # not tried: no failed read; sleep through the outage
                wait = max(exc.retry_after_s or 0.0, self._interval(watch.ref.project))
                await asyncio.sleep(jitter(wait))
                continue
            except ProviderError as exc:
                log.warning("cloud_run_log_read_failed", task_id=watch.task_id, error=exc.message)
                error = exc.message
            except Exception as exc:  # a bug must not end the reader silently
                log.exception("cloud_run_log_read_crashed", task_id=watch.task_id)
                error = repr(exc)
            if error is not None:
                failures += settled
                if failures >= _FINAL_READ_TRIES:
                    note = f"[egw] could not read the rest of the log: {error}\n"
                    await sink.append_log(watch.task_id, "stderr", note.encode())
                    settled = True
                else:
                    await asyncio.sleep(jitter(self._interval(watch.ref.project)))
                    continue
            if settled:
                await sink.logs_complete(watch.task_id)
                self._watches.drop(watch.task_id)
                return
            if watch.terminal.is_set():  # the last read comes once late entries are in
                await asyncio.sleep(max(0.0, settle - since_end))
            else:
                await nap(jitter(self._interval(watch.ref.project)), watch.terminal, clear=False)

    async def _read_pages(self, watch: Watch, until: str | None, key: str) -> None:
        """Read every page from the cursor (the request stays the same across pages)."""
        since, token = watch.cursor.timestamp, None
        budget = self._budget(watch.ref.project)
        while True:
            body = wire.list_entries_request(
                watch.ref, since=since, until=until, page_token=token, page_size=self.page_size
            )

            async def read(body: dict[str, Any] = body) -> Any:
                await budget.acquire()
                return await self._api.send(
                    "POST",
                    f"{self._api.logging_url}/v2/entries:list",
                    json_body=body,
                    operation="logging.entries.list",
                )

            page = await self._api.retried(read, "logging.entries.list")
            lines, watch.cursor = watch.cursor.accept(page.get("entries") or [])
            await self._append(watch, lines)
            if lines:
                await self._sink().set_cursor(key, watch.cursor.to_json())
            token = page.get("nextPageToken")
            if not token:
                return

    async def _append(self, watch: Watch, lines: list[wire.LogLine]) -> None:
        """Write lines, one append per run of lines on the same stream."""
        sink = self._sink()
        multi = watch.task_count > 1
        run: list[str] = []
        stream = None
        for line in [*lines, None]:
            if line is None or line.stream != stream:
                if run and stream is not None:
                    await sink.append_log(watch.task_id, stream, "".join(run).encode())
                run = []
                if line is None:
                    break
                stream = line.stream
            run.append(wire.format_line(line, multi_task=multi))
