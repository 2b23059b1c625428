"""The Cloud Run / Cloud Logging simulator driven by Google's own Python clients, not by egw.

google-cloud-run (``run_v2``, REST transport) and google-cloud-logging (its HTTP/JSON client,
``_use_grpc=False``; the generated Logging client has no REST transport) talk to the simulator
with a static bearer token: run a job with overrides, follow the execution to its end, list
executions page by page, cancel, a not-found, a permission refused, and read the logs with a
filter, page by page. Whatever these clients send, the simulator must answer as Google would;
where a client rejects an answer, the simulator is wrong.

The clients are synchronous (requests), so each call runs in a worker thread while the simulator
serves on the test's event loop.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from typing import Any, TypeVar

import pytest

from egw.testing.cloudrun import CloudRunSimulator, JobScript

run_v2 = pytest.importorskip("google.cloud.run_v2")
gcl = pytest.importorskip("google.cloud.logging")
gexc = pytest.importorskip("google.api_core.exceptions")
ClientOptions = pytest.importorskip("google.api_core.client_options").ClientOptions
StaticCredentials = pytest.importorskip("google.oauth2.credentials").Credentials

PROJECT, REGION = "my-project", "asia-east1"
JOB = f"projects/{PROJECT}/locations/{REGION}/jobs/my-job"
T = TypeVar("T")


@pytest.fixture
async def sim() -> AsyncIterator[CloudRunSimulator]:
    s = CloudRunSimulator(time_scale=0.01, seed=11)
    await s.start()
    s.add_job(PROJECT, REGION, "my-job", script=JobScript(duration_s=20, start_delay_s=2))
    s.add_job(PROJECT, REGION, "fails", script=JobScript(exit_code=3, duration_s=5))
    s.add_job(
        PROJECT,
        REGION,
        "talks",
        script=JobScript(stdout=[f"line {i}" for i in range(7)], stderr=["oops"], duration_s=5),
    )
    yield s
    await s.close()


def clients(sim: CloudRunSimulator, token: str = "sim-token") -> tuple[Any, Any]:
    creds = StaticCredentials(token=token)
    options = ClientOptions(api_endpoint=sim.url)
    jobs = run_v2.JobsClient(credentials=creds, transport="rest", client_options=options)
    executions = run_v2.ExecutionsClient(
        credentials=creds, transport="rest", client_options=options
    )
    return jobs, executions


async def off_loop(fn: Callable[[], T]) -> T:
    return await asyncio.to_thread(fn)


def run_request(job: str = JOB, task_id: str = "t_1") -> Any:
    env = [run_v2.EnvVar(name="EGW_TASK_ID", value=task_id)]
    override = run_v2.RunJobRequest.Overrides.ContainerOverride(args=["--day", "1"], env=env)
    return run_v2.RunJobRequest(
        name=job, overrides=run_v2.RunJobRequest.Overrides(container_overrides=[override])
    )


def wait_done(executions: Any, name: str, timeout_s: float = 10.0) -> Any:
    deadline = time.monotonic() + timeout_s
    while True:
        ex = executions.get_execution(name=name)
        if ex.completion_time:
            return ex
        assert time.monotonic() < deadline, f"{name} did not finish"
        time.sleep(0.02)


def completed(ex: Any) -> Any:
    return next(c for c in ex.conditions if c.type_ == "Completed")


async def test_run_with_overrides_and_follow_the_execution(sim: CloudRunSimulator) -> None:
    jobs, executions = clients(sim)
    op = await off_loop(lambda: jobs.run_job(request=run_request()))
    name = op.metadata.name  # the Execution in the operation's metadata (job.proto RunJob)
    assert name.startswith(f"{JOB}/executions/my-job-")
    env = {e.name: e.value for e in op.metadata.template.containers[0].env}
    assert env["EGW_TASK_ID"] == "t_1"
    ex = await off_loop(lambda: wait_done(executions, name))
    assert completed(ex).state == run_v2.Condition.State.CONDITION_SUCCEEDED
    assert ex.succeeded_count == 1 and ex.task_count == 1
    # the operation, polled by the client until done, ends with `response`: the Execution
    result = await off_loop(lambda: op.result(timeout=10))
    assert result.name == name and result.succeeded_count == 1


async def test_a_failed_execution_fails_its_operation(sim: CloudRunSimulator) -> None:
    jobs, executions = clients(sim)
    op = await off_loop(lambda: jobs.run_job(request=run_request(JOB[:-6] + "fails")))
    with pytest.raises(gexc.GoogleAPICallError) as info:  # the operation's `error`
        await off_loop(lambda: op.result(timeout=10))
    assert "exit code 3" in str(info.value)
    ex = await off_loop(lambda: executions.get_execution(name=op.metadata.name))
    reason = run_v2.Condition.ExecutionReason.NON_ZERO_EXIT_CODE
    assert completed(ex).execution_reason == reason


async def test_list_executions_page_by_page(sim: CloudRunSimulator) -> None:
    jobs, executions = clients(sim)
    names = set()
    for i in range(5):
        op = await off_loop(lambda i=i: jobs.run_job(request=run_request(task_id=f"t_{i}")))
        names.add(op.metadata.name)

    def listing() -> tuple[set[str], int]:
        request = run_v2.ListExecutionsRequest(parent=JOB, page_size=2)
        pager = executions.list_executions(request=request)
        pages = list(pager.pages)
        return {e.name for page in pages for e in page.executions}, len(pages)

    seen, pages = await off_loop(listing)
    assert seen == names and pages == 3
    assert sim.count("list_executions") == 3


async def test_listed_executions_are_whole_resources_like_a_get(sim: CloudRunSimulator) -> None:
    """egw reads states from the list (ListExecutionsResponse holds full Execution resources:
    googleapis google/cloud/run/v2/execution.proto): the client parses each listed execution
    into the same Execution a get answers, conditions, counts and times included."""
    jobs, executions = clients(sim)
    done = await off_loop(lambda: jobs.run_job(request=run_request(JOB[:-6] + "talks")))
    running = await off_loop(lambda: jobs.run_job(request=run_request(task_id="t_2")))
    finished = await off_loop(lambda: wait_done(executions, done.metadata.name))
    frozen = time.time()
    sim.clock = lambda: frozen  # nothing moves between the list and the gets

    def listing(job: str) -> list[Any]:
        request = run_v2.ListExecutionsRequest(parent=job, page_size=1)
        return list(executions.list_executions(request=request))

    (listed_done,) = await off_loop(lambda: listing(JOB[:-6] + "talks"))
    assert listed_done == await off_loop(lambda: executions.get_execution(name=finished.name))
    assert completed(listed_done).state == run_v2.Condition.State.CONDITION_SUCCEEDED
    assert listed_done.succeeded_count == 1 and listed_done.completion_time
    (listed_running,) = await off_loop(lambda: listing(JOB))
    got = await off_loop(lambda: executions.get_execution(name=running.metadata.name))
    assert listed_running == got and not listed_running.completion_time


async def test_cancel_a_running_execution(sim: CloudRunSimulator) -> None:
    jobs, executions = clients(sim)
    op = await off_loop(lambda: jobs.run_job(request=run_request()))
    name = op.metadata.name
    cancel = await off_loop(lambda: executions.cancel_execution(name=name))
    assert cancel.metadata.name == name
    # a cancelled execution's operation ends with `response` (not `error`)
    ex = await off_loop(lambda: cancel.result(timeout=10))
    reason = run_v2.Condition.ExecutionReason.CANCELLED
    assert completed(ex).execution_reason == reason and ex.cancelled_count == 1


async def test_not_found_and_permission_denied(sim: CloudRunSimulator) -> None:
    jobs, executions = clients(sim)
    with pytest.raises(gexc.NotFound):
        await off_loop(lambda: executions.get_execution(name=f"{JOB}/executions/my-job-zzzzz"))
    with pytest.raises(gexc.NotFound):
        await off_loop(lambda: jobs.run_job(request=run_request(JOB[:-6] + "nope")))
    sim.grant("invoker-token", "roles/run.invoker")
    invoker_jobs, _ = clients(sim, "invoker-token")
    with pytest.raises(gexc.Forbidden) as info:  # 403: overrides need runWithOverrides
        await off_loop(lambda: invoker_jobs.run_job(request=run_request()))
    assert "run.jobs.runWithOverrides" in str(info.value)
    assert info.value.reason == "IAM_PERMISSION_DENIED"  # read from the ErrorInfo
    plain = await off_loop(lambda: invoker_jobs.run_job(request=run_v2.RunJobRequest(name=JOB)))
    assert plain.metadata.name.startswith(f"{JOB}/executions/")


async def test_logging_client_lists_entries_with_a_filter_page_by_page(
    sim: CloudRunSimulator,
) -> None:
    jobs, executions = clients(sim)
    op = await off_loop(lambda: jobs.run_job(request=run_request(JOB[:-6] + "talks")))
    name = op.metadata.name
    await off_loop(lambda: wait_done(executions, name))
    short = name.rsplit("/", 1)[-1]
    logging = gcl.Client(
        project=PROJECT,
        credentials=StaticCredentials(token="sim-token"),
        _use_grpc=False,
        client_options={"api_endpoint": sim.url},
    )
    flt = (
        'resource.type="cloud_run_job" AND resource.labels.job_name="talks"'
        f' AND labels."run.googleapis.com/execution_name"="{short}"'
    )

    def read(**kw: Any) -> list[Any]:
        # the client adds its own timestamp>="...+0000" (google/cloud/logging_v2/_helpers.py)
        return list(logging.list_entries(resource_names=[f"projects/{PROJECT}"], filter_=flt, **kw))

    before = sim.count("list_entries")
    entries = await off_loop(lambda: read(page_size=3))
    assert sim.count("list_entries") - before == 3  # 9 entries, 3 a page
    texts = [e.payload for e in entries]
    assert sorted(texts) == sorted(
        [*(f"line {i}" for i in range(7)), "oops", "Container called exit(0)."]
    )
    assert [t for t in texts if t.startswith("line")] == [f"line {i}" for i in range(7)]
    assert {e.labels["run.googleapis.com/execution_name"] for e in entries} == {short}
    assert all(e.timestamp is not None and e.insert_id for e in entries)
    newest_first = await off_loop(lambda: read(order_by=gcl.DESCENDING, page_size=4))
    stamps = [e.timestamp for e in newest_first]
    assert stamps == sorted(stamps, reverse=True) and len(stamps) == 9
    flt = f"{flt} AND severity>=ERROR"  # severity compares by rank
    assert [e.payload for e in await off_loop(read)] == ["oops"]
