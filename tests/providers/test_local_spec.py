"""A local submit's command lookup: found commands are trusted for a moment, missing ones never."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest

from egw.errors import InvalidRequest
from egw.providers.local.spec import FoundCommands, validate_task


def _install(folder: Path, name: str) -> Path:
    path = folder / name
    path.write_text("#!/bin/sh\nexit 0\n")
    path.chmod(path.stat().st_mode | stat.S_IXUSR)
    return path


def test_a_command_installed_after_a_refused_submit_is_accepted_at_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    found = FoundCommands(ttl_s=3600)
    with pytest.raises(InvalidRequest, match="not an executable file on the gateway's PATH"):
        validate_task({"command": "egw-tool"}, None, found)
    _install(tmp_path, "egw-tool")
    assert validate_task({"command": "egw-tool"}, None, found).command == "egw-tool"


def test_a_found_command_is_trusted_for_its_ttl_then_looked_up_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    clock = [100.0]
    monkeypatch.setattr("egw.providers.local.spec.time.monotonic", lambda: clock[0])
    found = FoundCommands(ttl_s=1.0)
    tool = _install(tmp_path, "egw-tool")
    validate_task({"command": "egw-tool"}, None, found)
    tool.unlink()
    clock[0] += 0.5  # within the ttl: not looked up again
    validate_task({"command": "egw-tool"}, None, found)
    clock[0] += 0.6  # past it: looked up, and gone
    with pytest.raises(InvalidRequest):
        validate_task({"command": "egw-tool"}, None, found)


def test_a_command_found_on_one_path_is_not_taken_as_found_on_another(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    first, second = tmp_path / "a", tmp_path / "b"
    first.mkdir()
    second.mkdir()
    _install(first, "egw-tool")
    found = FoundCommands(ttl_s=3600)
    monkeypatch.setenv("PATH", str(first))
    validate_task({"command": "egw-tool"}, None, found)
    monkeypatch.setenv("PATH", str(second))
    with pytest.raises(InvalidRequest):
        validate_task({"command": "egw-tool"}, None, found)
