"""`configure_logging`: the one structlog configuration; JSON lines to stdout and optionally a file.

structlog renders and writes its own events directly (no trip through the
stdlib's handlers and formatters: that trip cost a third of a simple
request's time), through two processors: structlog's ``merge_contextvars``, so
that ``structlog.contextvars.bind_contextvars`` works as documented, then
`_Enrich`. Foreign records (aiohttp, asyncio) go through a stdlib handler that
runs the same processors, so every line has one shape. The canonical request
line, the one line every request writes, is `log_request`.
"""

from __future__ import annotations

import asyncio
import atexit
import logging
import sys
import threading
import time
from collections.abc import Callable
from contextvars import ContextVar
from typing import IO, Any

import orjson
import structlog
from structlog.contextvars import merge_contextvars
from structlog.typing import EventDict

_REDACT = frozenset({"authorization", "token", "secret", "password", "access_token"})
_SAFE_FIELDS_MAX = 4096  # field names come from code; the bound is only a safety net

Renderer = Callable[[Any, str, Any], Any]

#: The id of the request being answered, set by the web edge and added to
#: every line logged while answering it. One context variable of our own rather
#: than structlog's ``bind_contextvars``: each request replaces it with one ``set``
#: (a task's context is its own, so nothing leaks between requests), where
#: clearing and binding structlog's variables cost several microseconds a request.
request_id_var: ContextVar[str | None] = ContextVar("egw_request_id", default=None)

_safe_fields: set[str] = set()  # names seen and found not to be secret


def _redact(event: EventDict) -> None:
    for key in event:
        if key not in _safe_fields:
            low = key.lower()
            if low in _REDACT or low.endswith(("_token", "_secret")):
                event[key] = "[redacted]"  # a new value, not a new key: iterating stays safe
            elif len(_safe_fields) < _SAFE_FIELDS_MAX:
                _safe_fields.add(key)


_LEVELS = {"warn": "warning", "exception": "error", "msg": "info"}


class _Enrich:
    """The rest of the processor chain in one call, as the request line's cost shows:

    * ``request_id`` of the request being answered (``request_id_var``);
    * ``level`` (as ``structlog.processors.add_log_level`` names it);
    * ``timestamp`` in RFC 3339 UTC with milliseconds, the date and time part
      formatted once a second (TimeStamper's strftime per line was a visible cost);
    * redaction, the last line of defence: a field named like a secret is never
      written out;
    * ``exc_info`` rendered as text (``structlog.processors.format_exc_info``).

    It returns ``{"event": event}``: the logger renders the event once per output.
    """

    def __init__(self) -> None:
        self._second = -1
        self._text = ""
        self._ms = -1
        self._stamp = ""

    def timestamp(self) -> str:
        now = time.time()
        ms = int(now * 1000)
        if ms == self._ms:  # many lines share a millisecond under load
            return self._stamp
        second = ms // 1000
        if second != self._second:
            self._second = second
            self._text = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second))
        self._ms = ms
        self._stamp = f"{self._text}.{ms % 1000:03d}Z"
        return self._stamp

    def __call__(self, logger: Any, method: str, event: EventDict) -> dict[str, Any]:
        request_id = request_id_var.get()
        if request_id is not None and "request_id" not in event:
            event["request_id"] = request_id
        event["level"] = _LEVELS.get(method, method)
        event["timestamp"] = self.timestamp()
        if not _safe_fields.issuperset(event):  # one C call for the fields seen before
            _redact(event)
        if "exc_info" in event:
            return {"event": _format_exc_info(logger, method, event)}
        return {"event": event}


_format_exc_info = structlog.processors.format_exc_info


def _json_line(_: Any, __: str, event: dict[str, Any]) -> str:
    # orjson, as structlog's performance docs recommend; repr() for anything it cannot encode
    return orjson.dumps(event, default=repr).decode()


class _Outputs:
    """Where lines go: (stream, renderer) pairs.

    On the event loop, lines are kept and written together once per loop
    iteration (``call_soon``): under load one ``write`` carries the lines of
    every request answered in that iteration, where a write and a flush per line
    were a system call each. A line is never held longer than that iteration,
    and warnings and errors (and lines from other threads) are written at once,
    after anything still held, so the order is kept.
    """

    def __init__(self, outputs: list[tuple[IO[str], Renderer]]) -> None:
        self.outputs = outputs
        self.lock = threading.Lock()
        self._held: list[list[str]] = [[] for _ in outputs]
        self._scheduled = False
        atexit.register(self.flush)

    def write(self, event: dict[str, Any], method: str) -> None:
        if len(self.outputs) == 1:
            lines = [self.outputs[0][1](None, method, event)]
        else:
            lines = [render(None, method, dict(event)) for _, render in self.outputs]
        self._hold(lines, at_once=method not in _HOLD)

    def write_json_line(self, line: str) -> None:
        """A line already rendered as ``_json_line`` renders (every output is JSON)."""
        self._hold([line] * len(self.outputs), at_once=False)

    def _hold(self, lines: list[str], *, at_once: bool) -> None:
        """One line per output; written at once, or at the end of this loop iteration."""
        loop = asyncio._get_running_loop()
        with self.lock:
            for held, line in zip(self._held, lines, strict=True):
                held.append(line)
            if loop is None or at_once:
                self._flush_locked()
            elif not self._scheduled:
                self._scheduled = True
                loop.call_soon(self.flush)

    def flush(self) -> None:
        with self.lock:
            self._flush_locked()

    def _flush_locked(self) -> None:
        self._scheduled = False
        for (stream, _), held in zip(self.outputs, self._held, strict=True):
            if held:
                text = "\n".join(held) + "\n"
                held.clear()
                try:
                    stream.write(text)
                    stream.flush()
                except (OSError, ValueError):
                    pass  # a closed or broken output must not break the caller


