"""HTTP toward upstreams, with aiohttp's failures mapped onto egw's error tree once.

`http_request` is one buffered call; `streamed_get` is a long-lived GET (an
event stream, a followed log) whose reads may fail at any point of its body.
Neither judges the status: each provider maps its upstream's error bodies
(plain text for Nomad, ``basic-error`` for GitHub, AIP-193 for Google) with
`raise_for_status` or its own rules. Every buffered call is reported to the
`UpstreamObserver`s (the metrics registry), labelled with the operation of the
enclosing retry loop (see `egw.providers.retry`).
"""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import asynccontextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any, Protocol

import aiohttp

from egw.errors import ProviderError, ProviderUnavailable

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
) -> HTTPResponse:
    """One buffered request; connection errors and timeouts become `ProviderUnavailable`."""
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
    try:
        async with session.get(
            url, params=params, headers=dict(headers or {}), timeout=timeout, **kwargs
        ) as resp:
            yield resp
    except aiohttp.ClientError as exc:
        raise ProviderUnavailable(
            f"{provider}: {what}: {type(exc).__name__}: {exc}", provider=provider
        ) from exc
    except TimeoutError as exc:
        raise ProviderUnavailable(f"{provider}: {what}: idle too long", provider=provider) from exc


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
