"""Three `egw serve` replicas on one PostgreSQL database (ARCHITECTURE.md, "Replicas"):
submits spread over them, an event stream that moves from one replica to another with
``Last-Event-ID`` resumes byte-exact, and every replica serves the same log. Skipped,
saying so, without a PostgreSQL server."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import pytest
from db_support import create_database, drop_database, skip_reason
from support import READER, WRITER, GatewayProcess, sse_frames

pytestmark = pytest.mark.skipif(skip_reason() is not None, reason=str(skip_reason()))


@pytest.fixture
def replicas(tmp_path: Path) -> Iterator[list[GatewayProcess]]:
    url = create_database()
    made = []
    try:
        for name in "abc":
            (tmp_path / name).mkdir()
            gw = GatewayProcess(tmp_path / name, {"storage": {"url": url, "lease_s": 1.0}})
            gw.start()
            made.append(gw)
        yield made
    finally:
        for gw in made:
            gw.stop()
        drop_database(url)


async def test_submits_spread_and_an_event_stream_resumes_byte_exact_on_another_replica(
    replicas: list[GatewayProcess],
) -> None:
    sse = {**READER, "Accept": "text/event-stream"}
    async with aiohttp.ClientSession() as http:
        first = await http.get(f"{replicas[0].url}/v1/events", headers=sse)
        ids = []
        for i in range(9):
            gw = replicas[i % 3]
            body = {"provider": "local", "task": {"command": "echo", "args": [f"t{i}"]}}
            async with http.post(f"{gw.url}/v1/tasks", json=body, headers=WRITER) as resp:
                assert resp.status == 202, await resp.text()
                ids.append((await resp.json())["id"])
        # a few frames from replica a, then the client moves to replica b
        part = await asyncio.wait_for(sse_frames(first, lambda f: int(f.get("id", 0)) >= 5), 20)
        first.close()
        last = [f for f in part if "id" in f][-1]["id"]
        got: list[dict[str, str]] = []

        def finished(frame: dict[str, str]) -> bool:
            got.append(frame)
            events = [json.loads(f["data"]) for f in [*part, *got] if "id" in f]
            done = {e["task_id"] for e in events if e["status"] == "succeeded" and e["applied"]}
            return done >= set(ids)

        async with http.get(
            f"{replicas[1].url}/v1/events", headers={**sse, "Last-Event-ID": last}
        ) as resp:
            await asyncio.wait_for(sse_frames(resp, finished), 30)
        moved = [(f["id"], f["data"]) for f in [*part, *got] if "id" in f]
        # the whole log from the third replica: the same frames, byte for byte
        upto = moved[-1][0]
        async with http.get(
            f"{replicas[2].url}/v1/events", headers={**sse, "Last-Event-ID": "0"}
        ) as resp:
            whole = await asyncio.wait_for(sse_frames(resp, lambda f: f.get("id") == upto), 30)
        assert moved == [(f["id"], f["data"]) for f in whole if "id" in f]
        assert [int(i) for i, _ in moved] == list(range(1, int(upto) + 1))
