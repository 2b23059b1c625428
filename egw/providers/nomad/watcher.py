"""Nomad's event stream, one subscription per namespace, with blocking queries as fallback.

Each subscription asks for topics Job, Allocation and Evaluation and is filtered here to
the jobs egw tracks. Each line's ``Index`` is persisted (``sink.set_cursor``) after it is
applied; a reconnect asks for ``last + 1``. Nomad answers such a request with the last
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

from egw.background import BackgroundTasks
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

    def health(self, now: float) -> dict[str, Any]:
        return {
            "mode": self.mode,
            "refused": self.refused,
            "stream_refused": self.refused is not None,
            "silent_closes": self.silent_closes,
            "connected": self.connected,
            "last_index": self.last_index,
            "lag_s": round(now - self.last_message, 3) if self.last_message else None,
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
        ):
            sub.task = self._background.spawn(self._watch(sub), name=f"nomad_watch_{ns}")

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
        sink, ns = self._sink(), sub.namespace
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
                async for chunk in resp.content.iter_any():
                    for raw in splitter.feed(chunk):
                        line = wire.parse_stream_line(raw)
                        sub.last_message = time.monotonic()
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
                        await self._dispatch(ns, line)
                        sub.last_index = line.index
                        await sink.set_cursor(_cursor(ns), str(line.index))
                        if gap:
                            gap = False
                            sub.gaps += 1
                            log.warning(
                                "nomad_event_stream_gap",
                                namespace=ns,
                                asked=requested,
                                got=line.index,
                            )
                            await self._states.reconcile_namespace(ns)
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

    async def _dispatch(self, ns: str, line: wire.StreamLine) -> None:
        touched: dict[str, Tracked] = {}
        for ev in line.events:
            job_id = ev.job_id
            if job_id is None:
                continue
            for tracked in self._registry.of_job(ev.namespace or ns, job_id):
                if tracked.registering:
                    tracked.buffered.append(ev)
                elif tracked.job.apply(ev):
                    touched[tracked.task_id] = tracked
        for tracked in touched.values():
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
