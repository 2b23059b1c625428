"""GitHub's REST API as the provider calls it: headers, rate limit, retries, log downloads.

A rate-limited answer pauses every call until its reset (the caller gets a 503
with the wait); 5xx and transport failures are marked ``ambiguous``, so that a
dispatch looks for the run a lost request may have created before it retries."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, TypeVar

import aiohttp
import structlog

from egw.config import GitHubActionsConfig, RetryConfig
from egw.errors import CircuitOpen, ProviderError, ProviderUnavailable
from egw.providers.circuit import Breakers, host_of
from egw.providers.github_actions.appauth import PROVIDER, InstallationToken
from egw.providers.http import HTTPResponse, http_request
from egw.providers.retry import with_retries
from egw.wire import github as gh

log = structlog.get_logger("egw.providers.github_actions")
T = TypeVar("T")
__all__ = ["LOW_BUDGET", "PROVIDER", "GitHubAPI"]

#: below this share of the rate limit left, runs are polled at the longest interval
LOW_BUDGET = 0.1


class GitHubAPI:
    """One GitHub endpoint (github.com or an Enterprise Server) with one token."""

    def __init__(
        self,
        cfg: GitHubActionsConfig,
        *,
        session: aiohttp.ClientSession,
        retry: RetryConfig,
        circuit: Breakers,
    ) -> None:
        self.cfg = cfg
        #: one breaker per host: the API's, and the one its log downloads come from
        self.circuit = circuit
        self.session = session
        self.retry = retry
        self.rate: gh.RateLimit | None = None
        self.blocked_until = 0.0
        self._rate_strikes = 0
        #: a GitHub App installation's tokens, when configured instead of ``cfg.token``
        self.app = InstallationToken(cfg, session, circuit) if cfg.app is not None else None

    def circuit_wait_s(self) -> float:
        """How long the breaker toward the API host refuses calls (0 while it lets them by)."""
        return self.circuit.circuit(host_of(self.cfg.api_url)).retry_after_s()

    def budget_low(self) -> bool:
        rate = self.rate
        if rate is None or not rate.limit or rate.remaining is None:
            return False
        return rate.remaining < rate.limit * LOW_BUDGET

    async def retried(self, fn: Callable[[], Awaitable[T]], operation: str) -> T:
        """The shared retry policy, which also gives up at once when GitHub's rate limit
        asks for a longer wait than the retry deadline (the caller gets a 503 with it)."""
        return await with_retries(
            self.retry,
            fn,
            provider=PROVIDER,
            operation=operation,
            max_retry_after_s=self.retry.deadline_s,
        )

    def raise_for(self, resp: HTTPResponse) -> None:
        if resp.status >= 400:
            raise ProviderError(
                gh.error_message(resp.body, resp.status),
                provider=PROVIDER,
                upstream_status=resp.status,
            )

    async def request(
        self,
        method: str,
        path: str,
        *,
        headers: Mapping[str, str] | None = None,
        json_body: Any = None,
        params: Mapping[str, str] | None = None,
        allow_redirects: bool = True,
    ) -> HTTPResponse:
        """One API call: auth and version headers, rate-limit bookkeeping; 5xx and
        transport failures raise `ProviderUnavailable` marked ``ambiguous``; rate
        limits raise it with ``retry_after_s``. Other statuses are returned. With a
        GitHub App, a 401 (the installation token expired or was revoked) fetches a
        new token once and sends the request once more."""
        now = time.time()
        if now < self.blocked_until:
            raise ProviderUnavailable(
                "GitHub rate limit: waiting for the reset",
                provider=PROVIDER,
                retry_after_s=self.blocked_until - now,
            )
        url = path if path.startswith("http") else self.cfg.api_url.rstrip("/") + path
        send = {
            "Accept": "application/vnd.github+json",
            "X-GitHub-Api-Version": self.cfg.api_version,
            "User-Agent": "egw",
        }
        token = await self.app.token() if self.app is not None else self.cfg.token
        send.update(headers or {})

        async def send_once(token: str | None) -> HTTPResponse:
            if token:
                send["Authorization"] = f"Bearer {token}"
            try:
                return await http_request(
                    self.session,
                    method,
                    url,
                    provider=PROVIDER,
                    headers=send,
                    json_body=json_body,
                    params=params,
                    timeout_s=self.cfg.request_timeout_s,
                    allow_redirects=allow_redirects,
                    circuit=self.circuit,
                )
            except CircuitOpen:
                raise  # refused before anything was sent: not ambiguous
            except ProviderUnavailable as exc:
                exc.details["ambiguous"] = True
                raise

        resp = await send_once(token)
        if resp.status == 401 and self.app is not None:
            log.info("github_token_refused", path=path.split("?", 1)[0])
            resp = await send_once(await self.app.refresh(stale=token))
        self.rate = gh.parse_rate_limit(resp.headers) or self.rate
        message = gh.error_message(resp.body, resp.status) if resp.status >= 400 else ""
        wait = gh.rate_limit_wait(
            resp.status, resp.headers, message, now=time.time(), attempt=self._rate_strikes + 1
        )
        if wait is not None:
            self._rate_strikes += 1
            self.blocked_until = time.time() + wait
            log.warning("github_rate_limited", status=resp.status, wait_s=wait, message=message)
            raise ProviderUnavailable(
                f"GitHub rate limit: {message}",
                provider=PROVIDER,
                upstream_status=resp.status,
                retry_after_s=wait,
            )
        if resp.status < 400:
            self._rate_strikes = 0
        if resp.status >= 500:
            raise ProviderUnavailable(
                message,
                provider=PROVIDER,
                upstream_status=resp.status,
                details={"ambiguous": True},
            )
        return resp

    async def get_blob(self, url: str) -> HTTPResponse:
        """A signed download URL (a job's log): no token, as it may be another host."""
        resp = await http_request(
            self.session,
            "GET",
            url,
            provider=PROVIDER,
            timeout_s=self.cfg.request_timeout_s,
            circuit=self.circuit,
        )
        if resp.status >= 500:
            raise ProviderUnavailable(
                "log download failed", provider=PROVIDER, upstream_status=resp.status
            )
        return resp
