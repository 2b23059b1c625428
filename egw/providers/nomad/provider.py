"""`NomadProvider`: the Provider protocol over the job client, event watcher and log follower.

A new attempt (``on_stuck: resubmit``)
--------------------------------------
The Nomad job ID is the user's own ``job_id``, and a new attempt keeps it: the replaced
attempt's job is stopped (`retire`: ``DELETE /v1/job/:id``, as a cancel does), then the
same job ID is registered again with check-and-set (``EnforceIndex`` on the stopped job's
``JobModifyIndex``) and the attempt's own ``egw_task_id`` (``<task id>.<attempt>``). A
derived job ID (``<job_id>-a2``) would have worked too, but it would put jobs in Nomad the
user never named, outside the ACL policies, dashboards and ``nomad job status <job_id>``
they rely on, and leave one more stopped job per attempt; re-registering is defensible
against Nomad's source, and it is what egw already does when a task reuses the job ID of
an ended one:

* hashicorp/nomad nomad/job_endpoint.go ``Register``: with ``EnforceIndex`` the register
  is refused unless the job's ``JobModifyIndex`` is still the one read, so attempt 2 is
  registered over the stopped attempt 1, never over something registered meanwhile.
* The register is a new job version with a new ``JobModifyIndex``; its evaluation and
  allocations are created after it (``CreateIndex`` above it), those of attempt 1 before,
  so `JobView` tells them apart by index (``since``), whatever order their events come in.
* scheduler/util.go ``tasksUpdated`` compares ``CombinedTaskMeta``, which includes the
  job's ``Meta``: the changed ``egw_task_id`` makes the update destructive, so an
  allocation of attempt 1 is never updated in place into attempt 2's (and a stopped job's
  allocations are all stopped: ``materializeTaskGroups`` of a stopped job is empty).

`retire` drops attempt 1's registration from the registry (its stream events no longer
match a tracked task), stops its poller and log followers, then stops the job if it is
still attempt 1's (its ``egw_task_id``). An evaluation in flight for attempt 1 reports
with ``attempt=1`` (`Observation.attempt`), which egw records without applying. Should
the stop not happen (a restart between recording the resubmit and the stop, or Nomad
refusing it), attempt 2's register finds the live job of an earlier attempt of the same
task and stops it first; a lost register answer is found by the attempt's own key.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any, ClassVar

import aiohttp
import structlog

from egw.background import BackgroundTasks
from egw.config import NomadConfig, RetryConfig
from egw.core.model import Observation, Task, TaskState
from egw.providers.base import ProviderSink, SinkSlot, Submission
from egw.providers.circuit import Breakers
from egw.providers.nomad.client import SOURCE, JobClient
from egw.providers.nomad.logs import LogFollower
from egw.providers.nomad.slots import LogSlots
from egw.providers.nomad.state import JobStates
from egw.providers.nomad.tracked import Registry, Tracked
from egw.providers.nomad.watcher import EventWatcher
from egw.wire import nomad as wire

log = structlog.get_logger("egw.providers.nomad")

S = TaskState


class NomadProvider:
    name: ClassVar[str] = "nomad"

    def __init__(
        self,
        cfg: NomadConfig,
        *,
        session: aiohttp.ClientSession,
        retry: RetryConfig,
        circuit: Breakers | None = None,
    ) -> None:
        self._cfg = cfg
        self.circuit = circuit or Breakers(SOURCE, cfg.circuit)
        self._client = JobClient(cfg, session=session, retry=retry, circuit=self.circuit)
        self._sink = SinkSlot(SOURCE)
        self._registry = Registry()
        self._background = BackgroundTasks(SOURCE)
        self._slots = LogSlots(cfg.log_max_followers, cfg.log_poll_s, cfg.log_reads_per_s)
        self._logs = LogFollower(
            self._client, self._sink, self._registry, self._background, self._slots
        )
        self._states = JobStates(
            self._client, self._sink, self._registry, self._logs, self._background
        )
        self._watcher = EventWatcher(
            self._client, self._sink, self._registry, self._states, self._background
        )
        #: tasks followed before a restart not yet read again from Nomad
        self._resuming = 0

    # --- the Provider protocol -----------------------------------------------------------------

    def validate(self, task: Mapping[str, Any]) -> wire.NomadSpec:
        return wire.validate_task(
            task,
            namespace=self._cfg.namespace,
            region=self._cfg.region,
            datacenters=self._cfg.datacenters,
        )

    async def start(self, sink: ProviderSink) -> None:
        """Resume every task egw still follows, then subscribe per namespace (standing by:
        only once this replica holds the stream's lease, `lead`)."""
        self._sink.attach(sink)
        if not self._registry.standby:
            await self._follow(resume=True)

    # --- one replica at a time follows (PostgreSQL: egw/service/replicas.py) ---------------------

    @property
    def stream_lease(self) -> str:
        return f"nomad-stream:{self._cfg.region or 'global'}:{self._cfg.namespace}"

    def stand_by(self) -> None:
        self._registry.standby = True

    async def lead(self) -> None:
        self._registry.standby = False
        await self._follow(resume=True)

    async def follow_new(self) -> None:
        await self._follow(resume=False)

    async def step_down(self) -> None:
        """Stop the subscriptions, pollers and log followers now, and forget every task: the
        next holder loads them from the store and resumes from the stored cursors."""
        self._registry.standby = True
        await self._watcher.stop_all()
        for tracked in list(self._registry.tasks.values()):
            self._registry.remove(tracked)
            await self._logs.stop(tracked)
            if tracked.evaluating is not None:
                tracked.evaluating.cancel()
        log.warning("nomad_stream_lease_lost", lease=self.stream_lease)

    async def _follow(self, *, resume: bool) -> None:
        """Follow the unfinished tasks of the store not followed yet (registered: one whose
        register is on its way is sent again by the gateway), subscribed per namespace. On
        a start or a takeover (``resume``) each namespace is read again from one listing,
        since the stored cursor may be ahead of what was recorded; a task another replica
        submitted meanwhile is read on its own, since the stream skipped its events, and so
        is a newer attempt another replica registered (a resubmit: the replaced attempt is
        forgotten, as `submit` forgets it here)."""
        new = []
        sink = self._sink()
        for task in await sink.active_tasks(self.name):
            known = self._registry.get(task.id)
            if known is not None and known.attempt < task.attempt:
                # resubmitted by a replica without the stream's lease, which registered the
                # new attempt: the replaced one's reports are stale, follow the new one
                await self._forget(known)
            elif known is not None:
                continue
            if task.upstream_id is None:
                continue
            if not resume:  # only a running one, as it is now: an ended one was followed here
                fresh = await sink.get_task(task.id)
                if (
                    fresh is None
                    or fresh.status.terminal
                    or fresh.upstream_id is None  # resubmitted again meanwhile
                    or self._registry.get(task.id)
                ):
                    continue
                task = fresh
            if self._registry.standby or self._registry.closed:
                return  # the lease was lost while reading
            tracked = Tracked.from_task(task, self._cfg.namespace)
            self._registry.add(tracked)
            new.append(tracked)
        for ns in {self._cfg.namespace} | {t.namespace for t in new}:
            self._watcher.ensure(ns)
        if not resume:
            for tracked in new:
                _ = self._background.spawn(self._states.reconcile(tracked), name="nomad_reconcile")
            return
        self._resuming += len(new)
        for ns in {t.namespace for t in new}:
            _ = self._background.spawn(self._resume(ns), name="nomad_reconcile")

    async def _resume(self, ns: str) -> None:
        """Read the tasks of ``ns`` followed before the restart again, from one listing of
        the namespace (``resuming`` counts the tasks not yet read)."""
        count = len(self._registry.in_namespace(ns))
        started = time.monotonic()
        try:
            await self._states.reconcile_namespace(ns)
        finally:
            self._resuming -= count
            log.info(
                "nomad_resumed",
                namespace=ns,
                tasks=count,
                seconds=round(time.monotonic() - started, 3),
            )

    async def close(self) -> None:
        self._registry.closed = True
        await self._background.close()  # the subscriptions, pollers and one-off jobs
        await self._logs.close()  # the followers, letting a started delivery finish

    async def submit(self, task: Task, *, idempotency_key: str) -> Submission:
        self._sink()  # not started: ProviderUnavailable before anything is tracked
        known = self._registry.get(task.id)
        if known is not None and known.attempt < task.attempt:
            await self._forget(known)  # a replaced attempt's (its job is stopped by register)
        elif known is not None and not known.registering and known.job.since:
            return self._submission(known)
        spec = wire.NomadSpec.from_json(task.spec)
        tracked = Tracked(
            task_id=task.id,
            job_id=spec.job_id,
            namespace=spec.namespace,
            region=spec.region,
            expected=spec.expected or 1,
            attempt=task.attempt,
            registering=True,
            status=task.status,
        )
        self._registry.add(tracked)
        self._watcher.ensure(tracked.namespace)
        timeouts = [t for t in (task.timeout_s, spec.timeout_s) if t]
        try:
            await self._client.register(
                tracked, spec, key=idempotency_key, timeout_s=min(timeouts) if timeouts else None
            )
        except BaseException:
            self._registry.remove(tracked)
            raise
        for other in self._registry.of_job(tracked.namespace, tracked.job_id):
            if other is not tracked and other.job.since < tracked.job.since:
                other.job.until = tracked.job.since
        tracked.registering = False
        if self._registry.standby:  # the holder of the stream's lease follows it
            self._registry.remove(tracked)
            return self._submission(tracked)
        buffered, tracked.buffered = tracked.buffered, []
        _ = self._background.spawn(
            self._after_register(tracked, buffered), name="nomad_after_register"
        )
        return self._submission(tracked)

    async def cancel(self, task: Task, *, force: bool = False) -> Observation | None:
        """``DELETE /v1/job/:id`` (``purge`` when forced); ``cancelled`` comes from the stream
        once the allocations have stopped."""
        tracked = self._registry.get(task.id) or Tracked.from_task(task, self._cfg.namespace)
        if task.upstream_id is None and not tracked.job.since:
            return Observation(state=S.CANCELLED, reason="nothing was started in Nomad")
        tracked.cancel_requested = True
        if not await self._client.stop_job(tracked, purge=force):
            # Nomad no longer has the job: no event will ever come, so read the job and its
            # allocations to confirm and end the task
            tracked.job.gone = True
            if self._registry.get(task.id) is None:  # not followed: answer from a read now
                await self._client.refresh(tracked)
                obs = tracked.observation()
                return obs if obs.state.terminal else None
        if self._registry.get(task.id) is not None and (
            tracked.job.gone or not self._watcher.connected(tracked.namespace)
        ):
            _ = self._background.spawn(self._states.reconcile(tracked), name="nomad_reconcile")
        return None

    async def retire(self, task: Task) -> None:
        """Replace a stuck attempt (``on_stuck: resubmit``): stop following its registration
        at once (its events, evaluations and output no longer reach the task), then stop its
        job, as a cancel does (``DELETE /v1/job/:id``, not purged, so that the next attempt's
        check-and-set register finds the stopped job and its versions stay in Nomad's
        history). Raises if Nomad refuses the stop; the next attempt's register stops a live
        job of an earlier attempt itself (see the module docstring)."""
        tracked = self._registry.get(task.id)
        if tracked is not None and tracked.attempt == task.attempt:
            await self._forget(tracked)
        else:
            tracked = Tracked.from_task(task, self._cfg.namespace)
        if task.upstream_id is None and not tracked.job.since:
            return  # never registered: a lost register of it is found by its own key
        if await self._client.stop_attempt(tracked):
            log.info("nomad_retired", task_id=task.id, job_id=tracked.job_id, attempt=task.attempt)

    async def _forget(self, tracked: Tracked) -> None:
        """Stop following ``tracked`` (a replaced attempt's): out of the registry, its poller
        and log followers stopped; an evaluation in flight reports about its own attempt,
        which egw records without applying."""
        self._registry.remove(tracked)
        # a follower's started (output, offset) pair is stored before this returns, so
        # nothing of the replaced attempt's output comes later
        await self._logs.stop(tracked)

    async def status(self, task: Task) -> Observation:
        """Read the job, its allocations and evaluation now."""
        tracked = self._registry.get(task.id)
        if tracked is None:
            if task.upstream_id is None:
                return Observation(state=task.status, reason="not registered in Nomad")
            temp = Tracked.from_task(task, self._cfg.namespace)
            await self._client.refresh(temp)
            return temp.observation()
        await self._client.refresh(tracked)
        await self._states.evaluate(tracked)
        return tracked.observation()

    def attention(self, task_id: str, tailed: bool) -> None:
        """`Tailable`: a tailed task's log streams get live slots first."""
        self._logs.attention(task_id, tailed)

    def health(self) -> Mapping[str, Any]:
        return {
            "namespaces": self._watcher.health(),
            "tracked_tasks": len(self._registry),
            "resuming": self._resuming,
            "log_followers": self._logs.running(),
            "log_slots": self._slots.health(),
        }

    # --- after a registration -------------------------------------------------------------------

    def _submission(self, tracked: Tracked) -> Submission:
        short = (tracked.job.eval_id or "")[:8]
        return Submission(
            upstream_id=tracked.job_id,
            upstream_url=self._client.ui_url(tracked.job_id, tracked.namespace),
            upstream=tracked.upstream(),
            observation=Observation(
                state=S.QUEUED,
                reason="registered in Nomad" + (f" (evaluation {short})" if short else ""),
                detail={"job_modify_index": tracked.job.since, "eval_id": tracked.job.eval_id},
            ),
        )

    async def _after_register(self, tracked: Tracked, buffered: list[wire.StreamEvent]) -> None:
        for ev in buffered:
            tracked.job.apply(ev)
        if self._watcher.polling(tracked.namespace):
            self._watcher.start_poller(tracked)
        elif tracked.adopted or not self._watcher.connected(tracked.namespace):
            await self._states.reconcile(tracked)
        else:
            await self._states.evaluate(tracked)
