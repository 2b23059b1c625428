"""``GET /v1/gateway/events``: the gateway's own events (circuit breakers' moves), paged."""

from __future__ import annotations

from aiohttp import web

from egw.web import schemas
from egw.web.edge import principal
from egw.web.keys import gateway_key

routes = web.RouteTableDef()


@routes.get("/v1/gateway/events")
async def gateway_events(request: web.Request) -> web.Response:
    """Oldest first after ``after`` (a ``seq``); ``next_after`` is the last one returned,
    to pass as ``after`` for the next page (the same value when there was none)."""
    principal(request).require("tasks:read")
    after = schemas.int_query(request, "after", default=0, lo=0, hi=schemas.MAX_CURSOR)
    limit = schemas.int_query(request, "limit", default=100, lo=1, hi=1000)
    events = await request.app[gateway_key].events(after=after, limit=limit)
    body = {
        "events": [e.to_json() for e in events],
        "next_after": events[-1].seq if events else after,
    }
    return web.json_response(body)
