"""The Cloud Run / Cloud Logging simulator, held to Google's discovery documents.

The discovery subsets in tests/samples/cloudrun/ are converted to JSON Schema (objects closed with
``additionalProperties: false`` so the simulator cannot invent fields); every response body the
simulator serves, and every request body egw builds, is validated against its schema.
"""

from __future__ import annotations

import base64
import json
import re
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import jsonschema
import pytest

from egw.testing.cloudrun import CloudRunSimulator, JobScript, TaskOutput
from egw.testing.cloudrun.filters import FilterError, compile_filter, instant_ns
from egw.testing.cloudrun.model import rfc3339
from egw.wire import cloudrun as w

SAMPLES = Path(__file__).parent.parent / "samples" / "cloudrun"
RUN = json.loads((SAMPLES / "run-v2.discovery-subset.json").read_text())
LOGGING = json.loads((SAMPLES / "logging-v2.discovery-subset.json").read_text())
JOB = "projects/my-project/locations/asia-east1/jobs/my-job"
H = {"Authorization": "Bearer sim-token"}
RFC3339 = r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d{1,9})?(Z|[+-]\d{2}:\d{2})$"
# google/rpc/code.proto names by HTTP status (run-v2-jobs.md, "Errors")
HTTP_STATUS = {
    "INVALID_ARGUMENT": 400,
    "FAILED_PRECONDITION": 400,
    "OUT_OF_RANGE": 400,
    "UNAUTHENTICATED": 401,
    "PERMISSION_DENIED": 403,
    "NOT_FOUND": 404,
    "ALREADY_EXISTS": 409,
    "ABORTED": 409,
    "RESOURCE_EXHAUSTED": 429,
    "CANCELLED": 499,
    "UNKNOWN": 500,
    "INTERNAL": 500,
    "DATA_LOSS": 500,
    "UNIMPLEMENTED": 501,
    "UNAVAILABLE": 503,
    "DEADLINE_EXCEEDED": 504,
}


# --- discovery schema -> JSON Schema ------------------------------------------------------------


def to_json_schema(s: dict[str, Any]) -> dict[str, Any]:
    """One discovery schema as JSON Schema (draft 7)."""
    if "$ref" in s:
        return {"$ref": f"#/definitions/{s['$ref']}"}
    kind, fmt = s.get("type"), s.get("format")
    if kind == "any":
        return {}
    out: dict[str, Any] = {}
    if kind == "object":
        out["type"] = "object"
        if "properties" in s:
            out["properties"] = {k: to_json_schema(v) for k, v in s["properties"].items()}
        extra = s.get("additionalProperties")
        out["additionalProperties"] = (
            to_json_schema(extra) if extra is not None else ("properties" not in s)
        )
    elif kind == "array":
        out = {"type": "array", "items": to_json_schema(s["items"])}
    elif kind == "integer":
        out = {"type": "integer"}
    elif kind == "number":
        out = {"type": "number"}
    elif kind == "boolean":
        out = {"type": "boolean"}
    elif kind == "string":
        out = {"type": "string"}
        if fmt == "google-datetime":
            out["pattern"] = RFC3339
        elif fmt == "google-duration":
            out["pattern"] = r"^-?\d+(\.\d{1,9})?s$"
        elif fmt == "int64":
            out["pattern"] = r"^-?\d+$"
    if "enum" in s:
        out["enum"] = s["enum"]
    return out


def validator(doc: dict[str, Any], name: str) -> jsonschema.Draft7Validator:
    definitions = {k: to_json_schema(v) for k, v in doc["schemas"].items()}
    return jsonschema.Draft7Validator({"definitions": definitions, "$ref": f"#/definitions/{name}"})


def check(doc: dict[str, Any], name: str, body: Any) -> None:
    errors = sorted(validator(doc, name).iter_errors(body), key=lambda e: list(e.path))
    assert not errors, [f"{list(e.path)}: {e.message}" for e in errors[:5]]


def check_operation(body: dict[str, Any]) -> None:
    """An Operation whose metadata/response is an Execution in Any form (run-v2-jobs.md step 2)."""
    check(RUN, "GoogleLongrunningOperation", body)
    # `error` and `response` are the `result` oneof (googleapis google/longrunning/operations.proto)
    assert not ("error" in body and "response" in body)
    if body.get("done"):
        assert "error" in body or "response" in body
    for key in ("metadata", "response"):
        if key in body:
            assert body[key]["@type"] == "type.googleapis.com/google.cloud.run.v2.Execution"
            check(
                RUN,
                "GoogleCloudRunV2Execution",
                {k: v for k, v in body[key].items() if k != "@type"},
            )


