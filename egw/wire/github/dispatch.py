"""Starting a workflow run (pure): the create-workflow-dispatch body, its answer, GitHub's errors.

The 2022-11-28 API returns the run's id when asked (``return_run_details``);
2026-03-10 always does; an older Enterprise Server refuses the field, and egw
then finds the run by the correlation id it passed as an input.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final

from egw.errors import ProviderError
from egw.wire.github.spec import GitHubSpec
from egw.wire.github.values import as_int, as_str

PROVIDER: Final = "github_actions"
API_VERSIONS: Final = ("2022-11-28", "2026-03-10")


def correlation_id(idempotency_key: str) -> str:
    """The unique id egw passes in the correlation input (and looks for in run-name)."""
    safe = re.sub(r"[^A-Za-z0-9_-]", "-", idempotency_key)[:80]
    return f"egw-{safe}"


def dispatch_body(
    spec: GitHubSpec,
    *,
    api_version: str,
    return_run_details: bool,
    correlation: str | None,
) -> dict[str, Any]:
    """The create-workflow-dispatch body. ``return_run_details`` exists only in
    2022-11-28; under 2026-03-10 the answer is always 200 with the run details
    (breaking-changes-2026-03-10.json removes the field)."""
    inputs = dict(spec.inputs)
    name = spec.correlation_input
    if name and correlation:
        inputs[name] = correlation
    body: dict[str, Any] = {"ref": spec.ref}
    if inputs:
        body["inputs"] = inputs
    if return_run_details and api_version == "2022-11-28":
        body["return_run_details"] = True
    return body


@dataclass(frozen=True, slots=True)
class DispatchResult:
    """``run_id`` is None for a 204 (no run details)."""

    run_id: int | None
    run_url: str | None = None
    html_url: str | None = None


def parse_dispatch_response(status: int, body: bytes) -> DispatchResult:
    if status == 204:
        return DispatchResult(None)
    if status == 200:
        try:
            data = json.loads(body) if body else {}
        except ValueError:
            data = None
        if isinstance(data, Mapping):
            run_id = as_int(data.get("workflow_run_id"))
            if run_id is not None:
                return DispatchResult(
                    run_id, as_str(data.get("run_url")), as_str(data.get("html_url"))
                )
        if not body:
            return DispatchResult(None)
        raise ProviderError(
            "GitHub answered the dispatch with 200 but no workflow_run_id",
            provider=PROVIDER,
            upstream_status=status,
        )
    raise ProviderError(
        f"unexpected dispatch answer {status}", provider=PROVIDER, upstream_status=status
    )


def rejects_run_details(status: int, message: str) -> bool:
    """An older Enterprise Server refusing ``return_run_details`` (400 or 422 naming it;
    cli/cli#12672, github/gh-aw#19414)."""
    return status in (400, 422) and "return_run_details" in message


def error_message(body: bytes, status: int) -> str:
    """GitHub's own message from a ``basic-error`` body (or the start of the raw text)."""
    try:
        data = json.loads(body)
    except ValueError:
        data = None
    if isinstance(data, Mapping) and isinstance(data.get("message"), str):
        message = str(data["message"])
        errors = data.get("errors")
        if isinstance(errors, list) and errors:
            message += " " + json.dumps(errors)[:500]
        return message
    text = body.decode("utf-8", "replace").strip()[:500]
    return text or f"HTTP {status}"
