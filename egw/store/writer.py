"""The single writer: every change to the database goes through here, in batches.

Theory of operation
-------------------
SQLite allows one writer at a time, and a commit costs far more than a row.
So one asyncio task owns the write connection and applies *batches*: every
operation queued while the previous commit was in flight goes into the next
transaction (group commit). ``bench/run.py`` measures it against one transaction
per append on the same machine in the same run (about 13 times as many appends/s
on the 2-core machines this was written on: ~25,000 against ~1,900).

The writer keeps the authoritative, in-memory projection of recently used
tasks (an LRU cache): it is the only code that changes a task, so its cache can
never be stale, and reads of a cached task (``GET /v1/tasks/{id}``) touch no
database at all. Event sequence numbers are assigned here too (one writer, so
a counter is exact), which lets a whole batch be computed in memory and written
with one ``executemany`` per table.

A batch is all-or-nothing: new projections are staged and only enter the cache
(and reach subscribers through ``on_commit``) after COMMIT succeeds. If the
transaction fails, the staged state is dropped and the counters are re-read, so
nothing half-written is ever visible; then each operation of the batch is tried
again in a transaction of its own, so that one bad operation fails alone.

When the store cannot take a write (the disk is full, the database is read-only
or locked), the failure is not the batch's fault: the same batch is tried again
with a growing pause (``retry_first_s`` doubling to ``retry_max_s``) for up to
``retry_s``; only then do its operations fail (`StoreError`, with SQLite's
reason). ``failure`` says why writes fail until a probe (a write of the size
of a log chunk, which leaves nothing behind) succeeds again; that is what
``/readyz`` reports. A ``Settle`` (a task's last word, see ``settle``) is
never failed that way: the writer keeps it and puts it first in every later
batch until it commits, so the state machine of a task whose output could not be
stored still ends where the service decided. While writes fail the loop probes
the store every ``probe_s`` (after a batch, or when nothing waits), so that it
recovers by itself when space returns. The loop itself never ends on an error:
only ``close`` stops it.

Where things are: each public method below queues one operation of
``egw/store/ops.py`` (a record that knows how to apply itself); the operations
of a batch fill one `egw.store.batch.Batch` in memory; the dialect's `Writes`
(``backend.py``; on PostgreSQL it also re-checks the counters under the log's lock)
reads what the batch needs and writes it. This module holds the queue, the commit
loop and the cache.

On SQLite a batch costs the event loop two turns (``sqlite_writes.py``): one call to the
write connection's own thread for its lookups, one for its write, ``BEGIN`` to ``COMMIT``,
where a failing statement stops the rest and the transaction is rolled back in that same
call, so the all-or-nothing above holds even when SQLite ends a transaction by itself.
"""

from __future__ import annotations

import asyncio
import functools
from collections import OrderedDict
from collections.abc import Callable, Mapping
from datetime import datetime
from typing import Any, Literal, TypeVar

import structlog

from egw.background import cancel_and_wait
from egw.core.model import Observation, Task
from egw.core.records import Commit
from egw.errors import EgwError, StoreError
from egw.store.backend import Writes
from egw.store.batch import Batch, LogCaps
from egw.store.futures import fail as _fail
from egw.store.futures import retrieved as _retrieved
from egw.store.ops import (
    Accept,
    AppendLog,
    Command,
    CreateTask,
    Idempotency,
    Load,
    LogsComplete,
    Observe,
    Op,
    Output,
    Progress,
    Prune,
    RecordGatewayEvent,
    SetCursor,
    Settle,
    SetUpstream,
)
from egw.store.watchops import CancelFailed, FlagStuck, Resubmit

log = structlog.get_logger("egw.store")

R = TypeVar("R")

MAX_BATCH = 512
#: a batch the store refuses is tried again for this long, pausing RETRY_FIRST_S, then
#: twice that and so on up to RETRY_MAX_S, before its operations fail
RETRY_S = 5.0
RETRY_FIRST_S = 0.05
RETRY_MAX_S = 1.0
#: while writes fail, the store is probed (or kept operations tried again) this often
PROBE_S = 1.0
#: the pages in use are counted again at most this often after writes (``used_bytes``)
MEASURE_S = 1.0


