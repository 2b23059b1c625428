"""Requests aiohttp refuses before any route sees them, answered in egw's JSON error shape.

A request line or header block that aiohttp's parser cannot take (a header over
8 KiB, more than 128 headers, bad chunked framing, an unknown method, an invalid
request line) never reaches a handler, so the edge (``egw.web.edge``) cannot
answer it: aiohttp's connection object, ``web.RequestHandler``, answers it from
its ``handle_error`` method, in plain text. No middleware, handler or
``on_response_prepare`` signal runs for such a request (it has no match info).

The public seam is the connection object itself: `EdgeProtocol` is a
``web.RequestHandler`` whose ``handle_error`` renders the same answer as JSON,
and `EdgeRunner` is a ``web.AppRunner`` whose ``server`` (what its sites hand to
``loop.create_server`` as the protocol factory) makes `EdgeProtocol`
connections. The connections are still managed by the runner's own server, so
a graceful shutdown closes and awaits them exactly as before. Only public names
of aiohttp are used or overridden.
"""

from __future__ import annotations

import asyncio
from typing import Any

import structlog
from aiohttp import web

log = structlog.get_logger("egw.http")

#: what the runner takes for itself or its server; the rest is each connection's
_RUNNER_ARGS = frozenset({"handle_signals", "shutdown_timeout", "handler_cancellation"})
_MAX_MESSAGE = 200


class EdgeProtocol(web.RequestHandler):
    """One HTTP connection; its protocol-level errors are JSON."""

    def handle_error(
        self,
        request: web.BaseRequest,
        status: int = 500,
        exc: BaseException | None = None,
        message: str | None = None,
    ) -> web.StreamResponse:
        if status >= 500:
            # a handler failed outside the edge: aiohttp logs it with its traceback
            super().handle_error(request, status, exc, message)
            text = "internal error"
        else:
            # the client's doing: one line, no traceback (it is no server error)
            if request.writer.output_size > 0:
                raise ConnectionError("an answer was already under way")
            text = (message or (str(exc) if exc else "") or "bad request")[:_MAX_MESSAGE]
            log.info("bad_http_request", status=status, reason=text)
            text = f"the request is not valid HTTP: {text}"
        code = (
            "internal" if status == 500 else ("invalid_request" if status == 400 else "http_error")
        )
        response = web.json_response(
            {"error": {"code": code, "message": text, "details": {}}}, status=status
        )
        response.force_close()  # what aiohttp does too: the framing cannot be trusted
        return response


class _Protocols(web.Server):
    """The sites' protocol factory: `EdgeProtocol` connections managed by ``manager``."""

    def __init__(self, manager: web.Server, handler_args: dict[str, Any]) -> None:
        super().__init__(
            manager.request_handler,
            request_factory=manager.request_factory,
            handler_cancellation=manager.handler_cancellation,
        )
        self.manager = manager
        self.handler_args = handler_args

    def __call__(self) -> web.RequestHandler:
        return EdgeProtocol(self.manager, loop=asyncio.get_running_loop(), **self.handler_args)


class EdgeRunner(web.AppRunner):
    """``web.AppRunner`` whose connections are `EdgeProtocol`; takes the same arguments."""

    def __init__(self, app: web.Application, **kwargs: Any) -> None:
        super().__init__(app, **kwargs)
        self.handler_args = {k: v for k, v in kwargs.items() if k not in _RUNNER_ARGS}
        self.protocols: _Protocols | None = None

    async def setup(self) -> None:
        await super().setup()
        manager = super().server
        assert manager is not None
        self.protocols = _Protocols(manager, self.handler_args)

    @property
    def server(self) -> web.Server | None:
        return self.protocols

    async def cleanup(self) -> None:
        self.protocols = None
        await super().cleanup()
