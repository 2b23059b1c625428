"""The fault run kept in the suite: `egw serve` killed with SIGKILL at random points, three
times, during concurrent submits (with Idempotency-Key), cancels, SSE tails and GitHub
webhooks; after each restart and at the end nothing acknowledged is lost or doubled, nothing
is left non-terminal without a process or a run to end it, a task that never started is run
rather than failed, and every tail resumes byte-exact. What is checked is described in
`faultkit`; the long version is ``bench/soak.py``.

``EGW_FAULT_SEED`` picks another seed (the kill moments vary from run to run anyway).
"""

from __future__ import annotations

import os
from pathlib import Path

from reliability.faultkit import FaultRun, Plan


async def test_kill_9_during_mixed_traffic_loses_nothing(tmp_path: Path) -> None:
    plan = Plan(rounds=3, seed=int(os.environ.get("EGW_FAULT_SEED", "11")))
    report = await FaultRun(tmp_path, plan).run()
    print(report.summary())
    assert report.kills == 3 and report.submits_acked > 0 and report.deliveries_acked > 0
    # the paths under test were taken: tails resumed after a kill, deliveries were acknowledged
    assert report.tails > 0 and report.tail_reconnects > 0
    assert not report.failures, "\n".join([report.summary(), *report.failures])
