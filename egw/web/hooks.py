"""``POST /v1/webhooks/{source}``: signed deliveries from upstreams (no bearer token)."""

from __future__ import annotations

from aiohttp import web

from egw.errors import NotFound
from egw.web.keys import service_key

routes = web.RouteTableDef()


@routes.post("/v1/webhooks/{source}")
async def webhook(request: web.Request) -> web.Response:
    source = request.match_info["source"]
    for provider in request.app[service_key].providers.values():
        if provider.webhook_source == source:
            # the signature covers the exact bytes: read them raw, parse nothing first
            body = await request.read()
            result = await provider.handle_webhook(request.headers, body)
            return web.json_response(dict(result.body), status=result.status)
    raise NotFound(f"no enabled provider takes webhooks from {source!r}", details={"source": source})