def test_converter_is_strict() -> None:
    with pytest.raises(AssertionError):
        check(RUN, "GoogleCloudRunV2Execution", {"name": "x", "invented": 1})
    with pytest.raises(AssertionError):
        check(RUN, "GoogleCloudRunV2Execution", {"generation": 1})  # int64 is a JSON string
    with pytest.raises(AssertionError):
        check(RUN, "GoogleCloudRunV2Condition", {"state": "DONE"})
    check(RUN, "GoogleCloudRunV2Execution", {"name": "x", "generation": "1"})


# --- fixtures -------------------------------------------------------------------------------------


class Clock:
    def __init__(self) -> None:
        self.t = 1_800_000_000.0

    def __call__(self) -> float:
        return self.t


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
async def sim(clock: Clock) -> AsyncIterator[CloudRunSimulator]:
    s = CloudRunSimulator(clock=clock, seed=7)
    await s.start()
    yield s
    await s.close()


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


async def call(
    http: aiohttp.ClientSession,
    sim: CloudRunSimulator,
    method: str,
    path: str,
    body: Any = None,
    headers: dict[str, str] | None = None,
) -> tuple[int, Any]:
    async with http.request(
        method, f"{sim.url}/v2/{path}", json=body, headers=H if headers is None else headers
    ) as resp:
        return resp.status, await resp.json()


def check_error(status: int, body: Any, google_status: str) -> str:
    assert set(body) == {"error"}
    err = body["error"]
    assert set(err) <= {"code", "message", "status", "details"}
    assert err["code"] == status == HTTP_STATUS[err["status"]]
    assert err["status"] == google_status
    assert isinstance(err["message"], str) and err["message"]
    return str(err["message"])


async def run(
    http: aiohttp.ClientSession, sim: CloudRunSimulator, task_id: str = "t_1", **task: Any
) -> dict[str, Any]:
    spec = w.validate_task(
        {"project": "my-project", "region": "asia-east1", "job": "my-job", **task}
    )
    body = w.run_job_request(spec, task_id)
    check(RUN, "GoogleCloudRunV2RunJobRequest", body)
    status, op = await call(http, sim, "POST", f"{JOB}:run", body)
    assert status == 200, op
    check_operation(op)
    return op  # type: ignore[no-any-return]


# --- Cloud Run Admin v2 -----------------------------------------------------------------------


async def test_an_execution_advances_in_simulated_time(
    sim: CloudRunSimulator, clock: Clock, http: aiohttp.ClientSession
) -> None:
    sim.add_job(
        "my-project",
        "asia-east1",
        "my-job",
        script=JobScript(stdout=["one", "two"], duration_s=10, start_delay_s=2),
    )
    op = await run(http, sim, args=["x"], env={"MODE": "fast"}, timeout_s=60)
    name = op["metadata"]["name"]
    assert re.fullmatch(rf"{JOB}/executions/my-job-[a-z0-9]{{5}}", name)
    assert op.get("done") is not True
    states = []
    ex: dict[str, Any] = {}
    for step in (0, 3, 13):
        clock.t += step
        status, ex = await call(http, sim, "GET", name)
        assert status == 200
        check(RUN, "GoogleCloudRunV2Execution", ex)
        states.append(w.execution_observation(ex).state.value)
    assert states == ["queued", "running", "succeeded"]
    assert ex["succeededCount"] == 1 and "runningCount" not in ex  # proto3 JSON drops zeros
    assert w.execution_task_id(ex) == "t_1"
    container = ex["template"]["containers"][0]
    assert container["args"] == ["x"] and {"name": "MODE", "value": "fast"} in container["env"]
    assert ex["template"]["timeout"] == "60s"
    status, done = await call(http, sim, "GET", op["name"])
    check_operation(done)
    assert done["done"] is True and done["response"]["name"] == name
    status, waited = await call(http, sim, "POST", f"{op['name']}:wait", {"timeout": "5s"})
    assert status == 200 and waited["done"] is True
    check_operation(waited)


