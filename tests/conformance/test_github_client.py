"""The GitHub simulator driven by githubkit, the SDK generated from GitHub's own OpenAPI
description (github/rest-api-description), not by egw's code.

Whatever githubkit sends, the simulator must answer as GitHub would: every answer is
parsed into githubkit's models (pydantic, generated from the description), so a shape
the simulator gets wrong fails here. Covers: dispatch (with and without run details),
reading a run until it completes, listing runs page by page (``Link``), jobs and a
job's log (the 302 to the blob, and the blob's 404 while the job runs), cancel, and
the errors (404 ``Not Found``, 409 on a completed run).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest
from githubkit import GitHub
from githubkit.exception import RequestFailed

from egw.testing.github import GitHubSimulator, JobScript, RunScript, StepScript

TOKEN = "ghp_conformance"
OWNER, REPO = "octo-org", "octo-repo"


@pytest.fixture
async def sim() -> AsyncIterator[GitHubSimulator]:
    simulator = GitHubSimulator(token=TOKEN, time_scale=0.005, run_creation_delay_s=0.5)
    await simulator.start()
    yield simulator
    await simulator.close()


@pytest.fixture
async def github(sim: GitHubSimulator) -> AsyncIterator[GitHub[Any]]:
    # no HTTP cache and no automatic retry: every answer read is the simulator's own
    client: GitHub[Any] = GitHub(TOKEN, base_url=sim.base_url, http_cache=False, auto_retry=False)
    async with client:
        yield client


async def dispatch(github: GitHub[Any], **inputs: str) -> int:
    """githubkit's default API version is 2026-03-10, where a dispatch always answers 200
    with the run (breaking-changes-2026-03-10.json)."""
    resp = await github.rest.actions.async_create_workflow_dispatch(
        OWNER, REPO, "deploy.yml", ref="main", inputs=inputs
    )
    assert resp.status_code == 200
    assert resp.headers["x-ratelimit-resource"] == "core"
    return resp.parsed_data.workflow_run_id


async def until(github: GitHub[Any], run_id: int, status: str = "completed") -> Any:
    async with asyncio.timeout(10):
        while True:
            run = (
                await github.rest.actions.async_get_workflow_run(OWNER, REPO, run_id)
            ).parsed_data
            if run.status == status:
                return run
            await asyncio.sleep(0.01)


async def test_dispatch_read_until_completed_jobs_and_logs(
    sim: GitHubSimulator, github: GitHub[Any]
) -> None:
    run_id = await dispatch(github, env="prod")
    run = await until(github, run_id)
    assert (run.id, run.event, run.conclusion, run.head_branch) == (
        run_id,
        "workflow_dispatch",
        "success",
        "main",
    )
    jobs = (
        await github.rest.actions.async_list_jobs_for_workflow_run(OWNER, REPO, run_id)
    ).parsed_data
    assert jobs.total_count == 1
    (job,) = jobs.jobs
    assert (job.run_id, job.status, job.conclusion) == (run_id, "completed", "success")
    assert [s.conclusion for s in job.steps or []] == ["success"] * 3
    single = (
        await github.rest.actions.async_get_job_for_workflow_run(OWNER, REPO, job.id)
    ).parsed_data
    assert single.id == job.id
    # githubkit follows the 302 to the blob, as GitHub's clients do
    log = await github.rest.actions.async_download_job_logs_for_workflow_run(OWNER, REPO, job.id)
    assert log.status_code == 200 and "env=prod" in log.text


async def test_dispatch_under_2022_11_28_with_and_without_run_details(
    sim: GitHubSimulator, github: GitHub[Any]
) -> None:
    actions = github.rest("2022-11-28").actions
    resp = await actions.async_create_workflow_dispatch(OWNER, REPO, "deploy.yml", ref="main")
    assert resp.status_code == 204 and resp.content == b""
    resp = await actions.async_create_workflow_dispatch(
        OWNER, REPO, "deploy.yml", ref="main", return_run_details=True
    )
    assert resp.status_code == 200  # githubkit's 2022-11-28 models know only the 204
    run_id = resp.json()["workflow_run_id"]
    run = (await actions.async_get_workflow_run(OWNER, REPO, run_id)).parsed_data
    assert run.id == run_id
    async with asyncio.timeout(5):  # the 204's run appears a while later
        while len([r for r in sim.runs.values() if r.visible]) < 2:
            await asyncio.sleep(0.01)


async def test_runs_are_listed_page_by_page(sim: GitHubSimulator, github: GitHub[Any]) -> None:
    ids = [await dispatch(github, n=str(n)) for n in range(5)]
    first = await github.rest.actions.async_list_workflow_runs_for_repo(OWNER, REPO, per_page=2)
    assert first.parsed_data.total_count == 5 and 'rel="next"' in first.headers["link"]
    seen = [
        run.id
        async for run in github.rest.paginate(
            github.rest.actions.async_list_workflow_runs_for_repo,
            map_func=lambda r: r.parsed_data.workflow_runs,
            owner=OWNER,
            repo=REPO,
            per_page=2,
        )
    ]
    assert seen == sorted(ids, reverse=True)  # newest first, each once
    by_workflow = await github.rest.actions.async_list_workflow_runs(
        OWNER, REPO, "deploy.yml", per_page=100
    )
    assert by_workflow.parsed_data.total_count == 5


async def test_a_running_jobs_log_is_not_found_and_cancel(
    sim: GitHubSimulator, github: GitHub[Any]
) -> None:
    long = JobScript("deploy", steps=[StepScript("Deploy", 10_000, output="deploying")])
    sim.script(RunScript(jobs=[long], queue_s=0))
    run_id = await dispatch(github)
    await until(github, run_id, "in_progress")
    (job,) = (
        await github.rest.actions.async_list_jobs_for_workflow_run(OWNER, REPO, run_id)
    ).parsed_data.jobs
    with pytest.raises(RequestFailed) as err:  # the blob: Azure's 404 BlobNotFound
        await github.rest.actions.async_download_job_logs_for_workflow_run(OWNER, REPO, job.id)
    assert err.value.response.status_code == 404
    assert "<Code>BlobNotFound</Code>" in err.value.response.text
    cancel = await github.rest.actions.async_cancel_workflow_run(OWNER, REPO, run_id)
    assert cancel.status_code == 202
    run = await until(github, run_id)
    assert run.conclusion == "cancelled"
    with pytest.raises(RequestFailed) as err:
        await github.rest.actions.async_cancel_workflow_run(OWNER, REPO, run_id)
    assert err.value.response.status_code == 409


async def test_not_found(github: GitHub[Any]) -> None:
    for call in (
        github.rest.actions.async_get_workflow_run(OWNER, REPO, 1),
        github.rest.actions.async_list_jobs_for_workflow_run(OWNER, REPO, 1),
        github.rest.actions.async_get_job_for_workflow_run(OWNER, REPO, 1),
        github.rest.actions.async_cancel_workflow_run(OWNER, REPO, 1),
    ):
        with pytest.raises(RequestFailed) as err:
            await call
        assert err.value.response.status_code == 404
        assert err.value.response.json()["message"] == "Not Found"
