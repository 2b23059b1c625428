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
from typing import Any

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
    assert listed.returncode == 0 and listed.stdout.startswith(
        "alice\ttasks:read\tdefault\tsha256:"
    )
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


def _get(url: str, token: str, path: str) -> tuple[int, Any]:
    req = urllib.request.Request(f"{url}{path}", headers={"Authorization": f"Bearer {token}"})
    try:
        with urllib.request.urlopen(req, timeout=5) as r:
            return int(r.status), json.loads(r.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def _post(url: str, token: str, body: dict[str, Any]) -> tuple[int, Any]:
    req = urllib.request.Request(
        f"{url}/v1/tasks",
        data=json.dumps(body).encode(),
        headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
    )
    try:
        with urllib.request.urlopen(req, timeout=5) as r:
            return int(r.status), json.loads(r.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def test_a_created_token_keeps_to_its_namespaces(tmp_path: Path) -> None:
    """`egw token create --namespaces`: a lasting team token sees and runs only its team's
    work, as a config token with the same namespaces does."""
    token_file = tmp_path / "tokens.json"
    teams = {"team-a": {}, "team-b": {}}
    gw = GatewayProcess(tmp_path, {"auth": {"token_file": str(token_file)}, "namespaces": teams})
    cfg = str(gw.config)
    made = run_egw("token", "--config", cfg, "create", "a", "--namespaces", "team-a")
    assert made.returncode == 0, made.stderr
    a = made.stdout.strip()
    made = run_egw("token", "--config", cfg, "create", "b", "--namespaces", "team-b")
    b = made.stdout.strip()
    assert json.loads(token_file.read_text())["tokens"][0]["namespaces"] == ["team-a"]
    assert "\tteam-a\t" in run_egw("token", "--config", cfg, "list").stdout
    refused = run_egw("token", "--config", cfg, "create", "c", "--namespaces", "team-z")
    assert refused.returncode == 2 and "unknown namespace 'team-z'" in refused.stderr
    gw.start()
    try:
        body = {"provider": "local", "task": {"command": "true"}}
        status, task = _post(gw.url, b, body)
        assert status == 202 and task["namespace"] == "team-b", task
        assert _get(gw.url, a, f"/v1/tasks/{task['id']}")[0] == 404
        assert _get(gw.url, a, "/v1/tasks")[1]["tasks"] == []
        assert _get(gw.url, b, f"/v1/tasks/{task['id']}")[0] == 200
        status, err = _post(gw.url, a, {**body, "namespace": "team-b"})
        assert status in (403, 404), err
    finally:
        gw.stop()


@pytest.mark.parametrize(
    ("spaces", "named"),
    [
        ('["team-z"]', "tokens[0].namespaces[0]"),  # not declared in the config
        ('["Team A"]', "tokens[0].namespaces[0]"),
        ('["*", "team-a"]', "tokens[0].namespaces"),
        ("[]", "tokens[0].namespaces"),
    ],
)
def test_serve_refuses_a_token_file_with_bad_namespaces(
    tmp_path: Path, spaces: str, named: str
) -> None:
    token_file = tmp_path / "tokens.json"
    sha = "0" * 64
    token_file.write_text(
        f'{{"tokens": [{{"name": "a", "sha256": "{sha}", "scopes": [], "namespaces": {spaces}}}]}}'
    )
    gw = GatewayProcess(
        tmp_path, {"auth": {"token_file": str(token_file)}, "namespaces": {"team-a": {}}}
    )
    r = subprocess.run(
        [sys.executable, "-m", "egw", "serve", "--config", str(gw.config)],
        capture_output=True,
        text=True,
        timeout=20,
    )
    assert r.returncode == 2, r.stderr
    assert named in r.stderr and "Traceback" not in r.stderr
