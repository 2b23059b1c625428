"""HTTP toward upstreams, with aiohttp's failures mapped onto egw's error tree once.

`http_request` is one buffered call; `streamed_get` is a long-lived GET (an
event stream, a followed log) whose reads may fail at any point of its body.
Neither judges the status: each provider maps its upstream's error bodies
(plain text for Nomad, ``basic-error`` for GitHub, AIP-193 for Google) with
`raise_for_status` or its own rules. Every buffered call is reported to the
`UpstreamObserver`s (the metrics registry), labelled with the operation of the
enclosing retry loop (see `egw.providers.retry`).

Both take the provider's `Breakers` (``circuit``): while the breaker toward the call's
target is open, the call raises `CircuitOpen` at once and never touches the network.
The breaker judges whether the upstream *answers*, not what it answers: a connection
error, a timeout or a 5xx is a failure; any other answer (a 4xx from a bad request, a
404, a 409, a 429 rate limit) is a success. A rate limit is the upstream answering, with
its own precise wait (``Retry-After``, GitHub's reset) that the retry policy and the
GitHub client already honour; opening the breaker on it would replace that wait with
``open_s`` and stop every other call too. The target is the URL's host unless the
caller names one (Nomad names the region).
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import asynccontextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any, Protocol

import aiohttp

from egw.errors import ProviderError, ProviderUnavailable
from egw.providers.circuit import Breakers, host_of

# --- telemetry -----------------------------------------------------------------------------


class UpstreamObserver(Protocol):
    """Told of every upstream call and retry (the metrics registry implements it)."""

    def upstream_call(
        self, provider: str, operation: str, outcome: str, seconds: float
    ) -> None: ...

    def upstream_retry(self, provider: str, operation: str) -> None: ...


observers: list[UpstreamObserver] = []
#: the operation named by the enclosing retry loop, for labelling the calls inside it
current_operation: ContextVar[str] = ContextVar("egw_upstream_operation", default="other")


def add_observer(observer: UpstreamObserver) -> None:
    observers.append(observer)


def remove_observer(observer: UpstreamObserver) -> None:
    if observer in observers:
        observers.remove(observer)


def _outcome(status: int | None) -> str:
    if status is None:
        return "error"
    if status < 400:
        return "ok"
    return "server_error" if status == 429 or status >= 500 else "client_error"


# --- calls ----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class HTTPResponse:
    status: int
    headers: Mapping[str, str]  # names in lower case
    body: bytes

    def json(self) -> Any:
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
    circuit: Breakers | None = None,
    target: str | None = None,
) -> HTTPResponse:
    """One buffered request; connection errors and timeouts become `ProviderUnavailable`;
    refused at once with `CircuitOpen` while ``circuit`` is open toward ``target``."""
    where = target or host_of(url)
    ticket = circuit.admit(where) if circuit is not None else None
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
        if circuit is not None and ticket is not None:
            _judge(circuit, where, ticket, status, sys.exc_info()[1])
        if observers:
            elapsed = time.perf_counter() - started
            for observer in observers:
                observer.upstream_call(provider, current_operation.get(), _outcome(status), elapsed)


@asynccontextmanager
async def streamed_get(
    session: aiohttp.ClientSession,
    url: str,
    *,
    provider: str,
    what: str,
    params: Mapping[str, str] | Sequence[tuple[str, str]] | None = None,
    headers: Mapping[str, str] | None = None,
    connect_timeout_s: float | None = None,
    idle_timeout_s: float | None = None,
    ssl: Any = None,
    circuit: Breakers | None = None,
    target: str | None = None,
) -> AsyncIterator[aiohttp.ClientResponse]:
    """A long-lived GET: no total timeout, ``idle_timeout_s`` between two reads.

    Whatever aiohttp raises while connecting *or while the caller reads the body
    inside the ``async with``* becomes `ProviderUnavailable` naming ``what``
    ("event stream", "logs of <alloc>"); the status is left to the caller.
    """
    timeout = aiohttp.ClientTimeout(
        total=None, sock_connect=connect_timeout_s, sock_read=idle_timeout_s
    )
    kwargs: dict[str, Any] = {"ssl": ssl} if ssl is not None else {}
    where = target or host_of(url)
    ticket = circuit.admit(where) if circuit is not None else None
    try:
        try:
            async with session.get(
                url, params=params, headers=dict(headers or {}), timeout=timeout, **kwargs
            ) as resp:
                # judged on its answer: a stream that later ends or goes idle is no failure
                if circuit is not None and ticket is not None:
                    _judge(circuit, where, ticket, resp.status, None)
                    ticket = None
                yield resp
        finally:
            if circuit is not None and ticket is not None:  # it failed before any answer
                _judge(circuit, where, ticket, None, sys.exc_info()[1])
    except aiohttp.ClientError as exc:
        raise ProviderUnavailable(
            f"{provider}: {what}: {type(exc).__name__}: {exc}", provider=provider
        ) from exc
    except TimeoutError as exc:
        raise ProviderUnavailable(f"{provider}: {what}: idle too long", provider=provider) from exc


def _judge(
    circuit: Breakers, target: str, ticket: int, status: int | None, exc: BaseException | None
) -> None:
    """Tell the breaker how its call went (see the module docstring)."""
    if status is not None:
        if status >= 500:
            circuit.failure(target, ticket, f"HTTP {status}")
        else:
            circuit.success(target, ticket)
    elif isinstance(exc, ProviderUnavailable | TimeoutError | aiohttp.ClientError):
        why = exc.message if isinstance(exc, ProviderUnavailable) else type(exc).__name__
        circuit.failure(target, ticket, why)
    else:  # cancelled, or a bug: no outcome (a probe's slot is freed)
        circuit.abandon(target, ticket)


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
    """``Retry-After`` in seconds (the delay-seconds form; an HTTP date gives None)."""
    if not value:
        return None
    try:
        seconds = float(value)
    except ValueError:
        return None
    return max(0.0, seconds) if seconds == seconds else None  # NaN is no hint


def _path(url: str) -> str:
    # never log query strings: they may carry tokens
    return url.split("?", 1)[0]
