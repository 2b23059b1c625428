"""`egw completion bash|zsh` prints a script made from the parser: valid bash that
completes the subcommands and each one's options."""

from __future__ import annotations

import shutil
import subprocess

import pytest
from cli_support import run_egw


def complete(script: str, *words: str) -> list[str]:
    line = " ".join(words)
    probe = (
        f"{script}\nCOMP_WORDS=({line}); COMP_CWORD={len(words) - 1}; _egw; "
        'printf "%s\\n" "${COMPREPLY[@]}"'
    )
    done = subprocess.run(["bash", "-c", probe], capture_output=True, text=True, timeout=10)
    assert done.returncode == 0, done.stderr
    return done.stdout.split()


def test_bash_script_is_valid_and_completes() -> None:
    done = run_egw("completion", "bash")
    assert done.returncode == 0, done.stderr
    script = done.stdout
    check = subprocess.run(["bash", "-n"], input=script, capture_output=True, text=True)
    assert check.returncode == 0, check.stderr
    commands = "cancel completion dev events logs migrate rerun serve status submit tasks token"
    commands += " watch audit circuits"
    assert sorted(complete(script, "egw", "")) == sorted(
        [*commands.split(" "), "--help", "--version"]
    )
    assert complete(script, "egw", "lo") == ["logs"]
    assert "--tail" in complete(script, "egw", "logs", "--t")
    assert complete(script, "egw", "completion", "z") == ["zsh"]


@pytest.mark.skipif(shutil.which("zsh") is None, reason="no zsh here")
def test_zsh_script_is_valid() -> None:
    done = run_egw("completion", "zsh")
    check = subprocess.run(["zsh", "-n"], input=done.stdout, capture_output=True, text=True)
    assert check.returncode == 0, check.stderr


def test_unknown_shell_is_a_usage_error() -> None:
    done = run_egw("completion", "fish")
    assert done.returncode == 2 and "invalid choice" in done.stderr
