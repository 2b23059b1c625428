"""`configure_logging`: the only structlog configuration, JSON lines to stdout and optionally a file."""

from __future__ import annotations

import logging
import logging.handlers
import sys
from typing import Any

import structlog

_REDACT = ("authorization", "token", "secret", "password", "access_token")


def _redact(_: Any, __: str, event: dict[str, Any]) -> dict[str, Any]:
    """Last line of defence: a field named like a secret is never written out."""
    for key in list(event):
        if key.lower() in _REDACT or key.lower().endswith(("_token", "_secret")):
            event[key] = "[redacted]"
    return event


def configure_logging(*, level: str = "info", fmt: str = "json", file: str | None = None) -> None:
    """Route structlog and the stdlib (aiohttp's loggers) through one pipeline."""
    shared: list[Any] = [
        structlog.contextvars.merge_contextvars,
        structlog.stdlib.add_log_level,
        structlog.stdlib.add_logger_name,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        _redact,
    ]
    structlog.configure(
        processors=[*shared, structlog.stdlib.ProcessorFormatter.wrap_for_formatter],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=True,
    )
    final: list[Any] = [
        structlog.stdlib.ProcessorFormatter.remove_processors_meta,
        structlog.processors.format_exc_info,
    ]
    json_formatter = structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=shared, processors=[*final, structlog.processors.JSONRenderer()]
    )
    console = fmt == "console"
    stdout = logging.StreamHandler(sys.stdout)
    stdout.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            foreign_pre_chain=shared,
            processors=[
                structlog.stdlib.ProcessorFormatter.remove_processors_meta,
                structlog.dev.ConsoleRenderer(colors=sys.stdout.isatty()),
            ],
        )
        if console
        else json_formatter
    )
    handlers: list[logging.Handler] = [stdout]
    if file:
        to_file = logging.handlers.WatchedFileHandler(file, encoding="utf-8")
        to_file.setFormatter(json_formatter)
        handlers.append(to_file)
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
        old.close()
    for h in handlers:
        root.addHandler(h)
    root.setLevel(level.upper())
    # the canonical request line replaces aiohttp's access log
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)
