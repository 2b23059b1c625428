"""The GitHub simulator against the contract: REST answers validated against
rest-actions.openapi.json, webhooks against octokit's and GitHub's webhook schemas."""

from __future__ import annotations

import asyncio
import io
import json
import urllib.parse
import zipfile
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import aiohttp
import jsonschema  # type: ignore[import-untyped]
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT7

from egw.testing.github import GitHubSimulator, JobScript, RunScript, StepScript
from egw.wire import github as gh

SAMPLES = Path(__file__).resolve().parent.parent / "samples" / "github"
SECRET = "It's a Secret to Everybody"
TOKEN = "ghp_test"
API = {
    "Accept": "application/vnd.github+json",
    "X-GitHub-Api-Version": "2022-11-28",
    "Authorization": f"Bearer {TOKEN}",
}
REPO = "/repos/octo-org/octo-repo/actions"


# --- schema plumbing ------------------------------------------------------------------------


def openapi_to_jsonschema(node: Any) -> Any:
    """OpenAPI 3.0 -> JSON Schema: ``nullable: true`` becomes a ``null`` alternative."""
    if isinstance(node, list):
        return [openapi_to_jsonschema(n) for n in node]
    if not isinstance(node, dict):
        return node
    out = {k: openapi_to_jsonschema(v) for k, v in node.items() if k != "nullable"}
    if node.get("nullable") is True:
        if "enum" in out and None not in out["enum"]:
            out["enum"] = [*out["enum"], None]
        if isinstance(out.get("type"), str):
            out["type"] = [out["type"], "null"]
        elif "type" not in out:
            out = {"anyOf": [{"type": "null"}, out]}
    return out


def openapi_validator(file: str) -> Callable[[str, Any], None]:
    doc = openapi_to_jsonschema(json.loads((SAMPLES / file).read_text()))
    registry: Registry[Any] = Registry().with_resource(
        "urn:doc", Resource.from_contents(doc, DRAFT7)
    )

    def validate(pointer: str, instance: Any) -> None:
        schema = {"$ref": f"urn:doc#{pointer}"}
        jsonschema.Draft7Validator(schema, registry=registry).validate(instance)

    return validate


REST = openapi_validator("rest-actions.openapi.json")
HOOKS = openapi_validator("webhooks-workflow.openapi.json")


def octokit_registry() -> Registry[Any]:
    resources = []
    for path in (SAMPLES / "webhooks" / "schemas").rglob("*.schema.json"):
        contents = json.loads(path.read_text())
        resources.append((contents["$id"], Resource.from_contents(contents, DRAFT7)))
    return Registry().with_resources(resources)


OCTOKIT = octokit_registry()


def validate_delivery(event: str, payload: dict[str, Any], *, octokit: bool = True) -> None:
    action = payload.get("action")
    name = (
        "webhook-ping"
        if event == "ping"
        else (f"webhook-{event.replace('_', '-')}-{str(action).replace('_', '-')}")
    )
    HOOKS(f"/components/schemas/{name}", payload)
    if octokit:
        sid = "ping$event" if event == "ping" else f"{event}${action}"
        jsonschema.Draft7Validator({"$ref": sid}, registry=OCTOKIT).validate(payload)


def response_schema(path: str, method: str, status: str) -> str:
    return (
        "/paths/"
        + path.replace("~", "~0").replace("/", "~1")
        + (f"/{method}/responses/{status}/content/application~1json/schema")
    )


def test_samples_validate_against_both_schema_sets() -> None:
    # the schema plumbing itself, on the real examples (NOTES.md: all of them validate)
    for path in sorted((SAMPLES / "webhooks" / "examples").glob("*/*.json")):
        validate_delivery(path.parent.name, json.loads(path.read_text()))


# --- fixtures -------------------------------------------------------------------------------


class Receiver:
    def __init__(self) -> None:
        self.got: list[tuple[dict[str, str], bytes]] = []
        self.app = web.Application()
        self.app.router.add_post("/hook", self.take)

    async def take(self, request: web.Request) -> web.Response:
        self.got.append((dict(request.headers), await request.read()))
        return web.Response(status=200)


@pytest.fixture
async def receiver(aiohttp_server: Any) -> tuple[Receiver, TestServer]:
    rec = Receiver()
    server = await aiohttp_server(rec.app)
    return rec, server


