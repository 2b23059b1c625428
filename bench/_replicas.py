"""Bench part ``replicas``: PostgreSQL replicas on one database (ARCHITECTURE.md, "Replicas").

Three figures, in one run, on a fresh database of the server at ``$EGW_BENCH_PG_URL``:

* cross-replica delay: one replica appends an event (awaited), the other's hub hears it
  through the feed (NOTIFY, then the row read back); from the append's call to the other
  hub, p50 and p99 over N appends;
* failover: the holder of a lease stops renewing (as on ``kill -9``), the time until
  another replica holds it, with ``storage.lease_s`` = 1 s (the bound is ``lease_s``);
* submits/s: tasks created through the writer by 64 concurrent callers, on PostgreSQL and
  on SQLite in the same run (the store alone: the HTTP side is part ``submits``).

Skipped, saying so, where no server answers.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import _pg

LEASE_S = 1.0


def _draft() -> Any:
    from egw.core.model import Task, new_task_id, utcnow

    now = utcnow()
    return Task(id=new_task_id(), provider="local", spec={}, created_at=now, updated_at=now)


async def _delay(url: str, n: int) -> dict[str, float]:
    from egw.store import Store

    a, b = Store(url), Store(url)
    await a.open()
    await b.open()
    try:
        seen: dict[int, float] = {}
        b.fan_out(lambda c: seen.update((e.seq, time.perf_counter()) for e in c.events))
        task, _ = await a.writer.create_task(_draft())
        delays = []
        for i in range(n):
            start = time.perf_counter()
            await a.writer.progress(task.id, "tick", {"i": i}, source="bench")
            seq = await a.reader.max_seq()
            while seq not in seen:
                await asyncio.sleep(0.0002)
            delays.append(seen[seq] - start)
        delays.sort()
        return {
            "appends": n,
            "p50_ms": round(delays[len(delays) // 2] * 1000, 2),
            "p99_ms": round(delays[int(len(delays) * 0.99) - 1] * 1000, 2),
        }
    finally:
        await a.close()
        await b.close()


async def _failover(url: str, rounds: int) -> dict[str, float]:
    from egw.store import Store

    stores = [Store(url, lease_s=LEASE_S) for _ in range(3)]
    for s in stores:
        await s.open()
    try:
        took = []
        for r in range(rounds):
            name = f"bench-{r}"
            for s in stores:
                s.leases.want(name)
            while not any(s.leases.held(name) for s in stores):
                await asyncio.sleep(0.005)
            holder = next(s for s in stores if s.leases.held(name))
            # dies: no renewal, nothing given back (the row expires on its own)
            holder.leases._wanted.discard(name)
            holder.leases._until.pop(name, None)
            died = time.perf_counter()
            while not any(s.leases.held(name) for s in stores if s is not holder):
                await asyncio.sleep(0.005)
            took.append(time.perf_counter() - died)
        return {"lease_s": LEASE_S, "rounds": rounds, "max_s": round(max(took), 3)}
    finally:
        for s in stores:
            await s.close()


async def _submits(address: str, n: int) -> float:
    from egw.store import Store

    store = Store(address)
    await store.open()
    try:
        sem = asyncio.Semaphore(64)

        async def one() -> None:
            async with sem:
                await store.writer.create_task(_draft())

        start = time.perf_counter()
        await asyncio.gather(*(one() for _ in range(n)))
        return round(n / (time.perf_counter() - start))
    finally:
        await store.close()


def run(workdir: Path, cpus: dict[str, int | None], *, quick: bool) -> dict[str, Any]:
    missing = _pg.unavailable()
    if missing:
        return {"skipped": missing}
    n, rounds, tasks = (50, 1, 300) if quick else (1000, 5, 5000)
    url = _pg.create()
    try:
        result: dict[str, Any] = {"delay": asyncio.run(_delay(url, n))}
        result["failover"] = asyncio.run(_failover(url, rounds))
    finally:
        _pg.drop(url)
    url = _pg.create()
    try:
        pg = asyncio.run(_submits(url, tasks))
    finally:
        _pg.drop(url)
    sqlite = asyncio.run(_submits(str(workdir / "replicas-submits.db"), tasks))
    result["submits_per_s"] = {"postgresql": pg, "sqlite": sqlite, "tasks": tasks}
    return result


def render(part: dict[str, Any]) -> list[str]:
    if "error" in part:
        return [f"Replicas: error {part['error']}"]
    if "skipped" in part:
        return [f"Replicas: skipped ({part['skipped']})"]
    d, f, s = part["delay"], part["failover"], part["submits_per_s"]
    return [
        "Replicas (PostgreSQL, two or three on one database)",
        f"  cross-replica delay over {d['appends']} appends: p50 {d['p50_ms']} ms,"
        f" p99 {d['p99_ms']} ms",
        f"  goal: cross-replica p99 <= 100 ms: {'MET' if d['p99_ms'] <= 100 else 'MISSED'}",
        f"  lease failover (lease_s {f['lease_s']} s, {f['rounds']} rounds): at most"
        f" {f['max_s']} s",
        f"  goal: failover within lease_s: {'MET' if f['max_s'] <= f['lease_s'] else 'MISSED'}",
        f"  store submits/s ({s['tasks']} tasks, 64 at once): PostgreSQL {s['postgresql']},"
        f" SQLite {s['sqlite']}",
    ]
