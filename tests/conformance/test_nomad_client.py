"""The Nomad simulator driven by python-nomad (the most-used Python client for Nomad's HTTP
API, jrxFive/python-nomad), not by egw's code.

Whatever python-nomad sends, the simulator must answer as Nomad would: the client picks
its routes and methods itself (``POST /v1/job/:id`` to register, booleans as ``True``,
``X-Nomad-Token``), and raises its own exceptions on Nomad's status codes. Covers:
register a batch job, read it and its allocations until terminal, the task's logs through
the client fs API, jobs listed with a prefix, evaluations, deregister and purge, a
not-found (``URLNotFoundNomadException``), and the event stream.

python-nomad is synchronous (requests): each call runs in a thread while the simulator
serves on the test's event loop.
"""

from __future__ import annotations

import asyncio
import base64
import json
from collections.abc import AsyncIterator, Callable
from typing import Any
from urllib.parse import urlsplit

import nomad
import pytest
from nomad.api.exceptions import URLNotFoundNomadException

from egw.testing.nomad import NomadSimulator

TOKEN = "conformance-token"


@pytest.fixture
async def sim() -> AsyncIterator[NomadSimulator]:
    simulator = NomadSimulator(time_scale=0.01, acl=True)
    simulator.add_token(TOKEN, management=True)
    await simulator.start()
    yield simulator
    await simulator.close()


@pytest.fixture
def client(sim: NomadSimulator) -> nomad.Nomad:
    url = urlsplit(sim.url or "")
    return nomad.Nomad(host=url.hostname or "", port=url.port or 0, token=TOKEN, timeout=5)


