"""Nomad task output into egw's log store: one follower per (allocation, task, stream).

A follower (`Follower`, a record) reads ``/v1/client/fs/logs`` with ``follow=true`` from
the offset persisted in a cursor while it holds a live slot; without one it is caught up by
one ``follow=false`` read at a time and parked in between, with no coroutine (see
`egw.providers.nomad.slots`); the two streams of a task share one listing of its files when
neither has anything new. When the allocation ends (or ``log_grace_s`` after egw ended the
task) it stops following, drains the rest with ``follow=false`` and is done; Nomad's own
follow never ends. A new allocation is a new segment (``sink.progress``), read after the
previous segment of the same stream. When the task is terminal and every follower is done,
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
from egw.errors import CircuitOpen, ProviderError, ProviderUnavailable
from egw.providers.base import SinkSlot
from egw.providers.http import HTTPResponse
from egw.providers.nomad.client import SOURCE, JobClient, check
from egw.providers.nomad.cursor import RELANDS, Cursor, Plan, Relanded
from egw.providers.nomad.slots import LogSlots, Turn
from egw.providers.nomad.tracked import Follower, Registry, Tracked
from egw.providers.retry import backoff_s, pause_s
from egw.wire import nomad as wire

log = structlog.get_logger("egw.providers.nomad")


def _retrieve(future: asyncio.Future[Any]) -> None:
    """Mark a read's outcome as seen (it may end after its follower stopped waiting)."""
    if not future.cancelled():
        future.exception()


