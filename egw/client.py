"""A small client for egw's REST API and its server-sent events (used by the CLI)."""

from __future__ import annotations

import asyncio
import json
import ssl
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Self

import aiohttp

from egw import __version__


class APIError(Exception):
    """An error answer from the gateway, in its JSON error shape."""

    def __init__(self, status: int, code: str, message: str, details: Mapping[str, Any]) -> None:
        super().__init__(f"{status} {code}: {message}")
        self.status = status
        self.code = code
        self.message = message
        self.details = dict(details)


class Unreachable(Exception):
    """The gateway could not be reached, or the connection to it was lost."""


Params = Mapping[str, str] | Sequence[tuple[str, str]]


@dataclass(frozen=True, slots=True)
class LogsPage:
    """The output so far; ``complete`` once the task has ended and all of it is in."""

    data: bytes
    complete: bool
    offset: int


@dataclass(frozen=True, slots=True)
class SSEEvent:
    event: str
    data: str
    id: str | None

    def json(self) -> Any:
        return json.loads(self.data)


async def parse_sse(content: aiohttp.StreamReader) -> AsyncIterator[SSEEvent]:
    """Events of a text/event-stream body (WHATWG rules: fields, blank-line dispatch, comments)."""
    event, last_id = "", None
    data: list[str] = []
    while True:
        raw = await content.readline()
        if not raw:
            return
        line = raw.decode("utf-8").rstrip("\r\n")
        if not line:
            if data:
                yield SSEEvent(event or "message", "\n".join(data), last_id)
            event, data = "", []
            continue
        if line.startswith(":"):
            continue
        name, _, value = line.partition(":")
        value = value.removeprefix(" ")
        if name == "event":
            event = value
        elif name == "data":
            data.append(value)
        elif name == "id":
            last_id = value


