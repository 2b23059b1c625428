"""The local provider: a queue in front of at most ``max_concurrent`` running processes.

A new attempt (``on_stuck: resubmit``: a process that prints nothing for
``silent_timeout_s``) replaces the run of the replaced one: `retire` marks that run
retired (its output is read and dropped, its end is not reported), stops its processes as
a cancel does (SIGTERM, SIGKILL after ``kill_grace_s``) and waits until they are gone,
so the slot is free and nothing of it reaches the task; then the new attempt starts with
its own ``EGW_TASK_ID=<task id>.<attempt>``. The runs are kept by task id, and a run's
watcher removes or reports only for its own run (`_watch`). After a restart, processes of a
replaced attempt are told apart by that marker and stopped, never adopted (`start`).
"""

from __future__ import annotations

import asyncio
import signal
from collections.abc import Mapping
from typing import Any, ClassVar

import structlog

from egw.background import BackgroundTasks
from egw.config import LocalConfig
from egw.core.model import Observation, Task, TaskState
from egw.errors import EgwError
from egw.providers.base import ProviderSink, SinkSlot, Submission, split_key
from egw.providers.local import group
from egw.providers.local.leftovers import kill_leftover
from egw.providers.local.policy import Policy
from egw.providers.local.process import Run
from egw.providers.local.spec import FoundCommands, LocalSpec, validate_task

log = structlog.get_logger("egw.providers.local")


