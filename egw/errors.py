"""The one error tree of egw; each error knows its HTTP status and its code.

    EgwError (500, "internal")
    ├── InvalidRequest (400, "invalid_request")      a malformed body, field or query
    ├── Unauthorized (401, "unauthorized")           no/bad bearer token, bad webhook signature
    ├── Forbidden (403, "forbidden")                 the token lacks the scope
    ├── NotFound (404, "not_found")
    ├── Conflict (409, "conflict")
    │   └── InvalidTransition (409, "invalid_transition")   e.g. cancelling a finished task
    ├── UnsupportedMediaType (415, "unsupported_media_type")
    ├── ProviderError (502, "provider_error")        the upstream said no; carries its message
    │   └── ProviderUnavailable (503, "provider_unavailable")  transient: retried at the seam
    │       └── CircuitOpen (503, "circuit_open")    the breaker toward that upstream is open
    ├── StoreError (503, "store_unavailable")        the database could not take a write
    │   └── StorageFull (503, "storage_full")        past storage.max_bytes: no new task
    └── ConfigError                                  `egw serve` exits 2 with its one line

aiohttp's own refusals (413 ``payload_too_large`` past ``server.max_body_bytes``,
405 ``method_not_allowed``) are rendered by the edge in the same shape.

The web edge (`egw.web.edge.Edge`) renders every EgwError as
``{"error": {"code", "message", "details"}}``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any


class EgwError(Exception):
    status: int = 500
    code: str = "internal"

    def __init__(self, message: str, *, details: Mapping[str, Any] | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.details: dict[str, Any] = dict(details or {})

    def to_json(self) -> dict[str, Any]:
        return {"error": {"code": self.code, "message": self.message, "details": self.details}}


class InvalidRequest(EgwError):
    status = 400
    code = "invalid_request"

    def __init__(
        self, message: str, *, field: str | None = None, details: Mapping[str, Any] | None = None
    ) -> None:
        merged = dict(details or {})
        if field is not None:
            merged["field"] = field
        super().__init__(message, details=merged)
        self.field = field


class Unauthorized(EgwError):
    status = 401
    code = "unauthorized"


class Forbidden(EgwError):
    status = 403
    code = "forbidden"


class NotFound(EgwError):
    status = 404
    code = "not_found"


class Conflict(EgwError):
    status = 409
    code = "conflict"


class InvalidTransition(Conflict):
    code = "invalid_transition"


class UnsupportedMediaType(EgwError):
    status = 415
    code = "unsupported_media_type"


class ProviderError(EgwError):
    """The upstream answered with an error; ``upstream_status`` is its HTTP status, if any."""

    status = 502
    code = "provider_error"

    def __init__(
        self,
        message: str,
        *,
        provider: str = "",
        upstream_status: int | None = None,
        details: Mapping[str, Any] | None = None,
    ) -> None:
        merged = dict(details or {})
        if provider:
            merged["provider"] = provider
        if upstream_status is not None:
            merged["upstream_status"] = upstream_status
        super().__init__(message, details=merged)
        self.provider = provider
        self.upstream_status = upstream_status


class ProviderUnavailable(ProviderError):
    """Transient upstream failure (connection error, timeout, 429, 5xx): safe to retry.

    ``retry_after_s`` carries the upstream's own hint (``Retry-After``), if it gave one.
    """

    status = 503
    code = "provider_unavailable"

    def __init__(
        self,
        message: str,
        *,
        provider: str = "",
        upstream_status: int | None = None,
        retry_after_s: float | None = None,
        details: Mapping[str, Any] | None = None,
    ) -> None:
        super().__init__(
            message, provider=provider, upstream_status=upstream_status, details=details
        )
        self.retry_after_s = retry_after_s


class CircuitOpen(ProviderUnavailable):
    """Refused without a call: the breaker toward ``target`` is open (see
    ``egw/core/circuit.py``); ``retry_after_s`` is the time until it lets a probe through."""

    code = "circuit_open"

    def __init__(self, message: str, *, provider: str, target: str, retry_after_s: float) -> None:
        super().__init__(
            message,
            provider=provider,
            retry_after_s=retry_after_s,
            details={"target": target, "retry_after_s": round(retry_after_s, 3)},
        )
        self.target = target


class StoreError(EgwError):
    status = 503
    code = "store_unavailable"


class StorageFull(StoreError):
    """The database's data is past ``storage.max_bytes``: no new task is accepted (the
    answer carries ``Retry-After``; the tasks already accepted run to their end)."""

    code = "storage_full"
    #: what a refused submit is told to wait before it tries again
    retry_after_s = 60.0


class ConfigError(EgwError):
    """A bad configuration; ``path`` is the dotted key path, e.g. ``tls.cert_file``."""

    code = "config_error"

    def __init__(self, path: str, problem: str) -> None:
        super().__init__(f"config: {path}: {problem}" if path else f"config: {problem}")
        self.path = path
        self.problem = problem
