"""A small client for egw's REST API and its server-sent events (used by the CLI)."""

from __future__ import annotations

import asyncio
import json
import ssl
from collections.abc import AsyncIterator, Mapping
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
        params: Mapping[str, str] | None = None,
        headers: Mapping[str, str] | None = None,
        timeout_s: float | None = None,
        raw: bool = False,
    ) -> Any:
        """One call: JSON answers parsed, other bodies as text (as bytes with ``raw``)."""
        timeout = aiohttp.ClientTimeout(total=timeout_s or self._timeout)
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
            if resp.status >= 400:
                raise _error(resp.status, body)
            if raw:
                return body
            if resp.content_type == "application/json":
                return json.loads(body)
            return body.decode("utf-8", "replace")

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

    async def tasks(self, **filters: str) -> Any:
        return await self.request(
            "GET", "/v1/tasks", params={k: v for k, v in filters.items() if v}
        )

    async def logs(self, task_id: str, *, stream: str | None = None) -> bytes:
        """The task's output so far, the bytes exactly as the task wrote them."""
        params = {"stream": stream} if stream else None
        body: bytes = await self.request(
            "GET", f"/v1/tasks/{task_id}/logs", params=params, raw=True
        )
        return body

    async def follow(
        self, task_id: str, *, stream: str | None = None, retries: int = 1000
    ) -> AsyncIterator[SSEEvent]:
        """Tail a task's log; reconnects with ``Last-Event-ID`` after a dropped connection
        and ends after the ``end`` event."""
        last_id: str | None = None
        failures = 0
        params = {"stream": stream} if stream else None
        while True:
            headers = {"Accept": "text/event-stream"}
            if last_id is not None:
                headers["Last-Event-ID"] = last_id
            try:
                async with self.session.get(
                    f"{self.url}/v1/tasks/{task_id}/logs",
                    headers=headers,
                    params=params,
                    ssl=self._ssl if self._ssl is not None else True,
                    timeout=aiohttp.ClientTimeout(total=None, sock_connect=10, sock_read=60),
                ) as resp:
                    if resp.status >= 400:
                        raise _error(resp.status, await resp.read())
                    async for ev in parse_sse(resp.content):
                        failures = 0
                        if ev.id is not None:
                            last_id = ev.id
                        yield ev
                        if ev.event == "end":
                            return
            except (aiohttp.ClientConnectionError, aiohttp.ClientPayloadError, TimeoutError):
                pass
            failures += 1
            if failures > retries:
                raise APIError(0, "unreachable", "lost the connection to the gateway", {})
            await asyncio.sleep(min(5.0, 0.2 * 2 ** min(failures, 5)))


def _error(status: int, body: bytes) -> APIError:
    try:
        err = json.loads(body)["error"]
        return APIError(
            status, err.get("code", "error"), err.get("message", ""), err.get("details") or {}
        )
    except (ValueError, KeyError, TypeError):
        return APIError(status, "http_error", body.decode("utf-8", "replace")[:200], {})
