"""Bearer tokens: constant-time lookup by hash, scopes, namespaces (`egw.core.access`), and the
actor name for the audit trail."""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Iterable
from dataclasses import dataclass, field

from egw.config import TokenConfig
from egw.core.access import DEFAULT_ONLY, Access, Scope
from egw.errors import Forbidden, Unauthorized
from egw.service.namespaces import access_of


@dataclass(frozen=True, slots=True)
class Principal:
    name: str
    scopes: frozenset[str]
    #: the namespaces the token may use, and how
    access: Access = DEFAULT_ONLY
    #: ``access.scope("read")``, worked out once: every read asks for it (bench "http")
    read_scope: Scope = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "read_scope", self.access.scope("read"))

    def require(self, scope: str) -> None:
        if scope not in self.scopes and "admin" not in self.scopes:
            raise Forbidden(
                f"token {self.name!r} lacks the scope {scope!r}", details={"scope": scope}
            )

    def reads(self) -> Scope:
        """The namespaces this token may read (after the ``tasks:read`` scope is checked)."""
        self.require("tasks:read")
        return self.read_scope


class Authenticator:
    def __init__(self, tokens: Iterable[TokenConfig]) -> None:
        self._entries: list[tuple[bytes, Principal]] = []
        for t in tokens:
            if not t.configured:
                continue
            digest = t.sha256 if t.sha256 else hashlib.sha256((t.token or "").encode()).hexdigest()
            who = Principal(t.name, frozenset(t.scopes), access_of(t))
            self._entries.append((bytes.fromhex(digest), who))

    @property
    def configured(self) -> bool:
        return bool(self._entries)

    def authenticate(self, header: str | None) -> Principal:
        """The principal of an ``Authorization: Bearer <token>`` header, or Unauthorized."""
        if not header:
            raise Unauthorized("missing bearer token")
        scheme, _, token = header.partition(" ")
        token = token.strip()
        if scheme.lower() != "bearer" or not token:
            raise Unauthorized("the Authorization header must be 'Bearer <token>'")
        digest = hashlib.sha256(token.encode("utf-8", "surrogateescape")).digest()
        found: Principal | None = None
        # compare against every entry, always: the time taken does not tell which matched
        for expected, principal in self._entries:
            if hmac.compare_digest(digest, expected):
                found = principal
        if found is None:
            raise Unauthorized("invalid bearer token")
        return found
