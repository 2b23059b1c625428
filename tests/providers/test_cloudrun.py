"""CloudRunProvider end to end against the simulator over real HTTP, reporting into a MemorySink."""

from __future__ import annotations

import asyncio
import json
import re
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from egw.config import CloudRunConfig, RetryConfig
from egw.core.model import Observation, Task, TaskState
from egw.errors import Conflict, InvalidRequest, ProviderError, ProviderUnavailable
from egw.providers.base import Provider, WebhookProvider
from egw.providers.cloudrun import CloudRunProvider, ReadBudget
from egw.testing.cloudrun import CloudRunSimulator, JobScript
from egw.testing.sink import MemorySink

SEED = {"project": "my-project", "region": "asia-east1", "job": "my-job"}
FAST_RETRY = RetryConfig(attempts=5, initial_backoff_s=0.01, max_backoff_s=0.05, deadline_s=5)


class Env:
    def __init__(self, sim: CloudRunSimulator, session: aiohttp.ClientSession) -> None:
        self.sim = sim
        self.session = session
        self.sink = MemorySink()
        self.providers: list[CloudRunProvider] = []
        assert sim.url is not None
        self.cfg = CloudRunConfig(
            enabled=True,
            run_api_url=sim.url,
            logging_api_url=sim.url + "/",
            access_token="sim-token",
            poll_min_s=0.01,
            poll_max_s=0.05,
            logging_settle_s=0.05,
            logging_reads_per_minute=6000,
            request_timeout_s=2.0,
        )

    async def provider(self, retry: RetryConfig = FAST_RETRY, **cfg: Any) -> CloudRunProvider:
        p = CloudRunProvider(replace(self.cfg, **cfg), session=self.session, retry=retry)
        self.providers.append(p)
        await p.start(self.sink)
        return p

    async def submit(self, p: CloudRunProvider, task: Task) -> Task:
        """What the core does with a submit: record the Submission and its observation."""
        sub = await p.submit(task, idempotency_key=task.id)
        await self.sink.set_upstream(
            task.id, upstream_id=sub.upstream_id, upstream_url=sub.upstream_url, data=sub.upstream
        )
        assert sub.observation is not None
        await self.sink.observe(task.id, sub.observation, source="cloud_run")
        return self.sink.tasks[task.id]

    def task(self, p: CloudRunProvider, **task: Any) -> Task:
        return self.sink.add_task("cloud_run", p.validate({**SEED, **task}).to_json())

    def executions(self, job: str = "my-job") -> list[Any]:
        return self.sim.executions_of("my-project", "asia-east1", job)


@pytest.fixture
async def env() -> AsyncIterator[Env]:
    sim = CloudRunSimulator(time_scale=0.01, seed=3)
    await sim.start()
    async with aiohttp.ClientSession() as session:
        e = Env(sim, session)
        try:
            yield e
        finally:
            for p in e.providers:
                await p.close()
    await sim.close()


async def until(cond: Callable[[], bool], timeout_s: float = 10.0) -> None:
    async with asyncio.timeout(timeout_s):
        while not cond():
            await asyncio.sleep(0.005)


def lines(n: int, prefix: str = "line") -> list[str]:
    return [f"{prefix} {i}" for i in range(n)]


def stdout_of(env: Env, task: Task) -> str:
    return env.sink.output(task.id, "stdout").decode()


# --- the happy path ---------------------------------------------------------------------------


