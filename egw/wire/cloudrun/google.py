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
    #: the IAM permission a 403 names in its ErrorInfo (``metadata.permission``), if it does
    permission: str | None = None


#: what each call egw makes needs: (IAM permission, the smallest predefined role holding it).
#: Permissions: "Authorization requires the following IAM permission" on each method's REST
#: reference page and https://cloud.google.com/run/docs/reference/iam/permissions; roles:
#: https://cloud.google.com/run/docs/execute/jobs ("Required roles": Cloud Run Invoker executes
#: a job; Cloud Run Developer is needed to override job configurations or to cancel executions)
#: and https://cloud.google.com/run/docs/reference/iam/roles. Every egw submit carries a
#: container override (``EGW_TASK_ID``), so it needs run.jobs.runWithOverrides, not only
#: run.jobs.run: Cloud Run Invoker is not enough.
REQUIRED_PERMISSIONS: dict[str, tuple[str, str]] = {
    "jobs.run": ("run.jobs.runWithOverrides", "Cloud Run Developer (roles/run.developer)"),
    "executions.list": ("run.executions.list", "Cloud Run Viewer (roles/run.viewer)"),
    "executions.get": ("run.executions.get", "Cloud Run Viewer (roles/run.viewer)"),
    "tasks.list": ("run.tasks.list", "Cloud Run Viewer (roles/run.viewer)"),
    "executions.cancel": ("run.executions.cancel", "Cloud Run Developer (roles/run.developer)"),
    "logging.entries.list": (
        "logging.logEntries.list",
        "Logs Viewer (roles/logging.viewer)",
    ),
}


def permission_hint(operation: str, err: GoogleError) -> str:
    """What to grant after a 403 on ``operation``: the permission upstream named (or else the one
    the call needs) and the predefined role that holds what the call needs."""
    needed, role = REQUIRED_PERMISSIONS.get(operation, (None, None))
    permission = err.permission or needed
    if permission is None:
        return "the caller lacks an IAM permission for this call"
    hint = f"the caller lacks the IAM permission {permission}"
    if operation == "jobs.run":
        hint += (
            "; egw's submits carry container overrides (EGW_TASK_ID), which need"
            " run.jobs.runWithOverrides: Cloud Run Invoker only allows a plain run"
        )
    if role is not None:
        hint += f"; grant {role} or another role holding {needed}"
    return hint


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
            _permission(err.get("details")),
        )
    except (ValueError, KeyError, TypeError, AttributeError):
        text = body.decode("utf-8", "replace").strip()
        return GoogleError(
            http_status,
            f"HTTP {http_status}",
            text[:200] if text else f"HTTP {http_status} with no body",
        )


def _permission(details: Any) -> str | None:
    """``metadata.permission`` of a google.rpc.ErrorInfo in an error's ``details`` (AIP-193)."""
    for detail in details if isinstance(details, list) else ():
        if isinstance(detail, dict) and str(detail.get("@type", "")).endswith("rpc.ErrorInfo"):
            value = (detail.get("metadata") or {}).get("permission")
            if isinstance(value, str) and value:
                return value
    return None
