"""What the Nomad provider knows about each task it follows, and the registry that finds it."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from egw.core.model import STREAMS, Observation, Task, TaskState
from egw.providers.base import key_for
from egw.providers.nomad.cursor import Cursor
from egw.providers.nomad.slots import Turn
from egw.wire import nomad as wire

S = TaskState


def idx(obj: Mapping[str, Any] | None, key: str) -> int:
    """A Nomad index field (``CreateIndex``...), 0 when absent or not an integer."""
    value = (obj or {}).get(key)
    return value if isinstance(value, int) and not isinstance(value, bool) else 0


@dataclass(eq=False)
class JobView:
    """What Nomad said about this task's run of the job: its allocations, evaluations, end."""

    #: JobModifyIndex of egw's registration: this task's allocations were created after it
    since: int = 0
    #: a later registration of the same job ID (another task): what comes after is not ours
    until: int | None = None
    eval_id: str | None = None
    allocs: dict[str, dict[str, Any]] = field(default_factory=dict)
    evals: dict[str, dict[str, Any]] = field(default_factory=dict)
    stopped: bool = False
    gone: bool = False

    def ours(self, obj: Mapping[str, Any], key: str, *, strict: bool = True) -> bool:
        index = idx(obj, key)
        after = index > self.since if strict else index >= self.since
        return after and (self.until is None or index < self.until)

    @staticmethod
    def merge(
        table: dict[str, dict[str, Any]],
        obj: Mapping[str, Any],
        keep: Callable[[Mapping[str, Any]], dict[str, Any]],
    ) -> bool:
        """Keep what egw reads of ``obj`` (``keep``: `wire.kept_alloc` or `wire.kept_eval`)
        unless a newer version (``ModifyIndex``) is already known."""
        key = str(obj.get("ID"))
        old = table.get(key)
        if old is not None and idx(old, "ModifyIndex") > idx(obj, "ModifyIndex"):
            return False
        table[key] = keep(obj)
        return True

    def apply(self, ev: wire.StreamEvent) -> bool:
        """Take one event of this job; False if it is not about this task's run."""
        obj = ev.object
        if ev.topic == "Allocation" and self.ours(obj, "CreateIndex"):
            return self.merge(self.allocs, obj, wire.kept_alloc)
        if ev.topic == "Evaluation" and self.ours(obj, "CreateIndex", strict=False):
            return self.merge(self.evals, obj, wire.kept_eval)
        if ev.topic == "Job" and self.ours(obj, "JobModifyIndex", strict=False):
            if ev.type in ("JobDeregistered", "JobBatchDeregistered") or obj.get("Stop"):
                self.stopped = True
            if ev.payload.get("Deleted") is True:  # purged: the job as it was, now gone
                self.gone = True
            return True
        return False

    def absorb(self, allocs: list[Any], current: Mapping[str, Any] | None) -> None:
        """Take a read of the job's allocations and of the job itself (None: Nomad no longer
        has it), as `JobClient.refresh` and a namespace's listing make them."""
        listed: set[str] = set()
        for alloc in allocs:
            if isinstance(alloc, dict) and self.ours(alloc, "CreateIndex"):
                listed.add(str(alloc.get("ID")))
                self.merge(self.allocs, alloc, wire.kept_alloc)
        self.gone = current is None
        if self.gone:
            # garbage-collected with the job (nomad/core_sched.go reaps both): what Nomad no
            # longer lists is no longer running, whatever was last heard of it
            for alloc_id in set(self.allocs) - listed:
                del self.allocs[alloc_id]
        if (
            current is not None
            and self.ours(current, "JobModifyIndex", strict=False)
            and current.get("Stop")
        ):
            self.stopped = True

    def own_allocs(self) -> list[dict[str, Any]]:
        """This run's allocations, oldest first."""
        mine = (a for a in self.allocs.values() if self.ours(a, "CreateIndex"))
        return sorted(mine, key=lambda a: idx(a, "CreateIndex"))

    def live_allocs(self) -> bool:
        return any(a.get("ClientStatus") not in wire.TERMINAL_CLIENT for a in self.own_allocs())


@dataclass(eq=False, slots=True)
class Follower:
    """One (allocation, task, stream) egw follows: a record, with a coroutine only while it
    reads (`egw.providers.nomad.logs`); between two catch-up reads it is parked on its
    `Turn`, holding nothing else."""

    alloc_id: str
    task: str
    stream: str
    turn: Turn
    #: where it is in the stream's files (None until its stored cursor is read)
    cursor: Cursor | None = None
    #: the coroutine reading it now
    run: asyncio.Task[bool] | None = None
    finished: bool = False
    #: in a catch-up read now (its listing shows the task's other stream too)
    catching: bool = False
    #: the next segment (allocation) of the same task stream, started when this one finishes
    after: Follower | None = None


