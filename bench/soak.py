"""Fault soak: `egw serve` killed with SIGKILL at random points, round after round, during
concurrent submits, cancels, SSE tails and GitHub webhooks; after each restart and at the end,
nothing acknowledged is lost or doubled, nothing stays unfinished with nothing to finish it,
and every tail resumes byte-exact.

    .venv/bin/python bench/soak.py                          # 20 rounds (a few minutes)
    .venv/bin/python bench/soak.py --rounds 500 --duration 3600 --json soak.json

The harness and the list of checks are in ``tests/reliability/faultkit.py``; the test suite
runs the same harness for three short rounds (``tests/reliability/test_fault_run.py``).
The soak also submits scripts that leave a background child behind (``--no-children`` to
leave them out). The last line is the summary; the exit status is 1 if any check failed.
See bench/README.md, "Fault soak".
"""

from __future__ import annotations

import argparse
import asyncio
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

from reliability.faultkit import FaultRun, Plan  # noqa: E402  (after the path is set)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--rounds", type=int, default=20, help="kill -9 rounds (default 20)")
    p.add_argument(
        "--duration", type=float, default=None, help="start no round after this many seconds"
    )
    p.add_argument("--seed", type=int, default=None, help="random seed (default: the time)")
    p.add_argument(
        "--kill-after",
        type=float,
        nargs=2,
        default=(1.0, 6.0),
        metavar=("MIN", "MAX"),
        help="seconds between a restart and the next kill (uniform; default 1 6)",
    )
    p.add_argument("--submitters", type=int, default=3, help="concurrent submitters (default 3)")
    p.add_argument("--submit-pause", type=float, default=0.2, help="mean pause between submits, s")
    p.add_argument("--tails", type=int, default=12, help="SSE tails open at once (default 12)")
    p.add_argument("--max-concurrent", type=int, default=3, help="local runner slots (default 3)")
    p.add_argument("--no-github", action="store_true", help="local tasks only")
    p.add_argument(
        "--no-children", action="store_true", help="no scripts that leave a background child"
    )
    p.add_argument("--json", type=Path, default=None, help="write the report as JSON here")
    p.add_argument(
        "--keep",
        action="store_true",
        help="keep the work folder (database, gateway log); kept anyway when a check fails",
    )
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    plan = Plan(
        rounds=args.rounds,
        duration_s=args.duration,
        kill_after_s=(args.kill_after[0], args.kill_after[1]),
        submitters=args.submitters,
        submit_pause_s=args.submit_pause,
        max_tails=args.tails,
        max_concurrent=args.max_concurrent,
        github=not args.no_github,
        children=not args.no_children,
        kill_when_queued=False,  # any moment: many rounds find queued work anyway
        quiesce_s=60.0,
        seed=args.seed if args.seed is not None else int(time.time()),
    )
    workdir = Path(tempfile.mkdtemp(prefix="egw-soak-"))
    print(f"soak: seed {plan.seed}, work folder {workdir}", flush=True)
    report = asyncio.run(FaultRun(workdir, plan, say=lambda s: print(s, flush=True)).run())
    for failure in report.failures:
        print(failure)
    if args.keep or report.failures:
        print(f"kept: {workdir} (egw.db, gateway.log)")
    else:
        shutil.rmtree(workdir, ignore_errors=True)
    if args.json is not None:
        args.json.write_text(json.dumps(report.to_json(), indent=2))
    print(report.summary())
    return 1 if report.failures else 0


if __name__ == "__main__":
    sys.exit(main())