class LogFollower:
    """Starts, chains and completes the log followers of every tracked task."""

    def __init__(
        self,
        client: JobClient,
        sink: SinkSlot,
        registry: Registry,
        background: BackgroundTasks,
        slots: LogSlots,
    ) -> None:
        self._client = client
        self._slots = slots
        self._sink = sink
        self._registry = registry
        self._background = background
        self._deliveries: set[asyncio.Future[int]] = set()
        #: the tasks clients tail (any provider's: the service says so to every provider)
        self._tailed: set[str] = set()

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
            if not f.finished
        )

    def attention(self, task_id: str, tailed: bool) -> None:
        """A client began (or the last one ceased) tailing the task: its streams go before
        the others for live slots (see `egw.providers.nomad.slots`)."""
        if tailed:
            self._tailed.add(task_id)
        else:
            self._tailed.discard(task_id)
        tracked = self._registry.get(task_id)
        if tracked is not None:
            for follower in tracked.logs.followers.values():
                self._slots.attend(follower.turn, tailed)

    async def close(self) -> None:
        """Stop every follower, letting a started (output, offset) pair finish."""
        runs = []
        for tracked in self._registry.tasks.values():
            if tracked.logs.grace is not None:
                tracked.logs.grace.cancel()
            for follower in tracked.logs.followers.values():
                follower.finished = True  # parked: never read again
                if follower.run is not None:
                    follower.run.cancel()
                    runs.append(follower.run)
        await asyncio.gather(*runs, return_exceptions=True)
        await asyncio.gather(*self._deliveries, return_exceptions=True)
        await self._slots.close()

    def start_grace(self, tracked: Tracked) -> None:
        """The task is terminal: followers stop following ``log_grace_s`` from now at latest."""
        if tracked.logs.grace is None:
            loop = asyncio.get_running_loop()
            tracked.logs.grace = loop.call_later(self._cfg.log_grace_s, self._grace_over, tracked)

    @staticmethod
    def _grace_over(tracked: Tracked) -> None:
        tracked.logs.grace_over = True
        for alloc_id in tracked.logs.segments:
            tracked.logs.end(alloc_id)

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
            if alloc.get("ClientStatus") in wire.TERMINAL_CLIENT or logs.grace_over:
                logs.end(alloc_id)
            for task_name, ts in sorted((alloc.get("TaskStates") or {}).items()):
                if not isinstance(ts, Mapping) or not wire.task_started(ts):
                    continue
                for stream in STREAMS:
                    key = (alloc_id, task_name, stream)
                    if key in logs.followers:
                        continue
                    turn = Turn(tailed=tracked.task_id in self._tailed)
                    follower = Follower(alloc_id, task_name, stream, turn)
                    turn.resume = functools.partial(self._run, tracked, follower)
                    previous = logs.chain.get((task_name, stream))
                    logs.followers[key] = logs.chain[(task_name, stream)] = follower
                    if previous is None or previous.finished:
                        self._run(tracked, follower)
                    else:
                        previous.after = follower  # segments of a stream stay in order

    def _run(self, tracked: Tracked, follower: Follower) -> None:
        """Read the follower's stream now, until it is parked or finished."""
        if follower.finished or tracked.logs.completed:
            return
        run = asyncio.ensure_future(self._follow(tracked, follower))
        follower.run = run
        run.add_done_callback(functools.partial(self._ran, tracked, follower))

    def _ran(self, tracked: Tracked, follower: Follower, run: asyncio.Task[bool]) -> None:
        """A read of the follower ended: parked (it resumes itself), or finished."""
        if follower.run is run:
            follower.run = None
        if not run.cancelled() and run.exception() is None and not run.result():
            return  # parked
        if not run.cancelled() and run.exception() is not None:
            log.error(
                "nomad_log_follower_failed",
                task_id=tracked.task_id,
                alloc_id=follower.alloc_id,
                stream=follower.stream,
                error=repr(run.exception()),
            )
        follower.finished = True
        self._slots.leave(follower.turn)
        if follower.after is not None:
            self._run(tracked, follower.after)
        if not self._registry.closed:
            _ = self._background.spawn(self.maybe_complete(tracked), name="nomad_logs_complete")

    async def stop(self, tracked: Tracked) -> None:
        """Stop following ``tracked`` at once (a replaced attempt's: its output never says it
        is complete), once a started (output, offset) pair is stored."""
        runs = tracked.logs.stop()
        for follower in tracked.logs.followers.values():
            self._slots.leave(follower.turn)
        await asyncio.gather(*runs, return_exceptions=True)
        await self.settle()

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

    async def settle(self) -> None:
        """Until every started (output, offset) pair is stored (see `_deliver`)."""
        await asyncio.gather(*self._deliveries, return_exceptions=True)

    async def _follow(self, tracked: Tracked, follower: Follower) -> bool:
        """Tail one allocation's task stream into egw's log store, resumably: live while it
        holds a slot, else one catch-up read, after which it is parked (False). True once
        the allocation ended and the stream is drained (or given up)."""
        cur = follower.cursor
        if cur is None:
            key = f"nomad:log:{follower.alloc_id}:{follower.task}:{follower.stream}"
            stored = wire.parse_cursor(await self._sink().get_cursor(key))
            cur = follower.cursor = Cursor(
                tracked.task_id,
                follower.alloc_id,
                follower.task,
                follower.stream,
                key,
                pos=stored if isinstance(stored, wire.LogPosition) else None,
                legacy=stored if isinstance(stored, int) else None,
            )
            if stored is None:
                cur.pos = wire.LogPosition(0, 0)
        failures = relands = 0
        slots, turn = self._slots, follower.turn
        while True:
            final = follower.alloc_id in tracked.logs.ended
            if turn.demoted:
                slots.give_back(turn)  # granted while parked or reading, then preempted
            live = turn.live or (not final and slots.take(turn))
            if not live and not final and tracked.logs.sibling_catching_up(follower):
                # the listing the other stream is making shows this one too (`_listing`)
                slots.park(turn)
                return False
            try:
                if live or final:
                    await self._read(
                        tracked, cur, follow=live and not final, final=final,
                        recheck=relands < RELANDS, turn=turn,
                    )  # fmt: skip
                else:  # no live slot: read what is on disk now
                    slots.catchup_reads += 1
                    async with slots.catchup_gate:
                        follower.catching = True
                        try:
                            await self._read(
                                tracked, cur, follow=False, final=False,
                                recheck=relands < RELANDS, turn=turn,
                            )  # fmt: skip
                        finally:
                            follower.catching = False
            except Relanded:
                relands += 1  # a rotation between the listing and the read: list again
                continue
            except CircuitOpen as exc:  # not tried: no failure of the read; wait for it
                await asyncio.sleep(pause_s(self._retry, 1, exc))
                continue
            except ProviderError as exc:
                failures += 1
                if final and (exc.upstream_status == 404 or failures >= self._retry.attempts):
                    log.warning(
                        "nomad_logs_given_up",
                        task_id=tracked.task_id,
                        alloc_id=follower.alloc_id,
                        stream=follower.stream,
                        error=str(exc),
                    )
                    return True
                await asyncio.sleep(backoff_s(self._retry, failures))
                continue
            relands = 0
            if final:
                return True
            if turn.demoted:  # a tailed stream takes the slot: caught up from here on
                slots.give_back(turn)
                live = False
            if not live:
                # until its next catch-up read, a grant or its allocation's end
                slots.park(turn)
                return False
            if follower.alloc_id not in tracked.logs.ended:
                # the server ended a follow: reconnect after a pause
                await asyncio.sleep(backoff_s(self._retry, 1))

    async def _deliver(
        self, task_id: str, stream: str, text: bytes, cursor: str, value: str
    ) -> None:
        """Store output and its end position in one commit (`ProviderSink.append_output`):
        a gateway killed around it neither loses nor repeats the chunk on its restart or on
        the next holder of the stream's lease. Shielded, so that `close` waits for it."""
        chunks = [(stream, text)] if text else []
        both = self._sink().append_output(task_id, chunks, cursor=(cursor, value))
        delivery = asyncio.ensure_future(both)
        self._deliveries.add(delivery)
        delivery.add_done_callback(self._deliveries.discard)
        await asyncio.shield(delivery)

    async def _listing(self, tracked: Tracked, cur: Cursor) -> dict[int, int] | None:
        """The stream's log files on disk and their sizes (``/v1/client/fs/ls``); None when
        the token may read logs but not list files (``read-logs`` without ``read-fs``)."""
        try:
            resp = await self._client.request(
                "GET",
                f"/v1/client/fs/ls/{quote(cur.alloc_id, safe='')}",
                ns=tracked.namespace,
                region=tracked.region,
                params={"path": "alloc/logs"},
            )
        except ProviderError as exc:
            if exc.upstream_status == 403:
                return None
            raise
        listing = resp.json()
        # the same listing shows the other stream of the task: if it is parked with nothing
        # new either, its own catch-up is put off (one listing per allocation at rest)
        for other in STREAMS:
            sibling = tracked.logs.followers.get((cur.alloc_id, cur.task, other))
            if (
                other != cur.stream
                and sibling is not None
                and sibling.turn.parked is not None
                and sibling.cursor is not None
                and sibling.cursor.at_end(wire.disk_files(listing, cur.task, other))
            ):
                self._slots.repark(sibling.turn)
        return wire.disk_files(listing, cur.task, cur.stream)

    async def _gap(self, cur: Cursor, to: wire.LogPosition, lost: int | None) -> None:
        """Bytes that Nomad rotated away before egw read them: said on the task, once."""
        assert cur.pos is not None
        files = (f"alloc/logs/{cur.task}.{cur.stream}.{n}" for n in (cur.pos.file, to.file))
        from_file, to_file = files
        log.warning("nomad_log_gap", task_id=cur.task_id, alloc_id=cur.alloc_id, bytes_lost=lost)
        await self._sink().progress(
            cur.task_id,
            "nomad.log_gap",
            {
                "alloc_id": cur.alloc_id,
                "stream": cur.stream,
                "bytes_lost": lost,
                "from_file": from_file,
                "to_file": to_file,
            },
            source=SOURCE,
            delivery_id=f"nomad:{cur.task_id}:log_gap:{cur.key}:{cur.pos.encode()}:{to.encode()}",
        )

    async def _read(
        self,
        tracked: Tracked,
        cur: Cursor,
        *,
        follow: bool,
        final: bool,
        recheck: bool,
        turn: Turn,
    ) -> None:
        """One ``/v1/client/fs/logs`` request from ``cur``. A follow returns when the
        allocation ends or the stream is preempted (``turn.demoted``), between two frames
        (both poke the turn); a catch-up or a drain (``follow=false``) at the end of the
        logs on disk; only the drain (``final``) stores an unfinished character at the very end.

        hashicorp/nomad client/fs_endpoint.go ``logsImpl``/``findClosest``: ``offset`` counts
        from the lowest log file still on disk, so the cursor (file, offset in it) is mapped
        through a listing of the files; each frame's ``File`` and ``Offset`` (the end of its
        data in that file) say where its bytes really are."""
        files = await self._listing(tracked, cur)
        plan = cur.plan(files)
        if not follow and cur.at_end(files):
            return  # nothing on disk past the cursor: a catch-up at rest is one listing
        params = self._client.params(
            tracked.namespace,
            tracked.region,
            {
                "task": cur.task,
                "type": cur.stream,
                "origin": "start",
                "offset": str(plan.offset),
                "follow": "true" if follow else "false",
            },
        )
        decoder, chunker = wire.FrameDecoder(), Utf8Boundary()
        first = True

        def stopping() -> bool:
            return follow and (turn.demoted or cur.alloc_id in tracked.logs.ended)

        try:
            async with self._client.stream(
                f"/v1/client/fs/logs/{quote(cur.alloc_id, safe='')}",
                what=f"logs of {cur.alloc_id}",
                params=params,
                session=self._slots.session(),
            ) as resp:
                if resp.status != 200:
                    check(HTTPResponse(resp.status, {}, await resp.read()))
                while not stopping():
                    read = asyncio.ensure_future(resp.content.readany())
                    read.add_done_callback(_retrieve)
                    either: set[asyncio.Future[Any]] = {read, turn.wake_on()} if follow else {read}
                    try:
                        await asyncio.wait(either, return_when=asyncio.FIRST_COMPLETED)
                    finally:
                        if not read.done():
                            read.cancel()
                    if not read.done() or read.cancelled():
                        break  # poked: the allocation ended, or the stream is preempted
                    chunk = read.result()
                    if not chunk:
                        break
                    for frame in decoder.feed(chunk):
                        if frame.file_event:
                            log.info(
                                "nomad_log_file_event",
                                alloc_id=cur.alloc_id,
                                event=frame.file_event,
                                file=frame.file,
                            )
                        if not frame.data:
                            continue
                        data = await self._place(cur, frame, plan if first else None, recheck)
                        first = False
                        if data:
                            text = chunker.feed(data)
                            value = cur.stored(chunker.pending)
                            await self._deliver(cur.task_id, cur.stream, text, cur.key, value)
                if final and cur.pos is not None:
                    tail = chunker.flush()  # an unfinished character at the very end
                    await self._deliver(cur.task_id, cur.stream, tail, cur.key, cur.pos.encode())
                elif chunker.pending and cur.pos is not None:
                    # held back (its cursor says so): the next read starts with those bytes
                    back = wire.parse_cursor(cur.stored(chunker.pending))
                    if isinstance(back, wire.LogPosition):
                        cur.pos, cur.prev_end = back, None
        except ValueError as exc:  # a malformed frame: read again from the last offset
            raise ProviderUnavailable(
                f"nomad: logs of {cur.alloc_id}: {exc}", provider=SOURCE
            ) from exc

    async def _place(
        self, cur: Cursor, frame: wire.LogFrame, plan: Plan | None, recheck: bool
    ) -> bytes:
        """The part of a frame's data that comes after the cursor, moving the cursor past it;
        a jump forward that skips bytes is a rotation gap (or, on the first frame of a
        read, a rotation since the listing: `Relanded`)."""
        data, index = frame.data, wire.file_index(frame.file)
        if index is None or frame.offset is None:  # no position: take it as it comes
            if cur.pos is not None:
                cur.pos = wire.LogPosition(cur.pos.file, cur.pos.offset + len(data))
            return data
        end = wire.LogPosition(index, frame.offset)
        start = wire.LogPosition(index, frame.offset - len(data))
        if cur.pos is None:  # an old byte-count cursor that the listing could not place
            cur.pos = start
        if end <= cur.pos:
            return b""  # already stored
        if start < cur.pos:
            data, start = data[cur.pos.offset - start.offset :], cur.pos
        contiguous = True
        if start != cur.pos:
            if plan is not None:
                if plan.expect is not None and start != plan.expect and recheck:
                    moved = wire.bytes_between(plan.expect, start, plan.sizes, plan.full)
                    if moved != 0:
                        raise Relanded
                lost = wire.bytes_between(cur.pos, start, plan.sizes, plan.full)
            else:  # within one read: Nomad read the previous file to its end, a full one
                full = cur.pos.offset or None
                lost = wire.bytes_between(cur.pos, start, {cur.pos.file: cur.pos.offset}, full)
            if lost != 0:
                await self._gap(cur, start, lost)
                contiguous = False
        if end.file != cur.pos.file:
            cur.prev_end = cur.pos if contiguous else None
        cur.pos = end
        return data