@dataclass(eq=False)
class LogState:
    """The task's log followers: one per (allocation, task, stream), a segment per allocation."""

    segments: list[str] = field(default_factory=list)
    #: the allocations that ended (or whose grace is over): their followers drain and stop
    ended: set[str] = field(default_factory=set)
    followers: dict[tuple[str, str, str], Follower] = field(default_factory=dict)
    #: the last follower of each (task, stream): the next segment waits for it
    chain: dict[tuple[str, str], Follower] = field(default_factory=dict)
    grace: asyncio.TimerHandle | None = None
    grace_over: bool = False
    completed: bool = False

    def end(self, alloc_id: str) -> None:
        """The allocation ended: its followers are woken to drain their streams."""
        if alloc_id not in self.ended:
            self.ended.add(alloc_id)
            for follower in self.followers.values():
                if follower.alloc_id == alloc_id:
                    follower.turn.poke()

    def sibling_catching_up(self, follower: Follower) -> bool:
        """Whether the task's other stream in the same allocation is being caught up now."""
        for other in STREAMS:
            sibling = self.followers.get((follower.alloc_id, follower.task, other))
            if other != follower.stream and sibling is not None:
                return sibling.catching
        return False

    def following(self) -> bool:
        return any(not f.finished for f in self.followers.values())

    def stop(self) -> list[asyncio.Task[bool]]:
        """Stop following at once, and never say the output is complete (a replaced
        attempt's: the task's output goes on with the next one); returns the reads that
        were cancelled (the caller gives the followers' slots back)."""
        self.completed = True
        if self.grace is not None:
            self.grace.cancel()
        runs = []
        for follower in self.followers.values():
            follower.finished = True
            if follower.run is not None:
                follower.run.cancel()
                runs.append(follower.run)
        return runs


@dataclass(eq=False)
class Tracked:
    """One task's Nomad job as egw follows it."""

    task_id: str
    job_id: str
    namespace: str
    region: str | None
    expected: int = 1
    #: the task's attempt this registration is (``on_stuck: resubmit`` makes a new one)
    attempt: int = 1
    status: TaskState = S.PENDING
    registering: bool = False
    adopted: bool = False
    #: stream events that came while the register answer was on its way
    buffered: list[wire.StreamEvent] = field(default_factory=list)
    cancel_requested: bool = False
    stop_sent: bool = False
    job: JobView = field(default_factory=JobView)
    logs: LogState = field(default_factory=LogState)
    poller: asyncio.Task[None] | None = None
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    #: the evaluation the event stream asked for, and whether events came since it began
    evaluating: asyncio.Task[None] | None = None
    stale: bool = False

    @classmethod
    def from_task(cls, task: Task, default_namespace: str) -> Tracked:
        up = task.upstream or {}
        spec = wire.NomadSpec.from_json(task.spec)
        return cls(
            task_id=task.id,
            job_id=str(up.get("job_id") or task.upstream_id or spec.job_id),
            namespace=str(up.get("namespace") or spec.namespace or default_namespace),
            region=up.get("region", spec.region),
            expected=int(up.get("expected") or spec.expected or 1),
            attempt=task.attempt,
            job=JobView(since=int(up.get("job_modify_index") or 0), eval_id=up.get("eval_id")),
            status=task.status,
        )

    @property
    def key(self) -> str:
        """The attempt's key (`egw.providers.base.attempt_key`): the job's ``egw_task_id``."""
        return key_for(self.task_id, self.attempt)

    def observation(self) -> Observation:
        job = self.job
        obs = wire.job_observation(
            allocs=job.allocs.values(),
            evals=job.evals.values(),
            since=job.since,
            expected=self.expected,
            stopped=job.stopped,
            gone=job.gone,
            cancel_requested=self.cancel_requested
            or self.status in (S.CANCELLING, S.CANCEL_FAILED),
        )
        return replace(obs, attempt=self.attempt)

    def upstream(self) -> dict[str, Any]:
        return {
            "job_id": self.job_id,
            "namespace": self.namespace,
            "region": self.region,
            "job_modify_index": self.job.since,
            "eval_id": self.job.eval_id,
            "expected": self.expected,
        }


class Registry:
    """The tasks the provider follows, by task id and by (namespace, job id)."""

    def __init__(self) -> None:
        self.tasks: dict[str, Tracked] = {}
        self._by_job: dict[tuple[str, str], list[Tracked]] = {}
        #: the job ids followed (in any namespace), as the event stream's pre-filter takes them
        self.job_ids: dict[bytes, int] = {}
        #: the provider is closing: start nothing new
        self.closed = False
        #: another replica holds the stream's lease: follow nothing (PostgreSQL)
        self.standby = False

    def __len__(self) -> int:
        return len(self.tasks)

    def get(self, task_id: str) -> Tracked | None:
        return self.tasks.get(task_id)

    def add(self, tracked: Tracked) -> None:
        self.tasks[tracked.task_id] = tracked
        self._by_job.setdefault((tracked.namespace, tracked.job_id), []).append(tracked)
        key = tracked.job_id.encode()
        self.job_ids[key] = self.job_ids.get(key, 0) + 1

    def remove(self, tracked: Tracked) -> None:
        if self.tasks.get(tracked.task_id) is tracked:
            del self.tasks[tracked.task_id]
        same = self._by_job.get((tracked.namespace, tracked.job_id), [])
        if tracked in same:
            same.remove(tracked)
            key = tracked.job_id.encode()
            if self.job_ids.get(key, 0) > 1:
                self.job_ids[key] -= 1
            else:
                self.job_ids.pop(key, None)
        if not same:
            self._by_job.pop((tracked.namespace, tracked.job_id), None)
        if tracked.poller is not None:
            tracked.poller.cancel()
        if tracked.logs.grace is not None:
            tracked.logs.grace.cancel()

    def of_job(self, namespace: str, job_id: str) -> list[Tracked]:
        return list(self._by_job.get((namespace, job_id), []))

    def in_namespace(self, ns: str) -> list[Tracked]:
        """The tasks of ``ns`` whose state may still move (registered, logs not complete)."""
        return [
            t
            for t in self.tasks.values()
            if t.namespace == ns and not t.registering and not t.logs.completed
        ]
