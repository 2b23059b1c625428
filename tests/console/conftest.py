"""Browser fixtures: Debian's Chromium driven by Playwright, a real `egw serve`, and a TCP
proxy in front of it (see console_support.py).

Chromium is launched from ``/usr/bin/chromium`` (``executable_path``: Playwright's own
browser downloads are not used); without it the browser tests are skipped, saying why.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any

import pytest
from console_support import CHROMIUM, FLAGS, Proxy
from support import GatewayProcess


# one per module, not per session: while Playwright's sync API is open, its event loop
# runs in the main thread, and the asyncio tests that follow could not run theirs
@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    if not os.path.exists(CHROMIUM):
        pytest.skip(f"no Chromium at {CHROMIUM} (apt-get install chromium; .ci/run does)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=FLAGS)
        yield b
        b.close()


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatewayProcess]:
    gw = GatewayProcess(
        tmp_path_factory.mktemp("console"),
        {"providers": {"local": {"max_log_bytes": 128 << 20}}},
    )
    gw.start()
    yield gw
    gw.stop()


@pytest.fixture(scope="module")
def proxy(gateway: GatewayProcess) -> Iterator[Proxy]:
    p = Proxy(gateway.port)
    yield p
    p.close()