async def test_seed_example_runs_with_overrides_and_its_logs_are_tailed(env: Env) -> None:
    env.sim.add_job(
        "my-project",
        "asia-east1",
        "my-job",
        container="worker",
        script=JobScript(
            stdout=lines(30),
            duration_s=100,
            start_delay_s=10,
            ingest_delay_s=0.5,
            ingest_jitter_s=4,
        ),
    )  # entries show up late and out of order
    p = await env.provider()
    assert isinstance(p, Provider)
    task = env.task(
        p,
        args=["--day", "2026-11-27"],
        env={"MODE": "full"},
        container="worker",
        task_count=1,
        timeout_s=900,
    )
    submitted = await env.submit(p, task)
    assert submitted.upstream_id is not None and submitted.upstream_url is not None
    assert submitted.upstream_id.startswith(
        "projects/my-project/locations/asia-east1/jobs/my-job/executions/my-job-"
    )
    assert submitted.upstream_url.startswith("https://console.cloud.google.com/logs/")
    # tailed while it runs
    await until(lambda: "line 5\n" in stdout_of(env, task))
    assert env.sink.tasks[task.id].status is TaskState.RUNNING
    done = await env.sink.wait_for(task.id, logs=True)
    assert done.status is TaskState.SUCCEEDED and done.exit_code == 0
    assert env.sink.states(task.id) == ["queued", "running", "succeeded"]
    # no line lost, none doubled, order kept
    assert stdout_of(env, task) == "".join(f"line {i}\n" for i in range(30))
    assert env.sink.output(task.id, "stderr") == b"[cloud run] Container called exit(0).\n"
    # the overrides reached Cloud Run
    (ex,) = env.executions()
    assert ex.args == ("--day", "2026-11-27") and ex.timeout == "900s" and ex.task_count == 1
    assert ex.env["MODE"] == "full" and ex.env["EGW_TASK_ID"] == task.id
    health = p.health()
    assert health["logging_reads_last_minute"] == {"my-project": env.sim.count("list_entries")}
    assert health["executions_watched"] == 0 and health["credentials"] == "access_token"
    assert json.loads(env.sink.cursors[f"cloud_run:logs:{task.id}"])["timestamp"]


async def test_several_tasks_keep_their_index(env: Env) -> None:
    env.sim.add_job(
        "my-project",
        "asia-east1",
        "my-job",
        script=JobScript(stdout=lines(5), duration_s=5, system_messages=False),
    )
    p = await env.provider()
    task = env.task(p, task_count=3)
    await env.submit(p, task)
    await env.sink.wait_for(task.id, logs=True)
    out = stdout_of(env, task).splitlines()
    assert len(out) == 15
    for index in range(3):
        assert [x for x in out if x.startswith(f"[task {index}] ")] == [
            f"[task {index}] line {i}" for i in range(5)
        ]
    assert env.sink.tasks[task.id].reason == "3/3 tasks succeeded"


async def test_failing_execution_has_its_reason_and_exit_code(env: Env) -> None:
    env.sim.add_job(
        "my-project",
        "asia-east1",
        "my-job",
        script=JobScript(stdout=["starting"], stderr=["boom"], exit_code=3),
    )
    p = await env.provider()
    task = env.task(p)
    await env.submit(p, task)
    done = await env.sink.wait_for(task.id, logs=True)
    assert done.status is TaskState.FAILED and done.exit_code == 3
    assert done.reason is not None and done.reason.startswith("NON_ZERO_EXIT_CODE: Task my-job-")
    assert "exit code 3" in done.reason
    assert env.sink.output(task.id, "stderr").decode().splitlines() == [
        "boom",
        "[cloud run] Container called exit(3).",
    ]
    assert (await p.status(done)).state is TaskState.FAILED


async def test_cancel_a_running_execution(env: Env) -> None:
    env.sim.add_job(
        "my-project",
        "asia-east1",
        "my-job",
        script=JobScript(stdout=lines(100), duration_s=1000, start_delay_s=10, cancel_delay_s=10),
    )
    p = await env.provider()
    task = env.task(p)
    await env.submit(p, task)
    await env.sink.wait_for(task.id, state=TaskState.RUNNING)
    await until(lambda: "line 2\n" in stdout_of(env, task))
    # what egw's cancel command does: cancelling, then the provider is asked
    await env.sink.observe(task.id, Observation(state=TaskState.CANCELLING), source="gateway")
    assert await p.cancel(env.sink.tasks[task.id]) is None  # the poller confirms it
    done = await env.sink.wait_for(task.id, logs=True)
    assert done.status is TaskState.CANCELLED
    assert done.reason == "cancelled: The execution was cancelled."
    assert env.sink.states(task.id) == ["queued", "running", "cancelling", "cancelled"]
    out = stdout_of(env, task).splitlines()
    assert 3 <= len(out) < 100 and out == [f"line {i}" for i in range(len(out))]
    # cancelling again: upstream says it already ended, so egw says how
    again = await p.cancel(done)
    assert again is not None and again.state is TaskState.CANCELLED


