"""The one retry policy toward upstreams, built on tenacity.

Retries live here, at the provider seam, and only here (never around handlers,
the store or the core). One policy serves two kinds of loop:

* a **call** (``retrying(cfg, ...)``): at most ``cfg.attempts`` attempts and no
  new attempt after ``cfg.deadline_s``; the caller then gets the last
  `ProviderError` itself (``reraise``), never tenacity's ``RetryError``;
* a **loop that must go on** (``forever=True``: a reconnecting event stream, a
  log follower): tenacity's ``stop_never``, the same backoff.

Both wait with full-jitter exponential backoff (tenacity's
``wait_random_exponential``, which its docs recommend under contention) from
``cfg.initial_backoff_s`` up to ``cfg.max_backoff_s``; an upstream
``Retry-After`` longer than the backoff wins. A loop that keeps its own failure
count (to fall back to polling after N failures, say) asks `backoff_s` for the
same wait, or `pause_s` with the error it got.

A call refused by an open breaker (`CircuitOpen`, see `egw.providers.circuit`) ends a
bounded loop at once: waiting out the open time inside a submit would hang its client
for nothing, so the caller answers 503 with the wait instead. A loop that must go on
waits until the breaker lets a probe through, however short its own backoff.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import structlog
from tenacity import (
    AsyncRetrying,
    RetryCallState,
    retry_if_exception_type,
    stop_after_attempt,
    stop_after_delay,
    stop_any,
    stop_never,
    wait_random_exponential,
)
from tenacity.stop import stop_base

from egw.config import RetryConfig
from egw.errors import CircuitOpen, ProviderUnavailable
from egw.providers.http import current_operation, observers

log = structlog.get_logger("egw.providers.retry")

T = TypeVar("T")


class _Retrying(AsyncRetrying):
    """AsyncRetrying that names its operation for the calls made inside each attempt
    (`egw.providers.http` labels its metrics with `current_operation`)."""

    operation = "other"

    def copy(self, *args: Any, **kwargs: Any) -> Any:  # a copy keeps its operation's name
        new = super().copy(*args, **kwargs)
        new.operation = self.operation
        return new

    async def __anext__(self) -> Any:
        token = current_operation.set(self.operation)
        try:
            attempt = await super().__anext__()
        except BaseException:
            current_operation.reset(token)
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
            current_operation.reset(self._token)


class _RetryAfterTooLong(stop_base):
    """Give up at once when upstream asks for a longer wait than ``limit_s`` (GitHub's rate
    limit reset an hour away): the caller answers 503 with the hint instead of hanging."""

    def __init__(self, limit_s: float) -> None:
        self.limit_s = limit_s

    def __call__(self, state: RetryCallState) -> bool:
        exc = state.outcome.exception() if state.outcome else None
        hint = getattr(exc, "retry_after_s", None)
        return hint is not None and hint > self.limit_s


class _CircuitIsOpen(stop_base):
    """Give up at once on a call the breaker refused (see the module docstring)."""

    def __call__(self, state: RetryCallState) -> bool:
        exc = state.outcome.exception() if state.outcome else None
        return isinstance(exc, CircuitOpen)


def _jitter(cfg: RetryConfig) -> wait_random_exponential:
    return wait_random_exponential(multiplier=cfg.initial_backoff_s, max=cfg.max_backoff_s)


def backoff_s(cfg: RetryConfig, attempt: int) -> float:
    """The policy's wait after the ``attempt``-th consecutive failure (1-based), for a loop
    that counts its own failures: tenacity's wait strategy, asked about that attempt."""
    state = RetryCallState(retry_object=AsyncRetrying(), fn=None, args=(), kwargs={})
    state.attempt_number = max(1, attempt)
    return float(_jitter(cfg)(state))


def pause_s(cfg: RetryConfig, attempt: int, exc: BaseException | None) -> float:
    """`backoff_s`, or longer when ``exc`` is the breaker's refusal: until it lets a probe
    through (a poller then sleeps through an outage instead of asking again and again)."""
    wait = backoff_s(cfg, attempt)
    if isinstance(exc, CircuitOpen):
        wait = max(wait, exc.retry_after_s or 0.0)
    return wait


def retrying(
    cfg: RetryConfig,
    *,
    provider: str,
    operation: str,
    forever: bool = False,
    retry_on: tuple[type[BaseException], ...] = (ProviderUnavailable,),
    max_retry_after_s: float | None = None,
    on_retry: Callable[[], None] | None = None,
) -> AsyncRetrying:
    """The retry policy (see the module docstring). Only ``retry_on`` is retried
    (`ProviderUnavailable`: connection errors, timeouts, 429 and 5xx); with
    ``max_retry_after_s`` a longer ``Retry-After`` ends the loop at once; ``on_retry``
    is called before each wait (a provider's own retry count for its health)."""
    jitter = _jitter(cfg)

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
            on_retry()
        for observer in observers:
            observer.upstream_retry(provider, operation)

    stop: stop_base = (
        stop_never
        if forever
        else stop_after_attempt(cfg.attempts) | stop_after_delay(cfg.deadline_s) | _CircuitIsOpen()
    )
    if max_retry_after_s is not None:
        stop = stop_any(stop, _RetryAfterTooLong(max_retry_after_s))
    policy = _Retrying(
        retry=retry_if_exception_type(retry_on),
        stop=stop,
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
    max_retry_after_s: float | None = None,
    on_retry: Callable[[], None] | None = None,
) -> T:
    """Run ``fn`` under `retrying` (bounded); returns its result or raises its last error."""
    policy = retrying(
        cfg,
        provider=provider,
        operation=operation,
        max_retry_after_s=max_retry_after_s,
        on_retry=on_retry,
    )
    async for attempt in policy:
        with attempt:
            return await fn()
    raise AssertionError("unreachable: tenacity reraises")  # pragma: no cover
