"""`Executions`: start a task's execution exactly once, find and adopt a lost one, cancel, read.

``jobs:run`` has no request id, so egw makes it idempotent itself: before the POST it records
``run_attempted`` with the task, and every execution it starts carries the override env
``EGW_TASK_ID=<task id>`` (``<task id>.<attempt>`` for a resubmitted task's later attempts, so
that one attempt's search never adopts another's execution). A submit of a task that already has
an execution name returns it; a submit after an attempt whose answer was lost, or a retry after an
*ambiguous* failure (timeout, connection error, 5xx; not 429, which Google answers before doing
anything), first lists the job's executions and adopts the one carrying the attempt's key.
Nothing documents the order of that list (googleapis google/cloud/run/v2/execution.proto,
ListExecutionsRequest, names none), so the search reads every page and never stops early at an
older execution: starting a second execution because of an assumed order is the one thing it
must not do.

A cancel's answer, whatever it is (an operation, a 400, a 409...), is not trusted to say whether
the execution had already ended: only reading the execution says (no source documents Cloud Run's
answer to cancelling a finished execution).
"""

from __future__ import annotations

import asyncio
import weakref
from collections.abc import Mapping
from dataclasses import replace
from typing import Any

import structlog

from egw.core.model import Observation, Task, TaskState
from egw.errors import Conflict, ProviderError, ProviderUnavailable
from egw.providers.base import SinkSlot, Submission, attempt_key, split_key
from egw.providers.cloudrun.api import NAME, CloudRunAPI
from egw.providers.cloudrun.poller import Poller
from egw.providers.cloudrun.watch import Watches
from egw.wire import cloudrun as wire

log = structlog.get_logger("egw.providers.cloudrun")

#: the executions list is read up to this many pages of `_MATCH_PAGE_SIZE` looking for a lost
#: run; Cloud Run shows a job's most recent 1,000 executions plus those of the last seven days
#: (https://cloud.google.com/run/docs/execute/jobs), so a longer list is refused, not guessed at
_MATCH_PAGES = 50
_MATCH_PAGE_SIZE = 100

#: what one attempt of ``jobs:run`` gave: the execution, and the operation's name if it ran one
_Run = tuple[Mapping[str, Any], str | None]


