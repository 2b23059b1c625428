"""The provider seam: the `Provider` protocol every backend implements, and the
`ProviderSink` through which a backend reports back to egw.

Theory of operation
-------------------
egw owns the task record, the event log, the log store and the clients. A
provider owns the conversation with one upstream:

* ``validate(task)`` (pure) checks the user's ``task`` object before anything
  is stored, raising `InvalidRequest` with the field path (``task.job_id``).
* ``submit(task, idempotency_key=...)`` starts the work upstream and returns a
  `Submission` (the upstream id and url, when known at once). egw passes the
  task id as the idempotency key; a provider must make a second submit of the
  same task safe (look for what the first may have started before starting
  anything), because egw re-submits ``pending`` tasks after a restart.
* Status and logs are *pushed* into the `ProviderSink` by whatever the
  backend offers: a Nomad event stream, GitHub webhooks (``handle_webhook``),
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

Retries live here, at the seam, and only here: `retrying` builds the one
tenacity policy (exponential backoff with full jitter, bounded by attempts
and a deadline, honouring ``Retry-After``) from the ``retry`` config, and
`http_request` maps aiohttp's failures onto the error tree once.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Mapping
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any, ClassVar, Protocol, TypeVar, runtime_checkable

import aiohttp
import structlog
from tenacity import (
    AsyncRetrying,
    RetryCallState,
    retry_if_exception_type,
    stop_after_attempt,
    stop_after_delay,
    wait_random_exponential,
)

from egw.config import RetryConfig
from egw.core.model import Observation, Task
from egw.errors import ProviderError, ProviderUnavailable

log = structlog.get_logger("egw.providers")

T = TypeVar("T")


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


@dataclass(frozen=True, slots=True, kw_only=True)
class WebhookResult:
    """The answer to a webhook delivery: HTTP status and JSON body."""

    status: int
    body: Mapping[str, Any]


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
    #: the ``{source}`` in ``POST /v1/webhooks/{source}``, or None if it takes no webhooks
    webhook_source: ClassVar[str | None]

    def validate(self, task: Mapping[str, Any]) -> dict[str, Any]:
        """Check and normalise a submit's ``task`` object (pure; raises InvalidRequest)."""
        ...

    async def start(self, sink: ProviderSink) -> None: ...

    async def close(self) -> None: ...

    async def submit(self, task: Task, *, idempotency_key: str) -> Submission: ...

    async def cancel(self, task: Task, *, force: bool = False) -> Observation | None: ...

    async def status(self, task: Task) -> Observation:
        """Read the task's state upstream now (reconciliation)."""
        ...

    async def handle_webhook(
        self, headers: Mapping[str, str], body: bytes
    ) -> WebhookResult:
        """Verify and take one webhook delivery (only if ``webhook_source``)."""
        ...

    def health(self) -> Mapping[str, Any]:
        """Readiness detail for ``/readyz`` (e.g. event stream connected, rate limit left)."""
        ...


# --- telemetry -----------------------------------------------------------------------------


class UpstreamObserver(Protocol):
    """Told of every upstream call and retry (the metrics registry implements it)."""

    def upstream_call(self, provider: str, operation: str, outcome: str, seconds: float) -> None: ...

    def upstream_retry(self, provider: str, operation: str) -> None: ...


_observers: list[UpstreamObserver] = []
#: the operation named by the enclosing `retrying` loop, for labelling the calls inside it
_operation: ContextVar[str] = ContextVar("egw_upstream_operation", default="other")


def add_observer(observer: UpstreamObserver) -> None:
    _observers.append(observer)


def remove_observer(observer: UpstreamObserver) -> None:
    if observer in _observers:
        _observers.remove(observer)


def _outcome(status: int | None) -> str:
    if status is None:
        return "error"
    if status < 400:
        return "ok"
    return "server_error" if status == 429 or status >= 500 else "client_error"


class _Retrying(AsyncRetrying):
    """AsyncRetrying that names its operation for the calls made inside each attempt."""

    operation = "other"

    def copy(self, *args: Any, **kwargs: Any) -> Any:  # a copy keeps its operation's name
        new = super().copy(*args, **kwargs)
        new.operation = self.operation
        return new

    async def __anext__(self) -> Any:
        token = _operation.set(self.operation)
        try:
            attempt = await super().__anext__()
        except BaseException:
            _operation.reset(token)
            raise
        return _NamedAttempt(attempt, token)


class _NamedAttempt:
    """One attempt's ``with`` block: the operation's name holds inside it, and only there."""

    def __init__(self, attempt: Any, token: Any) -> None:
        self._attempt = attempt
        self._token = token

    def __enter__(self) -> Any:
        return self._attempt.__enter__()

    def __exit__(self, *exc: Any) -> Any:
        try:
            return self._attempt.__exit__(*exc)
        finally:
            _operation.reset(self._token)


# --- retries ------------------------------------------------------------------------------


