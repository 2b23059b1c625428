"""Point 7: task output has a cap, and the database a watermark.

A real local task that prints far more than ``providers.local.max_log_bytes`` keeps its
head and its tail, every offset as written, one ``log_truncated`` event, and SSE clients
(from the start, or resuming inside the dropped part) see bytes in order, never twice.
Past ``storage.max_bytes`` a submit is refused with 503 ``storage_full`` (JSON), and
accepted again once retention has made room.
"""

from __future__ import annotations

import asyncio
import json
import sys
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient
from support import READER, WRITER, make_config, sse_frames, submit_local, wait_terminal

from egw.config import Config
from egw.errors import ConfigError
from egw.metrics import Metrics
from egw.service.storage import StorageLimits
from egw.service.tasks import TaskService
from egw.store.ops import retention_cutoff
from egw.web.app import create_app
from egw.web.keys import service_key

Client = TestClient[web.Request, web.Application]

#: 100,000 numbered lines of 10 bytes: 1,000,000 bytes, each line telling where it is
NUMBERS = "import sys\nfor i in range(100000): sys.stdout.write(f'{i:09d}\\n')\n"
OUTPUT = b"".join(b"%09d\n" % i for i in range(100000))


async def start(aiohttp_client: Callable[..., Any], cfg: Config) -> Client:
    # the composition root hands the config's limits to the service (``limit_storage``)
    api: Client = await aiohttp_client(create_app(cfg))
    return api


async def measured(service: TaskService, check: Callable[[int], bool]) -> bool:
    for _ in range(60):
        if check(service.store.writer.used_bytes):
            return True
        await asyncio.sleep(0.05)
    return False


async def test_output_past_the_cap_keeps_head_and_tail_for_every_reader(
    aiohttp_client: Callable[..., Any], tmp_path: Path
) -> None:
    cfg = make_config(tmp_path, {"providers": {"local": {"max_log_bytes": 65536}}})
    api = await start(aiohttp_client, cfg)
    task = await submit_local(api, sys.executable, "-c", NUMBERS)
    done = await wait_terminal(api, task["id"])
    assert done["status"] == "succeeded"
    head, tail = OUTPUT[:32768], OUTPUT[-32768:]

    resp = await api.get(f"/v1/tasks/{task['id']}/logs", headers=READER)
    assert resp.headers["X-Egw-Offset"] == str(len(OUTPUT))  # offsets count every byte
    assert await resp.read() == head + tail

    resp = await api.get(f"/v1/tasks/{task['id']}/events", headers=READER)
    cut = [e for e in (await resp.json())["events"] if e["kind"] == "log_truncated"]
    assert len(cut) == 1 and cut[0]["applied"] is False
    assert cut[0]["data"] == {
        "max_log_bytes": 65536, "head_bytes": 32768, "tail_bytes": 32768, "dropped_from": 32768
    }  # fmt: skip

    sse = {"Accept": "text/event-stream", **READER}
    for resume, expected in ((None, head + tail), (500_000, tail), (40_000, tail)):
        headers = sse if resume is None else {**sse, "Last-Event-ID": str(resume)}
        resp = await api.get(f"/v1/tasks/{task['id']}/logs", headers=headers)
        frames = await sse_frames(resp, stop=lambda f: f.get("event") == "end")
        logs = [f for f in frames if f.get("event") == "log"]
        ids = [int(f["id"]) for f in logs]
        assert ids == sorted(set(ids))  # in order, never twice
        text = "".join(json.loads(f["data"])["text"] for f in logs).encode()
        assert text == expected, resume
        assert frames[-1]["event"] == "end"


@pytest.mark.sqlite_only(reason="PostgreSQL compresses the repetitive output this test writes")
async def test_submits_are_refused_past_max_bytes_and_accepted_after_a_prune(
    aiohttp_client: Callable[..., Any], tmp_path: Path
) -> None:
    cfg = make_config(tmp_path, {"storage": {"max_bytes": 1 << 20}})
    api = await start(aiohttp_client, cfg)
    service = api.app[service_key]
    big = await submit_local(api, sys.executable, "-c", NUMBERS.replace("100000", "150000"))
    assert (await wait_terminal(api, big["id"]))["status"] == "succeeded"
    # the writer measures its pages at most once a second after writes
    assert await measured(service, lambda used: used > 1 << 20)

    resp = await api.post(
        "/v1/tasks", json={"provider": "local", "task": {"command": "true"}}, headers=WRITER
    )
    assert resp.status == 503
    assert resp.headers["Retry-After"] == "60"
    error = (await resp.json())["error"]
    assert error["code"] == "storage_full"
    assert error["details"]["max_bytes"] == 1 << 20
    assert error["details"]["used_bytes"] > 1 << 20

    resp = await api.get("/readyz")
    body = await resp.json()
    assert resp.status == 200  # still ready for the tasks it has
    assert body["storage"]["full"] is True and body["storage"]["max_bytes"] == 1 << 20
    metrics = Metrics().render(
        tasks_by_status={}, health={}, sse_connections=0, storage=body["storage"]
    )
    assert b"egw_storage_used_bytes " in metrics and b"egw_storage_writable 1.0" in metrics
    assert b"egw_storage_max_bytes 1.048576e+06" in metrics
    assert b"egw_store_write_refusals_total 0.0" in metrics

    # retention removes the finished task: its pages are free, and submits are accepted
    await service.store.writer.prune(retention_cutoff(0) + timedelta(seconds=1))
    assert await measured(service, lambda used: used < 1 << 20)
    again = await submit_local(api, "true")
    assert (await wait_terminal(api, again["id"]))["status"] == "succeeded"


@pytest.mark.parametrize(
    ("overrides", "key"),
    [
        ({"storage": {"max_log_bytes": 10**400}}, "storage.max_log_bytes"),
        ({"storage": {"max_log_bytes": 100}}, "storage.max_log_bytes"),
        ({"storage": {"max_bytes": 1000}}, "storage.max_bytes"),
        ({"storage": {"max_bytes": 2**60}}, "storage.max_bytes"),
        ({"providers": {"local": {"max_log_bytes": -1}}}, "providers.local.max_log_bytes"),
        ({"providers": {"nomad": {"max_log_bytes": 2**64}}}, "providers.nomad.max_log_bytes"),
        (
            {"providers": {"github_actions": {"max_log_bytes": 0}}},
            "providers.github_actions.max_log_bytes",
        ),
        ({"providers": {"cloud_run": {"max_log_bytes": 1}}}, "providers.cloud_run.max_log_bytes"),
    ],
)
def test_every_limit_is_bounded(tmp_path: Path, overrides: dict[str, Any], key: str) -> None:
    with pytest.raises(ConfigError) as info:
        make_config(tmp_path, overrides)
    assert info.value.path == key


def test_limits_from_config(tmp_path: Path) -> None:
    cfg = make_config(
        tmp_path,
        {
            "storage": {"max_log_bytes": 1 << 30, "max_bytes": 1 << 34},
            "providers": {"local": {"max_log_bytes": 4096}},
        },
    )
    limits = StorageLimits.from_config(cfg)
    assert limits.max_bytes == 1 << 34
    assert limits.log_caps.of("local") == 4096 and limits.log_caps.of("nomad") == 1 << 30
    assert StorageLimits().log_caps.of("local") == 100 << 20  # the default