async def test_failure_tasks_and_exit_codes(
    sim: CloudRunSimulator, clock: Clock, http: aiohttp.ClientSession
) -> None:
    sim.add_job(
        "my-project",
        "asia-east1",
        "my-job",
        script=JobScript(exit_code=3, failing_tasks=frozenset({1})),
    )
    op = await run(http, sim, task_count=3)
    name = op["metadata"]["name"]
    clock.t += 60
    _, ex = await call(http, sim, "GET", name)
    check(RUN, "GoogleCloudRunV2Execution", ex)
    assert (ex["taskCount"], ex["succeededCount"], ex["failedCount"]) == (3, 2, 1)
    _, tasks = await call(http, sim, "GET", f"{name}/tasks?pageSize=2")
    check(RUN, "GoogleCloudRunV2ListTasksResponse", tasks)
    assert [t.get("index", 0) for t in tasks["tasks"]] == [0, 1] and tasks["nextPageToken"]
    _, rest = await call(http, sim, "GET", f"{name}/tasks?pageToken={tasks['nextPageToken']}")
    assert [t.get("index", 0) for t in rest["tasks"]] == [2] and "nextPageToken" not in rest
    _, task1 = await call(http, sim, "GET", tasks["tasks"][1]["name"])
    check(RUN, "GoogleCloudRunV2Task", task1)
    assert task1["lastAttemptResult"]["exitCode"] == 3
    obs = w.execution_observation(ex, tasks["tasks"] + rest["tasks"])
    assert obs.state.value == "failed" and obs.exit_code == 3
    assert obs.reason is not None and obs.reason.startswith("NON_ZERO_EXIT_CODE: Task ")


async def test_cancel(sim: CloudRunSimulator, clock: Clock, http: aiohttp.ClientSession) -> None:
    sim.add_job(
        "my-project",
        "asia-east1",
        "my-job",
        script=JobScript(
            stdout=[f"l{i}" for i in range(9)], duration_s=10, start_delay_s=1, cancel_delay_s=2
        ),
    )
    name = (await run(http, sim))["metadata"]["name"]
    clock.t += 4
    status, op = await call(http, sim, "POST", f"{name}:cancel", {})
    assert status == 200
    check_operation(op)
    assert w.execution_observation(op["metadata"]).state.value == "cancelling"
    clock.t += 1
    _, ex = await call(http, sim, "GET", name)
    assert w.execution_observation(ex).state.value == "cancelling"
    clock.t += 2
    _, ex = await call(http, sim, "GET", name)
    check(RUN, "GoogleCloudRunV2Execution", ex)
    assert w.execution_observation(ex).state.value == "cancelled"
    assert ex["cancelledCount"] == 1
    status, body = await call(http, sim, "POST", f"{name}:cancel", {})
    check_error(status, body, "FAILED_PRECONDITION")
    # the output stopped at the cancel: lines written after it never show up
    clock.t += 60
    ref = w.parse_execution_name(name)
    _, page = await call(http, sim, "POST", "entries:list", w.list_entries_request(ref))
    texts = [e.get("textPayload") for e in page["entries"]]
    assert texts == ["l0", "l1", "l2"]


async def test_default_script_prints_the_args(
    sim: CloudRunSimulator, clock: Clock, http: aiohttp.ClientSession
) -> None:
    sim.add_job("my-project", "asia-east1", "my-job", args=["echo", "default"])
    first = (await run(http, sim, "t_a"))["metadata"]["name"]
    second = (await run(http, sim, "t_b", args=["hello", "world"]))["metadata"]["name"]
    cleared = (await run(http, sim, "t_c", args=[]))["metadata"]["name"]
    clock.t += 30
    out = {}
    for name in (first, second, cleared):
        ref = w.parse_execution_name(name)
        _, page = await call(http, sim, "POST", "entries:list", w.list_entries_request(ref))
        for entry in page["entries"]:
            check(LOGGING, "LogEntry", entry)
        out[name] = [w.render_entry(e).text for e in page["entries"]]
    assert out[first] == ["echo default", "[cloud run] Container called exit(0)."]
    assert out[second] == ["hello world", "[cloud run] Container called exit(0)."]
    assert out[cleared] == ["[cloud run] Container called exit(0)."]


async def test_executions_list_is_paged_newest_first(
    sim: CloudRunSimulator, clock: Clock, http: aiohttp.ClientSession
) -> None:
    sim.add_job("my-project", "asia-east1", "my-job")
    names = []
    for i in range(5):
        names.append((await run(http, sim, f"t_{i}"))["metadata"]["name"])
        clock.t += 1
    seen: list[str] = []
    token = ""
    while True:
        _, page = await call(http, sim, "GET", f"{JOB}/executions?pageSize=2&pageToken={token}")
        check(RUN, "GoogleCloudRunV2ListExecutionsResponse", page)
        seen += [e["name"] for e in page["executions"]]
        token = page.get("nextPageToken", "")
        if not token:
            break
    assert seen == names[::-1]
    status, body = await call(http, sim, "GET", f"{JOB}/executions?pageToken=bogus")
    check_error(status, body, "INVALID_ARGUMENT")


