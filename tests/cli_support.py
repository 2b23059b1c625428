"""Helpers for the CLI tests: `egw serve` as a real process, and the real `egw` command."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from support import WRITER_TOKEN, GatewayProcess


def egw_env(url: str, token: str | None = WRITER_TOKEN) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("EGW_")}
    env.update(EGW_URL=url, NO_COLOR="1")
    if token is not None:
        env["EGW_TOKEN"] = token
    return env


def run_egw(
    *args: str, env: dict[str, str] | None = None, timeout: float = 30, **kw: Any
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "egw", *args],
        capture_output=True,
        text=True,
        env=env if env is not None else egw_env("http://127.0.0.1:9"),
        timeout=timeout,
        **kw,
    )


class CLIGateway(GatewayProcess):
    def cli(self, *args: str, timeout: float = 30) -> subprocess.CompletedProcess[str]:
        return run_egw(*args, env=egw_env(self.url), timeout=timeout)

    def popen(self, *args: str, **kw: Any) -> subprocess.Popen[bytes]:
        return subprocess.Popen(
            [sys.executable, "-m", "egw", *args],
            env=egw_env(self.url),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            **kw,
        )


def running_gateway(tmp_path: Path) -> Iterator[CLIGateway]:
    """For a fixture: ``yield from running_gateway(tmp_path)``."""
    gw = CLIGateway(tmp_path)
    gw.start()
    yield gw
    gw.stop()
