"""GitHub runs are polled by listing the repository in ETag-cached pages, not one request per run.

Against the GitHub simulator over real HTTP, with no webhook delivered (the fixtures of
test_github_actions.py)."""

from __future__ import annotations

import asyncio

import pytest

from egw.core.model import TaskState
from egw.testing.github import JobScript, RunScript, StepScript
from tests.providers.test_github_actions import TOKEN, Env, MakeEnv, make_env

__all__ = ["make_env"]  # the fixture, used by name


def _runs(n: int, step_s: float) -> list[RunScript]:
    return [
        RunScript(
            jobs=[JobScript("build", steps=[StepScript("Build", step_s, output=f"built {i}")])],
            queue_s=0,
        )
        for i in range(n)
    ]


def _single_gets(env: Env) -> list[str]:
    return [p for m, p, _ in env.sim.requests if m == "GET" and p.split("?")[0][-1].isdigit()]


def _list_gets(env: Env) -> list[tuple[str, dict[str, str]]]:
    return [(p, h) for m, p, h in env.sim.requests if m == "GET" and "/actions/runs?" in p]


async def _until(cond: object, timeout_s: float = 30.0) -> None:
    async with asyncio.timeout(timeout_s):
        while not cond():  # type: ignore[operator]
            await asyncio.sleep(0.02)


async def test_runs_on_several_pages_and_leaving_the_first_are_each_followed(
    make_env: MakeEnv,
) -> None:
    """130 runs, then 130 more (the first ones move to the second and third pages): every run
    is followed to its end by listing, each task gets its own run's state and output, and no
    run is polled alone."""
    env = await make_env(poll_min_s=0.05, poll_max_s=0.2)
    env.sim.drop(count=100_000)  # no webhook at all: only the reconciler can tell
    env.sim.script(*_runs(260, 400))  # 2 s (real) each
    first = [await env.submit() for _ in range(130)]
    await _until(lambda: all("running" in env.sink.states(t.id) for t in first))
    second = [await env.submit() for _ in range(130)]
    for task in [*first, *second]:
        done = await env.sink.wait_for(task.id, logs=True, timeout_s=60)
        assert done.status is TaskState.SUCCEEDED
    for i, task in enumerate([*first, *second]):
        assert f"built {i}\n" in env.sink.output(task.id).decode(), i
    listed = _list_gets(env)
    assert (
        listed and any("page=2" in p for p, _ in listed) and any("page=3" in p for p, _ in listed)
    )
    assert not [p for p in _single_gets(env) if "/actions/runs/" in p and "/jobs" not in p]


async def test_an_unchanged_page_is_a_free_304(make_env: MakeEnv) -> None:
    """While 150 runs run on unchanged, polling them costs no rate limit: every page is asked
    with its ETag and answered 304, which GitHub does not count."""
    env = await make_env(poll_min_s=0.05, poll_max_s=0.1)
    env.sim.drop(count=100_000)
    env.sim.script(*_runs(150, 100_000))
    tasks = [await env.submit() for _ in range(150)]
    await _until(lambda: all("running" in env.sink.states(t.id) for t in tasks))
    await asyncio.sleep(0.5)  # the last changes are listed
    used, asked = env.sim.rate["used"], len(_list_gets(env))
    await asyncio.sleep(1.0)
    listed = _list_gets(env)[asked:]
    assert len(listed) >= 10  # it kept polling (two pages every 0.1 s or so)
    assert all("If-None-Match" in h for _, h in listed)
    assert env.sim.rate["used"] == used  # and it cost nothing
    assert not _single_gets(env)
    health = env.provider.health()
    assert health["rate_limit"]["remaining"] == env.sim.rate["remaining"]


async def test_a_run_pushed_out_of_the_listing_is_read_alone(make_env: MakeEnv) -> None:
    """A filtered list holds at most 1,000 runs: egw's run, older than 1,000 others of the
    repository, is not listed any more, and is then read on its own."""
    env = await make_env(poll_min_s=0.05, poll_max_s=0.2)
    env.sim.drop(count=100_000)
    env.sim.script(*_runs(1, 1500))  # 7.5 s (real)
    task = await env.submit()
    await _until(lambda: "running" in env.sink.states(task.id))
    url = f"{env.sim.base_url}/repos/octo-org/octo-repo/actions/workflows/deploy.yml/dispatches"
    headers = {"Authorization": f"Bearer {TOKEN}", "X-GitHub-Api-Version": "2022-11-28"}
    sem = asyncio.Semaphore(16)

    async def other() -> None:
        async with sem, env.session.post(url, json={"ref": "main"}, headers=headers) as r:
            assert r.status == 204

    await asyncio.gather(*(other() for _ in range(1000)))
    await _until(lambda: len(env.sim.runs) == 1001)
    done = await env.sink.wait_for(task.id, logs=True, timeout_s=60)
    assert done.status is TaskState.SUCCEEDED
    assert "built 0" in env.sink.output(task.id).decode()
    alone = [p for p in _single_gets(env) if p.endswith(f"/actions/runs/{task.upstream_id}")]
    assert alone  # read on its own once the listing lost it


async def test_more_runs_than_a_filtered_list_holds_are_listed_unfiltered(
    make_env: MakeEnv, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Past what a ``created``-filtered list holds (1,000 runs, here lowered to 5), the list is
    read unfiltered, newest first, until every followed run was seen."""
    from egw.providers.github_actions import listing

    monkeypatch.setattr(listing, "FILTERED_MAX", 5)
    env = await make_env(poll_min_s=0.05, poll_max_s=0.2)
    env.sim.drop(count=100_000)
    env.sim.script(*_runs(8, 400))
    tasks = [await env.submit() for _ in range(8)]
    for task in tasks:
        done = await env.sink.wait_for(task.id, logs=True, timeout_s=30)
        assert done.status is TaskState.SUCCEEDED
    listed = [p for p, _ in _list_gets(env)]
    assert listed and not any("created=" in p for p in listed)
    assert not [p for p in _single_gets(env) if "/jobs" not in p and "/logs" not in p]
