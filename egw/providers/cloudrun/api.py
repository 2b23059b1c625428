"""`CloudRunAPI`: one authorised call to Cloud Run Admin v2 or Logging v2, errors mapped, retried.

Every part of the provider (executions, poller, log reader) calls Google through this one helper:
a bearer token from `TokenSource` (a 401 refreshes it once), Google's error bodies mapped to egw's
errors (429 and 5xx are `ProviderUnavailable`, retried by the shared policy; 409 a `Conflict`;
the rest a final `ProviderError`), and the retry count and last error kept for ``/readyz``.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from typing import Any, TypeVar

import aiohttp

from egw.config import CloudRunConfig, RetryConfig
from egw.errors import Conflict, EgwError, ProviderError, ProviderUnavailable
from egw.providers.circuit import Breakers
from egw.providers.cloudrun.credentials import TokenSource
from egw.providers.http import HTTPResponse, http_request, parse_retry_after
from egw.providers.retry import with_retries
from egw.wire import cloudrun as wire

#: the provider's name, in its errors and metrics
NAME = "cloud_run"

T = TypeVar("T")


class CloudRunAPI:
    """Calls to Google for one provider (one session, one token source, one retry policy)."""

    def __init__(
        self,
        cfg: CloudRunConfig,
        *,
        session: aiohttp.ClientSession,
        retry: RetryConfig,
        circuit: Breakers,
    ) -> None:
        self._cfg = cfg
        #: one breaker per Google API host (Cloud Run Admin, Cloud Logging)
        self._circuit = circuit
        self._session = session
        self._retry = retry
        self.auth = TokenSource(cfg)
        self.run_url = cfg.run_api_url.rstrip("/")
        self.logging_url = cfg.logging_api_url.rstrip("/")
        #: retries so far, and the last error upstream answered (for ``health``)
        self.retries = 0
        self.last_error: str | None = None

    def execution_url(self, name: str) -> str:
        """The URL of an execution (its name checked again before it goes into the path)."""
        return f"{self.run_url}/v2/{wire.parse_execution_name(name).name}"

    def _count_retry(self) -> None:
        self.retries += 1

    async def retried(self, fn: Callable[[], Awaitable[T]], operation: str) -> T:
        """``fn`` under the shared retry policy, each retry counted."""
        return await with_retries(
            self._retry, fn, provider=NAME, operation=operation, on_retry=self._count_retry
        )

    async def call(
        self,
        method: str,
        url: str,
        *,
        operation: str,
        json_body: Any = None,
        params: Mapping[str, str] | None = None,
    ) -> Any:
        """One upstream call, retried on 429, 5xx and connection errors (idempotent calls only)."""
        return await self.retried(
            lambda: self.send(method, url, operation=operation, json_body=json_body, params=params),
            operation,
        )

    async def send(
        self,
        method: str,
        url: str,
        *,
        operation: str,
        json_body: Any = None,
        params: Mapping[str, str] | None = None,
    ) -> Any:
        """One attempt (a 401 refreshes the token and tries once more); Google's errors mapped."""

        async def once(refresh: bool) -> HTTPResponse:
            token = await self.auth.token(force=refresh)
            return await http_request(
                self._session,
                method,
                url,
                provider=NAME,
                json_body=json_body,
                params=params,
                timeout_s=self._cfg.request_timeout_s,
                headers={"Authorization": f"Bearer {token}", "Accept": "application/json"},
                circuit=self._circuit,
            )

        resp = await once(False)
        if resp.status == 401 and not self._cfg.access_token:  # revoked early: refresh once
            resp = await once(True)
        if resp.status >= 400:
            raise self._error(resp, operation)
        try:
            return resp.json()
        except ValueError:
            raise ProviderError(
                f"{operation}: upstream answered {resp.status} with no JSON",
                provider=NAME,
                upstream_status=resp.status,
            ) from None

    def _error(self, resp: HTTPResponse, operation: str) -> EgwError:
        err = wire.parse_error(resp.status, resp.body)
        api = "Cloud Logging" if operation.startswith("logging") else "Cloud Run"
        message = f"{api} {operation}: {err.status}: {err.message}"
        details = {"google_status": err.status}
        if resp.status == 403:  # name what to grant (see wire.REQUIRED_PERMISSIONS)
            message = f"{message} ({wire.permission_hint(operation, err)})"
            needed = wire.REQUIRED_PERMISSIONS.get(operation)
            details["permission"] = err.permission or (needed[0] if needed else "")
        self.last_error = message
        if resp.status == 429 or resp.status >= 500:
            return ProviderUnavailable(
                message,
                provider=NAME,
                upstream_status=resp.status,
                details=details,
                retry_after_s=parse_retry_after(resp.headers.get("retry-after")),
            )
        if resp.status == 409:
            return Conflict(message, details={**details, "provider": NAME})
        return ProviderError(message, provider=NAME, upstream_status=resp.status, details=details)
