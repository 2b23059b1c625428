"""GitHubActionsProvider end to end against the GitHub simulator over real HTTP, with
a MemorySink running the real state machine and webhooks POSTed to a receiver that
calls ``handle_webhook`` as egw's ``POST /v1/webhooks/github`` does."""

from __future__ import annotations

import asyncio
import json
import urllib.parse
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from egw.config import CircuitConfig, GitHubActionsConfig, RetryConfig
from egw.core.model import Observation, Task, TaskState
from egw.errors import Conflict, EgwError, InvalidRequest
from egw.providers.base import Provider, ProviderSink, WebhookProvider
from egw.providers.github_actions import GitHubActionsProvider
from egw.testing.github import GitHubSimulator, JobScript, RunScript, StepScript
from egw.testing.sink import MemorySink
from egw.web.hooks import render
from egw.wire import github as gh

SAMPLES = Path(__file__).resolve().parent.parent / "samples" / "github"
SECRET = "s3cret-for-tests"
TOKEN = "ghp_provider_test"
SEED = {"workflow_id": "deploy.yml", "ref": "main", "inputs": {"env": "prod"}}
RETRY = RetryConfig(attempts=3, initial_backoff_s=0.01, max_backoff_s=0.05, deadline_s=5.0)
S = TaskState


@dataclass
class Env:
    sim: GitHubSimulator
    provider: GitHubActionsProvider
    sink: MemorySink
    hook_url: str
    session: aiohttp.ClientSession

    async def submit(self, task: dict[str, Any] | None = None) -> Task:
        """Validate and submit as egw's task service does, recording what submit learned."""
        task_obj = self.sink.add_task(
            "github_actions", self.provider.validate(task or SEED).to_json()
        )
        sub = await self.provider.submit(task_obj, idempotency_key=task_obj.id)
        await self.sink.set_upstream(
            task_obj.id,
            upstream_id=sub.upstream_id,
            upstream_url=sub.upstream_url,
            data=sub.upstream,
        )
        if sub.upstream_id is not None:
            await self.sink.observe(
                task_obj.id, sub.observation or Observation(state=S.QUEUED), source="submit"
            )
        return self.sink.tasks[task_obj.id]

    async def post(
        self,
        event: str,
        body: bytes,
        *,
        signature: str | None = "sign",
        delivery: str = "11111111-2222-3333-4444-555555555555",
    ) -> tuple[int, Any]:
        headers = {
            "Content-Type": "application/json",
            "X-GitHub-Event": event,
            "X-GitHub-Delivery": delivery,
            "User-Agent": "GitHub-Hookshot/test",
        }
        if signature == "sign":
            headers["X-Hub-Signature-256"] = gh.sign(SECRET, body)
        elif signature is not None:
            headers["X-Hub-Signature-256"] = signature
        async with self.session.post(self.hook_url, data=body, headers=headers) as resp:
            return resp.status, await resp.json()

    def kinds(self, task_id: str, kind: str) -> list[dict[str, Any]]:
        return [e.data for e in self.sink.events if e.task_id == task_id and e.kind == kind]


MakeEnv = Callable[..., Awaitable[Env]]


@pytest.fixture
async def make_env(aiohttp_server: Any) -> AsyncIterator[MakeEnv]:
    made: list[Env] = []

    async def make(*, sim_kw: dict[str, Any] | None = None, **cfg_kw: Any) -> Env:
        holder: dict[str, Env] = {}

        async def hook(request: web.Request) -> web.Response:
            try:
                outcome = await holder["env"].provider.handle_webhook(
                    request.headers, await request.read()
                )
            except EgwError as exc:  # a refusal, as egw's edge renders it
                return web.json_response(exc.to_json(), status=exc.status)
            return render(outcome)

        app = web.Application()
        app.router.add_post("/v1/webhooks/github", hook)
        server = await aiohttp_server(app)
        hook_url = str(server.make_url("/v1/webhooks/github"))
        sim = GitHubSimulator(
            webhook_url=hook_url,
            webhook_secret=SECRET,
            token=TOKEN,
            time_scale=0.005,
            **{"run_creation_delay_s": 0.5, **(sim_kw or {})},
        )
        await sim.start()
        options: dict[str, Any] = {
            "enabled": True,
            "api_url": sim.base_url,
            "token": TOKEN,
            "webhook_secret": SECRET,
            "owner": "octo-org",
            "repo": "octo-repo",
            "poll_min_s": 30.0,
            "poll_max_s": 60.0,
            "request_timeout_s": 5.0,
            "correlation_timeout_s": 10.0,
        }
        options.update(cfg_kw)
        cfg = GitHubActionsConfig(**options)
        cfg.validate("providers.github_actions")
        session = aiohttp.ClientSession()
        provider = GitHubActionsProvider(cfg, session=session, retry=RETRY)
        sink = MemorySink()
        await provider.start(sink)
        env = Env(sim, provider, sink, hook_url, session)
        holder["env"] = env  # a test may replace env.provider: deliveries go to it
        made.append(env)
        return env

    yield make
    for env in reversed(made):
        await env.provider.close()
        await env.sim.close()
        await env.session.close()


