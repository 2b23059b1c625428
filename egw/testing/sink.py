"""`MemorySink`: an in-memory `ProviderSink` running the real state machine.

For testing a provider against its simulator without a database or a web
app: it records every call, applies observations through `egw.core.states`
exactly as the service does, and lets a test wait for a state.

Not a simulator of an upstream: it stands in for egw's own `ProviderSink`
(``egw/service/tasks.py``, ``egw/service/output.py``), so it follows that code, not an
upstream source; no upstream document describes anything here.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from egw.core import states
from egw.core.model import TERMINAL, Observation, Task, TaskState, new_task_id, utcnow


@dataclass
class Recorded:
    kind: str
    task_id: str
    data: dict[str, Any] = field(default_factory=dict)


class MemorySink:
    def __init__(self) -> None:
        self.tasks: dict[str, Task] = {}
        self.events: list[Recorded] = []
        self.logs: dict[str, list[tuple[str, bytes]]] = {}
        self.complete: set[str] = set()
        self.cursors: dict[str, str] = {}
        self._deliveries: set[str] = set()
        self._seq = 0
        self._changed = asyncio.Condition()

    def add_task(
        self,
        provider: str,
        spec: Mapping[str, Any],
        *,
        task_id: str | None = None,
        timeout_s: float | None = None,
    ) -> Task:
        now = utcnow()
        self._seq += 1
        task = Task(
            id=task_id or new_task_id(),
            provider=provider,
            spec=dict(spec),
            created_at=now,
            updated_at=now,
            index=self._seq,
            timeout_s=timeout_s,
        )
        self.tasks[task.id] = task
        return task

    def output(self, task_id: str, stream: str | None = None) -> bytes:
        return b"".join(d for s, d in self.logs.get(task_id, []) if stream in (None, s))

    def states(self, task_id: str) -> list[str]:
        """The states the task moved through, in order (applied observations only)."""
        return [
            e.data["status"]
            for e in self.events
            if e.task_id == task_id and e.kind == "observe" and e.data["applied"]
        ]

    async def wait_for(
        self,
        task_id: str,
        *,
        terminal: bool = True,
        state: TaskState | None = None,
        logs: bool = False,
        timeout_s: float = 10.0,
    ) -> Task:
        """Wait until the task is in ``state`` (or any terminal one) and its logs are complete."""

        def done() -> bool:
            task = self.tasks[task_id]
            ok = (
                task.status == state
                if state is not None
                else (task.status in TERMINAL if terminal else True)
            )
            return ok and (not logs or task_id in self.complete)

        async with asyncio.timeout(timeout_s):
            async with self._changed:
                await self._changed.wait_for(done)
        return self.tasks[task_id]

    async def _notify(self) -> None:
        async with self._changed:
            self._changed.notify_all()

    def _dup(self, delivery_id: str | None) -> bool:
        if delivery_id is None:
            return False
        if delivery_id in self._deliveries:
            return True
        self._deliveries.add(delivery_id)
        return False

    # --- ProviderSink ----------------------------------------------------------------------

    async def observe(
        self, task_id: str, obs: Observation, *, source: str, delivery_id: str | None = None
    ) -> Task | None:
        task = self.tasks.get(task_id)
        if task is None:
            return None
        if self._dup(delivery_id):
            return task
        self._seq += 1
        moved = states.observe(task, obs, seq=self._seq, now=utcnow())
        if moved is not None:
            self.tasks[task_id] = task = moved
        self.events.append(
            Recorded(
                "observe",
                task_id,
                {
                    "status": str(obs.state),
                    "applied": moved is not None,
                    "reason": obs.reason,
                    "exit_code": obs.exit_code,
                    "source": source,
                    "detail": dict(obs.detail),
                },
            )
        )
        await self._notify()
        return task

    async def progress(
        self,
        task_id: str,
        kind: str,
        data: Mapping[str, Any],
        *,
        source: str,
        delivery_id: str | None = None,
    ) -> bool:
        if self._dup(delivery_id):
            return False
        self.events.append(Recorded(kind, task_id, dict(data)))
        await self._notify()
        return True

    async def append_log(self, task_id: str, stream: str, data: bytes) -> int:
        assert stream in ("stdout", "stderr"), stream
        assert task_id not in self.complete, "append_log after logs_complete"
        self.logs.setdefault(task_id, []).append((stream, bytes(data)))
        await self._notify()
        return len(self.output(task_id))

    async def append_output(
        self,
        task_id: str,
        chunks: Sequence[tuple[str, bytes]],
        *,
        cursor: tuple[str, str] | None = None,
        upstream: Mapping[str, Any] | None = None,
    ) -> int:
        """As the real sink: everything at once (no await between the parts)."""
        assert task_id not in self.complete, "append_output after logs_complete"
        for stream, data in chunks:
            assert stream in ("stdout", "stderr"), stream
            self.logs.setdefault(task_id, []).append((stream, bytes(data)))
        if cursor is not None:
            self.cursors[cursor[0]] = cursor[1]
        if upstream and task_id in self.tasks:
            task = self.tasks[task_id]
            self.tasks[task_id] = task.evolve(upstream={**task.upstream, **upstream})
        await self._notify()
        return len(self.output(task_id))

    async def logs_complete(self, task_id: str) -> None:
        self.complete.add(task_id)
        if task_id in self.tasks:
            self.tasks[task_id] = self.tasks[task_id].evolve(logs_complete=True)
        await self._notify()

    async def set_upstream(
        self,
        task_id: str,
        *,
        upstream_id: str | None = None,
        upstream_url: str | None = None,
        data: Mapping[str, Any] | None = None,
    ) -> None:
        task = self.tasks[task_id]
        self.tasks[task_id] = task.evolve(
            upstream_id=upstream_id if upstream_id is not None else task.upstream_id,
            upstream_url=upstream_url if upstream_url is not None else task.upstream_url,
            upstream={**task.upstream, **(data or {})},
        )
        await self._notify()

    async def get_task(self, task_id: str) -> Task | None:
        return self.tasks.get(task_id)

    async def find_task(self, provider: str, upstream_id: str) -> Task | None:
        for task in self.tasks.values():
            if task.provider == provider and task.upstream_id == upstream_id:
                return task
        return None

    async def active_tasks(self, provider: str) -> list[Task]:
        return [
            t
            for t in self.tasks.values()
            if t.provider == provider and (t.status not in TERMINAL or t.id not in self.complete)
        ]

    async def get_cursor(self, key: str) -> str | None:
        return self.cursors.get(key)

    async def set_cursor(self, key: str, value: str) -> None:
        self.cursors[key] = value
