"""Fault injection against a real `egw serve`: SIGKILL at random points during mixed traffic.

One `FaultRun` starts the GitHub simulator in this process and `egw serve` as a child process
on a temporary SQLite file, with the local runner (a small ``max_concurrent``, so that tasks
queue) and the GitHub Actions provider pointed at the simulator, which signs and delivers its
webhooks to the gateway. While clients run concurrently:

* submitters POST tasks with an ``Idempotency-Key`` (short local scripts, longer ones that
  get cancelled, GitHub workflow runs, and optionally scripts that leave a background child);
  a submit whose answer never came is retried with the same key and body until acknowledged;
* a canceller cancels some running tasks (sometimes with ``force``);
* tailers follow the logs of some tasks over SSE, resuming with ``Last-Event-ID`` after each
  drop, and check every frame's offset against the previous one (no gap, no duplicate);
* the simulator delivers ``workflow_run``/``workflow_job`` webhooks; some acknowledged ones
  are sent again (duplicates), and those the dead gateway missed are redelivered after the
  restart, as an operator would from GitHub's settings page;

the gateway is killed with SIGKILL at a random moment, restarted on the same database, and the
checks below run; then again, for the planned rounds. At the end traffic stops, the unfinished
work is given time to end, and everything is checked once more.

The checks (each failure is a line in `Report.failures`, prefixed with the check's name):

* ``identity``: every acknowledged task exists exactly once (one task per key, the id the key
  was acknowledged with), and a replay of its key with the same body answers the same id with
  ``Idempotent-Replayed: true``; at the end, no task exists that no acknowledgement accounts for;
* ``liveness``: no task stays non-terminal without something that will end it: a local task
  ``running``/``cancelling`` has a live process (one with its ``EGW_TASK_ID``), the local
  tasks shown ``queued`` are held by the runner's queue (``/readyz``), a GitHub task has a run
  upstream that has not completed; at the end every task is terminal;
* ``restart``: a task that never started is not ended by a restart (``failed: gateway
  restarted`` without ``started_at`` and without a process recorded): it must run after
  the restart (issue point 6). One whose process was recorded but not yet its
  ``running`` (the kill fell between the two writes) did start, and is not run twice;
* ``processes``: no process of a task outlives the task (cancel, timeout and exit stop the
  whole group, and a restart stops what the dead gateway left; issue point 5). With
  ``Plan.children`` some scripts leave a ``sleep 120`` in the background and exit, some with
  a ``timeout_s``: the task must still end, and take its child with it;
* ``tail``: every SSE tail, resumed across restarts, ends, and equals byte for byte the task's
  stored log (``GET /v1/tasks/{id}/logs`` as text), with no gap and no duplicate on the way;
* ``webhook``: every delivery the gateway acknowledged (200) is recorded exactly once (the
  ``events`` rows with its ``X-GitHub-Delivery``, read from the database read-only);
* ``http``: no answer other than the expected ones (no 500, no unexpected 4xx).

Used by ``tests/reliability/test_fault_run.py`` (a few short rounds) and ``bench/soak.py``
(many rounds, as long as asked).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import random
import signal
import sqlite3
import subprocess
import sys
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
import yaml
from support import TERMINAL, WRITER, config_dict, free_port

from egw.testing.github import GitHubSimulator

SECRET = "faultkit-webhook-secret"
GH_TOKEN = "ghp_faultkit"
#: every task process carries this variable (its value names the run): how its processes,
#: and their children, are found in /proc
MARK = "EGW_FAULTKIT"
NON_TERMINAL = ("pending", "queued", "running", "cancelling")


@dataclass
class Plan:
    """What one run does; the defaults are the short run kept in the test suite."""

    rounds: int = 3
    #: stop starting rounds after this long (the soak's ``--duration``); None: rounds only
    duration_s: float | None = None
    #: the kill comes this long (uniform) after the previous restart
    kill_after_s: tuple[float, float] = (1.5, 3.0)
    #: after that, wait (up to 3 s) for a moment when the local runner holds queued tasks,
    #: so that each kill finds work that never started (a short run must not miss it)
    kill_when_queued: bool = True
    #: the gateway stays down this long before the restart
    down_s: tuple[float, float] = (0.0, 0.4)
    submitters: int = 2
    #: pause between two submits of one submitter (uniform, 0 to twice this)
    submit_pause_s: float = 0.25
    #: at most this many SSE tails open at once
    max_tails: int = 6
    max_concurrent: int = 2
    github: bool = True
    #: also submit scripts that leave a background child behind (issue point 5)
    children: bool = False
    #: how long a restart check waits for the state to settle
    settle_s: float = 10.0
    #: how long the end waits for every task to end once traffic stopped
    quiesce_s: float = 40.0
    #: at most this many keys replayed per restart check (all of them at the end)
    replay_sample: int = 200
    seed: int = 11


@dataclass
class Submit:
    key: str
    kind: str
    body: dict[str, Any]
    task_id: str | None = None
    tries: int = 0


@dataclass
class Tail:
    task_id: str
    parts: list[str] = field(default_factory=list)
    last_id: int | None = None
    ended: bool = False
    reconnects: int = 0
    problems: list[str] = field(default_factory=list)

    @property
    def text(self) -> str:
        return "".join(self.parts)


@dataclass
class Report:
    seed: int
    workdir: str
    rounds: int = 0
    kills: int = 0
    submits_acked: int = 0
    submits_retried: int = 0
    replays: int = 0
    restart_checks: int = 0
    tasks_checked: int = 0
    tails: int = 0
    bytes_tailed: int = 0
    tail_reconnects: int = 0
    cancels_acked: int = 0
    deliveries: int = 0
    deliveries_acked: int = 0
    redeliveries: int = 0
    elapsed_s: float = 0.0
    failures: list[str] = field(default_factory=list)

    def summary(self) -> str:
        return (
            f"fault run: rounds={self.rounds} kills={self.kills} "
            f"submits_acked={self.submits_acked} (retried {self.submits_retried}, "
            f"replays checked {self.replays}) tasks_checked={self.tasks_checked} "
            f"tails={self.tails} bytes_tailed={self.bytes_tailed} "
            f"(reconnects {self.tail_reconnects}) cancels_acked={self.cancels_acked} "
            f"deliveries={self.deliveries} (acked {self.deliveries_acked}, "
            f"redelivered {self.redeliveries}) failures={len(self.failures)} "
            f"seed={self.seed} elapsed={self.elapsed_s:.1f}s"
        )

    def to_json(self) -> dict[str, Any]:
        return dict(self.__dict__)


class Gateway:
    """`egw serve` as a child process on a fixed loopback port, restartable on one database."""

    def __init__(self, workdir: Path, overrides: dict[str, Any]) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        cfg = config_dict(workdir, overrides)
        self.db = Path(cfg["storage"]["path"])
        #: PostgreSQL's URL when the suite runs there (``EGW_TEST_STORE``), else None
        self.db_url: str | None = cfg["storage"].get("url")
        self.config = workdir / "config.yaml"
        self.config.write_text(yaml.safe_dump(cfg))
        self.log = workdir / "gateway.log"
        self.proc: subprocess.Popen[bytes] | None = None

    async def start(self, session: aiohttp.ClientSession) -> None:
        cmd = [sys.executable, "-m", "egw", "serve", "--config", str(self.config)]
        with self.log.open("ab") as out:
            self.proc = subprocess.Popen(
                [*cmd, "--port", str(self.port)], stdout=out, stderr=subprocess.STDOUT
            )
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"gateway exited at start: {self.tail()}")
            with contextlib.suppress(aiohttp.ClientError, TimeoutError):
                async with session.get(f"{self.url}/healthz", timeout=_quick(1)) as resp:
                    if resp.status == 200:
                        return
            await asyncio.sleep(0.05)
        raise AssertionError(f"gateway did not start: {self.tail()}")

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
        if self.proc is not None:
            self.proc.wait(10)

    async def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            await asyncio.to_thread(self.proc.wait, 20)
        except subprocess.TimeoutExpired:
            self.kill()

    def tail(self, size: int = 3000) -> str:
        return self.log.read_text(errors="replace")[-size:]


def _quick(total: float) -> aiohttp.ClientTimeout:
    return aiohttp.ClientTimeout(total=total, sock_connect=2)


def task_processes(mark: str) -> dict[str, list[int]]:
    """Live processes (not zombies) started for this run, by the task id in their
    environment: a task's process and every child it left, wherever it went."""
    found: dict[str, list[int]] = {}
    needle = f"{MARK}={mark}".encode()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            environ = (entry / "environ").read_bytes()
            stat = (entry / "stat").read_text()
        except OSError:
            continue  # gone, or not ours
        if needle not in environ.split(b"\0") or stat.rsplit(")", 1)[1].split()[0] == "Z":
            continue
        for item in environ.split(b"\0"):
            if item.startswith(b"EGW_TASK_ID="):
                found.setdefault(item.split(b"=", 1)[1].decode(), []).append(int(entry.name))
    return found


