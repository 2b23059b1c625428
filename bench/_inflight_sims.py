"""The simulated upstreams of the tasks-in-flight bench, in their own process.

Nomad, GitHub Actions and Cloud Run simulators on loopback, scripted so that every job runs for
an hour and says a few lines at its start, then works silently (nothing changes upstream while
the bench measures the gateway at rest). A small control app answers the bench:

* ``POST /webhook`` ``{"url": ...}``: where GitHub's webhooks go (the gateway starts later);
* ``GET /counters``: what the gateway asked of each upstream (requests by kind, Cloud Logging
  reads in the last minute, GitHub's rate-limit spend and 304s).

    python bench/_inflight_sims.py --ready FILE [--tasks N]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
from collections import Counter
from pathlib import Path
from typing import Any

from aiohttp import web

from egw.testing.cloudrun import CloudRunSimulator, JobScript
from egw.testing.github import GitHubSimulator, RunScript, StepScript
from egw.testing.github import JobScript as GitHubJob
from egw.testing.nomad import NomadSimulator
from egw.testing.nomad.script import Script

PROJECT, REGION, JOB = "bench-project", "us-central1", "inflight"
OWNER, REPO = "bench-org", "inflight"
HOUR = 3600.0
GITHUB_TOKEN = "ghp_bench_inflight"
CLOUDRUN_TOKEN = "ya29.bench-inflight"
WEBHOOK_SECRET = "bench-inflight-secret"


async def serve(ready: Path, runs: int) -> None:
    nomad = NomadSimulator(time_scale=1.0)
    # three lines spread over the first half of the hour (the Nomad simulator's rule)
    nomad.cluster.default_script = Script(
        stdout=b"ready\nworking\nstill working\n", duration_s=HOUR
    )
    # 15,000 requests an hour: a GitHub App installation of an Enterprise Cloud organisation
    # (docs: rate-limits-for-the-rest-api.md); the dispatches alone cost one request each, so
    # 5,000 an hour could not even start the runs. At rest the bench holds egw to 5,000.
    github = GitHubSimulator(
        webhook_secret=WEBHOOK_SECRET, token=GITHUB_TOKEN, time_scale=1.0, rate_limit=15_000
    )
    # one job with one hour-long step: its progress lines come at the start, then nothing
    step = StepScript("Work", HOUR, output="working")
    github.script(*[RunScript(jobs=[GitHubJob("work", steps=[step])], queue_s=1)] * runs)
    cloudrun = CloudRunSimulator(token=CLOUDRUN_TOKEN, time_scale=1.0)
    cloudrun.add_job(
        PROJECT,
        REGION,
        JOB,
        script=JobScript(
            stdout=["ready", "working", "still working"],
            duration_s=HOUR,
            start_delay_s=1.0,
            output_span_s=8.0,  # lines 2, 4 and 6 s in
            system_messages=False,
        ),
    )
    urls = {
        "nomad": await nomad.start(),
        "github": await github.start(),
        "cloud_run": await cloudrun.start(),
    }

    async def webhook(request: web.Request) -> web.Response:
        github.webhook_url = (await request.json())["url"]
        return web.json_response({})

    async def counters(request: web.Request) -> web.Response:
        return web.json_response(
            {
                "nomad": {"requests": _kinds(s.path for s in nomad.requests)},
                "github": {
                    "requests": _kinds(p for _, p, _ in github.requests),
                    "rate_used": github.rate["used"],
                    "rate_limit": github.rate["limit"],
                    "conditional": sum(1 for *_, h in github.requests if "If-None-Match" in h),
                },
                "cloud_run": {
                    "requests": dict(Counter(op for op, _ in cloudrun.requests)),
                    "logging_reads_last_minute": cloudrun.reads_last_minute(PROJECT),
                },
            }
        )

    control = web.Application()
    control.router.add_post("/webhook", webhook)
    control.router.add_get("/counters", counters)
    runner = web.AppRunner(control, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    urls["control"] = f"http://127.0.0.1:{port}"
    urls["pid"] = str(os.getpid())
    tmp = ready.with_suffix(".tmp")
    tmp.write_text(json.dumps(urls))
    tmp.rename(ready)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    await runner.cleanup()
    for sim in (cloudrun, github, nomad):
        await sim.close()


def _kinds(paths: Any) -> dict[str, int]:
    """Requests by kind: the path with its ids and query cut off (``/v1/allocation/*``)."""
    out: Counter[str] = Counter()
    for path in paths:
        parts = str(path).split("?")[0].split("/")
        out["/".join(p if not any(c.isdigit() for c in p) else "*" for p in parts[:6])] += 1
    return dict(out)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--ready", required=True, type=Path)
    ap.add_argument("--tasks", type=int, default=10_000, help="GitHub runs to script")
    args = ap.parse_args()
    asyncio.run(serve(args.ready, args.tasks))


if __name__ == "__main__":
    main()
