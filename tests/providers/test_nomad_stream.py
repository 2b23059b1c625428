"""The Nomad event stream on a busy cluster: foreign jobs skipped undecoded, lag, the cursor."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import aiohttp
import pytest

from egw.config import NomadConfig, RetryConfig
from egw.core.model import TaskState
from egw.metrics import Metrics
from egw.providers.nomad import NomadProvider
from egw.providers.nomad.slots import LogSlots, Turn
from egw.providers.nomad.watcher import _Subscription
from egw.testing.nomad import NomadSimulator
from egw.testing.sink import MemorySink
from egw.wire import nomad as wire

RETRY = RetryConfig(attempts=4, initial_backoff_s=0.01, max_backoff_s=0.05, deadline_s=5.0)
SEED = {"job_id": "ours-1", "image": "busybox:latest", "command": "echo", "args": ["hello"]}


@pytest.fixture
async def sim() -> AsyncIterator[tuple[NomadSimulator, str]]:
    sim = NomadSimulator(time_scale=0.02)
    base = await sim.start()
    try:
        yield sim, base
    finally:
        await sim.close()


async def test_foreign_jobs_are_skipped_undecoded_and_ours_runs(
    sim: tuple[NomadSimulator, str],
) -> None:
    base = sim[1]
    sink = MemorySink()
    async with aiohttp.ClientSession() as session:
        cfg = NomadConfig(enabled=True, address=base, log_grace_s=2.0)
        provider = NomadProvider(cfg, session=session, retry=RETRY)
        await provider.start(sink)
        try:
            # someone else's jobs on the same cluster, before and while egw's runs
            for n in range(20):
                foreign = provider.validate({**SEED, "job_id": f"theirs-{n}"})
                body = wire.register_body(
                    foreign, task_id=f"someone-{n}", timeout_s=None, enforce_index=0
                )
                async with session.post(f"{base}/v1/jobs", json=body) as resp:
                    assert resp.status == 200
            record = sink.add_task("nomad", provider.validate(SEED).to_json())
            sub = await provider.submit(record, idempotency_key=record.id)
            await sink.set_upstream(
                record.id, upstream_id=sub.upstream_id, upstream_url=None, data=sub.upstream
            )
            await sink.observe(record.id, sub.observation, source="service")
            done = await sink.wait_for(record.id, logs=True)
            assert done.status is TaskState.SUCCEEDED
            assert sink.output(record.id, "stdout") == b"hello\n"
            ns = provider.health()["namespaces"]["default"]
            assert ns["batches_skipped"] > 0 and ns["batches_decoded"] > 0
            # caught up: no lag, and the index is persisted for a restart to resume from
            async with asyncio.timeout(5):
                while await sink.get_cursor("nomad:event_index:default") != str(ns["last_index"]):
                    await asyncio.sleep(0.01)
                    ns = provider.health()["namespaces"]["default"]
            assert ns["stream_lag_s"] == 0.0 and ns["backlog_bytes"] == 0
            scrape = (
                Metrics()
                .render(tasks_by_status={}, health={"nomad": provider.health()}, sse_connections=0)
                .decode()
            )
            assert 'egw_nomad_stream_lag_seconds{namespace="default"} 0.0' in scrape
            assert f'egw_nomad_stream_index{{namespace="default"}} {ns["last_index"]}.0' in scrape
        finally:
            await provider.close()


def test_lag_is_how_long_the_reader_has_been_behind() -> None:
    sub = _Subscription("default")
    assert sub.lag_s(100.0) == 0.0
    sub.behind(4096)  # bytes were waiting when the reader came back for more
    since = sub.behind_since
    assert since is not None and sub.lag_s(since + 2.5) == 2.5
    sub.behind(512)  # still behind: the lag counts from the first time
    assert sub.behind_since == since and sub.backlog_bytes == 512
    sub.behind(0)  # caught up
    assert sub.lag_s(since + 10) == 0.0 and sub.backlog_bytes == 0


async def test_restart_reads_the_namespace_once_not_each_job(
    sim: tuple[NomadSimulator, str],
) -> None:
    nomad, base = sim
    sink = MemorySink()
    async with aiohttp.ClientSession() as session:
        cfg = NomadConfig(enabled=True, address=base, log_grace_s=2.0)
        first = NomadProvider(cfg, session=session, retry=RETRY)
        await first.start(sink)
        ids = []
        for n in range(5):
            job = f"long-{n}"
            nomad.script(job, stdout=b"x\n", duration_s=30)
            record = sink.add_task("nomad", first.validate({**SEED, "job_id": job}).to_json())
            sub = await first.submit(record, idempotency_key=record.id)
            await sink.set_upstream(
                record.id, upstream_id=sub.upstream_id, upstream_url=None, data=sub.upstream
            )
            await sink.observe(record.id, sub.observation, source="service")
            ids.append(record.id)
        for task_id in ids:
            await sink.wait_for(task_id, state=TaskState.RUNNING)
        await first.close()
        per_job = nomad.count("GET", r"^/v1/job/[^/]+/allocations$")
        listings = nomad.count("GET", r"^/v1/allocations$")
        second = NomadProvider(cfg, session=session, retry=RETRY)  # a restarted gateway
        await second.start(sink)
        try:
            async with asyncio.timeout(5):
                while second.health()["resuming"]:
                    await asyncio.sleep(0.01)
            assert second.health()["tracked_tasks"] == 5
            # every task was read again, from one listing of the namespace
            assert nomad.count("GET", r"^/v1/allocations$") == listings + 1
            assert nomad.count("GET", r"^/v1/job/[^/]+/allocations$") == per_job
            for task_id in ids:
                assert sink.tasks[task_id].status is TaskState.RUNNING
        finally:
            await second.close()


async def test_logs_beyond_the_live_budget_are_caught_up_exactly(
    sim: tuple[NomadSimulator, str],
) -> None:
    nomad, base = sim
    sink = MemorySink()
    async with aiohttp.ClientSession() as session:
        # two live slots: one allocation's two streams; the other three are caught up
        cfg = NomadConfig(
            enabled=True, address=base, log_grace_s=2.0, log_max_followers=2, log_poll_s=0.05
        )
        provider = NomadProvider(cfg, session=session, retry=RETRY)
        await provider.start(sink)
        outputs, ids = {}, []
        try:
            for n in range(4):
                job = f"chatty-{n}"
                lines = "".join(f"{job} line {i} é\n" for i in range(40)).encode()
                nomad.script(job, stdout=lines, duration_s=20)
                spec = provider.validate({**SEED, "job_id": job}).to_json()
                record = sink.add_task("nomad", spec)
                sub = await provider.submit(record, idempotency_key=record.id)
                await sink.set_upstream(
                    record.id, upstream_id=sub.upstream_id, upstream_url=None, data=sub.upstream
                )
                await sink.observe(record.id, sub.observation, source="service")
                outputs[record.id], ids = lines, [*ids, record.id]
            most_open = 0
            async with asyncio.timeout(20):
                # every running task's output is read while it runs, not after it ends
                while not all(sink.output(t) for t in ids):
                    most_open = max(most_open, len(nomad._drops["logs"]))
                    slots = provider.health()["log_slots"]
                    assert slots["live"] <= 2
                    await asyncio.sleep(0.01)
            assert any(sink.tasks[t].status is TaskState.RUNNING for t in ids)
            assert provider.health()["log_slots"]["catchup_reads"] > 0
            for task_id in ids:
                done = await sink.wait_for(task_id, logs=True)
                assert done.status is TaskState.SUCCEEDED
                assert sink.output(task_id, "stdout") == outputs[task_id]  # each byte once
            assert most_open <= 2 + 16  # live follows, plus catch-up reads in flight
        finally:
            await provider.close()


async def test_a_freed_slot_goes_to_the_first_stream_that_asked() -> None:
    slots = LogSlots(1, poll_s=10.0, reads_per_s=1.0)
    a, b, c = Turn(), Turn(), Turn()
    assert slots.take(a) and not slots.take(b)
    assert not slots.take(c) and slots.health()["waiting"] == 2
    woken = c.wake_on()
    slots.give_back(a)
    assert b.live and not c.live and slots.live == 1 and not woken.done()
    assert slots.take(b)  # granted while it was reading: it follows from its next read
    assert not slots.take(a)  # asks again: behind c
    slots.leave(b)  # ended: the slot goes on
    assert c.live and woken.done() and not a.live
    slots.leave(a)
    slots.give_back(c)
    assert slots.live == 0 and slots.health()["waiting"] == 0 and not slots.take(a)
    slots.catching_up = 100  # 100 streams at 1 read/s: each waits 100 s, not poll_s
    assert slots.pause_s() == 100.0


async def test_a_tailed_stream_preempts_an_untailed_follower() -> None:
    slots = LogSlots(2, poll_s=10.0, reads_per_s=1.0)
    old, other, waiting, tailed = Turn(), Turn(), Turn(), Turn()
    assert slots.take(old) and slots.take(other) and not slots.take(waiting)
    stop = old.wake_on()
    slots.attend(tailed, True)  # not waiting yet: asks when its read is done
    assert not tailed.live and not old.demoted
    assert not slots.take(tailed)  # every slot taken: the oldest untailed follower is asked
    assert old.demoted and stop.done() and not other.demoted
    assert slots.health()["preemptions"] == 1 and slots.health()["tailed_waiting"] == 1
    assert not slots.take(tailed)  # still one tailed stream waiting: nobody else is asked
    assert not other.demoted
    slots.give_back(old)  # its follow ended between two frames: the slot goes to the tailed
    assert tailed.live and not waiting.live and slots.health()["tailed_live"] == 1
    # a tailed stream is never preempted; the untailed one waiting goes next
    slots.attend(waiting, True)  # it waits: it moves to the tailed queue and asks
    assert other.demoted and not tailed.demoted
    slots.give_back(other)
    assert waiting.live and slots.live == 2
    # the last tailer left: ordinary followers again, preemptible
    slots.attend(tailed, False)
    late = Turn(tailed=True)
    assert not slots.take(late) and tailed.demoted and not waiting.demoted


async def test_a_quiet_stream_without_a_live_slot_costs_one_listing_per_catch_up(
    sim: tuple[NomadSimulator, str],
) -> None:
    nomad, base = sim
    sink = MemorySink()
    async with aiohttp.ClientSession() as session:
        # one live slot: every other stream is caught up every 50 ms
        cfg = NomadConfig(enabled=True, address=base, log_max_followers=1, log_poll_s=0.05)
        provider = NomadProvider(cfg, session=session, retry=RETRY)
        await provider.start(sink)
        try:
            nomad.script("quiet", stdout=b"one line\n", duration_s=10_000)
            spec = provider.validate({**SEED, "job_id": "quiet"}).to_json()
            record = sink.add_task("nomad", spec)
            sub = await provider.submit(record, idempotency_key=record.id)
            await sink.set_upstream(
                record.id, upstream_id=sub.upstream_id, upstream_url=None, data=sub.upstream
            )
            await sink.observe(record.id, sub.observation, source="service")
            async with asyncio.timeout(10):
                while sink.output(record.id) != b"one line\n":
                    await asyncio.sleep(0.01)
            await asyncio.sleep(0.2)
            reads = nomad.count("GET", r"^/v1/client/fs/logs/")
            listings = nomad.count("GET", r"^/v1/client/fs/ls/")
            await asyncio.sleep(0.5)
            # stderr's catch-ups went on (listings), and none read: nothing new on disk
            assert nomad.count("GET", r"^/v1/client/fs/ls/") >= listings + 4
            assert nomad.count("GET", r"^/v1/client/fs/logs/") == reads
            assert sink.output(record.id) == b"one line\n"
        finally:
            await provider.close()


async def test_a_parked_stream_is_resumed_once_at_its_time_or_sooner_when_poked() -> None:
    slots = LogSlots(1, poll_s=0.05, reads_per_s=1000.0)
    resumed: list[str] = []
    quiet, granted, gone = (
        Turn(resume=lambda name=name: resumed.append(name)) for name in ("quiet", "granted", "gone")
    )
    for turn in (quiet, granted, gone):
        slots.park(turn)
    assert slots.catching_up == 3 and resumed == []
    granted.poke()  # a grant or its allocation's end: at once, not at its time
    slots.leave(gone)  # ended while parked: never resumed
    assert resumed == ["granted"] and slots.catching_up == 1
    granted.resume = lambda: resumed.append("granted again")
    slots.park(granted)
    await asyncio.sleep(0.08)
    # each once, in the order they were parked; the first entry of the one poked is dropped
    assert resumed == ["granted", "quiet", "granted again"] and slots.catching_up == 0
    await slots.close()


async def test_the_two_quiet_streams_of_a_task_share_one_listing(
    sim: tuple[NomadSimulator, str],
) -> None:
    nomad, base = sim
    sink = MemorySink()
    async with aiohttp.ClientSession() as session:
        # one live slot (the first job's stdout): its stderr alone, the second job's two
        # streams together, are caught up every 50 ms
        cfg = NomadConfig(enabled=True, address=base, log_max_followers=1, log_poll_s=0.05)
        provider = NomadProvider(cfg, session=session, retry=RETRY)
        await provider.start(sink)
        try:
            ids = []
            for job in ("lone", "pair"):
                nomad.script(job, stdout=b"one line\n", duration_s=10_000)
                spec = provider.validate({**SEED, "job_id": job}).to_json()
                record = sink.add_task("nomad", spec)
                sub = await provider.submit(record, idempotency_key=record.id)
                await sink.set_upstream(
                    record.id, upstream_id=sub.upstream_id, upstream_url=None, data=sub.upstream
                )
                await sink.observe(record.id, sub.observation, source="service")
                ids.append(record.id)
                async with asyncio.timeout(10):
                    while sink.output(record.id) != b"one line\n":
                        await asyncio.sleep(0.01)
            allocs = {
                a["JobID"]: a["ID"]
                for a in nomad.cluster.allocs.values()
                if a["JobID"] in ("lone", "pair")
            }

            def listings(job: str) -> int:
                return nomad.count("GET", rf"^/v1/client/fs/ls/{allocs[job]}$")

            await asyncio.sleep(0.3)
            before = {job: listings(job) for job in allocs}
            await asyncio.sleep(2.0)
            lone, pair = (listings(job) - before[job] for job in ("lone", "pair"))
            assert lone >= 5  # caught up all along
            # two streams, about one listing a round (each its own: twice as many)
            assert pair <= lone * 1.5, (lone, pair)
            # new output on the second stream of the pair still comes in
            key = next(k for k in nomad.cluster.logs if k[0] == allocs["pair"] and k[2] == "stderr")
            nomad.cluster.logs[key].write(b"late\n")
            async with asyncio.timeout(5):
                while sink.output(ids[1], "stderr") != b"late\n":
                    await asyncio.sleep(0.01)
        finally:
            await provider.close()
