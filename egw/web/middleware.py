"""Middlewares: request id and one canonical log line per request; errors as JSON; bearer auth."""

from __future__ import annotations

import itertools
import re
import secrets
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import structlog
from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError
from aiohttp.web_protocol import RequestPayloadError

from egw.errors import EgwError, InvalidRequest, Unauthorized
from egw.web.auth import Principal
from egw.web.keys import metrics_key

log = structlog.get_logger("egw.http")

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
_R = TypeVar("_R", bound=web.StreamResponse)

principal_key = web.RequestKey("principal", Principal)
request_id_key = web.RequestKey("request_id", str)
_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")
_PUBLIC = ("/healthz", "/readyz", "/v1/webhooks/", "/metrics", "/v1/openapi.json")


def error_response(exc: EgwError, headers: dict[str, str] | None = None) -> web.Response:
    return web.json_response(exc.to_json(), status=exc.status, headers=headers)


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


def make_middleware(authenticate: Callable[[str | None], Principal]) -> Any:
    """The one middleware: request id, bearer auth on /v1, errors as JSON, one log line, metrics.

    One middleware rather than a chain: aiohttp wraps every middleware per
    request, and on a cached GET that wrapping is a measurable share of the time.
    """
    prefix = secrets.token_hex(4)
    counter = itertools.count()

    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        start = time.perf_counter()
        incoming = request.headers.get("X-Request-ID")
        request_id = (
            incoming if incoming and _REQUEST_ID.fullmatch(incoming) else f"{prefix}{next(counter):08x}"
        )
        structlog.contextvars.clear_contextvars()
        structlog.contextvars.bind_contextvars(request_id=request_id)
        request[request_id_key] = request_id
        response: web.StreamResponse
        try:
            path = request.path
            if path.startswith("/v1/") and not path.startswith(_PUBLIC):
                request[principal_key] = authenticate(request.headers.get("Authorization"))
            response = await handler(request)
        except EgwError as exc:
            headers = {"WWW-Authenticate": 'Bearer realm="egw"'} if isinstance(exc, Unauthorized) else None
            response = error_response(exc, headers)
        except web.HTTPException as exc:
            if exc.status < 400:
                raise
            response = _from_http(exc)
        except (HttpProcessingError, RequestPayloadError) as exc:
            # a body aiohttp cannot decode (a corrupt gzip or deflate stream...)
            response = error_response(InvalidRequest(f"cannot read the body: {exc}", field="body"))
        except ConnectionResetError:
            raise  # the client went away: nothing to answer
        except Exception:
            log.exception("unhandled_error", method=request.method, path=request.path)
            response = web.json_response(
                {"error": {"code": "internal", "message": "internal error", "details": {}}},
                status=500,
            )
        if not response.prepared:
            response.headers["X-Request-ID"] = request_id
        principal = request.get(principal_key)
        status = response.status
        elapsed = time.perf_counter() - start
        log.info(
            "request",
            method=request.method,
            path=request.path,
            status=status,
            duration_ms=round(elapsed * 1000, 2),
            actor=principal.name if principal else None,
        )
        metrics = request.app.get(metrics_key)
        if metrics is not None:
            resource = request.match_info.route.resource
            route = resource.canonical if resource is not None else "unmatched"
            metrics.http(request.method, route, status, elapsed)
        # an event stream goes on after this: it need not carry the request's log context
        structlog.contextvars.clear_contextvars()
        return response

    return middleware


def stream_response(
    request: web.Request, headers: dict[str, str], cls: type[_R] = web.StreamResponse  # type: ignore[assignment]
) -> _R:
    """A streamed response (prepared by its handler) that echoes the request id too."""
    response = cls(headers=headers)
    request_id = request.get(request_id_key)
    if request_id:
        response.headers["X-Request-ID"] = request_id
    return response


def principal(request: web.Request) -> Principal:
    return request[principal_key]
