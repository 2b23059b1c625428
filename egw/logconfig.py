"""`configure_logging`: the only structlog configuration; JSON lines to stdout and optionally a file.

structlog renders and writes its own events directly (no trip through the
stdlib's handlers and formatters: that trip cost a third of a simple
request's time). Foreign records (aiohttp, asyncio) go through a stdlib
handler that renders them with the same processors, so every line has one shape.
"""

from __future__ import annotations

import logging
import sys
import threading
import time
from collections.abc import Callable
from typing import IO, Any

import orjson
import structlog

_REDACT = frozenset({"authorization", "token", "secret", "password", "access_token"})

Renderer = Callable[[Any, str, Any], Any]


def _redact(_: Any, __: str, event: dict[str, Any]) -> dict[str, Any]:
    """Last line of defence: a field named like a secret is never written out."""
    for key in event:
        low = key.lower()
        if low in _REDACT or low.endswith(("_token", "_secret")):
            event[key] = "[redacted]"  # a new value, not a new key: iterating stays safe
    return event


class _Stamp:
    """``timestamp`` in RFC 3339 UTC with milliseconds; the date and time part is
    formatted once a second (TimeStamper's strftime per line was a visible cost)."""

    def __init__(self) -> None:
        self._second = -1
        self._text = ""

    def __call__(self, _: Any, __: str, event: dict[str, Any]) -> dict[str, Any]:
        now = time.time()
        second = int(now)
        if second != self._second:
            self._second = second
            self._text = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second))
        event["timestamp"] = f"{self._text}.{int((now - second) * 1000):03d}Z"
        return event


def _hand_over(_: Any, __: str, event: dict[str, Any]) -> dict[str, Any]:
    # the last processor: the logger renders the event once per output
    return {"event": event}


class _Outputs:
    """Where lines go: (stream, renderer) pairs, written under one lock."""

    def __init__(self, outputs: list[tuple[IO[str], Renderer]]) -> None:
        self.outputs = outputs
        self.lock = threading.Lock()

    def write(self, event: dict[str, Any], method: str) -> None:
        if len(self.outputs) == 1:
            stream, render = self.outputs[0]
            line = render(None, method, event)
            with self.lock:
                stream.write(line + "\n")
                stream.flush()
            return
        lines = [(stream, render(None, method, dict(event))) for stream, render in self.outputs]
        with self.lock:
            for stream, line in lines:
                stream.write(line + "\n")
                stream.flush()


class _Logger:
    def __init__(self, outputs: _Outputs) -> None:
        self._outputs = outputs

    def _write(self, method: str) -> Callable[..., None]:
        return lambda event: self._outputs.write(event, method)

    def __getattr__(self, method: str) -> Callable[..., None]:
        return self._write(method)


class _StdlibBridge(logging.Handler):
    """Renders foreign (stdlib) records through the same processors and outputs."""

    def __init__(self, outputs: _Outputs, chain: list[Any]) -> None:
        super().__init__()
        self._outputs = outputs
        self._chain = chain

    def emit(self, record: logging.LogRecord) -> None:
        try:
            event: dict[str, Any] = {
                "event": record.getMessage(),
                "logger": record.name,
                "level": record.levelname.lower(),
            }
            if record.exc_info:
                event["exc_info"] = record.exc_info
            for proc in self._chain:
                event = proc(None, record.levelname.lower(), event)
            self._outputs.write(event, record.levelname.lower())
        except Exception:
            self.handleError(record)

    def close(self) -> None:
        """Close the log file (never stdout) when the configuration is replaced."""
        for stream, _ in self._outputs.outputs:
            if stream is not sys.stdout and not stream.closed:
                stream.close()
        super().close()


def configure_logging(
    *, level: str = "info", fmt: str = "json", file: str | None = None, cache: bool = True
) -> None:
    """Configure structlog and the stdlib root logger; ``cache`` off in tests (see structlog docs)."""
    # orjson, as structlog's performance docs recommend; repr() for anything it cannot encode
    json_renderer = structlog.processors.JSONRenderer(
        serializer=lambda obj, **_: orjson.dumps(obj, default=repr).decode()
    )
    stdout_renderer: Renderer = (
        structlog.dev.ConsoleRenderer(colors=sys.stdout.isatty()) if fmt == "console" else json_renderer
    )
    outputs: list[tuple[IO[str], Renderer]] = [(sys.stdout, stdout_renderer)]
    if file:
        outputs.append((open(file, "a", encoding="utf-8", buffering=1), json_renderer))  # noqa: SIM115 - lives as long as the process
    sink = _Outputs(outputs)
    timestamper = _Stamp()
    processors: list[Any] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        timestamper,
        _redact,
        structlog.processors.format_exc_info,
        _hand_over,
    ]
    structlog.configure(
        processors=processors,
        wrapper_class=structlog.make_filtering_bound_logger(logging.getLevelNamesMapping()[level.upper()]),
        logger_factory=lambda *args: _Logger(sink),
        cache_logger_on_first_use=cache,
    )
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
        old.close()
    root.addHandler(
        _StdlibBridge(
            sink,
            [structlog.contextvars.merge_contextvars, timestamper, _redact,
             structlog.processors.format_exc_info],
        )
    )
    root.setLevel(level.upper())
    # the canonical request line replaces aiohttp's access log
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)