def test_provider_satisfies_the_protocol() -> None:
    provider = GitHubActionsProvider(GitHubActionsConfig(), session=None, retry=RETRY)  # type: ignore[arg-type]
    assert isinstance(provider, Provider) and isinstance(provider, WebhookProvider)
    assert isinstance(MemorySink(), ProviderSink)
    assert (provider.name, provider.webhook_source) == ("github_actions", "github")
    with pytest.raises(InvalidRequest) as err:
        provider.validate(SEED)  # no default repository configured
    assert err.value.field == "task.owner"
    with pytest.raises(InvalidRequest):
        provider.validate({**SEED, "owner": "octo-org", "repo": "octo-repo", "workflow_id": "../x"})


# --- the seed example -----------------------------------------------------------------------


async def test_seed_runs_queued_running_succeeded_by_webhooks(make_env: MakeEnv) -> None:
    env = await make_env()
    task = await env.submit()
    assert task.upstream_id is not None and task.upstream_url is not None
    assert task.upstream_url.endswith(f"/actions/runs/{task.upstream_id}")  # recorded at once
    done = await env.sink.wait_for(task.id, state=S.SUCCEEDED, logs=True)
    assert env.sink.states(task.id) == ["queued", "running", "succeeded"]
    # the status came by webhooks: no poll ran (poll_min_s is 30 s here)
    assert not [r for r in env.sim.requests if r[0] == "GET" and r[1].endswith(task.upstream_id)]
    sources = {
        e.data["source"] for e in env.sink.events if e.kind == "observe" and e.data["applied"]
    }
    assert sources == {"submit", "github"}
    assert done.reason is None
    out = env.sink.output(task.id).decode()
    assert "[github] job run: in_progress" in out  # progress lines while it ran
    assert "[github] job run: completed (success)" in out
    assert "env=prod" in out and "##[group]Set up job" in out  # the fetched job log
    assert out.index("in_progress") < out.index("env=prod")
    jobs = env.kinds(task.id, "github.job")
    assert [j["status"] for j in jobs] == ["queued", "in_progress", "completed"]
    deliveries = env.kinds(task.id, "github.delivery")
    assert len(deliveries) == 6 and all("run" in d or "job" in d for d in deliveries)
    assert not any("payload" in d for d in deliveries)  # what egw read, not the payload
    dispatch = [r for r in env.sim.requests if r[1].endswith("/dispatches")]
    assert len(dispatch) == 1
    assert dispatch[0][2]["X-GitHub-Api-Version"] == "2022-11-28"
    assert dispatch[0][2]["Authorization"] == f"Bearer {TOKEN}"
    assert env.provider.health()["rate_limit"]["remaining"] > 0


async def test_failed_run_carries_its_conclusion(make_env: MakeEnv) -> None:
    env = await make_env()
    env.sim.script(
        RunScript(
            jobs=[
                JobScript(
                    "test",
                    steps=[
                        StepScript(
                            "Run tests", 2, conclusion="failure", output="FAILED test_deploy"
                        )
                    ],
                )
            ]
        )
    )
    task = await env.submit()
    done = await env.sink.wait_for(task.id, logs=True)
    assert (done.status, done.reason) == (S.FAILED, "failure")
    assert "FAILED test_deploy" in env.sink.output(task.id).decode()


@pytest.mark.parametrize(
    ("conclusion", "state"),
    [
        ("timed_out", S.FAILED),
        ("startup_failure", S.FAILED),
        ("neutral", S.SUCCEEDED),
    ],
)
async def test_other_conclusions(make_env: MakeEnv, conclusion: str, state: TaskState) -> None:
    env = await make_env()
    env.sim.script(RunScript(jobs=[], conclusion=conclusion, queue_s=0))
    task = await env.submit()
    done = await env.sink.wait_for(task.id, logs=True)
    assert (done.status, done.reason) == (state, conclusion)


async def test_api_version_2026_03_10_always_answers_200(make_env: MakeEnv) -> None:
    env = await make_env(api_version="2026-03-10")
    task = await env.submit()
    assert task.upstream_id is not None
    await env.sink.wait_for(task.id, state=S.SUCCEEDED, logs=True)
    (dispatch,) = [r for r in env.sim.requests if r[1].endswith("/dispatches")]
    assert dispatch[2]["X-GitHub-Api-Version"] == "2026-03-10"


# --- cancel ---------------------------------------------------------------------------------


def long_run(always: bool = False) -> RunScript:
    jobs = [JobScript("deploy", steps=[StepScript("Deploy", 10_000, output="deploying")])]
    if always:
        jobs.append(JobScript("notify", steps=[StepScript("Report", 10_000)], always=True))
    return RunScript(jobs=jobs, queue_s=0)


