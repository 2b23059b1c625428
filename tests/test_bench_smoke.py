"""The benchmark harness still runs (its figures are not judged here: no timed tests).

One run of `bench/run.py --quick` per group of parts, so that each stays well inside the
test timeout and a broken part names itself."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]


def quick(tmp_path: Path, *parts: str) -> dict[str, Any]:
    out = tmp_path / "report.json"
    only = [arg for part in parts for arg in ("--only", part)]
    run = subprocess.run(
        [
            sys.executable,
            str(ROOT / "bench" / "run.py"),
            "--quick",
            "--loadgen",
            "python",
            "--json",
            str(out),
            *only,
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=110,
    )
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    assert "Goals" in run.stdout
    report: dict[str, Any] = json.loads(out.read_text())
    for part in parts:
        assert part in report, part
        assert "error" not in report[part], report[part]
    return report


def test_the_first_parts(tmp_path: Path) -> None:
    quick(tmp_path, "http", "writer", "sse")


def test_webhooks_submits_and_the_peer(tmp_path: Path) -> None:
    report = quick(tmp_path, "webhooks", "submits", "peer")
    # not a timing: every delivery the gateway acknowledged is in its event log, once
    stored = report["webhooks"]["stored"]
    assert stored["acked_own"] > 0 and stored["lost"] == stored["doubled"] == 0


def test_the_nomad_stream_restart_and_nomad_logs(tmp_path: Path) -> None:
    report = quick(tmp_path, "nomad-stream", "restart", "nomad-logs")
    stream = report["nomad-stream"]
    assert stream["changes_seen"] == stream["changes_expected"] > 0
    assert report["restart"]["big"]["attached_s"] > 0
    logs = report["nomad-logs"]
    assert logs["with_output"] == logs["tasks"]


def test_tasks_in_flight(tmp_path: Path) -> None:
    report = quick(tmp_path, "inflight")
    for name in ("nomad", "github_actions", "cloud_run", "local"):
        row = report["inflight"]["providers"][name]
        assert row["running"] == row["tasks"] > 0, (name, row)


def test_the_replicas_part(tmp_path: Path) -> None:
    report = quick(tmp_path, "replicas")["replicas"]
    if "skipped" not in report:  # (no PostgreSQL server: the part says so)
        assert report["delay"]["appends"] == 50 and report["failover"]["max_s"] > 0
