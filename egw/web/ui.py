"""The web console: ``/`` redirects to ``/ui/``, which serves the console's static files;
``GET /v1/whoami`` tells it which scopes its token has.

The files (``egw/web/console/``: one HTML shell, ES modules, a stylesheet) ship in the
package and are read once. They load without a token: they hold no data. Every data
call the console makes goes to ``/v1`` with ``Authorization: Bearer``, read from the
browser's ``sessionStorage``; no cookie is ever set, so no request is ambient.

Every answer here carries headers that keep the page to itself: a Content-Security-Policy
allowing only this origin's scripts, styles and connections (no inline script or style,
no framing), ``nosniff``, and no ``Referer`` (a task's page must not leak its URL).
"""

from __future__ import annotations

from functools import cache
from importlib import resources

from aiohttp import web

from egw.errors import NotFound
from egw.web.edge import principal

routes = web.RouteTableDef()

CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self'; "
    "connect-src 'self'; object-src 'none'; base-uri 'none'; form-action 'none'; "
    "frame-ancestors 'none'"
)
SECURITY_HEADERS = {
    "Content-Security-Policy": CSP,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
    "Cross-Origin-Opener-Policy": "same-origin",
}
_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".svg": "image/svg+xml",
    ".txt": "text/plain; charset=utf-8",
}


@cache
def _files() -> dict[str, bytes]:
    """Every file of the console by name (a flat folder: nothing else can be asked for)."""
    folder = resources.files("egw.web").joinpath("console")
    return {
        entry.name: entry.read_bytes()
        for entry in folder.iterdir()
        if entry.is_file() and any(entry.name.endswith(ext) for ext in _TYPES)
    }


def _file(name: str) -> web.Response:
    body = _files().get(name)
    if body is None:
        raise NotFound(f"the console has no file {name!r}", details={"file": name[:200]})
    content_type = _TYPES[name[name.rfind(".") :]]
    headers = {**SECURITY_HEADERS, "Content-Type": content_type, "Cache-Control": "no-cache"}
    return web.Response(body=body, headers=headers)


@routes.get("/")
async def root(request: web.Request) -> web.Response:
    return web.Response(status=302, headers={**SECURITY_HEADERS, "Location": "/ui/"})


@routes.get("/ui/")
async def shell(request: web.Request) -> web.Response:
    """The HTML shell; the console routes its pages after ``#`` so every page is this file."""
    return _file("index.html")


@routes.get("/ui/{file}")
async def asset(request: web.Request) -> web.Response:
    return _file(request.match_info["file"])


@routes.get("/v1/whoami")
async def whoami(request: web.Request) -> web.Response:
    """The token's name, scopes and namespaces (any valid token): what the console may offer
    its user."""
    who = principal(request)
    spaces = {ns: sorted(g.actions) for ns, g in who.access.grants.items()}
    return web.json_response({"name": who.name, "scopes": sorted(who.scopes), "namespaces": spaces})