async def test_cancel(make_env: MakeEnv) -> None:
    env = await make_env()
    env.sim.script(long_run())
    task = await env.submit()
    task = await env.sink.wait_for(task.id, state=S.RUNNING)
    assert await env.provider.cancel(task) is None  # confirmed later by the webhook
    done = await env.sink.wait_for(task.id, logs=True)
    assert (done.status, done.reason) == (S.CANCELLED, "cancelled")
    assert "The operation was canceled" in env.sink.output(task.id).decode()
    assert any(r[1].endswith(f"/runs/{task.upstream_id}/cancel") for r in env.sim.requests)


async def test_force_cancel_stops_always_jobs(make_env: MakeEnv) -> None:
    env = await make_env()
    env.sim.script(long_run(always=True))
    task = await env.submit()
    task = await env.sink.wait_for(task.id, state=S.RUNNING)
    await env.provider.cancel(task)
    run_id = int(task.upstream_id or 0)
    # the if: always() job keeps the run going after a normal cancel
    await env.sim.wait_run(run_id, "in_progress")
    assert env.sink.tasks[task.id].status is S.RUNNING
    await env.provider.cancel(task, force=True)
    done = await env.sink.wait_for(task.id, logs=True)
    assert done.status is S.CANCELLED
    assert any(r[1].endswith(f"/runs/{run_id}/force-cancel") for r in env.sim.requests)


async def test_cancel_conflict_is_a_409_with_githubs_message(make_env: MakeEnv) -> None:
    env = await make_env()
    env.sim.script(
        RunScript(
            jobs=[], queue_s=10_000, cancel_conflict="Cannot cancel a workflow run that is queued."
        )
    )
    task = await env.submit()
    with pytest.raises(Conflict) as err:
        await env.provider.cancel(task)
    assert "Cannot cancel a workflow run that is queued." in err.value.message
    assert err.value.status == 409 and err.value.details["upstream_status"] == 409
    with pytest.raises(Conflict):
        await env.provider.cancel(task, force=True)
    # a finished run cannot be cancelled either
    env2 = await make_env()
    task2 = await env2.submit()
    task2 = await env2.sink.wait_for(task2.id, state=S.SUCCEEDED, logs=True)
    with pytest.raises(Conflict, match="completed"):
        await env2.provider.cancel(task2)


# --- webhooks -------------------------------------------------------------------------------


EXAMPLES = sorted((SAMPLES / "webhooks" / "examples").glob("*/*.json"))
EXPECTED = {
    "workflow_run/requested.payload.json": ("queued", "queued"),
    "workflow_run/requested.with-conclusion.payload.json": ("failed", "action_required"),
    "workflow_run/completed.payload.json": ("succeeded", None),
    "workflow_run/completed.with-pull-requests.payload.json": ("succeeded", None),
    "workflow_job/in_progress.payload.json": ("running", None),
    "workflow_job/in_progress.with-queued-steps.payload.json": ("running", None),
    "workflow_job/completed.failure.with-organization.payload.json": ("pending", None),
    "workflow_job/completed.success.with-organization.payload.json": ("pending", None),
    "workflow_job/queued.payload.json": ("pending", None),
    "workflow_job/queued.with-deployment.payload.json": ("pending", None),
    "workflow_job/waiting.payload.json": ("pending", None),
}


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: f"{p.parent.name}/{p.name}")
async def test_every_contract_example_is_accepted_and_mapped(make_env: MakeEnv, path: Path) -> None:
    env = await make_env()
    event, body = path.parent.name, path.read_bytes()
    raw = json.loads(body)
    if event == "ping":
        assert await env.post(event, body) == (200, {"ok": True, "zen": raw["zen"]})
        return
    run_id = raw["workflow_run"]["id"] if event == "workflow_run" else raw["workflow_job"]["run_id"]
    task = env.sink.add_task("github_actions", env.provider.validate(SEED).to_json())
    await env.sink.set_upstream(task.id, upstream_id=str(run_id))
    status, answer = await env.post(event, body)
    assert (status, answer) == (200, {"ok": True, "task_id": task.id})
    state, reason = EXPECTED[f"{event}/{path.name}"]
    if event == "workflow_job":
        (job,) = await wait_events(env, task.id, "github.job")
        assert job["job_id"] == raw["workflow_job"]["id"]
        assert job["status"] == raw["workflow_job"]["status"]
        await env.sink.wait_for(task.id, terminal=False, state=TaskState(state))
        if raw["workflow_job"]["status"] == "completed":
            out = await wait_output(env, task.id, "not available")  # unknown to the simulator
            assert f"job {raw['workflow_job']['name']}: completed" in out
    else:
        done = await env.sink.wait_for(task.id, terminal=False, state=TaskState(state))
        assert done.reason == reason
    (stored,) = env.kinds(task.id, "github.delivery")
    # what egw read of it, not the whole payload (GitHub keeps that: intake.py)
    assert (stored["event"], stored["action"]) == (event, raw["action"])
    if event == "workflow_job":
        assert stored["job"]["job_id"] == raw["workflow_job"]["id"]
        assert stored["job"]["status"] == raw["workflow_job"]["status"]
    else:
        assert stored["run"]["id"] == raw["workflow_run"]["id"]
        assert stored["run"]["status"] == raw["workflow_run"]["status"]
        assert stored["run"]["conclusion"] == raw["workflow_run"]["conclusion"]
    assert "payload" not in stored and len(json.dumps(stored)) < len(json.dumps(raw)) / 4


