"""The gateway on PostgreSQL (``storage.url``): configured with ``${VAR}`` for the password,
reported by ``/readyz`` without it, byte-exact output and event resume, and two
`egw serve` replicas on one database, each tailing the other's tasks."""

from __future__ import annotations

import asyncio
import base64
import json
import os
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest
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


async def test_readyz_and_metrics_show_the_replica_its_leases_and_the_replicas_seen(
    pg_api: Client,
) -> None:
    deadline = asyncio.get_running_loop().time() + 5
    while True:
        replica = (await (await pg_api.get("/readyz")).json())["replica"]
        if replica["leases"] == ["local-reaper", "prune", "watchdog"] == sorted(replica["holders"]):
            break
        assert asyncio.get_running_loop().time() < deadline, replica
        await asyncio.sleep(0.05)
    assert replica["id"] in replica["seen"]
    assert set(replica["holders"].values()) == {replica["id"]}
    text = await (await pg_api.get("/metrics", headers=READER)).text()
    assert 'egw_leases_held{lease="watchdog"} 1.0' in text
    assert "egw_replicas_seen 1.0" in text and "egw_lease_failovers_total 0.0" in text


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


async def test_two_egw_serve_replicas_share_the_database_and_tail_each_others_tasks(
    tmp_path: Path, pg_url: str
) -> None:
    """Two `egw serve` on one database: a replica starting leaves the local tasks of a
    live one alone; a cancel sent to B stops A's process; a task submitted to A is
    tailed live on B (its output byte-exact, its events in order, the stream ending with
    the task), and a replica killed with SIGKILL does not stop another from starting."""
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    a = GatewayProcess(tmp_path / "a", {"storage": {"url": pg_url}})
    b = GatewayProcess(tmp_path / "b", {"storage": {"url": pg_url}})
    a.start()
    try:
        async with aiohttp.ClientSession() as http:
            body = {"provider": "local", "task": {"command": "sleep", "args": ["30"]}}
            async with http.post(f"{a.url}/v1/tasks", json=body, headers=WRITER) as resp:
                sleeper = await resp.json()
            assert sleeper["status"] == "running", sleeper
            b.start()  # it resumes no task of A's, which is alive
            async with http.get(f"{b.url}/v1/tasks/{sleeper['id']}", headers=READER) as resp:
                assert (await resp.json())["status"] == "running"
            # a cancel sent to B: recorded there, carried out by A, which runs the process
            async with http.delete(f"{b.url}/v1/tasks/{sleeper['id']}", headers=WRITER) as resp:
                assert resp.status < 300, await resp.text()
            for _ in range(100):
                async with http.get(f"{a.url}/v1/tasks/{sleeper['id']}", headers=READER) as resp:
                    status = (await resp.json())["status"]
                if status == "cancelled":
                    break
                await asyncio.sleep(0.05)
            assert status == "cancelled"
            script = "printf 'one\\n'; sleep 0.5; printf 'caf\\303\\251 \\377 two\\n'"
            body = {"provider": "local", "task": {"command": "sh", "args": ["-c", script]}}
            async with http.post(f"{a.url}/v1/tasks", json=body, headers=WRITER) as resp:
                assert resp.status == 202, await resp.text()
                task = await resp.json()
            sse = {**READER, "Accept": "text/event-stream"}
            async with http.get(f"{b.url}/v1/tasks/{task['id']}/logs", headers=sse) as resp:
                frames = await asyncio.wait_for(sse_frames(resp), 20)
            data = [json.loads(f["data"]) for f in frames if f.get("event") in ("log", "log-b64")]
            got = b"".join(
                base64.b64decode(d["base64"]) if "base64" in d else d["text"].encode() for d in data
            )
            assert frames[-1].get("event") == "end"
            assert got == b"one\ncaf\xc3\xa9 \xff two\n"
            url = f"/v1/tasks/{task['id']}/events"
            async with http.get(f"{a.url}{url}", headers=READER) as resp:
                on_a = [e["seq"] for e in (await resp.json())["events"]]
            async with http.get(f"{b.url}{url}", headers=READER) as resp:
                on_b = [e["seq"] for e in (await resp.json())["events"]]
            assert on_a == on_b and len(on_a) >= 3
    finally:
        a.kill()
        b.stop()
    again = GatewayProcess(tmp_path / "a", {"storage": {"url": pg_url}})
    again.start()
    again.stop()


async def test_a_dead_replicas_local_tasks_end_gateway_lost_or_run_on_another(
    tmp_path: Path, pg_url: str
) -> None:
    """kill -9 of a replica: its running local task ends ``failed: gateway lost`` (never
    left ``running``) and its queued one runs on another replica, within about
    ``storage.lease_s``."""
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    storage = {"url": pg_url, "lease_s": 1.0}
    local = {"local": {"max_concurrent": 1}}
    a = GatewayProcess(tmp_path / "a", {"storage": storage, "providers": local})
    b = GatewayProcess(tmp_path / "b", {"storage": storage})
    a.start()
    b.start()
    try:
        async with aiohttp.ClientSession() as http:
            made = []
            for args in (["30"], ["0"]):
                body = {"provider": "local", "task": {"command": "sleep", "args": args}}
                async with http.post(f"{a.url}/v1/tasks", json=body, headers=WRITER) as resp:
                    made.append(await resp.json())
            assert [t["status"] for t in made] == ["running", "queued"]
            a.kill()
            ends: dict[str, str] = {}
            for _ in range(200):
                for t in made:
                    async with http.get(f"{b.url}/v1/tasks/{t['id']}", headers=READER) as r:
                        got = await r.json()
                    ends[t["id"]] = f"{got['status']}: {got['reason']}"
                if all(e.split(":")[0] in ("failed", "succeeded") for e in ends.values()):
                    break
                await asyncio.sleep(0.05)
            assert ends == {
                made[0]["id"]: "failed: gateway lost",
                made[1]["id"]: "succeeded: None",
            }
    finally:
        a.stop()
        b.stop()


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
