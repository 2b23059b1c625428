"""`egw audit` on a real `egw serve`: the table, `--json`, each filter as a flag, paging
with `--limit`/`--after` and the "more:" hint, `--all`, the admin scope and bad flags."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from cli_support import CLIGateway, egw_env, run_egw, running_gateway
from support import ADMIN_TOKEN, READER_TOKEN


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[CLIGateway]:
    yield from running_gateway(tmp_path_factory.mktemp("audit"))


@pytest.fixture(scope="module")
def work(gateway: CLIGateway) -> dict[str, Any]:
    """``writer`` runs two tasks and cancels one of them."""
    ids = []
    for args in (["true"], ["sleep", "30"]):
        done = gateway.cli("submit", "-q", "--", *args)
        assert done.returncode == 0, done.stderr
        ids.append(done.stdout.strip())
    assert gateway.cli("status", ids[0], "--wait").returncode == 0
    assert gateway.cli("cancel", ids[1]).returncode == 0
    assert gateway.cli("status", ids[1], "--wait").returncode == 125
    return {"done": ids[0], "cancelled": ids[1]}


def audit(gw: CLIGateway, *args: str, token: str | None = None) -> Any:
    env = egw_env(gw.url) if token is None else egw_env(gw.url, token)
    return run_egw("audit", *args, env=env)


def as_json(gw: CLIGateway, *args: str, token: str = ADMIN_TOKEN) -> dict[str, Any]:
    done = audit(gw, "--json", *args, token=token)
    assert done.returncode == 0, done.stderr
    body: dict[str, Any] = json.loads(done.stdout)
    return body


def test_the_table_and_its_filters(gateway: CLIGateway, work: dict[str, Any]) -> None:
    table = audit(gateway, "--type", "cancel_requested")
    assert table.returncode == 0, table.stderr
    header, *rows = table.stdout.splitlines()
    assert header.split() == ["SEQ", "AT", "ACTOR", "KIND", "TASK", "STATUS"]
    assert len(rows) == 1 and work["cancelled"] in rows[0] and "writer" in rows[0]
    every = as_json(gateway, "--all")["events"]
    assert {e["actor"] for e in every} == {"writer", None}  # admin sees all
    for args, keep in (
        (
            ["--type", "submitted", "--type", "cancel_requested"],
            lambda e: e["kind"] in ("submitted", "cancel_requested"),
        ),
        (["--task", work["done"]], lambda e: e["task_id"] == work["done"]),
        (["--actor", "writer"], lambda e: e["actor"] == "writer"),
        (["--provider", "local"], lambda e: True),
        (["--since", every[2]["at"]], lambda e: e["at"] >= every[2]["at"]),
        (["--until", every[2]["at"]], lambda e: e["at"] < every[2]["at"]),
    ):
        assert as_json(gateway, "--all", *args)["events"] == [e for e in every if keep(e)], args
    assert as_json(gateway, "--since", "1d")["events"] == every[:50]
    assert as_json(gateway, "--until", "1d")["events"] == []


def test_paging_with_limit_and_after(gateway: CLIGateway, work: dict[str, Any]) -> None:
    every = as_json(gateway, "--all", "--limit", "2")["events"]
    first = audit(gateway, "--limit", "2", token=ADMIN_TOKEN)
    assert len(first.stdout.splitlines()) == 3
    assert first.stderr.startswith("more: --after ")
    seen, after = [], "0"
    while True:
        page = as_json(gateway, "--limit", "2", "--after", after)
        seen += page["events"]
        if page["next_after"] is None:
            break
        after = str(page["next_after"])
    assert seen == every and len(every) > 4
    assert page["last_seq"] == every[-1]["seq"]


def test_without_admin_only_the_tokens_own_events(
    gateway: CLIGateway, work: dict[str, Any]
) -> None:
    mine = json.loads(audit(gateway, "--json", "--all").stdout)["events"]  # the writer's token
    assert mine and {e["actor"] for e in mine} == {"writer"}
    refused = audit(gateway, "--actor", "admin")
    assert refused.returncode == 121 and "admin" in refused.stderr
    assert as_json(gateway, "--all", token=READER_TOKEN)["events"] == []


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (["--limit", "0"], "--limit"),
        (["--since", "yesterday"], "--since"),
        (["--until", "soon"], "--until"),
        (["--after", "-1"], "--after"),
        (["--type", "Bad!"], "type"),
    ],
)
def test_bad_flags(gateway: CLIGateway, args: list[str], says: str) -> None:
    done = audit(gateway, *args)
    assert done.returncode in (120, 121), done
    assert says in done.stderr


def test_completion_knows_the_command(tmp_path: Path) -> None:
    done = run_egw("completion", "bash")
    assert " audit) words=" in done.stdout and "--since" in done.stdout
