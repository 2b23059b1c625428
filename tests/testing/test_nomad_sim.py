"""The Nomad simulator over real HTTP, held to the contract's samples (tests/samples/nomad/)."""

from __future__ import annotations

import asyncio
import base64
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import jsonschema
import pytest

from egw.testing.nomad import NomadSimulator, parse_duration
from egw.wire import nomad as wire

SAMPLES = Path(__file__).resolve().parents[1] / "samples" / "nomad"
#: objects whose keys are names (tasks, datacenters, groups...), not fields
MAPS = {
    "TaskStates",
    "NodesAvailable",
    "Scores",
    "FailedTGAllocs",
    "TaskResources",
    "Meta",
    "Env",
    "Config",
    "Details",
    "GetterOptions",
    "ClassFiltered",
    "ConstraintFiltered",
    "DimensionExhausted",
}
_TYPES = {
    bool: "boolean",
    int: "integer",
    float: "number",
    str: "string",
    list: "array",
    dict: "object",
}


def sample(name: str) -> Any:
    return json.loads((SAMPLES / name).read_text())


def schema_of(value: Any, depth: int = 99, key: str = "") -> dict[str, Any]:
    """A JSON Schema from a contract sample: every key required, the sample's JSON type;
    ``null`` is accepted anywhere (the samples themselves disagree on unset fields)."""
    if value is None:
        return {}
    schema: dict[str, Any] = {"type": [_TYPES[type(value)], "null"]}
    if depth <= 0:
        return schema
    if isinstance(value, dict):
        if key in MAPS:
            first = next(iter(value.values()), None)
            schema["additionalProperties"] = schema_of(first, depth - 1)
        else:
            schema["required"] = sorted(value)
            schema["properties"] = {k: schema_of(v, depth - 1, k) for k, v in value.items()}
    elif isinstance(value, list) and value:
        schema["items"] = schema_of(value[0], depth - 1, key)
    return schema


def check(instance: Any, schema: dict[str, Any]) -> None:
    jsonschema.validate(instance, schema)


ALLOC_STUB = schema_of(sample("allocations.list.response.json")[0])
JOB_ALLOC_STUB = schema_of(sample("job.allocations.response.json")[0])
JOB = schema_of(sample("job.read.response.json"), depth=1)
EVAL = schema_of(
    {k: v for k, v in sample("evaluation.read.response.json").items() if k != "RelatedEvals"}
)  # RelatedEvals only with ?related=true
ALLOC = schema_of({k: v for k, v in sample("allocation.read.response.json").items() if k != "Job"})

SEED_JOB = {
    "ID": "demo-job-1",
    "Name": "demo-job-1",
    "Type": "batch",
    "Datacenters": ["*"],
    "TaskGroups": [
        {
            "Name": "main",
            "Count": 1,
            "Tasks": [
                {
                    "Name": "main",
                    "Driver": "docker",
                    "Config": {"image": "busybox:latest", "command": "echo", "args": ["hello"]},
                }
            ],
        }
    ],
}


def job(job_id: str = "demo-job-1", task: str = "main", **extra: Any) -> dict[str, Any]:
    out = json.loads(json.dumps(SEED_JOB))
    out.update(ID=job_id, Name=job_id, **extra)
    out["TaskGroups"][0]["Tasks"][0]["Name"] = task
    return out


@pytest.fixture
async def sim() -> AsyncIterator[NomadSimulator]:
    s = NomadSimulator(time_scale=0.01)
    await s.start()
    yield s
    await s.close()


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


async def call(
    http: aiohttp.ClientSession, sim: NomadSimulator, method: str, path: str, **kw: Any
) -> tuple[int, dict[str, str], Any]:
    async with http.request(method, f"{sim.url}{path}", **kw) as resp:
        body = await resp.read()
        ctype = resp.headers.get("Content-Type", "")
        data = json.loads(body) if ctype.startswith("application/json") else body.decode()
        return resp.status, dict(resp.headers), data


async def register(
    http: aiohttp.ClientSession, sim: NomadSimulator, body: dict[str, Any]
) -> dict[str, Any]:
    status, _, data = await call(http, sim, "POST", "/v1/jobs", json={"Job": body})
    assert status == 200, data
    return data  # type: ignore[no-any-return]


async def until_alloc(sim: NomadSimulator, job_id: str, status: str) -> dict[str, Any]:
    async with asyncio.timeout(5):
        async with sim.cluster.changed:
            await sim.cluster.changed.wait_for(
                lambda: any(
                    a["JobID"] == job_id and a["ClientStatus"] == status
                    for a in sim.cluster.allocs.values()
                )
            )
    return next(a for a in sim.cluster.allocs.values() if a["JobID"] == job_id)


