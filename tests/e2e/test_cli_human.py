"""Human output from the real `egw`: colour and status symbols on a terminal (a pty),
plain text when piped or with NO_COLOR; `--help` with examples for every command."""

from __future__ import annotations

import os
import pty
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from cli_support import CLIGateway, egw_env, run_egw, running_gateway


@pytest.fixture
def cli_gateway(tmp_path: Path) -> Iterator[CLIGateway]:
    yield from running_gateway(tmp_path)


def _drain(master: int) -> bytes:
    """Everything written to a pty until its other end closes; the master is closed."""
    out = bytearray()
    while True:
        try:
            piece = os.read(master, 65536)
        except OSError:  # EIO: the other end closed
            break
        if not piece:
            break
        out += piece
    os.close(master)
    return bytes(out)


def on_terminal(env: dict[str, str], *args: str) -> str:
    """What `egw ARGS` writes to stdout when stdout is a terminal."""
    master, slave = pty.openpty()
    proc = subprocess.Popen(
        [sys.executable, "-m", "egw", *args], stdout=slave, stderr=subprocess.PIPE, env=env
    )
    os.close(slave)
    out = _drain(master)
    assert proc.stderr is not None
    with proc.stderr:
        assert proc.wait(timeout=30) == 0, proc.stderr.read()
    return out.decode()


def test_colour_on_a_terminal_plain_when_piped_or_no_color(cli_gateway: CLIGateway) -> None:
    gw = cli_gateway
    ok = gw.cli("submit", "-q", "--", "true").stdout.strip()
    bad = gw.cli("submit", "-q", "--", "false").stdout.strip()
    gw.cli("status", ok, "--wait")
    gw.cli("status", bad, "--wait")
    env = {**egw_env(gw.url), "LANG": "C.UTF-8", "TERM": "xterm"}
    env.pop("NO_COLOR")
    shown = on_terminal(env, "status", ok)
    assert "\x1b[32m✓ succeeded\x1b[0m" in shown
    table = on_terminal(env, "tasks")
    assert "\x1b[31m✗ failed\x1b[0m" in table and "\x1b[32m✓ succeeded" in table
    assert "\x1b" not in on_terminal({**env, "NO_COLOR": "1"}, "tasks")
    piped = run_egw("tasks", env=env)  # stdout a pipe
    assert piped.returncode == 0 and "\x1b" not in piped.stdout and "failed" in piped.stdout
    assert "✓" not in run_egw("status", ok, env=env).stdout


def test_help_has_examples_for_every_command() -> None:
    from egw.cli.parser import build

    for name in build().commands:
        done = run_egw(name, "--help")
        assert done.returncode == 0, (name, done.stderr)
        examples = done.stdout.partition("\nexamples:\n")[2]
        assert f"egw {name}" in examples, name


def test_a_spinner_while_a_followed_task_waits_only_on_a_terminal(tmp_path: Path) -> None:
    """`submit --follow` of a task queued behind a busy slot spins on stderr while the
    task waits, erases the line before its output, and writes nothing of it to a pipe."""
    gw = CLIGateway(tmp_path, {"providers": {"local": {"max_concurrent": 1}}})
    gw.start()
    try:
        assert gw.cli("submit", "-q", "--", "sleep", "2").returncode == 0
        master, slave = pty.openpty()
        proc = subprocess.Popen(
            [sys.executable, "-m", "egw", "submit", "--follow", "--", "echo", "hi"],
            stdout=subprocess.PIPE,
            stderr=slave,
            env=egw_env(gw.url),
        )
        os.close(slave)
        err = _drain(master)
        out, _ = proc.communicate(timeout=30)
        assert proc.returncode == 0 and out == b"hi\n"
        shown = err.decode()
        assert "\r| queued" in shown and shown.rstrip("\r\n").endswith("\x1b[K")
        gw.cli("submit", "-q", "--", "sleep", "2")
        piped = gw.cli("submit", "--follow", "--", "echo", "hi")  # stderr a pipe
        assert piped.stdout == "hi\n" and "queued" not in piped.stderr
    finally:
        gw.stop()
