"""Every error of the `egw` command is one line on stderr naming what to do, with the
exit code of the README's table (120 usage, 121 refused, 122 unreachable, 141 a closed
pipe); never a traceback."""

from __future__ import annotations

import signal
from collections.abc import Iterator
from pathlib import Path

import pytest
from cli_support import CLIGateway, egw_env, run_egw, running_gateway


@pytest.fixture
def cli_gateway(tmp_path: Path) -> Iterator[CLIGateway]:
    yield from running_gateway(tmp_path)


def one_line(stderr: str) -> str:
    assert "Traceback" not in stderr, stderr
    lines = stderr.splitlines()
    assert len(lines) == 1, stderr
    return lines[0]


@pytest.mark.parametrize(
    ("args", "code", "says"),
    [
        (["serve", "--port", "99999"], 2, "99999 is not a port: give 0 to 65535"),
        (["submit", "--url", "127.0.0.1:8080", "--", "true"], 120, "http://127.0.0.1:8080"),
        (["submit", "--task", "{job_id: x}"], 120, "--task is not valid JSON"),
        (["submit", "--file", "/nope.json"], 120, "--file /nope.json: No such file or directory"),
        (["submit"], 120, "give a command after --"),
        (["submit", "--label", "foo", "--", "true"], 120, "--label foo: write it KEY=VALUE"),
        (["submit", "--timeout", "0", "--", "true"], 120, "--timeout 0: give seconds, more than 0"),
        (["submit", "--bogus", "x"], 120, "unrecognized arguments: --bogus"),
        (["tasks", "--limit", "0"], 120, "--limit 0: give 1 to 500"),
        (["status", "t_x", "--url", "http://127.0.0.1:9"], 122, "cannot reach http://127.0.0.1:9"),
    ],
)
def test_usage_and_local_errors(args: list[str], code: int, says: str) -> None:
    done = run_egw(*args)
    assert done.returncode == code, done.stderr
    assert says in one_line(done.stderr)


def test_a_missing_token_says_how_to_give_one() -> None:
    done = run_egw("tasks", env=egw_env("http://127.0.0.1:9", token=None))
    assert done.returncode == 120
    assert "set EGW_TOKEN or pass --token" in one_line(done.stderr)


@pytest.mark.parametrize("command", ["serve", "migrate"])
def test_storage_that_cannot_be_created(tmp_path: Path, command: str) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    config = tmp_path / "config.yaml"
    config.write_text(f"storage:\n  path: {blocker}/egw.db\n")
    args = [command, "--config", str(config)] + (["--port", "0"] if command == "serve" else [])
    done = run_egw(*args, env=egw_env("http://127.0.0.1:9", token="t" * 20))
    assert done.returncode == 1
    assert "is not a directory" in done.stderr.splitlines()[-1]
    assert "Traceback" not in done.stderr


def test_refusals_name_what_to_do(cli_gateway: CLIGateway) -> None:
    denied = run_egw("tasks", env=egw_env(cli_gateway.url, token="wrong-token-000000"))
    assert denied.returncode == 121
    assert "set EGW_TOKEN or pass --token" in one_line(denied.stderr)
    missing = cli_gateway.cli("status", "t_missing")
    assert missing.returncode == 121 and "not_found" in one_line(missing.stderr)
    # a local program that is not there is refused at submit, not a task that fails at once
    absent = cli_gateway.cli("submit", "--", "no-such-program-egw")
    assert absent.returncode == 121
    assert "'no-such-program-egw' is not an executable file" in one_line(absent.stderr)


@pytest.mark.parametrize("follow", [["submit", "--follow", "--"], None])
def test_a_closed_pipe_ends_quietly(cli_gateway: CLIGateway, follow: list[str] | None) -> None:
    """`egw logs -f ID | head -2`, `egw submit --follow -- seq 1 200000 | head -2`."""
    if follow is None:
        submitted = cli_gateway.cli("submit", "-q", "--", "seq", "1", "200000")
        args = ["logs", submitted.stdout.strip(), "-f"]
    else:
        args = [*follow, "seq", "1", "200000"]
    proc = cli_gateway.popen(*args)
    assert proc.stdout is not None and proc.stderr is not None
    assert proc.stdout.readline() == b"1\n"
    assert proc.stdout.readline() == b"2\n"
    proc.stdout.close()  # what `head -2` does
    code = proc.wait(30)
    stderr = proc.stderr.read().decode()
    proc.stderr.close()
    assert code == 128 + signal.SIGPIPE, stderr
    assert "Broken pipe" not in stderr and "Traceback" not in stderr
    assert "cannot reach" not in stderr