async def test_register_read_and_list_match_the_contract(
    sim: NomadSimulator, http: aiohttp.ClientSession
) -> None:
    answer = await register(http, sim, job())
    check(answer, schema_of(sample("jobs.create.response.json")))
    assert answer["EvalID"] and answer["JobModifyIndex"] == answer["EvalCreateIndex"]
    alloc = await until_alloc(sim, "demo-job-1", "complete")
    status, headers, body = await call(http, sim, "GET", "/v1/job/demo-job-1")
    assert status == 200 and int(headers["X-Nomad-Index"]) >= answer["JobModifyIndex"]
    assert headers["X-Nomad-KnownLeader"] == "true" and "X-Nomad-LastContact" in headers
    check(body, JOB)
    assert body["Status"] == "dead" and body["Type"] == "batch"
    status, _, allocs = await call(http, sim, "GET", "/v1/job/demo-job-1/allocations")
    for stub in allocs:
        check(stub, ALLOC_STUB)
        check(stub, JOB_ALLOC_STUB)
    status, _, full = await call(http, sim, "GET", f"/v1/allocation/{alloc['ID']}")
    check({k: v for k, v in full.items() if k != "Job"}, ALLOC)
    check(full["Job"], JOB)
    events = full["TaskStates"]["main"]["Events"]
    assert [e["Type"] for e in events] == ["Received", "Task Setup", "Started", "Terminated"]
    status, _, ev = await call(http, sim, "GET", f"/v1/evaluation/{answer['EvalID']}")
    check(ev, EVAL)
    assert ev["Status"] == "complete"
    status, _, by_eval = await call(
        http, sim, "GET", f"/v1/evaluation/{answer['EvalID']}/allocations"
    )
    check(by_eval[0], schema_of(sample("evaluation.allocations.response.json")[0]))


async def test_errors_are_plain_text(sim: NomadSimulator, http: aiohttp.ClientSession) -> None:
    for path, text in [
        ("/v1/job/nope", "job not found"),
        ("/v1/allocation/0b5ad5b5-0000-0000-0000-000000000000", "alloc not found"),
        ("/v1/evaluation/0b5ad5b5-0000-0000-0000-000000000000", "eval not found"),
    ]:
        status, headers, body = await call(http, sim, "GET", path)
        assert (status, headers["Content-Type"], body) == (404, "text/plain", text)
    status, headers, body = await call(
        http, sim, "GET", "/v1/job/nope/allocations", params={"index": "x"}
    )
    assert (status, body) == (400, "Invalid index")
    status, _, body = await call(
        http, sim, "GET", "/v1/job/nope/allocations", params={"index": "1", "wait": "soon"}
    )
    assert (status, body) == (400, "Invalid wait time")
    status, _, body = await call(http, sim, "POST", "/v1/jobs", json={"Job": job("a b")})
    assert status == 500 and "Job ID contains a space" in body
    status, _, _ = await call(http, sim, "PATCH", "/v1/jobs")
    assert status == 405


async def test_enforce_index_is_check_and_set(
    sim: NomadSimulator, http: aiohttp.ClientSession
) -> None:
    first = await register(http, sim, job())
    cas = {"Job": job(Meta={"v": "2"}), "EnforceIndex": True, "JobModifyIndex": 0}
    status, _, body = await call(http, sim, "POST", "/v1/jobs", json=cas)
    assert (status, body) == (500, "Enforcing job modify index 0: job already exists")
    cas["JobModifyIndex"] = 999
    status, _, body = await call(http, sim, "POST", "/v1/jobs", json=cas)
    assert body == (
        "Enforcing job modify index 999: job exists with conflicting job modify "
        f"index: {first['JobModifyIndex']}"
    )
    cas["JobModifyIndex"] = first["JobModifyIndex"]
    status, _, second = await call(http, sim, "PUT", "/v1/jobs", json=cas)
    assert status == 200 and second["JobModifyIndex"] > first["JobModifyIndex"]
    status, _, body = await call(
        http,
        sim,
        "POST",
        "/v1/jobs",
        json={"Job": job("fresh"), "EnforceIndex": True, "JobModifyIndex": 5},
    )
    assert body == "Enforcing job modify index 5: job does not exist"


