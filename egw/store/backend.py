"""The seam between the dialect-independent store and its two databases, SQLite and PostgreSQL.

What is shared: the writer's queue, its commit loop and cache (``writer.py``), the
operations (``ops.py``, ``watchops.py``), the batch computed in memory (``batch.py``) and
the rows (``rows.py``). What each dialect brings, behind the two protocols below: how a
batch is read first and written (`Writes`; SQLite's is ``statements.py``, PostgreSQL's
``postgres/writes.py``) and every query (`Reads`; ``reads.py`` and ``postgres/reads.py``),
plus connecting, migrations and the one-instance lock, which `egw.store.Store` picks by
the address (`dialect`).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, Literal, Protocol
from urllib.parse import urlsplit, urlunsplit

from egw.core.audit import EventFilter
from egw.core.model import Event, Task
from egw.core.records import GatewayEvent, LogChunk
from egw.store.batch import Batch
from egw.store.ops import Op

Dialect = Literal["sqlite", "postgresql"]


def dialect(address: str) -> Dialect:
    """Which database an address (``storage.url`` or ``storage.path``) names."""
    scheme = address.split("://", 1)[0].lower() if "://" in address else ""
    return "postgresql" if scheme in ("postgresql", "postgres") else "sqlite"


def sqlite_path(address: str) -> str:
    """The file of a SQLite address: ``sqlite:///relative``, ``sqlite:////absolute``, a path."""
    return address[len("sqlite:///") :] if address.startswith("sqlite:///") else address


def redact(address: str) -> str:
    """An address fit for a log line or ``/readyz``: a URL's password replaced by ``***``."""
    if "://" not in address:
        return address
    parts = urlsplit(address)
    if parts.password is None:
        return address
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    netloc = f"{parts.username or ''}:***@{host}"
    if parts.port is not None:
        netloc += f":{parts.port}"
    return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))


class Writes(Protocol):
    """A dialect's half of the writer: see ``writer.py`` for the loop that calls these."""

    def refused(self, exc: BaseException) -> bool:
        """Whether the store refused a write for a reason of its own (disk full, read-only,
        unreachable), not of the batch's."""

    async def load_counters(self) -> tuple[int, int]:
        """The last event seq ever used (pruned ones too) and the last submit number."""

    async def begin(self, b: Batch, evict: Callable[[list[str] | None], None]) -> None:
        """Before a batch is computed: for a database other writers may append to, open the
        transaction, take the log's lock, move ``b``'s counters past what is committed and
        ``evict`` the tasks that others changed since this writer looked (None: all)."""

    async def preload(
        self,
        cache: Mapping[str, Task],
        remember: Callable[[Task], None],
        ops: list[Op[Any]],
        b: Batch,
    ) -> None:
        """Fill ``b`` and ``remember`` the tasks the batch's operations need (``preload.py``)."""

    async def write(self, b: Batch) -> None:
        """Write the batch's rows and commit; on failure the caller calls `rollback`."""

    async def finish(self) -> None:
        """A batch that wrote nothing: end what `begin` opened."""

    async def rollback(self) -> None:
        """Roll back whatever transaction is open (none: nothing)."""

    async def probe(self) -> None:
        """Commit a write the size of a log chunk that leaves nothing behind."""

    async def used_bytes(self) -> int:
        """The database's data, in bytes, as ``storage.max_bytes`` is compared with."""


class Reads(Protocol):
    """Every query of the store; `egw.store.reads.Reader` (SQLite) and
    `egw.store.postgres.reads.PgReader` answer them alike."""

    async def task(self, task_id: str) -> Task | None: ...

    async def task_by_upstream(self, provider: str, upstream_id: str) -> Task | None: ...

    async def upstream_ids(self, provider: str) -> list[tuple[str, str]]: ...

    async def tasks(
        self,
        *,
        provider: str | None = None,
        status: list[str] | None = None,
        labels: dict[str, str] | None = None,
        stuck: bool | None = None,
        name: str | None = None,
        before: int | None = None,
        limit: int = 50,
        namespaces: frozenset[str] | None = None,
    ) -> list[Task]: ...

    async def active(self, provider: str) -> list[Task]: ...

    async def unfinished(self) -> list[Task]: ...

    async def events(
        self,
        *,
        after: int = 0,
        task_id: str | None = None,
        provider: str | None = None,
        limit: int = 500,
        status_only: bool = False,
        namespaces: frozenset[str] | None = None,
    ) -> list[Event]: ...

    async def audit(
        self,
        *,
        after: int,
        upto: int,
        where: EventFilter,
        limit: int,
        namespaces: frozenset[str] | None = None,
    ) -> list[Event]: ...

    async def logs(
        self, task_id: str, *, offset: int = 0, limit_bytes: int = 1 << 20
    ) -> list[LogChunk]: ...

    async def gateway_events(self, *, after: int, limit: int) -> list[GatewayEvent]: ...

    async def cursor(self, key: str) -> str | None: ...

    async def pruned_seq(self) -> int: ...

    async def max_seq(self) -> int: ...

    async def stuck_counts(self) -> dict[str, int]: ...

    async def counts_by_status(self, by: str = "provider") -> dict[str, dict[str, int]]: ...

    async def ping(self) -> None:
        """One query, for ``/readyz``."""
