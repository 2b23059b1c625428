"""The provider seam: the `Provider` protocol every backend implements, and the
`ProviderSink` through which a backend reports back to egw.

Theory of operation
-------------------
egw owns the task record, the event log, the log store and the clients. A
provider owns the conversation with one upstream:

* ``validate(task)`` (pure) checks the user's ``task`` object before anything
  is stored, raising `InvalidRequest` with the field path (``task.job_id``), and
  returns the provider's typed `Spec`; egw stores its JSON, and the provider
  reads a task's ``spec`` back through its own ``from_json``.
* ``submit(task, idempotency_key=...)`` starts the work upstream and returns a
  `Submission` (the upstream id and url, when known at once). egw passes the
  attempt's key (`attempt_key`: the task id, ``<id>.<attempt>`` after a resubmit)
  as the idempotency key; a provider must make a second submit of the
  same task safe (look for what the first may have started before starting
  anything), because egw re-submits ``pending`` tasks after a restart.
* Status and logs are *pushed* into the `ProviderSink` by whatever the
  backend offers: a Nomad event stream, GitHub webhooks (a `WebhookProvider`),
  Cloud Run polling, a local process. ``sink.observe`` runs the state machine
  (stale reports are recorded, never applied); ``sink.append_log`` writes the
  task's output into egw's log store, which every SSE tailer reads, so there
  is one upstream reader per task however many clients watch.
* ``start(sink)`` starts the provider's background loops and picks up every
  task that is not terminal (``sink.active_tasks(name)``) after a restart;
  ``close()`` stops them.
* ``cancel(task, force=...)`` asks upstream to stop; the confirmation comes
  back as an observation (``cancelled``), or is returned directly.
* ``sink.logs_complete(task_id)`` says that all output is in the store; egw
  then ends SSE log streams of a terminal task with ``event: end``.

The plumbing every provider shares sits beside this module: `SinkSlot` (the
sink, once started) here, `egw.background.BackgroundTasks` for its loops,
`egw.providers.retry` for the one retry policy, `egw.providers.http` for calls
with aiohttp's failures mapped once, and `egw.core.fields` for validation.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, ClassVar, Protocol, runtime_checkable

from egw.core.model import Observation, Task
from egw.errors import ProviderUnavailable


@dataclass(frozen=True, slots=True, kw_only=True)
class Submission:
    """What a submit learned upstream.

    ``upstream_id`` is None while the run is not yet identified (GitHub
    Enterprise without run details: the task stays ``pending`` until matched).
    ``observation`` is the state to record at once (``queued`` if None and an
    upstream id is known).
    """

    upstream_id: str | None
    upstream_url: str | None = None
    upstream: Mapping[str, Any] = field(default_factory=dict)
    observation: Observation | None = None


class Delivery(StrEnum):
    """What a provider did with one webhook delivery it verified and understood."""

    ACCEPTED = "accepted"  #: recorded on ``task_id``
    DUPLICATE = "duplicate"  #: this delivery id was recorded before: nothing done
    IGNORED = "ignored"  #: not about a task egw follows (``detail`` says why)
    PONG = "pong"  #: the upstream's test delivery (``detail``: its greeting)


@dataclass(frozen=True, slots=True, kw_only=True)
class WebhookOutcome:
    """The typed outcome of `WebhookProvider.handle_webhook`; ``egw.web.hooks`` renders
    and counts it. A delivery that is refused (bad signature, malformed, store
    unavailable) is not an outcome: the provider raises the `EgwError` instead."""

    delivery: Delivery
    task_id: str | None = None
    detail: str | None = None
    #: an ignored delivery kept a while, for a run whose dispatch answer is still on its way
    held: bool = False


class Spec(Protocol):
    """A provider's validated task spec: a frozen dataclass that ``validate`` returns.

    egw stores ``to_json()`` as the task's ``spec``; the provider reads it back with
    its own ``from_json`` (a stored spec is input too, and is checked again)."""

    def to_json(self) -> dict[str, Any]: ...


@runtime_checkable
class ProviderSink(Protocol):
    """How a provider reports back to egw (implemented by `egw.service.tasks`)."""

    async def observe(
        self,
        task_id: str,
        obs: Observation,
        *,
        source: str,
        delivery_id: str | None = None,
    ) -> Task | None:
        """Record an upstream observation; returns the task after it (None if unknown task).

        A ``delivery_id`` already recorded makes the call a no-op (dedupe).
        """
        ...

    async def progress(
        self,
        task_id: str,
        kind: str,
        data: Mapping[str, Any],
        *,
        source: str,
        delivery_id: str | None = None,
    ) -> bool:
        """Record an event that does not change state (a job or step of a run, a
        new allocation...). False if the delivery id was seen before."""
        ...

    async def append_log(self, task_id: str, stream: str, data: bytes) -> int:
        """Append output (``stream`` is ``stdout`` or ``stderr``); returns the end offset."""
        ...

    async def append_output(
        self,
        task_id: str,
        chunks: Sequence[tuple[str, bytes]],
        *,
        cursor: tuple[str, str] | None = None,
        upstream: Mapping[str, Any] | None = None,
    ) -> int:
        """Append output (``(stream, bytes)`` in order) and, in the same commit, a cursor
        (``(key, value)``, as `set_cursor`) and provider data merged into the task's
        upstream data: both are stored or neither, so that whoever reads on after a crash
        (a restart, another replica) neither loses nor repeats a line."""
        ...

    async def logs_complete(self, task_id: str) -> None:
        """All of the task's output is in the store (no more `append_log` calls)."""
        ...

    async def set_upstream(
        self,
        task_id: str,
        *,
        upstream_id: str | None = None,
        upstream_url: str | None = None,
        data: Mapping[str, Any] | None = None,
    ) -> None:
        """Record (or update) the upstream id, url and provider data of a task."""
        ...

    async def get_task(self, task_id: str) -> Task | None: ...

    async def find_task(self, provider: str, upstream_id: str) -> Task | None: ...

    async def active_tasks(self, provider: str) -> list[Task]:
        """Tasks of this provider that are not terminal, or whose logs are not complete."""
        ...

    async def get_cursor(self, key: str) -> str | None:
        """A provider's persisted cursor (e.g. the last Nomad event index)."""
        ...

    async def set_cursor(self, key: str, value: str) -> None: ...


