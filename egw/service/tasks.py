"""The task use cases (submit, cancel, read, wait) and the `ProviderSink` providers report to.

No HTTP and no SQL here: the web layer calls these methods, providers call the
sink methods, and both go through the store's single writer.

When the store refuses writes
-----------------------------
The writer retries a refused write for a while (see ``egw/store/writer.py``), then
fails it. A task whose output could then not be stored is not left ``running``
with its process alive and its output lost: it is *doomed*. Its provider is asked
to stop it (``cancel(force=True)``), its further output is dropped, and its end
(``failed``, with the reason) is handed to ``Writer.settle``, which keeps it and
records it before anything else about the task once the store takes writes again.
An outcome a provider reports while writes fail (and the end of a task's output)
is kept the same way, so no task is left unfinished by a full disk.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence
from dataclasses import replace
from typing import Any

import structlog

from egw.background import BackgroundTasks
from egw.config import Config
from egw.core.access import ALL, Access, Scope
from egw.core.model import TERMINAL, Observation, Task, TaskState, new_task_id, utcnow
from egw.errors import (
    EgwError,
    InvalidRequest,
    NotFound,
    ProviderUnavailable,
    StoreError,
)
from egw.providers.base import Leading, Provider, Queueing, Tailable, WebhookProvider
from egw.service import storage
from egw.service.accept import answer_op
from egw.service.fanout import Hub
from egw.service.launch import Launcher
from egw.service.namespaces import Namespaces
from egw.service.output import Outputs
from egw.service.reads import TaskReads
from egw.service.replicas import REAP_S, REAPER, hear_replicas, leaders, owned_elsewhere, reap
from egw.service.requests import SubmitRequest
from egw.service.storage import StorageLimits
from egw.service.watchdog import Watchdog
from egw.store import Store, retention_cutoff
from egw.store.leases import while_held
from egw.store.watchops import CancelFailed

log = structlog.get_logger("egw.service")

#: a submit that failed ambiguously (upstream unavailable) is tried this many times in all,
#: waiting SUBMIT_RETRY_S, then twice that, and so on, before the task fails
SUBMIT_ATTEMPTS = 4
SUBMIT_RETRY_S = 15.0


class TaskService:
    """Submit, cancel and watch tasks; implements `egw.providers.base.ProviderSink`."""

    def __init__(
        self,
        store: Store,
        providers: Mapping[str, Provider],
        hub: Hub,
        *,
        reads: TaskReads | None = None,
        retention_days: float = 7.0,
        prune_interval_s: float = 3600.0,
    ) -> None:
        self.store = store
        self.reads = reads or TaskReads(store.reader, store.writer)
        self.providers = dict(providers)
        #: the providers that can answer a queued submit at once, found once (an isinstance()
        #: against a runtime Protocol inspects the class on every call)
        self._queueing = {n: p for n, p in self.providers.items() if isinstance(p, Queueing)}
        self.hub = hub
        self._retention_days = retention_days
        self._prune_interval_s = prune_interval_s
        self._timers: dict[str, asyncio.TimerHandle] = {}
        #: launches, relaunches, timeouts and the prune loop; a launch's error is also
        #: recorded on its task (and raised to the waiting client, if any)
        self._background = BackgroundTasks("service")
        self.submit_attempts = SUBMIT_ATTEMPTS
        self.submit_retry_s = SUBMIT_RETRY_S
        #: output providers hand over, and the tasks whose output could not be stored
        self._outputs = Outputs(self)
        self._limits = StorageLimits()
        self.namespaces = Namespaces()  # ``default`` only, until the composition root says
        self.limit_storage(Config())  # the defaults, until the composition root says
        store.fan_out(hub.on_commit)  # every replica's commits, in order (PostgreSQL)
        #: the providers that follow first what clients tail, told by the hub
        self._tailable = [p for p in self.providers.values() if isinstance(p, Tailable)]
        hub.attention.append(self._attention)
        self._launcher = Launcher(self, self._background)
        #: cancel confirmation and stuck deadlines (``configure`` with the providers' keys)
        self.watchdog = Watchdog(self)
        store.writer.listeners.append(self.watchdog.on_commit)
        hear_replicas(self, self._background)  # what other replicas' commits ask of this one

    def _attention(self, task_id: str, tailed: bool) -> None:
        """A task's first live log tailer came, or its last one left (`Tailable`)."""
        for provider in self._tailable:
            provider.attention(task_id, tailed)

    def limit_storage(self, cfg: Config) -> None:
        """The output each task keeps (``storage.max_log_bytes``, or its provider's
        ``max_log_bytes``), and the watermark past which submits are refused
        (``storage.max_bytes``); takes effect with the next write."""
        self._limits = StorageLimits.from_config(cfg)
        self.store.writer.log_caps = self._limits.log_caps

    def storage(self) -> Mapping[str, Any]:
        """The store for ``/readyz`` and the metrics: whether it takes writes (and if not,
        SQLite's reason), the size of its files, the watermark."""
        writer = self.store.writer
        failure = writer.failure if writer.running else "the event log is not running"
        return storage.status(
            self.store.path,
            self._limits,
            failure,
            writer.used_bytes,
            writer.refusals,
            store=self.store.dialect,
        )

    # --- lifecycle ---------------------------------------------------------------------------

    async def start(self) -> None:
        """Start providers (each resumes its own unfinished tasks), then re-launch
        submits that a previous gateway left unacknowledged, and re-arm timeouts."""
        streams = leaders(self)  # PostgreSQL: stand by until the stream's lease is held
        for provider in self.providers.values():
            if isinstance(provider, WebhookProvider):
                await self.store.watch_upstreams(provider.name)
            await provider.start(self)
        for task in await self.store.reader.unfinished():
            if task.provider not in self.providers:
                await self.observe(
                    task.id,
                    Observation(
                        state=TaskState.FAILED,
                        reason=f"provider {task.provider} is not configured on this gateway",
                    ),
                    source="gateway",
                )
                await self.logs_complete(task.id)
                continue
            current = self.store.writer.cached(task.id) or task  # fresh: no query per task
            if (
                current.status is TaskState.PENDING
                and current.upstream_id is None
                and not current.upstream.get("submitted")
            ):
                _ = self._launcher.spawn(self.providers[task.provider], current)
            self._arm_timeout(current)
        await self.watchdog.start(await self.store.reader.unfinished())
        # one replica at a time prunes (PostgreSQL; on SQLite the lease is always held)
        loop = while_held(self.store.leases, "prune", self._prune_once, self._prune_interval_s)
        _ = self._background.spawn(loop, name="prune")
        if self.store.replica is not None:  # PostgreSQL: a dead replica's local tasks
            reaper = while_held(self.store.leases, REAPER, lambda: reap(self), REAP_S)
            _ = self._background.spawn(reaper, name="local_reaper")
        for stream in streams:
            _ = self._background.spawn(stream, name="stream_lease")

    async def close(self) -> None:
        await self.watchdog.close()
        for handle in self._timers.values():
            handle.cancel()
        self._timers.clear()
        await self._background.close()
        for provider in self.providers.values():
            try:
                await provider.close()
            except Exception as exc:  # noqa: BLE001 - one provider must not keep the others open
                log.error("provider_close_failed", provider=provider.name, error=repr(exc))

    # --- use cases -----------------------------------------------------------------------------

    def provider(self, name: str) -> Provider:
        provider = self.providers.get(name)
        if provider is None:
            raise InvalidRequest(
                f"unknown or disabled provider {name!r} (enabled: {sorted(self.providers)})",
                field="provider",
            )
        return provider

    async def submit(
        self,
        req: SubmitRequest,
        *,
        actor: str | None,
        idempotency_key: str | None = None,
        access: Access,
    ) -> tuple[Task, bool]:
        """Record the task, then start it upstream; returns (task, created).

        With an ``idempotency_key`` seen before (same actor, same body) the task recorded
        then is returned and nothing is started again. What ``access`` or the namespace's
        limits refuse is `Forbidden` before anything is recorded or sent upstream."""
        provider = self.provider(req.provider)
        ns = self.namespaces.admit(req.namespace, provider.name, access)
        spec = self.namespaces.spec(ns, provider, req.task)
        req = replace(req, namespace=ns)
        storage.check_room(self.store.writer.used_bytes, self._limits)
        now = utcnow()
        draft = Task(
            id=new_task_id(),
            provider=provider.name,
            spec=spec,
            name=req.name,
            labels=dict(req.labels or {}),
            actor=actor,
            timeout_s=req.timeout_s,
            created_at=now,
            updated_at=now,
            namespace=ns,
            # the replica that accepted it (PostgreSQL): another resumes it only once that
            # one is gone (`active_tasks`)
            upstream={"replica": self.store.replica} if self.store.replica else {},
        )
        idem = (actor or "", idempotency_key, req.fingerprint()) if idempotency_key else None
        queueing = self._queueing.get(provider.name)
        answer = queueing.answer_queued(draft) if queueing is not None else None
        accept = answer_op(draft.id, answer, provider.name) if answer is not None else None
        task, created = await self.store.writer.create_task(draft, idem, accept)
        if not created:
            return task, False
        self._arm_timeout(task)
        if queueing is not None and accept is not None:
            # recorded queued with its answer in the same commit: the provider takes it now,
            # unless a cancel came first (no await from this check to the hand-over)
            current = self.store.writer.cached(task.id) or task
            if current.status is TaskState.QUEUED:
                queueing.enqueue(current)
            return task, True
        # the upstream call outlives a client that hangs up: a started run must be recorded
        launched = await asyncio.shield(self._launcher.spawn(provider, task))
        return launched or await self.get(task.id), True

    async def rerun(
        self, task_id: str, *, actor: str | None, idempotency_key: str | None = None, access: Access
    ) -> tuple[Task, bool]:
        """A new task with the old one's namespace, provider, spec, name, labels and timeout
        (`NotFound` if unreadable); a ``rerun`` event on each names the other (from, to)."""
        old = await self.reads.task(task_id, scope=access.scope("read"))
        req = SubmitRequest(
            namespace=old.namespace,
            provider=old.provider,
            task=old.spec,
            name=old.name,
            labels=old.labels,
            timeout_s=old.timeout_s,
        )
        task, created = await self.submit(
            req, actor=actor, idempotency_key=idempotency_key, access=access
        )
        if created:
            link = {"from": old.id, "to": task.id}
            await self.progress(task.id, "rerun", link, source="gateway")
            await self.progress(old.id, "rerun", link, source="gateway")
        return await self.get(task.id), created

    def launching(self, task_id: str) -> bool:
        """Whether the task's submit is in flight."""
        return task_id in self._launcher.inflight

    async def launch(self, task: Task) -> None:
        """Submit the task's current attempt upstream (in the background; see launch.py)."""
        _ = self._launcher.spawn(self.provider(task.provider), task)

    async def get(self, task_id: str) -> Task:
        """The task as last committed, whatever its namespace (the gateway's own reads)."""
        return await self.reads.task(task_id, scope=ALL)

    async def wait(self, task_id: str, *, index: int, wait_s: float, scope: Scope) -> Task:
        """Nomad-style blocking query: once the task's index exceeds ``index`` (in ``scope``)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + wait_s
        while True:
            task = await self.reads.task(task_id, scope=scope)
            left = deadline - loop.time()
            if task.index > index or left <= 0:
                return task
            await self.hub.wait_change(task_id, left)

    async def cancel(
        self, task_id: str, *, actor: str | None, force: bool = False, access: Access
    ) -> Task:
        """`NotFound` for a task the caller can neither read nor cancel; if only read: 403."""
        seen = await self.reads.task(task_id, scope=access.scope("read", "cancel"))
        access.check("cancel", seen.namespace, task_id)
        task, changed = await self.store.writer.command(
            task_id, "cancel", actor=actor, data={"force": force}
        )
        escalate = force and task.status is TaskState.CANCELLING and not changed
        if task.status is TaskState.CANCELLING and (changed or escalate):
            await self.carry_out_cancel(task, force)
        if task.status is TaskState.CANCELLED and changed:
            await self.logs_complete(task.id)
        return await self.get(task_id)

    async def carry_out_cancel(self, task: Task, force: bool) -> None:
        """Ask the task's provider to stop it; a local task of another replica is left to
        that replica, which hears the request through the feed (``replicas.py``)."""
        provider = self.providers.get(task.provider)
        if provider is None or owned_elsewhere(task, self.store.replica):
            return
        try:
            obs = await provider.cancel(task, force=force)
        except EgwError as exc:
            await self._cancel_refused(task, exc, force)
            raise
        if obs is not None:
            await self.observe(task.id, obs, source=task.provider)

    async def _cancel_refused(self, task: Task, exc: EgwError, force: bool) -> None:
        """Upstream refused the cancel: ``cancel_failed`` with its reason. An ambiguous
        failure (upstream unavailable: the cancel may have landed) is only recorded; the
        confirmation deadline (``cancel_timeout_s``) decides."""
        error = {"error": exc.to_json()["error"], "force": force}
        if isinstance(exc, ProviderUnavailable):
            await self.progress(task.id, "cancel_error", error, source=task.provider)
            return
        reason = f"upstream refused the cancel: {exc.message}"
        await self.store.writer.verdict(CancelFailed(task.id, reason, task.provider, error))

    # --- timeouts and retention ----------------------------------------------------------------

    def _arm_timeout(self, task: Task) -> None:
        if not task.timeout_s or task.status in TERMINAL or task.id in self._timers:
            return
        elapsed = (utcnow() - task.created_at).total_seconds()
        delay = max(0.0, task.timeout_s - elapsed)
        loop = asyncio.get_running_loop()
        self._timers[task.id] = loop.call_later(
            delay, lambda: self._background.spawn(self._expire(task.id), name="expire")
        )

    def disarm(self, task: Task) -> None:
        """Drop the timeout timer of a task that has ended."""
        handle = self._timers.pop(task.id, None) if task.status in TERMINAL else None
        if handle is not None:
            handle.cancel()

    async def _expire(self, task_id: str) -> None:
        self._timers.pop(task_id, None)
        task, changed = await self.store.writer.command(task_id, "timeout", actor=None)
        if changed:
            log.info("task_timed_out", task_id=task_id, timeout_s=task.timeout_s)
            await self.stop_timed_out(task)

    async def stop_timed_out(self, task: Task) -> None:
        """Stop the work of a task that timed out; a local task of another replica is left to
        that replica, which hears of the timeout through the feed (``replicas.py``)."""
        provider = self.providers.get(task.provider)
        if provider is None or owned_elsewhere(task, self.store.replica):
            return
        try:
            await provider.cancel(task, force=False)
        except EgwError as exc:
            log.warning("timeout_cancel_failed", task_id=task.id, error=exc.message)
            error = {"error": exc.to_json()["error"]}
            await self.progress(task.id, "cancel_error", error, source=task.provider)

    async def prune(self) -> None:
        await self.store.writer.prune(retention_cutoff(self._retention_days))

    async def _prune_once(self) -> None:
        try:
            await self.prune()
        except EgwError as exc:
            log.error("prune_failed", error=exc.message)

    # --- ProviderSink --------------------------------------------------------------------------

    async def observe(
        self, task_id: str, obs: Observation, *, source: str, delivery_id: str | None = None
    ) -> Task | None:
        try:
            task = await self.store.writer.observe(
                task_id, obs, source=source, delivery_id=delivery_id
            )
        except NotFound:
            return None
        except StoreError:
            if obs.state in TERMINAL:
                # the outcome must not be lost with the write: recorded once the store works
                _ = self.store.writer.settle(task_id, obs, source=source)
            raise
        self.disarm(task)
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
        try:
            return await self.store.writer.progress(
                task_id, kind, data, source=source, delivery_id=delivery_id
            )
        except NotFound:
            return False

    async def append_log(self, task_id: str, stream: str, data: bytes) -> int:
        return await self._outputs.store(task_id, [(stream, data)])

    async def append_output(
        self,
        task_id: str,
        chunks: Sequence[tuple[str, bytes]],
        *,
        cursor: tuple[str, str] | None = None,
        upstream: Mapping[str, Any] | None = None,
    ) -> int:
        return await self._outputs.store(task_id, chunks, cursor=cursor, upstream=upstream)

    async def logs_complete(self, task_id: str) -> None:
        """Mark the task's output complete; kept (not raised) while the store refuses it,
        so that the outcome a provider reports next is not skipped."""
        self._outputs.doomed.discard(task_id)  # its provider sends no more output
        try:
            await self.store.writer.logs_complete(task_id)
        except StoreError:
            _ = self.store.writer.settle(task_id, None, source="gateway")

    async def set_upstream(
        self,
        task_id: str,
        *,
        upstream_id: str | None = None,
        upstream_url: str | None = None,
        data: Mapping[str, Any] | None = None,
    ) -> None:
        await self.store.writer.set_upstream(
            task_id, upstream_id=upstream_id, upstream_url=upstream_url, data=data
        )

    async def get_task(self, task_id: str) -> Task | None:
        try:
            return await self.get(task_id)
        except NotFound:
            return None

    async def find_task(self, provider: str, upstream_id: str) -> Task | None:
        return await self.store.find_upstream(provider, upstream_id)

    async def active_tasks(self, provider: str) -> list[Task]:
        """The provider's unfinished tasks, but those another replica that is alive accepted
        (PostgreSQL: they are that replica's to follow, see ``store.live_replicas``), unless
        one replica follows them all (`Leading`: the holder of its lease)."""
        tasks = await self.store.reader.active(provider)
        if self.store.replica is not None and not isinstance(self.providers[provider], Leading):
            mine = {self.store.replica}
            others = await self.store.live_replicas() - mine
            tasks = [t for t in tasks if t.upstream.get("replica") not in others]
        for task in tasks:  # the provider reads each again: from the cache, loaded in batches
            self.store.writer.warm(task.id)
        return [self.store.writer.cached(t.id) or t for t in tasks]

    async def get_cursor(self, key: str) -> str | None:
        return await self.store.reader.cursor(key)

    async def set_cursor(self, key: str, value: str) -> None:
        await self.store.writer.set_cursor(key, value)