@pytest.fixture
async def sim(receiver: tuple[Receiver, TestServer]) -> AsyncIterator[GitHubSimulator]:
    _, server = receiver
    simulator = GitHubSimulator(
        webhook_url=str(server.make_url("/hook")),
        webhook_secret=SECRET,
        token=TOKEN,
        time_scale=0.005,
        run_creation_delay_s=0.5,
    )
    await simulator.start()
    yield simulator
    await simulator.close()


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(headers=API) as session:
        yield session


async def dispatch(
    http: aiohttp.ClientSession,
    sim: GitHubSimulator,
    body: dict[str, Any],
    *,
    wf: str = "deploy.yml",
    version: str = "2022-11-28",
) -> aiohttp.ClientResponse:
    async with http.post(
        f"{sim.base_url}{REPO}/workflows/{wf}/dispatches",
        json=body,
        headers={"X-GitHub-Api-Version": version},
    ) as resp:
        await resp.read()
        return resp


async def get(http: aiohttp.ClientSession, url: str, **kw: Any) -> tuple[int, Any, Any]:
    async with http.get(url, **kw) as resp:
        raw = await resp.read()
        return (
            resp.status,
            (json.loads(raw) if raw and resp.content_type == "application/json" else raw),
            resp.headers,
        )


SEED = {"ref": "main", "inputs": {"env": "prod"}, "return_run_details": True}


# --- REST -----------------------------------------------------------------------------------


async def test_dispatch_with_run_details_then_run_jobs_and_logs(
    sim: GitHubSimulator, http: aiohttp.ClientSession
) -> None:
    path = "/repos/{owner}/{repo}/actions/workflows/{workflow_id}/dispatches"
    resp = await dispatch(http, sim, SEED)
    assert resp.status == 200
    body = await resp.json()
    REST(response_schema(path, "post", "200"), body)
    assert int(resp.headers["x-ratelimit-remaining"]) == 4999
    run_id = body["workflow_run_id"]
    status, run, _ = await get(http, f"{sim.base_url}{REPO}/runs/{run_id}")
    assert status == 200
    REST("/components/schemas/workflow-run", run)
    assert run["event"] == "workflow_dispatch" and run["head_branch"] == "main"
    await sim.wait_run(run_id)
    status, run, _ = await get(http, f"{sim.base_url}{REPO}/runs/{run_id}")
    assert (run["status"], run["conclusion"]) == ("completed", "success")
    REST("/components/schemas/workflow-run", run)
    status, jobs, _ = await get(http, f"{sim.base_url}{REPO}/runs/{run_id}/jobs")
    REST(response_schema("/repos/{owner}/{repo}/actions/runs/{run_id}/jobs", "get", "200"), jobs)
    job = jobs["jobs"][0]
    status, single, _ = await get(http, f"{sim.base_url}{REPO}/jobs/{job['id']}")
    REST("/components/schemas/job", single)
    async with http.get(f"{sim.base_url}{REPO}/jobs/{job['id']}/logs", allow_redirects=False) as r:
        assert r.status == 302
        location = r.headers["Location"]
    # the signed URL needs no token
    async with aiohttp.ClientSession() as anonymous, anonymous.get(location) as r:
        assert r.status == 200 and r.content_type == "text/plain"
        text = await r.text()
    assert "env=prod" in text and "##[group]Set up job" in text
    async with http.get(f"{sim.base_url}{REPO}/runs/{run_id}/logs") as r:
        archive = zipfile.ZipFile(io.BytesIO(await r.read()))
    assert "env=prod" in archive.read(archive.namelist()[0]).decode()


