"""`egw token create|list|revoke`: a token that outlasts `egw serve` restarts, kept only
as its sha256 in a 0600 file, and refused once revoked (the real `egw` command and server)."""

from __future__ import annotations

import hashlib
import json
import stat
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from cli_support import run_egw
from support import GatewayProcess, free_port


def _status(url: str, token: str) -> int:
    req = urllib.request.Request(f"{url}/v1/tasks", headers={"Authorization": f"Bearer {token}"})
    try:
        with urllib.request.urlopen(req, timeout=5) as r:
            return int(r.status)
    except urllib.error.HTTPError as exc:
        return exc.code


def test_a_created_token_lasts_across_restarts_until_revoked(tmp_path: Path) -> None:
    token_file = tmp_path / "data" / "tokens.json"
    gw = GatewayProcess(tmp_path, {"auth": {"token_file": str(token_file)}})
    cfg = str(gw.config)

    made = run_egw("token", "--config", cfg, "create", "alice", "--scopes", "tasks:read")
    assert made.returncode == 0, made.stderr
    token = made.stdout.strip()
    assert len(token) >= 32 and "only time" in made.stderr
    assert stat.S_IMODE(token_file.stat().st_mode) == 0o600
    text = token_file.read_text()
    assert token not in text
    assert hashlib.sha256(token.encode()).hexdigest() in text
    assert not [p for p in token_file.parent.iterdir() if p != token_file]  # no temp left

    listed = run_egw("token", "--config", cfg, "list")
    assert listed.returncode == 0 and listed.stdout.startswith("alice\ttasks:read\tsha256:")
    assert token not in listed.stdout

    for _ in range(2):  # the same token after a restart
        gw.start()
        try:
            assert _status(gw.url, token) == 200
        finally:
            gw.stop()

    revoked = run_egw("token", "--config", cfg, "revoke", "alice")
    assert revoked.returncode == 0, revoked.stderr
    assert json.loads(token_file.read_text()) == {"tokens": []}
    gw.start()
    try:
        assert _status(gw.url, token) == 401
    finally:
        gw.stop()


def test_token_usage_errors_are_one_line(tmp_path: Path) -> None:
    f = str(tmp_path / "t.json")
    assert run_egw("token", "--file", f, "create", "a").returncode == 0
    for args in (
        ["create", "a"],  # a second with that name
        ["create", "b", "--scopes", "root"],
        ["create", "bad name!"],
        ["revoke", "nobody"],
    ):
        r = run_egw("token", "--file", f, *args)
        assert r.returncode == 2, (args, r.stderr)
        assert len(r.stderr.splitlines()) == 1 and "Traceback" not in r.stderr
    none = run_egw("token", "list")  # no config, no --file: nowhere to keep them
    assert none.returncode == 2 and "auth.token_file" in none.stderr


@pytest.mark.parametrize(
    "content, named",
    [
        ('{"tokens": [{"name": "a", "token": "abcdefghijklmnopqrstuvwxyz"}]}', "tokens[0].token"),
        ('{"tokens": [{"name": "a", "sha256": "nothex", "scopes": []}]}', "tokens[0].sha256"),
        ('{"tokens": [', "not valid JSON"),
    ],
)
def test_serve_names_the_file_and_entry_of_a_bad_token_file(
    tmp_path: Path, content: str, named: str
) -> None:
    token_file = tmp_path / "tokens.json"
    token_file.write_text(content)
    gw = GatewayProcess(tmp_path, {"auth": {"token_file": str(token_file)}})
    r = subprocess.run(
        [
            sys.executable,
            "-m",
            "egw",
            "serve",
            "--config",
            str(gw.config),
            "--port",
            str(free_port()),
        ],
        capture_output=True,
        text=True,
        timeout=20,
    )
    assert r.returncode == 2
    assert str(token_file) in r.stderr and named in r.stderr
    assert "Traceback" not in r.stderr and len(r.stderr.strip().splitlines()) == 1


def test_the_run_token_points_to_egw_token_create(tmp_path: Path) -> None:
    config = tmp_path / "c.yaml"
    config.write_text(json.dumps({"storage": {"path": str(tmp_path / "e.db")}}))
    cmd = [sys.executable, "-m", "egw", "serve", "--config", str(config)]
    with subprocess.Popen(
        [*cmd, "--port", str(free_port())], stderr=subprocess.PIPE, text=True
    ) as p:
        try:
            assert p.stderr is not None
            lines = [p.stderr.readline(), p.stderr.readline()]
        finally:
            p.terminate()
            p.wait(15)
    assert "this run's token" in lines[0]
    assert "egw token create" in lines[1]