async def test_cancel_before_any_execution(env: Env) -> None:
    env.sim.add_job("my-project", "asia-east1", "my-job")
    p = await env.provider()
    task = env.task(p)
    obs = await p.cancel(task)
    assert obs is not None and obs.state is TaskState.CANCELLED
    assert env.sim.requests == []


# --- failures and retries ---------------------------------------------------------------------


async def test_a_burst_of_429s_is_ridden_out(env: Env) -> None:
    env.sim.add_job("my-project", "asia-east1", "my-job", script=JobScript(stdout=lines(3)))
    env.sim.fail("run", 429, times=3)
    env.sim.fail("get_execution", 429, times=2)
    env.sim.fail("list_entries", 429, times=2)
    p = await env.provider()
    task = env.task(p)
    await env.submit(p, task)
    done = await env.sink.wait_for(task.id, logs=True)
    assert done.status is TaskState.SUCCEEDED
    assert stdout_of(env, task) == "line 0\nline 1\nline 2\n"
    assert len(env.executions()) == 1
    assert env.sim.count("list_executions") == 0  # a 429 is not ambiguous: nothing to look for
    assert p.health()["retries"] == 7
    assert "RESOURCE_EXHAUSTED" in (p.health()["last_error"] or "")


async def test_429s_beyond_the_retry_budget_fail_clearly(env: Env) -> None:
    env.sim.add_job("my-project", "asia-east1", "my-job")
    env.sim.fail("run", 429, times=10)
    p = await env.provider(retry=replace(FAST_RETRY, attempts=3))
    task = env.task(p)
    with pytest.raises(ProviderUnavailable) as info:
        await p.submit(task, idempotency_key=task.id)
    assert "Cloud Run jobs.run: RESOURCE_EXHAUSTED: Quota exceeded" in info.value.message
    assert info.value.upstream_status == 429 and env.sim.count("run") == 3
    assert env.executions() == []


async def test_google_errors_become_clear_provider_errors(env: Env) -> None:
    p = await env.provider()
    task = env.task(p, job="no-such-job")
    with pytest.raises(ProviderError) as info:
        await p.submit(task, idempotency_key=task.id)
    err = info.value
    assert type(err) is ProviderError and err.status == 502 and err.upstream_status == 404
    assert err.message == (
        "Cloud Run jobs.run: NOT_FOUND: Resource 'no-such-job' of kind 'JOB' in"
        " region 'asia-east1' in project 'my-project' does not exist."
    )
    assert err.details["google_status"] == "NOT_FOUND"
    assert env.sim.count("run") == 1
    bad = await env.provider(access_token="revoked")
    with pytest.raises(ProviderError) as info:
        await bad.submit(env.task(bad), idempotency_key="t_x")
    assert "UNAUTHENTICATED" in info.value.message and info.value.upstream_status == 401


@pytest.mark.parametrize(
    "field,value",
    [
        ("project", "../../other"),
        ("job", "my-job/../x"),
        ("job", "x%2F..%2Fy"),
        ("region", "asia-east1:run"),
    ],
)
async def test_path_injection_is_a_400_before_any_request(env: Env, field: str, value: str) -> None:
    p = await env.provider()
    with pytest.raises(InvalidRequest) as info:
        p.validate({**SEED, field: value})
    assert info.value.status == 400 and info.value.field == f"task.{field}"
    stored = env.sink.add_task("cloud_run", {**SEED, field: value})  # a spec that skipped validate
    with pytest.raises(InvalidRequest):
        await p.submit(stored, idempotency_key=stored.id)
    assert env.sim.requests == []


# --- idempotent submit --------------------------------------------------------------------------


async def test_a_second_submit_does_not_start_a_second_execution(env: Env) -> None:
    env.sim.add_job("my-project", "asia-east1", "my-job")
    p = await env.provider()
    task = env.task(p)
    first = await env.submit(p, task)
    again = await p.submit(env.sink.tasks[task.id], idempotency_key=task.id)
    assert again.upstream_id == first.upstream_id
    # after a restart, the task still pending, a new provider on the same store
    p2 = await env.provider()
    third = await p2.submit(env.sink.tasks[task.id], idempotency_key=task.id)
    assert third.upstream_id == first.upstream_id
    assert len(env.executions()) == 1 and env.sim.count("run") == 1