@runtime_checkable
class Provider(Protocol):
    #: the ``provider`` value in a submit body
    name: ClassVar[str]

    def validate(self, task: Mapping[str, Any]) -> Spec:
        """Check and normalise a submit's ``task`` object (pure; raises InvalidRequest)."""
        ...

    async def start(self, sink: ProviderSink) -> None: ...

    async def close(self) -> None: ...

    async def submit(self, task: Task, *, idempotency_key: str) -> Submission: ...

    async def cancel(self, task: Task, *, force: bool = False) -> Observation | None: ...

    async def status(self, task: Task) -> Observation:
        """Read the task's state upstream now (reconciliation)."""
        ...

    def health(self) -> Mapping[str, Any]:
        """Readiness detail for ``/readyz`` (e.g. event stream connected, rate limit left)."""
        ...


@runtime_checkable
class WebhookProvider(Provider, Protocol):
    """A provider its upstream pushes deliveries to (GitHub): ``POST /v1/webhooks/{source}``."""

    webhook_source: ClassVar[str]

    async def handle_webhook(self, headers: Mapping[str, str], body: bytes) -> WebhookOutcome:
        """Verify and take one delivery; raises `EgwError` to refuse it."""
        ...


@runtime_checkable
class Resubmittable(Provider, Protocol):
    """A provider that can replace a stuck attempt by a new one (``on_stuck: resubmit``):
    all four do (how each replaces its upstream work: its ``retire``).

    egw records the new attempt first (the task ``pending`` again, with no upstream),
    then calls ``retire`` with the task as it was, then ``submit`` with the attempt's
    own idempotency key (``<task id>.<attempt>`` from the second attempt on)."""

    async def retire(self, task: Task) -> None:
        """Stop the replaced attempt's upstream work and stop following it, so that nothing
        it reports later reaches the task; raises `EgwError` if upstream refuses the stop
        (the new attempt goes ahead). What is already on its way when this is called says
        which attempt it is about (`Observation.attempt`): egw does not apply it."""
        ...


@runtime_checkable
class Adopting(Provider, Protocol):
    """A provider whose work lives in the gateway's own process (the local runner), which
    can take over the unfinished tasks of a gateway that is gone (on PostgreSQL, a
    replica whose heartbeat stopped: ``egw/service/replicas.py``)."""

    async def adopt(self, sink: ProviderSink, tasks: list[Task], *, lost: str) -> None:
        """As ``start`` does with the tasks it finds: one never started runs here; one
        whose process was running ends ``failed`` with the reason ``lost``."""


