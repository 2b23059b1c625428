"""The Nomad backend: register batch jobs, follow their event stream and logs, stop them.

Theory of operation
-------------------
Contracts: tests/samples/nomad/*.md (Nomad's API docs and wire facts). Formats and state mapping are in
`egw.wire.nomad` (pure); this module does the I/O. It is longer than the style guide's
500 lines because the four loops below share one piece of state per task (`_Tracked`) and
splitting them would only spread that state over modules.

* **Submit** reads the job first: a job already marked with this task's id
  (``Meta.egw_task_id``) is adopted, never registered twice; a live job egw did not start
  is a `Conflict`. Registration is check-and-set (``EnforceIndex`` on the job's current
  ``JobModifyIndex``), and after an ambiguous failure (5xx, lost answer) the job is read
  again before another attempt. The answer's ``JobModifyIndex`` marks which allocations are
  this task's (``CreateIndex`` above it), so a reused job ID never mixes two runs.
* **Status** comes from one event-stream subscription per namespace (topics Job,
  Allocation, Evaluation), filtered here to the jobs egw tracks. Each line's ``Index`` is
  persisted (``sink.set_cursor``) after it is applied; a reconnect asks for ``last + 1``.
  Nomad answers such a request with the last event again when nothing is newer (its
  ``StartAtClosest``), so lines at or below the cursor are dropped; a first line beyond
  ``last + 1`` may mean events left Nomad's buffer: every task of the namespace is then
  reconciled by reading its allocations. Events of a job being registered are buffered
  until the register answer says which are ours. When the stream is refused (403, ACL) or
  keeps failing, each task long-polls its allocations with blocking queries instead, and the
  stream is tried again every ``stream_retry_s``.
* **State** is recomputed from everything known about the job (`wire.job_observation`) and
  reported only when it moves; ``queued`` (and ``running``, when the work did start) are
  reported first if egw has not seen them, so histories are complete even when Nomad was
  faster than egw.
* **Logs**: one follower per (allocation, task, stream), ``follow=true`` from the offset
  persisted in a cursor. When the allocation ends (or ``log_grace_s`` after egw ended the
  task) the follower stops following, drains the rest with ``follow=false`` and exits;
  Nomad's own follow never ends. A new allocation is a new segment (``sink.progress``), read
  after the previous segment of the same stream. When the task is terminal and every
  follower is done, ``sink.logs_complete`` is called once. Output and its offset are two
  writes: `close` lets the pair finish, a hard crash between them repeats that one chunk.
* **Stops egw makes on its own**: a placement failure is final for egw, so the job is
  stopped before a blocked evaluation can place it later; a task egw ended while Nomad
  still runs it (cancelled during registration) has its job stopped too.
"""

from __future__ import annotations

import asyncio
import functools
import random
import ssl
import time
from collections.abc import Coroutine, Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar
from urllib.parse import quote

import aiohttp
import structlog

from egw.config import NomadConfig, RetryConfig
from egw.core.model import STREAMS, Observation, Task, TaskState
from egw.core.states import can_move
from egw.errors import Conflict, ProviderError, ProviderUnavailable
from egw.providers.base import ProviderSink, Submission, WebhookResult
from egw.providers.http import HTTPResponse, http_request, raise_for_status
from egw.providers.retry import with_retries
from egw.wire import nomad as wire

log = structlog.get_logger("egw.providers.nomad")

SOURCE = "nomad"
S = TaskState
TOPICS = ("Job", "Allocation", "Evaluation")
_RECONCILE_CONCURRENCY = 8


def _idx(obj: Mapping[str, Any] | None, key: str) -> int:
    value = (obj or {}).get(key)
    return value if isinstance(value, int) and not isinstance(value, bool) else 0


def _retrieve(future: asyncio.Future[Any]) -> None:
    """Mark a read's outcome as seen (it may end after its follower stopped waiting)."""
    if not future.cancelled():
        future.exception()


def _check(resp: HTTPResponse) -> None:
    """Nomad's errors are plain text (common.md): that text becomes the egw error's message."""
    if resp.status < 400:
        return
    text = resp.body.decode("utf-8", "replace").strip() or f"HTTP {resp.status}"
    message = f"nomad: {text}"
    if resp.status == 409:
        raise Conflict(message, details={"provider": SOURCE, "upstream_status": 409})
    raise_for_status(resp, provider=SOURCE, message=message)


class _Refused(Exception):
    """The event stream answered a final error (403 and friends): use blocking queries."""

    def __init__(self, status: int, text: str) -> None:
        super().__init__(f"HTTP {status}: {text}")
        self.status = status


class _ServerNameContext(ssl.SSLContext):
    """Checks Nomad's certificate against ``server_name`` instead of the address's host
    (like ``NOMAD_TLS_SERVER_NAME``); asyncio's TLS goes through `wrap_bio`."""

    server_name: str = ""

    def wrap_bio(
        self,
        incoming: ssl.MemoryBIO,
        outgoing: ssl.MemoryBIO,
        server_side: bool = False,
        server_hostname: str | bytes | None = None,
        session: ssl.SSLSession | None = None,
    ) -> ssl.SSLObject:
        return super().wrap_bio(incoming, outgoing, server_side=server_side,
                                server_hostname=self.server_name or server_hostname,
                                session=session)