async def test_a_lost_answer_is_found_before_running_again(env: Env) -> None:
    env.sim.add_job("my-project", "asia-east1", "my-job", script=JobScript(stdout=["once"]))
    env.sim.delay("run", 0.5)  # the execution starts, the answer comes too late
    p = await env.provider(request_timeout_s=0.2)
    task = env.task(p)
    await env.submit(p, task)
    done = await env.sink.wait_for(task.id, logs=True)
    assert done.status is TaskState.SUCCEEDED and stdout_of(env, task) == "once\n"
    assert len(env.executions()) == 1
    assert env.sim.count("run") == 1 and env.sim.count("list_executions") == 1


async def test_a_500_after_the_start_does_not_start_twice(env: Env) -> None:
    env.sim.add_job("my-project", "asia-east1", "my-job")
    for i in range(3):  # other executions of the job, not ours
        env.sim.fail("run", 0, times=0)
        await env.submit(await env.provider(), env.task(await env.provider(), args=[f"o{i}"]))
    env.sim.fail("run", 500, apply=True)
    p = await env.provider()
    task = env.task(p)
    sub = await p.submit(task, idempotency_key=task.id)
    (mine,) = [e for e in env.executions() if e.env["EGW_TASK_ID"] == task.id]
    assert sub.upstream_id == mine.name and len(env.executions()) == 4


async def test_a_submit_after_a_restart_adopts_the_execution_of_a_lost_answer(env: Env) -> None:
    env.sim.add_job("my-project", "asia-east1", "my-job", script=JobScript(stdout=["x"]))
    env.sim.delay("run", 0.5)
    p1 = await env.provider(retry=replace(FAST_RETRY, attempts=1), request_timeout_s=0.2)
    task = env.task(p1)
    with pytest.raises(ProviderUnavailable):
        await p1.submit(task, idempotency_key=task.id)
    assert env.sink.tasks[task.id].upstream == {
        "run_attempted": True,
        "job": "projects/my-project/locations/asia-east1/jobs/my-job",
    }
    await p1.close()
    p2 = await env.provider()
    await env.submit(p2, env.sink.tasks[task.id])
    done = await env.sink.wait_for(task.id, logs=True)
    assert done.status is TaskState.SUCCEEDED and len(env.executions()) == 1
    assert env.sim.count("run") == 1


# --- restart, budget, credentials -----------------------------------------------------------


async def test_a_restart_resumes_polling_and_log_reading_without_duplicates(env: Env) -> None:
    env.sim.add_job(
        "my-project",
        "asia-east1",
        "my-job",
        script=JobScript(stdout=lines(40), duration_s=80, system_messages=False),
    )
    p1 = await env.provider()
    task = env.task(p1)
    await env.submit(p1, task)
    await until(lambda: "line 10\n" in stdout_of(env, task))
    await p1.close()
    p2 = await env.provider()  # start() picks up the active task
    done = await env.sink.wait_for(task.id, logs=True)
    assert done.status is TaskState.SUCCEEDED
    assert stdout_of(env, task) == "".join(f"line {i}\n" for i in range(40))
    assert env.sink.complete == {task.id} and p2.health()["log_readers"] == 0


async def test_executions_of_a_project_share_one_read_budget(env: Env) -> None:
    env.sim.add_job(
        "my-project", "asia-east1", "my-job", script=JobScript(stdout=lines(4), duration_s=30)
    )
    env.sim.logging_quota_per_minute = 120
    p = await env.provider(logging_reads_per_minute=120)
    tasks = [env.task(p) for _ in range(3)]
    for task in tasks:
        await env.submit(p, task)
    for task in tasks:
        await env.sink.wait_for(task.id, logs=True)
        assert stdout_of(env, task) == "line 0\nline 1\nline 2\nline 3\n"
    used = p.health()["logging_reads_last_minute"]["my-project"]
    assert used == env.sim.count("list_entries") <= 120
    assert p.health()["retries"] == 0  # the simulated quota was never hit


