"""``POST /v1/webhooks/{source}``: signed deliveries from upstreams (no bearer token)."""

from __future__ import annotations

from typing import Any, assert_never, cast

import orjson
from aiohttp import web

from egw.errors import EgwError, NotFound
from egw.providers.base import Delivery, WebhookOutcome, WebhookProvider
from egw.web.keys import metrics_key, service_key

routes = web.RouteTableDef()


@routes.post("/v1/webhooks/{source}")
async def webhook(request: web.Request) -> web.Response:
    source = request.match_info["source"]
    for candidate in request.app[service_key].providers.values():
        # by the protocol's attribute, not isinstance(): a check against a runtime Protocol
        # inspects the class on every call, a fifth of a delivery's cost (bench "webhooks")
        if getattr(candidate, "webhook_source", None) == source:
            provider = cast(WebhookProvider, candidate)
            break
    else:
        raise NotFound(
            f"no enabled provider takes webhooks from {source!r}", details={"source": source}
        )
    # the signature covers the exact bytes: read them raw, parse nothing first
    body = await request.read()
    try:
        outcome = await provider.handle_webhook(request.headers, body)
    except EgwError as exc:  # refused: the edge renders the error
        _count(request, source, _refusal(exc.status))
        raise
    _count(request, source, outcome.delivery.value)
    return render(outcome)


def render(outcome: WebhookOutcome) -> web.Response:
    """The HTTP answer to a delivery the provider took (or chose to ignore)."""
    body: dict[str, Any]
    match outcome.delivery:
        case Delivery.ACCEPTED:
            body, status = {"ok": True, "task_id": outcome.task_id}, 200
        case Delivery.DUPLICATE:
            body, status = {"ok": True, "duplicate": True}, 200
        case Delivery.IGNORED:
            body, status = {"ignored": outcome.detail}, 202
            if outcome.held:
                body["held"] = True
        case Delivery.PONG:
            body, status = {"ok": True, "zen": outcome.detail}, 200
        case _:
            assert_never(outcome.delivery)
    # orjson: the stdlib encoder was 3% of a foreign delivery (bench "webhooks")
    return web.Response(body=orjson.dumps(body), status=status, content_type="application/json")


def _refusal(status: int) -> str:
    """The metric label of a refused delivery."""
    if status == 401:
        return "bad_signature"
    if status == 400:
        return "malformed"
    return "rejected"


def _count(request: web.Request, source: str, result: str) -> None:
    metrics = request.app.get(metrics_key)
    if metrics is not None:
        metrics.webhook(source, result)
