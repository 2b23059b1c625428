"""GitHub's rate limits and pagination (pure).

The ``x-ratelimit-*`` headers, how long a limited answer asks to wait, the
``Link`` header's next page."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final

from egw.wire.github.values import as_int, header


@dataclass(frozen=True, slots=True)
class RateLimit:
    """The ``x-ratelimit-*`` headers of one response (reset is UTC epoch seconds)."""

    limit: int | None
    remaining: int | None
    used: int | None
    reset: int | None
    resource: str | None

    def to_json(self) -> dict[str, Any]:
        return {
            "limit": self.limit,
            "remaining": self.remaining,
            "used": self.used,
            "reset": self.reset,
            "resource": self.resource,
        }


def parse_rate_limit(headers: Mapping[str, str]) -> RateLimit | None:
    values = {
        name: header(headers, f"x-ratelimit-{name}")
        for name in ("limit", "remaining", "used", "reset", "resource")
    }
    if all(v is None for v in values.values()):
        return None
    return RateLimit(
        as_int(values["limit"]),
        as_int(values["remaining"]),
        as_int(values["used"]),
        as_int(values["reset"]),
        values["resource"],
    )


#: a secondary limit without hints: wait at least a minute, then back off exponentially
SECONDARY_WAIT_S: Final = 60.0
MAX_WAIT_S: Final = 3600.0


def rate_limit_wait(
    status: int, headers: Mapping[str, str], message: str, *, now: float, attempt: int = 1
) -> float | None:
    """Seconds to wait after a rate-limited response, or None if it is not one.

    tests/samples/github/NOTES.md (from GitHub's rate-limits-for-the-rest-api.md): primary
    limit = 403/429 with ``x-ratelimit-remaining: 0``, wait until ``x-ratelimit-reset``;
    secondary limit = 403/429 with a message: honour ``retry-after``, else the reset if
    remaining is 0, else at least one minute, growing exponentially with ``attempt``.
    A 403 that is neither (a permission error) is not a rate limit.
    """
    if status not in (403, 429):
        return None
    retry_after = header(headers, "retry-after")
    if retry_after is not None:
        try:
            return min(MAX_WAIT_S, max(0.0, float(retry_after)))
        except ValueError:
            pass
    limits = parse_rate_limit(headers)
    if limits is not None and limits.remaining == 0 and limits.reset is not None:
        return min(MAX_WAIT_S, max(1.0, limits.reset - now + 1.0))
    if status == 429 or "rate limit" in message.lower():
        return min(MAX_WAIT_S, SECONDARY_WAIT_S * float(2 ** max(0, attempt - 1)))
    return None


def next_link(link: str | None) -> str | None:
    """The ``rel="next"`` URL of a ``Link`` header (using-pagination-in-the-rest-api.md)."""
    for part in (link or "").split(","):
        match = re.match(r'\s*<([^>]*)>\s*;\s*rel="?next"?', part)
        if match:
            return match.group(1)
    return None