async def test_read_budget_waits_for_the_window() -> None:
    budget = ReadBudget(3, window_s=0.3)
    start = time.monotonic()
    for _ in range(3):
        await budget.acquire()
    assert time.monotonic() - start < 0.1 and budget.used() == 3
    await budget.acquire()
    assert time.monotonic() - start >= 0.25


def _service_account_key(tmp_path: Path, token_uri: str) -> tuple[Path, str]:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    private = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()
    public = (
        key.public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode()
    )
    path = tmp_path / "sa.json"
    path.write_text(
        json.dumps(
            {
                "type": "service_account",
                "project_id": "my-project",
                "private_key_id": "k1",
                "private_key": private,
                "client_email": "egw@my-project.iam.gserviceaccount.com",
                "client_id": "1234567890",
                "token_uri": token_uri,
            }
        )
    )
    return path, public


async def test_service_account_credentials_through_google_auth(env: Env, tmp_path: Path) -> None:
    path, public = _service_account_key(tmp_path, f"{env.sim.url}/token")
    env.sim.trusted_keys = {"k1": public}  # the simulator checks google-auth's JWT signature
    env.sim.tokens.clear()  # only tokens issued by /token are good
    env.sim.add_job("my-project", "asia-east1", "my-job", script=JobScript(stdout=["hi"]))
    p = await env.provider(access_token=None, credentials_file=str(path))
    task = env.task(p)
    await env.submit(p, task)
    done = await env.sink.wait_for(task.id, logs=True)
    assert done.status is TaskState.SUCCEEDED and stdout_of(env, task) == "hi\n"
    assert env.sim.count("token") == 1  # one token, reused until close to its expiry
    health = p.health()
    assert health["credentials"] == "credentials_file" and health["token_expiry"]
    # a revoked token: the 401 makes egw refresh once and go on
    env.sim.tokens.clear()
    assert (await p.status(done)).state is TaskState.SUCCEEDED
    assert env.sim.count("token") == 2, env.sim.requests


async def test_tokens_are_refreshed_before_they_expire(env: Env, tmp_path: Path) -> None:
    path, public = _service_account_key(tmp_path, f"{env.sim.url}/token")
    env.sim.trusted_keys = {"k1": public}
    env.sim.tokens.clear()
    env.sim.token_lifetime_s = 120  # inside google-auth's refresh margin: refreshed every time
    env.sim.add_job("my-project", "asia-east1", "my-job")
    p = await env.provider(access_token=None, credentials_file=str(path))
    task = env.task(p)
    await env.submit(p, task)
    await env.sink.wait_for(task.id, logs=True)
    calls = sum(1 for op, _ in env.sim.requests if op != "token")
    assert env.sim.count("token") == calls
    assert "401" not in (p.health()["last_error"] or "")


async def test_bad_credentials_file_is_a_clear_error(env: Env, tmp_path: Path) -> None:
    path = tmp_path / "broken.json"
    path.write_text("{}")
    p = await env.provider(
        access_token=None, credentials_file=str(path), retry=replace(FAST_RETRY, attempts=1)
    )
    with pytest.raises(ProviderUnavailable, match="cannot get Google credentials"):
        await p.submit(env.task(p), idempotency_key="t_1")


async def test_an_execution_deleted_upstream_fails_the_task(env: Env) -> None:
    env.sim.add_job(
        "my-project", "asia-east1", "my-job", script=JobScript(stdout=lines(100), duration_s=1000)
    )
    p = await env.provider()
    task = env.task(p)
    await env.submit(p, task)
    await env.sink.wait_for(task.id, state=TaskState.RUNNING)
    (ex,) = env.executions()
    del env.sim.executions[ex.name]  # deleted behind egw's back
    done = await env.sink.wait_for(task.id, logs=True)
    assert done.status is TaskState.FAILED
    assert done.reason is not None and done.reason.startswith("execution is gone: Cloud Run")