async def test_job_logs_redirect_while_queued_and_running_and_the_blob_is_not_found(
    sim: GitHubSimulator, http: aiohttp.ClientSession
) -> None:
    """Until the runner's upload lands, ``.../jobs/{id}/logs`` still answers 302 and the
    blob answers Azure's 404 ``BlobNotFound`` (egw.wire.github.logs has the sources)."""
    step = StepScript("Build", 200, output="compiled")
    sim.script(RunScript(jobs=[JobScript("build", steps=[step], log_delay_s=200)], queue_s=100))
    run_id = (await (await dispatch(http, sim, SEED)).json())["workflow_run_id"]

    async def try_log() -> tuple[int, str, Any]:
        job_id = next(j.id for j in sim.jobs.values() if j.run.id == run_id)
        url = f"{sim.base_url}{REPO}/jobs/{job_id}/logs"
        async with http.get(url, allow_redirects=False) as r:
            assert r.status == 302
            location = r.headers["Location"]
        async with aiohttp.ClientSession() as anonymous, anonymous.get(location) as r:
            return r.status, await r.text(), r.headers

    seen = []
    for status in ("queued", "in_progress", "completed"):
        while sim.runs[run_id].jobs[0].status != status:
            await asyncio.sleep(0.005)
        got, text, headers = await try_log()
        assert got == 404 and headers["Content-Type"] == "application/xml"
        assert headers["x-ms-error-code"] == "BlobNotFound"
        assert text.startswith('<?xml version="1.0" encoding="utf-8"?><Error><Code>BlobNotFound')
        assert "<Message>The specified blob does not exist.\nRequestId:" in text
        assert gh.blob_error_code({}, text.encode()) == "BlobNotFound"
        seen.append(status)
    assert seen == ["queued", "in_progress", "completed"]
    while (got := await try_log())[0] != 200:  # the upload lands log_delay_s later
        await asyncio.sleep(0.05)
    text = got[1]
    assert text.startswith("\ufeff")  # Encoding.UTF8's byte order mark
    lines = text.removeprefix("\ufeff").splitlines()
    # 7 fractional digits: actions/runner src/Runner.Common/Logging.cs, ToString("O")
    assert lines and all(gh.RUNNER_LINE.fullmatch(line) for line in lines)
    assert any(line.endswith(" compiled") for line in lines)


async def test_dispatch_answers_204_without_the_flag_and_200_under_2026(
    sim: GitHubSimulator, http: aiohttp.ClientSession
) -> None:
    resp = await dispatch(http, sim, {"ref": "main"})
    assert resp.status == 204
    status, listed, _ = await get(http, f"{sim.base_url}{REPO}/runs")
    assert status == 200
    assert listed["total_count"] == 0  # GitHub creates the run asynchronously
    resp = await dispatch(http, sim, {"ref": "main"}, version="2026-03-10")
    assert resp.status == 200
    REST("/components/schemas/workflow-dispatch-response", await resp.json())
    # the field is gone in 2026-03-10 (breaking-changes-2026-03-10.json)
    resp = await dispatch(http, sim, SEED, version="2026-03-10")
    assert resp.status == 422 and "return_run_details" in (await resp.json())["message"]
    resp = await dispatch(http, sim, {"ref": "main"}, version="2099-01-01")
    assert resp.status == 400


async def test_dispatch_errors(sim: GitHubSimulator, http: aiohttp.ClientSession) -> None:
    sim.add_workflow("octo-org", "octo-repo", "strict.yml", inputs=["env"])
    cases: list[tuple[dict[str, Any], str, int, str]] = [
        ({"inputs": {}}, "deploy.yml", 422, "ref"),
        ({"ref": "main", "inputs": {f"i{n}": "x" for n in range(26)}}, "deploy.yml", 422, "25"),
        ({"ref": "main", "inputs": {"other": "x"}}, "strict.yml", 422, "Unexpected inputs"),
        ({"ref": "main", "bogus": 1}, "deploy.yml", 422, "bogus"),
        ({"ref": "main"}, "12345", 404, "Not Found"),  # an unknown numeric workflow id
    ]
    for body, wf, status, text in cases:
        resp = await dispatch(http, sim, body, wf=wf)
        assert resp.status == status, body
        err = await resp.json()
        REST("/components/schemas/basic-error", err)
        assert text in err["message"]
    async with (
        aiohttp.ClientSession() as anonymous,
        anonymous.get(f"{sim.base_url}{REPO}/runs") as resp,
    ):
        assert resp.status == 401 and (await resp.json())["message"] == "Bad credentials"


@pytest.mark.parametrize("status", [422, 400])
async def test_enterprise_server_rejects_return_run_details(status: int) -> None:
    sim = GitHubSimulator(
        enterprise=True, enterprise_status=status, time_scale=0.005, run_creation_delay_s=0.2
    )
    await sim.start()
    try:
        async with aiohttp.ClientSession(headers={**API, "Authorization": ""}) as http:
            resp = await dispatch(http, sim, SEED)
            assert resp.status == status
            assert "return_run_details" in (await resp.json())["message"]
            assert (await dispatch(http, sim, {"ref": "main"})).status == 204
            assert (await dispatch(http, sim, {"ref": "main"}, version="2026-03-10")).status == 400
    finally:
        await sim.close()