async def test_errors_are_googles(
    sim: CloudRunSimulator, clock: Clock, http: aiohttp.ClientSession
) -> None:
    sim.add_job("my-project", "asia-east1", "my-job")
    status, body = await call(http, sim, "POST", f"{JOB}:run", {}, headers={})
    check_error(status, body, "UNAUTHENTICATED")
    status, body = await call(
        http, sim, "POST", f"{JOB}:run", {}, headers={"Authorization": "Bearer wrong"}
    )
    check_error(status, body, "UNAUTHENTICATED")
    short = sim.issue_token(lifetime_s=10)
    assert (
        await call(
            http, sim, "GET", f"{JOB}/executions", headers={"Authorization": f"Bearer {short}"}
        )
    )[0] == 200
    clock.t += 11
    status, body = await call(
        http, sim, "GET", f"{JOB}/executions", headers={"Authorization": f"Bearer {short}"}
    )
    check_error(status, body, "UNAUTHENTICATED")
    status, body = await call(http, sim, "POST", f"{JOB.replace('my-job', 'nope')}:run", {})
    assert "of kind 'JOB'" in check_error(status, body, "NOT_FOUND")
    status, body = await call(http, sim, "POST", f"{JOB}:run", {"overrides": {"command": ["x"]}})
    assert 'Unknown name "command"' in check_error(status, body, "INVALID_ARGUMENT")
    status, body = await call(http, sim, "POST", f"{JOB}:run", {"overrides": {"timeout": "10m"}})
    check_error(status, body, "INVALID_ARGUMENT")
    status, body = await call(http, sim, "GET", f"{JOB}/executions/my-job-zzzzz")
    check_error(status, body, "NOT_FOUND")
    assert sim.executions_of("my-project", "asia-east1", "my-job") == []


async def test_fault_injection(sim: CloudRunSimulator, http: aiohttp.ClientSession) -> None:
    sim.add_job("my-project", "asia-east1", "my-job")
    sim.fail("run", 429, times=2)
    for _ in range(2):
        status, body = await call(http, sim, "POST", f"{JOB}:run", {})
        assert "Quota exceeded" in check_error(status, body, "RESOURCE_EXHAUSTED")
        assert body["error"]["details"][0]["reason"] == "RATE_LIMIT_EXCEEDED"
    assert sim.executions_of("my-project", "asia-east1", "my-job") == []
    sim.fail("run", 500, apply=True)
    status, body = await call(http, sim, "POST", f"{JOB}:run", {})
    check_error(status, body, "INTERNAL")
    assert len(sim.executions_of("my-project", "asia-east1", "my-job")) == 1  # it did start
    sim.fail("*", 503)
    status, body = await call(http, sim, "GET", f"{JOB}/executions")
    check_error(status, body, "UNAVAILABLE")
    sim.delay("list_executions", 0.3)
    with pytest.raises(TimeoutError):
        async with http.get(
            f"{sim.url}/v2/{JOB}/executions", headers=H, timeout=aiohttp.ClientTimeout(total=0.1)
        ):
            pass
    assert sim.count("list_executions") == 2
    with pytest.raises(ValueError):
        sim.fail("nonsense")


# --- Cloud Logging ----------------------------------------------------------------------------


