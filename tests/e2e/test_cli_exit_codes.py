"""Exit codes a script can trust: a task's own code (1-119) passes through, egw's own
outcomes are 120 and above (the README's table), Ctrl-C is 130; on Ctrl-C `submit
--follow` says the task is still running, or cancels it with `--cancel-on-interrupt`."""

from __future__ import annotations

import json
import signal
from collections.abc import Iterator
from pathlib import Path

import pytest
from cli_support import CLIGateway, running_gateway


@pytest.fixture
def cli_gateway(tmp_path: Path) -> Iterator[CLIGateway]:
    yield from running_gateway(tmp_path)


@pytest.mark.parametrize(
    ("script", "code"),
    [("exit 0", 0), ("exit 2", 2), ("exit 3", 3), ("exit 119", 119), ("exit 120", 123)],
)
def test_a_tasks_own_code_passes_through(cli_gateway: CLIGateway, script: str, code: int) -> None:
    done = cli_gateway.cli("submit", "--follow", "--", "sh", "-c", script)
    assert done.returncode == code, done.stderr


def test_egws_own_outcomes(cli_gateway: CLIGateway) -> None:
    timed_out = cli_gateway.cli("submit", "--follow", "--timeout", "0.5", "--", "sleep", "30")
    assert timed_out.returncode == 124, timed_out.stderr
    task_id = cli_gateway.cli("submit", "-q", "--", "sleep", "30").stdout.strip()
    assert cli_gateway.cli("cancel", task_id).returncode == 0
    assert cli_gateway.cli("status", task_id, "--wait").returncode == 125
    assert cli_gateway.cli("logs", task_id, "-f").returncode == 125
    # cancelling a task that ended otherwise: the gateway refuses (409)
    done_id = cli_gateway.cli("submit", "-q", "--", "true").stdout.strip()
    assert cli_gateway.cli("status", done_id, "--wait").returncode == 0
    assert cli_gateway.cli("cancel", done_id).returncode == 121


def _interrupt(cli_gateway: CLIGateway, *extra: str) -> tuple[int, str, str]:
    proc = cli_gateway.popen("submit", "--follow", *extra, "--", "sh", "-c", "echo go; sleep 30")
    assert proc.stdout is not None and proc.stderr is not None
    task_id = proc.stderr.readline().decode().strip()  # printed first, on stderr
    assert proc.stdout.readline() == b"go\n"  # following
    proc.send_signal(signal.SIGINT)
    code = proc.wait(20)
    stderr = proc.stderr.read().decode()
    proc.stdout.close()
    proc.stderr.close()
    return code, task_id, stderr


def test_ctrl_c_leaves_the_task_running_and_says_so(cli_gateway: CLIGateway) -> None:
    code, task_id, stderr = _interrupt(cli_gateway)
    assert code == 130
    assert f"task {task_id} is still running" in stderr and f"egw cancel {task_id}" in stderr
    status = json.loads(cli_gateway.cli("status", task_id, "--json").stdout)
    assert status["status"] == "running"
    assert cli_gateway.cli("cancel", task_id).returncode == 0


def test_ctrl_c_with_cancel_on_interrupt_cancels_it(cli_gateway: CLIGateway) -> None:
    code, task_id, stderr = _interrupt(cli_gateway, "--cancel-on-interrupt")
    assert code == 130
    assert f"cancelling task {task_id}" in stderr
    assert cli_gateway.cli("status", task_id, "--wait").returncode == 125
