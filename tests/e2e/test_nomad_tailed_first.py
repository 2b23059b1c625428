"""A tailed Nomad task's log streams are followed live first, against the Nomad simulator:
with two live slots and three running jobs, the task a client tails takes the slots from an
untailed one (which goes back to catch-up from its stored offset, losing and doubling
nothing), its new lines reach the SSE client at once, and an untailed task's only at its
next catch-up read; when the last tailer leaves, its streams are ordinary followers again."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient
from support import WRITER, make_config, submit, wait_status

from egw.testing.nomad import NomadSimulator
from egw.web.app import create_app

SSE = {**WRITER, "Accept": "text/event-stream"}
Client = TestClient[web.Request, web.Application]
#: between two catch-up reads of a stream without a live slot
POLL_S = 6.0


@pytest.fixture
async def sim() -> AsyncIterator[NomadSimulator]:
    s = NomadSimulator(time_scale=0.02)
    await s.start()
    yield s
    await s.close()


def gateway(tmp_path: Path, sim: NomadSimulator) -> web.Application:
    nomad = {
        "enabled": True,
        "address": sim.url,
        "log_grace_s": 2,
        "log_max_followers": 2,
        "log_poll_s": POLL_S,
    }
    return create_app(make_config(tmp_path, {"providers": {"nomad": nomad}}))


async def slots(api: Client) -> dict[str, int]:
    body = await (await api.get("/readyz")).json()
    figures: dict[str, int] = body["providers"]["nomad"]["log_slots"]
    return figures


async def until(check: Callable[[], Any], seconds: float) -> None:
    async with asyncio.timeout(seconds):
        while not await check():
            await asyncio.sleep(0.02)


async def stored(api: Client, task_id: str) -> str:
    resp = await api.get(f"/v1/tasks/{task_id}/logs?stream=stdout", headers=WRITER)
    return await resp.text()


class Job:
    """One running job of the simulator, whose stdout the test writes to."""

    def __init__(self, sim: NomadSimulator, task: dict[str, Any], job_id: str) -> None:
        self.sim, self.task_id, self.job_id = sim, task["id"], job_id
        self.written = b"first\n"

    def alloc_id(self) -> str:
        cluster = self.sim.cluster
        return next(a["ID"] for a in cluster.allocs.values() if a["JobID"] == self.job_id)

    async def say(self, line: str) -> None:
        cluster = self.sim.cluster
        alloc_id = self.alloc_id()
        key = next(k for k in cluster.logs if k[0] == alloc_id and k[2] == "stdout")
        cluster.logs[key].write(line.encode())
        self.written += line.encode()
        await cluster.notify()

    def reads(self) -> int:
        """The log reads egw made of this job's allocation (follows and catch-ups)."""
        return self.sim.count("GET", rf"^/v1/client/fs/logs/{self.alloc_id()}$")


async def test_the_tailed_task_is_followed_first_and_nothing_is_lost_or_doubled(
    tmp_path: Path, sim: NomadSimulator, aiohttp_client: Callable[..., Any]
) -> None:
    api: Client = await aiohttp_client(gateway(tmp_path, sim))
    jobs = []
    for name in ("first", "second", "third"):
        sim.script(name, stdout=b"first\n", duration_s=20_000)
        body = {"provider": "nomad", "task": {"job_id": name, "image": "busybox", "command": "x"}}
        jobs.append(Job(sim, await submit(api, body), name))
        await wait_status(api, jobs[-1].task_id, "running")
    a, b, c = jobs

    async def all_caught_up() -> bool:
        return all([await stored(api, j.task_id) == j.written.decode() for j in jobs])

    await until(all_caught_up, POLL_S * 3)  # the first job live, the others caught up
    figures = await slots(api)
    assert figures["live"] == 2 and figures["tailed_live"] == 0

    # a writer on the first job across its preemption: every line must be stored once
    async def chatter() -> None:
        for n in range(60):
            await a.say(f"first job line {n}\n")
            await asyncio.sleep(0.02)

    talking = asyncio.ensure_future(chatter())
    async with api.get(f"/v1/tasks/{c.task_id}/logs", headers=SSE) as resp:
        assert resp.status == 200

        async def frames_until(text: str) -> float:
            """Seconds until the SSE stream carries ``text`` in a log frame."""
            began = time.monotonic()
            seen = ""
            async for raw in resp.content:
                line = raw.decode()
                if line.startswith("data: ") and '"text"' in line:
                    seen += json.loads(line[6:])["text"]
                    if text in seen:
                        return time.monotonic() - began
            raise AssertionError(f"the stream ended without {text!r}")

        await frames_until("first\n")  # the replay

        async def tailed_live() -> bool:
            return (await slots(api))["tailed_live"] == 2

        await until(tailed_live, 5)  # both streams of the tailed job, taken from the first
        assert (await slots(api))["preemptions"] >= 2
        metrics = await (await api.get("/metrics")).text()
        assert 'egw_nomad_log_slots{kind="tailed_live"} 2.0' in metrics
        assert 'egw_nomad_log_slots{kind="max"} 2.0' in metrics
        assert "egw_nomad_log_preemptions_total 2.0" in metrics
        catchups = b.reads()
        await asyncio.sleep(0.3)
        await b.say("untailed line\n")
        await c.say("tailed line\n")
        delay = await frames_until("tailed line\n")
        assert delay < POLL_S / 4, delay  # live, not at the next catch-up

        async def b_caught_up() -> bool:
            return "untailed line\n" in await stored(api, b.task_id)

        await until(b_caught_up, POLL_S * 2)
        assert b.reads() > catchups  # by a catch-up read made after the line was written
        await talking

        async def a_caught_up() -> bool:
            return await stored(api, a.task_id) == a.written.decode()

        await until(a_caught_up, POLL_S * 2)  # each line once, in order

    # the last tailer left: its streams keep their slots as ordinary followers
    async def untailed() -> bool:
        figures = await slots(api)
        return figures["tailed_live"] == 0 and figures["live"] == 2

    await until(untailed, 5)
    # a client tails the second job: it takes the slots of the third, which catches up
    async with api.get(f"/v1/tasks/{b.task_id}/logs", headers=SSE) as resp:
        assert resp.status == 200
        await until(tailed_live, 5)
        await c.say("after the tailer left\n")

        async def c_caught_up() -> bool:
            return await stored(api, c.task_id) == c.written.decode()

        await until(c_caught_up, POLL_S * 2)
    for job in jobs:
        assert await stored(api, job.task_id) == job.written.decode()
