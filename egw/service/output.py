"""The output providers hand over (`ProviderSink.append_log`, ``append_output``), and the
tasks whose output the store could not take (*doomed*: see ``egw/service/tasks.py``)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import structlog

from egw.core.model import Observation, TaskState
from egw.errors import EgwError, StoreError
from egw.store.ops import Output

if TYPE_CHECKING:
    from egw.service.tasks import TaskService

log = structlog.get_logger("egw.service")


class Outputs:
    def __init__(self, service: TaskService) -> None:
        self._service = service
        #: tasks whose output could not be stored: being stopped, their output dropped
        #: until their provider says the output is complete
        self.doomed: set[str] = set()

    async def store(
        self,
        task_id: str,
        chunks: Sequence[tuple[str, bytes]],
        *,
        cursor: tuple[str, str] | None = None,
        upstream: Mapping[str, Any] | None = None,
    ) -> int:
        """Store output (with ``cursor`` and ``upstream``: in the same commit, `Output`);
        output that cannot be stored dooms its task and is dropped, as is its later output."""
        if any(stream not in ("stdout", "stderr") for stream, _ in chunks):
            raise ValueError(f"unknown stream in {[stream for stream, _ in chunks]!r}")
        writer = self._service.store.writer
        if task_id not in self.doomed:
            try:
                return await writer.output(Output(task_id, tuple(chunks), cursor, upstream))
            except StoreError as exc:
                await self._doom(task_id, exc)
        cached = writer.cached(task_id)
        return cached.log_size if cached is not None else 0

    async def _doom(self, task_id: str, exc: StoreError) -> None:
        """Stop a task whose output could not be stored, and record why once the store can."""
        if task_id in self.doomed:
            return
        self.doomed.add(task_id)
        cause = exc.details.get("cause") or exc.message
        reason = f"the task's output could not be stored: {cause}"
        log.error("task_output_not_stored", task_id=task_id, error=cause)
        obs = Observation(state=TaskState.FAILED, reason=reason)
        service = self._service
        _ = service.store.writer.settle(task_id, obs, source="gateway")
        task = await service.get_task(task_id)
        provider = service.providers.get(task.provider) if task is not None else None
        if task is None or provider is None:
            return
        try:
            await provider.cancel(task, force=True)
        except EgwError as err:
            log.warning("doomed_task_cancel_failed", task_id=task_id, error=err.message)


__all__ = ["Outputs"]
