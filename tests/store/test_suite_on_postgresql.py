"""A part of the suite, run again with the gateway on PostgreSQL (``EGW_TEST_STORE``).

What CI runs on PostgreSQL by default besides ``tests/store/``: the service (submit,
accept, retries, the watchdog, fan-out), the routes that read the log (events with
replay and resume, output over SSE, audit, filters, namespaces, hostile input), and a
real ``egw serve`` killed with SIGKILL mid-burst. The whole suite runs there by hand
(CONTRIBUTING.md); it takes about as long again as on SQLite, which CI's budget has
no room for.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import db_support
import pytest

ROOT = Path(__file__).resolve().parents[2]
PART = [
    "tests/service",
    "tests/web/test_events.py",
    "tests/web/test_sse_logs.py",
    "tests/web/test_sse_window.py",
    "tests/web/test_audit.py",
    "tests/web/test_label_filter.py",
    "tests/web/test_namespaces.py",
    "tests/web/test_errors.py",
    "tests/e2e/test_gateway_process.py",
]


@pytest.mark.timeout(900)
def test_the_service_and_the_log_routes_pass_on_postgresql() -> None:
    if db_support.STORE == "postgresql":
        pytest.skip("this run is on PostgreSQL already: these tests run in it themselves")
    reason = db_support.skip_reason()
    if reason is not None:
        pytest.skip(reason)
    env = {**os.environ, "EGW_TEST_STORE": "postgresql"}
    run = subprocess.run(
        # three workers (pytest-xdist): each test has a database of its own, and these
        # tests mostly wait, so the part takes about half as long as in one process
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-x", "-n", "3", *PART],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=880,
    )
    assert run.returncode == 0, run.stdout[-6000:] + run.stderr[-3000:]
