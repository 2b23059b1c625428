"""The README's worked example, run as written against a real `egw serve`: its `sh`
blocks between the worked-example markers, in order, in one bash with ``set -eu``
(the lines that set ``EGW_URL`` and ``EGW_TOKEN`` are replaced by this gateway's)."""

from __future__ import annotations

import re
import shutil
import stat
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from cli_support import CLIGateway, egw_env, running_gateway

README = Path(__file__).resolve().parents[2] / "README.md"


@pytest.fixture
def cli_gateway(tmp_path: Path) -> Iterator[CLIGateway]:
    yield from running_gateway(tmp_path)


def worked_example() -> str:
    text = README.read_text(encoding="utf-8")
    section = text.split("<!-- worked-example:begin -->")[1].split("<!-- worked-example:end -->")[0]
    blocks = re.findall(r"```sh\n(.*?)```", section, flags=re.S)
    assert len(blocks) == 3, "the worked example is three sh blocks: setup, curl, CLI"
    lines = "".join(blocks).splitlines()
    return "\n".join(line for line in lines if not line.startswith("export EGW_"))


@pytest.mark.skipif(shutil.which("curl") is None, reason="the example uses curl")
def test_the_worked_example_runs_as_written(cli_gateway: CLIGateway, tmp_path: Path) -> None:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    shim = bin_dir / "egw"  # `egw` as installed: this interpreter's egw
    shim.write_text(f'#!/bin/sh\nexec "{sys.executable}" -m egw "$@"\n')
    shim.chmod(shim.stat().st_mode | stat.S_IXUSR)
    env = egw_env(cli_gateway.url)
    env["PATH"] = f"{bin_dir}:{env['PATH']}"
    done = subprocess.run(
        ["bash", "-eu", "-c", worked_example()],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    out = done.stdout
    assert "step 1" in out  # the curl follow saw the task's output
    assert '"status": "cancelling"' in out or '"status":"cancelling"' in out  # cancel: 202
    assert "building\ndone\n" in out
    assert "exit code 125" in out
    assert out.rstrip().splitlines()[-1].endswith(" nap")  # egw tasks: both naps
