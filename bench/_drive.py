"""Shared by the request parts (webhooks, submits, peer): one load run of `_reqload.py`.

`drive` starts the generator pinned to the load CPU, waits for it, and returns its
figures with the CPU the server used meanwhile (a server far below one core was not
the bottleneck: the generator or something else on the machine was).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
CLK_TCK = os.sysconf("SC_CLK_TCK")


def head(method: str, path: str, headers: dict[str, str]) -> str:
    """A request's line and headers (no blank line: the generator adds Content-Length)."""
    lines = [
        f"{method} {path} HTTP/1.1",
        "Host: 127.0.0.1",
        *(f"{k}: {v}" for k, v in headers.items()),
    ]
    return "\r\n".join(lines)


def cpu_ticks(pid: int) -> int:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12])


def drive(
    workdir: Path,
    port: int,
    templates: list[dict[str, str]],
    *,
    conns: int,
    seconds: float,
    cpu: int | None,
    server_pid: int,
    max_requests: int = 0,
) -> dict[str, Any]:
    spec = workdir / f"load-{port}-{time.monotonic_ns()}.json"
    spec.write_text(json.dumps(templates))
    cmd = [sys.executable, str(HERE / "_reqload.py"), "--port", str(port), "--spec", str(spec)]
    cmd += ["--connections", str(conns), "--duration", str(seconds)]
    cmd += ["--max-requests", str(max_requests)]
    if cpu is not None:
        cmd += ["--cpu", str(cpu)]
    ticks0, t0 = cpu_ticks(server_pid), time.monotonic()
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=seconds + 90, check=False)
    wall = time.monotonic() - t0
    if out.returncode != 0:
        raise RuntimeError(f"load generator failed: {out.stderr[-2000:]}")
    res: dict[str, Any] = json.loads(out.stdout.strip().splitlines()[-1])
    ok = sum(n for k, n in res["answers"].items() if k.split()[-1].startswith("2"))
    res["ok"] = ok
    res["non2xx"] = res["requests"] - ok
    res["rps"] = round(res["requests"] / res["seconds"], 1)
    res["ok_rps"] = round(ok / res["seconds"], 1)
    res["server_cpu"] = round((cpu_ticks(server_pid) - ticks0) / CLK_TCK / wall, 2)
    res["loadgen_cpu"] = round(res.pop("cpu_s") / wall, 2)
    # answers per second of server CPU: steadier than answers/s on a shared machine
    res["per_cpu_s"] = round(ok / res["seconds"] / res["server_cpu"]) if res["server_cpu"] else None
    return res


def row(label: str, r: dict[str, Any]) -> str:
    """One load run as a report line."""
    line = (
        f"  {label:<16} {r['ok_rps']:>8,.0f}/s  p50 {r['p50_ms']} ms  p99 {r['p99_ms']} ms"
        f"  non-2xx {r['non2xx']}  server cpu {r['server_cpu']} ({r['per_cpu_s'] or 0:,}/cpu-s)"
        f"  load cpu {r['loadgen_cpu']}"
    )
    if r["errors"]:
        line += f"\n  {'':<16} first error: {r['errors'][0][:120]}"
    return line


def ratio(a: float, b: float) -> float:
    return round(a / b, 3) if b else float("nan")


def goal(label: str, value: str, target: str, met: bool | None) -> str:
    mark = "n/a" if met is None else ("MET" if met else "MISSED")
    return f"  {label:<52} {value:>14}   goal {target:<12} {mark}"


class Proc:
    """A server process that writes ``"<address> <pid>"`` to its ready file."""

    def __init__(self, name: str, cmd: list[str], workdir: Path, cpu: int | None) -> None:
        self.ready = workdir / f"{name}.ready"
        self.ready.unlink(missing_ok=True)
        self.log = workdir / f"{name}.log"
        if cpu is not None:
            cmd = [*cmd, "--cpu", str(cpu)]
        self._out = open(self.log, "wb")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(
            cmd, stdout=self._out, stderr=subprocess.STDOUT, cwd=str(HERE.parent)
        )
        deadline = time.monotonic() + 60
        while not self.ready.exists():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"{name} did not start:\n{self.tail()}")
            time.sleep(0.02)
        address, pid = self.ready.read_text().split()
        self.address, self.pid = address, int(pid)
        self.port = int(address) if address.isdigit() else 0

    def tail(self, n: int = 2000) -> str:
        try:
            return self.log.read_bytes()[-n:].decode("utf-8", "replace")
        except OSError:
            return ""

    def stop(self) -> None:
        """SIGTERM, then SIGKILL; only this process, by its pid."""
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self._out.close()


def gateway(name: str, config: dict[str, Any], workdir: Path, cpu: int | None) -> Proc:
    """egw as `bench/_servers.py gateway` runs it (create_app, logging as egw serve)."""
    cfg = workdir / f"{name}.json"
    cfg.write_text(json.dumps(config))
    cmd = [sys.executable, str(HERE / "_servers.py"), "gateway", "--config", str(cfg)]
    return Proc(name, [*cmd, "--ready", str(workdir / f"{name}.ready")], workdir, cpu)


def ceiling(
    name: str, kind: str, workdir: Path, cpu: int | None, secret: str = "", db: Path | None = None
) -> Proc:
    cmd = [sys.executable, str(HERE / "_ceilings.py"), kind, "--secret", secret]
    if db is not None:
        cmd += ["--db", str(db)]
    return Proc(name, [*cmd, "--ready", str(workdir / f"{name}.ready")], workdir, cpu)


def simulator(kind: str, workdir: Path, cpu: int | None) -> Proc:
    cmd = [sys.executable, str(HERE / "_sims.py"), kind]
    return Proc(f"sim-{kind}", [*cmd, "--ready", str(workdir / f"sim-{kind}.ready")], workdir, cpu)


def call(base: str, method: str, path: str, body: Any = None, token: str = "") -> tuple[int, Any]:
    """One JSON request (setup and checks, not measured)."""
    import urllib.error
    import urllib.request

    data = None if body is None else json.dumps(body).encode()
    headers = {"Content-Type": "application/json"}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    req = urllib.request.Request(base + path, data=data, method=method, headers=headers)
    try:
        with urllib.request.urlopen(req, timeout=30) as resp:
            raw, status = resp.read(), resp.status
    except urllib.error.HTTPError as exc:
        raw, status = exc.read(), exc.code
    try:
        return status, json.loads(raw)
    except ValueError:
        return status, raw.decode("utf-8", "replace")


def rounds(runs: dict[str, Callable[[], dict[str, Any]]], n: int) -> dict[str, dict[str, Any]]:
    """Each load run ``n`` times, the order rotated each round (so a slow spell of the
    machine falls on every side); per run, the figures of its median round by answers/s,
    with every round's answers/s in ``rounds_rps`` and the answers summed over rounds."""
    names = list(runs)
    got: dict[str, list[dict[str, Any]]] = {name: [] for name in names}
    for i in range(n):
        for name in names[i % len(names) :] + names[: i % len(names)]:
            got[name].append(runs[name]())
    out = {}
    for name, results in got.items():
        ranked = sorted(results, key=lambda r: r["ok_rps"])
        median = dict(ranked[len(ranked) // 2])
        median["rounds_rps"] = [r["ok_rps"] for r in results]
        answers: dict[str, int] = {}
        for r in results:
            for key, count in r["answers"].items():
                answers[key] = answers.get(key, 0) + count
        median["answers_all_rounds"] = answers
        median["non2xx"] = sum(r["non2xx"] for r in results)
        out[name] = median
    return out
