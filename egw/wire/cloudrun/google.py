"""What Cloud Run Admin v2 and Cloud Logging v2 share: the OAuth scope, google.rpc codes, errors."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

#: OAuth scope for both APIs (discovery documents, ``auth`` section)
SCOPE = "https://www.googleapis.com/auth/cloud-platform"

#: google.rpc.Code numbers -> names (googleapis google/rpc/code.proto)
_CODES = {
    0: "OK",
    1: "CANCELLED",
    2: "UNKNOWN",
    3: "INVALID_ARGUMENT",
    4: "DEADLINE_EXCEEDED",
    5: "NOT_FOUND",
    6: "ALREADY_EXISTS",
    7: "PERMISSION_DENIED",
    8: "RESOURCE_EXHAUSTED",
    9: "FAILED_PRECONDITION",
    10: "ABORTED",
    11: "OUT_OF_RANGE",
    12: "UNIMPLEMENTED",
    13: "INTERNAL",
    14: "UNAVAILABLE",
    15: "DATA_LOSS",
    16: "UNAUTHENTICATED",
}


def code_name(code: Any) -> str:
    """A google.rpc code's name (``9`` -> ``FAILED_PRECONDITION``)."""
    return _CODES.get(code, str(code)) if isinstance(code, int) else str(code or "UNKNOWN")


@dataclass(frozen=True, slots=True)
class GoogleError:
    http_status: int
    status: str
    message: str


def parse_error(http_status: int, body: bytes) -> GoogleError:
    """Read an AIP-193 error body ``{"error": {"code", "message", "status", "details"}}``;
    anything else (an HTML page from a proxy) becomes a short plain message."""
    try:
        data = json.loads(body)
        err = data["error"]
        return GoogleError(
            http_status,
            str(err.get("status") or code_name(err.get("code"))),
            str(err.get("message") or "").strip() or f"HTTP {http_status}",
        )
    except (ValueError, KeyError, TypeError, AttributeError):
        text = body.decode("utf-8", "replace").strip()
        return GoogleError(
            http_status,
            f"HTTP {http_status}",
            text[:200] if text else f"HTTP {http_status} with no body",
        )
