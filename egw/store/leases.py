"""Leases: work that must run on one replica at a time (the watchdog's verdicts, the prune).

Theory of operation
-------------------
On SQLite one process owns the database (the ``flock``): it holds every lease, always,
and nothing runs to keep them (`Leases` with no backend: `held` is True).

On PostgreSQL replicas share the database, and each lease is a row of ``leases``
(name, holder, expires_at), taken or renewed with one conditional upsert: the row is
written only if this replica holds it already or it has expired (``postgres/leases.py``).
Expiry is the server's clock (``now()``), so replicas' clocks never disagree. Every
``lease_s / 3`` each replica renews what it holds (for ``2 * lease_s / 3``) and tries
to take what it wants and no one holds (and at once when a name is first wanted: the
providers' leases are wanted only once the gateway has started): a holder that dies is
replaced at most ``2/3 + 1/3 = lease_s`` later, and at once when it was a gateway of the
same host whose process is gone (``postgres/conn.py`` ``gone_here``: a single gateway
killed and started again resumes its work at once, as on SQLite). A holder that cannot
renew (the database is unreachable) stops counting the lease as held when its own ttl,
counted from before the attempt, runs out: always before another replica can take it.
A replica that stops gives its leases back at once.

Why a table, not session advisory locks: an advisory lock dies with its session, but a
session whose peer vanished (a host powered off, a partition) lingers until TCP
keepalive notices, minutes by default; a row with an expiry moves within ``lease_s``
whatever the network did, and shows its holder in ``/readyz``.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

import structlog

from egw.background import cancel_and_wait

log = structlog.get_logger("egw.store")


class LeaseTable(Protocol):
    async def take(self, name: str, ttl_s: float) -> str | bool | None:
        """Take or renew ``name`` for ``ttl_s``: False if another holds it, else the
        previous holder if it was another replica (a failover), else None."""

    async def take_from_gone(self, name: str, ttl_s: float) -> str | None:
        """Take ``name`` from a holder known to be gone (its process is gone from this
        host): that holder, else None (nothing taken)."""

    async def give_back(self, names: list[str]) -> None: ...


@dataclass(frozen=True, slots=True)
class Replication:
    """A replica on PostgreSQL as ``/readyz`` and the metrics show it."""

    replica: str
    #: the leases this replica holds, and every lease's holder (unexpired)
    leases: list[str]
    holders: Mapping[str, str]
    #: leases this replica took over from a holder that had let them expire
    failovers: int
    #: the replicas whose heartbeat is recent, this one included
    seen: list[str]
    #: the last other replica's commit: seconds from its COMMIT to its hand-over here
    feed_lag_s: float | None
    #: the feed's listening connection was replaced this many times
    feed_reconnects: int

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.replica,
            "leases": self.leases,
            "holders": dict(self.holders),
            "failovers": self.failovers,
            "seen": self.seen,
            "feed": {"lag_s": self.feed_lag_s, "reconnects": self.feed_reconnects},
        }


class Leases:
    """Which of the wanted leases this replica holds (`held`); kept by a loop on
    PostgreSQL, always all on SQLite."""

    def __init__(self, table: LeaseTable | None = None, lease_s: float = 15.0) -> None:
        self._table = table
        self.lease_s = lease_s
        self._wanted: set[str] = set()
        #: name -> the loop's clock time until which it is held
        self._until: dict[str, float] = {}
        #: leases this replica took over from another (expired) holder
        self.failovers = 0
        self._runner: asyncio.Task[None] | None = None
        #: a name wanted for the first time: tick now rather than up to ``lease_s / 3`` later
        self._wake = asyncio.Event()

    def want(self, name: str) -> None:
        if name not in self._wanted:
            self._wanted.add(name)
            self._wake.set()

    @property
    def always(self) -> bool:
        """One process per database (SQLite): every lease is held."""
        return self._table is None

    def held(self, name: str) -> bool:
        if self._table is None:
            return True
        until = self._until.get(name)
        return until is not None and asyncio.get_running_loop().time() < until

    def left_s(self, name: str) -> float:
        """How long ``name`` stays held unless renewed (0: not held; SQLite: forever)."""
        if self._table is None:
            return float("inf")
        until = self._until.get(name)
        return 0.0 if until is None else max(0.0, until - asyncio.get_running_loop().time())

    @property
    def holding(self) -> list[str]:
        return sorted(n for n in self._wanted if self.held(n))

    async def start(self) -> None:
        if self._table is not None:
            self._runner = asyncio.create_task(self._run(), name="egw-leases")

    async def close(self) -> None:
        await cancel_and_wait(self._runner)
        self._runner = None
        if self._table is not None and self._wanted:
            # every wanted name, not only those counted as held: a take cancelled by
            # this close may have committed on the server (the row names this replica
            # either way; another's row is left alone)
            self._until = {}
            try:
                await self._table.give_back(sorted(self._wanted))
            except Exception as exc:  # noqa: BLE001 - they expire all the same
                log.warning("lease_give_back_failed", error=repr(exc))

    async def _run(self) -> None:
        while True:
            self._wake.clear()
            await self.tick()
            try:
                async with asyncio.timeout(self.lease_s / 3):
                    await self._wake.wait()
            except TimeoutError:
                pass

    async def tick(self) -> None:
        """Renew what is held, take what is free (one attempt each)."""
        assert self._table is not None
        ttl = self.lease_s * 2 / 3
        for name in sorted(self._wanted):
            began = asyncio.get_running_loop().time()
            try:
                got = await self._table.take(name, ttl)
            except Exception as exc:  # noqa: BLE001 - held until its own ttl runs out
                log.warning("lease_renew_failed", lease=name, error=repr(exc))
                continue
            if got is False:
                try:
                    got = await self._table.take_from_gone(name, ttl) or False
                except Exception as exc:  # noqa: BLE001 - the next tick tries again
                    log.warning("lease_renew_failed", lease=name, error=repr(exc))
                    got = False
            if got is False:
                if self._until.pop(name, None) is not None:
                    log.warning("lease_lost", lease=name)
                continue
            if name not in self._until or not self.held(name):
                log.info("lease_taken", lease=name, previous=got)
                if got is not None:
                    self.failovers += 1
            self._until[name] = began + ttl


async def while_held(
    leases: Leases, name: str, work: Callable[[], Awaitable[None]], every_s: float
) -> None:
    """Run ``work`` every ``every_s`` while this replica holds ``name`` (forever): at once
    on SQLite, and on a replica as soon as it takes the lease."""
    leases.want(name)
    loop = asyncio.get_running_loop()
    last: float | None = None
    look_s = every_s if leases.always else min(every_s, leases.lease_s / 3)
    while True:
        if leases.held(name) and (last is None or loop.time() - last >= every_s):
            last = loop.time()
            await work()
        await asyncio.sleep(look_s)


__all__ = ["Leases", "Replication", "while_held"]