async def test_entries_list_paging_order_and_filters(
    sim: CloudRunSimulator, clock: Clock, http: aiohttp.ClientSession
) -> None:
    sim.add_job(
        "my-project",
        "asia-east1",
        "my-job",
        task_count=2,
        script=JobScript(
            stdout=[f"out {i}" for i in range(6)],
            stderr=[{"message": "warn", "severity": "WARNING", "n": 1}],
        ),
    )
    other = (await run(http, sim, "t_other"))["metadata"]["name"]
    name = (await run(http, sim))["metadata"]["name"]
    clock.t += 60
    ref = w.parse_execution_name(name)
    entries: list[dict[str, Any]] = []
    token = None
    while True:
        body = w.list_entries_request(ref, page_token=token, page_size=4)
        check(LOGGING, "ListLogEntriesRequest", body)
        status, page = await call(http, sim, "POST", "entries:list", body)
        assert status == 200
        check(LOGGING, "ListLogEntriesResponse", page)
        entries += page.get("entries", [])
        token = page.get("nextPageToken")
        if not token:
            break
    assert len(entries) == 2 * (6 + 1 + 1)
    assert {e["labels"][w.LABEL_EXECUTION] for e in entries} == {ref.execution}
    # by timestamp; insertId breaks ties only within one logName (LogEntry.insertId)
    keys = [(instant_ns(e["timestamp"]), e["logName"], e["insertId"]) for e in entries]
    assert keys == sorted(keys) and len(set(keys)) == len(keys)
    json_entry = next(e for e in entries if "jsonPayload" in e)
    assert json_entry["severity"] == "WARNING" and "severity" not in json_entry["jsonPayload"]
    assert {e["resource"]["labels"]["job_name"] for e in entries} == {"my-job"}
    # a time window, newest first
    middle = entries[5]["timestamp"]
    body = {**w.list_entries_request(ref, since=middle), "orderBy": "timestamp desc"}
    _, page = await call(http, sim, "POST", "entries:list", body)
    got = [(w.normalize_timestamp(e["timestamp"]), e["insertId"]) for e in page["entries"]]
    assert got == sorted(got, reverse=True)
    assert min(got)[0] >= w.normalize_timestamp(middle)
    # the other execution's entries are there under its own name
    ref2 = w.parse_execution_name(other)
    _, page = await call(http, sim, "POST", "entries:list", w.list_entries_request(ref2))
    assert len(page["entries"]) == 16
    # a changed request with an old page token, a bad filter, a bad order
    first = w.list_entries_request(ref, page_size=2)
    _, page = await call(http, sim, "POST", "entries:list", first)
    status, body = await call(
        http,
        sim,
        "POST",
        "entries:list",
        {**w.list_entries_request(ref2), "pageToken": page["nextPageToken"]},
    )
    check_error(status, body, "INVALID_ARGUMENT")
    status, body = await call(
        http,
        sim,
        "POST",
        "entries:list",
        {"resourceNames": ["projects/my-project"], "filter": "timestamp>="},
    )
    check_error(status, body, "INVALID_ARGUMENT")
    status, body = await call(
        http,
        sim,
        "POST",
        "entries:list",
        {"resourceNames": ["projects/my-project"], "orderBy": "insertId"},
    )
    check_error(status, body, "INVALID_ARGUMENT")
    status, body = await call(http, sim, "POST", "entries:list", {"filter": ""})
    check_error(status, body, "INVALID_ARGUMENT")


async def test_entries_show_up_late_and_pages_may_be_empty(
    sim: CloudRunSimulator, clock: Clock, http: aiohttp.ClientSession
) -> None:
    sim.add_job(
        "my-project",
        "asia-east1",
        "my-job",
        script=JobScript(
            stdout=["a", "b"],
            duration_s=3,
            start_delay_s=0,
            ingest_delay_s=5,
            system_messages=False,
        ),
    )
    ref = w.parse_execution_name((await run(http, sim))["metadata"]["name"])
    clock.t += 4  # both lines are written, neither is ingested yet
    _, page = await call(http, sim, "POST", "entries:list", w.list_entries_request(ref))
    assert page == {}
    clock.t += 10
    sim.empty_log_pages = 2
    body = w.list_entries_request(ref)
    texts: list[str] = []
    calls = 0
    while True:
        _, page = await call(http, sim, "POST", "entries:list", body)
        calls += 1
        texts += [e["textPayload"] for e in page.get("entries", [])]
        if "nextPageToken" not in page:
            break
        body = {**body, "pageToken": page["nextPageToken"]}
    assert texts == ["a", "b"] and calls == 3


async def test_logging_quota(sim: CloudRunSimulator, http: aiohttp.ClientSession) -> None:
    sim.logging_quota_per_minute = 2
    body = {"resourceNames": ["projects/my-project"]}
    assert (await call(http, sim, "POST", "entries:list", body))[0] == 200
    assert (await call(http, sim, "POST", "entries:list", body))[0] == 200
    status, err = await call(http, sim, "POST", "entries:list", body)
    check_error(status, err, "RESOURCE_EXHAUSTED")
    other = {"resourceNames": ["projects/other-project"]}
    assert (await call(http, sim, "POST", "entries:list", other))[0] == 200


def test_per_task_script() -> None:
    script = JobScript(
        per_task=lambda ctx: TaskOutput(stdout=[f"task {ctx.index}"], exit_code=ctx.index)
    )
    from egw.testing.cloudrun.model import TaskContext

    out = script.output(TaskContext(2, 3, (), {}))
    assert out.stdout == ["task 2"] and out.exit_code == 2


ENTRY = {
    "timestamp": "2026-11-27T10:00:00.5Z",
    "insertId": "b",
    "severity": "ERROR",
    "resource": {"type": "cloud_run_job", "labels": {"job_name": "my-job"}},
    "labels": {"run.googleapis.com/execution_name": "my-job-abcde"},
    "textPayload": "Disk FULL on /data",
    "jsonPayload": {"rows": 12, "message": "x2"},
}