async def test_runs_list_filters_paging_and_etag(
    sim: GitHubSimulator, http: aiohttp.ClientSession
) -> None:
    sim.script(*[RunScript(jobs=[], queue_s=0) for _ in range(5)])
    ids = []
    for ref in ("main", "main", "dev", "main", "main"):
        resp = await dispatch(http, sim, {**SEED, "ref": ref, "inputs": {}})
        ids.append((await resp.json())["workflow_run_id"])
    for run_id in ids:
        await sim.wait_run(run_id)
    list_schema = response_schema("/repos/{owner}/{repo}/actions/runs", "get", "200")
    status, page1, headers = await get(http, f"{sim.base_url}{REPO}/runs?per_page=2")
    REST(list_schema, page1)
    assert page1["total_count"] == 5 and [r["id"] for r in page1["workflow_runs"]] == ids[::-1][:2]
    nxt = gh.next_link(headers["Link"])
    assert nxt is not None and 'rel="last"' in headers["Link"]
    status, page2, headers = await get(http, nxt)
    assert [r["id"] for r in page2["workflow_runs"]] == ids[::-1][2:4]
    status, wf_runs, _ = await get(
        http, f"{sim.base_url}{REPO}/workflows/deploy.yml/runs?event=workflow_dispatch&branch=dev"
    )
    REST(
        response_schema("/repos/{owner}/{repo}/actions/workflows/{workflow_id}/runs", "get", "200"),
        wf_runs,
    )
    assert [r["id"] for r in wf_runs["workflow_runs"]] == [ids[2]]
    status, none, _ = await get(http, f"{sim.base_url}{REPO}/runs?event=push")
    assert none["total_count"] == 0
    created = page1["workflow_runs"][0]["created_at"]
    status, later, _ = await get(
        http, f"{sim.base_url}{REPO}/runs", params={"created": f">{created}"}
    )
    assert later["total_count"] == 0
    status, since, _ = await get(
        http, f"{sim.base_url}{REPO}/runs", params={"created": f">={created}"}
    )
    assert since["total_count"] >= 1
    status, ok, _ = await get(http, f"{sim.base_url}{REPO}/runs?status=success")
    assert ok["total_count"] == 5
    # conditional requests: a 304 carries no body and costs no rate limit
    url = f"{sim.base_url}{REPO}/runs/{ids[0]}"
    status, _, headers = await get(http, url)
    etag, left = headers["ETag"], int(headers["x-ratelimit-remaining"])
    status, body, headers = await get(http, url, headers={"If-None-Match": etag})
    assert status == 304 and not body
    assert int(headers["x-ratelimit-remaining"]) == left


async def test_cancel_force_cancel_and_409(
    sim: GitHubSimulator, http: aiohttp.ClientSession
) -> None:
    slow = [StepScript("Deploy", 1000, output="deploying")]
    always = JobScript("notify", steps=[StepScript("Report", 1000)], always=True)
    sim.script(RunScript(jobs=[JobScript("deploy", steps=slow), always], queue_s=0))
    run_id = (await (await dispatch(http, sim, SEED)).json())["workflow_run_id"]
    await sim.wait_run(run_id, "in_progress")
    async with http.post(f"{sim.base_url}{REPO}/runs/{run_id}/cancel") as resp:
        assert resp.status == 202
        REST("/components/schemas/empty-object", await resp.json())
    # the if: always() job keeps the run going through a normal cancel
    await sim.wait_run(run_id, "in_progress")
    status, jobs, _ = await get(http, f"{sim.base_url}{REPO}/runs/{run_id}/jobs")
    states = {j["name"]: (j["status"], j["conclusion"]) for j in jobs["jobs"]}
    while states["notify"][0] != "in_progress":
        await sim.wait_run(run_id, "in_progress")
        status, jobs, _ = await get(http, f"{sim.base_url}{REPO}/runs/{run_id}/jobs")
        assert status == 200
        states = {j["name"]: (j["status"], j["conclusion"]) for j in jobs["jobs"]}
    assert states["deploy"] == ("completed", "cancelled")
    async with http.post(f"{sim.base_url}{REPO}/runs/{run_id}/force-cancel") as resp:
        assert resp.status == 202
    run = await sim.wait_run(run_id)
    assert run.conclusion == "cancelled"
    for verb in ("cancel", "force-cancel"):
        async with http.post(f"{sim.base_url}{REPO}/runs/{run_id}/{verb}") as resp:
            assert resp.status == 409
            err = await resp.json()
            # both operations answer 409 with #/components/responses/conflict
            REST("/components/responses/conflict/content/application~1json/schema", err)
            assert "completed" in err["message"]