async def test_blocking_query_waits_for_a_change(
    sim: NomadSimulator, http: aiohttp.ClientSession
) -> None:
    sim.script("demo-job-1", duration_s=50)
    await register(http, sim, job())
    await until_alloc(sim, "demo-job-1", "running")
    _, headers, _ = await call(http, sim, "GET", "/v1/job/demo-job-1/allocations")
    index = int(headers["X-Nomad-Index"])
    # nothing changes within 1 simulated second: the same index comes back after the wait
    _, headers, _ = await call(
        http,
        sim,
        "GET",
        "/v1/job/demo-job-1/allocations",
        params={"index": str(index), "wait": "1s"},
    )
    assert int(headers["X-Nomad-Index"]) == index
    # the job ends meanwhile: the query returns with the new index
    _, headers, allocs = await call(
        http,
        sim,
        "GET",
        "/v1/job/demo-job-1/allocations",
        params={"index": str(index), "wait": "5m"},
    )
    assert int(headers["X-Nomad-Index"]) > index and allocs[0]["ClientStatus"] == "complete"


async def read_stream(
    http: aiohttp.ClientSession, sim: NomadSimulator, count: int, **params: Any
) -> list[dict[str, Any]]:
    query = [("topic", "Job"), ("topic", "Allocation"), ("topic", "Evaluation")]
    query += [(k, str(v)) for k, v in params.items()]
    lines: list[dict[str, Any]] = []
    async with http.get(f"{sim.url}/v1/event/stream", params=query) as resp:
        assert resp.status == 200
        assert resp.headers["Content-Type"] == "application/json"
        assert resp.headers["Cache-Control"] == "no-cache"
        async with asyncio.timeout(5):
            while len(lines) < count:
                raw = await resp.content.readline()
                assert raw.endswith(b"\n") and raw.count(b"\n") == 1
                lines.append(json.loads(raw))
    return lines


async def test_event_stream_lines_match_the_contract(
    sim: NomadSimulator, http: aiohttp.ClientSession
) -> None:
    await register(http, sim, job())
    await until_alloc(sim, "demo-job-1", "complete")
    lines = await read_stream(http, sim, 7)
    assert lines[0] == {}  # a heartbeat first, at once
    data = [line for line in lines if line]
    illustrative = (SAMPLES / "event_stream.illustrative.txt").read_text().split("\\n\n")[1]
    order = ["Topic", "Type", "Key", "Namespace", "FilterKeys", "Index", "Payload"]
    assert all(k in illustrative for k in order)
    kinds = []
    for line in data:
        assert list(line) == ["Index", "Events"]
        for ev in line["Events"]:
            assert list(ev) == order and ev["Index"] == line["Index"]
            obj = ev["Payload"][ev["Topic"]]
            if ev["Topic"] == "Allocation":
                assert obj["Job"] is None and ev["FilterKeys"] == ["demo-job-1", ""]
                check(obj, ALLOC_STUB)
            elif ev["Topic"] == "Evaluation":
                check(obj, EVAL)
            else:
                check(obj, JOB)
            kinds.append((ev["Topic"], ev["Type"]))
    assert kinds[:3] == [
        ("Job", "JobRegistered"),
        ("Evaluation", "JobRegistered"),
        ("Allocation", "PlanResult"),
    ]
    assert ("Allocation", "AllocationUpdated") in kinds
    assert [line["Index"] for line in data] == sorted(line["Index"] for line in data)


async def test_event_stream_resume_repeats_the_newest_and_starts_after_aged_out(
    sim: NomadSimulator, http: aiohttp.ClientSession
) -> None:
    await register(http, sim, job())
    await until_alloc(sim, "demo-job-1", "complete")
    newest = sim.cluster.buffer[-1][0]
    # asking beyond the newest event gives the newest again (nomad#11296)
    (hb, line) = await read_stream(http, sim, 2, index=newest + 1)
    assert hb == {} and line["Index"] == newest
    # an exact index starts there
    (_, line) = await read_stream(http, sim, 2, index=newest - 2)
    assert line["Index"] == newest - 2
    # an aged-out index starts at the oldest one still buffered
    sim.age_out_events(keep=2)
    (_, line) = await read_stream(http, sim, 2, index=1)
    assert line["Index"] == newest - 1


async def test_event_stream_filters_and_heartbeats(
    sim: NomadSimulator, http: aiohttp.ClientSession
) -> None:
    sim.heartbeat_s = 1.0  # 10 ms
    await register(http, sim, job("other"))
    await register(http, sim, job("mine"))
    await until_alloc(sim, "mine", "complete")
    await until_alloc(sim, "other", "complete")
    query = [("topic", "Allocation:mine"), ("index", "1")]
    async with http.get(f"{sim.url}/v1/event/stream", params=query) as resp:
        lines = []
        async with asyncio.timeout(5):
            while sum(1 for x in lines if not x) < 3:
                lines.append(json.loads(await resp.content.readline()))
    events = [e for line in lines if line for e in line["Events"]]
    assert events and all(
        e["Topic"] == "Allocation" and e["Payload"]["Allocation"]["JobID"] == "mine" for e in events
    )
    status, _, body = await call(http, sim, "GET", "/v1/event/stream", params={"index": "x"})
    assert status == 400 and body.startswith("Unable to parse index")


