"""The edge of every route: request id, bearer auth on /v1, errors as JSON, one log line, metrics.

It wraps each route's handler when the route is added (``Edge.routes``) rather
than being an aiohttp middleware. With any middleware at all, aiohttp wraps
every request in two more coroutines (the middleware and its own
``current_app`` fixer); on a cached ``GET /v1/tasks/{id}`` that wrapping cost
as much as everything egw does. What a middleware would also see, a request
target no route takes or a method a route does not take, is answered by a
last, catch-all resource (``Edge.add_catch_all``) that goes through the same
edge, so those answers too are JSON, logged, counted and carry ``X-Request-ID``.
"""

from __future__ import annotations

import itertools
import math
import re
import secrets
import time
from collections.abc import Awaitable, Callable, Iterable, Iterator
from contextvars import ContextVar
from typing import Any, NoReturn, TypeVar

import structlog
from aiohttp import hdrs, web
from aiohttp.http_exceptions import HttpProcessingError
from aiohttp.web_protocol import RequestPayloadError

from egw.errors import EgwError, InvalidRequest, Unauthorized
from egw.logconfig import log_request, request_id_var
from egw.metrics import HttpRequests
from egw.web.auth import Principal

log = structlog.get_logger("egw.http")

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
_R = TypeVar("_R", bound=web.StreamResponse)

#: The principal of the request being answered (the edge sets it, then resets it once
#: answered: an open event stream keeps neither it nor the memory it would take).
principal_var: ContextVar[Principal | None] = ContextVar("egw_principal", default=None)
_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")
_PUBLIC = ("/healthz", "/readyz", "/v1/webhooks/", "/metrics", "/v1/openapi.json")
_UNMATCHED = "unmatched"  # the route label of requests no route took
NO_ROUTE = "no-route"  # the catch-all resource's name
#: The status logged and counted for a request that ended without an answer (the client
#: left, or the server cancelled the handler), as nginx logs it; never sent to anyone.
CLIENT_GONE = 499
_CHALLENGE = {"WWW-Authenticate": 'Bearer realm="egw"'}
_TE = hdrs.TRANSFER_ENCODING


def _error_headers(exc: EgwError) -> dict[str, str] | None:
    """``WWW-Authenticate`` on a 401; ``Retry-After`` (whole seconds) when the error knows
    when to come back (an upstream's hint, a full store)."""
    if isinstance(exc, Unauthorized):
        return dict(_CHALLENGE)
    retry = getattr(exc, "retry_after_s", None)
    if retry is not None and exc.status == 503:
        return {"Retry-After": str(max(1, math.ceil(min(float(retry), 86400.0))))}
    return None


def error_response(exc: EgwError, headers: dict[str, str] | None = None) -> web.Response:
    return web.json_response(exc.to_json(), status=exc.status, headers=headers)


def _internal() -> web.Response:
    """A 500 for what a handler did not expect (its traceback goes to the log only)."""
    return web.json_response(
        {"error": {"code": "internal", "message": "internal error", "details": {}}}, status=500
    )


def _client_gone(request: web.Request) -> bool:
    transport = request.transport
    return transport is None or transport.is_closing()


def _unknown_coding(request: web.Request) -> web.Response | None:
    """501 for a request framed with a transfer coding other than ``chunked`` alone
    (RFC 9112 §6.1): aiohttp's parser takes ``gzip, chunked`` as plain chunked and would
    hand the handler still-gzipped bytes. The body is left unread, so the connection closes."""
    codings = [c.strip(" \t").lower() for v in request.headers.getall(_TE) for c in v.split(",")]
    if codings == ["chunked"]:
        return None
    response = web.json_response(
        {
            "error": {
                "code": "not_implemented",
                "message": "the only Transfer-Encoding egw takes is chunked",
                "details": {"transfer_encoding": ", ".join(request.headers.getall(_TE))[:200]},
            }
        },
        status=501,
    )
    response.force_close()
    return response


def _from_http(exc: web.HTTPException) -> web.Response:
    """aiohttp's own errors (unknown route, wrong method, body too large) in our JSON shape."""
    codes = {
        404: "not_found",
        405: "method_not_allowed",
        413: "payload_too_large",
        415: "unsupported_media_type",
    }
    code = codes.get(exc.status, "http_error")
    message = exc.reason
    if exc.status == 413:
        message = "the request body is too large"
    headers = {k: v for k, v in exc.headers.items() if k.lower() in ("allow", "www-authenticate")}
    return web.json_response(
        {"error": {"code": code, "message": message, "details": {}}},
        status=exc.status,
        headers=headers,
    )


class _AnyTarget(web.AbstractResource):
    """Takes every request target and method, ``OPTIONS *`` too (no path pattern can match
    the asterisk form), on aiohttp's public resource interface.

    Its canonical path is ``/``, so the router indexes it under ``/``, where its walk up a
    request's path ends: registered last, it is tried only when no other resource took the
    request."""

    def __init__(self, handler: Handler) -> None:
        super().__init__(name=NO_ROUTE)
        self._answer = web.ResourceRoute(hdrs.METH_ANY, handler, self)

    @property
    def canonical(self) -> str:
        return "/"

    def url_for(self, **kwargs: str) -> NoReturn:
        # nothing links to "whatever no route took": asking is a programming error
        raise RuntimeError("the catch-all has no URL of its own")

    async def resolve(
        self, request: web.Request
    ) -> tuple[web.UrlMappingMatchInfo | None, set[str]]:
        return web.UrlMappingMatchInfo({}, self._answer), set()

    def add_prefix(self, prefix: str) -> None:
        # aiohttp asks this of a sub-application's resources; egw mounts none
        raise RuntimeError("the catch-all belongs to the top application")

    def get_info(self) -> Any:  # aiohttp's return type is a private TypedDict
        return {}

    def raw_match(self, path: str) -> bool:
        return True

    def __len__(self) -> int:
        return 1

    def __iter__(self) -> Iterator[web.AbstractRoute]:
        return iter((self._answer,))


