"""``POST /v1/webhooks/{source}``: signed deliveries from upstreams (no bearer token)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from aiohttp import web

from egw.errors import EgwError, NotFound
from egw.providers.base import WebhookProvider
from egw.web.keys import metrics_key, service_key

routes = web.RouteTableDef()


@routes.post("/v1/webhooks/{source}")
async def webhook(request: web.Request) -> web.Response:
    source = request.match_info["source"]
    for provider in request.app[service_key].providers.values():
        if isinstance(provider, WebhookProvider) and provider.webhook_source == source:
            # the signature covers the exact bytes: read them raw, parse nothing first
            body = await request.read()
            try:
                result: Any = await provider.handle_webhook(request.headers, body)  # until typed
            except EgwError as exc:
                _count(request, source, exc.status, {})
                raise
            _count(request, source, result.status, result.body)
            return web.json_response(dict(result.body), status=result.status)
    raise NotFound(f"no enabled provider takes webhooks from {source!r}", details={"source": source})


def _count(request: web.Request, source: str, status: int, body: Mapping[str, Any]) -> None:
    metrics = request.app.get(metrics_key)
    if metrics is None:
        return
    if status == 401:
        result = "bad_signature"
    elif status == 400:
        result = "malformed"
    elif status >= 400:
        result = "rejected"
    else:
        # what the provider's answer says it did with the delivery
        if body.get("duplicate"):
            result = "duplicate"
        elif "ignored" in body:
            result = "ignored"
        elif "zen" in body:
            result = "pong"
        else:
            result = "accepted"
    metrics.webhook(source, result)