async def wait_events(env: Env, task_id: str, kind: str) -> list[dict[str, Any]]:
    """Events appear once the background apply ran; wait for them (bounded)."""
    async with asyncio.timeout(5):
        while not env.kinds(task_id, kind):
            await asyncio.sleep(0.01)
    return env.kinds(task_id, kind)


async def wait_output(env: Env, task_id: str, text: str) -> str:
    async with asyncio.timeout(5):
        while text not in env.sink.output(task_id).decode():
            await asyncio.sleep(0.01)
    return env.sink.output(task_id).decode()


async def test_signatures_malformed_bodies_and_foreign_events(make_env: MakeEnv) -> None:
    env = await make_env()
    body = (SAMPLES / "webhooks/examples/workflow_run/completed.payload.json").read_bytes()
    assert (await env.post("workflow_run", body, signature=None))[0] == 401
    bad = await env.post("workflow_run", body, signature="sha256=" + "0" * 64)
    assert bad[0] == 401 and bad[1]["error"]["code"] == "unauthorized"
    assert (await env.post("workflow_run", body, signature=gh.sign("wrong", body)))[0] == 401
    assert (await env.post("workflow_run", body + b" ", signature=gh.sign(SECRET, body)))[0] == 401
    malformed = b'{"action": "completed", "workflow_run": {"id": "nope"}}'
    status, answer = await env.post("workflow_run", malformed)
    assert status == 400 and answer["error"]["code"] == "invalid_request"
    assert (await env.post("workflow_run", b"{not json"))[0] == 400
    assert (await env.post("push", b'{"ref": "refs/heads/main"}'))[0] == 202
    # a run egw did not start
    status, answer = await env.post("workflow_run", body)
    assert status == 202 and "not a run egw started" in answer["ignored"]
    assert env.sink.events == []


async def test_a_hook_left_at_the_form_content_type_is_followed_end_to_end(
    make_env: MakeEnv,
) -> None:
    """GitHub's default content type for a new hook is ``form`` (github/rest-api-description,
    schema ``webhook-config-content-type``): ``payload=<urlencoded JSON>``, signed as posted."""
    env = await make_env(sim_kw={"webhook_content_type": "form"})
    task = await env.submit()
    done = await env.sink.wait_for(task.id, state=S.SUCCEEDED, logs=True)
    assert env.sink.states(task.id) == ["queued", "running", "succeeded"]
    sent = env.sim.deliveries
    assert sent and all(d.body.startswith(b"payload=%7B") for d in sent)
    assert {d.headers["Content-Type"] for d in sent} == {"application/x-www-form-urlencoded"}
    assert all(d.answers == [200] for d in sent)
    assert done.reason is None and "env=prod" in env.sink.output(task.id).decode()
    # the stored delivery is the decoded JSON as read, as for a json hook
    (first, *_) = env.kinds(task.id, "github.delivery")
    assert first["run"]["id"] == int(task.upstream_id or 0)


async def test_form_deliveries_are_verified_over_the_raw_body(make_env: MakeEnv) -> None:
    env = await make_env()
    raw = (SAMPLES / "webhooks/examples/workflow_run/completed.payload.json").read_bytes()
    form = urllib.parse.urlencode({"payload": raw.decode()}).encode()
    headers = {"Content-Type": "application/x-www-form-urlencoded"}

    async def post(body: bytes, signature: str) -> tuple[int, Any]:
        sent = {**headers, "X-GitHub-Event": "workflow_run", "X-Hub-Signature-256": signature}
        async with env.session.post(env.hook_url, data=body, headers=sent) as resp:
            return resp.status, await resp.json()

    # signed over the JSON inside, not the body posted: refused
    assert (await post(form, gh.sign(SECRET, raw)))[0] == 401
    status, answer = await post(form, gh.sign(SECRET, form))
    assert status == 202 and "not a run egw started" in answer["ignored"]
    for bad in (b"payload=%7Bnot+json", b"other=1", b"payload=1&payload=2", b"payload=%FF"):
        status, answer = await post(bad, gh.sign(SECRET, bad))
        assert status == 400 and answer["error"]["code"] == "invalid_request", bad


async def test_no_secret_configured_rejects_everything(make_env: MakeEnv) -> None:
    env = await make_env(webhook_secret=None)
    body = (SAMPLES / "webhooks/examples/ping/payload.json").read_bytes()
    assert (await env.post("ping", body))[0] == 401


async def test_redelivery_is_a_duplicate(make_env: MakeEnv) -> None:
    env = await make_env()
    task = await env.submit()
    await env.sink.wait_for(task.id, state=S.SUCCEEDED, logs=True)
    await env.sim.deliveries_idle()
    completed = next(
        d for d in env.sim.deliveries if d.event == "workflow_run" and d.action == "completed"
    )
    env.sim.redeliver(completed.guid)
    await env.sim.deliveries_idle()
    assert completed.answers == [200, 200]
    stored = [
        d
        for d in env.kinds(task.id, "github.delivery")
        if d["action"] == "completed" and d["event"] == "workflow_run"
    ]
    assert len(stored) == 1
    # the receiver said so
    status, answer = await env.post("workflow_run", completed.body, delivery=completed.guid)
    assert (status, answer) == (200, {"ok": True, "duplicate": True})
    assert env.sink.states(task.id) == ["queued", "running", "succeeded"]


