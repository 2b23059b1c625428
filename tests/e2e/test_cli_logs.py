"""`egw logs --tail N`, `--since` and `--timestamps` on a real `egw serve`.

egw keeps no time per piece of output, so `--since` answers only where it is exact and
says so otherwise, and `--timestamps` stamps what arrives while following."""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from cli_support import CLIGateway, running_gateway


@pytest.fixture
def cli_gateway(tmp_path: Path) -> Iterator[CLIGateway]:
    yield from running_gateway(tmp_path)


def ended(gw: CLIGateway, *command: str) -> str:
    task_id = gw.cli("submit", "-q", "--", *command).stdout.strip()
    assert gw.cli("status", task_id, "--wait").returncode == 0
    return task_id


def test_tail_and_since(cli_gateway: CLIGateway) -> None:
    gw = cli_gateway
    task_id = ended(gw, "sh", "-c", "for i in 1 2 3 4 5; do echo line$i; done")
    assert gw.cli("logs", task_id, "--tail", "2").stdout == "line4\nline5\n"
    assert gw.cli("logs", task_id, "--tail", "0").stdout == ""
    assert gw.cli("logs", task_id, "--tail", "9").stdout.count("\n") == 5
    # before it was submitted: all of it; after it ended: none
    assert gw.cli("logs", task_id, "--since", "1h").stdout.count("\n") == 5
    assert gw.cli("logs", task_id, "--since", "2000-01-01T00:00:00Z", "--tail", "1").stdout == (
        "line5\n"
    )
    after = gw.cli("logs", task_id, "--since", "0s")
    assert (after.returncode, after.stdout) == (0, "")
    bad = gw.cli("logs", task_id, "--since", "yesterday")
    assert bad.returncode == 120 and "give a duration" in bad.stderr


def test_since_while_running_is_refused_not_guessed(cli_gateway: CLIGateway) -> None:
    gw = cli_gateway
    task_id = gw.cli("submit", "-q", "--", "sh", "-c", "echo a; sleep 30").stdout.strip()
    try:
        time.sleep(0.3)
        done = gw.cli("logs", task_id, "--since", "0s")
        assert done.returncode == 120
        assert "does not store when each piece of output was written" in done.stderr
        assert len(done.stderr.strip().splitlines()) == 1
        stamps = gw.cli("logs", task_id, "--timestamps")
        assert stamps.returncode == 120 and "--timestamps needs -f" in stamps.stderr
    finally:
        gw.cli("cancel", task_id)


def test_follow_tail_with_timestamps(cli_gateway: CLIGateway) -> None:
    gw = cli_gateway
    script = "echo old1; echo old2; sleep 1.5; echo new; echo oops >&2"
    task_id = gw.cli("submit", "-q", "--", "sh", "-c", script).stdout.strip()
    deadline = time.monotonic() + 5
    while "old2" not in gw.cli("logs", task_id).stdout:
        assert time.monotonic() < deadline
        time.sleep(0.05)
    done = gw.cli("logs", task_id, "-f", "--tail", "1", "--timestamps")
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0] == "-" + " " * 23 + " old2"
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z new", lines[1]), lines
    assert len(lines) == 2
    assert re.fullmatch(r"\S+Z oops\n", done.stderr)