class Executions:
    """The executions of tasks: started, found, adopted (and then watched), cancelled, read."""

    def __init__(self, api: CloudRunAPI, sink: SinkSlot, watches: Watches, poller: Poller) -> None:
        self._api = api
        self._sink = sink
        self._watches = watches
        self._poller = poller
        self._submit_locks: weakref.WeakValueDictionary[str, asyncio.Lock] = (
            weakref.WeakValueDictionary()
        )

    async def submit(self, task: Task, *, idempotency_key: str) -> Submission:
        spec = wire.CloudRunSpec.from_json(task.spec)
        lock = self._submit_locks.get(idempotency_key)
        if lock is None:
            lock = self._submit_locks[idempotency_key] = asyncio.Lock()
        async with lock:
            current = await self._sink().get_task(task.id) or task
            if current.upstream_id:
                execution = await self._api.call(
                    "GET", self._api.execution_url(current.upstream_id), operation="executions.get"
                )
                return await self._adopt(task.id, execution, None, idempotency_key)
            looked_for = bool(current.upstream.get("run_attempted"))
            await self._record(task.id, data={"run_attempted": True, "job": spec.job_ref.name})
            execution, op_name = await self._run(task, spec, idempotency_key, looked_for)
            return await self._adopt(task.id, execution, op_name, idempotency_key)

    async def _run(
        self, task: Task, spec: wire.CloudRunSpec, idempotency_key: str, ambiguous: bool
    ) -> _Run:
        """``jobs:run``, retried; once an attempt may have started an execution (``ambiguous``),
        every later attempt looks for it first."""
        job = spec.job_ref
        body = wire.run_job_request(spec, idempotency_key)

        async def attempt() -> _Run:
            nonlocal ambiguous
            if ambiguous:
                found = await self._find(job, idempotency_key)
                if found is not None:
                    log.info(
                        "cloud_run_execution_adopted", task_id=task.id, execution=found.get("name")
                    )
                    return found, None
            try:
                op = await self._api.send(
                    "POST",
                    f"{self._api.run_url}/v2/{job.name}:run",
                    json_body=body,
                    operation="jobs.run",
                )
            except ProviderUnavailable as exc:
                # 429 is refused before anything happens; anything else may have started it
                ambiguous = ambiguous or exc.upstream_status != 429
                raise
            parsed = wire.parse_operation(op)
            if parsed.execution is None and parsed.done and parsed.error is not None:
                # a finished operation holds `error` or `response` (a oneof: googleapis
                # google/longrunning/operations.proto): an error with no execution is the answer
                raise ProviderError(
                    f"Cloud Run jobs.run: the operation failed: {parsed.error}",
                    provider=NAME,
                    details={"operation": parsed.name},
                )
            if parsed.execution is None:  # not in the contract; look instead of guessing
                ambiguous = True
                raise ProviderUnavailable(
                    "cloud_run: jobs:run answered an operation without an execution", provider=NAME
                )
            return parsed.execution, parsed.name

        return await self._api.retried(attempt, "jobs.run")

    async def cancel(self, task: Task) -> Observation | None:
        """``executions.cancel``. Returns the end if the execution has already ended, else None:
        the poller reports ``cancelled`` when the execution's condition says so."""
        upstream_id = await self._execution_name(task)
        if upstream_id is None:
            return Observation(state=TaskState.CANCELLED, reason="no execution was started")
        url = self._api.execution_url(upstream_id)
        refused: ProviderError | Conflict | None = None
        try:
            await self._api.call(
                "POST", f"{url}:cancel", json_body={}, operation="executions.cancel"
            )
        except (ProviderError, Conflict) as exc:  # 400, 409, 403, retries exhausted...: read
            refused = exc
        try:
            execution = await self._api.call("GET", url, operation="executions.get")
        except ProviderError:
            if refused is not None:
                raise refused from None
            execution = None
        obs = None if execution is None else wire.execution_observation(execution)
        if obs is not None and obs.state.terminal:
            return obs
        if refused is not None:  # refused, and still going
            raise refused
        ref = wire.parse_execution_name(upstream_id)
        self._poller.poll_soon(
            self._watches.ensure(task.id, ref, ended=False, key=attempt_key(task))
        )
        return None

    async def status(self, task: Task) -> Observation:
        upstream_id = await self._execution_name(task)
        if upstream_id is None:
            return Observation(state=TaskState.PENDING, reason="no execution started yet")
        execution = await self._api.call(
            "GET", self._api.execution_url(upstream_id), operation="executions.get"
        )
        return await self._poller.observation(execution)

    async def _adopt(
        self, task_id: str, execution: Mapping[str, Any], op_name: str | None, key: str
    ) -> Submission:
        """Record an execution as the task's attempt ``key``, start watching it, and say what
        it is."""
        ref = wire.parse_execution_name(execution.get("name"))
        url = execution.get("logUri") if isinstance(execution.get("logUri"), str) else None
        data = {"execution": ref.execution, "job": ref.job_name}
        if op_name:
            data["operation"] = op_name
        await self._record(task_id, upstream_id=ref.name, upstream_url=url, data=data)
        obs = replace(wire.execution_observation(execution), attempt=split_key(key)[1])
        if task_id not in self._watches:
            # reported before the poller starts, so the poller's news always comes after it
            # (the same observation in the Submission is then a no-op for egw)
            await self._sink().observe(
                task_id, obs, source=NAME, delivery_id=f"{ref.name}:{obs.state}"
            )
        fresh = task_id not in self._watches
        watch = self._watches.ensure(task_id, ref, ended=False, delay=True, key=key)
        if fresh:
            watch.last = obs.state
        watch.task_count = max(1, int(execution.get("taskCount") or 1))
        return Submission(upstream_id=ref.name, upstream_url=url, upstream=data, observation=obs)

    async def _execution_name(self, task: Task) -> str | None:
        """The task's execution: recorded, or found (by the attempt's key) if a run was
        attempted without an answer."""
        if task.upstream_id is not None:
            return task.upstream_id
        if not task.upstream.get("run_attempted"):
            return None
        job = wire.CloudRunSpec.from_json(task.spec).job_ref
        key = attempt_key(task)
        found = await self._api.retried(lambda: self._find(job, key), "executions.list")
        if found is None:
            return None
        await self._adopt(task.id, found, None, key)
        return str(found["name"])

    async def _record(self, task_id: str, **kwargs: Any) -> None:
        await self._sink().set_upstream(task_id, **kwargs)

    async def _find(self, job: wire.JobRef, task_id: str) -> Mapping[str, Any] | None:
        """The job's execution started for ``task_id``: every page is read, in whatever order
        Cloud Run lists them (no order is documented, so no execution ends the search early)."""
        token: str | None = None
        for _ in range(_MATCH_PAGES):
            params = {"pageSize": str(_MATCH_PAGE_SIZE), **({"pageToken": token} if token else {})}
            page = await self._api.send(
                "GET",
                f"{self._api.run_url}/v2/{job.name}/executions",
                params=params,
                operation="executions.list",
            )
            executions: list[Mapping[str, Any]] = page.get("executions") or []
            for execution in executions:
                if wire.execution_task_id(execution) == task_id:
                    return execution
            token = page.get("nextPageToken")
            if not token:
                return None
        raise ProviderError(
            f"Cloud Run executions.list: job {job.name} lists more than"
            f" {_MATCH_PAGES * _MATCH_PAGE_SIZE} executions; egw cannot rule out that its lost"
            f" jobs:run started one for task {task_id}, so it does not run the job again",
            provider=NAME,
        )