async def test_reordered_deliveries_never_go_backwards(make_env: MakeEnv) -> None:
    env = await make_env()
    env.sim.hold()
    task = await env.submit()
    await env.sim.wait_run(int(task.upstream_id or 0))
    env.sim.release("reverse")  # completed first, requested last
    done = await env.sink.wait_for(task.id, logs=True)
    assert done.status is S.SUCCEEDED
    await env.sim.deliveries_idle()
    assert env.sink.states(task.id) == ["queued", "succeeded"]
    assert len(env.kinds(task.id, "github.delivery")) == 6  # all stored, stale ones not applied
    assert "env=prod" in env.sink.output(task.id).decode()


async def test_a_late_in_progress_never_overrides_completed(make_env: MakeEnv) -> None:
    env = await make_env()
    env.sim.delay(100, event="workflow_run", action="in_progress")
    env.sim.drop(event="workflow_job", count=10)
    task = await env.submit()
    done = await env.sink.wait_for(task.id, logs=True)
    assert done.status is S.SUCCEEDED
    await env.sim.deliveries_idle()
    assert env.sink.states(task.id) == ["queued", "succeeded"]
    assert env.sink.tasks[task.id].status is S.SUCCEEDED
    # the job webhooks were dropped: the log was fetched from the jobs list at completion
    assert "env=prod" in env.sink.output(task.id).decode()


async def test_rerun_is_visible_as_a_new_attempt(make_env: MakeEnv) -> None:
    env = await make_env()
    task = await env.submit()
    await env.sink.wait_for(task.id, state=S.SUCCEEDED, logs=True)
    await env.sim.rerun(int(task.upstream_id or 0))
    await env.sim.wait_run(int(task.upstream_id or 0))
    await env.sim.deliveries_idle()
    attempts = await wait_events(env, task.id, "github.attempt")
    assert attempts[0]["run_attempt"] == 2
    assert env.sink.tasks[task.id].status is S.SUCCEEDED  # a terminal state never changes


# --- reconciler -----------------------------------------------------------------------------


async def test_reconciler_recovers_missed_deliveries_with_conditional_requests(
    make_env: MakeEnv,
) -> None:
    env = await make_env(poll_min_s=0.05, poll_max_s=0.2)
    env.sim.drop(count=1000)  # no webhook at all
    env.sim.script(
        RunScript(
            jobs=[JobScript("build", steps=[StepScript("Build", 60, output="built")])], queue_s=0
        )
    )
    task = await env.submit()
    done = await env.sink.wait_for(task.id, logs=True)
    assert done.status is S.SUCCEEDED
    assert "built" in env.sink.output(task.id).decode()
    # the repository's runs are listed (one request for many runs), never the run alone
    polls = [r for r in env.sim.requests if r[0] == "GET" and "/actions/runs?" in r[1]]
    assert len(polls) >= 2
    assert any("If-None-Match" in r[2] for r in polls)
    assert not [r for r in env.sim.requests if r[1].endswith(f"/runs/{task.upstream_id}")]
    assert "running" in env.sink.states(task.id) or env.sink.states(task.id) == [
        "queued",
        "succeeded",
    ]


async def test_rate_limits_are_honoured_and_exposed(make_env: MakeEnv) -> None:
    env = await make_env()
    env.sim.fail_next(429, match="/dispatches", retry_after=0.1)
    task = await env.submit()
    assert task.upstream_id is not None
    assert len([r for r in env.sim.requests if r[1].endswith("/dispatches")]) == 2
    assert len(env.sim.runs) == 1  # a refused request is not ambiguous: no probe needed
    env.sim.set_rate_limit(remaining=0, reset_in_s=3600)
    with pytest.raises(Exception) as err:
        await env.provider.status(task)
    assert "rate limit" in str(err.value)
    health = env.provider.health()
    assert health["rate_limit"]["remaining"] == 0 and health["rate_limited_until"] is not None


# --- dispatch safety ------------------------------------------------------------------------


async def test_ambiguous_dispatch_failure_looks_before_dispatching_again(make_env: MakeEnv) -> None:
    env = await make_env(correlation_input="egw_id")
    env.sim.add_workflow(
        "octo-org",
        "octo-repo",
        "deploy.yml",
        inputs=["env", "egw_id"],
        run_name="deploy ${{ inputs.env }} ${{ inputs.egw_id }}",
    )
    env.sim.drop_connection_next(match="/dispatches", after_effect=True)
    task = await env.submit()
    assert len(env.sim.runs) == 1  # the lost request's run was found, not created twice
    (run,) = env.sim.runs.values()
    assert task.upstream_id == str(run.id)
    assert len([r for r in env.sim.requests if r[1].endswith("/dispatches")]) == 1
    assert run.display_title == f"deploy prod {gh.correlation_id(task.id)}"
    await env.sink.wait_for(task.id, state=S.SUCCEEDED, logs=True)