async def test_rate_limits_and_faults(sim: GitHubSimulator, http: aiohttp.ClientSession) -> None:
    sim.fail_next(429, retry_after=3)
    status, body, headers = await get(http, f"{sim.base_url}{REPO}/runs")
    assert status == 429 and headers["retry-after"] == "3" and "secondary" in body["message"]
    sim.set_rate_limit(remaining=0, reset_in_s=30)
    status, body, headers = await get(http, f"{sim.base_url}{REPO}/runs")
    assert status == 403 and headers["x-ratelimit-remaining"] == "0"
    assert "rate limit" in body["message"]
    sim.set_rate_limit(remaining=10)
    sim.fail_next(502, match="/runs")
    status, body, _ = await get(http, f"{sim.base_url}{REPO}/runs")
    assert status == 502
    sim.drop_connection_next(match="/dispatches")
    with pytest.raises(aiohttp.ServerDisconnectedError):
        await dispatch(http, sim, SEED)
    assert len(sim.runs) == 1  # the work was done, only the answer was lost


# --- webhooks -------------------------------------------------------------------------------


async def test_webhooks_are_signed_shaped_and_ordered(
    sim: GitHubSimulator, http: aiohttp.ClientSession, receiver: tuple[Receiver, TestServer]
) -> None:
    rec, _ = receiver
    sim.script(
        RunScript(
            jobs=[
                JobScript(
                    "build",
                    steps=[
                        StepScript("Checkout", 1, output="ok"),
                        StepScript("Test", 2, conclusion="failure", output="1 test failed"),
                        StepScript("Upload", 1),
                    ],
                )
            ]
        )
    )
    run_id = (await (await dispatch(http, sim, SEED)).json())["workflow_run_id"]
    await sim.wait_run(run_id)
    await sim.ping()
    await sim.deliveries_idle()
    seen = []
    for headers, body in rec.got:
        event = headers["X-GitHub-Event"]
        assert headers["Content-Type"] == "application/json"
        assert headers["User-Agent"].startswith("GitHub-Hookshot/")
        assert headers["X-GitHub-Hook-ID"] == str(sim.hook_id)
        assert len(headers["X-GitHub-Delivery"]) == 36
        assert gh.verify_signature(SECRET, body, headers["X-Hub-Signature-256"])
        payload = json.loads(body)
        validate_delivery(event, payload)
        seen.append((event, payload.get("action")))
    assert seen == [
        ("workflow_run", "requested"),
        ("workflow_job", "queued"),
        ("workflow_run", "in_progress"),
        ("workflow_job", "in_progress"),
        ("workflow_job", "completed"),
        ("workflow_run", "completed"),
        ("ping", None),
    ]
    completed = json.loads(rec.got[5][1])["workflow_run"]
    assert completed["conclusion"] == "failure"
    job = json.loads(rec.got[4][1])["workflow_job"]
    assert [s["conclusion"] for s in job["steps"]] == ["success", "failure", "skipped"]


async def test_a_form_hook_posts_the_json_as_a_payload_field(
    receiver: tuple[Receiver, TestServer], http: aiohttp.ClientSession
) -> None:
    """``content_type: form``: ``application/x-www-form-urlencoded``, one field ``payload``
    (github/docs ``data/reusables/webhooks/content_type.md``), signed as posted."""
    rec, server = receiver
    sim = GitHubSimulator(
        webhook_url=str(server.make_url("/hook")),
        webhook_secret=SECRET,
        token=TOKEN,
        time_scale=0.005,
        webhook_content_type="form",
    )
    await sim.start()
    try:
        await sim.ping()
        run_id = (await (await dispatch(http, sim, SEED)).json())["workflow_run_id"]
        await sim.wait_run(run_id)
        await sim.deliveries_idle()
    finally:
        await sim.close()
    assert len(rec.got) == 7
    for (headers, body), sent in zip(rec.got, sim.deliveries, strict=True):
        assert headers["Content-Type"] == "application/x-www-form-urlencoded"
        assert gh.verify_signature(SECRET, body, headers["X-Hub-Signature-256"])
        fields = urllib.parse.parse_qs(body.decode(), strict_parsing=True)
        assert list(fields) == ["payload"]
        payload = json.loads(fields["payload"][0])
        assert payload == sent.payload
        validate_delivery(headers["X-GitHub-Event"], payload)
    assert (
        json.loads(urllib.parse.parse_qs(rec.got[0][1].decode())["payload"][0])["hook"]["config"][
            "content_type"
        ]
        == "form"
    )
    with pytest.raises(ValueError):
        GitHubSimulator(webhook_content_type="xml")