class FaultRun:
    def __init__(self, workdir: Path, plan: Plan, say: Callable[[str], None] = print) -> None:
        self.workdir = workdir
        self.plan = plan
        self.say = say
        self.rng = random.Random(plan.seed)
        self.mark = f"fk{plan.seed}x{os.getpid()}"
        self.report = Report(seed=plan.seed, workdir=str(workdir))
        self.submits: dict[str, Submit] = {}
        self.unacked: deque[Submit] = deque()
        self.tails: dict[str, Tail] = {}
        self.cancels: set[str] = set()
        self.redelivered: set[str] = set()
        self.up = asyncio.Event()
        self.traffic = True
        self.round = 0
        self._workers: list[asyncio.Task[None]] = []
        self._tailers: list[asyncio.Task[None]] = []
        self._count = 0
        self._failed: set[tuple[str, str]] = set()

    # --- the run -------------------------------------------------------------------------------

    async def run(self) -> Report:
        started = time.monotonic()
        plan = self.plan
        sim = GitHubSimulator(
            webhook_secret=SECRET, token=GH_TOKEN, time_scale=0.5, run_creation_delay_s=0.5
        )
        await sim.start()
        self.sim = sim
        providers: dict[str, Any] = {
            "local": {"max_concurrent": plan.max_concurrent, "kill_grace_s": 1}
        }
        if plan.github:
            providers["github_actions"] = {
                "enabled": True,
                "api_url": sim.base_url,
                "token": GH_TOKEN,
                "webhook_secret": SECRET,
                "owner": "octo-org",
                "repo": "octo-repo",
                "poll_min_s": 0.5,
                "poll_max_s": 2,
            }
        self.gw = Gateway(self.workdir, {"providers": providers})
        sim.webhook_url = f"{self.gw.url}/v1/webhooks/github"
        connector = aiohttp.TCPConnector(limit=64)
        self.http = aiohttp.ClientSession(
            headers=WRITER, connector=connector, timeout=aiohttp.ClientTimeout(total=30)
        )
        try:
            await self.gw.start(self.http)
            self.up.set()
            self._workers = [
                *(asyncio.create_task(self._submitter()) for _ in range(plan.submitters)),
                asyncio.create_task(self._canceller()),
                asyncio.create_task(self._duplicates()),
            ]
            for n in range(plan.rounds):
                if plan.duration_s is not None and time.monotonic() - started > plan.duration_s:
                    break
                self.round = n + 1
                await asyncio.sleep(self.rng.uniform(*plan.kill_after_s))
                if plan.kill_when_queued:
                    await self._until_queued(3.0)
                self._raise_worker_errors()
                await self._kill_and_restart()
                await self._after_restart()
                self.report.rounds += 1
                self.say(f"round {self.round}: {self._progress()}")
            self.round = 0
            self.traffic = False
            await asyncio.gather(*self._workers)
            await self._end()
        finally:
            self.traffic = False
            for task in [*self._workers, *self._tailers]:
                task.cancel()
            await asyncio.gather(*self._workers, *self._tailers, return_exceptions=True)
            await self.gw.stop()
            await self.http.close()
            await sim.close()
            self._kill_leftovers()
            self.report.elapsed_s = time.monotonic() - started
        return self.report

    def _raise_worker_errors(self) -> None:
        for task in [*self._workers, *self._tailers]:
            error = task.exception() if task.done() and not task.cancelled() else None
            if error is not None:
                raise error  # a bug in the harness itself, not a finding

    async def _until_queued(self, limit_s: float) -> None:
        deadline = time.monotonic() + limit_s
        while time.monotonic() < deadline:
            async with self.http.get(f"{self.gw.url}/readyz") as resp:
                ready = await resp.json()
            if int(ready.get("providers", {}).get("local", {}).get("queued", 0)) > 0:
                return
            await asyncio.sleep(0.05)

    async def _kill_and_restart(self) -> None:
        self.up.clear()
        self.gw.kill()
        self.report.kills += 1
        await asyncio.sleep(self.rng.uniform(*self.plan.down_s))
        await self.gw.start(self.http)
        self.up.set()

    async def _after_restart(self) -> None:
        self.report.restart_checks += 1
        await self._retry_unacked()
        await self._redeliver_missed()
        tasks = await self._check_identity(final=False)
        self.report.tasks_checked += len(tasks)
        await self._check_liveness()
        self._check_restarted(tasks)
        await self._check_deliveries()

    async def _end(self) -> None:
        await self._retry_unacked()
        await self._redeliver_missed()
        await self._quiesce()
        for tail in self._tailers:
            tail.cancel()
        await asyncio.gather(*self._tailers, return_exceptions=True)
        tasks = await self._check_identity(final=True)
        self.report.tasks_checked += len(tasks)
        self._check_restarted(tasks)
        await self._check_processes(tasks)
        await self._check_tails()
        await self.sim.deliveries_idle()
        await self._check_deliveries()
        report = self.report
        report.submits_acked = sum(1 for s in self.submits.values() if s.task_id)
        report.tails = len(self.tails)
        report.bytes_tailed = sum(len(t.text.encode()) for t in self.tails.values())
        report.tail_reconnects = sum(t.reconnects for t in self.tails.values())
        report.deliveries = len(self.sim.deliveries)
        report.deliveries_acked = sum(1 for d in self.sim.deliveries if 200 in d.answers)

    def _progress(self) -> str:
        acked = sum(1 for s in self.submits.values() if s.task_id)
        return (
            f"{acked} submits acknowledged, {len(self.unacked)} to retry, "
            f"{len(self.tails)} tails, {len(self.sim.deliveries)} deliveries, "
            f"{len(self.report.failures)} failures"
        )

    def fail(self, check: str, message: str, *, once: str | None = None) -> None:
        """Record a failed check; with ``once`` (a task id), only its first failure."""
        if once is not None:
            if (check, once) in self._failed:
                return
            self._failed.add((check, once))
        where = f"round {self.round}" if self.round else "end"
        self.report.failures.append(f"[{check}] ({where}) {message}")

    # --- clients ---------------------------------------------------------------------------------

    def _new_submit(self) -> Submit:
        self._count += 1
        key = f"{self.mark}-{self._count}"
        kinds = ["short", "short", "short", "long"]
        if self.plan.github:
            kinds += ["github", "github"]
        if self.plan.children:
            kinds += ["children"]
        kind = self.rng.choice(kinds)
        labels = {"faultkit": self.mark}
        env = {MARK: self.mark}
        if kind == "github":
            task: dict[str, Any] = {
                "workflow_id": "deploy.yml",
                "ref": "main",
                "inputs": {"env": key},
            }
            body = {"provider": "github_actions", "task": task, "name": key, "labels": labels}
            return Submit(key, kind, body)
        if kind == "short":
            script = (
                'i=0; while [ $i -lt "$1" ]; do echo "$2 out $i"; echo "$2 err $i" >&2;'
                " i=$((i+1)); sleep 0.01; done"
            )
            args = [str(self.rng.randint(3, 15)), key]
        elif kind == "long":  # a cancel target, or it ends by itself
            script = 'echo "$1 started"; sleep "$2"; echo "$1 done"'
            args = [key, f"{self.rng.uniform(1.0, 2.5):.2f}"]
        else:  # children: the shell exits at once, its background child would go on
            script = 'sleep 120 & echo "$1 started"; sleep 0.2; echo "$1 parent done"'
            args = [key]
        task = {"command": "sh", "args": ["-c", script, "sh", *args], "env": env}
        body = {"provider": "local", "task": task, "name": key, "labels": labels}
        if kind != "short" and self.rng.random() < 0.3:
            body["timeout_s"] = 1.5  # some end by their timeout
        return Submit(key, kind, body)

    async def _submitter(self) -> None:
        while self.traffic:
            await self.up.wait()
            sub = self.unacked.popleft() if self.unacked else self._new_submit()
            self.submits.setdefault(sub.key, sub)
            if not await self._post_submit(sub):
                self.unacked.append(sub)
            await asyncio.sleep(self.rng.uniform(0, 2 * self.plan.submit_pause_s))

    async def _post_submit(self, sub: Submit) -> bool:
        """One try; True once the gateway acknowledged the key (202)."""
        sub.tries += 1
        if sub.tries > 1:
            self.report.submits_retried += 1
        try:
            async with self.http.post(
                f"{self.gw.url}/v1/tasks", json=sub.body, headers={"Idempotency-Key": sub.key}
            ) as resp:
                raw = await resp.read()
                if resp.status == 503:
                    return False  # refused for now: the same key again later
                if resp.status != 202:
                    self.fail("http", f"POST /v1/tasks ({sub.key}): {resp.status} {raw[:300]!r}")
                    return True  # not retried: the failure is recorded
                task_id = json.loads(raw)["id"]
        except (aiohttp.ClientError, TimeoutError):
            return False  # no answer: not acknowledged
        if sub.task_id is not None and sub.task_id != task_id:
            self.fail("identity", f"key {sub.key} answered {sub.task_id}, then {task_id}")
        first = sub.task_id is None
        sub.task_id = task_id
        following = sum(1 for t in self.tails.values() if not t.ended)
        if first and following < self.plan.max_tails and self.rng.random() < 0.5:
            self._follow(task_id)
        return True

    async def _retry_unacked(self) -> None:
        """Retry every submit not acknowledged yet, until each is (the gateway is up)."""
        deadline = time.monotonic() + 30
        while self.unacked:
            sub = self.unacked.popleft()
            if not await self._post_submit(sub):
                self.unacked.append(sub)
                if time.monotonic() > deadline:
                    self.fail("identity", f"submit {sub.key} never acknowledged after restart")
                    return
                await asyncio.sleep(0.2)

    async def _canceller(self) -> None:
        while self.traffic:
            await asyncio.sleep(self.rng.uniform(0.2, 0.6))
            await self.up.wait()
            targets = [
                s.task_id
                for s in self.submits.values()
                if s.task_id and s.task_id not in self.cancels and s.kind != "short"
            ]
            if not targets:
                continue
            task_id = self.rng.choice(targets[-10:])  # recent ones: likely running
            force = "?force=true" if self.rng.random() < 0.2 else ""
            try:
                async with self.http.post(
                    f"{self.gw.url}/v1/tasks/{task_id}/cancel{force}"
                ) as resp:
                    raw = await resp.read()
                    if resp.status in (200, 202):
                        self.cancels.add(task_id)
                        self.report.cancels_acked += 1
                    elif resp.status != 409:  # 409: it had already ended
                        self.fail("http", f"cancel {task_id}: {resp.status} {raw[:300]!r}")
            except (aiohttp.ClientError, TimeoutError):
                pass

    async def _duplicates(self) -> None:
        """Send an acknowledged delivery again now and then: it must not be recorded twice."""
        while self.traffic:
            await asyncio.sleep(self.rng.uniform(0.3, 0.8))
            acked = [d for d in self.sim.deliveries if 200 in d.answers]
            if acked:
                self.sim.redeliver(self.rng.choice(acked).guid)
                self.report.redeliveries += 1

    async def _redeliver_missed(self) -> None:
        """Redeliver what the dead gateway never answered, as an operator would."""
        for delivery in list(self.sim.deliveries):
            if delivery.answers and delivery.answers[-1] is None:
                self.sim.redeliver(delivery.guid)
                self.report.redeliveries += 1

    def _follow(self, task_id: str) -> None:
        tail = self.tails[task_id] = Tail(task_id)
        self._tailers.append(asyncio.create_task(self._tail(tail)))

    async def _tail(self, tail: Tail) -> None:
        url = f"{self.gw.url}/v1/tasks/{tail.task_id}/logs"
        while not tail.ended:
            await self.up.wait()
            headers = {"Accept": "text/event-stream"}
            if tail.last_id is not None:
                headers["Last-Event-ID"] = str(tail.last_id)
            try:
                timeout = aiohttp.ClientTimeout(total=None, sock_connect=2, sock_read=60)
                async with self.http.get(url, headers=headers, timeout=timeout) as resp:
                    if resp.status != 200:
                        self.fail("http", f"tail {tail.task_id}: {resp.status}")
                        return
                    await self._read_frames(resp, tail)
            except (aiohttp.ClientError, TimeoutError):
                pass
            if not tail.ended:
                tail.reconnects += 1
                await asyncio.sleep(0.05)

    async def _read_frames(self, resp: aiohttp.ClientResponse, tail: Tail) -> None:
        frame: dict[str, str] = {}
        async for raw in resp.content:
            line = raw.decode().rstrip("\r\n")
            if line:
                if not line.startswith(":"):
                    name, _, value = line.partition(":")
                    frame[name] = value.removeprefix(" ")
                continue
            event = frame.get("event")
            if event == "log":
                self._take_log(tail, int(frame["id"]), json.loads(frame["data"])["text"])
            elif event == "end":
                tail.ended = True
                return
            frame = {}

    def _take_log(self, tail: Tail, end: int, text: str) -> None:
        start = end - len(text.encode())
        expected = tail.last_id or 0
        if start != expected:
            kind = "gap" if start > expected else "duplicate"
            tail.problems.append(f"{kind}: frame [{start}, {end}) after offset {expected}")
        tail.parts.append(text)
        tail.last_id = end

    # --- checks ----------------------------------------------------------------------------------

    async def _list(self) -> list[dict[str, Any]]:
        tasks: list[dict[str, Any]] = []
        cursor = ""
        while True:
            url = f"{self.gw.url}/v1/tasks?limit=500&label=faultkit={self.mark}{cursor}"
            async with self.http.get(url) as resp:
                assert resp.status == 200, await resp.text()
                page = await resp.json()
            tasks.extend(page["tasks"])
            if not page["next_cursor"]:
                return tasks
            cursor = f"&cursor={page['next_cursor']}"

    async def _check_identity(self, *, final: bool) -> list[dict[str, Any]]:
        # what was acknowledged before the listing started: a submit answered while the
        # list is being read may be committed after the list's snapshot (seen: a 202 at
        # .595 s for a list read from .577 s), and is checked the next time instead
        acked = [s for s in self.submits.values() if s.task_id]
        tasks = await self._list()
        by_id: dict[str, int] = {}
        by_name: dict[str, list[str]] = {}
        for t in tasks:
            by_id[t["id"]] = by_id.get(t["id"], 0) + 1
            by_name.setdefault(t["name"], []).append(t["id"])
        for task_id, n in by_id.items():
            if n > 1:
                self.fail("identity", f"task {task_id} listed {n} times")
        for name, ids in by_name.items():
            if len(ids) > 1:
                self.fail("identity", f"key {name} has {len(ids)} tasks: {ids}")
            sub = self.submits.get(name)
            if sub is None:
                self.fail("identity", f"task {ids[0]} has a name no submit used: {name}")
            elif sub.task_id is not None and sub.task_id not in ids:
                self.fail("identity", f"key {name} was acknowledged as {sub.task_id}, has {ids}")
            elif sub.task_id is None and final:
                self.fail("identity", f"task {ids} exists for key {name}, never acknowledged")
        for sub in acked:
            if sub.key not in by_name:
                self.fail("identity", f"acknowledged task {sub.task_id} ({sub.key}) is lost")
        sample = (
            acked if final else self.rng.sample(acked, min(len(acked), self.plan.replay_sample))
        )
        limit = asyncio.Semaphore(16)

        async def replay(sub: Submit) -> None:
            async with (
                limit,
                self.http.post(
                    f"{self.gw.url}/v1/tasks", json=sub.body, headers={"Idempotency-Key": sub.key}
                ) as resp,
            ):
                raw = await resp.read()
                replayed = resp.headers.get("Idempotent-Replayed")
            self.report.replays += 1
            if resp.status != 202:
                self.fail("identity", f"replay of {sub.key}: {resp.status} {raw[:300]!r}")
            elif json.loads(raw)["id"] != sub.task_id or replayed != "true":
                got = json.loads(raw)["id"]
                self.fail("identity", f"replay of {sub.key} gave {got} (replayed={replayed})")

        await asyncio.gather(*(replay(s) for s in sample))
        return tasks

    async def _stale(self, upstream_runs: dict[int, str]) -> dict[str, str]:
        """Tasks non-terminal with nothing to end them, each with why (one snapshot)."""
        async with self.http.get(f"{self.gw.url}/readyz") as resp:
            ready = await resp.json()
        tasks = await self._list()
        live = task_processes(self.mark)
        stale: dict[str, str] = {}
        queued = [t for t in tasks if t["provider"] == "local" and t["status"] == "queued"]
        held = int(ready.get("providers", {}).get("local", {}).get("queued", 0))
        if len(queued) > held:
            stale["local queue"] = (
                f"{len(queued)} local tasks queued, the runner holds {held}: "
                + ", ".join(f"{t['id']} ({t['name']})" for t in queued[:5])
            )
        for t in tasks:
            if t["status"] not in NON_TERMINAL:
                continue
            if t["provider"] == "local" and t["status"] in ("running", "cancelling"):
                if t["id"] not in live:
                    stale[t["id"]] = f"local {t['status']}, pid {t['upstream']['id']} is gone"
            elif t["provider"] == "github_actions" and t["status"] != "pending":
                run = upstream_runs.get(int(t["upstream"]["id"] or 0))
                if run is None or run == "completed":
                    stale[t["id"]] = f"github {t['status']}, run {t['upstream']['id']}: {run}"
        return stale

    def _runs(self) -> dict[int, str]:
        return {run_id: run.status for run_id, run in self.sim.runs.items()}

    async def _check_liveness(self) -> None:
        """After a restart: nothing stays non-terminal without a live process, a queue
        that holds it, or a run upstream. A task counts as stale only if it is stale in
        every snapshot of the settle window (reports take a moment to land)."""
        deadline = time.monotonic() + self.plan.settle_s
        always: dict[str, str] | None = None
        while True:
            stale = await self._stale(self._runs())
            always = stale if always is None else {k: stale[k] for k in always if k in stale}
            if not always or time.monotonic() > deadline:
                break
            await asyncio.sleep(0.3)
        for task_id, why in always.items():
            self.fail(
                "liveness",
                f"{task_id} stays non-terminal with nothing to end it: {why}",
                once=task_id,
            )

    def _check_restarted(self, tasks: list[dict[str, Any]]) -> None:
        for t in tasks:
            started = t["started_at"] is not None or t["upstream"].get("id") is not None
            if t["reason"] == "gateway restarted" and not started:
                self.fail(
                    "restart",
                    f"{t['id']} ({t['provider']}) never started and was failed by the restart"
                    " instead of run",
                    once=t["id"],
                )

    async def _quiesce(self) -> None:
        deadline = time.monotonic() + self.plan.quiesce_s
        while True:
            tasks = await self._list()
            open_tasks = [t for t in tasks if t["status"] not in TERMINAL]
            open_tails = [t for t in self.tails.values() if not t.ended]
            if (not open_tasks and not open_tails) or time.monotonic() > deadline:
                break
            await asyncio.sleep(0.3)
        live = task_processes(self.mark)
        runs = self._runs()
        for t in open_tasks:
            if t["provider"] == "local":
                what = f"its processes: {live.get(t['id']) or 'none'}"
            else:
                what = f"its run {t['upstream']['id']}: {runs.get(int(t['upstream']['id'] or 0))}"
            self.fail(
                "liveness",
                f"{t['id']} ({t['name']}) still {t['status']} ({t['reason']}) "
                f"{self.plan.quiesce_s:.0f} s after traffic stopped; {what}",
            )

    async def _check_processes(self, tasks: list[dict[str, Any]]) -> None:
        status = {t["id"]: t for t in tasks}
        deadline = time.monotonic() + 5
        while True:
            outliving = {
                task_id: pids
                for task_id, pids in task_processes(self.mark).items()
                if status.get(task_id, {}).get("status") in TERMINAL
            }
            if not outliving or time.monotonic() > deadline:
                break
            await asyncio.sleep(0.2)
        for task_id, pids in outliving.items():
            t = status[task_id]
            self.fail(
                "processes",
                f"{task_id} ({t['name']}) is {t['status']} ({t['reason']}) but its processes "
                f"{pids} still run",
            )

    async def _check_tails(self) -> None:
        for tail in self.tails.values():
            for problem in tail.problems:
                self.fail("tail", f"{tail.task_id}: {problem}")
            if not tail.ended:
                self.fail("tail", f"{tail.task_id}: the stream never ended")
                continue
            async with self.http.get(f"{self.gw.url}/v1/tasks/{tail.task_id}/logs") as resp:
                stored = (await resp.read()).decode()
                complete = resp.headers.get("X-Egw-Complete")
            if complete != "true":
                self.fail("tail", f"{tail.task_id}: the stream ended before the log was complete")
            if stored != tail.text:
                self.fail(
                    "tail",
                    f"{tail.task_id}: tailed {len(tail.text.encode())} bytes, stored "
                    f"{len(stored.encode())}; first difference at "
                    f"{_first_difference(tail.text, stored)}",
                )

    async def _check_deliveries(self) -> None:
        acked = [d.guid for d in self.sim.deliveries if 200 in d.answers]
        if not acked:
            return
        sql = (
            "SELECT delivery_id, COUNT(*) FROM events WHERE source = 'github'"
            " AND delivery_id IS NOT NULL GROUP BY delivery_id"
        )
        if self.gw.db_url is not None:
            conn = await asyncpg.connect(self.gw.db_url)
            try:
                rows = [tuple(r) for r in await conn.fetch(sql)]
            finally:
                await conn.close()
        else:
            uri = f"file:{self.gw.db}?mode=ro"
            with contextlib.closing(sqlite3.connect(uri, uri=True, timeout=10)) as db:
                rows = db.execute(sql).fetchall()
        recorded = dict(rows)
        for guid in acked:
            if recorded.get(guid, 0) != 1:
                self.fail(
                    "webhook", f"delivery {guid} acknowledged, recorded {recorded.get(guid, 0)}x"
                )

    def _kill_leftovers(self) -> None:
        """The processes of this run's tasks that are still alive (the gateway was killed
        during a failed check, or a task left a child): by their pid, nothing else."""
        for pids in task_processes(self.mark).values():
            for pid in pids:
                with contextlib.suppress(OSError):
                    os.kill(pid, signal.SIGKILL)


def _first_difference(a: str, b: str) -> str:
    for i, (x, y) in enumerate(zip(a, b, strict=False)):
        if x != y:
            return f"char {i}: {a[i : i + 40]!r} vs {b[i : i + 40]!r}"
    return f"char {min(len(a), len(b))} (one is a prefix of the other)"


async def task_of(http: aiohttp.ClientSession, gw: Gateway, task_id: str) -> dict[str, Any]:
    """A task as the gateway answers it now."""
    async with http.get(f"{gw.url}/v1/tasks/{task_id}") as resp:
        body: dict[str, Any] = await resp.json()
        return body


async def until(
    http: aiohttp.ClientSession, gw: Gateway, task_id: str, status: str, limit_s: float = 20
) -> dict[str, Any]:
    """The task once it has ``status`` (polled every 50 ms), or an AssertionError."""
    for _ in range(int(limit_s / 0.05)):
        task = await task_of(http, gw, task_id)
        if task["status"] == status:
            return task
        await asyncio.sleep(0.05)
    raise AssertionError(f"{task_id} not {status}: {task}")