async def test_a_connection_refused_before_work_is_dispatched_again(make_env: MakeEnv) -> None:
    env = await make_env(poll_min_s=0.05)
    env.sim.drop_connection_next(match="/dispatches", after_effect=False)
    task = await env.submit()
    assert len(env.sim.runs) == 1 and task.upstream_id is not None
    assert len([r for r in env.sim.requests if r[1].endswith("/dispatches")]) == 2


async def test_second_submit_after_restart_does_not_dispatch_twice(make_env: MakeEnv) -> None:
    env = await make_env()
    task = await env.submit()
    again = await env.provider.submit(env.sink.tasks[task.id], idempotency_key=task.id)
    assert again.upstream_id == task.upstream_id
    # a task whose dispatch started but whose answer was never recorded: look first
    pending = env.sink.add_task("github_actions", env.provider.validate(SEED).to_json())
    await env.sink.set_upstream(
        pending.id, data={"dispatch_started_at": "2020-01-01T00:00:00.000Z"}
    )
    before = len(env.sim.runs)
    sub = await env.provider.submit(env.sink.tasks[pending.id], idempotency_key=pending.id)
    # without a correlation input the oldest unclaimed dispatch run of the window is taken
    # only if one exists; here the only run is claimed by the first task, so it dispatches
    assert sub.upstream_id is not None and len(env.sim.runs) == before + 1


async def test_restart_resumes_following_runs(make_env: MakeEnv) -> None:
    env = await make_env(poll_min_s=0.05, poll_max_s=0.2)
    env.sim.hold()  # webhooks are held while egw is down
    task = await env.submit()
    await env.provider.close()
    await env.sim.wait_run(int(task.upstream_id or 0))
    fresh = GitHubActionsProvider(env.provider.cfg, session=env.session, retry=RETRY)
    await fresh.start(env.sink)
    try:
        done = await env.sink.wait_for(task.id, logs=True)
        assert done.status is S.SUCCEEDED
        assert "env=prod" in env.sink.output(task.id).decode()
    finally:
        await fresh.close()
        env.sim.release()


async def test_a_job_log_or_progress_written_before_a_restart_is_not_written_again(
    make_env: MakeEnv,
) -> None:
    """The jobs whose logs are in the store, and what the log said of each job, are kept
    with the task (``logged_jobs``, ``job_marks``): the next process (a restart, or the
    next holder of the reconciler's lease on replicas) writes only what is new."""
    env = await make_env(poll_min_s=0.05, poll_max_s=0.2)
    env.sim.script(
        RunScript(
            jobs=[
                JobScript("quick", steps=[StepScript("q-step", 1, output="quick output")]),
                JobScript("slow", steps=[StepScript("s-step", 400, output="slow output")]),
            ],
            queue_s=0,
        )
    )
    task = await env.submit()
    for _ in range(400):
        if b"quick output" in env.sink.output(task.id):
            break
        await asyncio.sleep(0.01)
    assert env.sink.tasks[task.id].upstream["logged_jobs"]
    await env.provider.close()
    cfg = env.provider.cfg
    env.provider = fresh = GitHubActionsProvider(cfg, session=env.session, retry=RETRY)
    await fresh.start(env.sink)
    try:
        await env.sink.wait_for(task.id, state=S.SUCCEEDED, logs=True)
        text = env.sink.output(task.id).decode()
        assert text.count("----- log of job quick ") == text.count("quick output") == 1, text
        assert text.count("----- log of job slow ") == text.count("slow output") == 1, text
        # and the progress lines are not written again either (``job_marks``)
        progress = [line for line in text.splitlines() if line.startswith("[github] ")]
        assert len(progress) == len(set(progress)), text
    finally:
        await fresh.close()


# --- Enterprise Server fallback -------------------------------------------------------------


@pytest.mark.parametrize("status", [422, 400])
async def test_enterprise_fallback_finds_the_run_by_correlation(
    make_env: MakeEnv, status: int
) -> None:
    env = await make_env(
        correlation_input="egw_id",
        poll_min_s=0.05,
        sim_kw={"enterprise": True, "enterprise_status": status},
    )
    env.sim.add_workflow(
        "octo-org",
        "octo-repo",
        "deploy.yml",
        inputs=["env", "egw_id"],
        run_name="Deploy to ${{ inputs.env }} [${{ inputs.egw_id }}]",
    )
    # another dispatch of the same workflow at the same time must not be taken for ours
    env.sim.script(RunScript(queue_s=0), RunScript(queue_s=0))
    task = await env.submit()
    assert task.upstream_id is None and task.status is S.PENDING  # until matched
    assert task.upstream["correlation_id"] == gh.correlation_id(task.id)
    done = await env.sink.wait_for(task.id, state=S.SUCCEEDED, logs=True)
    run = env.sim.runs[int(done.upstream_id or 0)]
    assert run.inputs["egw_id"] == gh.correlation_id(task.id)
    assert done.upstream_url == f"https://github.com/octo-org/octo-repo/actions/runs/{run.id}"
    assert "env=prod" in env.sink.output(task.id).decode()
    dispatches = [r for r in env.sim.requests if r[1].endswith("/dispatches")]
    assert len(dispatches) == 2  # refused with the field, accepted without it
    assert env.provider.health()["run_details"] is False
    assert env.kinds(task.id, "github.correlated")
    # the next dispatch leaves the field out from the start
    second = await env.submit()
    assert len([r for r in env.sim.requests if r[1].endswith("/dispatches")]) == 3
    await env.sink.wait_for(second.id, state=S.SUCCEEDED, logs=True)
    assert env.sink.tasks[second.id].upstream_id != done.upstream_id