@pytest.mark.parametrize(
    "text,matches",
    [
        ("", True),
        ('resource.type="cloud_run_job"', True),
        ("resource.type=cloud_run_job", True),
        ('resource.type="cloud_run_revision"', False),
        ('labels."run.googleapis.com/execution_name"="my-job-abcde"', True),
        ('labels."run.googleapis.com/execution_name"="my-job-x"', False),
        ('timestamp>="2026-11-27T10:00:00.500000000Z"', True),
        ('timestamp>"2026-11-27T10:00:00.5Z"', False),
        ('timestamp<="2026-11-27T11:00:01+01:00"', True),
        ('textPayload:"disk full"', True),
        ('textPayload=~"^Disk [A-Z]+"', True),
        ('textPayload!~"Disk"', False),
        ('severity="ERROR" AND NOT textPayload:"ok"', True),
        ('severity="INFO" OR (insertId="b" AND -severity="DEBUG")', True),
        ('severity="ERROR" insertId="c"', False),
        ('jsonPayload.message="x"', False),
        ('jsonPayload.message!="x"', True),
        # issue 12, point 11: timestamps in every RFC 3339 form, and as google-cloud-logging
        # sends them (googleapis/python-logging google/cloud/logging_v2/_helpers.py:
        # _TIME_FORMAT "%Y-%m-%dT%H:%M:%S.%f%z" gives "+0000")
        ('timestamp>="2026-11-27T10:00:00.500000+0000"', True),
        ('timestamp>"2026-11-27T10:00:00.500000+0000"', False),
        ('timestamp>="2026-11-27T11:00:00.400000+0100"', True),
        ('timestamp="2026-11-27t10:00:00.5z"', True),
        ('timestamp="2026-11-27 10:00:00.500Z"', True),
        ('timestamp="2026-11-27T10:00:00.500000000000Z"', True),
        ('timestamp<"2026-11-27T05:00:01-05:00"', True),
        ("timestamp>=2026-11-27T10:00:00Z", True),
        ('timestamp>="2026-11-27T10:00:00.5Z" AND timestamp<"2026-11-27T10:00:01Z"', True),
        # severity compares by rank (googleapis google/logging/type/log_severity.proto)
        ("severity>=WARNING", True),
        ("severity>=CRITICAL", False),
        ("severity<ERROR", False),
        ("severity<=error", True),
        ('NOT (severity>=WARNING OR textPayload:"x")', False),
        ("jsonPayload.rows>9", True),
        ("jsonPayload.rows<10", False),
        ('(resource.type="cloud_run_job" OR severity=DEBUG) AND NOT insertId="a"', True),
    ],
)
def test_filter_subset(text: str, matches: bool) -> None:
    assert compile_filter(text)(ENTRY) is matches


@pytest.mark.parametrize(
    "text",
    [
        "resource.type",
        '(severity="ERROR"',
        'timestamp>"yesterday"',
        "severity>=LOUD",
        'severity="ERROR" )',
        '"unterminated',
    ],
)
def test_filter_errors(text: str) -> None:
    with pytest.raises(FilterError):
        compile_filter(text)


# --- the token endpoint -------------------------------------------------------------------------


def _jwt(claims: dict[str, Any]) -> str:
    def enc(obj: Any) -> str:
        return base64.urlsafe_b64encode(json.dumps(obj).encode()).decode().rstrip("=")

    return f"{enc({'alg': 'RS256'})}.{enc(claims)}.c2ln"


async def test_token_endpoint_checks_the_assertion(
    sim: CloudRunSimulator, http: aiohttp.ClientSession
) -> None:
    grant = "urn:ietf:params:oauth:grant-type:jwt-bearer"
    claims = {"aud": f"{sim.url}/token", "scope": w.SCOPE, "iss": "sa@p.iam.gserviceaccount.com"}

    async def post(form: dict[str, str]) -> tuple[int, Any]:
        async with http.post(f"{sim.url}/token", data=form) as resp:
            return resp.status, await resp.json()

    status, body = await post({"grant_type": grant, "assertion": _jwt(claims)})
    assert status == 200 and body["token_type"] == "Bearer" and body["expires_in"] == 3600
    assert (
        await call(
            http,
            sim,
            "GET",
            f"{JOB}/executions",
            headers={"Authorization": f"Bearer {body['access_token']}"},
        )
    )[0] == 404
    status, body = await post({"grant_type": grant, "assertion": _jwt({**claims, "aud": "x"})})
    assert status == 400 and body["error"] == "invalid_grant"
    status, body = await post({"grant_type": "password"})
    assert status == 400 and body["error"] == "unsupported_grant_type"
    sim.trusted_keys = {"k1": "-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n"}
    status, body = await post({"grant_type": grant, "assertion": _jwt(claims)})
    assert status == 400 and body["error"] == "invalid_grant"


