"""`LogReader`: the Cloud Logging logs of a project's executions, read together, within its budget.

Theory of operation
-------------------
Cloud Logging allows a project few reads (``logging_reads_per_minute``, 30 by default: the
`ReadBudget`), so one reader per execution cannot keep hundreds of executions live (300 would be
read once every ten minutes each). Instead each project has one loop, and each of its reads covers
as many executions as one filter can name: their execution labels OR-ed
(`egw.wire.cloudrun.batch_filter`, at most `MAX_FILTER_CHARS`, about 350 executions), oldest first,
page by page. Every entry is routed by its labels (`execution_key`) to its execution, whose own
`LogCursor` (the newest timestamp and the insert ids seen at it, persisted with
``sink.set_cursor``) drops what it has read: no line is lost or doubled across pages, reads,
executions that share a timestamp, or a restart. A read starts at the oldest lower bound of its
executions (a cursor, or the execution's ``createTime``), so a fresh execution loses nothing.

Reads are spread evenly over the minute (one every ``60 / logging_reads_per_minute`` s at most).
Which executions a read takes: those due (read ``poll_min_s`` ago or longer), the longest waiting
first, so every running execution is read in turn and none starves; with 300 executions and the
default budget each is read every few seconds, not every ten minutes. Live reads stop at
``now - logging_settle_s`` (Logging ingests late); once an execution has ended and the settle time
has passed, it is read once more without an upper bound, then ``sink.logs_complete``. A last read
that keeps failing gives up after `_FINAL_READ_TRIES`, saying so in the task's stderr.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

import structlog

from egw.background import BackgroundTasks, cancel_and_wait
from egw.config import CloudRunConfig
from egw.errors import CircuitOpen, ProviderError
from egw.providers.base import SinkSlot
from egw.providers.cloudrun.api import CloudRunAPI
from egw.providers.cloudrun.watch import Watch, Watches
from egw.wire import cloudrun as wire

log = structlog.get_logger("egw.providers.cloudrun")

#: a final log read that keeps failing gives up after this many tries (noted in the log)
_FINAL_READ_TRIES = 5
#: a fresh execution is read from this long before its createTime (clock skew between services)
_CREATED_SLACK_S = 60.0


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


class _Project:
    """The executions of one project whose logs are followed, and its loop."""

    def __init__(self, reads_per_minute: int) -> None:
        self.budget = ReadBudget(reads_per_minute)
        self.members: dict[str, Watch] = {}
        self.wake = asyncio.Event()
        self.loop: asyncio.Task[None] | None = None
        #: the earliest start of the next read (monotonic)
        self.next_read = 0.0


class LogReader:
    """Reads the logs of the watched executions into the sink, a project's executions together."""

    #: entries per entries:list page (Logging's largest is 1000)
    page_size = 1000
    #: the longest filter a read sends (Logging's limit; tests make it smaller)
    max_filter_chars = wire.MAX_FILTER_CHARS

    def __init__(
        self,
        cfg: CloudRunConfig,
        api: CloudRunAPI,
        sink: SinkSlot,
        watches: Watches,
        tasks: BackgroundTasks,
    ) -> None:
        self._cfg = cfg
        self._api = api
        self._sink = sink
        self._watches = watches
        self._tasks = tasks
        self._projects: dict[str, _Project] = {}
        #: stores of read lines and their cursor under way (`_deliver`)
        self._deliveries: set[asyncio.Future[None]] = set()

    def reads_last_minute(self) -> dict[str, int]:
        """Reads spent in the last minute, by project."""
        return {name: project.budget.used() for name, project in self._projects.items()}

    def follow(self, watch: Watch) -> None:
        """Read the execution's log until all of it is in the sink, then drop its watch."""
        project = self._projects.get(watch.ref.project)
        if project is None:
            project = self._projects[watch.ref.project] = _Project(
                self._cfg.logging_reads_per_minute
            )
        project.members[watch.task_id] = watch
        watch.following = True
        project.wake.set()
        if project.loop is None or project.loop.done():
            project.loop = self._tasks.spawn(
                self._run(project), name=f"cloud_run-logs-{watch.ref.project}"
            )

    async def stop(self) -> None:
        """Stop reading now (the lease is lost) and forget every execution; lines already
        read are stored with their cursor first (`_deliver`), so the next holder reads on
        right after them. The read budgets stay: what was spent in the last minute counts."""
        for project in self._projects.values():
            for watch in list(project.members.values()):
                _leave(project, watch)
            await cancel_and_wait(project.loop)
            project.loop = None
        if self._deliveries:
            await asyncio.gather(*self._deliveries, return_exceptions=True)

    async def _run(self, project: _Project) -> None:
        """Read batches of due executions until none is followed any more."""
        while project.members:
            batch, final, wait = self._next_batch(project)
            if not batch:
                project.wake.clear()
                try:
                    async with asyncio.timeout(wait):
                        await project.wake.wait()
                except TimeoutError:
                    pass
                continue
            # reads are spread evenly over the minute rather than spent in a burst
            await asyncio.sleep(max(0.0, project.next_read - time.monotonic()))
            project.next_read = time.monotonic() + 60.0 / self._cfg.logging_reads_per_minute
            try:
                await self._read_batch(project, batch, final)
            except Exception:  # a bug must not end the loop silently
                log.exception("cloud_run_log_read_crashed", executions=len(batch))
                for watch in batch:
                    watch.next_read = time.monotonic() + self._cfg.poll_max_s

    def _next_batch(self, project: _Project) -> tuple[list[Watch], set[str], float]:
        """The due executions that fit one filter (the longest waiting first), which of them get
        their last read, and how long to wait when none is due."""
        now = time.monotonic()
        settle = self._cfg.logging_settle_s
        due: list[Watch] = []
        final: set[str] = set()
        soonest = self._cfg.poll_max_s
        for watch in [w for w in project.members.values() if w.retired]:
            _leave(project, watch)  # a replaced attempt's: not read any more
        for watch in project.members.values():
            if not watch.seen.is_set():  # the task count decides the line prefix
                soonest = min(soonest, self._cfg.poll_min_s)  # seen at the poller's first read
                continue
            at = watch.next_read
            if watch.terminal.is_set():
                settled_at = (watch.terminal_at or 0.0) + settle
                if now >= settled_at:
                    final.add(watch.task_id)
                at = min(at, max(settled_at, watch.final_after))
            if at <= now:
                due.append(watch)
            else:
                soonest = min(soonest, at - now)
        due.sort(key=lambda w: w.next_read)
        batch: list[Watch] = []
        names: list[str] = []
        for watch in due:
            names.append(watch.ref.execution)
            if batch and wire.batch_filter_length(names) > self.max_filter_chars:
                break
            batch.append(watch)
        return batch, final & {w.task_id for w in batch}, soonest

    async def _read_batch(self, project: _Project, batch: list[Watch], final: set[str]) -> None:
        """One read of ``batch`` (every page); then the ended ones are complete."""
        sink = self._sink()
        for watch in batch:
            if not watch.cursor_loaded:
                watch.cursor = wire.LogCursor.from_json(await sink.get_cursor(watch.cursor_key))
                watch.cursor_loaded = True
        settle = self._cfg.logging_settle_s
        until = (
            None
            if settle == 0
            else wire.timestamp_from(datetime.now(UTC) - timedelta(seconds=settle))
        )
        live = [w.ref.execution for w in batch if w.task_id not in final]
        ended = [w.ref.execution for w in batch if w.task_id in final]
        bounds = [_lower_bound(w) for w in batch]
        since = None if None in bounds else min(b for b in bounds if b is not None)
        text = wire.batch_filter(live, ended, since=since, until=until)
        started = time.monotonic()
        error = None
        try:
            await self._read_pages(project, batch, text)
        except CircuitOpen as exc:  # not tried: no failed read; sleep through the outage
            wait = max(exc.retry_after_s or 0.0, self._cfg.poll_min_s)
            for watch in batch:
                watch.next_read = time.monotonic() + wait
                watch.final_after = max(watch.final_after, watch.next_read)
            return
        except ProviderError as exc:
            log.warning("cloud_run_log_read_failed", executions=len(batch), error=exc.message)
            error = exc.message
        for watch in batch:
            watch.next_read = started + self._cfg.poll_min_s
        for watch in batch:
            if watch.task_id not in final or watch.retired:
                continue
            if error is not None:
                watch.final_failures += 1
                watch.final_after = time.monotonic() + self._cfg.poll_min_s
                if watch.final_failures < _FINAL_READ_TRIES:
                    continue
                note = f"[egw] could not read the rest of the log: {error}\n"
                await sink.append_log(watch.task_id, "stderr", note.encode())
            await sink.logs_complete(watch.task_id)
            _leave(project, watch)
            self._watches.drop(watch)

    async def _read_pages(self, project: _Project, batch: list[Watch], text: str) -> None:
        """Every page of one read (the request stays the same across pages), each entry routed
        to its execution; cursors advance page by page, so a failed read resumes there."""
        route = {(w.ref.region, w.ref.job, w.ref.execution): w for w in batch}
        members = {w.task_id: w for w in batch}
        token: str | None = None
        while True:
            body = wire.batch_entries_request(
                batch[0].ref.project, text, page_token=token, page_size=self.page_size
            )

            async def read(body: dict[str, Any] = body) -> Any:
                await project.budget.acquire()
                return await self._api.send(
                    "POST",
                    f"{self._api.logging_url}/v2/entries:list",
                    json_body=body,
                    operation="logging.entries.list",
                )

            page = await self._api.retried(read, "logging.entries.list")
            by_watch: dict[str, list[Mapping[str, Any]]] = {}
            for entry in page.get("entries") or []:
                where = wire.execution_key(entry)
                watch = route.get(where) if where is not None else None
                if watch is not None:  # another job's execution of the same short id: not ours
                    by_watch.setdefault(watch.task_id, []).append(entry)
            for task_id, entries in by_watch.items():
                watch = members[task_id]
                lines, watch.cursor = watch.cursor.accept(entries)
                if lines:
                    await self._deliver(watch, lines)
            token = page.get("nextPageToken")
            if not token:
                return

    async def _deliver(self, watch: Watch, lines: list[wire.LogLine]) -> None:
        """Store ``lines`` and then the cursor past them, as one delivery: shielded, so that a
        `stop` (the lease lost) or a `close` never cuts it in two, and `stop` waits for it."""
        delivery = asyncio.ensure_future(self._store(watch, lines))
        self._deliveries.add(delivery)
        delivery.add_done_callback(self._deliveries.discard)
        await asyncio.shield(delivery)

    async def _store(self, watch: Watch, lines: list[wire.LogLine]) -> None:
        """One chunk per run of lines on the same stream (none for a replaced attempt's
        execution, retired while its read was in flight), and the cursor, in one commit
        (`ProviderSink.append_output`): a gateway killed around it (SIGKILL, whose lease
        another replica then takes) leaves both or neither, so the next reader neither
        loses nor stores again a line."""
        writes = [] if watch.retired else _runs(watch, lines)
        cursor = (watch.cursor_key, watch.cursor.to_json())
        await self._sink().append_output(watch.task_id, writes, cursor=cursor)


def _runs(watch: Watch, lines: list[wire.LogLine]) -> list[tuple[str, bytes]]:
    """The lines as (stream, bytes), one item per run of lines on the same stream, in order."""
    multi = watch.task_count > 1
    runs: list[tuple[str, list[str]]] = []
    for line in lines:
        if not runs or runs[-1][0] != line.stream:
            runs.append((line.stream, []))
        runs[-1][1].append(wire.format_line(line, multi_task=multi))
    return [(stream, "".join(text).encode()) for stream, text in runs]


def _leave(project: _Project, watch: Watch) -> None:
    """``watch`` is read no more (a newer attempt's watch of the same task stays)."""
    if project.members.get(watch.task_id) is watch:
        del project.members[watch.task_id]
    watch.following = False


def _lower_bound(watch: Watch) -> str | None:
    """Where the execution's log is read from: its cursor, else a little before it was created;
    None (from the start) if neither is known."""
    if watch.cursor.timestamp is not None:
        return watch.cursor.timestamp
    if watch.created is not None:
        try:
            return wire.shift_timestamp(watch.created, -_CREATED_SLACK_S)
        except ValueError:
            return None
    return None
