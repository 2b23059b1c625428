"""The audit query: ``GET /v1/events`` as JSON (without ``Accept: text/event-stream``).

Who may see what: the scope ``tasks:read`` answers with the events the token's own actor
caused (its submits, reruns, cancels); other actors' events, and the events no actor
caused (upstream reports, timeouts), need ``admin``. A token without it that names
another ``actor`` gets a 403 rather than a silently empty page. Whatever the scope, only
events of the namespaces the token may read are answered (`egw.core.access`).
"""

from __future__ import annotations

import re
from datetime import UTC, datetime

from aiohttp import web

from egw.core.audit import EventFilter
from egw.errors import Forbidden, InvalidRequest
from egw.web import schemas
from egw.web.edge import principal
from egw.web.keys import reads_key

#: an event kind: ``submitted``, ``cancel_requested``, ``github.job``...
_KIND = re.compile(r"[a-z][a-z0-9_.]{0,63}")
MAX_KINDS = 20
#: RFC 3339 ``date-time`` (section 5.6): a full date, ``T``, a time and an offset
_RFC3339 = re.compile(
    r"(\d{4})-(\d{2})-(\d{2})[Tt](\d{2}):(\d{2}):(\d{2})(\.\d{1,9})?([Zz]|[+-]\d{2}:\d{2})",
    re.ASCII,
)


def instant_query(request: web.Request, name: str) -> datetime | None:
    """An RFC 3339 date-time query parameter, in UTC; anything else is a 400."""
    raw = request.query.get(name)
    if raw is None:
        return None
    m = _RFC3339.fullmatch(raw)
    when = None
    if m is not None:
        text = raw.upper()
        if m.group(6) == "60":  # a leap second: the instant is within 23:59:59
            text = text[: m.start(6)] + "59" + text[m.end(6) :]
        try:
            when = datetime.fromisoformat(text.replace("Z", "+00:00"))
        except ValueError:
            when = None
    if when is None:
        raise InvalidRequest(
            f"{name} must be an RFC 3339 date-time, e.g. 2026-11-27T18:55:00Z", field=name
        )
    try:
        return when.astimezone(UTC)
    except OverflowError:  # year 1 east of UTC, or 9999 west of it: before or after any event
        return (
            datetime.min.replace(tzinfo=UTC) if when.year == 1 else datetime.max.replace(tzinfo=UTC)
        )


def kinds_query(request: web.Request) -> tuple[str, ...]:
    """``type``, repeated for several (as ``status`` on ``GET /v1/tasks``)."""
    kinds = request.query.getall("type", [])
    for kind in kinds:
        if not _KIND.fullmatch(kind):
            raise InvalidRequest(f"unknown event type {kind[:80]!r}", field="type")
    if len(kinds) > MAX_KINDS:
        raise InvalidRequest(f"at most {MAX_KINDS} types", field="type")
    return tuple(dict.fromkeys(kinds))


async def audit_page(request: web.Request) -> web.Response:
    who = principal(request)
    actor = request.query.get("actor") or None
    if "admin" not in who.scopes:
        if actor is not None and actor != who.name:
            raise Forbidden(
                f"token {who.name!r} may read only its own events: another actor's need the"
                " scope 'admin'",
                details={"scope": "admin"},
            )
        actor = who.name
    where = EventFilter(
        actor=actor,
        kinds=kinds_query(request),
        provider=request.query.get("provider") or None,
        task_id=request.query.get("task_id") or None,
        since=instant_query(request, "since"),
        until=instant_query(request, "until"),
    )
    limit = schemas.int_query(request, "limit", default=50, lo=1, hi=500)
    after = schemas.last_event_id(request, query="after") or 0
    page = await request.app[reads_key].audit(
        after=after, where=where, limit=limit, scope=who.reads()
    )
    return web.json_response(
        {
            "events": [e.to_json() for e in page.events],
            "next_after": page.next_after,
            "last_seq": page.last_seq,
            "pruned_seq": page.pruned_seq,
        }
    )