# --- issue 12, points 9 and 10: what Google does, not what the simulator used to invent ---------


@pytest.mark.parametrize("order", ["newest_first", "oldest_first", "shuffled"])
async def test_executions_can_be_listed_in_another_order(
    sim: CloudRunSimulator, clock: Clock, http: aiohttp.ClientSession, order: str
) -> None:
    """No order is documented for executions.list (googleapis google/cloud/run/v2/
    execution.proto, ListExecutionsRequest): a knob lists them in another one, the same order on
    every page of one listing."""
    sim.add_job("my-project", "asia-east1", "my-job")
    names = []
    for i in range(7):
        names.append((await run(http, sim, f"t_{i}"))["metadata"]["name"])
        clock.t += 1
    sim.list_order = order
    listings = []
    for _ in range(2):
        seen: list[str] = []
        token = ""
        while True:
            _, page = await call(http, sim, "GET", f"{JOB}/executions?pageSize=3&pageToken={token}")
            seen += [e["name"] for e in page["executions"]]
            token = page.get("nextPageToken", "")
            if not token:
                break
        listings.append(seen)
    assert listings[0] == listings[1] and sorted(seen) == sorted(names)
    expected = {"newest_first": names[::-1], "oldest_first": names}.get(order)
    if expected is not None:
        assert seen == expected
    else:
        assert seen not in (names, names[::-1])


async def test_a_finished_operation_holds_error_or_response(
    sim: CloudRunSimulator, clock: Clock, http: aiohttp.ClientSession
) -> None:
    """Failed execution: `error`; succeeded or cancelled: `response` (apache/airflow#38028 and
    #67050 read a cancelled execution's run operation as done without `error`)."""
    sim.add_job("my-project", "asia-east1", "ok")
    sim.add_job("my-project", "asia-east1", "bad", script=JobScript(exit_code=1))
    ok = await call(http, sim, "POST", f"{JOB[:-6]}ok:run", {})
    bad = await call(http, sim, "POST", f"{JOB[:-6]}bad:run", {})
    clock.t += 60
    for (_, op), key in ((ok, "response"), (bad, "error")):
        status, done = await call(http, sim, "GET", op["name"])
        assert status == 200 and done["done"] is True
        check_operation(done)
        assert key in done
    assert done["error"]["code"] == 9 and "exit code 1" in done["error"]["message"]
    # a run operation that failed before any execution: only `error`, nothing started
    sim.run_operation_errors.append((3, "bad request"))
    status, op = await call(http, sim, "POST", f"{JOB[:-6]}ok:run", {})
    assert status == 200 and op["done"] is True and op["error"]["message"] == "bad request"
    check_operation(op)
    assert "metadata" not in op and len(sim.executions) == 2


@pytest.mark.parametrize("answer", [400, 409, None])
async def test_cancelling_a_finished_execution_answers_what_the_knob_says(
    sim: CloudRunSimulator, clock: Clock, http: aiohttp.ClientSession, answer: int | None
) -> None:
    sim.add_job("my-project", "asia-east1", "my-job")
    name = (await run(http, sim))["metadata"]["name"]
    clock.t += 60
    sim.cancel_finished_status = answer
    status, body = await call(http, sim, "POST", f"{name}:cancel", {})
    if answer is None:
        assert status == 200 and body["done"] is True
        check_operation(body)
        assert w.execution_observation(body["response"]).state.value == "succeeded"
    else:
        check_error(status, body, "FAILED_PRECONDITION" if answer == 400 else "ALREADY_EXISTS")
    _, ex = await call(http, sim, "GET", name)
    assert w.execution_observation(ex).state.value == "succeeded"