async def test_status_of_a_task_not_started_and_no_webhooks(env: Env) -> None:
    p = await env.provider()
    task = env.task(p)
    assert (await p.status(task)).state is TaskState.PENDING
    assert not isinstance(p, WebhookProvider)  # the web layer routes no webhooks here
    assert env.sim.requests == []


async def test_a_log_read_failing_between_pages_resumes_without_duplicates(env: Env) -> None:
    env.sim.add_job(
        "my-project",
        "asia-east1",
        "my-job",
        script=JobScript(stdout=lines(12), duration_s=0.1, start_delay_s=0, system_messages=False),
    )
    env.sim.fail("list_entries", 503, skip=1, times=2)  # page 2 fails, beyond the retries
    p = await env.provider(retry=replace(FAST_RETRY, attempts=2), logging_settle_s=0)
    p.log_page_size = 5
    task = env.task(p)
    await env.submit(p, task)
    done = await env.sink.wait_for(task.id, logs=True)
    assert done.status is TaskState.SUCCEEDED
    assert stdout_of(env, task) == "".join(f"line {i}\n" for i in range(12))
    # page 1 (lines 0-4), page 2 fails twice, then from the cursor: lines 4-8 (4 dropped), 9-11
    assert env.sim.count("list_entries") == 5


async def test_application_default_credentials(
    env: Env, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path, public = _service_account_key(tmp_path, f"{env.sim.url}/token")
    env.sim.trusted_keys = {"k1": public}
    env.sim.tokens.clear()
    monkeypatch.setenv("GOOGLE_APPLICATION_CREDENTIALS", str(path))  # how ADC finds a key
    env.sim.add_job("my-project", "asia-east1", "my-job")
    p = await env.provider(access_token=None)
    task = env.task(p)
    await env.submit(p, task)
    assert (await env.sink.wait_for(task.id, logs=True)).status is TaskState.SUCCEEDED
    assert p.health()["credentials"] == "application_default" and env.sim.count("token") == 1


async def test_cancel_of_a_task_whose_run_answer_was_lost(env: Env) -> None:
    env.sim.add_job(
        "my-project", "asia-east1", "my-job", script=JobScript(stdout=lines(100), duration_s=1000)
    )
    env.sim.delay("run", 0.5)
    p = await env.provider(retry=replace(FAST_RETRY, attempts=1), request_timeout_s=0.2)
    task = env.task(p)
    with pytest.raises(ProviderUnavailable):
        await p.submit(task, idempotency_key=task.id)
    obs = await p.cancel(env.sink.tasks[task.id])  # found by EGW_TASK_ID, cancelled
    # None: the poller will report the end; or the end itself, when the read after the cancel
    # already shows it (a cancel is read back whatever it answered)
    assert obs is None or obs.state is TaskState.CANCELLED
    (ex,) = env.executions()
    assert ex.cancelled_ns is not None
    assert env.sink.tasks[task.id].upstream_id == ex.name
    assert (await env.sink.wait_for(task.id, logs=True)).status is TaskState.CANCELLED


# --- issue 12, point 10: nothing built on invented behaviour ------------------------------------


@pytest.mark.parametrize("order", ["oldest_first", "shuffled"])
async def test_a_lost_answer_is_adopted_whatever_order_executions_are_listed_in(
    env: Env, order: str
) -> None:
    """No order of executions.list is documented (googleapis google/cloud/run/v2/execution.proto,
    ListExecutionsRequest): the search for a lost run reads every page and never stops at an
    execution older than the task."""
    env.sim.add_job("my-project", "asia-east1", "my-job", script=JobScript(stdout=["mine"]))
    others = await env.provider()
    for i in range(5):  # older executions of the same job, not ours, listed first
        await env.submit(others, env.task(others, args=[f"other {i}"]))
    for ex in env.executions():
        ex.created_ns -= 3600 * 10**9  # an hour before the task
    env.sim.list_order = order
    env.sim.delay("run", 0.5)  # our execution starts, the answer comes too late
    p = await env.provider(request_timeout_s=0.2)
    task = env.task(p)
    sub = await p.submit(task, idempotency_key=task.id)
    mine = [e for e in env.executions() if e.env.get("EGW_TASK_ID") == task.id]
    assert len(mine) == 1 and sub.upstream_id == mine[0].name  # adopted, not run a second time
    assert env.sim.count("run") == 6 and len(env.executions()) == 6


async def test_the_search_for_a_lost_run_reads_every_page(env: Env) -> None:
    env.sim.add_job("my-project", "asia-east1", "my-job")
    env.sim.list_order = "oldest_first"
    # 120 executions of other tasks (more than one page of 100, ours on the second), started by
    # a gateway that then stops: nothing polls them while the lost answer is looked for
    others_sink = MemorySink()
    others = CloudRunProvider(env.cfg, session=env.session, retry=FAST_RETRY)
    await others.start(others_sink)
    for i in range(120):
        task = others_sink.add_task(
            "cloud_run", others.validate({**SEED, "args": [f"o{i}"]}).to_json()
        )
        await others.submit(task, idempotency_key=task.id)
    await others.close()
    listed = env.sim.count("list_executions")  # the other gateway's polls of its executions
    env.sim.delay("run", 0.5)
    p = await env.provider(request_timeout_s=0.2)
    task = env.task(p)
    sub = await p.submit(task, idempotency_key=task.id)
    assert sub.upstream_id is not None and len(env.executions()) == 121
    assert env.sim.count("list_executions") == listed + 2


@pytest.mark.parametrize("answer", [None, 400, 409, 404])
async def test_cancelling_a_finished_execution_reads_it_whatever_cancel_answers(
    env: Env, answer: int | None
) -> None:
    """No source says what executions:cancel answers for a finished execution: egw reads the
    execution after any answer (an operation, or any error) and reports how it really ended."""
    env.sim.add_job("my-project", "asia-east1", "my-job", script=JobScript(exit_code=4))
    p = await env.provider()
    task = env.task(p)
    await env.submit(p, task)
    done = await env.sink.wait_for(task.id, logs=True)
    assert done.status is TaskState.FAILED
    env.sim.cancel_finished_status = answer
    if answer == 404:  # an answer no one expects: still, the execution is read
        env.sim.cancel_finished_status = None
        env.sim.fail("cancel", 404)
    obs = await p.cancel(done)
    assert obs is not None and obs.state is TaskState.FAILED
    assert obs.reason is not None and obs.reason.startswith("NON_ZERO_EXIT_CODE")
    assert env.sim.count("cancel") == 1


async def test_a_refused_cancel_of_a_running_execution_is_still_an_error(env: Env) -> None:
    env.sim.add_job("my-project", "asia-east1", "my-job", script=JobScript(duration_s=1000))
    p = await env.provider()
    task = env.task(p)
    await env.submit(p, task)
    env.sim.fail("cancel", 409)
    with pytest.raises(Conflict):
        await p.cancel(env.sink.tasks[task.id])
    (ex,) = env.executions()
    assert ex.cancelled_ns is None and env.sim.count("get_execution") >= 1


async def test_a_run_operation_that_finished_with_an_error_is_a_final_error(env: Env) -> None:
    """A done Operation holds `error` or `response` (the `result` oneof, googleapis
    google/longrunning/operations.proto): an error with no execution is the answer, not a lost
    one to search for and run again."""
    env.sim.add_job("my-project", "asia-east1", "my-job")
    env.sim.run_operation_errors.append((9, "The job's container image is not available."))
    p = await env.provider()
    task = env.task(p)
    with pytest.raises(ProviderError) as info:
        await p.submit(task, idempotency_key=task.id)
    assert type(info.value) is ProviderError
    assert "FAILED_PRECONDITION: The job's container image is not available." in info.value.message
    assert env.sim.count("run") == 1 and env.sim.count("list_executions") == 0
    assert env.executions() == []


async def test_a_failed_execution_ends_its_operation_with_an_error(env: Env) -> None:
    env.sim.add_job("my-project", "asia-east1", "my-job", script=JobScript(exit_code=2))
    p = await env.provider()
    task = env.task(p)
    await env.submit(p, task)
    done = await env.sink.wait_for(task.id, logs=True)
    assert done.status is TaskState.FAILED and done.exit_code == 2
    op = env.sink.tasks[task.id].upstream["operation"]
    assert op in env.sim.operations


# --- issue 12, point 9: permissions -------------------------------------------------------------


async def test_an_invoker_only_identity_gets_a_clear_error_naming_the_permission(env: Env) -> None:
    """jobs:run with overrides needs run.jobs.runWithOverrides (run v2 REST reference,
    projects.locations.jobs/run); Cloud Run Invoker holds only run.jobs.run
    (https://cloud.google.com/run/docs/execute/jobs, "Required roles")."""
    env.sim.add_job("my-project", "asia-east1", "my-job")
    env.sim.grant("invoker-token", "roles/run.invoker")
    p = await env.provider(access_token="invoker-token")
    task = env.task(p)
    with pytest.raises(ProviderError) as info:
        await p.submit(task, idempotency_key=task.id)
    err = info.value
    assert type(err) is ProviderError and err.upstream_status == 403
    assert err.message.startswith(
        "Cloud Run jobs.run: PERMISSION_DENIED: Permission 'run.jobs.runWithOverrides' denied"
    )
    assert "Cloud Run Developer (roles/run.developer)" in err.message
    assert "Cloud Run Invoker only allows a plain run" in err.message
    assert err.details["permission"] == "run.jobs.runWithOverrides"
    assert env.executions() == [] and env.sim.count("run") == 1  # a 403 is not retried
    assert "run.jobs.runWithOverrides" in (p.health()["last_error"] or "")


async def test_each_call_names_the_permission_it_lacks(env: Env) -> None:
    env.sim.add_job("my-project", "asia-east1", "my-job", script=JobScript(duration_s=1000))
    p = await env.provider()
    task = await env.submit(p, env.task(p))
    env.sim.grant("viewer-token", "roles/run.viewer")
    viewer = await env.provider(access_token="viewer-token")
    assert (await viewer.status(task)).state in (TaskState.QUEUED, TaskState.RUNNING)
    with pytest.raises(ProviderError) as info:
        await viewer.cancel(task)
    assert "run.executions.cancel" in info.value.message
    assert "roles/run.developer" in info.value.message
    env.sim.grant("nobody", "roles/logging.viewer")
    blind = await env.provider(access_token="nobody")
    with pytest.raises(ProviderError) as info:
        await blind.status(task)
    assert "lacks the IAM permission run.executions.get" in info.value.message
    assert "Cloud Run Viewer (roles/run.viewer)" in info.value.message


# --- issue 12, point 11: timestamps and ties as Cloud Logging has them ---------------------------


async def test_logs_with_shared_and_short_timestamps_are_read_once_each(env: Env) -> None:
    """Many entries share a timestamp (coarse structured-logging timestamps) and timestamps drop
    trailing zeros (proto3 JSON: googleapis google/protobuf/timestamp.proto); insertId orders ties
    only within one logName (LogEntry.insertId). Read in small pages, every line arrives once."""
    env.sim.add_job(
        "my-project",
        "asia-east1",
        "my-job",
        script=JobScript(
            stdout=lines(40, "out"),
            stderr=lines(40, "err"),
            duration_s=120,
            start_delay_s=1,
            timestamp_resolution_s=0.5,
            # late, and out of order, but within the provider's settle time (0.05 s real here,
            # 5 simulated s): what Logging ingests later than logging_settle_s is not promised
            ingest_delay_s=1,
            ingest_jitter_s=3,
        ),
    )
    p = await env.provider()
    p.log_page_size = 3
    task = env.task(p)
    await env.submit(p, task)
    done = await env.sink.wait_for(task.id, logs=True)
    assert done.status is TaskState.SUCCEEDED
    out = stdout_of(env, task).splitlines()
    err = env.sink.output(task.id, "stderr").decode().splitlines()
    assert sorted(out) == sorted(lines(40, "out")) and len(set(out)) == 40
    assert sorted(err) == sorted([*lines(40, "err"), "[cloud run] Container called exit(0)."])
    stamps = [e.body["timestamp"] for e in env.executions()[0].entries]
    assert all(re.fullmatch(r"[0-9T:-]+:\d\d(\.500)?Z", t) for t in stamps)
