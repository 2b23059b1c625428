"""`CloudRunProvider`: run Cloud Run Jobs executions, watch them by polling, tail their Cloud Logging logs.

Contracts: tests/samples/cloudrun/run-v2-jobs.md and logging-entries-list.md (copies in
tests/samples/cloudrun/); the wire formats are in `egw.wire.cloudrun`.

Theory of operation
-------------------
* **Submit.** ``jobs:run`` has no request id, so egw makes it idempotent itself: before the POST it
  records ``run_attempted`` with the task, and every execution it starts carries the override env
  ``EGW_TASK_ID=<task id>``. A submit of a task that already has an execution name returns it; a
  submit after an attempt whose answer was lost, or a retry after an *ambiguous* failure (timeout,
  connection error, 5xx; not 429, which Google answers before doing anything), first lists the
  job's executions (newest first) and adopts the one carrying the task's id.
* **Status.** Cloud Run pushes nothing: one poller per non-terminal execution (``GET v2/{execution}``),
  its interval adaptive (``poll_min_s`` after a change, growing to ``poll_max_s``) with jitter.
  Only a change of state is reported; the delivery id ``<execution>:<state>`` makes a report after
  a restart a no-op.
* **Logs.** One reader per execution reads ``entries:list`` oldest first, page by page, from the
  `LogCursor` (persisted with ``sink.set_cursor``) up to ``now - logging_settle_s`` (Logging ingests
  late). Every read spends one request of the project's `ReadBudget` (``logging_reads_per_minute``,
  shared by all executions of the project), and readers space their reads to stay inside it.
  Once the execution is terminal and the settle time has passed, a last read without upper bound
  takes the rest, then ``sink.logs_complete``.
* **Auth.** A static ``access_token`` (tests), or google-auth credentials (key file, ADC, metadata
  server); google-auth is synchronous, so loading and refreshing run in a worker thread, under a
  lock, whenever the token is missing or close to expiry (google-auth's own refresh threshold).

Size: over the 500-line budget because submit, the poller, the log reader, its read budget and
the credentials share one HTTP helper and one watch per execution; the token source and
`ReadBudget` are the first candidates to move out.
"""

from __future__ import annotations

import asyncio
import json
import random
import time
import weakref
from collections import deque
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, ClassVar, TypeVar

import aiohttp
import structlog

from egw.config import CloudRunConfig, RetryConfig
from egw.core.model import Observation, Task, TaskState, parse_time
from egw.errors import Conflict, ProviderError, ProviderUnavailable
from egw.background import cancel_and_wait
from egw.providers.base import ProviderSink, Submission, WebhookResult
from egw.providers.http import HTTPResponse, http_request, parse_retry_after
from egw.providers.retry import retrying
from egw.wire import cloudrun as wire

log = structlog.get_logger("egw.providers.cloudrun")
T = TypeVar("T")

#: how far back (before the task was created) the executions list is searched for a lost run
_MATCH_SKEW = timedelta(minutes=10)
_MATCH_PAGES = 5
#: a final log read that keeps failing gives up after this many tries (noted in the log)
_FINAL_READ_TRIES = 5


class ReadBudget:
    """At most ``per_window`` reads in any ``window_s`` (a sliding window), waited for in order."""

    def __init__(self, per_window: int, window_s: float = 60.0) -> None:
        self.per_window = per_window
        self.window_s = window_s
        self._reads: deque[float] = deque()
        self._lock = asyncio.Lock()

    def _trim(self, now: float) -> None:
        while self._reads and self._reads[0] <= now - self.window_s:
            self._reads.popleft()

    def used(self) -> int:
        self._trim(time.monotonic())
        return len(self._reads)

    async def acquire(self) -> None:
        async with self._lock:
            while True:
                now = time.monotonic()
                self._trim(now)
                if len(self._reads) < self.per_window:
                    self._reads.append(now)
                    return
                await asyncio.sleep(self._reads[0] + self.window_s - now)


