"""Leases (``egw/store/leases.py``): one holder at a time; a holder that dies is replaced
within ``lease_s``; one that stops gives its leases back at once; SQLite holds them all."""

from __future__ import annotations

import asyncio
import os
import subprocess
import time
from collections.abc import AsyncIterator

import pytest

from egw.store import Store
from egw.store.leases import Leases, while_held
from egw.store.postgres.leases import PgLeaseTable

LEASE_S = 0.6


@pytest.fixture
async def stores(pg_url: str) -> AsyncIterator[list[Store]]:
    made = [Store(pg_url, lease_s=LEASE_S) for _ in range(3)]
    for s in made:
        await s.open()
    yield made
    for s in made:
        await s.close()


async def holders(stores: list[Store], name: str) -> list[int]:
    return [i for i, s in enumerate(stores) if s.leases.held(name)]


async def test_one_replica_holds_a_lease_and_another_takes_over_when_it_dies(
    stores: list[Store],
) -> None:
    for s in stores:
        s.leases.want("nomad:default")
    deadline = time.monotonic() + 5
    while not await holders(stores, "nomad:default"):
        assert time.monotonic() < deadline
        await asyncio.sleep(0.02)
    for _ in range(20):  # never two at once, over a few renewals
        assert len(await holders(stores, "nomad:default")) == 1
        await asyncio.sleep(LEASE_S / 6)
    (first,) = await holders(stores, "nomad:default")
    # the holder "dies": its loop stops without giving anything back (as on SIGKILL)
    dead = stores[first].leases
    assert dead._runner is not None
    dead._runner.cancel()
    dead._until.clear()
    died = time.monotonic()
    while not await holders(stores, "nomad:default"):
        await asyncio.sleep(0.01)
    took = time.monotonic() - died
    assert took <= LEASE_S + 0.2, f"took over in {took:.2f} s"
    (second,) = await holders(stores, "nomad:default")
    assert second != first and stores[second].leases.failovers == 1


async def test_a_replica_that_stops_gives_its_leases_back_at_once(stores: list[Store]) -> None:
    stores[0].leases.want("prune")
    await stores[0].leases.tick()
    assert stores[0].leases.holding == ["prune"]
    await stores[0].leases.close()
    stores[1].leases.want("prune")
    await stores[1].leases.tick()
    assert stores[1].leases.held("prune") and stores[1].leases.failovers == 0


async def test_a_replica_stopped_while_its_take_is_in_flight_gives_that_lease_back(
    stores: list[Store],
) -> None:
    """A close that cancels a take the server committed (the replica never learnt it
    holds the lease) still gives it back: the next replica does not wait out its ttl."""
    leases = stores[0].leases
    table = leases._table
    assert table is not None
    committed = asyncio.Event()
    real_take = table.take

    async def take_then_hang(name: str, ttl_s: float) -> str | bool | None:
        await real_take(name, ttl_s)
        committed.set()
        await asyncio.sleep(3600)  # the answer never reaches the loop
        return None

    table.take = take_then_hang  # type: ignore[method-assign]
    leases.want("prune")
    ticking = asyncio.create_task(leases.tick())
    await committed.wait()
    assert leases.holding == []
    ticking.cancel()
    await leases.close()
    stores[1].leases.want("prune")
    await stores[1].leases.tick()
    assert stores[1].leases.held("prune")


def dead_pid() -> int:
    """The pid of a process that has ended (and been reaped)."""
    proc = subprocess.Popen(["true"])
    proc.wait()
    return proc.pid


async def test_a_lease_of_a_gateway_gone_from_this_host_is_taken_at_once(
    stores: list[Store],
) -> None:
    """A gateway killed and started again (a new replica id, the same host and pid
    namespace) need not wait ``lease_s`` for its own earlier lease: its process is gone.
    A holder whose process lives, or on another host, is waited for."""
    pool = stores[0]._pg.pool  # type: ignore[union-attr]
    mine = stores[0].replica
    assert mine is not None
    host, pid_part, _ = mine.split(":")
    space = pid_part.partition("@")[2]
    gone = f"{host}:{dead_pid()}@{space}:0a0a0a"
    alive = f"{host}:{os.getppid()}@{space}:0b0b0b"
    elsewhere = f"other-host:{dead_pid()}@{space}:0c0c0c"
    for name, holder in (("a", gone), ("b", alive), ("c", elsewhere)):
        hour = "now() + interval '1 hour'"
        await pool.execute(
            f"INSERT INTO leases (name, holder, expires_at) VALUES ($1, $2, {hour})", name, holder
        )
        await pool.execute(
            "INSERT INTO replicas (id, host, pid) VALUES ($1, 'h', 1)", holder
        )  # a heartbeat of just now
        stores[1].leases.want(name)
    await stores[1].leases.tick()
    assert stores[1].leases.holding == ["a"] and stores[1].leases.failovers == 1
    assert {alive, elsewhere} <= await stores[1].live_replicas()
    assert gone not in await stores[1].live_replicas()


async def test_the_table_refuses_a_lease_held_by_another(pg_url: str, stores: list[Store]) -> None:
    pool = stores[0]._pg.pool  # type: ignore[union-attr]
    one, two = PgLeaseTable(pool, "one"), PgLeaseTable(pool, "two")
    assert await one.take("x", 5) is None
    assert await two.take("x", 5) is False
    assert await one.take("x", 0.05) is None  # renewed, shorter
    await asyncio.sleep(0.1)
    assert await two.take("x", 5) == "one"  # expired: taken over from "one"
    assert await one.holders() == {"x": "two"}


async def test_on_sqlite_every_lease_is_held_and_work_runs_at_once(tmp_path: object) -> None:
    leases = Leases()
    assert leases.always and leases.held("anything")
    ran: list[int] = []

    async def work() -> None:
        ran.append(1)

    loop = asyncio.create_task(while_held(leases, "prune", work, 3600))
    await asyncio.sleep(0.05)
    loop.cancel()
    assert ran == [1]


async def test_a_lease_first_wanted_after_the_start_is_taken_at_once(pg_url: str) -> None:
    """The providers' leases are wanted once the gateway has started (after the loop's
    first tick): a free one is taken then, not at the next renewal, ``lease_s / 3`` later
    (on a lone replica with the default 15 s, Cloud Run's polling began 5 s late)."""
    store = Store(pg_url, lease_s=30.0)
    await store.open()
    try:
        await asyncio.sleep(0.2)  # the first tick has run, wanting nothing
        store.leases.want("cloud_run:late")
        async with asyncio.timeout(5):  # well under the 10 s to the next renewal
            while not store.leases.held("cloud_run:late"):
                await asyncio.sleep(0.02)
    finally:
        await store.close()