class LocalProvider:
    name: ClassVar[str] = "local"

    def __init__(self, cfg: LocalConfig) -> None:
        self.cfg = cfg
        self._sink = SinkSlot(self.name)
        self._running: dict[str, Run] = {}
        #: the runs waiting for a slot, by task id, oldest first (a dict: a submit checks
        #: whether its task waits already without scanning thousands: bench "submits")
        self._queue: dict[str, Run] = {}
        #: processes being started (a slot each, before they are in ``_running``)
        self._starting = 0
        # one watcher per started process: it pumps the output, then records the outcome
        self._watchers = BackgroundTasks(self.name)
        self._closing = False
        #: the allowlist pinned at load (None: any command runs)
        self._policy = Policy.from_config(cfg)
        self._found = FoundCommands()

    def validate(self, task: Mapping[str, Any]) -> LocalSpec:
        return validate_task(task, self._policy, self._found)

    # --- lifecycle ---------------------------------------------------------------------------

    async def start(self, sink: ProviderSink) -> None:
        """Resume what a previous gateway left: a task that never started runs now (in
        submission order, behind ``max_concurrent``); one whose process was running cannot
        be re-attached (its pipes died with that gateway): its processes are stopped and it
        ends ``failed: gateway restarted``. A process found with the task's ``EGW_TASK_ID``
        means it did start, recorded or not: it is not started twice."""
        self._sink.attach(sink)
        group.become_subreaper()
        if self._policy is None:
            log.warning(
                "local_runner_unrestricted",
                hint="any tasks:write token can run any command as this user;"
                " set providers.local.allowed_commands",
            )
        await self.adopt(sink, await sink.active_tasks(self.name), lost="gateway restarted")

    async def adopt(self, sink: ProviderSink, tasks: list[Task], *, lost: str) -> None:
        """``start``'s work on ``tasks`` (those a gateway that is gone left; ``lost``: why a
        running one fails). Also a replica taking over a dead one's (PostgreSQL)."""
        # processes of the dead gateway's tasks, also those that left their group, and
        # those of a task whose start was not recorded before that gateway died, by task id
        # and attempt
        leftovers: dict[str, dict[int, list[int]]] = {}
        for key, pids in group.marked().items():
            task_id, attempt = split_key(key)
            leftovers.setdefault(task_id, {})[attempt] = pids
        for task in tasks:
            if task.id in self._running or task.id in self._queue:
                continue  # adopted already (at the start, then by the reaper): ours to run
            found = leftovers.get(task.id, {})
            self._kill_replaced(task, found)
            started = task.attempt in found
            if not task.status.terminal and _never_started(task) and not started:
                await self._resume_unstarted(sink, task)
                continue
            if not task.status.terminal:
                kill_leftover(task)
                group.kill(found.get(task.attempt, []))
                await sink.observe(
                    task.id,
                    Observation(state=TaskState.FAILED, reason=lost),
                    source=self.name,
                )
            await sink.logs_complete(task.id)
        await self._kill_leftovers_of_finished(sink, leftovers)
        await self._next()

    @staticmethod
    def _kill_replaced(task: Task, found: dict[int, list[int]]) -> None:
        """Processes of a replaced attempt of the task (the gateway died between recording
        the resubmit and stopping them): stopped, never taken for the current attempt's."""
        for attempt, pids in found.items():
            if attempt != task.attempt:
                log.info("leftover_killed", task_id=task.id, attempt=attempt, pids=pids)
                group.kill(pids)

    async def _kill_leftovers_of_finished(
        self, sink: ProviderSink, leftovers: dict[str, dict[int, list[int]]]
    ) -> None:
        """Processes of a task already recorded as ended (its command exited or it timed out,
        then the gateway died before its group was gone) are stopped too; only this
        database's local tasks are touched, never another gateway's."""
        for task_id, attempts in leftovers.items():
            task = await sink.get_task(task_id)
            if task is not None and task.provider == self.name and task.status.terminal:
                pids = [pid for found in attempts.values() for pid in found]
                log.info("leftover_killed", task_id=task_id, pids=pids)
                group.kill(pids)

    async def _resume_unstarted(self, sink: ProviderSink, task: Task) -> None:
        if task.status is TaskState.PENDING and not task.upstream.get("submitted"):
            return  # its submit was never answered: the service launches it again
        if task.status is TaskState.CANCELLING:
            obs = Observation(state=TaskState.CANCELLED, reason="cancelled before it started")
        else:
            try:
                # checked again: the allowlist may have changed since it was accepted
                self._queue[task.id] = Run(task, self.validate(task.spec))
                return
            except EgwError as exc:
                obs = Observation(state=TaskState.FAILED, reason=f"refused: {exc.message}")
        await sink.observe(task.id, obs, source=self.name)
        await sink.logs_complete(task.id)

    async def close(self) -> None:
        """Stop every process this gateway started, recording why."""
        self._closing = True
        for run in list(self._queue.values()):
            del self._queue[run.task.id]
            await self._finish_unstarted(run, "gateway stopped before the task started")
        for run in list(self._running.values()):
            run.stopping = "gateway stopped while the task ran"
            run.send_signal(signal.SIGTERM)
            run.arm_kill(self.cfg.kill_grace_s)
        # every watcher ends on its own (SIGKILL after the grace at the latest), also those
        # past their process's exit still recording it: cancelling them would lose outcomes
        await self._watchers.wait()

    # --- the provider API --------------------------------------------------------------------

    async def submit(self, task: Task, *, idempotency_key: str) -> Submission:
        for runs in (self._running, self._queue):
            known = runs.get(task.id)
            if known is not None and known.task.attempt < task.attempt:
                await self.retire(known.task)  # not retired yet: it is, before anything starts
            elif known is not None:
                return Submission(upstream_id=None, observation=None)
        run = Run(task, LocalSpec.from_json(task.spec))
        if self._slots_taken() >= self.cfg.max_concurrent:
            self._queue[task.id] = run
            return self._queued()
        failure = await self._start_process(run)
        if failure is not None:
            return Submission(upstream_id=None, observation=failure)
        return Submission(
            upstream_id=str(run.pid),
            upstream=run.upstream(),
            observation=Observation(state=TaskState.RUNNING),
        )

    async def retire(self, task: Task) -> None:
        """Replace ``task``'s attempt (``on_stuck: resubmit``): its run is retired (output
        dropped, end not reported), its processes stopped as a cancel stops them, and this
        returns once they are all gone (its slot is free)."""
        queued = self._queue.get(task.id)
        if queued is not None and queued.task.attempt == task.attempt:
            del self._queue[task.id]
        run = self._running.get(task.id)
        if run is None or run.task.attempt != task.attempt:
            return
        run.retired = True
        run.send_signal(signal.SIGTERM)
        run.arm_kill(self.cfg.kill_grace_s)
        if run.watcher is not None:
            await asyncio.wait([run.watcher])
        log.info("local_retired", task_id=task.id, attempt=task.attempt, pid=run.pid)

    def answer_queued(self, task: Task) -> Submission | None:
        """`Queueing`: every slot is taken, so a submit would only queue the task."""
        if self._slots_taken() < self.cfg.max_concurrent or self._closing:
            return None
        return self._queued()

    def enqueue(self, task: Task) -> None:
        """`Queueing`: the task was recorded queued; it waits for a slot (or takes one
        that came free while it was being recorded)."""
        if task.id in self._running or task.id in self._queue or self._closing:
            return  # closing: the next start finds it queued and runs it
        self._queue[task.id] = Run(task, LocalSpec.from_json(task.spec))
        if self._slots_taken() < self.cfg.max_concurrent:
            _ = self._watchers.spawn(self._next(), name="egw-local-next")

    def _slots_taken(self) -> int:
        return len(self._running) + self._starting

    def _queued(self) -> Submission:
        return Submission(
            upstream_id=None,
            observation=Observation(
                state=TaskState.QUEUED,
                reason=f"waiting for a free slot ({self.cfg.max_concurrent} running)",
            ),
        )

    async def cancel(self, task: Task, *, force: bool = False) -> Observation | None:
        if self._queue.pop(task.id, None) is not None:
            if self._sink.started:
                await self._sink().logs_complete(task.id)
            return Observation(state=TaskState.CANCELLED, reason="cancelled before it started")
        run = self._running.get(task.id)
        if run is None or run.retired:
            # not ours (any more): nothing runs, so it is stopped
            return Observation(state=TaskState.CANCELLED, reason="no process was running")
        run.cancelled = True
        if force:
            run.send_signal(signal.SIGKILL)
        else:
            run.send_signal(signal.SIGTERM)
            run.arm_kill(self.cfg.kill_grace_s)
        return None

    async def status(self, task: Task) -> Observation:
        if task.id in self._running:
            return Observation(state=TaskState.RUNNING)
        if task.id in self._queue:
            return Observation(state=TaskState.QUEUED)
        return Observation(state=task.status, reason=task.reason, exit_code=task.exit_code)

    def health(self) -> Mapping[str, Any]:
        return {"running": len(self._running), "queued": len(self._queue)}

    # --- processes ---------------------------------------------------------------------------

    async def _start_process(self, run: Run) -> Observation | None:
        """Start the run's process and its watcher; the failure to record if it cannot start."""
        failure: Observation | None = None
        self._starting += 1  # its slot is taken while it starts: no other start may use it
        try:
            if self._policy is None:
                await run.start()
            else:
                # the pinned path; the cwd resolved again, as it is now, right before the start
                command = self._policy.executable(run.spec.command)
                await run.start(command, self._policy.cwd(run.spec.cwd))
        except OSError as exc:
            failure = run.start_failure(exc)
        except EgwError as exc:
            failure = Observation(state=TaskState.FAILED, reason=f"refused: {exc.message}")
        finally:
            self._starting -= 1
        if failure is not None:
            if self._sink.started:
                await self._sink().logs_complete(run.task.id)
            return failure
        self._running[run.task.id] = run
        run.watcher = self._watchers.spawn(self._watch(run), name=f"egw-local-{run.task.id}")
        return None

    async def _watch(self, run: Run) -> None:
        try:
            sink = self._sink()
            code = await run.follow(sink, self.cfg.kill_grace_s)
        finally:
            if self._running.get(run.task.id) is run:  # never a newer attempt's run
                del self._running[run.task.id]
        try:
            if not run.retired:  # it may have been replaced while it ended, before retire
                current = await sink.get_task(run.task.id)
                run.retired = current is not None and current.attempt != run.task.attempt
        except EgwError:
            pass  # the store is gone: recorded below, or at the next start
        if run.retired:  # replaced: its end is not the task's (the new attempt's is)
            log.info("local_retired_exited", task_id=run.task.id, attempt=run.task.attempt)
            await self._next()
            return
        try:
            await sink.logs_complete(run.task.id)
            await sink.observe(run.task.id, run.outcome(code), source=self.name)
        except EgwError as exc:
            # the store is gone (gateway stopping): the next start records the task
            log.warning("local_outcome_not_recorded", task_id=run.task.id, error=exc.message)
            return
        await self._next()

    async def _next(self) -> None:
        """Start queued runs while there are free slots."""
        while self._queue and self._slots_taken() < self.cfg.max_concurrent and not self._closing:
            run = self._queue.pop(next(iter(self._queue)))
            failure = await self._start_process(run)
            sink = self._sink()
            if failure is not None:
                await sink.observe(run.task.id, failure, source=self.name)
                continue
            await sink.set_upstream(run.task.id, upstream_id=str(run.pid), data=run.upstream())
            running = Observation(state=TaskState.RUNNING, attempt=run.task.attempt)
            await sink.observe(run.task.id, running, source=self.name)

    async def _finish_unstarted(self, run: Run, reason: str) -> None:
        if self._sink.started:
            sink = self._sink()
            await sink.logs_complete(run.task.id)
            await sink.observe(
                run.task.id, Observation(state=TaskState.FAILED, reason=reason), source=self.name
            )


def _never_started(task: Task) -> bool:
    """No process was ever started for the task's attempt (none recorded, never
    ``running``, no output since it was queued: a process that wrote and exited before its
    pid was recorded did start; a replaced attempt's output is older than the status)."""
    wrote = task.output_at is not None and (
        task.status_at is None or task.output_at > task.status_at
    )
    return (
        task.status in (TaskState.PENDING, TaskState.QUEUED, TaskState.CANCELLING)
        and "pid" not in task.upstream
        and task.started_at is None
        and not wrote
    )