class _TokenSource:
    """A bearer token: static, or from google-auth credentials refreshed before they expire."""

    def __init__(self, cfg: CloudRunConfig) -> None:
        self._static = cfg.access_token
        self._file = cfg.credentials_file
        self._creds: Any = None
        self._request: Any = None
        self._lock = asyncio.Lock()
        self.kind = ("access_token" if self._static else
                     "credentials_file" if self._file else "application_default")

    def _load(self) -> Any:
        import google.auth
        import google.auth.transport.requests
        import google.oauth2.credentials
        import google.oauth2.service_account

        if self._file:  # load only the kinds we expect (google-auth's advice for key files)
            kind = json.loads(Path(self._file).read_text(encoding="utf-8")).get("type")
            if kind == "service_account":
                creds: Any = google.oauth2.service_account.Credentials.from_service_account_file(
                    self._file, scopes=[wire.SCOPE])  # type: ignore[no-untyped-call]
            elif kind == "authorized_user":
                creds = google.oauth2.credentials.Credentials.from_authorized_user_file(
                    self._file, scopes=[wire.SCOPE])  # type: ignore[no-untyped-call]
            else:
                raise ValueError(f"credentials_file: type {kind!r} is not supported (use a"
                                 f" service_account or authorized_user file, or ADC)")
        else:  # ADC: GOOGLE_APPLICATION_CREDENTIALS, gcloud's file, or the metadata server
            creds, _ = google.auth.default(scopes=[wire.SCOPE])
        self._request = google.auth.transport.requests.Request()
        return creds

    async def token(self, *, force: bool = False) -> str:
        if self._static:
            return self._static
        async with self._lock:
            try:
                if self._creds is None:
                    self._creds = await asyncio.to_thread(self._load)
                if force or not self._creds.valid:
                    await asyncio.to_thread(self._creds.refresh, self._request)
            except Exception as exc:  # google-auth raises its own tree (and OSError, ValueError)
                raise ProviderUnavailable(f"cloud_run: cannot get Google credentials:"
                                          f" {type(exc).__name__}: {exc}", provider="cloud_run"
                                          ) from exc
            return str(self._creds.token)

    def expiry(self) -> str | None:
        when = getattr(self._creds, "expiry", None)
        return when.replace(tzinfo=UTC).isoformat() if isinstance(when, datetime) else None

    def close(self) -> None:
        session = getattr(self._request, "session", None)
        if session is not None:
            session.close()


@dataclass
class _Watch:
    """The one poller and the one log reader of an execution."""

    task_id: str
    ref: wire.ExecutionRef
    task_count: int = 1
    seen: asyncio.Event = field(default_factory=asyncio.Event)
    terminal: asyncio.Event = field(default_factory=asyncio.Event)
    wake: asyncio.Event = field(default_factory=asyncio.Event)
    terminal_at: float | None = None
    #: how far the log has been read (advanced page by page, so a failed read resumes there)
    cursor: wire.LogCursor = field(default_factory=wire.LogCursor)
    #: the last state reported (the submit's own observation counts), and whether it just changed
    last: TaskState | None = None
    changed: bool = False
    poller: asyncio.Task[None] | None = None
    reader: asyncio.Task[None] | None = None