class Client:
    def __init__(
        self, url: str, token: str | None, *, cafile: str | None = None, timeout_s: float = 30.0
    ) -> None:
        self.url = url.rstrip("/")
        self._headers = {"User-Agent": f"egw-cli/{__version__}"}
        if token:
            self._headers["Authorization"] = f"Bearer {token}"
        self._ssl: ssl.SSLContext | None = (
            ssl.create_default_context(cafile=cafile) if cafile else None
        )
        self._timeout = timeout_s
        self._session: aiohttp.ClientSession | None = None

    async def __aenter__(self) -> Self:
        self._session = aiohttp.ClientSession(headers=self._headers)
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        if self._session is not None:
            await self._session.close()

    @property
    def session(self) -> aiohttp.ClientSession:
        assert self._session is not None, "use `async with Client(...)`"
        return self._session

    async def request(
        self,
        method: str,
        path: str,
        *,
        json_body: Any = None,
        params: Params | None = None,
        headers: Mapping[str, str] | None = None,
        timeout_s: float | None = None,
    ) -> Any:
        """One call; the JSON answer."""
        body, _ = await self._call(method, path, json_body, params, headers, timeout_s)
        return json.loads(body)

    async def _call(
        self,
        method: str,
        path: str,
        json_body: Any = None,
        params: Params | None = None,
        headers: Mapping[str, str] | None = None,
        timeout_s: float | None = None,
        accept: tuple[int, ...] = (),
    ) -> tuple[bytes, Mapping[str, str]]:
        """One call: the body's bytes and the headers; an error answer (other than a status
        in ``accept``) is an `APIError`, no answer `Unreachable`."""
        timeout = aiohttp.ClientTimeout(total=timeout_s or self._timeout)
        try:
            async with self.session.request(
                method,
                self.url + path,
                json=json_body,
                params=params,
                headers=headers,
                ssl=self._ssl if self._ssl is not None else True,
                timeout=timeout,
            ) as resp:
                body = await resp.read()
                if resp.status >= 400 and resp.status not in accept:
                    raise _error(resp.status, body)
                return body, resp.headers
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise Unreachable(f"cannot reach {self.url}: {str(exc) or type(exc).__name__}") from exc

    async def readiness(self) -> Any:
        """``/readyz``'s report, whether the gateway is ready (200) or not (503)."""
        body, _ = await self._call("GET", "/readyz", accept=(503,))
        return json.loads(body)

    async def gateway_events(self, *, after: int = 0, limit: int = 1000) -> Any:
        params = {"after": str(after), "limit": str(limit)}
        return await self.request("GET", "/v1/gateway/events", params=params)

    async def rerun(self, task_id: str) -> Any:
        return await self.request("POST", f"/v1/tasks/{task_id}/rerun")

    async def events(self, task_id: str, *, after: int = 0, limit: int = 500) -> Any:
        params = {"after": str(after), "limit": str(limit)}
        return await self.request("GET", f"/v1/tasks/{task_id}/events", params=params)

    async def audit(self, params: Params) -> Any:
        """A page of the audit query (JSON, oldest first); ``type`` repeats."""
        return await self.request("GET", "/v1/events", params=params)

    async def submit(self, body: Mapping[str, Any], *, idempotency_key: str | None = None) -> Any:
        headers = {"Idempotency-Key": idempotency_key} if idempotency_key else None
        return await self.request("POST", "/v1/tasks", json_body=body, headers=headers)

    async def task(self, task_id: str, *, index: int | None = None, wait_s: float = 60) -> Any:
        params = {"index": str(index), "wait": f"{wait_s:g}s"} if index is not None else None
        return await self.request(
            "GET", f"/v1/tasks/{task_id}", params=params, timeout_s=wait_s + 30
        )

    async def wait(self, task_id: str) -> Any:
        """Block until the task is terminal (blocking queries, not polling)."""
        task = await self.task(task_id)
        while task["status"] not in ("succeeded", "failed", "cancelled", "timed_out"):
            task = await self.task(task_id, index=task["index"], wait_s=60)
        return task

    async def cancel(self, task_id: str, *, force: bool = False) -> Any:
        params = {"force": "true"} if force else None
        return await self.request("POST", f"/v1/tasks/{task_id}/cancel", params=params)

    async def tasks(self, params: Params) -> Any:
        """A page of tasks; ``params`` as pairs, since ``status`` and ``label`` repeat."""
        return await self.request("GET", "/v1/tasks", params=params)

    async def logs(self, task_id: str, *, stream: str | None = None) -> LogsPage:
        """The task's output so far, the bytes exactly as the task wrote them."""
        params = {"stream": stream} if stream else None
        body, headers = await self._call("GET", f"/v1/tasks/{task_id}/logs", params=params)
        complete = headers.get("X-Egw-Complete", "true") == "true"
        offset = headers.get("X-Egw-Offset", "")
        return LogsPage(body, complete, int(offset) if offset.isdigit() else len(body))

    async def follow(
        self,
        task_id: str,
        *,
        stream: str | None = None,
        offset: int | None = None,
        retries: int = 1000,
    ) -> AsyncIterator[SSEEvent]:
        """Tail a task's log (from byte ``offset``); ends after the ``end`` event."""
        params = {"stream": stream} if stream else None
        last_id = None if offset is None else str(offset)
        async for ev in self.stream(f"/v1/tasks/{task_id}/logs", params, last_id, retries):
            yield ev
            if ev.event == "end":
                return

    async def stream(
        self,
        path: str,
        params: Params | None = None,
        last_id: str | None = None,
        retries: int = 1000,
    ) -> AsyncIterator[SSEEvent]:
        """An event stream; reconnects with ``Last-Event-ID`` after a dropped connection
        (an answer of 400 or more is an `APIError`; `Unreachable` after ``retries``)."""
        failures = 0
        connected = False
        while True:
            headers = {"Accept": "text/event-stream"}
            if last_id is not None:
                headers["Last-Event-ID"] = last_id
            try:
                async with self.session.get(
                    self.url + path,
                    headers=headers,
                    params=params,
                    ssl=self._ssl if self._ssl is not None else True,
                    timeout=aiohttp.ClientTimeout(total=None, sock_connect=10, sock_read=60),
                ) as resp:
                    if resp.status >= 400:
                        raise _error(resp.status, await resp.read())
                    connected = True
                    async for ev in parse_sse(resp.content):
                        failures = 0
                        if ev.id is not None:
                            last_id = ev.id
                        yield ev
            except (aiohttp.ClientConnectionError, aiohttp.ClientPayloadError, TimeoutError) as exc:
                if not connected:  # never reached: a wrong address, not a dropped stream
                    raise Unreachable(f"cannot reach {self.url}: {exc}") from exc
            failures += 1
            if failures > retries:
                raise Unreachable(f"lost the connection to {self.url}")
            await asyncio.sleep(min(5.0, 0.2 * 2 ** min(failures, 5)))


def _error(status: int, body: bytes) -> APIError:
    try:
        err = json.loads(body)["error"]
        return APIError(
            status, err.get("code", "error"), err.get("message", ""), err.get("details") or {}
        )
    except (ValueError, KeyError, TypeError):
        return APIError(status, "http_error", body.decode("utf-8", "replace")[:200], {})