async def test_an_invoker_only_identity_cannot_run_with_overrides(
    sim: CloudRunSimulator, clock: Clock, http: aiohttp.ClientSession
) -> None:
    """run.jobs.run suffices for a plain run; overrides need run.jobs.runWithOverrides (run v2
    REST reference, projects.locations.jobs/run), which Cloud Run Invoker lacks
    (https://cloud.google.com/run/docs/execute/jobs, "Required roles"). The 403 is AIP-193's
    body with an ErrorInfo naming the permission."""
    sim.add_job("my-project", "asia-east1", "my-job")
    sim.grant("invoker", "roles/run.invoker")
    inv = {"Authorization": "Bearer invoker"}
    body = w.run_job_request(
        w.validate_task({"project": "my-project", "region": "asia-east1", "job": "my-job"}), "t_1"
    )
    status, err = await call(http, sim, "POST", f"{JOB}:run", body, headers=inv)
    message = check_error(status, err, "PERMISSION_DENIED")
    assert message == (
        f"Permission 'run.jobs.runWithOverrides' denied on resource '{JOB}' (or it may not exist)."
    )
    (info,) = err["error"]["details"]
    assert info == {
        "@type": "type.googleapis.com/google.rpc.ErrorInfo",
        "reason": "IAM_PERMISSION_DENIED",
        "domain": "iam.googleapis.com",
        "metadata": {"permission": "run.jobs.runWithOverrides", "resource": JOB},
    }
    assert w.parse_error(status, json.dumps(err).encode()).permission == "run.jobs.runWithOverrides"
    assert sim.executions == {}
    status, op = await call(http, sim, "POST", f"{JOB}:run", {}, headers=inv)  # a plain run
    assert status == 200
    name = op["metadata"]["name"]
    for method, path, permission in [
        ("GET", name, "run.executions.get"),
        ("GET", f"{JOB}/executions", "run.executions.list"),
        ("POST", f"{name}:cancel", "run.executions.cancel"),
        ("POST", "entries:list", "logging.logEntries.list"),
    ]:
        status, err = await call(http, sim, method, path, {}, headers=inv)
        check_error(status, err, "PERMISSION_DENIED")
        assert err["error"]["details"][0]["metadata"]["permission"] == permission
    sim.grant("dev", "roles/run.developer", "roles/logging.viewer")
    dev = {"Authorization": "Bearer dev"}
    assert (await call(http, sim, "POST", f"{JOB}:run", body, headers=dev))[0] == 200
    assert (await call(http, sim, "GET", name, headers=dev))[0] == 200
    with pytest.raises(ValueError):
        sim.grant("x", "roles/owner")


async def test_ties_order_by_insert_id_within_a_log_and_timestamps_drop_trailing_zeros(
    sim: CloudRunSimulator, clock: Clock, http: aiohttp.ClientSession
) -> None:
    """Issue 12, point 11. Entries order by timestamp, insertId breaking ties only within one
    logName (LogEntry.insertId, logging-entries-list.md); timestamps are proto3 JSON, 0/3/6/9
    fractional digits (googleapis google/protobuf/timestamp.proto)."""
    sim.add_job(
        "my-project",
        "asia-east1",
        "my-job",
        script=JobScript(
            stdout=[f"out {i}" for i in range(20)],
            stderr=[f"err {i}" for i in range(20)],
            duration_s=4,
            timestamp_resolution_s=1,
        ),
    )
    ref = w.parse_execution_name((await run(http, sim))["metadata"]["name"])
    clock.t += 60
    entries: list[dict[str, Any]] = []
    token = None
    while True:
        body = w.list_entries_request(ref, page_token=token, page_size=7)
        _, page = await call(http, sim, "POST", "entries:list", body)
        entries += page.get("entries", [])
        token = page.get("nextPageToken")
        if not token:
            break
    assert len(entries) == 41 and len({e["insertId"] for e in entries}) == 41
    stamps = [e["timestamp"] for e in entries]
    assert all(re.fullmatch(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}Z", t) for t in stamps)
    assert len(set(stamps)) < 10  # many ties
    keys = [(instant_ns(e["timestamp"]), e["logName"], e["insertId"]) for e in entries]
    assert keys == sorted(keys)
    # timestamps with 3 or 6 digits when the rest are zeros
    assert rfc3339(1_500_000_000) == "1970-01-01T00:00:01.500Z"
    assert rfc3339(1_000_001_000) == "1970-01-01T00:00:01.000001Z"
    assert rfc3339(1_000_000_001) == "1970-01-01T00:00:01.000000001Z"
    assert rfc3339(2_000_000_000) == "1970-01-01T00:00:02Z"
    # google-cloud-logging's own default filter (an offset without a colon) is understood
    since = 'timestamp>="1970-01-01T00:00:00.000000+0000"'
    body = {"resourceNames": ["projects/my-project"], "filter": since, "pageSize": 1000}
    status, page = await call(http, sim, "POST", "entries:list", body)
    assert status == 200 and len(page["entries"]) == 41
    status, page = await call(
        http, sim, "POST", "entries:list", {**body, "filter": "severity>=ERROR"}
    )
    assert status == 200 and {e["logName"].rsplit("%2F", 1)[-1] for e in page["entries"]} == {
        "stderr"
    }