def example(name: str) -> Any:
    return json.loads((SAMPLES / "webhooks" / "examples" / name).read_text())


async def test_waiting_for_an_environment_pending_and_action_required_are_scripted(
    sim: GitHubSimulator, http: aiohttp.ClientSession, receiver: tuple[Receiver, TestServer]
) -> None:
    """The states GitHub produces besides queued/in_progress/completed, shaped as the
    contract examples (workflow_job/queued.with-deployment, waiting;
    workflow_run/requested.with-conclusion) and valid against both schema sets."""
    deploy = JobScript("deploy", [StepScript("Deploy", 1)], environment="production")
    sim.script(
        RunScript(jobs=[deploy], queue_s=0),
        RunScript(action_required=True),
        RunScript(pending_s=100),
    )
    waiting_run = (await (await dispatch(http, sim, SEED)).json())["workflow_run_id"]
    needs_approval = (await (await dispatch(http, sim, SEED)).json())["workflow_run_id"]
    pending = (await (await dispatch(http, sim, SEED)).json())["workflow_run_id"]
    while sim.runs[waiting_run].status != "waiting":
        await asyncio.sleep(0.005)
    _, run, _ = await get(http, f"{sim.base_url}{REPO}/runs/{waiting_run}")
    REST("/components/schemas/workflow-run", run)
    assert run["status"] == "waiting"
    _, jobs, _ = await get(http, f"{sim.base_url}{REPO}/runs/{waiting_run}/jobs")
    REST("/components/schemas/job", jobs["jobs"][0])
    assert jobs["jobs"][0]["status"] == "waiting"
    _, run, _ = await get(http, f"{sim.base_url}{REPO}/runs/{pending}")
    assert run["status"] == "pending"
    REST("/components/schemas/workflow-run", run)
    sim.approve(waiting_run)
    for run_id in (waiting_run, needs_approval, pending):
        await sim.wait_run(run_id)
    await sim.deliveries_idle()

    def of(run_id: int) -> list[Any]:
        return [d for d in sim.deliveries if d.run_id == run_id]

    hooks = of(waiting_run)
    assert [(d.event, d.action) for d in hooks] == [
        ("workflow_run", "requested"),
        ("workflow_job", "queued"),
        ("workflow_job", "waiting"),
        ("workflow_run", "in_progress"),
        ("workflow_job", "in_progress"),
        ("workflow_job", "completed"),
        ("workflow_run", "completed"),
    ]
    queued, waiting = hooks[1].payload, hooks[2].payload
    shape = example("workflow_job/queued.with-deployment.payload.json")
    assert queued["workflow_job"]["status"] == waiting["workflow_job"]["status"] == "waiting"
    assert set(queued["deployment"]) == set(shape["deployment"])
    assert queued["deployment"]["environment"] == "production"
    assert waiting["deployment"]["id"] == queued["deployment"]["id"]
    assert "deployment" not in hooks[4].payload
    for d in hooks:
        validate_delivery(d.event, d.payload)
    assert sim.runs[waiting_run].conclusion == "success"

    (requested,) = of(needs_approval)
    shape = example("workflow_run/requested.with-conclusion.payload.json")["workflow_run"]
    got = requested.payload["workflow_run"]
    assert (got["status"], got["conclusion"]) == (shape["status"], shape["conclusion"])
    validate_delivery("workflow_run", requested.payload)
    _, jobs, _ = await get(http, f"{sim.base_url}{REPO}/runs/{needs_approval}/jobs")
    assert jobs["total_count"] == 0

    first = of(pending)[0]
    assert (first.action, first.payload["workflow_run"]["status"]) == ("requested", "pending")
    # octokit's status enum lacks pending; GitHub's own schema has it
    validate_delivery("workflow_run", first.payload, octokit=False)
    assert sim.runs[pending].conclusion == "success"