async def test_dropped_event_stream_is_cut(
    sim: NomadSimulator, http: aiohttp.ClientSession
) -> None:
    async with http.get(f"{sim.url}/v1/event/stream", params={"topic": "Job"}) as resp:
        assert await resp.content.readline() == b"{}\n"
        assert sim.drop_event_streams() == 1
        with pytest.raises(aiohttp.ClientPayloadError):
            async with asyncio.timeout(5):
                await resp.content.read()


async def test_acl_tokens(http: aiohttp.ClientSession) -> None:
    # before 1.11.2 a refused event stream is a 403 too (see the version test below)
    sim = NomadSimulator(time_scale=0.01, acl=True, version="1.11.1")
    await sim.start()
    try:
        sim.add_token("reader", namespaces={"default": {"read-job"}})
        sim.add_token("root", management=True)
        status, headers, body = await call(http, sim, "GET", "/v1/job/x")
        assert (status, headers["Content-Type"], body) == (403, "text/plain", "Permission denied")
        status, _, body = await call(
            http, sim, "GET", "/v1/job/x", headers={"X-Nomad-Token": "who"}
        )
        assert (status, body) == (403, "ACL token not found")
        status, _, body = await call(
            http, sim, "GET", "/v1/job/x", headers={"Authorization": "Bearer reader"}
        )
        assert (status, body) == (404, "job not found")
        status, _, body = await call(
            http, sim, "POST", "/v1/jobs", json={"Job": job()}, headers={"X-Nomad-Token": "reader"}
        )
        assert (status, body) == (403, "Permission denied")
        status, _, body = await call(
            http, sim, "GET", "/v1/event/stream", headers={"X-Nomad-Token": "reader"}
        )  # all topics
        assert (status, body) == (403, "Permission denied")
        status, _, body = await call(
            http, sim, "GET", "/v1/acl/token/self", headers={"X-Nomad-Token": "root"}
        )
        check(body, schema_of(sample("acl.token.self.response.json")))
        assert body["Type"] == "management"
    finally:
        await sim.close()


async def test_logs_framed_match_the_contract_bytes(
    sim: NomadSimulator, http: aiohttp.ClientSession
) -> None:
    sim.script("web", stdout=b"hello\n", duration_s=1000)
    await register(http, sim, job("web", task="web"))
    alloc = await until_alloc(sim, "web", "running")
    path = f"/v1/client/fs/logs/{alloc['ID']}"
    expected = (SAMPLES / "logs.framed.illustrative.txt").read_bytes().rstrip(b"\n")
    async with http.get(
        f"{sim.url}{path}", params={"task": "web", "type": "stdout", "follow": "true"}
    ) as resp:
        assert resp.headers["Content-Type"] == "application/json"
        got = b""
        async with asyncio.timeout(5):
            while len(got) < len(expected):
                got += await resp.content.readany()
        assert got[: len(expected)] == expected  # a frame, then {} heartbeats every second


async def test_logs_plain_follow_offset_and_origin(
    sim: NomadSimulator, http: aiohttp.ClientSession
) -> None:
    sim.script("demo-job-1", stdout=b"one\ntwo\n", stderr=b"oops\n", duration_s=4)
    await register(http, sim, job())
    alloc = await until_alloc(sim, "demo-job-1", "complete")
    path = f"/v1/client/fs/logs/{alloc['ID']}"
    status, headers, body = await call(
        http, sim, "GET", path, params={"task": "main", "type": "stdout", "plain": "true"}
    )
    assert (status, headers["Content-Type"], body) == (200, "text/plain", "one\ntwo\n")
    _, _, body = await call(
        http,
        sim,
        "GET",
        path,
        params={"task": "main", "type": "stdout", "plain": "true", "origin": "end", "offset": "4"},
    )
    assert body == "two\n"
    _, _, body = await call(
        http, sim, "GET", path, params={"task": "main", "type": "stderr", "offset": "2"}
    )
    frame = body  # one frame: a JSON object
    assert frame == {
        "Offset": 5,
        "Data": base64.b64encode(b"ps\n").decode(),
        "File": "alloc/logs/main.stderr.0",
    }
    for params, text in [
        ({"type": "stdout"}, "must provide task name"),
        ({"task": "main"}, "must provide log type (stdout/stderr)"),
        ({"task": "main", "type": "stdout", "origin": "middle"}, "origin must be start or end"),
    ]:
        status, headers, body = await call(http, sim, "GET", path, params=params)
        assert (status, headers["Content-Type"], body) == (400, "text/plain", text)
    status, _, body = await call(
        http, sim, "GET", "/v1/client/fs/logs/nope", params={"task": "main", "type": "stdout"}
    )
    assert (status, body) == (404, 'Unknown allocation "nope"')