async def test_enterprise_fallback_by_time_window_without_correlation_input(
    make_env: MakeEnv,
) -> None:
    env = await make_env(poll_min_s=0.05, sim_kw={"enterprise": True})
    task = await env.submit()
    assert task.upstream_id is None
    done = await env.sink.wait_for(task.id, state=S.SUCCEEDED, logs=True)
    assert done.upstream_id == str(next(iter(env.sim.runs)))


async def test_correlation_gives_up_after_its_timeout(make_env: MakeEnv) -> None:
    env = await make_env(
        correlation_input="egw_id",
        poll_min_s=0.05,
        correlation_timeout_s=0.3,
        sim_kw={"enterprise": True},
    )
    # the workflow does not echo the id into its run-name: the run can never be matched
    env.sim.add_workflow("octo-org", "octo-repo", "deploy.yml", inputs=["env", "egw_id"])
    task = await env.submit()
    done = await env.sink.wait_for(task.id, logs=True)
    assert done.status is S.FAILED and "no dispatched run was found" in (done.reason or "")


async def test_cancel_while_correlating(make_env: MakeEnv) -> None:
    env = await make_env(
        correlation_input="egw_id",
        poll_min_s=0.05,
        sim_kw={"enterprise": True, "run_creation_delay_s": 20},
    )
    env.sim.add_workflow(
        "octo-org",
        "octo-repo",
        "deploy.yml",
        inputs=["env", "egw_id"],
        run_name="${{ inputs.egw_id }}",
    )
    env.sim.script(long_run())
    task = await env.submit()
    # egw cancels a pending task with no upstream id itself (core/states.py cancel),
    # without asking the provider; the correlator notices the task ended
    await env.sink.observe(task.id, Observation(state=S.CANCELLED), source="gateway")
    await env.sink.logs_complete(task.id)
    (run,) = env.sim.runs.values()
    await env.sim.wait_run(run.id, "completed")  # found later, and cancelled upstream
    assert run.conclusion == "cancelled"
    assert env.sink.tasks[task.id].upstream_id == str(run.id)
    assert env.sink.tasks[task.id].status is S.CANCELLED


async def test_provider_cancel_of_an_unmatched_task_needs_no_upstream(make_env: MakeEnv) -> None:
    env = await make_env(sim_kw={"enterprise": True, "run_creation_delay_s": 1000})
    task = await env.submit()
    obs = await env.provider.cancel(task)
    assert obs is not None and obs.state is S.CANCELLED
    assert not [r for r in env.sim.requests if r[1].endswith("/cancel")]


async def test_logs_end_with_a_note_when_github_cannot_serve_them(make_env: MakeEnv) -> None:
    # the failures open the breaker toward the API too: its probes come quickly here
    circuit = CircuitConfig(open_s=0.05, max_open_s=0.1)
    env = await make_env(poll_min_s=0.02, poll_max_s=0.05, circuit=circuit)
    env.sim.drop(event="workflow_job", count=100)  # logs must come from the jobs list
    env.sim.fail_next(500, match="/jobs", count=1000)
    task = await env.submit()
    done = await env.sink.wait_for(task.id, logs=True)
    assert done.status is S.SUCCEEDED
    assert "logs could not be read" in env.sink.output(task.id).decode()


# --- job logs that do not exist yet -------------------------------------------------------


def slow_upload(delay_s: float) -> RunScript:
    """One job whose log lands ``delay_s`` (simulated) after it completed."""
    step = StepScript("Build", 1, output="compiled 3 files")
    return RunScript(jobs=[JobScript("build", steps=[step], log_delay_s=delay_s)], queue_s=0)


async def test_a_job_log_not_uploaded_yet_is_asked_for_again_until_it_lands(
    make_env: MakeEnv,
) -> None:
    """The logs endpoint answers 302 and the blob 404 ``BlobNotFound`` until the runner's
    upload lands (egw.wire.github.logs): egw asks again instead of "not available"."""
    env = await make_env()
    env.sim.script(slow_upload(60))  # 0.3 s real at this time scale
    task = await env.submit()
    done = await env.sink.wait_for(task.id, state=S.SUCCEEDED, logs=True)
    out = env.sink.output(task.id).decode()
    assert "not available" not in out
    assert "compiled 3 files" in out and "----- log of job build" in out
    assert "\ufeff" not in out  # the runner's byte order mark is not task output
    stamped = [line for line in out.splitlines() if gh.RUNNER_LINE.fullmatch(line)]
    assert any(line.endswith("compiled 3 files") for line in stamped)
    asked = [r for r in env.sim.requests if r[1].endswith("/logs")]
    assert len(asked) > 1  # a fresh download URL for every try
    assert done.reason is None


