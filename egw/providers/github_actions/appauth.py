"""GitHub App authentication: an RS256 JWT exchanged for installation tokens, kept fresh.

Theory of operation
-------------------
GitHub documents the flow ("Generating a JSON Web Token (JWT) for a GitHub App" and
"Generating an installation access token for a GitHub App", docs.github.com/en/apps/
creating-github-apps/authenticating-with-a-github-app/):

* The app signs a JWT with its private key, RS256, claims ``iss`` (the App ID), ``iat``
  ("set this 60 seconds in the past" against clock drift) and ``exp`` ("no more than 10
  minutes into the future"). We send ``exp`` 9 minutes ahead: a gateway whose clock runs a
  little fast is still inside GitHub's 10 minutes, and the JWT is used at once anyway.
* ``POST /app/installations/{installation_id}/access_tokens`` with ``Authorization:
  Bearer <JWT>`` answers 201 ``{"token", "expires_at", "permissions", ...}``
  (operation ``apps/create-installation-access-token``). The token lasts one hour;
  "using an expired token produces a status code of 401".

`InstallationToken` caches the token and fetches a new one before it expires: a quarter
of its lifetime early, at most 5 minutes (the deadline is kept on the monotonic clock,
from the lifetime measured when the token arrived). One lock makes it single-flight: of
many calls that find the token due (or refused), one exchanges and the others take its
result. ``refresh(stale=...)`` is what a 401 calls: it exchanges only if the token that
was refused is still the current one.
"""

from __future__ import annotations

import asyncio
import time
from datetime import datetime

import aiohttp
import jwt
import structlog
from cryptography.hazmat.primitives.asymmetric.rsa import RSAPrivateKey

from egw.config import GitHubActionsConfig, GitHubAppConfig
from egw.errors import ProviderError, ProviderUnavailable
from egw.providers.circuit import Breakers
from egw.providers.http import current_operation, http_request
from egw.wire import github as gh

log = structlog.get_logger("egw.providers.github_actions")

PROVIDER = "github_actions"
#: GitHub's advice: iat 60 s in the past
JWT_BACKDATE_S = 60
#: exp this far ahead of now: under GitHub's 10 minutes with a minute to spare
JWT_AHEAD_S = 540
#: refresh a token this share of its lifetime before it expires...
REFRESH_SHARE = 0.25
#: ...but never earlier than this (a one-hour token is refreshed 5 minutes early)
REFRESH_EARLY_MAX_S = 300.0


def app_jwt(app: GitHubAppConfig, key: RSAPrivateKey, now: float | None = None) -> str:
    """The JWT that authenticates as the app itself (only for the token exchange)."""
    issued = int(time.time() if now is None else now)
    claims = {"iat": issued - JWT_BACKDATE_S, "exp": issued + JWT_AHEAD_S, "iss": app.app_id}
    return jwt.encode(claims, key, algorithm="RS256")


class InstallationToken:
    """The installation token of one app installation, cached and refreshed single-flight."""

    def __init__(
        self,
        cfg: GitHubActionsConfig,
        session: aiohttp.ClientSession,
        circuit: Breakers | None = None,
    ) -> None:
        assert cfg.app is not None
        self.cfg = cfg
        #: the API host's breakers: the exchange is one more call to that host
        self.circuit = circuit
        self.app = cfg.app
        self.key = cfg.app.load_private_key()
        self.session = session
        self._token: str | None = None
        self._refresh_at = 0.0  # monotonic
        self.expires_at: str | None = None  # as GitHub wrote it
        self._lock = asyncio.Lock()

    def _due(self) -> bool:
        return self._token is None or time.monotonic() >= self._refresh_at

    async def token(self) -> str:
        """The current installation token, fetched first if none or about to expire."""
        if not self._due():
            assert self._token is not None
            return self._token
        return await self.refresh(stale=None)

    async def refresh(self, *, stale: str | None) -> str:
        """A fresh token unless another call already replaced ``stale`` (the token a 401
        refused, or None when the cached one is due); one exchange at a time."""
        async with self._lock:
            current = self._token
            if current is not None and current != stale and not self._due():
                return current
            return await self._exchange()

    async def _exchange(self) -> str:
        path = f"/app/installations/{self.app.installation_id}/access_tokens"
        url = self.cfg.api_url.rstrip("/") + path
        headers = {
            "Accept": "application/vnd.github+json",
            "X-GitHub-Api-Version": self.cfg.api_version,
            "User-Agent": "egw",
            "Authorization": f"Bearer {app_jwt(self.app, self.key)}",
        }
        # counted apart in egw_upstream_requests_total{operation="app_token"}, not as a
        # part of the call that found the token due
        label = current_operation.set("app_token")
        try:
            resp = await http_request(
                self.session,
                "POST",
                url,
                provider=PROVIDER,
                headers=headers,
                timeout_s=self.cfg.request_timeout_s,
                circuit=self.circuit,
            )
        finally:
            current_operation.reset(label)
        if resp.status >= 500 or resp.status == 429:
            raise ProviderUnavailable(
                f"GitHub App token: {gh.error_message(resp.body, resp.status)}",
                provider=PROVIDER,
                upstream_status=resp.status,
            )
        if resp.status != 201:
            # a refused JWT (wrong key, App ID or clock), a wrong installation: say which
            message = gh.error_message(resp.body, resp.status)
            log.error("github_app_token_refused", status=resp.status, message=message)
            raise ProviderError(
                f"GitHub App token refused for installation {self.app.installation_id}: {message}",
                provider=PROVIDER,
                upstream_status=resp.status,
            )
        try:
            body = resp.json()
            token, expires_at = body["token"], body["expires_at"]
            expires = datetime.fromisoformat(expires_at).timestamp()
        except (ValueError, KeyError, TypeError) as exc:
            raise ProviderError(
                "GitHub App token: an answer without token and expires_at",
                provider=PROVIDER,
                upstream_status=resp.status,
            ) from exc
        if not isinstance(token, str) or not token:
            raise ProviderError("GitHub App token: an empty token", provider=PROVIDER)
        lifetime = max(0.0, expires - time.time())
        early = min(REFRESH_EARLY_MAX_S, lifetime * REFRESH_SHARE)
        self._token, self.expires_at = token, expires_at
        self._refresh_at = time.monotonic() + lifetime - early
        log.info("github_app_token", expires_at=expires_at, refresh_in_s=round(lifetime - early))
        return token