async def test_logs_follow_tails_new_output(
    sim: NomadSimulator, http: aiohttp.ClientSession
) -> None:
    sim.script("demo-job-1", stdout=b"a\nb\nc\n", duration_s=30)
    await register(http, sim, job())
    alloc = await until_alloc(sim, "demo-job-1", "running")
    path = f"/v1/client/fs/logs/{alloc['ID']}"
    async with http.get(
        f"{sim.url}{path}",
        params={"task": "main", "type": "stdout", "follow": "true", "plain": "true"},
    ) as resp:
        got = b""
        async with asyncio.timeout(5):
            while got != b"a\nb\nc\n":
                got += await resp.content.readany()


@pytest.mark.parametrize(
    ("script", "client", "check_alloc"),
    [
        (
            {"exit_code": 3},
            "failed",
            lambda a: a["TaskStates"]["main"]["Events"][-2]["ExitCode"] == 3,
        ),
        (
            {"driver_failure": "image not found"},
            "failed",
            lambda a: a["TaskStates"]["main"]["Events"][-2]["DriverError"] == "image not found",
        ),
        ({"lost_after_s": 0.5, "duration_s": 10}, "lost", lambda a: a["DesiredStatus"] == "stop"),
    ],
)
async def test_scripted_outcomes(
    sim: NomadSimulator,
    http: aiohttp.ClientSession,
    script: dict[str, Any],
    client: str,
    check_alloc: Any,
) -> None:
    sim.script("demo-job-1", **script)
    await register(http, sim, job())
    alloc = await until_alloc(sim, "demo-job-1", client)
    assert check_alloc(alloc)
    check({k: v for k, v in alloc.items() if not k.startswith("_")}, ALLOC_STUB)


async def test_reschedule_links_allocations(
    sim: NomadSimulator, http: aiohttp.ClientSession
) -> None:
    sim.script("demo-job-1", exit_codes=(1, 0))
    flaky = job()
    flaky["TaskGroups"][0]["ReschedulePolicy"] = {"Attempts": 1, "Delay": 10**9}
    await register(http, sim, flaky)
    async with asyncio.timeout(5):
        while not any(a["ClientStatus"] == "complete" for a in sim.cluster.allocs.values()):
            await asyncio.sleep(0.01)
    _, _, (first, second) = await call(http, sim, "GET", "/v1/job/demo-job-1/allocations")
    assert first["ClientStatus"] == "failed" and first["NextAllocation"] == second["ID"]
    assert first["FollowupEvalID"]
    assert second["PreviousAllocation"] == first["ID"] and second["Name"] == first["Name"]
    assert second["RescheduleTracker"]["Events"][0]["PrevAllocID"] == first["ID"]
    for stub in (first, second):
        check(stub, JOB_ALLOC_STUB)


async def test_placement_failure_blocks_an_evaluation(
    sim: NomadSimulator, http: aiohttp.ClientSession
) -> None:
    big = job()
    big["TaskGroups"][0]["Tasks"][0]["Resources"] = {"CPU": 100, "MemoryMB": 999999}
    answer = await register(http, sim, big)
    async with asyncio.timeout(5):
        while sim.cluster.evals[answer["EvalID"]]["Status"] != "complete":
            await asyncio.sleep(0.01)
    _, _, ev = await call(http, sim, "GET", f"/v1/evaluation/{answer['EvalID']}")
    check(ev, EVAL)
    assert ev["FailedTGAllocs"]["main"]["DimensionExhausted"] == {"memory": 1}
    _, _, blocked = await call(http, sim, "GET", f"/v1/evaluation/{ev['BlockedEval']}")
    assert blocked["Status"] == "blocked" and blocked["TriggeredBy"] == "queued-allocs"
    _, _, allocs = await call(http, sim, "GET", "/v1/job/demo-job-1/allocations")
    assert allocs == []


