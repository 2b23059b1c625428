"""`lead_while_held` (``egw/service/replicas.py``): a `Leading` provider leads once its
lease is taken, looks for new tasks while it is held, and steps down as soon as the lease
runs out unrenewed, before the lease's row could expire for another replica; on SQLite
(`leaders`) no loop runs and nothing stands by."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace
from typing import Any, cast

from egw.service.replicas import lead_while_held, leaders
from egw.store.leases import Leases

LEASE_S = 0.6


class Table:
    """A lease table whose renewals work while ``up`` (else they fail, as a database out
    of reach does)."""

    def __init__(self) -> None:
        self.up = True

    async def take(self, name: str, ttl_s: float) -> str | bool | None:
        if not self.up:
            raise ConnectionError("database unreachable")
        return None

    async def take_from_gone(self, name: str, ttl_s: float) -> str | None:
        return None

    async def give_back(self, names: list[str]) -> None:
        pass


def _unused(*args: Any, **kwargs: Any) -> None:
    raise AssertionError("not part of the lease loop")


class Provider:
    """A `Leading` provider that notes what the loop asks of it."""

    name = "nomad"
    stream_lease = "nomad-stream:global:default"
    validate = start = close = submit = cancel = status = health = staticmethod(_unused)

    def __init__(self) -> None:
        self.calls: list[tuple[str, float]] = []
        self.standing_by = False

    def stand_by(self) -> None:
        self.standing_by = True

    def _note(self, what: str) -> None:
        self.calls.append((what, asyncio.get_running_loop().time()))

    async def lead(self) -> None:
        self._note("lead")

    async def follow_new(self) -> None:
        self._note("follow_new")

    async def step_down(self) -> None:
        self._note("step_down")


async def test_leads_while_held_and_steps_down_before_the_lease_could_move() -> None:
    table = Table()
    leases = Leases(table, lease_s=LEASE_S)
    provider = Provider()
    service = cast(Any, SimpleNamespace(store=SimpleNamespace(leases=leases)))
    loop = asyncio.create_task(lead_while_held(service, provider))
    await leases.start()
    try:
        await asyncio.sleep(LEASE_S)
        kinds = [k for k, _ in provider.calls]
        assert kinds[0] == "lead" and kinds.count("lead") == 1
        assert "follow_new" in kinds and "step_down" not in kinds
        table.up = False  # the next renewal fails: held until its own ttl runs out
        lost = asyncio.get_running_loop().time()
        await asyncio.sleep(LEASE_S * 1.5)
        downs = [t for k, t in provider.calls if k == "step_down"]
        assert len(downs) == 1
        # at most one renewal period, then the ttl: the row expires on the server after that
        assert downs[0] - lost <= LEASE_S / 3 + LEASE_S * 2 / 3 + 0.05
        assert provider.calls[-1][0] == "step_down"  # nothing followed after
        table.up = True
        await asyncio.sleep(LEASE_S / 2)
        assert [k for k, _ in provider.calls].count("lead") == 2  # taken again: leads again
    finally:
        loop.cancel()
        await asyncio.gather(loop, return_exceptions=True)
        await leases.close()


def test_on_sqlite_nothing_stands_by() -> None:
    provider = Provider()
    service = cast(Any, SimpleNamespace(store=SimpleNamespace(replica=None), providers={}))
    service.providers["nomad"] = provider
    assert leaders(service) == [] and not provider.standing_by


async def test_on_postgresql_the_provider_stands_by_until_its_lease_is_held() -> None:
    provider = Provider()
    store = SimpleNamespace(replica="r1", leases=Leases(Table(), lease_s=LEASE_S))
    service = cast(Any, SimpleNamespace(store=store, providers={"nomad": provider}))
    [loop] = leaders(service)
    assert provider.standing_by
    loop.close()  # not run: nothing led
    assert provider.calls == []
