"""``GET /v1/openapi.json``: the OpenAPI 3.1 contract the server is tested against (no token)."""

from __future__ import annotations

from functools import cache
from importlib import resources

from aiohttp import web

routes = web.RouteTableDef()


@cache
def openapi_bytes() -> bytes:
    return resources.files("egw.web").joinpath("openapi.json").read_bytes()


@routes.get("/v1/openapi.json")
async def openapi(request: web.Request) -> web.Response:
    return web.Response(body=openapi_bytes(), content_type="application/json")