class Writer:
    def __init__(self, db: Writes, *, cache_size: int = 10000) -> None:
        #: the dialect's half (`egw.store.backend`): SQLite's or PostgreSQL's `Writes`
        self._db = db
        self._queue: asyncio.Queue[Op[Any]] = asyncio.Queue()
        self._cache: OrderedDict[str, Task] = OrderedDict()
        self._cache_size = cache_size
        self._seq = 0
        self._submit_seq = 0
        self._runner: asyncio.Task[None] | None = None
        #: called after each commit with what it changed (the hub, metrics), or its size
        self.listeners: list[Callable[[Commit], None]] = []
        self.batch_listeners: list[Callable[[int], None]] = []
        self._warming: set[str] = set()
        #: tasks another replica changed while a batch was being applied: forgotten after it
        self._stale: set[str] | None = None
        #: how much output each task keeps (see `egw.store.ops.AppendLog`)
        self.log_caps = LogCaps()
        self.retry_s, self.retry_first_s, self.retry_max_s = RETRY_S, RETRY_FIRST_S, RETRY_MAX_S
        self.probe_s = PROBE_S
        #: why the store refuses writes (SQLite's reason), None while writes succeed
        self.failure: str | None = None
        #: batches the store refused (each attempt counts)
        self.refusals = 0
        #: kept operations (``Op.kept``) the store refused: first in every next batch
        self._owed: list[Op[Any]] = []
        self._probed_at = 0.0
        #: bytes of the database's pages in use (freed ones not counted), as measured at
        #: start, then at most every MEASURE_S after writes
        self.used_bytes = 0
        self._measured_at = 0.0
        self._unmeasured = False

    async def start(self) -> None:
        self._seq, self._submit_seq = await self._db.load_counters()
        await self._measure()
        self._runner = asyncio.create_task(self._run(), name="egw-writer")

    async def close(self) -> None:
        await cancel_and_wait(self._runner)
        self._runner = None

    @property
    def running(self) -> bool:
        return self._runner is not None and not self._runner.done()

    # --- reads of the projection cache ----------------------------------------------------

    def cached(self, task_id: str) -> Task | None:
        """A task from the projection cache, without touching the database."""
        return self._cache.get(task_id)

    def warm(self, task_id: str) -> None:
        """Load a task the cache lacks (a read found it in the database) in the background,
        so that the next reads need no query (after a restart, a task a bot polls is read
        once); through this writer's queue, so never an older projection over a newer one."""
        if task_id in self._cache or task_id in self._warming or not self.running:
            return
        op = Load(task_id)
        op.fut = asyncio.get_running_loop().create_future()
        self._warming.add(task_id)
        op.fut.add_done_callback(functools.partial(self._warmed, task_id))
        self._queue.put_nowait(op)

    def _warmed(self, task_id: str, fut: asyncio.Future[Task]) -> None:
        self._warming.discard(task_id)
        _retrieved(fut)  # pruned meanwhile: nothing to warm

    # --- the operations, one method each ---------------------------------------------------

    async def create_task(
        self, draft: Task, idempotency: Idempotency | None = None, answer: Accept | None = None
    ) -> tuple[Task, bool]:
        """Record a new task; returns (task, created).

        With an ``idempotency`` (actor, key, request hash) whose actor and key were seen
        before, the task recorded then is returned with ``created`` False; with a
        different request hash, `Conflict`. With an ``answer`` (the provider's, for
        ``draft``), the new task is returned as that answer leaves it, both recorded in
        one commit.
        """
        return await self._enqueue(CreateTask(draft, idempotency, answer))

    async def observe(
        self, task_id: str, obs: Observation, *, source: str, delivery_id: str | None = None
    ) -> Task:
        """Record an observation (applied if the state machine allows); the task after it.
        A ``delivery_id`` already recorded for ``source`` records nothing."""
        return await self._enqueue(Observe(task_id, obs, source, delivery_id))

    async def command(
        self,
        task_id: str,
        kind: Literal["cancel", "timeout"],
        *,
        actor: str | None,
        data: Mapping[str, Any] | None = None,
    ) -> tuple[Task, bool]:
        """Request a cancel (``actor`` set) or time a task out (``actor`` None);
        returns (task, whether it changed)."""
        return await self._enqueue(Command(task_id, kind, actor, data or {}))

    async def progress(
        self,
        task_id: str,
        kind: str,
        data: Mapping[str, Any],
        *,
        source: str,
        delivery_id: str | None = None,
    ) -> bool:
        """Record an event that changes no state; False if the delivery was seen before."""
        return await self._enqueue(Progress(task_id, kind, data, source, delivery_id))

    async def append_log(self, task_id: str, stream: str, data: bytes) -> int:
        """Append output to a task's log; returns the log's new size in bytes."""
        return await self._enqueue(AppendLog(task_id, stream, data))

    async def output(self, op: Output) -> int:
        """Output with a cursor or provider data, in one commit (`egw.store.ops.Output`)."""
        return await self._enqueue(op)

    async def logs_complete(self, task_id: str) -> None:
        """Mark a task's log complete: no more output will come."""
        await self._enqueue(LogsComplete(task_id))

    def settle(self, task_id: str, obs: Observation | None, *, source: str) -> asyncio.Future[Task]:
        """Record ``obs`` (an observation that ends the task; None: none) and the end of
        the task's output, however long the store refuses writes: kept and tried again
        before anything else until it commits (or fails for a reason of its own, such as
        the task being gone). Returns at once; the future resolves when it is recorded,
        and fails if the writer stops first."""
        if not self.running:
            raise StoreError("the event log is not running")
        op = Settle(task_id, obs, source)
        op.kept = True
        op.fut = asyncio.get_running_loop().create_future()
        op.fut.add_done_callback(_retrieved)
        self._queue.put_nowait(op)
        return op.fut

    async def set_upstream(
        self,
        task_id: str,
        *,
        upstream_id: str | None = None,
        upstream_url: str | None = None,
        data: Mapping[str, Any] | None = None,
    ) -> Task:
        """Record the upstream's id, URL and data (merged) for a task; None keeps a value."""
        return await self._enqueue(SetUpstream(task_id, upstream_id, upstream_url, data))

    async def verdict(self, op: CancelFailed | FlagStuck | Resubmit) -> tuple[Task, bool]:
        """Record a verdict of the watchdog (`egw.store.watchops`); (task, whether it changed)."""
        return await self._enqueue(op)

    async def accept(self, op: Accept) -> Task:
        """Record a provider's answer to a submit (`egw.store.ops.Accept`): one operation."""
        return await self._enqueue(op)

    async def set_cursor(self, key: str, value: str) -> None:
        """Remember a provider's position in an upstream stream."""
        await self._enqueue(SetCursor(key, value))

    async def gateway_event(
        self, kind: str, *, provider: str, target: str, data: Mapping[str, Any]
    ) -> None:
        """Append an event of the gateway itself (a circuit breaker's move)."""
        await self._enqueue(RecordGatewayEvent(kind, provider, target, data))

    async def prune(self, before: datetime) -> None:
        """Delete tasks that finished before ``before``, with their events, logs and keys."""
        await self._enqueue(Prune(before))

    async def _enqueue(self, op: Op[R]) -> R:
        loop = asyncio.get_running_loop()
        op.fut = loop.create_future()
        # a caller cancelled while waiting never reads the outcome: do not warn about it
        op.fut.add_done_callback(_retrieved)
        if self._runner is None or self._runner.done():
            raise StoreError("the event log is not running")
        self._queue.put_nowait(op)
        # shield: a client that goes away must not cancel a write that may already be committed
        return await asyncio.shield(op.fut)

    # --- the loop ------------------------------------------------------------------------

    async def _run(self) -> None:
        batch: list[Op[Any]] = []
        try:
            while True:
                batch = await self._next_batch()
                try:
                    if batch:
                        await self._commit(batch)
                    elif self.failure is not None:
                        await self._probe()
                    if self._unmeasured and self._due():
                        await self._measure()
                except Exception as exc:  # noqa: BLE001 - the loop outlives any failure
                    log.error("store_writer_error", error=repr(exc), size=len(batch))
                    self._keep_or_fail(batch, exc)
        except asyncio.CancelledError:
            left = [*batch, *self._owed]
            while not self._queue.empty():
                left.append(self._queue.get_nowait())
            for op in left:
                if not op.fut.done():
                    op.fut.set_exception(StoreError("the event log is shutting down"))
            raise

    async def _next_batch(self) -> list[Op[Any]]:
        """Kept operations first, then what is queued; while writes fail, this returns
        after ``probe_s`` at the latest (empty if there is nothing to try: probe)."""
        batch, self._owed = self._owed, []
        if not self._queue.empty():
            first = self._queue.get_nowait()
        elif batch or self.failure is not None or self._unmeasured:
            try:
                wait = self.probe_s if batch or self.failure is not None else MEASURE_S
                first = await asyncio.wait_for(self._queue.get(), wait)
            except TimeoutError:
                return batch
        else:
            first = await self._queue.get()
        batch.append(first)
        while len(batch) < MAX_BATCH and not self._queue.empty():
            batch.append(self._queue.get_nowait())
        return batch

    async def _commit(self, batch: list[Op[Any]]) -> None:
        """Apply a batch; while the store refuses it, try again with growing pauses for
        ``retry_s``, then fail its operations (kept ones wait for the next batch)."""
        loop = asyncio.get_running_loop()
        give_up = loop.time() + self.retry_s
        pause = self.retry_first_s
        while True:
            try:
                wrote = await self._apply(batch)
            except Exception as exc:  # noqa: BLE001 - a failed batch, not a failed writer
                if not self._db.refused(exc):
                    log.error("store_batch_failed", error=repr(exc), size=len(batch))
                    if len(batch) > 1:
                        # one bad operation must not fail its neighbours: apply each alone
                        for op in batch:
                            await self._apply_alone(op)
                    else:
                        self._keep_or_fail(batch, exc)
                    return
                self._refused(exc)
                if loop.time() + pause > give_up:
                    log.error("store_write_failed_after_retries", error=str(exc), size=len(batch))
                    self._keep_or_fail(batch, exc)
                    return
                await asyncio.sleep(pause)
                pause = min(pause * 2, self.retry_max_s)
            else:
                if wrote and self.failure is not None:
                    await self._probe()
                return

    async def _apply_alone(self, op: Op[Any]) -> None:
        try:
            if await self._apply([op]) and self.failure is not None:
                await self._probe()
        except asyncio.CancelledError:
            _fail(op, RuntimeError("shutting down"), refused=False)
            raise
        except Exception as exc:  # noqa: BLE001 - whatever failed, only this operation fails
            if self._db.refused(exc):
                self._refused(exc)
            self._keep_or_fail([op], exc)

    async def _probe(self) -> None:
        """While writes fail: can a log chunk's worth be written again? (At most every
        ``probe_s``: a small write that succeeds does not tell, a disk may still be full.)"""
        now = asyncio.get_running_loop().time()
        if now - self._probed_at < self.probe_s:
            return
        self._probed_at = now
        try:
            await self._db.probe()
        except Exception as exc:
            await self._db.rollback()
            if not self._db.refused(exc):
                raise
            self._refused(exc)
        else:
            self._writable()

    def _due(self) -> bool:
        return asyncio.get_running_loop().time() - self._measured_at >= MEASURE_S

    async def _measure(self) -> None:
        self._measured_at = asyncio.get_running_loop().time()
        self._unmeasured = False
        self.used_bytes = await self._db.used_bytes()

    def _refused(self, exc: BaseException) -> None:
        self.refusals += 1
        if self.failure is None:
            log.error("store_refuses_writes", error=str(exc))
        self.failure = str(exc)

    def _writable(self) -> None:
        if self.failure is not None:
            log.info("store_writable_again", was=self.failure)
            self.failure = None

    def _keep_or_fail(self, ops: list[Op[Any]], exc: BaseException) -> None:
        for op in ops:
            if op.fut.done():
                continue
            if op.kept and self._db.refused(exc):
                self._owed.append(op)
            else:
                _fail(op, exc, refused=self._db.refused(exc))

    async def _apply(self, ops: list[Op[Any]]) -> bool:
        """Apply and commit a batch; whether it wrote anything."""
        self._stale = set()
        try:
            return await self._apply_batch(ops)
        finally:
            stale, self._stale = self._stale, None
            self._evict(list(stale))

    async def _apply_batch(self, ops: list[Op[Any]]) -> bool:
        b = Batch(self._cache, self._seq, self._submit_seq, log_caps=self.log_caps)
        results: list[tuple[Op[Any], Any]] = []
        try:
            # PostgreSQL: the log's lock, and the counters past other writers' (backend.py)
            await self._db.begin(b, self._evict)
            await self._db.preload(self._cache, self._remember, ops, b)
            for op in ops:
                try:
                    results.append((op, op.apply(b)))
                except EgwError as exc:
                    results.append((op, exc))
            wrote = b.writes_something  # (loads, replays and duplicates alone write nothing)
            if wrote:
                await self._db.write(b)
            else:
                await self._db.finish()
        except BaseException:
            await self._db.rollback()
            self._seq, self._submit_seq = await self._db.load_counters()
            raise
        if wrote:
            self._unmeasured = True
            for batch_listener in self.batch_listeners:
                batch_listener(len(ops))
        self._seq, self._submit_seq = b.seq, b.submit_seq
        for task in b.staged.values():
            self._remember(task)
        for task_id in b.commit.pruned:
            self._cache.pop(task_id, None)
        for op, result in results:
            if op.fut.done():
                continue
            if isinstance(result, BaseException):
                op.fut.set_exception(result)
            else:
                op.fut.set_result(result)
        if b.commit.events or b.commit.logs or b.commit.logs_completed or b.commit.pruned:
            b.commit.tasks = b.staged
            for listener in self.listeners:
                try:
                    listener(b.commit)
                except Exception as exc:  # noqa: BLE001 - a listener must not break the writer
                    log.error("commit_listener_failed", error=repr(exc))
        return wrote

    def forget(self, task_ids: list[str]) -> None:
        """Another replica changed these tasks (``postgres/feed.py``): drop their projections,
        after the batch being applied if any (its operations hold them)."""
        if self._stale is not None:
            self._stale.update(task_ids)
        else:
            self._evict(task_ids)

    def _evict(self, task_ids: list[str] | None) -> None:
        """Forget projections another writer changed, None: all (the preload reads again)."""
        for task_id in list(self._cache) if task_ids is None else task_ids:
            self._cache.pop(task_id, None)

    def _remember(self, task: Task) -> None:
        self._cache[task.id] = task
        self._cache.move_to_end(task.id)
        while len(self._cache) > self._cache_size:
            self._cache.popitem(last=False)


__all__ = ["Writer"]
