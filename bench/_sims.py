"""An upstream simulator of egw/testing as its own process, for the request parts.

    python bench/_sims.py nomad|github --ready FILE [--cpu N]

Writes ``"<base url> <pid>"`` to ``--ready`` once serving; stops on SIGTERM.

* ``nomad``: `NomadSimulator`, every job printing one line and ending 0.25 s after it
  was placed (so that the log followers of thousands of jobs do not pile up: following
  that many at once is bench part "tasks in flight", not this one);
* ``github``: `GitHubSimulator` without a webhook URL (the webhook part posts the
  deliveries itself), every dispatched run staying ``queued`` for a simulated day.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
from pathlib import Path

from egw.testing.github import GitHubSimulator
from egw.testing.github.runs import RunScript
from egw.testing.nomad import NomadSimulator
from egw.testing.nomad.script import Script

GITHUB_TOKEN = "ghp_bench_0123456789"


async def serve(kind: str, ready: str) -> None:
    sim: NomadSimulator | GitHubSimulator
    if kind == "nomad":
        sim = NomadSimulator(time_scale=1.0)
        sim.cluster.default_script = Script(duration_s=0.2, start_delay_s=0.05)
    else:
        sim = GitHubSimulator(token=GITHUB_TOKEN, time_scale=1.0)
        sim.script(*[RunScript(queue_s=86400) for _ in range(10000)])
    url = await sim.start()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    Path(ready + ".tmp").write_text(f"{url} {os.getpid()}")
    os.replace(ready + ".tmp", ready)
    try:
        await stop.wait()
    finally:
        await sim.close()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("kind", choices=("nomad", "github"))
    ap.add_argument("--ready", required=True)
    ap.add_argument("--cpu", type=int)
    args = ap.parse_args()
    if args.cpu is not None:
        os.sched_setaffinity(0, {args.cpu})
    asyncio.run(serve(args.kind, args.ready))


if __name__ == "__main__":
    main()