async def test_a_job_log_that_never_lands_is_given_up_after_the_wait(make_env: MakeEnv) -> None:
    env = await make_env(log_wait_s=0.3)
    env.sim.script(slow_upload(1_000_000))
    task = await env.submit()
    started = asyncio.get_running_loop().time()
    succeeded = await env.sink.wait_for(task.id, state=S.SUCCEEDED)
    assert not succeeded.logs_complete  # the run's state is not held up by its log
    done = await env.sink.wait_for(task.id, logs=True)
    assert asyncio.get_running_loop().time() - started < 5
    out = env.sink.output(task.id).decode()
    assert "log of job build not available (download HTTP 404 BlobNotFound, still after 0.3s)" in (
        out
    )
    assert done.status is S.SUCCEEDED


# --- states GitHub produces besides queued, in_progress, completed ---------------------------


async def test_a_job_waiting_for_an_environments_approval_keeps_the_task_queued(
    make_env: MakeEnv,
) -> None:
    """workflow_job ``queued`` with a ``deployment`` and status ``waiting``, then
    ``waiting`` (contracts: workflow_job/queued.with-deployment, waiting), until approved."""
    env = await make_env()
    steps = [StepScript("Deploy", 1, output="deployed")]
    env.sim.script(RunScript(jobs=[JobScript("deploy", steps, environment="production")]))
    task = await env.submit()
    (job,) = await wait_events(env, task.id, "github.job")
    assert (job["status"], job["environment"]) == ("waiting", "production")
    out = await wait_output(env, task.id, "job deploy: waiting")
    assert "[github] job deploy: waiting (environment production needs an approval)" in out
    run_id = int(task.upstream_id or 0)
    await env.sim.deliveries_idle()
    assert [(d.event, d.action) for d in env.sim.deliveries if d.event == "workflow_job"] == [
        ("workflow_job", "queued"),
        ("workflow_job", "waiting"),
    ]
    assert env.sink.tasks[task.id].status is S.QUEUED
    polled = await env.provider.status(env.sink.tasks[task.id])  # the run is waiting too
    assert (polled.state, polled.reason) == (S.QUEUED, "waiting")
    env.sim.approve(run_id)
    done = await env.sink.wait_for(task.id, state=S.SUCCEEDED, logs=True)
    assert env.sink.states(task.id) == ["queued", "running", "succeeded"]
    assert "deployed" in env.sink.output(task.id).decode() and done.reason is None


async def test_a_waiting_job_cancelled_before_its_approval(make_env: MakeEnv) -> None:
    env = await make_env()
    env.sim.script(RunScript(jobs=[JobScript("deploy", [StepScript("Deploy")], environment="p")]))
    task = await env.submit()
    await wait_output(env, task.id, "job deploy: waiting")
    assert await env.provider.cancel(env.sink.tasks[task.id]) is None
    done = await env.sink.wait_for(task.id, logs=True)
    assert (done.status, done.reason) == (S.CANCELLED, "cancelled")


async def test_a_run_requested_with_action_required_ends_the_task(make_env: MakeEnv) -> None:
    """``requested`` already ``completed`` with ``action_required`` (contracts:
    workflow_run/requested.with-conclusion): egw cannot approve it; the task fails."""
    env = await make_env()
    env.sim.script(RunScript(action_required=True))
    task = await env.submit()
    done = await env.sink.wait_for(task.id, logs=True)
    assert (done.status, done.reason) == (S.FAILED, "action_required")
    (delivery,) = env.sim.deliveries
    run = delivery.payload["workflow_run"]
    assert (delivery.action, run["status"], run["conclusion"]) == (
        "requested",
        "completed",
        "action_required",
    )


async def test_a_pending_run_is_queued_until_its_concurrency_group_frees_it(
    make_env: MakeEnv,
) -> None:
    env = await make_env()
    env.sim.script(RunScript(pending_s=200))  # 1 s real
    task = await env.submit()
    await env.sim.deliveries_idle()
    assert env.sim.deliveries[0].payload["workflow_run"]["status"] == "pending"
    polled = await env.provider.status(env.sink.tasks[task.id])
    assert (polled.state, polled.reason) == (S.QUEUED, "pending")
    (observed, *_) = [
        e.data for e in env.sink.events if e.kind == "observe" and e.data["source"] == "github"
    ]
    assert (observed["status"], observed["reason"]) == ("queued", "pending")
    done = await env.sink.wait_for(task.id, state=S.SUCCEEDED, logs=True)
    assert env.sink.states(task.id) == ["queued", "running", "succeeded"]
    assert done.reason is None
