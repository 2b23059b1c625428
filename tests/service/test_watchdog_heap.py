"""One heap for the whole gateway: a hundred waiting tasks add heap entries, not coroutines,
and each is flagged once its deadline passes (local runner, one slot: the rest queue)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path
from typing import Any

from aiohttp import web
from aiohttp.test_utils import TestClient
from support import WRITER, make_config, submit_local

from egw.web.app import create_app
from egw.web.keys import service_key

N = 100


async def test_waiting_tasks_cost_heap_entries_not_coroutines(
    tmp_path: Path, aiohttp_client: Callable[..., Any]
) -> None:
    local = {"max_concurrent": 1, "queued_timeout_s": 1.5, "cancel_timeout_s": 30}
    api: TestClient[web.Request, web.Application] = await aiohttp_client(
        create_app(make_config(tmp_path, {"providers": {"local": local}}))
    )
    watchdog = api.app[service_key].watchdog
    first = await submit_local(api, "sleep", "30")
    before = len(asyncio.all_tasks())
    ids = [(await submit_local(api, "sleep", "30"))["id"] for _ in range(N)]
    assert len(asyncio.all_tasks()) - before < 5  # nothing runs per waiting task
    assert set(ids) <= set(watchdog._queued)  # one heap entry each
    for _ in range(100):
        resp = await api.get("/v1/tasks", params={"stuck": "true", "limit": "500"}, headers=WRITER)
        stuck = {t["id"] for t in (await resp.json())["tasks"]}
        if stuck == set(ids):
            break
        await asyncio.sleep(0.1)
    assert stuck == set(ids)  # every queued task, and not the running one
    assert first["id"] not in stuck
    assert not set(ids) & set(watchdog._queued)  # flagged: no deadline until they move on
    for task_id in [first["id"], *ids]:
        await api.post(f"/v1/tasks/{task_id}/cancel", headers=WRITER)
