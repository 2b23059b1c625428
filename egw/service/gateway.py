"""`GatewayLog`: the gateway's own events (a circuit breaker's moves), written and read.

They concern no task, so they are not rows of the task event log (whose every row has
a task, its stream and its retention): they go to their own table
(``migrations/0003_circuit.sql``) through the same single writer, and are read with
``GET /v1/gateway/events``. A breaker moves inside an upstream call, synchronously; the
write is queued from there and never delays or fails that call.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import structlog

from egw.background import BackgroundTasks
from egw.core.circuit import Transition
from egw.core.records import GatewayEvent
from egw.errors import EgwError
from egw.store import Store

log = structlog.get_logger("egw.service.gateway")


class GatewayLog:
    def __init__(self, store: Store) -> None:
        self._store = store
        self._background = BackgroundTasks("gateway_log")

    def circuit_moved(self, provider: str, target: str, moved: Transition) -> None:
        """Record a breaker's move (called by the breakers' listener, from inside a call)."""
        data: dict[str, Any] = {
            "from": moved.before.value,
            "failures": moved.failures,
            "open_s": moved.open_s,
        }
        _ = self._background.spawn(
            self._record(f"circuit_{moved.after.value}", provider, target, data), name="record"
        )

    async def _record(self, kind: str, provider: str, target: str, data: Mapping[str, Any]) -> None:
        try:
            await self._store.writer.gateway_event(
                kind, provider=provider, target=target, data=data
            )
        except EgwError as exc:  # the store refuses writes: the move is still in the log lines
            log.warning("gateway_event_not_recorded", kind=kind, target=target, error=exc.message)

    async def events(self, *, after: int, limit: int) -> list[GatewayEvent]:
        return await self._store.reader.gateway_events(after=after, limit=limit)

    async def close(self) -> None:
        await self._background.close()
