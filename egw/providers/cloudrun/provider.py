"""`CloudRunProvider`: the `Provider` that ties executions, their pollers and log readers together.

It owns the parts and their lifetime: one `CloudRunAPI` (token, HTTP, retries), the `Watches`
(one per execution egw follows), and the background tasks of their loops. ``start`` resumes the
watch of every task that has an execution; ``close`` stops every loop.

On PostgreSQL replicas the polling and the log reading run on one replica at a time, the holder
of `stream_lease` (the `Leading` protocol, driven by ``egw/service/replicas.py``): every replica
starts standing by (submits and cancels are upstream calls of the accepting replica, nothing is
watched); the holder `lead`s (watches every unfinished task of the database, each log from its
stored cursor), looks for tasks submitted elsewhere (`follow_new`), and stops everything at once
when its lease runs out (`step_down`). A state reported by both the old and the new holder has
the same delivery id (``<execution>:<state>``), recorded once; a log line is stored with its
cursor (`egw.providers.cloudrun.logs`). On SQLite the provider leads from ``start``.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from typing import Any, ClassVar

import aiohttp
import structlog

from egw.background import BackgroundTasks
from egw.config import CloudRunConfig, RetryConfig
from egw.core.model import Observation, Task, TaskState
from egw.errors import Conflict, ProviderError
from egw.providers.base import ProviderSink, SinkSlot, Submission, attempt_key
from egw.providers.circuit import Breakers
from egw.providers.cloudrun.api import NAME, CloudRunAPI
from egw.providers.cloudrun.executions import Executions
from egw.providers.cloudrun.logs import LogReader
from egw.providers.cloudrun.poller import Poller
from egw.providers.cloudrun.watch import Watch, Watches
from egw.wire import cloudrun as wire

log = structlog.get_logger("egw.providers.cloudrun")


class CloudRunProvider:
    name: ClassVar[str] = NAME

    def __init__(
        self,
        cfg: CloudRunConfig,
        *,
        session: aiohttp.ClientSession,
        retry: RetryConfig,
        circuit: Breakers | None = None,
    ) -> None:
        self._cfg = cfg
        self._sink = SinkSlot(NAME)
        # a job's poller lives as long as one of its executions runs, a project's log reader
        # as long as one of its executions has a log left to read
        self._tasks = BackgroundTasks(NAME)
        self.circuit = circuit or Breakers(NAME, cfg.circuit)
        self._api = CloudRunAPI(cfg, session=session, retry=retry, circuit=self.circuit)
        self._watches = Watches(self._start_loops)
        self._poller = Poller(cfg, self._api, self._sink, self._tasks)
        self._logs = LogReader(cfg, self._api, self._sink, self._watches, self._tasks)
        self._executions = Executions(self._api, self._sink, self._watches, self._poller)

    @property
    def log_page_size(self) -> int:
        """Entries per ``entries:list`` page (Logging's largest, 1000, unless a test asks less)."""
        return self._logs.page_size

    @log_page_size.setter
    def log_page_size(self, size: int) -> None:
        self._logs.page_size = size

    @property
    def status_page_size(self) -> int:
        """Executions per ``executions.list`` page of the poller (100, unless a test asks less)."""
        return self._poller.page_size

    @status_page_size.setter
    def status_page_size(self, size: int) -> None:
        self._poller.page_size = size

    @property
    def max_log_filter_chars(self) -> int:
        """The longest Logging filter a read sends (Logging's limit, unless a test asks less)."""
        return self._logs.max_filter_chars

    @max_log_filter_chars.setter
    def max_log_filter_chars(self, chars: int) -> None:
        self._logs.max_filter_chars = chars

    def validate(self, task: Mapping[str, Any]) -> wire.CloudRunSpec:
        return wire.validate_task(
            task, default_project=self._cfg.project, default_region=self._cfg.region
        )

    async def start(self, sink: ProviderSink) -> None:
        """Resume the watch of every task with an execution (standing by: only once this
        replica holds the provider's lease, `lead`)."""
        self._sink.attach(sink)
        if not self._watches.standby:
            await self._follow(resume=True)

    # --- one replica at a time polls and reads logs (PostgreSQL: egw/service/replicas.py) ------

    @property
    def stream_lease(self) -> str:
        """One lease per provider config, named for its default project and region. A config
        is one set of credentials and one read budget per project, and its tasks may name
        other projects and regions: a lease per execution's project or region would need the
        tasks read before the lease is known, and would split one project's log reads (one
        batched filter, one `ReadBudget`) between replicas. Replicas share one config, so
        they agree on the name."""
        return f"cloud_run:{self._cfg.project or '-'}:{self._cfg.region or '-'}"

    def stand_by(self) -> None:
        self._watches.standby = True

    async def lead(self) -> None:
        self._watches.standby = False
        await self._follow(resume=True)

    async def follow_new(self) -> None:
        await self._follow(resume=False)

    async def step_down(self) -> None:
        """Stop every poller and log reader now and forget every watch: the next holder
        loads the tasks from the store and reads their logs on from the stored cursors."""
        self._watches.standby = True
        self._watches.clear()
        await self._poller.stop()
        await self._logs.stop()
        log.warning("cloud_run_lease_lost", lease=self.stream_lease)

    async def _follow(self, *, resume: bool) -> None:
        """Watch the unfinished tasks of the store not watched yet (from the stored log
        cursors, loaded at each execution's first read). On a start or a takeover
        (``resume``) the replaced attempts' executions that may still run are cancelled
        too. A task watched here whose attempt was replaced elsewhere (``on_stuck:
        resubmit`` recorded by another replica) stops being followed, and its new
        execution is watched once it is recorded."""
        sink = self._sink()
        for task in await sink.active_tasks(self.name):
            if self._watches.standby:
                return  # the lease was lost while reading
            watch = self._watches.get(task.id)
            if watch is not None and watch.attempt < task.attempt:
                self._watches.retire(task.id, watch.ref.name)
                watch = None
            if resume:
                retired = [n for n in task.upstream.get("retired") or () if isinstance(n, str)]
                if retired:
                    stop = self._stop_retired(task.id, retired)
                    _ = self._tasks.spawn(stop, name=f"cloud_run-retired-{task.id}")
            if watch is not None or task.upstream_id is None:
                continue  # watched, or never started upstream (egw re-submits it)
            if not resume:  # as it is now: one whose log was completed here is not watched again
                fresh = await sink.get_task(task.id)
                if fresh is None or fresh.logs_complete or task.id in self._watches:
                    continue
                task = fresh
            if self._watches.standby:
                return  # the lease was lost while reading
            if task.upstream_id is None:
                continue
            try:
                ref = wire.parse_execution_name(task.upstream_id)
            except ProviderError as exc:
                log.error("cloud_run_resume_skipped", task_id=task.id, error=str(exc))
                continue
            self._watches.ensure(task.id, ref, ended=task.status.terminal, key=attempt_key(task))

    def _start_loops(self, watch: Watch, report: bool, delay: bool) -> None:
        watch.report = report
        self._poller.watch(watch, delay=delay)
        self._logs.follow(watch)

    async def close(self) -> None:
        self._watches.clear()
        self._poller.close()
        await self._tasks.close()
        await asyncio.to_thread(self._api.auth.close)

    async def submit(self, task: Task, *, idempotency_key: str) -> Submission:
        return await self._executions.submit(task, idempotency_key=idempotency_key)

    async def cancel(self, task: Task, *, force: bool = False) -> Observation | None:
        """``executions.cancel`` (Cloud Run has no harder stop, so ``force`` changes nothing)."""
        return await self._executions.cancel(task)

    async def retire(self, task: Task) -> None:
        """Replace a stuck attempt (``on_stuck: resubmit``): stop following its execution at
        once (its poller ends, its state and log lines no longer reach the task, whatever the
        cancel's fate), then ``executions.cancel`` it. Raises if Cloud Run refuses and the
        execution has not ended. The new attempt's execution carries its own key
        (``EGW_TASK_ID=<task id>.<attempt>``), so a lost ``jobs:run`` answer finds only its own."""
        name = task.upstream_id
        if name is None:
            return  # no execution named: a lost run of this attempt is searched by its own key
        self._watches.retire(task.id, name)
        url = self._api.execution_url(name)
        try:
            await self._api.call(
                "POST", f"{url}:cancel", json_body={}, operation="executions.cancel"
            )
        except (ProviderError, Conflict) as exc:
            try:  # an execution that ended meanwhile needs no cancel
                execution = await self._api.call("GET", url, operation="executions.get")
            except ProviderError:
                execution = None
            if execution is None or not wire.execution_observation(execution).state.terminal:
                raise ProviderError(
                    f"Cloud Run did not cancel execution {name} of the replaced attempt:"
                    f" {exc.message}",
                    provider=NAME,
                    upstream_status=409 if isinstance(exc, Conflict) else exc.upstream_status,
                    details=dict(exc.details),
                ) from None

    async def _stop_retired(self, task_id: str, names: list[str]) -> None:
        """After a restart: cancel the replaced attempts' executions that have not ended (the
        gateway may have stopped between recording a resubmit and cancelling what it replaced).
        They are not followed: only Cloud Run hears of them."""
        for name in names:
            try:
                url = self._api.execution_url(name)
                execution = await self._api.call("GET", url, operation="executions.get")
                state = wire.execution_observation(execution).state
                if state.terminal or state is TaskState.CANCELLING:
                    continue
                await self._api.call(
                    "POST", f"{url}:cancel", json_body={}, operation="executions.cancel"
                )
                log.info("cloud_run_retired_cancelled", task_id=task_id, execution=name)
            except (ProviderError, Conflict) as exc:
                log.warning(
                    "cloud_run_retired_not_cancelled",
                    task_id=task_id,
                    execution=name,
                    error=exc.message,
                )

    async def status(self, task: Task) -> Observation:
        return await self._executions.status(task)

    def health(self) -> Mapping[str, Any]:
        return {
            "credentials": self._api.auth.kind,
            "token_expiry": self._api.auth.expiry(),
            "executions_watched": self._watches.watching(),
            "log_readers": self._watches.readers(),
            "logging_reads_per_minute": self._cfg.logging_reads_per_minute,
            "logging_reads_last_minute": self._logs.reads_last_minute(),
            "retries": self._api.retries,
            "last_error": self._api.last_error,
        }
