"""Nomad's event stream, one subscription per namespace, with blocking queries as fallback.

Each subscription asks for topics Job, Allocation and Evaluation and is filtered here to
the jobs egw tracks: a line none of whose events can name a tracked job is skipped before it
is decoded (`wire.peek_stream_line`, exact). A tracked task's events are applied at once and
its evaluation (which writes to the store) runs beside the stream, one at a time per task, so
the reader never waits on the store for a line. The last ``Index`` read is persisted
(``sink.set_cursor``) whenever the reader has caught up, and at least every `CURSOR_EVERY_S`
while it is busy; it may run ahead of an evaluation still being written, which is safe
because a restarted gateway reads every task it follows again before it resumes the stream.
``stream_lag_s`` (``egw_nomad_stream_lag_seconds``) is how long the reader has been behind:
0 while it finds nothing waiting each time it comes back for more. A reconnect asks for
``last + 1``. Nomad answers such a request with the last
event again when nothing is newer (its ``StartAtClosest``), so lines at or below the
cursor are dropped; a first line beyond ``last + 1`` may mean events left Nomad's buffer:
every task of the namespace is then reconciled by reading its allocations. Events of a job
being registered are buffered until the register answer says which are ours. When the
stream is refused (403, ACL) or keeps failing, each task long-polls its allocations with
blocking queries instead, and the stream is tried again every ``stream_retry_s``.

Refused does not always look refused: since v1.11.2 and v2.0.0 the agent writes ``200 OK``
before the stream authenticates (hashicorp/nomad command/agent/event_endpoint.go), and a
token without the ACL then gets the connection closed, with no body and no heartbeat. A
subscription that ends before any line (Nomad's first line is a ``{}`` heartbeat,
nomad/stream/ndjson.go) is counted; after `SILENT_LIMIT` in a row, with backoff between
them, it is taken as refused. ``/readyz`` and ``egw_provider_health`` show it: ``mode``
``poll``, ``refused`` (why), ``silent_closes``.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import structlog

from egw.background import BackgroundTasks, cancel_and_wait
from egw.errors import CircuitOpen, ProviderError
from egw.providers.base import SinkSlot
from egw.providers.http import HTTPResponse
from egw.providers.nomad.client import JobClient, check
from egw.providers.nomad.state import JobStates
from egw.providers.nomad.tracked import Registry, Tracked
from egw.providers.retry import backoff_s, pause_s
from egw.wire import nomad as wire

log = structlog.get_logger("egw.providers.nomad")

TOPICS = ("Job", "Allocation", "Evaluation")
#: answers to a subscription that retrying will not change (no event stream, no ACL for it)
_REFUSED = (400, 401, 403, 404, 405, 501)


#: subscriptions in a row closed before any line, after which the stream counts as refused
SILENT_LIMIT = 3
#: while the stream is busy, its index is persisted at most this often (and when it is idle)
CURSOR_EVERY_S = 1.0


class _Silent(Exception):
    """The subscription answered 200 and ended before any event or heartbeat."""


class _Refused(Exception):
    """The event stream answered a final error (403 and friends): use blocking queries."""

    def __init__(self, status: int, text: str) -> None:
        super().__init__(f"HTTP {status}: {text}")
        self.status = status


@dataclass(eq=False)
class _Subscription:
    """The event-stream subscription of one namespace, and what ``/readyz`` shows of it."""

    namespace: str
    task: asyncio.Task[None] | None = None
    mode: str = "stream"
    connected: bool = False
    last_index: int | None = None
    last_message: float | None = None
    reconnects: int = 0
    gaps: int = 0
    repeated: int = 0
    silent_closes: int = 0
    #: why the stream is taken as refused (None while it works)
    refused: str | None = None
    #: batches decoded (they may concern egw) and skipped undecoded (they cannot)
    decoded: int = 0
    skipped: int = 0
    #: since when the reader has found bytes waiting each time it came back for more
    behind_since: float | None = None
    backlog_bytes: int = 0
    #: the index last persisted, and when the cursor was last considered
    saved_index: int | None = None
    saved_at: float = 0.0

    def behind(self, waiting: int) -> None:
        """Note what the reader found waiting when it came back for more (0: caught up)."""
        self.backlog_bytes = waiting
        if not waiting:
            self.behind_since = None
        elif self.behind_since is None:
            self.behind_since = time.monotonic()

    def lag_s(self, now: float) -> float:
        """How long the reader has been behind: 0 while every time it came back for more it
        found nothing waiting, else the time since it last did."""
        return 0.0 if self.behind_since is None else now - self.behind_since

    def health(self, now: float) -> dict[str, Any]:
        return {
            "stream_lag_s": round(self.lag_s(now), 3) if self.connected else None,
            "backlog_bytes": self.backlog_bytes,
            "batches_decoded": self.decoded,
            "batches_skipped": self.skipped,
            "mode": self.mode,
            "refused": self.refused,
            "stream_refused": self.refused is not None,
            "silent_closes": self.silent_closes,
            "connected": self.connected,
            "last_index": self.last_index,
            "idle_s": round(now - self.last_message, 3) if self.last_message else None,
            "reconnects": self.reconnects,
            "gaps": self.gaps,
            "repeated_dropped": self.repeated,
        }


def _cursor(ns: str) -> str:
    return f"nomad:event_index:{ns}"


class EventWatcher:
    """Keeps one subscription per namespace alive and feeds its events to `JobStates`."""

    def __init__(
        self,
        client: JobClient,
        sink: SinkSlot,
        registry: Registry,
        states: JobStates,
        background: BackgroundTasks,
    ) -> None:
        self._client = client
        self._cfg = client.cfg
        self._sink = sink
        self._registry = registry
        self._states = states
        self._background = background
        self._subs: dict[str, _Subscription] = {}

    def ensure(self, ns: str) -> None:
        """Subscribe to ``ns`` unless already subscribed (once the provider is started)."""
        sub = self._subs.get(ns)
        if sub is None:
            sub = self._subs[ns] = _Subscription(ns)
        if (
            (sub.task is None or sub.task.done())
            and self._sink.started
            and not self._registry.closed
            and not self._registry.standby
        ):
            sub.task = self._background.spawn(self._watch(sub), name=f"nomad_watch_{ns}")

    async def stop_all(self) -> None:
        """End every subscription now (the stream's lease is lost: another replica's turn);
        each resumes from its stored cursor when `ensure` starts it again."""
        subs, self._subs = list(self._subs.values()), {}
        await asyncio.gather(*(cancel_and_wait(sub.task) for sub in subs))

    def connected(self, ns: str) -> bool:
        sub = self._subs.get(ns)
        return sub is not None and sub.connected

    def polling(self, ns: str) -> bool:
        sub = self._subs.get(ns)
        return sub is not None and sub.mode == "poll"

    def health(self) -> Mapping[str, Any]:
        now = time.monotonic()
        return {ns: sub.health(now) for ns, sub in self._subs.items()}

    async def _watch(self, sub: _Subscription) -> None:
        stored = await self._sink().get_cursor(_cursor(sub.namespace))
        sub.last_index = int(stored) if stored and stored.isdigit() else None
        retry = self._client.retry
        failures = silent = 0
        while not self._registry.closed:
            try:
                await self._stream(sub)
                failures, silent, delay = 0, 0, backoff_s(retry, 1)
                sub.refused = None
            except _Refused as exc:
                log.warning(
                    "nomad_event_stream_refused",
                    namespace=sub.namespace,
                    status=exc.status,
                    error=str(exc),
                )
                sub.refused = str(exc)
                await self._poll_for_a_while(sub)
                continue
            except _Silent:
                silent += 1
                sub.silent_closes += 1
                log.warning(
                    "nomad_event_stream_closed_silently", namespace=sub.namespace, attempt=silent
                )
                if silent >= SILENT_LIMIT:
                    silent = 0
                    sub.refused = (
                        f"closed {SILENT_LIMIT} times in a row before any event or heartbeat "
                        "(Nomad 1.11.2+ answers 200, then closes, for a token without the ACL "
                        "for the event stream)"
                    )
                    await self._poll_for_a_while(sub)
                    continue
                delay = backoff_s(retry, silent)
            except asyncio.CancelledError:
                raise
            except CircuitOpen as exc:  # not even tried: sleep until the breaker lets a probe by
                log.info("nomad_event_stream_paused", namespace=sub.namespace, error=exc.message)
                delay = pause_s(retry, 1, exc)
            # network, 5xx, a malformed line, a sink failure: the stream must outlive them all
            except Exception as exc:  # noqa: BLE001
                failures += 1
                log.warning(
                    "nomad_event_stream_failed",
                    namespace=sub.namespace,
                    attempt=failures,
                    error=repr(exc),
                )
                if failures >= max(3, retry.attempts):
                    failures = 0
                    await self._poll_for_a_while(sub)
                    continue
                delay = backoff_s(retry, failures)
            sub.reconnects += 1
            await asyncio.sleep(delay)

    async def _stream(self, sub: _Subscription) -> None:
        """One subscription, until it ends (event-stream.md)."""
        ns = sub.namespace
        requested = sub.last_index + 1 if sub.last_index is not None else 0
        params: list[tuple[str, str]] = [("namespace", ns)] + [("topic", t) for t in TOPICS]
        if requested:
            params.append(("index", str(requested)))
        if self._cfg.region:
            params.append(("region", self._cfg.region))
        try:
            async with self._client.stream(
                "/v1/event/stream", what="event stream", params=params
            ) as resp:
                if resp.status != 200:
                    text = (await resp.read()).decode("utf-8", "replace").strip()
                    if resp.status in _REFUSED:
                        raise _Refused(resp.status, text)
                    check(HTTPResponse(resp.status, {}, text.encode()))
                splitter, first, gap, heard = wire.NdjsonSplitter(), True, False, False
                reader, jobs = resp.content, self._registry.job_ids
                while True:
                    # what already waits in the buffer means the reader is behind the stream
                    chunk = reader.read_nowait()
                    if chunk:
                        sub.behind(len(chunk))
                        await asyncio.sleep(0)  # let evaluations and SSE flushes run between
                    else:
                        sub.behind(0)
                        if sub.last_index is not None and sub.saved_index != sub.last_index:
                            await self._save(sub)  # caught up: a good moment to write
                        chunk = await reader.readany()
                        if not chunk:
                            break
                    for raw in splitter.feed(chunk):
                        line = wire.peek_stream_line(raw, jobs)
                        if not heard:  # a 200 alone proves nothing (see the module docstring)
                            heard = True
                            self._live(sub, requested)
                        if line.index is None:
                            continue
                        if first:
                            first, gap = False, bool(requested) and line.index > requested
                        if sub.last_index is not None and line.index <= sub.last_index:
                            sub.repeated += 1  # the last event again, on resume
                            continue
                        if line.events:
                            sub.decoded += 1
                            self._dispatch(ns, line)
                        else:
                            sub.skipped += 1
                        sub.last_index = line.index
                        if gap:
                            gap = False
                            sub.gaps += 1
                            log.warning(
                                "nomad_event_stream_gap",
                                namespace=ns,
                                asked=requested,
                                got=line.index,
                            )
                            await self._save(sub)
                            await self._states.reconcile_namespace(ns)
                    sub.last_message = time.monotonic()
                    if sub.last_message - sub.saved_at >= CURSOR_EVERY_S:
                        await self._save(sub)
                if not heard:
                    raise _Silent
        finally:
            sub.connected = False

    def _live(self, sub: _Subscription, requested: int) -> None:
        """The subscription spoke: it is connected, and the stream takes over from polling."""
        ns = sub.namespace
        sub.connected, sub.refused = True, None
        if sub.mode == "poll":
            sub.mode = "stream"
            self._stop_pollers(ns)
        if sub.last_index is None:  # nothing to resume from
            _ = self._background.spawn(self._states.reconcile_namespace(ns), name="nomad_reconcile")
        log.info("nomad_event_stream_connected", namespace=ns, index=requested)

    async def _save(self, sub: _Subscription) -> None:
        """Persist the subscription's index (what a reconnect or a restart resumes from)."""
        sub.saved_at = time.monotonic()
        if sub.last_index is not None and sub.saved_index != sub.last_index:
            sub.saved_index = sub.last_index
            await self._sink().set_cursor(_cursor(sub.namespace), str(sub.last_index))

    def _dispatch(self, ns: str, line: wire.StreamLine) -> None:
        """Apply a batch's events to the tasks they concern; their evaluation (which may
        write to the store) runs beside the stream, which reads on meanwhile."""
        for ev in line.events:
            job_id = ev.job_id
            if job_id is None:
                continue
            for tracked in self._registry.of_job(ev.namespace or ns, job_id):
                if tracked.registering:
                    tracked.buffered.append(ev)
                elif tracked.job.apply(ev):
                    self._evaluate_soon(tracked)

    def _evaluate_soon(self, tracked: Tracked) -> None:
        """One evaluation at a time per task; events that come meanwhile make it run again."""
        tracked.stale = True
        if tracked.evaluating is None or tracked.evaluating.done():
            tracked.evaluating = self._background.spawn(
                self._evaluate(tracked), name="nomad_evaluate"
            )

    async def _evaluate(self, tracked: Tracked) -> None:
        while tracked.stale:
            tracked.stale = False
            await self._states.evaluate(tracked)

    # --- fallback: blocking queries ---------------------------------------------------------

    async def _poll_for_a_while(self, sub: _Subscription) -> None:
        sub.mode = "poll"
        for tracked in self._registry.in_namespace(sub.namespace):
            self.start_poller(tracked)
        await asyncio.sleep(self._cfg.stream_retry_s)

    def start_poller(self, tracked: Tracked) -> None:
        if tracked.poller is None or tracked.poller.done():
            tracked.poller = self._background.spawn(self._poll(tracked), name="nomad_poll")

    def _stop_pollers(self, ns: str) -> None:
        for tracked in self._registry.tasks.values():
            if tracked.namespace == ns and tracked.poller is not None:
                tracked.poller.cancel()
                tracked.poller = None

    async def _poll(self, tracked: Tracked) -> None:
        """Long-poll one task's allocations until its logs are complete (common.md)."""
        retry = self._client.retry
        index, failures = 0, 0
        while not tracked.logs.completed and not (
            tracked.status.terminal and not tracked.job.live_allocs()
        ):
            try:
                index = await self._client.refresh(
                    tracked, index=index or None, wait_s=self._cfg.blocking_wait_s
                )
                failures = 0
            except ProviderError as exc:
                failures += 1
                log.warning("nomad_poll_failed", task_id=tracked.task_id, error=str(exc))
                await asyncio.sleep(pause_s(retry, failures, exc))
                continue
            await asyncio.shield(self._states.evaluate(tracked))
            if not index:  # no X-Nomad-Index: no blocking either, so do not spin
                await asyncio.sleep(backoff_s(retry, 3))