async def test_startup_failure_validates_against_githubs_schema(
    sim: GitHubSimulator, http: aiohttp.ClientSession, receiver: tuple[Receiver, TestServer]
) -> None:
    sim.script(RunScript(jobs=[], conclusion="startup_failure", queue_s=0))
    run_id = (await (await dispatch(http, sim, SEED)).json())["workflow_run_id"]
    await sim.wait_run(run_id)
    await sim.deliveries_idle()
    last = sim.deliveries[-1]
    assert last.payload["workflow_run"]["conclusion"] == "startup_failure"
    # octokit's enum lacks startup_failure; GitHub's own schema has it
    validate_delivery("workflow_run", last.payload, octokit=False)


async def test_drop_delay_hold_release_and_redeliver(
    sim: GitHubSimulator, http: aiohttp.ClientSession, receiver: tuple[Receiver, TestServer]
) -> None:
    rec, _ = receiver
    sim.drop(event="workflow_job", count=100)
    sim.delay(50, event="workflow_run", action="in_progress")
    sim.script(RunScript(queue_s=0))
    run_id = (await (await dispatch(http, sim, SEED)).json())["workflow_run_id"]
    await sim.wait_run(run_id)
    await sim.deliveries_idle()
    got = [(h["X-GitHub-Event"], json.loads(b)["action"]) for h, b in rec.got]
    # job deliveries were dropped; in_progress arrived after completed
    assert got == [
        ("workflow_run", "requested"),
        ("workflow_run", "completed"),
        ("workflow_run", "in_progress"),
    ]
    assert all(d.dropped for d in sim.deliveries if d.event == "workflow_job")
    first = sim.deliveries[0]
    sim.redeliver(first.guid)
    await sim.deliveries_idle()
    assert rec.got[-1][0]["X-GitHub-Delivery"] == first.guid and rec.got[-1][1] == first.body
    assert first.answers == [200, 200]
    rec.got.clear()
    sim.hold()
    await sim.ping()
    await sim.ping()
    assert rec.got == [] and len(sim.hooks.held) == 2
    guids = [d.guid for d in sim.hooks.held]
    sim.release("reverse")
    await sim.deliveries_idle()
    assert [h["X-GitHub-Delivery"] for h, _ in rec.got] == guids[::-1]


async def test_run_creation_is_asynchronous_for_204_and_run_name_templates(
    sim: GitHubSimulator, http: aiohttp.ClientSession
) -> None:
    sim.add_workflow(
        "octo-org",
        "octo-repo",
        "corr.yml",
        inputs=["env", "egw_id"],
        run_name="Deploy ${{ inputs.env }} [${{ inputs.egw_id }}]",
    )
    resp = await dispatch(
        http, sim, {"ref": "main", "inputs": {"env": "prod", "egw_id": "egw-1"}}, wf="corr.yml"
    )
    assert resp.status == 204
    (run,) = sim.runs.values()
    await sim.wait_run(run.id, "completed")
    status, listed, _ = await get(http, f"{sim.base_url}{REPO}/workflows/corr.yml/runs")
    assert status == 200
    assert listed["workflow_runs"][0]["display_title"] == "Deploy prod [egw-1]"


async def test_rerun_is_a_new_attempt(sim: GitHubSimulator, http: aiohttp.ClientSession) -> None:
    sim.script(RunScript(queue_s=0), RunScript(queue_s=0))
    run_id = (await (await dispatch(http, sim, SEED)).json())["workflow_run_id"]
    await sim.wait_run(run_id)
    await sim.rerun(run_id)
    await sim.wait_run(run_id)
    status, run, _ = await get(http, f"{sim.base_url}{REPO}/runs/{run_id}")
    assert run["run_attempt"] == 2 and run["previous_attempt_url"].endswith("/attempts/1")
    status, latest, _ = await get(http, f"{sim.base_url}{REPO}/runs/{run_id}/jobs")
    status, every, _ = await get(http, f"{sim.base_url}{REPO}/runs/{run_id}/jobs?filter=all")
    assert status == 200
    assert latest["total_count"] == 1 and every["total_count"] == 2
    assert {j["run_attempt"] for j in every["jobs"]} == {1, 2}