def retrying(
    cfg: RetryConfig,
    *,
    provider: str,
    operation: str,
    on_retry: Callable[[str, str], None] | None = None,
) -> AsyncRetrying:
    """The one retry policy: only `ProviderUnavailable` is retried, with full-jitter
    exponential backoff, at most ``cfg.attempts`` attempts and no new attempt after
    ``cfg.deadline_s``. An upstream ``Retry-After`` longer than the backoff wins.
    ``reraise`` hands callers the last `ProviderError`, never tenacity's RetryError.
    """
    jitter = wait_random_exponential(multiplier=cfg.initial_backoff_s, max=cfg.max_backoff_s)

    def wait(state: RetryCallState) -> float:
        backoff = float(jitter(state))
        exc = state.outcome.exception() if state.outcome else None
        hint = getattr(exc, "retry_after_s", None)
        if hint is not None:
            return max(backoff, min(float(hint), cfg.deadline_s))
        return backoff

    def before_sleep(state: RetryCallState) -> None:
        exc = state.outcome.exception() if state.outcome else None
        log.warning(
            "upstream_retry",
            provider=provider,
            operation=operation,
            attempt=state.attempt_number,
            error=str(exc),
            sleep_s=round(state.next_action.sleep, 3) if state.next_action else None,
        )
        if on_retry is not None:
            on_retry(provider, operation)
        for observer in _observers:
            observer.upstream_retry(provider, operation)

    policy = _Retrying(
        retry=retry_if_exception_type(ProviderUnavailable),
        stop=stop_after_attempt(cfg.attempts) | stop_after_delay(cfg.deadline_s),
        wait=wait,
        before_sleep=before_sleep,
        reraise=True,
    )
    policy.operation = operation
    return policy


async def with_retries(
    cfg: RetryConfig,
    fn: Callable[[], Awaitable[T]],
    *,
    provider: str,
    operation: str,
) -> T:
    """Run ``fn`` under `retrying`."""
    async for attempt in retrying(cfg, provider=provider, operation=operation):
        with attempt:
            return await fn()
    raise AssertionError("unreachable: tenacity reraises")  # pragma: no cover


# --- HTTP -----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class HTTPResponse:
    status: int
    headers: Mapping[str, str]
    body: bytes

    def json(self) -> Any:
        import json

        return json.loads(self.body)


async def http_request(
    session: aiohttp.ClientSession,
    method: str,
    url: str,
    *,
    provider: str,
    headers: Mapping[str, str] | None = None,
    json_body: Any = None,
    data: bytes | None = None,
    params: Mapping[str, str] | None = None,
    timeout_s: float | None = None,
    allow_redirects: bool = True,
    ssl: Any = None,
) -> HTTPResponse:
    """One request; connection errors and timeouts become `ProviderUnavailable`.

    The status is *not* judged here: each provider maps its upstream's error
    bodies (plain text for Nomad, ``basic-error`` for GitHub, AIP-193 for Google)
    with `raise_for_status` or its own rules.
    """
    timeout = aiohttp.ClientTimeout(total=timeout_s) if timeout_s else None
    kwargs: dict[str, Any] = {}
    if ssl is not None:
        kwargs["ssl"] = ssl
    started = time.perf_counter()
    status: int | None = None
    try:
        async with session.request(
            method,
            url,
            headers=dict(headers or {}),
            json=json_body,
            data=data,
            params=dict(params) if params else None,
            timeout=timeout,
            allow_redirects=allow_redirects,
            **kwargs,
        ) as resp:
            body = await resp.read()
            status = resp.status
            return HTTPResponse(resp.status, {k.lower(): v for k, v in resp.headers.items()}, body)
    except TimeoutError as exc:
        raise ProviderUnavailable(
            f"{provider}: {method} {_path(url)} timed out", provider=provider
        ) from exc
    except aiohttp.ClientError as exc:
        raise ProviderUnavailable(
            f"{provider}: {method} {_path(url)} failed: {type(exc).__name__}: {exc}",
            provider=provider,
        ) from exc
    finally:
        if _observers:
            elapsed = time.perf_counter() - started
            for observer in _observers:
                observer.upstream_call(provider, _operation.get(), _outcome(status), elapsed)


def raise_for_status(
    resp: HTTPResponse,
    *,
    provider: str,
    message: str,
    retry_after_s: float | None = None,
) -> None:
    """Map an upstream error status: 429 and 5xx are transient, the rest final.

    ``message`` is the upstream's own error text, already extracted by the caller.
    """
    if resp.status < 400:
        return
    if resp.status == 429 or resp.status >= 500:
        if retry_after_s is None:
            retry_after_s = parse_retry_after(resp.headers.get("retry-after"))
        raise ProviderUnavailable(
            message, provider=provider, upstream_status=resp.status, retry_after_s=retry_after_s
        )
    raise ProviderError(message, provider=provider, upstream_status=resp.status)


def parse_retry_after(value: str | None) -> float | None:
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        return None


def _path(url: str) -> str:
    # never log query strings: they may carry tokens
    return url.split("?", 1)[0]


async def cancel_and_wait(task: asyncio.Task[Any] | None) -> None:
    """Cancel a background loop and wait for it to finish."""
    if task is None or task.done():
        return
    task.cancel()
    try:
        await task
    except asyncio.CancelledError:
        pass
