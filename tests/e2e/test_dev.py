"""`egw dev` as a process: one task on each provider through the CLI, follow, cancel."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

TASKS = {
    "local": ["--", "echo", "hello from local"],
    "nomad": [
        "--task",
        json.dumps(
            {
                "job_id": "demo-job-1",
                "image": "busybox:latest",
                "command": "echo",
                "args": ["hello from nomad"],
            }
        ),
    ],
    "github_actions": [
        "--task",
        json.dumps({"workflow_id": "deploy.yml", "ref": "main", "inputs": {"env": "prod"}}),
    ],
    "cloud_run": [
        "--task",
        json.dumps(
            {
                "project": "egw-dev",
                "region": "us-central1",
                "job": "hello",
                "args": ["hello from cloud run"],
            }
        ),
    ],
}
EXPECTED = {
    "local": "hello from local",
    "nomad": "hello from nomad",
    "github_actions": "env=prod",
    "cloud_run": "hello from cloud run",
}


@pytest.fixture
def dev(tmp_path: Path) -> Iterator[dict[str, Any]]:
    info = tmp_path / "info.json"
    with (tmp_path / "dev.log").open("wb") as out:
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "egw",
                "dev",
                "--port",
                "0",
                "--info",
                str(info),
                "--time-scale",
                "0.05",
            ],
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        deadline = time.monotonic() + 20
        while not info.exists() or not info.read_text().strip().endswith("}"):
            assert proc.poll() is None, (tmp_path / "dev.log").read_text()
            assert time.monotonic() < deadline, "egw dev did not start"
            time.sleep(0.05)
        data = json.loads(info.read_text())
        assert oct(info.stat().st_mode & 0o777) == "0o600"  # it holds the token
        yield data
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, (tmp_path / "dev.log").read_text()


def cli(
    info: dict[str, Any], *args: str, token: str = "token", **extra: str
) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "EGW_URL": info["gateway"], "EGW_TOKEN": info[token], **extra}
    return subprocess.run(
        [sys.executable, "-m", "egw", *args], capture_output=True, text=True, env=env, timeout=60
    )


def test_one_task_on_each_provider(dev: dict[str, Any]) -> None:
    assert set(dev) >= {"gateway", "token", "nomad", "github", "github_webhook_secret", "cloud_run"}
    for provider, args in TASKS.items():
        done = cli(dev, "submit", "--follow", "--provider", provider, *args)
        assert done.returncode == 0, (provider, done.stdout, done.stderr)
        assert EXPECTED[provider] in done.stdout, (provider, done.stdout)
    listed = json.loads(cli(dev, "tasks", "--json").stdout)["tasks"]
    assert sorted(t["provider"] for t in listed) == sorted(TASKS)
    assert {t["status"] for t in listed} == {"succeeded"}


def test_cancel_through_the_cli(dev: dict[str, Any]) -> None:
    task = json.loads(cli(dev, "submit", "--json", "--", "sleep", "60").stdout)
    assert cli(dev, "cancel", task["id"]).returncode == 0
    waited = cli(dev, "status", task["id"], "--wait")
    assert waited.returncode == 125 and "cancelled" in waited.stdout


def test_info_carries_each_simulators_credentials(dev: dict[str, Any]) -> None:
    """Another suite drives the simulators with an official client from ``--info`` alone."""
    from githubkit import GitHub
    from githubkit.exception import RequestFailed

    owner, repo = dev["github_repository"].split("/")
    with GitHub(dev["github_token"], base_url=dev["github"], http_cache=False) as github:
        run_id = github.rest.actions.create_workflow_dispatch(
            owner, repo, "deploy.yml", ref="main"
        ).parsed_data.workflow_run_id
        assert github.rest.actions.get_workflow_run(owner, repo, run_id).parsed_data.id == run_id
    with GitHub("ghp_wrong", base_url=dev["github"], http_cache=False, auto_retry=False) as bad:
        with pytest.raises(RequestFailed) as err:
            bad.rest.actions.get_workflow_run(owner, repo, run_id)
        assert err.value.response.status_code == 401
    url = f"{dev['cloud_run']}/v2/{dev['cloud_run_job']}/executions"
    for token, status in ((dev["cloud_run_token"], 200), ("ya29.wrong", 401)):
        request = urllib.request.Request(url, headers={"Authorization": f"Bearer {token}"})
        try:
            with urllib.request.urlopen(request, timeout=10) as resp:
                got, body = resp.status, json.load(resp)
        except urllib.error.HTTPError as exc:
            got, body = exc.code, json.load(exc)
        assert got == status, body
    assert body["error"]["status"] == "UNAUTHENTICATED"


def test_two_teams_share_the_dev_gateway(dev: dict[str, Any]) -> None:
    """The two team tokens `egw dev` prints: each runs in and sees its own namespace only."""
    github = TASKS["github_actions"]
    done = cli(
        dev, "submit", "--json", "--provider", "github_actions", *github, token="team_a_token"
    )
    assert done.returncode == 0, done.stderr
    task = json.loads(done.stdout)
    assert task["namespace"] == "team-a"
    # team-a may not use the local runner, nor team-b's namespace: refused (exit code 121)
    local = cli(dev, "submit", "--", "true", token="team_a_token")
    assert local.returncode == 121 and "'local' is not allowed" in local.stderr, local.stderr
    other = cli(dev, "submit", "--", "true", token="team_a_token", EGW_NAMESPACE="team-b")
    assert other.returncode == 121 and "'team-b'" in other.stderr, other.stderr
    # team-b sees nothing of it: not in its list, and no such task by id
    listed = cli(dev, "tasks", "--json", token="team_b_token")
    assert json.loads(listed.stdout)["tasks"] == []
    status = cli(dev, "status", task["id"], token="team_b_token")
    assert status.returncode == 121 and "no task" in status.stderr, status.stderr
    # the team-b token runs the Cloud Run job in its namespace; the table shows the namespace
    ran = cli(
        dev,
        "submit",
        "--follow",
        "--provider",
        "cloud_run",
        *TASKS["cloud_run"],
        token="team_b_token",
    )
    assert ran.returncode == 0, ran.stderr
    table = cli(dev, "tasks", token="team_b_token").stdout.splitlines()
    assert "NAMESPACE" in table[0] and len(table) == 2 and " team-b " in table[1]
    # the dev token sees both, and filters by namespace
    both = json.loads(cli(dev, "tasks", "--json").stdout)["tasks"]
    assert {t["namespace"] for t in both} == {"team-a", "team-b"}
    only_a = json.loads(cli(dev, "tasks", "--json", "--namespace", "team-a").stdout)["tasks"]
    assert [t["id"] for t in only_a] == [task["id"]]