class CloudRunProvider:
    name: ClassVar[str] = "cloud_run"
    webhook_source: ClassVar[str | None] = None
    #: entries per entries:list page (Logging's largest is 1000)
    log_page_size = 1000

    def __init__(self, cfg: CloudRunConfig, *, session: aiohttp.ClientSession,
                 retry: RetryConfig) -> None:
        self._cfg = cfg
        self._session = session
        self._retry = retry
        self._auth = _TokenSource(cfg)
        self._run_url = cfg.run_api_url.rstrip("/")
        self._logging_url = cfg.logging_api_url.rstrip("/")
        self._sink: ProviderSink | None = None
        self._watches: dict[str, _Watch] = {}
        self._budgets: dict[str, ReadBudget] = {}
        self._submit_locks: weakref.WeakValueDictionary[str, asyncio.Lock] = (
            weakref.WeakValueDictionary())
        self._retries = 0
        self._last_error: str | None = None

    # --- Provider protocol ------------------------------------------------------------------

    def validate(self, task: Mapping[str, Any]) -> wire.CloudRunSpec:
        return wire.validate_task(task, default_project=self._cfg.project,
                                  default_region=self._cfg.region)

    async def start(self, sink: ProviderSink) -> None:
        self._sink = sink
        for task in await sink.active_tasks(self.name):
            if task.upstream_id is None:
                continue  # never started upstream: egw re-submits it (submit looks first)
            try:
                ref = wire.parse_execution_name(task.upstream_id)
            except ProviderError as exc:
                log.error("cloud_run_resume_skipped", task_id=task.id, error=str(exc))
                continue
            self._watch(task.id, ref, ended=task.status.terminal)

    async def close(self) -> None:
        watches, self._watches = list(self._watches.values()), {}
        for w in watches:
            await cancel_and_wait(w.poller)
            await cancel_and_wait(w.reader)
        await asyncio.to_thread(self._auth.close)

    async def submit(self, task: Task, *, idempotency_key: str) -> Submission:
        spec = wire.CloudRunSpec.from_json(task.spec)
        ref = spec.job_ref
        lock = self._submit_locks.get(idempotency_key)
        if lock is None:
            lock = self._submit_locks[idempotency_key] = asyncio.Lock()
        async with lock:
            current = (await self._sink.get_task(task.id) if self._sink else None) or task
            if current.upstream_id:
                execution = await self._call("GET", self._exec_url(current.upstream_id),
                                             operation="executions.get")
                return await self._adopt(task.id, execution, None)
            looked_for = bool(current.upstream.get("run_attempted"))
            await self._record(task.id, data={"run_attempted": True, "job": ref.name})
            body = wire.run_job_request(spec, idempotency_key)
            ambiguous = looked_for

            async def attempt() -> tuple[Mapping[str, Any], str | None]:
                nonlocal ambiguous
                if ambiguous:
                    found = await self._find_execution(ref, idempotency_key, task.created_at)
                    if found is not None:
                        log.info("cloud_run_execution_adopted", task_id=task.id,
                                 execution=found.get("name"))
                        return found, None
                try:
                    op = await self._send("POST", f"{self._run_url}/v2/{ref.name}:run",
                                          json_body=body, operation="jobs.run")
                except ProviderUnavailable as exc:
                    # 429 is refused before anything happens; anything else may have started it
                    ambiguous = ambiguous or exc.upstream_status != 429
                    raise
                parsed = wire.parse_operation(op)
                if parsed.execution is None:  # not in the contract; look instead of guessing
                    ambiguous = True
                    raise ProviderUnavailable("cloud_run: jobs:run answered an operation without"
                                              " an execution", provider=self.name)
                return parsed.execution, parsed.name

            execution, op_name = await self._retrying(attempt, "jobs.run")
            return await self._adopt(task.id, execution, op_name)

    async def cancel(self, task: Task, *, force: bool = False) -> Observation | None:
        """``executions.cancel`` (Cloud Run has no harder stop, so ``force`` changes nothing).
        Returns the end if the execution has already ended, else None: the poller reports
        ``cancelled`` when the execution's condition says so."""
        upstream_id = await self._execution_name(task)
        if upstream_id is None:
            return Observation(state=TaskState.CANCELLED, reason="no execution was started")
        try:
            op = await self._call("POST", f"{self._exec_url(upstream_id)}:cancel", json_body={},
                                  operation="executions.cancel")
        except ProviderError as exc:
            if exc.upstream_status != 400:
                raise
            # FAILED_PRECONDITION: it already ended; say how
            execution = await self._call("GET", self._exec_url(upstream_id),
                                         operation="executions.get")
            obs = wire.execution_observation(execution)
            if obs.state.terminal:
                return obs
            raise
        self._watch(task.id, wire.parse_execution_name(upstream_id), ended=False).wake.set()
        parsed = wire.parse_operation(op)
        if parsed.execution is not None:
            obs = wire.execution_observation(parsed.execution)
            if obs.state.terminal:
                return obs
        return None

    async def status(self, task: Task) -> Observation:
        upstream_id = await self._execution_name(task)
        if upstream_id is None:
            return Observation(state=TaskState.PENDING, reason="no execution started yet")
        execution = await self._call("GET", self._exec_url(upstream_id), operation="executions.get")
        return await self._observation(execution)

    async def handle_webhook(self, headers: Mapping[str, str], body: bytes) -> WebhookResult:
        # webhook_source is None: egw routes no webhooks here; answer as the API would.
        return WebhookResult(status=404, body={"error": {
            "code": "not_found", "message": "cloud_run takes no webhooks", "details": {}}})

    def health(self) -> Mapping[str, Any]:
        return {
            "credentials": self._auth.kind,
            "token_expiry": self._auth.expiry(),
            "executions_watched": sum(1 for w in self._watches.values() if not w.terminal.is_set()),
            "log_readers": sum(1 for w in self._watches.values()
                               if w.reader is not None and not w.reader.done()),
            "logging_reads_per_minute": self._cfg.logging_reads_per_minute,
            "logging_reads_last_minute": {p: b.used() for p, b in self._budgets.items()},
            "retries": self._retries,
            "last_error": self._last_error,
        }

    # --- submit helpers -----------------------------------------------------------------------

    async def _adopt(self, task_id: str, execution: Mapping[str, Any],
                     op_name: str | None) -> Submission:
        """Record an execution as the task's, start watching it, and say what it is."""
        ref = wire.parse_execution_name(execution.get("name"))
        url = execution.get("logUri") if isinstance(execution.get("logUri"), str) else None
        data = {"execution": ref.execution, "job": f"projects/{ref.project}/locations/"
                f"{ref.region}/jobs/{ref.job}"}
        if op_name:
            data["operation"] = op_name
        await self._record(task_id, upstream_id=ref.name, upstream_url=url, data=data)
        obs = wire.execution_observation(execution)
        if task_id not in self._watches and self._sink is not None:
            # reported before the poller starts, so the poller's news always comes after it
            # (the same observation in the Submission is then a no-op for egw)
            await self._sink.observe(task_id, obs, source=self.name,
                                     delivery_id=f"{ref.name}:{obs.state}")
        fresh = task_id not in self._watches
        watch = self._watch(task_id, ref, ended=False, delay=True)
        if fresh:
            watch.last = obs.state
        watch.task_count = max(1, int(execution.get("taskCount") or 1))
        return Submission(upstream_id=ref.name, upstream_url=url, upstream=data, observation=obs)

    async def _execution_name(self, task: Task) -> str | None:
        """The task's execution: recorded, or found if a run was attempted without an answer."""
        if task.upstream_id is not None:
            return task.upstream_id
        if not task.upstream.get("run_attempted"):
            return None
        job = wire.CloudRunSpec.from_json(task.spec).job_ref
        found = await self._retrying(
            lambda: self._find_execution(job, task.id, task.created_at), "executions.list")
        if found is None:
            return None
        await self._adopt(task.id, found, None)
        return str(found["name"])

    async def _record(self, task_id: str, **kwargs: Any) -> None:
        if self._sink is not None:
            await self._sink.set_upstream(task_id, **kwargs)

    async def _find_execution(self, job: wire.JobRef, task_id: str,
                              created: datetime) -> Mapping[str, Any] | None:
        """The job's execution started for ``task_id`` (newest first, back to the task's birth)."""
        token: str | None = None
        for _ in range(_MATCH_PAGES):
            params = {"pageSize": "100", **({"pageToken": token} if token else {})}
            page = await self._send("GET", f"{self._run_url}/v2/{job.name}/executions",
                                    params=params, operation="executions.list")
            for execution in page.get("executions") or ():
                if wire.execution_task_id(execution) == task_id:
                    return execution  # type: ignore[no-any-return]
                made = parse_time(execution.get("createTime"))
                if made is not None and made < created - _MATCH_SKEW:
                    return None
            token = page.get("nextPageToken")
            if not token:
                return None
        return None

    # --- HTTP --------------------------------------------------------------------------------

    def _exec_url(self, name: str) -> str:
        return f"{self._run_url}/v2/{wire.parse_execution_name(name).name}"

    async def _retrying(self, fn: Callable[[], Awaitable[T]], operation: str) -> T:
        def counted() -> None:
            self._retries += 1

        async for attempt in retrying(self._retry, provider=self.name, operation=operation,
                                      on_retry=counted):
            with attempt:
                return await fn()
        raise AssertionError("unreachable: tenacity reraises")  # pragma: no cover

    async def _call(self, method: str, url: str, *, operation: str, json_body: Any = None,
                    params: Mapping[str, str] | None = None) -> Any:
        """One upstream call, retried on 429, 5xx and connection errors (idempotent calls only)."""
        return await self._retrying(
            lambda: self._send(method, url, operation=operation, json_body=json_body,
                               params=params), operation)

    async def _send(self, method: str, url: str, *, operation: str, json_body: Any = None,
                    params: Mapping[str, str] | None = None) -> Any:
        """One attempt (a 401 refreshes the token and tries once more); Google's errors mapped."""
        async def once(refresh: bool) -> HTTPResponse:
            token = await self._auth.token(force=refresh)
            return await http_request(
                self._session, method, url, provider=self.name, json_body=json_body,
                params=params, timeout_s=self._cfg.request_timeout_s,
                headers={"Authorization": f"Bearer {token}", "Accept": "application/json"})

        resp = await once(False)
        if resp.status == 401 and not self._cfg.access_token:  # revoked early: refresh once
            resp = await once(True)
        if resp.status >= 400:
            err = wire.parse_error(resp.status, resp.body)
            api = "Cloud Logging" if operation.startswith("logging") else "Cloud Run"
            message = f"{api} {operation}: {err.status}: {err.message}"
            self._last_error = message
            details = {"google_status": err.status}
            if resp.status == 429 or resp.status >= 500:
                raise ProviderUnavailable(
                    message, provider=self.name, upstream_status=resp.status, details=details,
                    retry_after_s=parse_retry_after(resp.headers.get("retry-after")))
            if resp.status == 409:
                raise Conflict(message, details={**details, "provider": self.name})
            raise ProviderError(message, provider=self.name, upstream_status=resp.status,
                                details=details)
        try:
            return resp.json()
        except ValueError:
            raise ProviderError(f"{operation}: upstream answered {resp.status} with no JSON",
                                provider=self.name, upstream_status=resp.status) from None

    # --- watching ------------------------------------------------------------------------------

    def _watch(self, task_id: str, ref: wire.ExecutionRef, *, ended: bool,
               delay: bool = False) -> _Watch:
        """The execution's watch, started once (``ended``: only its logs are left to read;
        ``delay``: the execution was just read, so the first poll waits an interval)."""
        watch = self._watches.get(task_id)
        if watch is None:
            watch = self._watches[task_id] = _Watch(task_id, ref)
            watch.poller = asyncio.create_task(self._poll(watch, report=not ended, delay=delay),
                                               name=f"cloud_run-poll-{task_id}")
            watch.reader = asyncio.create_task(self._read_logs(watch),
                                               name=f"cloud_run-logs-{task_id}")
        return watch

    def _jitter(self, seconds: float) -> float:
        return seconds * random.uniform(0.8, 1.2)

    @staticmethod
    async def _sleep(seconds: float, wake: asyncio.Event, *, clear: bool = True) -> None:
        """Sleep, or less if ``wake`` is set (and then clear it, if asked)."""
        try:
            await asyncio.wait_for(wake.wait(), timeout=seconds)
        except TimeoutError:
            pass
        if clear:
            wake.clear()

    async def _observation(self, execution: Mapping[str, Any]) -> Observation:
        obs = wire.execution_observation(execution)
        if obs.state is TaskState.FAILED:  # the exit code is on the failed task
            try:
                tasks = await self._call("GET", f"{self._exec_url(str(execution['name']))}/tasks",
                                         operation="tasks.list")
                obs = wire.execution_observation(execution, tasks.get("tasks") or [])
            except ProviderError as exc:
                log.warning("cloud_run_tasks_unread", error=str(exc))
        return obs

    async def _poll(self, watch: _Watch, *, report: bool, delay: bool) -> None:
        interval = self._cfg.poll_min_s
        if delay:
            await self._sleep(self._jitter(interval), watch.wake)
        while True:
            try:
                if await self._poll_once(watch, report=report):
                    self._ended(watch)
                    return
                interval = self._cfg.poll_min_s if watch.changed else min(
                    interval * 1.5, self._cfg.poll_max_s)
            except ProviderError as exc:  # retries exhausted, or a final error (403...)
                log.warning("cloud_run_poll_failed", task_id=watch.task_id, error=exc.message)
                interval = self._cfg.poll_max_s
            except Exception:  # a bug must not end the watch silently
                log.exception("cloud_run_poll_crashed", task_id=watch.task_id)
                interval = self._cfg.poll_max_s
            await self._sleep(self._jitter(interval), watch.wake)

    async def _poll_once(self, watch: _Watch, *, report: bool) -> bool:
        """Read the execution once, report a change; True once it has ended (or is gone)."""
        watch.changed = False
        try:
            execution = await self._call("GET", self._exec_url(watch.ref.name),
                                         operation="executions.get")
        except ProviderError as exc:
            if exc.upstream_status != 404:
                raise
            if report and self._sink is not None:  # deleted under us: nothing more will come
                await self._sink.observe(watch.task_id, Observation(
                    state=TaskState.FAILED, reason=f"execution is gone: {exc.message}"),
                    source=self.name, delivery_id=f"{watch.ref.name}:gone")
            return True
        watch.task_count = max(1, int(execution.get("taskCount") or 1))
        watch.seen.set()
        obs = await self._observation(execution)
        if obs.state != watch.last:
            if report and self._sink is not None:
                await self._sink.observe(watch.task_id, obs, source=self.name,
                                         delivery_id=f"{watch.ref.name}:{obs.state}")
            watch.last, watch.changed = obs.state, True
        return obs.state.terminal

    def _ended(self, watch: _Watch) -> None:
        watch.terminal_at = time.monotonic()
        watch.seen.set()
        watch.terminal.set()

    def _budget(self, project: str) -> ReadBudget:
        budget = self._budgets.get(project)
        if budget is None:
            budget = self._budgets[project] = ReadBudget(self._cfg.logging_reads_per_minute)
        return budget

    def _read_interval(self, project: str) -> float:
        """Spread the project's budget over its readers: each reads every ``n * 60 / budget`` s."""
        readers = sum(1 for w in self._watches.values()
                      if w.ref.project == project and w.reader is not None and not w.reader.done())
        share = 60.0 * max(1, readers) / self._cfg.logging_reads_per_minute
        return max(self._cfg.poll_min_s, share)

    async def _read_logs(self, watch: _Watch) -> None:
        sink = self._sink
        if sink is None:
            return
        key = f"cloud_run:logs:{watch.task_id}"
        watch.cursor = wire.LogCursor.from_json(await sink.get_cursor(key))
        await watch.seen.wait()  # the task count decides the line prefix
        settle = self._cfg.logging_settle_s
        failures = 0
        while True:
            since_end = time.monotonic() - (watch.terminal_at or 0.0)
            settled = watch.terminal.is_set() and since_end >= settle
            until = None if settled or settle == 0 else wire.timestamp_from(
                datetime.now(UTC) - timedelta(seconds=settle))
            error = None
            try:
                await self._read_pages(watch, until, key)
            except ProviderError as exc:
                log.warning("cloud_run_log_read_failed", task_id=watch.task_id, error=exc.message)
                error = exc.message
            except Exception as exc:  # a bug must not end the reader silently
                log.exception("cloud_run_log_read_crashed", task_id=watch.task_id)
                error = repr(exc)
            if error is not None:
                failures += settled
                if failures >= _FINAL_READ_TRIES:
                    await sink.append_log(watch.task_id, "stderr", (
                        f"[egw] could not read the rest of the log: {error}\n").encode())
                    settled = True
                else:
                    await asyncio.sleep(self._jitter(self._read_interval(watch.ref.project)))
                    continue
            if settled:
                await sink.logs_complete(watch.task_id)
                self._watches.pop(watch.task_id, None)
                return
            if watch.terminal.is_set():  # the last read comes once late entries are in
                await asyncio.sleep(max(0.0, settle - since_end))
            else:
                await self._sleep(self._jitter(self._read_interval(watch.ref.project)),
                                  watch.terminal, clear=False)

    async def _read_pages(self, watch: _Watch, until: str | None, key: str) -> None:
        """Read every page from the cursor (the request stays the same across pages)."""
        assert self._sink is not None
        since, token = watch.cursor.timestamp, None
        budget = self._budget(watch.ref.project)
        while True:
            body = wire.list_entries_request(watch.ref, since=since, until=until,
                                             page_token=token, page_size=self.log_page_size)

            async def read(body: dict[str, Any] = body) -> Any:
                await budget.acquire()
                return await self._send("POST", f"{self._logging_url}/v2/entries:list",
                                        json_body=body, operation="logging.entries.list")

            page = await self._retrying(read, "logging.entries.list")
            lines, watch.cursor = watch.cursor.accept(page.get("entries") or [])
            await self._append(watch, lines)
            if lines:
                await self._sink.set_cursor(key, watch.cursor.to_json())
            token = page.get("nextPageToken")
            if not token:
                return

    async def _append(self, watch: _Watch, lines: list[wire.LogLine]) -> None:
        """Write lines, one append per run of lines on the same stream."""
        assert self._sink is not None
        multi = watch.task_count > 1
        run: list[str] = []
        stream = None
        for line in [*lines, None]:
            if line is None or line.stream != stream:
                if run and stream is not None:
                    await self._sink.append_log(watch.task_id, stream, "".join(run).encode())
                run = []
                if line is None:
                    break
                stream = line.stream
            run.append(wire.format_line(line, multi_task=multi))
