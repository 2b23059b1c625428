"""Nomad task output into egw's log store: one follower per (allocation, task, stream).

A follower reads ``/v1/client/fs/logs`` with ``follow=true`` from the offset persisted in
a cursor. When the allocation ends (or ``log_grace_s`` after egw ended the task) it stops
following, drains the rest with ``follow=false`` and exits; Nomad's own follow never ends.
A new allocation is a new segment (``sink.progress``), read after the previous segment of
the same stream. When the task is terminal and every follower is done,
``sink.logs_complete`` is called once. Output and its offset are two writes: `close` lets
the pair finish, a hard crash between them repeats that one chunk.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Mapping
from typing import Any
from urllib.parse import quote

import structlog

from egw.background import BackgroundTasks
from egw.config import NomadConfig, RetryConfig
from egw.core.chunks import Utf8Boundary
from egw.core.model import STREAMS
from egw.errors import ProviderError, ProviderUnavailable
from egw.providers.base import SinkSlot
from egw.providers.http import HTTPResponse
from egw.providers.nomad.client import SOURCE, JobClient, check
from egw.providers.nomad.tracked import Registry, Tracked
from egw.providers.retry import backoff_s
from egw.wire import nomad as wire

log = structlog.get_logger("egw.providers.nomad")


def _retrieve(future: asyncio.Future[Any]) -> None:
    """Mark a read's outcome as seen (it may end after its follower stopped waiting)."""
    if not future.cancelled():
        future.exception()


