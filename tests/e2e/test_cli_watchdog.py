"""The CLI on a real `egw serve`: `egw cancel --wait` exits 126 when the cancel is not
confirmed in time (a task that ignores SIGTERM, killed only after kill_grace_s), `egw
status` shows it and the stuck flag, `egw tasks --stuck` lists the silent tasks."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from cli_support import CLIGateway

LOCAL = {"kill_grace_s": 3, "cancel_timeout_s": 0.5, "silent_timeout_s": 0.5}


@pytest.fixture
def gw(tmp_path: Path) -> Iterator[CLIGateway]:
    gateway = CLIGateway(tmp_path, {"providers": {"local": LOCAL}})
    gateway.start()
    yield gateway
    gateway.stop()


def test_cancel_wait_exits_126_when_the_cancel_is_not_confirmed_then_it_ends(
    gw: CLIGateway,
) -> None:
    script = "trap '' TERM; echo go; sleep 30"  # ignores SIGTERM: only the SIGKILL stops it
    task_id = gw.cli("submit", "-q", "--", "sh", "-c", script).stdout.strip()
    done = gw.cli("cancel", task_id, "--wait")
    assert done.returncode == 126, done.stderr
    assert "cancel_failed" in done.stdout
    assert "upstream did not confirm the cancel within 0.5s" in done.stdout
    # the runner's SIGKILL after kill_grace_s ends it: the later report moves it on
    assert gw.cli("status", task_id, "--wait").returncode == 125
    # a cancel of a task that ended otherwise is still refused as before
    assert gw.cli("cancel", task_id).returncode == 0  # cancelled: idempotent


def test_tasks_stuck_lists_the_silent_tasks(gw: CLIGateway) -> None:
    quiet = gw.cli("submit", "-q", "--", "sleep", "30").stdout.strip()
    talker = gw.cli("submit", "-q", "--", "sh", "-c", "while :; do echo x; sleep 0.1; done")
    talking = talker.stdout.strip()
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        task = json.loads(gw.cli("status", quiet, "--json").stdout)
        if task["stuck"]:
            break
        time.sleep(0.2)
    assert task["stuck"]["reason"] == "running without output for more than 0.5s"
    listed = gw.cli("tasks", "--stuck")
    assert listed.returncode == 0, listed.stderr
    assert quiet in listed.stdout and talking not in listed.stdout
    assert "[stuck]" in listed.stdout
    shown = gw.cli("status", quiet)
    assert "stuck: running without output for more than 0.5s" in shown.stdout
    for task_id in (quiet, talking):
        assert gw.cli("cancel", task_id, "--wait").returncode == 0
