"""Cloud Run logs read a project's executions together: exact, live, and inside the read budget.

Against the simulator over real HTTP (the fixtures of test_cloudrun.py)."""

from __future__ import annotations

import asyncio
import time

from egw.core.model import TaskState
from egw.testing.cloudrun import JobScript
from egw.wire import cloudrun as wire
from tests.providers.test_cloudrun import Env, env, lines, stdout_of, until

__all__ = ["env"]  # the fixture, used by name


def _script(n: int, **kw: object) -> JobScript:
    return JobScript(stdout=lines(n), system_messages=False, **kw)  # type: ignore[arg-type]


async def test_many_executions_in_small_pages_and_shared_timestamps_each_line_once(
    env: Env,
) -> None:
    """Two jobs, 24 executions started together: entries of different executions share
    timestamps (coarse timestamps), pages of 7 split them anywhere, and a filter that holds only
    a few executions makes each read a batch of some. Every line arrives once."""
    for job in ("job-a", "job-b"):
        env.sim.add_job(
            "my-project",
            "asia-east1",
            job,
            script=_script(
                30, duration_s=60, start_delay_s=0.5, timestamp_resolution_s=0.5, ingest_delay_s=1
            ),
        )
    p = await env.provider()
    p.log_page_size = 7
    p.max_log_filter_chars = wire.batch_filter_length(["job-a-xxxxx"] * 5)
    tasks = [env.task(p, job=("job-a", "job-b")[i % 2]) for i in range(24)]
    await asyncio.gather(*(env.submit(p, t) for t in tasks))
    for task in tasks:
        done = await env.sink.wait_for(task.id, logs=True, timeout_s=30)
        assert done.status is TaskState.SUCCEEDED
        out = stdout_of(env, task).splitlines()  # ties in time come in insertId order
        assert sorted(out) == sorted(lines(30)), task.id
    assert p.health()["log_readers"] == 0


async def test_three_hundred_executions_inside_thirty_reads_a_minute(env: Env) -> None:
    """The issue's arithmetic: 300 running executions and 30 reads a minute. One reader per
    execution would read each once every ten minutes; read together, every execution's first
    lines are in within seconds, and the simulated quota is never exceeded."""
    # three lines, 2, 4 and 6 s (real) into an execution of 8 s
    env.sim.add_job("my-project", "asia-east1", "my-job", script=_script(3, duration_s=800))
    env.sim.logging_quota_per_minute = 30
    p = await env.provider(logging_reads_per_minute=30, poll_min_s=0.5, poll_max_s=1.0)
    tasks = [env.task(p) for _ in range(300)]
    await asyncio.gather(*(env.submit(p, t) for t in tasks))
    start = time.monotonic()
    await until(lambda: all(stdout_of(env, t) == "line 0\nline 1\nline 2\n" for t in tasks), 15)
    assert time.monotonic() - start < 15
    used = env.sim.reads_last_minute("my-project")
    assert used <= 30 and used == p.health()["logging_reads_last_minute"]["my-project"]
    assert p.health()["retries"] == 0  # never a 429


async def test_a_read_failing_mid_batch_resumes_each_execution_at_its_cursor(env: Env) -> None:
    env.sim.add_job(
        "my-project",
        "asia-east1",
        "my-job",
        script=_script(20, duration_s=0.1, start_delay_s=0),
    )
    env.sim.fail("list_entries", 503, skip=2, times=4)  # the third page fails, past the retries
    from dataclasses import replace

    from tests.providers.test_cloudrun import FAST_RETRY

    p = await env.provider(retry=replace(FAST_RETRY, attempts=2), logging_settle_s=0)
    p.log_page_size = 6
    tasks = [env.task(p) for _ in range(4)]
    await asyncio.gather(*(env.submit(p, t) for t in tasks))
    for task in tasks:
        done = await env.sink.wait_for(task.id, logs=True, timeout_s=20)
        assert done.status is TaskState.SUCCEEDED
        assert stdout_of(env, task) == "".join(f"line {i}\n" for i in range(20))


async def test_an_execution_of_another_job_with_the_same_short_id_is_not_mixed_in(
    env: Env,
) -> None:
    """Entries are routed by location, job and execution label, not by the label alone."""
    env.sim.add_job("my-project", "asia-east1", "my-job", script=_script(5, duration_s=1))
    p = await env.provider()
    task = env.task(p)
    await env.submit(p, task)
    ex = env.executions()[0]
    other = env.sim.add_job("my-project", "europe-west1", "my-job", script=_script(5))
    # a foreign entry in another region that carries the same execution label
    foreign = dict(ex.entries[0].body)
    foreign["resource"] = {
        "type": "cloud_run_job",
        "labels": {"project_id": "my-project", "job_name": "my-job", "location": other.region},
    }
    foreign["insertId"] = "foreign-1"
    foreign["textPayload"] = "not mine"
    from egw.testing.cloudrun.model import SimEntry

    ex.entries.append(SimEntry(ex.entries[0].ts_ns, ex.entries[0].visible_ns, foreign))
    done = await env.sink.wait_for(task.id, logs=True, timeout_s=20)
    assert done.status is TaskState.SUCCEEDED
    assert "not mine" not in stdout_of(env, task)
    assert stdout_of(env, task) == "".join(f"line {i}\n" for i in range(5))


def test_the_batch_filter_fits_logging_limit_and_reads_back() -> None:
    names = [f"my-job-{i:05d}" for i in range(400)]
    fits = [n for i, n in enumerate(names) if wire.batch_filter_length(names[: i + 1]) <= 20_000]
    text = wire.batch_filter(
        fits[:-2], fits[-2:], since="2026-01-01T00:00:00Z", until="2026-01-01T00:01:00Z"
    )
    assert len(text) <= wire.MAX_FILTER_CHARS < wire.batch_filter_length(names)
    assert len(fits) > 300
    from egw.testing.cloudrun.filters import compile_filter

    pred = compile_filter(text)

    def entry(execution: str, ts: str) -> dict[str, object]:
        return {
            "resource": {"type": "cloud_run_job", "labels": {}},
            "labels": {wire.LABEL_EXECUTION: execution},
            "timestamp": ts,
        }

    assert pred(entry(fits[0], "2026-01-01T00:00:30Z"))
    assert not pred(entry(fits[0], "2026-01-01T00:02:00Z"))  # live: up to the bound
    assert pred(entry(fits[-1], "2026-01-01T00:02:00Z"))  # final: no upper bound
    assert not pred(entry(fits[-1], "2025-12-31T23:59:59Z"))  # nothing before the cursor
    assert not pred(entry("someone-else", "2026-01-01T00:00:30Z"))


def test_or_of_many_equalities_answers_as_each_comparison_would() -> None:
    """The simulator merges ``a="x" OR a="y" …`` into one lookup: the answers stay those of the
    comparisons one by one, for strings, numbers and absent fields."""
    from egw.testing.cloudrun.filters import compile_filter

    merged = compile_filter('jsonPayload.n="3" OR jsonPayload.n="4" OR jsonPayload.n="x"')
    for value, want in [("3", True), (3, True), (4.0, True), ("x", True), ("5", False), (5, False)]:
        assert merged({"jsonPayload": {"n": value}}) is want, value
    assert merged({"jsonPayload": {}}) is False
    assert compile_filter('a="1" OR NOT a="1"')({"a": "2"}) is True