async def call(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    return await asyncio.to_thread(fn, *args, **kwargs)


def batch_job(job_id: str, *args: str) -> dict[str, Any]:
    return {
        "Job": {
            "ID": job_id,
            "Name": job_id,
            "Type": "batch",
            "TaskGroups": [
                {
                    "Name": "g",
                    "Count": 1,
                    "Tasks": [
                        {
                            "Name": "main",
                            "Driver": "docker",
                            "Config": {"image": "alpine:3", "args": list(args)},
                        }
                    ],
                }
            ],
        }
    }


async def until_terminal(client: nomad.Nomad, job_id: str) -> list[dict[str, Any]]:
    async with asyncio.timeout(10):
        while True:
            job = await call(client.job.get_job, job_id)
            allocs = await call(client.job.get_allocations, job_id)
            if job["Status"] == "dead" and allocs:
                return list(allocs)
            await asyncio.sleep(0.05)


async def test_register_run_logs_list_evaluations_and_deregister(
    sim: NomadSimulator, client: nomad.Nomad
) -> None:
    # python-nomad registers with POST /v1/job/:id (Nomad's jobCRUD takes PUT and POST)
    reg = await call(client.job.register_job, "conf-batch-1", batch_job("conf-batch-1", "hello"))
    assert reg["EvalID"] and reg["JobModifyIndex"] > 0
    assert sim.count("POST", r"^/v1/job/conf-batch-1$") == 1

    allocs = await until_terminal(client, "conf-batch-1")
    assert [a["ClientStatus"] for a in allocs] == ["complete"]
    assert "Job" not in allocs[0]  # AllocListStubs
    alloc = await call(client.allocation.get_allocation, allocs[0]["ID"])
    assert alloc["TaskStates"]["main"]["State"] == "dead"
    assert alloc["Job"]["ID"] == "conf-batch-1"

    # plain and framed logs through the client fs API
    plain = await call(client.client.stream_logs.stream, alloc["ID"], "main", "stdout", plain=True)
    assert plain == "hello\n"
    framed = await call(client.client.stream_logs.stream, alloc["ID"], "main", "stdout")
    frame = json.loads(framed)
    assert base64.b64decode(frame["Data"]) == b"hello\n"
    assert frame["File"] == "alloc/logs/main.stdout.0" and frame["Offset"] == 6
    listing = await call(client.client.ls.list_files, alloc["ID"], path="alloc/logs")
    sizes = {f["Name"]: f["Size"] for f in listing}
    assert sizes["main.stdout.0"] == 6 and sizes["main.stderr.0"] == 0

    # list with a prefix, and the whole namespace
    await call(client.job.register_job, "other-job", batch_job("other-job", "x"))
    listed = await call(client.jobs.get_jobs, prefix="conf-")
    assert [j["ID"] for j in listed] == ["conf-batch-1"]
    assert listed[0]["Status"] == "dead"
    assert listed[0]["JobSummary"]["Summary"]["g"]["Complete"] == 1
    assert {j["ID"] for j in await call(client.jobs.get_jobs)} == {"conf-batch-1", "other-job"}
    assert await call(client.jobs.__contains__, "conf-batch-1")

    # evaluations: the job's, one by ID, listed with a prefix, and an evaluation's allocations
    evals = await call(client.job.get_evaluations, "conf-batch-1")
    assert [e["ID"] for e in evals] == [reg["EvalID"]]
    ev = await call(client.evaluation.get_evaluation, reg["EvalID"])
    assert ev["Status"] == "complete" and ev["TriggeredBy"] == "job-register"
    assert [e["ID"] for e in await call(client.evaluations.get_evaluations, reg["EvalID"][:8])] == [
        reg["EvalID"]
    ]
    assert [a["ID"] for a in await call(client.evaluation.get_allocations, reg["EvalID"])] == [
        alloc["ID"]
    ]
    every = await call(client.allocations.get_allocations, prefix=alloc["ID"][:8])
    assert [a["ID"] for a in every] == [alloc["ID"]]

    # deregister, then purge: the job is gone, and a second stop is still a 200
    stop = await call(client.job.deregister_job, "conf-batch-1")
    assert stop["EvalID"]
    assert (await call(client.job.get_job, "conf-batch-1"))["Stop"] is True
    await call(client.job.deregister_job, "conf-batch-1", purge=True)
    with pytest.raises(URLNotFoundNomadException):
        await call(client.job.get_job, "conf-batch-1")
    assert not await call(client.jobs.__contains__, "conf-batch-1")
    again = await call(client.job.deregister_job, "conf-batch-1", purge=True)
    assert again["EvalID"] == "" and again["JobModifyIndex"] == 0


async def test_not_found_and_method_errors(sim: NomadSimulator, client: nomad.Nomad) -> None:
    with pytest.raises(URLNotFoundNomadException) as exc:
        await call(client.job.get_job, "no-such-job")
    assert exc.value.nomad_resp.text == "job not found"
    with pytest.raises(URLNotFoundNomadException):
        await call(client.allocation.get_allocation, "00000000-0000-0000-0000-000000000000")
    with pytest.raises(URLNotFoundNomadException):
        await call(client.evaluation.get_evaluation, "00000000-0000-0000-0000-000000000000")
    # a job that does not exist has no allocations and no evaluations (not a 404)
    assert await call(client.job.get_allocations, "no-such-job") == []
    assert await call(client.job.get_evaluations, "no-such-job") == []
    # the ID in the path must be the job's (command/agent/job_endpoint.go jobUpdate)
    with pytest.raises(nomad.api.exceptions.BadRequestNomadException) as bad:
        await call(client.job.register_job, "a-name", batch_job("another-name"))
    assert bad.value.nomad_resp.text == "Job ID does not match name"


async def test_event_stream(sim: NomadSimulator, client: nomad.Nomad) -> None:
    thread, stop, events = client.event.stream.get_stream(topic="Job", timeout=5)
    thread.start()
    try:
        await call(client.job.register_job, "conf-events", batch_job("conf-events", "x"))
        async with asyncio.timeout(5):
            while True:
                batch = await call(events.get, timeout=5)
                kinds = {(e["Topic"], e["Type"]) for e in batch["Events"]}
                if ("Job", "JobRegistered") in kinds:
                    break
        assert batch["Events"][0]["Payload"]["Job"]["ID"] == "conf-events"
    finally:
        # the client checks its exit flag after each line: the next `{}` heartbeat (30
        # simulated seconds, 0.3 s here) lets it go
        stop.set()
        await call(thread.join, 5)
        assert not thread.is_alive()