def tls_context(cfg: NomadConfig) -> ssl.SSLContext | None:
    """The TLS context for an ``https://`` address: CA file, client certificate, server name."""
    if not cfg.address.startswith("https://"):
        return None
    ctx: ssl.SSLContext
    if cfg.server_name:
        named = _ServerNameContext(ssl.PROTOCOL_TLS_CLIENT)
        named.server_name = cfg.server_name
        ctx = named
    else:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    if cfg.ca_file:
        ctx.load_verify_locations(cafile=cfg.ca_file)
    else:
        ctx.load_default_certs()
    if cfg.client_cert_file and cfg.client_key_file:
        ctx.load_cert_chain(cfg.client_cert_file, cfg.client_key_file)
    return ctx


@dataclass(eq=False)
class _Tracked:
    """What egw knows about one task's Nomad job."""

    task_id: str
    job_id: str
    namespace: str
    region: str | None
    expected: int = 1
    #: JobModifyIndex of egw's registration: this task's allocations were created after it
    since: int = 0
    #: a later registration of the same job ID (another task): what comes after is not ours
    until: int | None = None
    eval_id: str | None = None
    registering: bool = False
    adopted: bool = False
    buffered: list[wire.StreamEvent] = field(default_factory=list)
    allocs: dict[str, dict[str, Any]] = field(default_factory=dict)
    evals: dict[str, dict[str, Any]] = field(default_factory=dict)
    stopped: bool = False
    gone: bool = False
    cancel_requested: bool = False
    stop_sent: bool = False
    status: TaskState = S.PENDING
    segments: list[str] = field(default_factory=list)
    alloc_done: dict[str, asyncio.Event] = field(default_factory=dict)
    followers: dict[tuple[str, str, str], asyncio.Task[None]] = field(default_factory=dict)
    chain: dict[tuple[str, str], asyncio.Task[None]] = field(default_factory=dict)
    grace: asyncio.TimerHandle | None = None
    grace_over: bool = False
    poller: asyncio.Task[None] | None = None
    logs_completed: bool = False
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)

    @classmethod
    def from_task(cls, task: Task, default_namespace: str) -> _Tracked:
        up, spec = task.upstream or {}, task.spec
        return cls(
            task_id=task.id,
            job_id=str(up.get("job_id") or task.upstream_id or spec.get("job_id") or ""),
            namespace=str(up.get("namespace") or spec.get("namespace") or default_namespace),
            region=up.get("region", spec.get("region")),
            expected=int(up.get("expected") or spec.get("expected") or 1),
            since=int(up.get("job_modify_index") or 0),
            eval_id=up.get("eval_id"),
            status=task.status,
        )

    def ours(self, obj: Mapping[str, Any], key: str, *, strict: bool = True) -> bool:
        index = _idx(obj, key)
        after = index > self.since if strict else index >= self.since
        return after and (self.until is None or index < self.until)

    def merge(self, table: dict[str, dict[str, Any]], obj: Mapping[str, Any]) -> bool:
        key = str(obj.get("ID"))
        old = table.get(key)
        if old is not None and _idx(old, "ModifyIndex") > _idx(obj, "ModifyIndex"):
            return False
        table[key] = dict(obj)
        return True

    def apply(self, ev: wire.StreamEvent) -> bool:
        """Take one event of this job; False if it is not about this task's run."""
        obj = ev.object
        if ev.topic == "Allocation" and self.ours(obj, "CreateIndex"):
            return self.merge(self.allocs, obj)
        if ev.topic == "Evaluation" and self.ours(obj, "CreateIndex", strict=False):
            return self.merge(self.evals, obj)
        if ev.topic == "Job" and self.ours(obj, "JobModifyIndex", strict=False):
            if ev.type in ("JobDeregistered", "JobBatchDeregistered") or obj.get("Stop"):
                self.stopped = True
            return True
        return False

    def live_allocs(self) -> bool:
        return any(a.get("ClientStatus") not in wire.TERMINAL_CLIENT
                   for a in self.allocs.values() if self.ours(a, "CreateIndex"))

    def observation(self) -> Observation:
        return wire.job_observation(
            allocs=self.allocs.values(), evals=self.evals.values(), since=self.since,
            expected=self.expected, stopped=self.stopped, gone=self.gone,
            cancel_requested=self.cancel_requested or self.status is S.CANCELLING,
        )

    def upstream(self) -> dict[str, Any]:
        return {"job_id": self.job_id, "namespace": self.namespace, "region": self.region,
                "job_modify_index": self.since, "eval_id": self.eval_id, "expected": self.expected}


@dataclass(eq=False)
class _Watcher:
    """The event-stream subscription of one namespace."""

    namespace: str
    task: asyncio.Task[None] | None = None
    mode: str = "stream"
    connected: bool = False
    last_index: int | None = None
    last_message: float | None = None
    reconnects: int = 0
    gaps: int = 0
    repeated: int = 0