def _protected(path: str) -> bool:
    return path.startswith("/v1/") and not path.startswith(_PUBLIC)


class Edge:
    """Wraps handlers; one per application."""

    def __init__(
        self, authenticate: Callable[[str | None], Principal], metrics: HttpRequests | None
    ) -> None:
        self._authenticate = authenticate
        self._metrics = metrics
        self._prefix = secrets.token_hex(4)
        self._counter = itertools.count()

    def routes(self, table: Iterable[web.AbstractRouteDef]) -> list[web.RouteDef]:
        """The table's routes, each handler wrapped, labelled by its route template."""
        out = []
        for route in table:
            assert isinstance(route, web.RouteDef), route
            out.append(
                web.RouteDef(
                    route.method,
                    route.path,
                    self.wrap(route.handler, route.path, _protected(route.path)),
                    route.kwargs,
                )
            )
        return out

    def add_catch_all(self, app: web.Application) -> None:
        """Last: the route of any target or method no other route takes (404 or 405, as JSON)."""

        async def no_route(request: web.Request) -> web.StreamResponse:
            allowed: set[str] = set()
            for other in request.app.router.resources():
                if other is not catch_all:
                    # (None, methods) when the path is the resource's and the method is not
                    allowed |= (await other.resolve(request))[1]
            if allowed:
                raise web.HTTPMethodNotAllowed(request.method, allowed)
            raise web.HTTPNotFound()

        catch_all = _AnyTarget(self.wrap(no_route, _UNMATCHED, None))
        app.router.register_resource(catch_all)

    def wrap(self, handler: Handler, route: str, protected: bool | None) -> Handler:
        """``protected``: whether a bearer token is required; None decides by the request's path."""
        authenticate = self._authenticate
        metrics = self._metrics
        prefix = self._prefix
        counter = self._counter
        fullmatch = _REQUEST_ID.fullmatch

        async def edge(request: web.Request) -> web.StreamResponse:
            start = time.perf_counter()
            incoming = request.headers.get("X-Request-ID")
            if incoming and fullmatch(incoming):
                request_id = incoming
            else:
                request_id = f"{prefix}{next(counter):08x}"
            # every line logged while answering carries it (a request's task has a
            # context of its own, so nothing leaks into other requests)
            token = request_id_var.set(request_id)
            principal_token = None
            actor: str | None = None
            status = CLIENT_GONE  # until there is an answer: a handler may never give one
            response: web.StreamResponse
            try:
                try:
                    if _TE in request.headers and (refused := _unknown_coding(request)):
                        response = refused
                    else:
                        if protected or (protected is None and _protected(request.path)):
                            who = authenticate(request.headers.get("Authorization"))
                            principal_token = principal_var.set(who)
                            actor = who.name
                        response = await handler(request)
                except EgwError as exc:
                    response = error_response(exc, _error_headers(exc))
                except web.HTTPException as exc:
                    if exc.status < 400:
                        status = exc.status
                        raise  # a redirect or 304: aiohttp answers it as it is
                    response = _from_http(exc)
                except (HttpProcessingError, RequestPayloadError) as exc:
                    # a body aiohttp cannot decode (a corrupt gzip or deflate stream...)
                    unreadable = InvalidRequest(f"cannot read the body: {exc}", field="body")
                    response = error_response(unreadable)
                except ConnectionError:
                    if not _client_gone(request):  # a socket of ours failed: a server error
                        log.exception("unhandled_error", method=request.method, path=request.path)
                        response = _internal()
                    else:
                        # the client left (a reset during the body's read, or while a write
                        # waited on a full socket): no server error, nothing to answer.
                        # Raising would make aiohttp log a traceback; it writes this to the
                        # closed connection instead, fails quietly, and drops it.
                        return web.Response(status=CLIENT_GONE)
                except Exception:
                    log.exception("unhandled_error", method=request.method, path=request.path)
                    response = _internal()
                if not response.prepared:
                    response.headers["X-Request-ID"] = request_id
                status = response.status
                return response
            finally:
                # every way out, a disconnect or a cancellation too: one line, one count
                elapsed = time.perf_counter() - start
                method = request.method
                log_request(method, request.path, status, round(elapsed * 1000, 2), actor)
                if metrics is not None:
                    metrics.observe(method, route, status, elapsed)
                # answered: an event stream goes on without the request's log context (and
                # without the 120 bytes it would keep for as long as the stream is open)
                request_id_var.reset(token)
                if principal_token is not None:
                    principal_var.reset(principal_token)

        edge.__name__ = getattr(handler, "__name__", "edge")
        edge.__doc__ = handler.__doc__
        return edge


def stream_response(
    request: web.Request,
    headers: dict[str, str],
    cls: type[_R] = web.StreamResponse,  # type: ignore[assignment]  # mypy cannot bind a TypeVar's default
) -> _R:
    """A streamed response (prepared by its handler) that echoes the request id too."""
    response = cls(headers=headers)
    request_id = request_id_var.get()
    if request_id:
        response.headers["X-Request-ID"] = request_id
    return response


def principal(request: web.Request) -> Principal:
    """Who is making ``request`` (a route the edge authenticated)."""
    who = principal_var.get()
    if who is None:  # a public route asked: a bug, never a client's doing
        raise RuntimeError(f"{request.path} is not an authenticated route")
    return who
