"""How the writer settles an operation's future: failed with the store's reason, or read."""

from __future__ import annotations

import asyncio
from typing import Any

import structlog

from egw.errors import StoreError
from egw.store.ops import Op

log = structlog.get_logger("egw.store")


def fail(op: Op[Any], exc: BaseException, *, refused: bool) -> None:
    if not op.fut.done():
        log.error("store_write_failed", operation=type(op).__name__, error=repr(exc))
        message = "the event log could not record this change"
        if refused:
            op.fut.set_exception(StoreError(f"{message}: {exc}", details={"cause": str(exc)}))
        else:
            op.fut.set_exception(StoreError(message))


def retrieved(fut: asyncio.Future[Any]) -> None:
    if not fut.cancelled():
        fut.exception()