class NomadProvider:
    name: ClassVar[str] = "nomad"
    webhook_source: ClassVar[str | None] = None

    def __init__(self, cfg: NomadConfig, *, session: aiohttp.ClientSession,
                 retry: RetryConfig) -> None:
        self._cfg = cfg
        self._session = session
        self._retry = retry
        self._base = cfg.address.rstrip("/")
        self._ssl = tls_context(cfg)
        self._headers = {"X-Nomad-Token": cfg.token} if cfg.token else {}
        self._sink: ProviderSink | None = None
        self._tracked: dict[str, _Tracked] = {}
        self._by_job: dict[tuple[str, str], list[_Tracked]] = {}
        self._watchers: dict[str, _Watcher] = {}
        self._background: set[asyncio.Task[Any]] = set()
        self._deliveries: set[asyncio.Future[None]] = set()
        self._closed = False

    # --- the Provider protocol -----------------------------------------------------------------

    def validate(self, task: Mapping[str, Any]) -> dict[str, Any]:
        return wire.validate_task(task, namespace=self._cfg.namespace, region=self._cfg.region,
                                  datacenters=self._cfg.datacenters)

    async def start(self, sink: ProviderSink) -> None:
        """Resume every task egw still follows, then subscribe per namespace."""
        self._sink = sink
        for task in await sink.active_tasks(self.name):
            if task.id in self._tracked or task.upstream_id is None:
                continue  # never registered: egw submits it again
            self._track(_Tracked.from_task(task, self._cfg.namespace))
        for ns in {self._cfg.namespace} | {t.namespace for t in self._tracked.values()}:
            self._ensure_watcher(ns)
        for tracked in list(self._tracked.values()):
            self._spawn(self._reconcile(tracked))

    async def close(self) -> None:
        self._closed = True
        tasks: list[asyncio.Task[Any]] = [w.task for w in self._watchers.values() if w.task]
        for tracked in self._tracked.values():
            if tracked.grace is not None:
                tracked.grace.cancel()
            tasks += [t for t in (tracked.poller,) if t is not None]
            tasks += list(tracked.followers.values())
        tasks += list(self._background)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await asyncio.gather(*self._deliveries, return_exceptions=True)

    async def submit(self, task: Task, *, idempotency_key: str) -> Submission:
        self._need_sink()
        known = self._tracked.get(task.id)
        if known is not None and not known.registering and known.since:
            return self._submission(known)
        spec = task.spec
        tracked = _Tracked(task_id=task.id, job_id=spec["job_id"], namespace=spec["namespace"],
                           region=spec.get("region"), expected=int(spec.get("expected") or 1),
                           registering=True, status=task.status)
        self._track(tracked)
        self._ensure_watcher(tracked.namespace)
        timeouts = [t for t in (task.timeout_s, spec.get("timeout_s")) if t]
        try:
            await self._register(tracked, spec, key=idempotency_key,
                                 timeout_s=min(timeouts) if timeouts else None)
        except BaseException:
            self._untrack(tracked)
            raise
        for other in self._by_job.get((tracked.namespace, tracked.job_id), []):
            if other is not tracked and other.since < tracked.since:
                other.until = tracked.since
        tracked.registering = False
        buffered, tracked.buffered = tracked.buffered, []
        self._spawn(self._after_register(tracked, buffered))
        return self._submission(tracked)

    async def cancel(self, task: Task, *, force: bool = False) -> Observation | None:
        """``DELETE /v1/job/:id`` (``purge`` when forced); ``cancelled`` comes from the stream
        once the allocations have stopped."""
        tracked = self._tracked.get(task.id) or _Tracked.from_task(task, self._cfg.namespace)
        if task.upstream_id is None and not tracked.since:
            return Observation(state=S.CANCELLED, reason="nothing was started in Nomad")
        tracked.cancel_requested = True
        try:
            await self._retried("stop_job", "DELETE", self._job_path(tracked.job_id),
                                ns=tracked.namespace, region=tracked.region,
                                params={"purge": "true"} if force else None)
        except ProviderError as exc:
            if exc.upstream_status != 404:
                raise
            tracked.gone = True
        if task.id in self._tracked:
            w = self._watchers.get(tracked.namespace)
            if tracked.gone or w is None or not w.connected:
                self._spawn(self._reconcile(tracked))
        return None

    async def status(self, task: Task) -> Observation:
        """Read the job, its allocations and evaluation now."""
        tracked = self._tracked.get(task.id)
        if tracked is None:
            if task.upstream_id is None:
                return Observation(state=task.status, reason="not registered in Nomad")
            temp = _Tracked.from_task(task, self._cfg.namespace)
            await self._refresh(temp)
            return temp.observation()
        await self._refresh(tracked)
        await self._evaluate(tracked)
        return tracked.observation()

    async def handle_webhook(self, headers: Mapping[str, str], body: bytes) -> WebhookResult:
        return WebhookResult(status=404, body={"error": {
            "code": "not_found", "message": "the nomad provider takes no webhooks", "details": {}}})

    def health(self) -> Mapping[str, Any]:
        now = time.monotonic()
        return {
            "namespaces": {
                ns: {"mode": w.mode, "connected": w.connected, "last_index": w.last_index,
                     "lag_s": round(now - w.last_message, 3) if w.last_message else None,
                     "reconnects": w.reconnects, "gaps": w.gaps, "repeated_dropped": w.repeated}
                for ns, w in self._watchers.items()
            },
            "tracked_tasks": len(self._tracked),
            "log_followers": sum(1 for t in self._tracked.values()
                                 for f in t.followers.values() if not f.done()),
        }

    # --- plumbing --------------------------------------------------------------------------------

    def _need_sink(self) -> ProviderSink:
        if self._sink is None:
            raise ProviderUnavailable("nomad: the provider is not started", provider=SOURCE)
        return self._sink

    def _spawn(self, coro: Coroutine[Any, Any, Any]) -> None:
        """Run in the background; kept here until done (the loop holds tasks weakly)."""
        task = asyncio.ensure_future(coro)
        self._background.add(task)
        task.add_done_callback(self._finished)

    def _finished(self, task: asyncio.Task[Any]) -> None:
        self._background.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("nomad_background_failed", error=repr(task.exception()))

    def _backoff(self, attempt: int) -> float:
        base = min(self._retry.max_backoff_s, self._retry.initial_backoff_s * 2 ** (attempt - 1))
        return float(base / 2 + random.uniform(0, base / 2))

    def _track(self, tracked: _Tracked) -> None:
        self._tracked[tracked.task_id] = tracked
        self._by_job.setdefault((tracked.namespace, tracked.job_id), []).append(tracked)

    def _untrack(self, tracked: _Tracked) -> None:
        if self._tracked.get(tracked.task_id) is tracked:
            del self._tracked[tracked.task_id]
        same = self._by_job.get((tracked.namespace, tracked.job_id), [])
        if tracked in same:
            same.remove(tracked)
        if not same:
            self._by_job.pop((tracked.namespace, tracked.job_id), None)
        if tracked.poller is not None:
            tracked.poller.cancel()
        if tracked.grace is not None:
            tracked.grace.cancel()

    def _in_namespace(self, ns: str) -> list[_Tracked]:
        return [t for t in self._tracked.values()
                if t.namespace == ns and not t.registering and not t.logs_completed]

    @staticmethod
    def _job_path(job_id: str) -> str:
        return f"/v1/job/{quote(job_id, safe='')}"

    def _params(self, ns: str | None, region: str | None,
                extra: Mapping[str, str] | None = None) -> dict[str, str]:
        params = {"namespace": ns} if ns else {}
        if region or self._cfg.region:
            params["region"] = str(region or self._cfg.region)
        params.update(extra or {})
        return params

    def _ssl_kwargs(self) -> dict[str, Any]:
        return {"ssl": self._ssl} if self._ssl is not None else {}

    async def _request(self, method: str, path: str, *, ns: str | None, region: str | None = None,
                       params: Mapping[str, str] | None = None, json_body: Any = None,
                       timeout_s: float | None = None) -> HTTPResponse:
        resp = await http_request(
            self._session, method, self._base + path, provider=SOURCE, headers=self._headers,
            json_body=json_body, params=self._params(ns, region, params),
            timeout_s=timeout_s or self._cfg.request_timeout_s, ssl=self._ssl)
        _check(resp)
        return resp

    async def _retried(self, operation: str, method: str, path: str, **kw: Any) -> HTTPResponse:
        return await with_retries(self._retry, lambda: self._request(method, path, **kw),
                                  provider=SOURCE, operation=operation)

    async def _read(self, operation: str, path: str, *, ns: str,
                    region: str | None) -> dict[str, Any] | None:
        """GET with retries; None for Nomad's 404 (``job not found``, ``eval not found``)."""
        try:
            resp = await self._retried(operation, "GET", path, ns=ns, region=region)
        except ProviderError as exc:
            if exc.upstream_status == 404:
                return None
            raise
        body = resp.json()
        return body if isinstance(body, dict) else None

    # --- submit -----------------------------------------------------------------------------------

    async def _register(self, tracked: _Tracked, spec: Mapping[str, Any], *, key: str,
                        timeout_s: float | None) -> None:
        ns, region, job_id = tracked.namespace, tracked.region, tracked.job_id
        current = await self._read("read_job", self._job_path(job_id), ns=ns, region=region)
        started = time.monotonic()
        attempt = 0
        while True:
            if current is not None and (current.get("Meta") or {}).get(wire.META_TASK_ID) == key:
                self._adopt(tracked, current)
                return
            if current is not None and not current.get("Stop") and current.get("Status") != "dead":
                owner = (current.get("Meta") or {}).get(wire.META_TASK_ID)
                whose = f"egw task {owner}" if owner else "a job egw did not start"
                raise Conflict(
                    f"nomad: job {job_id!r} already exists in namespace {ns!r} and is "
                    f"{current.get('Status') or 'pending'} ({whose}); egw does not replace a live "
                    "job (stop it, or choose another job_id)",
                    details={"provider": SOURCE, "field": "task.job_id"})
            attempt += 1
            body = wire.register_body(spec, task_id=key, timeout_s=timeout_s,
                                      enforce_index=_idx(current, "JobModifyIndex"))
            try:
                resp = await self._request("POST", "/v1/jobs", ns=ns, region=region,
                                           json_body=body)
            except ProviderUnavailable as exc:
                # a 5xx or a lost answer may have registered the job, and a check-and-set
                # miss means someone else did: look before anything else
                cas = wire.ENFORCE_INDEX_ERROR in exc.message
                log.warning("nomad_register_retry", job_id=job_id, attempt=attempt, error=str(exc))
                if attempt >= self._retry.attempts or (
                        time.monotonic() - started >= self._retry.deadline_s):
                    current = await self._read("read_job", self._job_path(job_id),
                                               ns=ns, region=region)
                    if current is not None and (
                            (current.get("Meta") or {}).get(wire.META_TASK_ID) == key):
                        self._adopt(tracked, current)
                        return
                    raise
                if not cas:
                    await asyncio.sleep(self._backoff(attempt))
                current = await self._read("read_job", self._job_path(job_id), ns=ns,
                                           region=region)
                continue
            data = resp.json()
            tracked.since = _idx(data, "JobModifyIndex")
            tracked.eval_id = data.get("EvalID") or None
            log.info("nomad_registered", task_id=tracked.task_id, job_id=job_id, namespace=ns,
                     eval_id=tracked.eval_id, job_modify_index=tracked.since)
            return

    def _adopt(self, tracked: _Tracked, job: Mapping[str, Any]) -> None:
        """The job is already this task's (an earlier submit whose answer was lost)."""
        tracked.since = _idx(job, "CreateIndex") if job.get("Stop") else _idx(job, "JobModifyIndex")
        tracked.adopted = True
        log.info("nomad_adopted", task_id=tracked.task_id, job_id=tracked.job_id,
                 job_modify_index=tracked.since)

    def _submission(self, tracked: _Tracked) -> Submission:
        short = (tracked.eval_id or "")[:8]
        return Submission(
            upstream_id=tracked.job_id,
            upstream_url=f"{self._base}/ui/jobs/{quote(tracked.job_id, safe='')}"
                         f"@{quote(tracked.namespace, safe='')}",
            upstream=tracked.upstream(),
            observation=Observation(
                state=S.QUEUED, reason="registered in Nomad" + (f" (evaluation {short})"
                                                                if short else ""),
                detail={"job_modify_index": tracked.since, "eval_id": tracked.eval_id}),
        )

    async def _after_register(self, tracked: _Tracked, buffered: list[wire.StreamEvent]) -> None:
        for ev in buffered:
            tracked.apply(ev)
        w = self._watchers.get(tracked.namespace)
        if w is not None and w.mode == "poll":
            self._start_poller(tracked)
        elif tracked.adopted or w is None or not w.connected:
            await self._reconcile(tracked)
        else:
            await self._evaluate(tracked)

    # --- state ---------------------------------------------------------------------------------

    async def _evaluate(self, tracked: _Tracked) -> None:
        """Recompute the task's state, start log followers, report a move."""
        async with tracked.lock:
            if tracked.logs_completed or tracked.registering:
                return
            await self._sync_followers(tracked)
            obs = tracked.observation()
            await self._emit(tracked, obs)
            # a blocked evaluation would place the job later, unseen; and a task egw ended
            # itself (cancelled while being registered) must not go on running: stop the job
            failed_placement = obs.detail.get("placement_failed") and tracked.status.terminal
            ended_by_egw = tracked.status.terminal and not obs.state.terminal \
                and not tracked.cancel_requested and not tracked.stopped
            if (failed_placement or ended_by_egw) and not tracked.stop_sent:
                tracked.stop_sent = True
                self._spawn(self._stop_job(tracked))
            if tracked.status.terminal and tracked.grace is None:
                loop = asyncio.get_running_loop()
                tracked.grace = loop.call_later(self._cfg.log_grace_s, self._grace_over, tracked)
        await self._maybe_complete(tracked)

    async def _emit(self, tracked: _Tracked, obs: Observation) -> None:
        sink = self._need_sink()
        task = await sink.get_task(tracked.task_id)
        if task is None:
            tracked.logs_completed = True  # the task is gone from egw: nothing to report to
            self._untrack(tracked)
            return
        tracked.status = task.status
        if obs.state is task.status or not can_move(task.status, obs.state):
            return
        steps: list[Observation] = []
        if task.status is S.PENDING and obs.state is not S.QUEUED:
            steps.append(Observation(state=S.QUEUED, reason="registered in Nomad"))
        if obs.state.terminal and obs.detail.get("started") and task.status in (S.PENDING,
                                                                                 S.QUEUED):
            steps.append(Observation(state=S.RUNNING, reason="allocation started"))
        steps.append(obs)
        for step in steps:
            after = await sink.observe(tracked.task_id, step, source=SOURCE,
                                       delivery_id=f"nomad:{tracked.task_id}:{step.state}")
            if after is not None:
                tracked.status = after.status
        log.info("nomad_observed", task_id=tracked.task_id, job_id=tracked.job_id,
                 state=str(obs.state), reason=obs.reason)

    async def _stop_job(self, tracked: _Tracked) -> None:
        try:
            await self._retried("stop_job", "DELETE", self._job_path(tracked.job_id),
                                ns=tracked.namespace, region=tracked.region)
        except ProviderError as exc:
            log.warning("nomad_stop_failed", job_id=tracked.job_id, error=str(exc))

    def _grace_over(self, tracked: _Tracked) -> None:
        tracked.grace_over = True
        for done in tracked.alloc_done.values():
            done.set()

    async def _maybe_complete(self, tracked: _Tracked) -> None:
        if tracked.logs_completed or tracked.registering or not tracked.status.terminal:
            return
        if any(not f.done() for f in tracked.followers.values()):
            return
        tracked.logs_completed = True
        self._untrack(tracked)
        await self._need_sink().logs_complete(tracked.task_id)
        log.info("nomad_logs_complete", task_id=tracked.task_id, segments=len(tracked.segments))

    async def _refresh(self, tracked: _Tracked, *, index: int | None = None,
                       wait_s: float | None = None) -> int:
        """Read the job's allocations (a blocking query when ``index`` is given), the job, and
        the evaluation while nothing is placed; returns the allocations' ``X-Nomad-Index``."""
        ns, region, path = tracked.namespace, tracked.region, self._job_path(tracked.job_id)
        params, timeout = None, None
        if index and wait_s:
            params = {"index": str(index), "wait": f"{int(wait_s * 1000)}ms"}
            timeout = wait_s * 17 / 16 + self._cfg.request_timeout_s
        resp = await self._retried("list_allocations", "GET", f"{path}/allocations", ns=ns,
                                   region=region, params=params, timeout_s=timeout)
        for alloc in resp.json() or []:
            if isinstance(alloc, dict) and tracked.ours(alloc, "CreateIndex"):
                tracked.merge(tracked.allocs, alloc)
        job = await self._read("read_job", path, ns=ns, region=region)
        tracked.gone = job is None
        if job is not None and tracked.ours(job, "JobModifyIndex", strict=False) \
                and job.get("Stop"):
            tracked.stopped = True
        if tracked.eval_id and not any(tracked.ours(a, "CreateIndex")
                                       for a in tracked.allocs.values()):
            ev = await self._read("read_evaluation", f"/v1/evaluation/{quote(tracked.eval_id)}",
                                  ns=ns, region=region)
            if ev is not None:
                tracked.merge(tracked.evals, ev)
        try:
            return int(resp.headers.get("x-nomad-index") or 0)
        except ValueError:
            return 0

    async def _reconcile(self, tracked: _Tracked) -> None:
        try:
            await self._refresh(tracked)
        except ProviderError as exc:
            log.warning("nomad_reconcile_failed", task_id=tracked.task_id, error=str(exc))
            return
        await self._evaluate(tracked)

    async def _reconcile_namespace(self, ns: str) -> None:
        gate = asyncio.Semaphore(_RECONCILE_CONCURRENCY)

        async def one(tracked: _Tracked) -> None:
            async with gate:
                await self._reconcile(tracked)
        await asyncio.gather(*(one(t) for t in self._in_namespace(ns)))

    # --- the event stream ------------------------------------------------------------------------

    def _ensure_watcher(self, ns: str) -> None:
        w = self._watchers.get(ns)
        if w is None:
            w = self._watchers[ns] = _Watcher(ns)
        if (w.task is None or w.task.done()) and self._sink is not None and not self._closed:
            w.task = asyncio.ensure_future(self._watch(w))

    def _cursor(self, ns: str) -> str:
        return f"nomad:event_index:{ns}"

    async def _watch(self, w: _Watcher) -> None:
        stored = await self._need_sink().get_cursor(self._cursor(w.namespace))
        w.last_index = int(stored) if stored and stored.isdigit() else None
        failures = 0
        while not self._closed:
            try:
                await self._stream(w)
                failures, delay = 0, self._backoff(1)
            except _Refused as exc:
                log.warning("nomad_event_stream_refused", namespace=w.namespace,
                            status=exc.status, error=str(exc))
                await self._poll_for_a_while(w)
                continue
            except asyncio.CancelledError:
                raise
            # network, 5xx, a malformed line, a sink failure: the stream must outlive them all
            except Exception as exc:  # noqa: BLE001
                failures += 1
                log.warning("nomad_event_stream_failed", namespace=w.namespace,
                            attempt=failures, error=repr(exc))
                if failures >= max(3, self._retry.attempts):
                    failures = 0
                    await self._poll_for_a_while(w)
                    continue
                delay = self._backoff(failures)
            w.reconnects += 1
            await asyncio.sleep(delay)

    async def _stream(self, w: _Watcher) -> None:
        """One subscription, until it ends (event-stream.md)."""
        sink, ns = self._need_sink(), w.namespace
        requested = w.last_index + 1 if w.last_index is not None else 0
        params: list[tuple[str, str]] = [("namespace", ns)] + [("topic", t) for t in TOPICS]
        if requested:
            params.append(("index", str(requested)))
        if self._cfg.region:
            params.append(("region", self._cfg.region))
        timeout = aiohttp.ClientTimeout(total=None, sock_connect=self._cfg.connect_timeout_s,
                                        sock_read=self._cfg.stream_idle_timeout_s)
        try:
            async with self._session.get(self._base + "/v1/event/stream", params=params,
                                         headers=self._headers, timeout=timeout,
                                         **self._ssl_kwargs()) as resp:
                if resp.status != 200:
                    text = (await resp.read()).decode("utf-8", "replace").strip()
                    if resp.status in (400, 401, 403, 404, 405, 501):
                        raise _Refused(resp.status, text)
                    _check(HTTPResponse(resp.status, {}, text.encode()))
                w.connected, w.last_message = True, time.monotonic()
                if w.mode == "poll":
                    w.mode = "stream"
                    self._stop_pollers(ns)
                if w.last_index is None:
                    self._spawn(self._reconcile_namespace(ns))  # nothing to resume from
                log.info("nomad_event_stream_connected", namespace=ns, index=requested)
                splitter, first, gap = wire.NdjsonSplitter(), True, False
                async for chunk in resp.content.iter_any():
                    for raw in splitter.feed(chunk):
                        line = wire.parse_stream_line(raw)
                        w.last_message = time.monotonic()
                        if line.index is None:
                            continue
                        if first:
                            first, gap = False, bool(requested) and line.index > requested
                        if w.last_index is not None and line.index <= w.last_index:
                            w.repeated += 1  # the last event again, on resume
                            continue
                        await self._dispatch(ns, line)
                        w.last_index = line.index
                        await sink.set_cursor(self._cursor(ns), str(line.index))
                        if gap:
                            gap = False
                            w.gaps += 1
                            log.warning("nomad_event_stream_gap", namespace=ns,
                                        asked=requested, got=line.index)
                            await self._reconcile_namespace(ns)
        except aiohttp.ClientError as exc:
            raise ProviderUnavailable(f"nomad: event stream: {type(exc).__name__}: {exc}",
                                      provider=SOURCE) from exc
        except TimeoutError as exc:
            raise ProviderUnavailable("nomad: event stream idle too long",
                                      provider=SOURCE) from exc
        finally:
            w.connected = False

    async def _dispatch(self, ns: str, line: wire.StreamLine) -> None:
        touched: dict[str, _Tracked] = {}
        for ev in line.events:
            job_id = ev.job_id
            if job_id is None:
                continue
            for tracked in list(self._by_job.get((ev.namespace or ns, job_id), [])):
                if tracked.registering:
                    tracked.buffered.append(ev)
                elif tracked.apply(ev):
                    touched[tracked.task_id] = tracked
        for tracked in touched.values():
            await self._evaluate(tracked)

    # --- fallback: blocking queries ---------------------------------------------------------------

    async def _poll_for_a_while(self, w: _Watcher) -> None:
        w.mode = "poll"
        for tracked in self._in_namespace(w.namespace):
            self._start_poller(tracked)
        await asyncio.sleep(self._cfg.stream_retry_s)

    def _start_poller(self, tracked: _Tracked) -> None:
        if tracked.poller is None or tracked.poller.done():
            tracked.poller = asyncio.ensure_future(self._poll(tracked))

    def _stop_pollers(self, ns: str) -> None:
        for tracked in self._tracked.values():
            if tracked.namespace == ns and tracked.poller is not None:
                tracked.poller.cancel()
                tracked.poller = None

    async def _poll(self, tracked: _Tracked) -> None:
        """Long-poll one task's allocations until its logs are complete (common.md)."""
        index, failures = 0, 0
        while not tracked.logs_completed and not (tracked.status.terminal
                                                  and not tracked.live_allocs()):
            try:
                index = await self._refresh(tracked, index=index or None,
                                            wait_s=self._cfg.blocking_wait_s)
                failures = 0
            except ProviderError as exc:
                failures += 1
                log.warning("nomad_poll_failed", task_id=tracked.task_id, error=str(exc))
                await asyncio.sleep(self._backoff(failures))
                continue
            await asyncio.shield(self._evaluate(tracked))
            if not index:  # no X-Nomad-Index: no blocking either, so do not spin
                await asyncio.sleep(self._backoff(3))

    # --- logs ----------------------------------------------------------------------------------

    async def _sync_followers(self, tracked: _Tracked) -> None:
        """Note new allocations (log segments) and start a follower per started task and stream."""
        sink = self._need_sink()
        allocs = sorted((a for a in tracked.allocs.values() if tracked.ours(a, "CreateIndex")),
                        key=lambda a: _idx(a, "CreateIndex"))
        for alloc in allocs:
            alloc_id = str(alloc["ID"])
            if alloc_id not in tracked.segments:
                tracked.segments.append(alloc_id)
                await sink.progress(
                    tracked.task_id, "nomad.allocation",
                    {"alloc_id": alloc_id, "segment": len(tracked.segments),
                     "name": alloc.get("Name"), "node_id": alloc.get("NodeID") or None,
                     "previous_alloc": alloc.get("PreviousAllocation") or None},
                    source=SOURCE, delivery_id=f"nomad:{tracked.task_id}:alloc:{alloc_id}")
            done = tracked.alloc_done.setdefault(alloc_id, asyncio.Event())
            if alloc.get("ClientStatus") in wire.TERMINAL_CLIENT or tracked.grace_over:
                done.set()
            for task_name, ts in sorted((alloc.get("TaskStates") or {}).items()):
                if not isinstance(ts, Mapping) or not wire.task_started(ts):
                    continue
                for stream in STREAMS:
                    key = (alloc_id, task_name, stream)
                    if key in tracked.followers:
                        continue
                    previous = tracked.chain.get((task_name, stream))
                    follower = asyncio.ensure_future(
                        self._follow(tracked, alloc_id, task_name, stream, done, previous))
                    follower.add_done_callback(functools.partial(self._follower_done, tracked))
                    tracked.followers[key] = tracked.chain[(task_name, stream)] = follower

    def _follower_done(self, tracked: _Tracked, _: object = None) -> None:
        if not self._closed:
            self._spawn(self._maybe_complete(tracked))

    async def _follow(self, tracked: _Tracked, alloc_id: str, task_name: str, stream: str,
                      done: asyncio.Event, previous: asyncio.Task[None] | None) -> None:
        """Tail one allocation's task stream into egw's log store, resumably."""
        if previous is not None:
            await asyncio.wait([previous])  # segments of a stream stay in order
        sink = self._need_sink()
        key = f"nomad:log:{alloc_id}:{task_name}:{stream}"
        stored = await sink.get_cursor(key)
        offset = int(stored) if stored and stored.isdigit() else 0
        failures = 0
        while True:
            final = done.is_set()
            try:
                offset = await self._read_log(tracked, alloc_id, task_name, stream, offset,
                                              cursor=key, follow=not final, done=done)
            except ProviderError as exc:
                failures += 1
                if final and (exc.upstream_status == 404 or failures >= self._retry.attempts):
                    log.warning("nomad_logs_given_up", task_id=tracked.task_id,
                                alloc_id=alloc_id, stream=stream, error=str(exc))
                    return
                await asyncio.sleep(self._backoff(failures))
                continue
            if final:
                return
            if not done.is_set():  # the server ended a follow: reconnect after a pause
                await asyncio.sleep(self._backoff(1))

    async def _deliver(self, task_id: str, stream: str, text: bytes, cursor: str,
                       offset: int) -> None:
        """Store output, then its end offset; a `close` in between would make a restarted
        gateway read the chunk twice, so the pair is shielded and `close` waits for it."""
        sink = self._need_sink()

        async def both() -> None:
            if text:
                await sink.append_log(task_id, stream, text)
            await sink.set_cursor(cursor, str(offset))
        delivery = asyncio.ensure_future(both())
        self._deliveries.add(delivery)
        delivery.add_done_callback(self._deliveries.discard)
        await asyncio.shield(delivery)

    async def _read_log(self, tracked: _Tracked, alloc_id: str, task_name: str, stream: str,
                        offset: int, *, cursor: str, follow: bool, done: asyncio.Event) -> int:
        """One ``/v1/client/fs/logs`` request from ``offset``; returns the new offset. A follow
        returns when ``done`` is set; a drain (``follow=false``) at the end of the logs."""
        params = self._params(tracked.namespace, tracked.region, {
            "task": task_name, "type": stream, "origin": "start", "offset": str(offset),
            "follow": "true" if follow else "false"})
        timeout = aiohttp.ClientTimeout(total=None, sock_connect=self._cfg.connect_timeout_s,
                                        sock_read=self._cfg.stream_idle_timeout_s)
        decoder, chunker, raw = wire.FrameDecoder(), wire.Utf8Chunker(), offset
        stop: asyncio.Future[Any] | None = None
        try:
            async with self._session.get(
                    f"{self._base}/v1/client/fs/logs/{quote(alloc_id, safe='')}", params=params,
                    headers=self._headers, timeout=timeout, **self._ssl_kwargs()) as resp:
                if resp.status != 200:
                    _check(HTTPResponse(resp.status, {}, await resp.read()))
                stop = asyncio.ensure_future(done.wait()) if follow else None
                while True:
                    read = asyncio.ensure_future(resp.content.readany())
                    read.add_done_callback(_retrieve)
                    try:
                        await asyncio.wait({read} | ({stop} if stop else set()),
                                           return_when=asyncio.FIRST_COMPLETED)
                    finally:
                        if not read.done():
                            read.cancel()
                    if not read.done() or read.cancelled():
                        break  # the allocation ended: stop following
                    chunk = read.result()
                    if not chunk:
                        break
                    for frame in decoder.feed(chunk):
                        if frame.file_event:
                            log.info("nomad_log_file_event", alloc_id=alloc_id,
                                     event=frame.file_event, file=frame.file)
                        if not frame.data:
                            continue
                        raw += len(frame.data)
                        text = chunker.feed(frame.data)
                        await self._deliver(tracked.task_id, stream, text, cursor,
                                            raw - chunker.pending)
                if not follow:
                    tail = chunker.flush()  # an unfinished character at the very end
                    await self._deliver(tracked.task_id, stream, tail, cursor, raw)
                    return raw
        except aiohttp.ClientError as exc:
            raise ProviderUnavailable(f"nomad: logs of {alloc_id}: {type(exc).__name__}: {exc}",
                                      provider=SOURCE) from exc
        except TimeoutError as exc:
            raise ProviderUnavailable(f"nomad: logs of {alloc_id}: idle too long",
                                      provider=SOURCE) from exc
        except ValueError as exc:
            raise ProviderUnavailable(f"nomad: logs of {alloc_id}: {exc}",
                                      provider=SOURCE) from exc
        finally:
            if stop is not None:
                stop.cancel()
        return raw - chunker.pending