async def test_stop_kills_and_purge_forgets(
    sim: NomadSimulator, http: aiohttp.ClientSession
) -> None:
    sim.script("demo-job-1", duration_s=1000)
    await register(http, sim, job())
    await until_alloc(sim, "demo-job-1", "running")
    status, _, body = await call(http, sim, "DELETE", "/v1/job/demo-job-1")
    check(body, schema_of(sample("job.stop.response.json")))
    alloc = await until_alloc(sim, "demo-job-1", "complete")
    assert alloc["DesiredStatus"] == "stop"
    assert [e["Type"] for e in alloc["TaskStates"]["main"]["Events"]][-2:] == ["Killing", "Killed"]
    _, _, stopped = await call(http, sim, "GET", "/v1/job/demo-job-1")
    assert stopped["Stop"] is True and stopped["Status"] == "dead"
    await call(http, sim, "DELETE", "/v1/job/demo-job-1", params={"purge": "true"})
    status, _, body = await call(http, sim, "GET", "/v1/job/demo-job-1")
    assert (status, body) == (404, "job not found")


async def test_max_run_duration(sim: NomadSimulator, http: aiohttp.ClientSession) -> None:
    sim.script("demo-job-1", duration_s=1000)
    timed = job()
    timed["TaskGroups"][0]["MaxRunDuration"] = 2 * 10**9
    await register(http, sim, timed)
    alloc = await until_alloc(sim, "demo-job-1", "complete")
    assert alloc["ClientDescription"] == "allocation exceeded max_run_duration"


async def test_faults(sim: NomadSimulator, http: aiohttp.ClientSession) -> None:
    sim.fail(r"^/v1/jobs$", method="POST", status=503, body="No cluster leader", times=2)
    for _ in range(2):
        status, headers, body = await call(http, sim, "POST", "/v1/jobs", json={"Job": job()})
        assert (status, headers["Content-Type"], body) == (503, "text/plain", "No cluster leader")
    assert "demo-job-1" not in {k[1] for k in sim.cluster.jobs}
    sim.fail(r"^/v1/jobs$", after_commit=True)
    status, _, _ = await call(http, sim, "POST", "/v1/jobs", json={"Job": job()})
    assert status == 500 and ("default", "demo-job-1") in sim.cluster.jobs  # a lost answer
    gate = sim.hold(r"^/v1/job/demo-job-1$")
    pending = asyncio.ensure_future(call(http, sim, "GET", "/v1/job/demo-job-1"))
    await asyncio.sleep(0.05)
    assert not pending.done()
    gate.set()
    assert (await pending)[0] == 200
    assert sim.count("POST", r"^/v1/jobs$") == 3


def test_parse_duration() -> None:
    assert parse_duration("30s") == 30 and parse_duration("5m") == 300
    assert parse_duration("1m30s") == 90 and parse_duration("1500ms") == 1.5
    for bad in ("", "5", "s", "1x", "1s2"):
        with pytest.raises(ValueError):
            parse_duration(bad)


async def test_stopping_a_job_that_no_longer_exists_answers_200_without_an_evaluation(
    sim: NomadSimulator, http: aiohttp.ClientSession
) -> None:
    # hashicorp/nomad nomad/job_endpoint.go Deregister: `if job == nil { return nil }`
    # (v1.6.0 to v2.0.5): the reply keeps its zero values
    for path in ("/v1/job/never-registered", "/v1/job/never-registered?purge=true"):
        status, _, body = await call(http, sim, "DELETE", path)
        assert status == 200
        assert body["EvalID"] == "" and body["JobModifyIndex"] == 0
    sim.script("demo-job-1", duration_s=1000)
    await register(http, sim, job())
    await until_alloc(sim, "demo-job-1", "running")
    sim.garbage_collect("demo-job-1")
    assert (await call(http, sim, "GET", "/v1/job/demo-job-1"))[:3:2] == (404, "job not found")
    assert (await call(http, sim, "GET", "/v1/job/demo-job-1/allocations"))[2] == []
    status, _, body = await call(http, sim, "DELETE", "/v1/job/demo-job-1")
    assert (status, body["EvalID"], body["JobModifyIndex"]) == (200, "", 0)


@pytest.mark.parametrize(
    ("version", "refused_with"), [("1.6.0", 403), ("1.11.1", 403), ("1.11.2", 200), ("2.0.0", 200)]
)
async def test_a_refused_event_stream_depends_on_the_version(
    http: aiohttp.ClientSession, version: str, refused_with: int
) -> None:
    # v1.11.2 and v2.0.0 on, command/agent/event_endpoint.go writes 200 before the stream
    # authenticates; a refused token then gets the connection closed with no body
    sim = NomadSimulator(time_scale=0.01, acl=True, version=version)
    sim.add_token("jobs-only", namespaces={"default": {"submit-job"}})
    await sim.start()
    try:
        headers = {"X-Nomad-Token": "jobs-only"}
        async with asyncio.timeout(2):
            async with http.get(
                f"{sim.url}/v1/event/stream", params={"topic": "Job"}, headers=headers
            ) as resp:
                body = await resp.read()
        assert resp.status == refused_with
        assert body == (b"Permission denied" if refused_with == 403 else b"")
    finally:
        await sim.close()