_HOLD = frozenset({"debug", "info", "msg"})


class _Logger:
    """structlog's logger: hands the event to the outputs, which render it."""

    def __init__(self, outputs: _Outputs) -> None:
        self._outputs = outputs

    def debug(self, event: dict[str, Any]) -> None:
        self._outputs.write(event, "debug")

    def info(self, event: dict[str, Any]) -> None:
        self._outputs.write(event, "info")

    def warning(self, event: dict[str, Any]) -> None:
        self._outputs.write(event, "warning")

    def error(self, event: dict[str, Any]) -> None:
        self._outputs.write(event, "error")

    def __getattr__(self, method: str) -> Callable[..., None]:
        # the rarer names (msg, exception, critical, fatal, ...)
        return lambda event: self._outputs.write(event, method)


class _StdlibBridge(logging.Handler):
    """Renders foreign (stdlib) records through the same processors and outputs (structlog's
    ``ProcessorFormatter`` would do it through the stdlib's formatting, at a cost)."""

    def __init__(self, outputs: _Outputs, enrich: _Enrich) -> None:
        super().__init__()
        self._outputs = outputs
        self._enrich = enrich

    def emit(self, record: logging.LogRecord) -> None:
        try:
            level = record.levelname.lower()
            event: dict[str, Any] = {"event": record.getMessage(), "logger": record.name}
            if record.exc_info:
                event["exc_info"] = record.exc_info
            enriched = self._enrich(None, level, merge_contextvars(None, level, event))
            self._outputs.write(enriched["event"], level)
        except Exception:  # noqa: BLE001 - a handler reports its own failure, never raises
            self.handleError(record)

    def close(self) -> None:
        """Close the log file (never stdout) when the configuration is replaced."""
        self._outputs.flush()
        for stream, _ in self._outputs.outputs:
            if stream is not sys.stdout and not stream.closed:
                stream.close()
        super().close()


#: The canonical request line as `_json_line` renders what the processors make of
#: ``log.info("request", method=..., path=..., status=..., duration_ms=..., actor=...)``:
#: the fields in the order the chain adds them. The request id is [A-Za-z0-9._:-] (the
#: edge checks or makes it) and the timestamp ours: neither needs escaping.
_REQUEST_LINE = (
    '{"method":%s,"path":%s,"status":%d,"duration_ms":%r,"actor":%s,'
    '"event":"request","request_id":"%s","level":"info","timestamp":"%s"}'
)
_NAMES_MAX = 1024  # methods and token names: few, but a client chooses the method
_names: dict[str | None, str] = {None: "null"}  # methods and actors, as JSON strings

#: Where `log_request` writes its line directly: set by `configure_logging` when every
#: output is JSON at level info or below; None sends it through structlog.
_direct: tuple[_Outputs, _Enrich] | None = None


def _name_json(name: str | None) -> str:
    rendered = _names.get(name)
    if rendered is None:
        rendered = orjson.dumps(name).decode()
        if len(_names) < _NAMES_MAX:
            _names[name] = rendered
    return rendered


def log_request(method: str, path: str, status: int, duration_ms: float, actor: str | None) -> None:
    """The canonical line of one HTTP request: ``structlog.get_logger("egw.http").info("request",
    method=..., path=..., status=..., duration_ms=..., actor=...)``.

    It is the one line every request writes, and going through the bound logger and
    the processors cost as much as the rest of a cached ``GET`` in egw's code. So when
    every output is JSON, and no structlog context variable is bound, it formats the very
    line the chain would render (``_REQUEST_LINE``) and hands it to the outputs directly;
    otherwise (console output, a bound context, before ``configure_logging``, a level
    above info) it goes through structlog. ``tests/test_logging.py`` holds the two equal.
    """
    direct = _direct
    request_id = request_id_var.get()
    # merge_contextvars({}) is what the chain would add: almost always nothing
    if direct is None or request_id is None or merge_contextvars(None, "info", {}):
        structlog.get_logger("egw.http").info(
            "request", method=method, path=path, status=status, duration_ms=duration_ms, actor=actor
        )
        return
    sink, enrich = direct
    sink.write_json_line(
        _REQUEST_LINE
        % (
            _name_json(method),
            orjson.dumps(path).decode(),
            status,
            duration_ms,
            _name_json(actor),
            request_id,
            enrich.timestamp(),
        )
    )


def configure_logging(
    *, level: str = "info", fmt: str = "json", file: str | None = None, cache: bool = True
) -> None:
    """Set up structlog and the stdlib root logger; ``cache`` off in tests (see structlog docs)."""
    stdout_renderer: Renderer = (
        structlog.dev.ConsoleRenderer(colors=sys.stdout.isatty())
        if fmt == "console"
        else _json_line
    )
    outputs: list[tuple[IO[str], Renderer]] = [(sys.stdout, stdout_renderer)]
    if file:
        outputs.append((open(file, "a", encoding="utf-8"), _json_line))  # noqa: SIM115 - lives as long as the process
    sink = _Outputs(outputs)
    enrich = _Enrich()
    threshold = logging.getLevelNamesMapping()[level.upper()]
    structlog.configure(
        processors=[merge_contextvars, enrich],
        wrapper_class=structlog.make_filtering_bound_logger(threshold),
        logger_factory=lambda *_: _Logger(sink),
        cache_logger_on_first_use=cache,
    )
    global _direct
    json_only = all(render is _json_line for _, render in outputs)
    _direct = (sink, enrich) if json_only and threshold <= logging.INFO else None
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
        old.close()
    root.addHandler(_StdlibBridge(sink, enrich))
    root.setLevel(level.upper())
    # the canonical request line replaces aiohttp's access log
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)
