"""A GitHub App for the simulator: it checks the app's JWTs and issues installation tokens.

What GitHub documents, and what the simulator does:

* "Generating a JSON Web Token (JWT) for a GitHub App" (docs.github.com/en/apps/
  creating-github-apps/authenticating-with-a-github-app/generating-a-json-web-token-jwt-for-a-github-app):
  RS256 only; ``iss`` the App ID (or, lately, the client ID) "used to find the right public
  key"; ``iat`` in the past (clients set it 60 s back against drift); ``exp`` "no more
  than 10 minutes into the future". The simulator verifies the signature against the
  app's public key and each claim, with no leeway.
* The answers to a refused JWT are GitHub's ``basic-error`` 401s. GitHub's source is not
  public; the messages are the ones clients record: "A JSON web token could not be
  decoded" for a bad signature, a malformed token, or an App ID and key of different apps
  (backstage/backstage#12887, actions/create-github-app-token#153,
  hyperlocalise/hyperlocalise#735); "'Expiration time' claim ('exp') is too far in the
  future" (octokit/auth-app.js#698, actions/create-github-app-token#178); the ``iat`` and
  expired-``exp`` messages as octokit/auth-app.js reproduces them in its tests
  (test/index.test.ts), and as sigmavirus24/github3.py#1050 reports the latter.
* ``POST /app/installations/{installation_id}/access_tokens`` (operation
  ``apps/create-installation-access-token``, github/rest-api-description) answers 201
  ``installation-token``: ``token``, ``expires_at``, ``permissions``,
  ``repository_selection``; 404 for an installation the app does not have. "Installation
  tokens expire one hour from the time you create them. Using an expired token produces a
  status code of 401" (the operation's description): the simulator answers ``Bad
  credentials`` as for any unknown token. Tokens start with ``ghs_`` (GitHub's token
  prefixes, "Behind GitHub's new authentication token formats", 2021).

``token_lifetime_s`` (real seconds, not the simulated clock: the gateway reads the wall
clock) shortens tokens for tests; ``clock_offset_s`` sets GitHub's clock ahead of (or
behind) the gateway's; ``revoke_tokens()`` plays ``DELETE /installation/token``.
"""

from __future__ import annotations

import math
import secrets
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import jwt
from aiohttp import web
from cryptography.hazmat.primitives.asymmetric.rsa import RSAPublicKey

from egw.testing.github.rest import error

UNDECODABLE = "A JSON web token could not be decoded"
IAT = (
    "'Issued at' claim ('iat') must be an Integer representing the time that the assertion "
    "was issued."
)
EXPIRED = (
    "'Expiration time' claim ('exp') must be a numeric value representing the future time "
    "at which the assertion expires."
)
TOO_FAR = "'Expiration time' claim ('exp') is too far in the future"
#: GitHub's limit on ``exp``: at most 10 minutes ahead
MAX_AHEAD_S = 600


@dataclass
class SimApp:
    """One GitHub App with one installation, known by its public key."""

    app_id: str
    installation_id: int
    public_key: RSAPublicKey
    client_id: str | None = None
    token_lifetime_s: float = 3600.0
    #: how far GitHub's clock runs ahead of the gateway's (negative: behind), seconds
    clock_offset_s: float = 0.0
    #: live tokens and when each expires (epoch seconds, as ``expires_at`` says)
    tokens: dict[str, int] = field(default_factory=dict)
    #: every token issued, in order
    issued: list[str] = field(default_factory=list)
    #: every refusal of the token endpoint, as (status, message)
    refusals: list[tuple[int, str]] = field(default_factory=list)

    def check_jwt(self, authorization: str, now: float | None = None) -> str | None:
        """Why GitHub would refuse this ``Authorization`` header's JWT, or None."""
        scheme, _, token = authorization.partition(" ")
        if scheme.lower() != "bearer" or not token:
            return UNDECODABLE
        try:
            claims: dict[str, Any] = jwt.decode(
                token,
                self.public_key,
                algorithms=["RS256"],
                options={"verify_exp": False, "verify_iat": False, "verify_nbf": False},
            )
        except jwt.PyJWTError:
            return UNDECODABLE
        if str(claims.get("iss")) not in {self.app_id, self.client_id or self.app_id}:
            return UNDECODABLE  # another app's ID: its key would not verify this signature
        at = int(self.now() if now is None else now)
        iat, exp = claims.get("iat"), claims.get("exp")
        if not isinstance(iat, int) or isinstance(iat, bool) or iat > at:
            return IAT
        if not isinstance(exp, int) or isinstance(exp, bool) or exp <= at:
            return EXPIRED
        if exp > at + MAX_AHEAD_S:
            return TOO_FAR
        return None

    def now(self) -> float:
        """GitHub's clock."""
        return time.time() + self.clock_offset_s

    def valid(self, token: str) -> bool:
        expires = self.tokens.get(token)
        return expires is not None and self.now() < expires

    def revoke_tokens(self) -> None:
        self.tokens.clear()

    async def access_tokens(self, request: web.Request) -> web.Response:
        problem = self.check_jwt(request.headers.get("Authorization", ""))
        if problem is not None:
            self.refusals.append((401, problem))
            return error(401, problem)
        if request.match_info["installation_id"] != str(self.installation_id):
            self.refusals.append((404, "Not Found"))
            return error(404, "Not Found")
        token = "ghs_" + secrets.token_urlsafe(27)[:36]
        expires = math.ceil(self.now() + self.token_lifetime_s)  # whole seconds, as GitHub
        self.tokens[token] = expires
        self.issued.append(token)
        body = {
            "token": token,
            "expires_at": datetime.fromtimestamp(expires, UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
            "permissions": {"actions": "write", "contents": "read", "metadata": "read"},
            "repository_selection": "all",
        }
        return web.json_response(body, status=201)