async def test_a_purge_publishes_the_job_as_it_was_with_deleted(
    sim: NomadSimulator, http: aiohttp.ClientSession
) -> None:
    # nomad/state/events.go: a purge deletes the job; its JobDeregistered event carries the
    # job as it was plus "Deleted": true
    sim.script("demo-job-1", duration_s=1000)
    await register(http, sim, job())
    await until_alloc(sim, "demo-job-1", "running")
    before = dict(sim.cluster.jobs[("default", "demo-job-1")])
    await call(http, sim, "DELETE", "/v1/job/demo-job-1", params={"purge": "true"})
    (_, events) = next((i, e) for i, e in sim.cluster.buffer if e[0]["Type"] == "JobDeregistered")
    payload = events[0]["Payload"]
    assert payload["Deleted"] is True
    assert payload["Job"]["Stop"] is False and payload["Job"]["Version"] == before["Version"]
    assert payload["Job"]["ModifyIndex"] == before["ModifyIndex"]
    await until_alloc(sim, "demo-job-1", "complete")  # its allocation is still stopped


async def test_heartbeats_tick_whatever_the_traffic(http: aiohttp.ClientSession) -> None:
    # nomad/stream/ndjson.go: a time.Ticker, not an idle timer
    sim = NomadSimulator(time_scale=0.01, heartbeat_s=3.0)  # a beat every 30 ms
    await sim.start()
    try:
        lines: list[bytes] = []
        async with http.get(f"{sim.url}/v1/event/stream") as resp:

            async def read() -> None:
                async for line in resp.content:
                    lines.append(line.strip())

            reader = asyncio.ensure_future(read())
            for i in range(25):  # an event every 10 ms, for 250 ms
                await sim.cluster.commit(
                    "EvaluationUpdated",
                    [("Evaluation", {"ID": f"e{i}", "Namespace": "default", "JobID": "j"})],
                )
                await asyncio.sleep(0.01)
            reader.cancel()
        beats = lines.count(b"{}") - 1  # the first line is a heartbeat too
        assert beats >= 3, lines
    finally:
        await sim.close()


async def test_a_job_without_datacenters_defaults_to_all(
    sim: NomadSimulator, http: aiohttp.ClientSession
) -> None:
    body = job()
    del body["Datacenters"]
    await register(http, sim, body)
    _, _, read = await call(http, sim, "GET", "/v1/job/demo-job-1")
    assert read["Datacenters"] == ["*"]


async def test_job_allocations_are_stubs_indexed_on_the_whole_table(
    sim: NomadSimulator, http: aiohttp.ClientSession
) -> None:
    # nomad/job_endpoint.go Allocations: AllocListStubs, index = state.Index("allocs")
    sim.script("job-a", duration_s=1000)
    sim.script("job-b", duration_s=1000, start_delay_s=5)
    await register(http, sim, job("job-a"))
    await until_alloc(sim, "job-a", "running")
    _, headers, stubs = await call(http, sim, "GET", "/v1/job/job-a/allocations")
    assert {"Job", "Resources", "Metrics", "AllocatedResources"}.isdisjoint(stubs[0])
    check(stubs, {"type": "array", "items": JOB_ALLOC_STUB})
    index = int(headers["X-Nomad-Index"])
    assert index == sim.cluster.allocs_index()
    # another job's allocation wakes a blocking query on job-a's
    await register(http, sim, job("job-b"))
    async with asyncio.timeout(2):
        _, headers, _ = await call(
            http, sim, "GET", "/v1/job/job-a/allocations", params={"index": index, "wait": "60s"}
        )
    assert int(headers["X-Nomad-Index"]) > index


@pytest.mark.parametrize(("version", "timed_out"), [("2.0.2", False), ("2.0.3", True)])
async def test_max_run_duration_from_2_0_3(
    http: aiohttp.ClientSession, version: str, timed_out: bool
) -> None:
    # hashicorp/nomad CHANGELOG.md: batch max_run_duration shipped in 2.0.3
    sim = NomadSimulator(time_scale=0.01, version=version)
    await sim.start()
    try:
        sim.script("demo-job-1", duration_s=10)
        timed = job()
        timed["TaskGroups"][0]["MaxRunDuration"] = 2 * 10**9
        await register(http, sim, timed)
        alloc = await until_alloc(sim, "demo-job-1", "complete")
        exceeded = alloc["ClientDescription"] == "allocation exceeded max_run_duration"
        assert exceeded is timed_out
    finally:
        await sim.close()


