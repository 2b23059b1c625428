"""`Poller`: one polling loop per execution (``GET v2/{execution}``), reporting each state change.

Cloud Run pushes nothing. The interval is adaptive (``poll_min_s`` after a change, growing by half
up to ``poll_max_s``) with jitter, and a ``wake`` (a cancel) polls at once. Only a change of state
is reported; the delivery id ``<execution>:<state>`` makes a report after a restart a no-op. A
failed execution's exit code is read from its tasks. An execution deleted upstream fails the task.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import structlog

from egw.config import CloudRunConfig
from egw.core.model import Observation, TaskState
from egw.errors import CircuitOpen, ProviderError
from egw.providers.base import SinkSlot
from egw.providers.cloudrun.api import NAME, CloudRunAPI
from egw.providers.cloudrun.watch import Watch, jitter, nap
from egw.wire import cloudrun as wire

log = structlog.get_logger("egw.providers.cloudrun")


class Poller:
    """Reads executions: once (`observation`) or until they end (`run`)."""

    def __init__(self, cfg: CloudRunConfig, api: CloudRunAPI, sink: SinkSlot) -> None:
        self._cfg = cfg
        self._api = api
        self._sink = sink

    async def observation(self, execution: Mapping[str, Any]) -> Observation:
        """The execution's state; a failed one's exit code comes from its tasks."""
        obs = wire.execution_observation(execution)
        if obs.state is TaskState.FAILED:  # the exit code is on the failed task
            try:
                tasks = await self._api.call(
                    "GET",
                    f"{self._api.execution_url(str(execution['name']))}/tasks",
                    operation="tasks.list",
                )
                obs = wire.execution_observation(execution, tasks.get("tasks") or [])
            except ProviderError as exc:
                log.warning("cloud_run_tasks_unread", error=str(exc))
        return obs

    async def run(self, watch: Watch, *, report: bool, delay: bool) -> None:
        """Poll until the execution has ended (``report``: tell the sink of each change;
        ``delay``: the first poll waits an interval)."""
        interval = self._cfg.poll_min_s
        if delay:
            await nap(jitter(interval), watch.wake)
        while True:
            try:
                if await self._poll_once(watch, report=report):
                    watch.ended()
                    return
                interval = (
                    self._cfg.poll_min_s
                    if watch.changed
                    else min(interval * 1.5, self._cfg.poll_max_s)
                )
            except ProviderError as exc:  # retries exhausted, or a final error (403...)
                log.warning("cloud_run_poll_failed", task_id=watch.task_id, error=exc.message)
                interval = self._cfg.poll_max_s
                if isinstance(exc, CircuitOpen):  # sleep until the breaker lets a probe by
                    interval = max(interval, exc.retry_after_s or 0.0)
            except Exception:  # a bug must not end the watch silently
                log.exception("cloud_run_poll_crashed", task_id=watch.task_id)
                interval = self._cfg.poll_max_s
            await nap(jitter(interval), watch.wake)

    async def _poll_once(self, watch: Watch, *, report: bool) -> bool:
        """Read the execution once, report a change; True once it has ended (or is gone)."""
        watch.changed = False
        try:
            execution = await self._api.call(
                "GET", self._api.execution_url(watch.ref.name), operation="executions.get"
            )
        except ProviderError as exc:
            if exc.upstream_status != 404:
                raise
            if report:  # deleted under us: nothing more will come
                gone = Observation(
                    state=TaskState.FAILED, reason=f"execution is gone: {exc.message}"
                )
                await self._sink().observe(
                    watch.task_id, gone, source=NAME, delivery_id=f"{watch.ref.name}:gone"
                )
            return True
        watch.task_count = max(1, int(execution.get("taskCount") or 1))
        created = execution.get("createTime")
        watch.created = created if isinstance(created, str) else watch.created
        watch.seen.set()
        obs = await self.observation(execution)
        if obs.state != watch.last:
            if report:
                await self._sink().observe(
                    watch.task_id, obs, source=NAME, delivery_id=f"{watch.ref.name}:{obs.state}"
                )
            watch.last, watch.changed = obs.state, True
        return obs.state.terminal
