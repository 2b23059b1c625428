"""PostgreSQL's lease table (``egw/store/leases.py`` for the theory of operation)."""

from __future__ import annotations

from typing import Any

from egw.store.postgres.conn import gone_here

#: taken if free, expired, or ours; returns the previous holder (NULL: none)
TAKE = (
    "WITH prev AS (SELECT holder FROM leases WHERE name = $1)"
    " INSERT INTO leases (name, holder, expires_at)"
    " VALUES ($1, $2, now() + make_interval(secs => $3))"
    " ON CONFLICT (name) DO UPDATE SET holder = excluded.holder,"
    " expires_at = excluded.expires_at"
    " WHERE leases.holder = excluded.holder OR leases.expires_at < now()"
    " RETURNING (SELECT holder FROM prev)"
)


class PgLeaseTable:
    """The ``leases`` rows of one replica, through the readers' pool."""

    def __init__(self, pool: Any, replica: str) -> None:
        self._pool = pool
        self.replica = replica

    async def take(self, name: str, ttl_s: float) -> str | bool | None:
        row = await self._pool.fetchrow(TAKE, name, self.replica, ttl_s)
        if row is None:
            return False
        previous = row[0]
        return str(previous) if previous is not None and previous != self.replica else None

    async def take_from_gone(self, name: str, ttl_s: float) -> str | None:
        """Take ``name`` from a holder that is gone from this host (`conn.gone_here`: a
        gateway killed and started again need not wait out its own lease); the holder
        taken from, None if it was held by no such replica."""
        holder = await self._pool.fetchval(
            "SELECT holder FROM leases WHERE name = $1 AND expires_at > now()", name
        )
        if holder is None or holder == self.replica or not gone_here(str(holder)):
            return None
        taken = await self._pool.fetchval(
            "UPDATE leases SET holder = $3, expires_at = now() + make_interval(secs => $4)"
            " WHERE name = $1 AND holder = $2 RETURNING holder",
            name,
            holder,
            self.replica,
            ttl_s,
        )
        return str(holder) if taken is not None else None

    async def give_back(self, names: list[str]) -> None:
        await self._pool.execute(
            "DELETE FROM leases WHERE name = ANY($1::text[]) AND holder = $2", names, self.replica
        )

    async def holders(self) -> dict[str, str]:
        """Every lease not expired, and its holder (for ``/readyz``)."""
        rows = await self._pool.fetch("SELECT name, holder FROM leases WHERE expires_at > now()")
        return {str(r[0]): str(r[1]) for r in rows}


__all__ = ["PgLeaseTable"]
