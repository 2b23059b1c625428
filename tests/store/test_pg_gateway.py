"""The gateway on PostgreSQL (``storage.url``): configured with ``${VAR}`` for the password,
reported by ``/readyz`` without it, byte-exact output and event resume, one gateway per
database for `egw serve`, and a gateway killed with SIGKILL leaves its lock behind."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
import yaml
from aiohttp import web
from aiohttp.test_utils import TestClient
from support import (
    READER,
    WRITER,
    GatewayProcess,
    config_dict,
    sse_frames,
    submit_local,
    wait_terminal,
)

from egw.config import parse_config
from egw.core.model import Observation, Task, TaskState, new_task_id, utcnow
from egw.errors import ConfigError
from egw.store import Store
from egw.web.app import create_app

Client = TestClient[web.Request, web.Application]


def test_storage_url_takes_the_password_from_the_environment() -> None:
    data = {"storage": {"url": "postgresql://egw:${EGW_PG_PASSWORD}@db:5432/egw"}}
    cfg = parse_config(data, {"EGW_PG_PASSWORD": "pa55"})
    assert cfg.storage.address == "postgresql://egw:pa55@db:5432/egw"
    assert parse_config({"storage": {"url": "sqlite:///data/x.db"}}, {}).storage.address == (
        "sqlite:///data/x.db"
    )
    assert parse_config({}, {}).storage.address == "data/egw.db"


@pytest.mark.parametrize(
    ("url", "field"),
    [
        ("mysql://db/egw", "storage.url"),
        ("data/egw.db", "storage.url"),
        ("sqlite://data/egw.db", "storage.url"),
    ],
)
def test_a_url_egw_cannot_use_is_refused(url: str, field: str) -> None:
    with pytest.raises(ConfigError) as refused:
        parse_config({"storage": {"url": url}}, {})
    assert refused.value.path == field


def test_the_pool_size_is_bounded() -> None:
    with pytest.raises(ConfigError, match="between 1 and 100"):
        parse_config({"storage": {"pool_size": 0}}, {})


@pytest.fixture
async def pg_api(
    aiohttp_client: Callable[..., Any], tmp_path: Path, pg_url: str
) -> AsyncIterator[Client]:
    url = pg_url.replace("postgresql://postgres@", "postgresql://postgres:${EGW_PG_PW}@")
    data = config_dict(tmp_path, {"storage": {"url": url}})
    cfg = parse_config(data, {"EGW_PG_PW": "unused-with-trust-auth"})
    yield await aiohttp_client(create_app(cfg))


async def test_readyz_names_the_store_and_no_address(pg_api: Client) -> None:
    resp = await pg_api.get("/readyz")
    assert resp.status == 200
    storage = (await resp.json())["storage"]
    assert storage["store"] == "postgresql" and storage["writable"] is True
    assert "postgres" not in json.dumps({k: v for k, v in storage.items() if k != "store"})
    assert storage["size_bytes"] == storage["used_bytes"] > 0


def test_the_start_up_log_names_the_store_without_its_password(tmp_path: Path, pg_url: str) -> None:
    url = pg_url.replace("postgresql://postgres@", "postgresql://postgres:${EGW_PG_PW}@")
    gw = GatewayProcess(tmp_path, {"storage": {"url": url}})
    env_before = os.environ.get("EGW_PG_PW")
    os.environ["EGW_PG_PW"] = "pw-never-logged"
    try:
        gw.start()
    finally:
        if env_before is None:
            del os.environ["EGW_PG_PW"]
        else:
            os.environ["EGW_PG_PW"] = env_before
    gw.stop()
    log = gw.tail(100_000)
    assert "pw-never-logged" not in log
    opening = [line for line in log.splitlines() if "store_opening" in line]
    assert opening and "postgresql://postgres:***@" in opening[0] and "postgresql" in opening[0]


async def test_output_and_events_are_byte_exact_and_resume_exactly(pg_api: Client) -> None:
    script = "printf 'caf\\303\\251 \\377\\000 end'; echo; echo second >&2"
    task = await submit_local(pg_api, "sh", "-c", script)
    await wait_terminal(pg_api, task["id"])
    raw = await (
        await pg_api.get(f"/v1/tasks/{task['id']}/logs", headers={**READER, "Accept": "*/*"})
    ).read()
    assert raw.startswith(b"caf\xc3\xa9 \xff\x00 end\n")
    history = (await (await pg_api.get(f"/v1/tasks/{task['id']}/events", headers=WRITER)).json())[
        "events"
    ]
    sse = {**WRITER, "Accept": "text/event-stream", "Last-Event-ID": str(history[0]["seq"])}
    async with pg_api.get(f"/v1/tasks/{task['id']}/events", headers=sse) as resp:
        last = str(history[-1]["seq"])
        frames = await sse_frames(resp, lambda f: f.get("id") == last)
    assert [int(f["id"]) for f in frames if "id" in f] == [e["seq"] for e in history[1:]]


def test_egw_serve_refuses_a_second_gateway_on_the_database(tmp_path: Path, pg_url: str) -> None:
    (tmp_path / "a").mkdir()
    first = GatewayProcess(tmp_path / "a", {"storage": {"url": pg_url}})
    first.start()
    try:
        config = tmp_path / "second.yaml"
        config.write_text(yaml.safe_dump(config_dict(tmp_path, {"storage": {"url": pg_url}})))
        second = subprocess.run(
            [sys.executable, "-m", "egw", "serve", "--config", str(config), "--port", "0"],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert second.returncode == 1
        last = second.stderr.strip().splitlines()[-1]
        assert last.startswith("egw: postgresql://") and "in use by another egw" in last
        # SIGKILL: the session ends with the process, and so does its lock
        first.kill()
        again = GatewayProcess(tmp_path / "a", {"storage": {"url": pg_url}})
        again.start()
        again.stop()
    finally:
        first.stop()


async def test_text_with_a_nul_neither_fails_a_query_nor_a_write(pg_url: str) -> None:
    """PostgreSQL's text holds no NUL (SQLite's does): a query for one finds nothing, and
    an upstream's text carrying one is stored with U+FFFD instead, not lost with its batch."""
    store = Store(pg_url)
    await store.open()
    try:
        now = utcnow()
        draft = Task(id=new_task_id(), provider="local", spec={}, created_at=now, updated_at=now)
        task, _ = await store.writer.create_task(draft)
        ended = Observation(state=TaskState.FAILED, reason="exit\x00code", exit_code=1)
        done = await store.writer.observe(task.id, ended, source="local", delivery_id="d\x00")
        assert done.status is TaskState.FAILED
        stored = await store.reader.task(task.id)
        assert stored is not None and stored.reason == "exit\ufffdcode"
        assert await store.reader.task("t_\x00") is None
        assert await store.reader.tasks(provider="\x00", labels={"a": "\x00"}) == []
        assert await store.reader.cursor("\x00") is None
    finally:
        await store.close()
