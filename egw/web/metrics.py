"""``GET /metrics``: Prometheus exposition (default on; token only if ``metrics.require_token``)."""

from __future__ import annotations

from aiohttp import web

from egw.metrics import CONTENT_TYPE
from egw.web.keys import (
    auth_key,
    circuits_key,
    config_key,
    database_key,
    metrics_key,
    reads_key,
    service_key,
    ticker_key,
)

routes = web.RouteTableDef()


@routes.get("/metrics")
async def metrics(request: web.Request) -> web.Response:
    app = request.app
    if app[config_key].metrics.require_token:
        app[auth_key].authenticate(request.headers.get("Authorization"))
    service = app[service_key]
    health = {}
    for name, provider in service.providers.items():
        try:
            health[name] = dict(provider.health())
        except Exception:  # noqa: BLE001 - a provider's health must not break the scrape
            health[name] = {}
    cfg = app[config_key]
    by_namespace = None
    if cfg.metrics.namespace_label:
        declared = {"default", *cfg.namespaces}
        by_namespace = await app[reads_key].counts_by_namespace(declared)
    body = app[metrics_key].render(
        tasks_by_namespace=by_namespace,
        tasks_by_status=await app[reads_key].counts_by_status(),
        tasks_stuck=await app[reads_key].stuck_counts(),
        health=health,
        sse_connections=app[ticker_key].stream_count(),
        storage=service.storage(),
        replication=await app[database_key].replication(),
        circuits=app[circuits_key].health(),
    )
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE})