class LogFollower:
    """Starts, chains and completes the log followers of every tracked task."""

    def __init__(
        self, client: JobClient, sink: SinkSlot, registry: Registry, background: BackgroundTasks
    ) -> None:
        self._client = client
        self._sink = sink
        self._registry = registry
        self._background = background
        self._deliveries: set[asyncio.Future[None]] = set()

    @property
    def _cfg(self) -> NomadConfig:
        return self._client.cfg

    @property
    def _retry(self) -> RetryConfig:
        return self._client.retry

    def running(self) -> int:
        """Followers still reading, over every task."""
        return sum(
            1
            for t in self._registry.tasks.values()
            for f in t.logs.followers.values()
            if not f.done()
        )

    async def close(self) -> None:
        """Stop every follower, letting a started (output, offset) pair finish."""
        followers = [f for t in self._registry.tasks.values() for f in t.logs.followers.values()]
        for tracked in self._registry.tasks.values():
            if tracked.logs.grace is not None:
                tracked.logs.grace.cancel()
        for follower in followers:
            follower.cancel()
        await asyncio.gather(*followers, return_exceptions=True)
        await asyncio.gather(*self._deliveries, return_exceptions=True)

    def start_grace(self, tracked: Tracked) -> None:
        """The task is terminal: followers stop following ``log_grace_s`` from now at latest."""
        if tracked.logs.grace is None:
            loop = asyncio.get_running_loop()
            tracked.logs.grace = loop.call_later(self._cfg.log_grace_s, self._grace_over, tracked)

    @staticmethod
    def _grace_over(tracked: Tracked) -> None:
        tracked.logs.grace_over = True
        for done in tracked.logs.alloc_done.values():
            done.set()

    async def sync(self, tracked: Tracked) -> None:
        """Note new allocations (log segments) and start a follower per started task and stream."""
        sink, logs = self._sink(), tracked.logs
        for alloc in tracked.job.own_allocs():
            alloc_id = str(alloc["ID"])
            if alloc_id not in logs.segments:
                logs.segments.append(alloc_id)
                await sink.progress(
                    tracked.task_id,
                    "nomad.allocation",
                    {
                        "alloc_id": alloc_id,
                        "segment": len(logs.segments),
                        "name": alloc.get("Name"),
                        "node_id": alloc.get("NodeID") or None,
                        "previous_alloc": alloc.get("PreviousAllocation") or None,
                    },
                    source=SOURCE,
                    delivery_id=f"nomad:{tracked.task_id}:alloc:{alloc_id}",
                )
            done = logs.alloc_done.setdefault(alloc_id, asyncio.Event())
            if alloc.get("ClientStatus") in wire.TERMINAL_CLIENT or logs.grace_over:
                done.set()
            for task_name, ts in sorted((alloc.get("TaskStates") or {}).items()):
                if not isinstance(ts, Mapping) or not wire.task_started(ts):
                    continue
                for stream in STREAMS:
                    key = (alloc_id, task_name, stream)
                    if key in logs.followers:
                        continue
                    previous = logs.chain.get((task_name, stream))
                    follower = asyncio.ensure_future(
                        self._follow(tracked, alloc_id, task_name, stream, done, previous)
                    )
                    follower.add_done_callback(functools.partial(self._follower_done, tracked))
                    logs.followers[key] = logs.chain[(task_name, stream)] = follower

    def _follower_done(self, tracked: Tracked, _: object = None) -> None:
        if not self._registry.closed:
            _ = self._background.spawn(self.maybe_complete(tracked), name="nomad_logs_complete")

    async def maybe_complete(self, tracked: Tracked) -> None:
        """Say that the task's output is all in, once: terminal and every follower done."""
        if tracked.logs.completed or tracked.registering or not tracked.status.terminal:
            return
        if tracked.logs.following():
            return
        tracked.logs.completed = True
        self._registry.remove(tracked)
        await self._sink().logs_complete(tracked.task_id)
        log.info(
            "nomad_logs_complete", task_id=tracked.task_id, segments=len(tracked.logs.segments)
        )

    async def _follow(
        self,
        tracked: Tracked,
        alloc_id: str,
        task_name: str,
        stream: str,
        done: asyncio.Event,
        previous: asyncio.Task[None] | None,
    ) -> None:
        """Tail one allocation's task stream into egw's log store, resumably."""
        if previous is not None:
            await asyncio.wait([previous])  # segments of a stream stay in order
        key = f"nomad:log:{alloc_id}:{task_name}:{stream}"
        stored = await self._sink().get_cursor(key)
        offset = int(stored) if stored and stored.isdigit() else 0
        failures = 0
        while True:
            final = done.is_set()
            try:
                offset = await self._read(
                    tracked,
                    alloc_id,
                    task_name,
                    stream,
                    offset,
                    cursor=key,
                    follow=not final,
                    done=done,
                )
            except ProviderError as exc:
                failures += 1
                if final and (exc.upstream_status == 404 or failures >= self._retry.attempts):
                    log.warning(
                        "nomad_logs_given_up",
                        task_id=tracked.task_id,
                        alloc_id=alloc_id,
                        stream=stream,
                        error=str(exc),
                    )
                    return
                await asyncio.sleep(backoff_s(self._retry, failures))
                continue
            if final:
                return
            if not done.is_set():  # the server ended a follow: reconnect after a pause
                await asyncio.sleep(backoff_s(self._retry, 1))

    async def _deliver(
        self, task_id: str, stream: str, text: bytes, cursor: str, offset: int
    ) -> None:
        """Store output, then its end offset; a `close` in between would make a restarted
        gateway read the chunk twice, so the pair is shielded and `close` waits for it."""
        sink = self._sink()

        async def both() -> None:
            if text:
                await sink.append_log(task_id, stream, text)
            await sink.set_cursor(cursor, str(offset))

        delivery = asyncio.ensure_future(both())
        self._deliveries.add(delivery)
        delivery.add_done_callback(self._deliveries.discard)
        await asyncio.shield(delivery)

    async def _read(
        self,
        tracked: Tracked,
        alloc_id: str,
        task_name: str,
        stream: str,
        offset: int,
        *,
        cursor: str,
        follow: bool,
        done: asyncio.Event,
    ) -> int:
        """One ``/v1/client/fs/logs`` request from ``offset``; returns the new offset. A follow
        returns when ``done`` is set; a drain (``follow=false``) at the end of the logs."""
        params = self._client.params(
            tracked.namespace,
            tracked.region,
            {
                "task": task_name,
                "type": stream,
                "origin": "start",
                "offset": str(offset),
                "follow": "true" if follow else "false",
            },
        )
        decoder, chunker, raw = wire.FrameDecoder(), Utf8Boundary(), offset
        stop: asyncio.Future[Any] | None = None
        try:
            async with self._client.stream(
                f"/v1/client/fs/logs/{quote(alloc_id, safe='')}",
                what=f"logs of {alloc_id}",
                params=params,
            ) as resp:
                if resp.status != 200:
                    check(HTTPResponse(resp.status, {}, await resp.read()))
                stop = asyncio.ensure_future(done.wait()) if follow else None
                while True:
                    read = asyncio.ensure_future(resp.content.readany())
                    read.add_done_callback(_retrieve)
                    try:
                        await asyncio.wait(
                            {read} | ({stop} if stop else set()),
                            return_when=asyncio.FIRST_COMPLETED,
                        )
                    finally:
                        if not read.done():
                            read.cancel()
                    if not read.done() or read.cancelled():
                        break  # the allocation ended: stop following
                    chunk = read.result()
                    if not chunk:
                        break
                    for frame in decoder.feed(chunk):
                        if frame.file_event:
                            log.info(
                                "nomad_log_file_event",
                                alloc_id=alloc_id,
                                event=frame.file_event,
                                file=frame.file,
                            )
                        if not frame.data:
                            continue
                        raw += len(frame.data)
                        text = chunker.feed(frame.data)
                        await self._deliver(
                            tracked.task_id, stream, text, cursor, raw - chunker.pending
                        )
                if not follow:
                    tail = chunker.flush()  # an unfinished character at the very end
                    await self._deliver(tracked.task_id, stream, tail, cursor, raw)
                    return raw
        except ValueError as exc:  # a malformed frame: read again from the last offset
            raise ProviderUnavailable(f"nomad: logs of {alloc_id}: {exc}", provider=SOURCE) from exc
        finally:
            if stop is not None:
                stop.cancel()
        return raw - chunker.pending