@runtime_checkable
class Leading(Provider, Protocol):
    """A provider whose following of upstream (an event stream) must run on one replica at
    a time (PostgreSQL): the holder of `stream_lease` follows every unfinished task of the
    database, the others only submit and cancel (``egw/service/replicas.py``). On SQLite the
    provider leads from ``start`` and none of this is called."""

    @property
    def stream_lease(self) -> str: ...

    def stand_by(self) -> None:
        """Before ``start``: follow nothing until `lead`."""

    async def lead(self) -> None:
        """The lease is taken: follow every unfinished task, resume the stored cursors."""

    async def follow_new(self) -> None:
        """While leading: follow the tasks other replicas submitted since the last look."""

    async def step_down(self) -> None:
        """The lease is lost: stop following at once."""


@runtime_checkable
class Hearing(Leading, Protocol):
    """A `Leading` provider whose lease holder acts on events other replicas recorded for
    its tasks (GitHub: the webhook deliveries stored by whichever replica GitHub reached)."""

    #: the event kinds it hears
    heard_kinds: ClassVar[frozenset[str]]

    def heard(self, task_id: str, kind: str, data: Mapping[str, Any]) -> None:
        """Another replica committed this event (called on every replica; a provider that
        does not lead ignores it). Must not block: start the work in the background."""

    def heard_task(self, task: Task) -> None:
        """Another replica committed a change of this task (its upstream id, say): called
        on every replica, must not block."""


@runtime_checkable
class Queueing(Provider, Protocol):
    """A provider that can answer a submit without an upstream call when the work would
    only wait in its own queue (the local runner with every slot taken).

    egw then records the new task and that answer in one commit, and hands the task over
    with ``enqueue`` right after it (no ``submit`` call). One commit where there were two
    (the task, then the answer) is what makes a queued submit cheap: bench part
    "submits". A gateway that dies between the commit and ``enqueue`` leaves the task
    recorded as queued and submitted, as after any accepted submit: ``start`` finds it
    among ``sink.active_tasks`` and queues it again."""

    def answer_queued(self, task: Task) -> Submission | None:
        """The answer ``submit`` would give now if all it would do is queue ``task``;
        None if it would start or call anything (egw then calls ``submit``). Changes
        nothing: the task is not recorded yet."""
        ...

    def enqueue(self, task: Task) -> None:
        """Take ``task``, recorded with ``answer_queued``'s answer: it waits for a free slot
        like a submitted task, or starts if one came free meanwhile."""
        ...


@runtime_checkable
class Tailable(Provider, Protocol):
    """A provider that follows output within a budget, and follows first what clients
    watch (Nomad: its live log slots, `egw.providers.nomad.slots`).

    egw calls ``attention(task_id, True)`` when a task gets its first live log tailer (an
    SSE ``GET /v1/tasks/{id}/logs``) and ``attention(task_id, False)`` when its last one
    leaves, for every task of every provider: a provider ignores tasks it does not follow
    (and remembers the tailed ones it may follow later). It must not block or fail."""

    def attention(self, task_id: str, tailed: bool) -> None: ...


def attempt_key(task: Task) -> str:
    """The idempotency key of the task's current attempt: its id, then ``<id>.<attempt>``
    (what egw passes to ``submit``; a provider that finds lost work by it uses this)."""
    return key_for(task.id, task.attempt)


def key_for(task_id: str, attempt: int) -> str:
    """`attempt_key` of the task ``task_id`` at ``attempt``."""
    return task_id if attempt == 1 else f"{task_id}.{attempt}"


def split_key(key: str) -> tuple[str, int]:
    """The task id and attempt an `attempt_key` names (``t_1.2`` → ``("t_1", 2)``)."""
    task_id, dot, attempt = key.rpartition(".")
    if dot and attempt.isdigit() and int(attempt) > 1:
        return task_id, int(attempt)
    return key, 1


class SinkSlot:
    """The sink a provider reports to, once ``start`` has attached it.

    A call that needs the sink before the provider started (a submit racing the
    gateway's start-up) gets a `ProviderUnavailable`, the error every provider used
    to write under its own name."""

    def __init__(self, provider: str) -> None:
        self._provider = provider
        self._sink: ProviderSink | None = None

    def attach(self, sink: ProviderSink) -> None:
        self._sink = sink

    @property
    def started(self) -> bool:
        return self._sink is not None

    def __call__(self) -> ProviderSink:
        if self._sink is None:
            raise ProviderUnavailable(
                f"{self._provider}: the provider is not started", provider=self._provider
            )
        return self._sink