#: every route and method a Nomad client library uses for batch work, as Nomad's HTTP
#: handlers accept them (hashicorp/nomad command/agent/http.go registerHandlers;
#: job_endpoint.go JobsRequest and jobCRUD take PUT and POST alike)
NOMAD_ROUTES = {
    ("GET", "/v1/jobs"),
    ("PUT", "/v1/jobs"),
    ("POST", "/v1/jobs"),
    ("GET", "/v1/job/{job_id}"),
    ("PUT", "/v1/job/{job_id}"),
    ("POST", "/v1/job/{job_id}"),
    ("DELETE", "/v1/job/{job_id}"),
    ("GET", "/v1/job/{job_id}/allocations"),
    ("GET", "/v1/job/{job_id}/evaluations"),
    ("GET", "/v1/job/{job_id}/summary"),
    ("GET", "/v1/allocations"),
    ("GET", "/v1/allocation/{alloc_id}"),
    ("GET", "/v1/evaluations"),
    ("GET", "/v1/evaluation/{eval_id}"),
    ("GET", "/v1/evaluation/{eval_id}/allocations"),
    ("GET", "/v1/client/fs/logs/{alloc_id}"),
    ("GET", "/v1/client/fs/ls/{alloc_id}"),
    ("GET", "/v1/event/stream"),
    ("GET", "/v1/acl/token/self"),
}


async def test_every_route_in_every_method_nomad_accepts(
    sim: NomadSimulator, http: aiohttp.ClientSession
) -> None:
    served = {
        (r.method, r.resource.canonical) for r in sim.app.router.routes() if r.resource is not None
    }
    assert served == NOMAD_ROUTES
    body = {"Job": job("route-job")}
    for method in ("PUT", "POST"):
        for path in ("/v1/jobs", "/v1/job/route-job"):
            async with http.request(method, sim.url + path, json=body) as resp:
                assert resp.status == 200, (method, path, await resp.text())
    # a method Nomad refuses: 405, plain text (command/agent/http.go ErrInvalidMethod)
    async with http.request("PATCH", sim.url + "/v1/job/route-job") as resp:
        assert resp.status == 405
        assert resp.content_type == "text/plain"
        assert await resp.text() == "Invalid method"
    async with http.put(sim.url + "/v1/job/other-name", json=body) as resp:
        assert resp.status == 400 and await resp.text() == "Job ID does not match name"
    async with http.get(sim.url + "/v1/jobs", params={"prefix": "route-"}) as resp:
        assert [j["ID"] for j in await resp.json()] == ["route-job"]
        assert int(resp.headers["X-Nomad-Index"]) >= 1


async def test_logs_rotate_and_offsets_count_from_the_lowest_file_on_disk(
    sim: NomadSimulator, http: aiohttp.ClientSession
) -> None:
    """hashicorp/nomad client/logmon/logging/rotator.go (files of MaxFileSizeMB MiB, the
    newest MaxFiles kept) and client/fs_endpoint.go logsImpl/findClosest (an offset walks
    the files still on disk, frames carry the file's own offset)."""
    mib = 1024 * 1024
    out = b"".join(bytes([65 + n]) * mib for n in range(3)) + b"tail\n"
    body = job("rotating")
    body["TaskGroups"][0]["Tasks"][0]["LogConfig"] = {"MaxFiles": 2, "MaxFileSizeMB": 1}
    sim.script("rotating", stdout=out)
    await register(http, sim, body)
    alloc = await until_alloc(sim, "rotating", "complete")
    base = f"{sim.url}/v1/client/fs/logs/{alloc['ID']}"
    async with http.get(f"{sim.url}/v1/client/fs/ls/{alloc['ID']}?path=alloc/logs") as resp:
        files = {f["Name"]: f["Size"] for f in await resp.json()}
    assert files["main.stdout.2"] == mib and files["main.stdout.3"] == 5
    assert "main.stdout.0" not in files and "main.stdout.1" not in files
    q = {"task": "main", "type": "stdout", "plain": "true"}
    async with http.get(base, params=q) as resp:
        assert await resp.read() == out[2 * mib :]  # .0 and .1 are gone
    # offset 10 is 10 bytes into the lowest file on disk (.2), not into the output
    async with http.get(base, params={"task": "main", "type": "stdout", "offset": "10"}) as resp:
        frames = wire.FrameDecoder().feed(await resp.read())
    assert frames[0].file == "alloc/logs/main.stdout.2"
    assert frames[0].offset == 10 + len(frames[0].data)
    assert frames[-1].file == "alloc/logs/main.stdout.3" and frames[-1].offset == 5
    assert b"".join(f.data for f in frames) == out[2 * mib + 10 :]
