"""Three `egw serve` replicas on a fresh PostgreSQL database: the set-up of the tests of
work that moves between replicas under a lease (Nomad's event stream, Cloud Run's pollers
and log readers, GitHub's reconciler), and what they ask each replica's ``/readyz``."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
from db_support import create_database, drop_database
from reliability.faultkit import Gateway

#: short, so that a takeover comes within a second of a kill
LEASE_S = 1.0


@contextlib.asynccontextmanager
async def replicas(
    tmp_path: Path, http: aiohttp.ClientSession, providers: dict[str, Any], *, n: int = 3
) -> AsyncIterator[list[Gateway]]:
    """``n`` gateways with ``providers`` on one new database (dropped after)."""
    url = create_database()
    made: list[Gateway] = []
    try:
        for i in range(n):
            workdir = tmp_path / f"replica-{i}"
            workdir.mkdir()
            storage = {"url": url, "lease_s": LEASE_S}
            made.append(Gateway(workdir, {"storage": storage, "providers": providers}))
            await made[-1].start(http)
        yield made
    finally:
        for gw in made:
            await gw.stop()
        drop_database(url)


async def ready(http: aiohttp.ClientSession, gw: Gateway) -> dict[str, Any]:
    async with http.get(f"{gw.url}/readyz") as resp:
        body: dict[str, Any] = await resp.json()
        return body


async def holder(http: aiohttp.ClientSession, gw: Gateway, lease: str) -> str | None:
    """The replica holding ``lease``, as ``gw`` sees it (None: no one yet)."""
    holders: dict[str, str] = (await ready(http, gw))["replica"]["holders"]
    return holders.get(lease)


async def by_id(http: aiohttp.ClientSession, gws: list[Gateway]) -> dict[str, Gateway]:
    """Each gateway by its replica id."""
    return {(await ready(http, gw))["replica"]["id"]: gw for gw in gws}
