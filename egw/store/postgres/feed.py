"""The feed of replicas: every commit on the database, this replica's and the others', in
commit order, to the listeners that show them (the hub: SSE, blocking queries).

Theory of operation
-------------------
Each batch a replica commits that changed something leaves one row of ``changes``
(``writes.py``): its replica, its events' range ``(seq_from, seq_to]``, the tasks it
changed, its output as ``[task, from, to]``, the tasks whose output it completed and the
tasks it pruned; ``mark`` is taken under the log's lock, so mark order is commit order
and a reader that saw mark N never later finds a smaller one committed. Its ``NOTIFY
egw_log`` (payload: the mark) wakes this feed on every other replica; the payload is a
hint only. On a wake, and every ``poll_s`` in any case (a notification sent while the
listening connection was being replaced is lost), the feed reads the rows after the last
mark it saw. Another replica's: it reads their events, output and tasks from the
database, makes the writer forget those tasks (its cache would answer reads with an old
projection) and hands one `Commit` (``replicated``) to the writer's listeners (the
upstream index, the watchdog, metrics, which skip it) and to `ordered`. This replica's
own: the writer handed the `Commit` to `own` right after COMMIT; it goes to `ordered`
in its turn (read from the database like another's if it has not come within
``OWN_WAIT_S``). So `ordered` listeners (the hub) see every event in ``seq`` order and
each once, whoever wrote it: a live ``/v1/events`` stream is in order on every replica,
and a client resuming after N anywhere misses nothing. An own commit right after the
last mark goes out at once, without a query. A replica starts at the newest mark: what
came before is in the database, where resumes read it.

The same connection beats this replica's heartbeat in ``replicas`` every
``heartbeat_s`` (``leases.py`` reads it to tell a dead replica).
"""

from __future__ import annotations

import asyncio
import json
import os
import socket
from collections.abc import Callable
from typing import Any

import structlog

from egw.background import cancel_and_wait
from egw.core.records import Commit, LogChunk
from egw.store.postgres.conn import CHANNEL, connect
from egw.store.rows import EVENT_COLUMNS, TASK_COLUMNS, event_from_row, task_from_row

log = structlog.get_logger("egw.store")

POLL_S = 1.0
#: an own commit whose row is seen but whose `Commit` has not come is read back after this
OWN_WAIT_S = 1.0
#: a replica beats its heartbeat this often (a fifth of ``storage.lease_s`` by default),
#: and is gone when it is older than ``lease_s`` (five beats missed)
HEARTBEAT_S = 3.0
#: rows read at most per round (the next round follows at once)
PAGE = 500

_EVENTS = (
    f"SELECT {', '.join('e.' + c.strip() for c in EVENT_COLUMNS.split(','))} FROM events e"
    " JOIN unnest($1::bigint[], $2::bigint[]) AS r(lo, hi) ON e.seq > r.lo AND e.seq <= r.hi"
    " ORDER BY e.seq"
)
_LOGS = (
    "SELECT c.task_id, c.pos, c.stream, c.data FROM log_chunks c"
    " JOIN unnest($1::text[], $2::bigint[], $3::bigint[], $4::int[]) AS r(t, lo, hi, n)"
    " ON c.task_id = r.t AND c.pos >= r.lo AND c.pos < r.hi ORDER BY r.n, c.pos"
)


class PgFeed:
    """Hands every commit to `ordered` in commit order, the others' to ``emit`` too; beats
    the heartbeat."""

    def __init__(
        self,
        url: str,
        replica: str,
        emit: Callable[[Commit], None],
        forget: Callable[[list[str]], None],
        *,
        poll_s: float = POLL_S,
        heartbeat_s: float = HEARTBEAT_S,
    ) -> None:
        self._url = url
        self.replica = replica
        self._emit = emit
        self._forget = forget
        self.poll_s = poll_s
        self.heartbeat_s = heartbeat_s
        self.mark = 0
        #: the listeners that need every commit in commit order (the hub)
        self.ordered: list[Callable[[Commit], None]] = []
        self._own: dict[int, Commit] = {}
        self._own_seen_at: float | None = None
        self._conn: Any = None
        self._wake = asyncio.Event()
        self._runner: asyncio.Task[None] | None = None
        self._beat_at = 0.0
        #: seconds from another replica's commit to its hand-over here, as the database's
        #: clock says (one figure per replicated batch): `on_lag` hears each
        self.on_lag: Callable[[float], None] | None = None
        #: the listening connection's losses, and the last lag measured (`on_lag`)
        self.reconnects = 0
        self.lag_s: float | None = None

    async def start(self) -> None:
        await self._connect()
        self.mark = int(await self._conn.fetchval("SELECT COALESCE(MAX(mark), 0) FROM changes"))
        self._runner = asyncio.create_task(self._run(), name="egw-feed")

    async def close(self) -> None:
        await cancel_and_wait(self._runner)
        self._runner = None
        conn, self._conn = self._conn, None
        if conn is not None:
            try:
                await conn.execute("DELETE FROM replicas WHERE id = $1", self.replica)
            except Exception:  # noqa: BLE001 - gone all the same: its heartbeat expires
                pass
            conn.terminate()

    @property
    def running(self) -> bool:
        return self._runner is not None and not self._runner.done()

    async def _connect(self) -> None:
        conn = await connect(self._url)
        await conn.add_listener(CHANNEL, self._hint)
        await conn.execute(
            "INSERT INTO replicas (id, host, pid) VALUES ($1, $2, $3)"
            " ON CONFLICT (id) DO UPDATE SET heartbeat_at = now()",
            self.replica,
            socket.gethostname(),
            os.getpid(),
        )
        # rows of replicas killed long ago (a stopped one deletes its own)
        await conn.execute("DELETE FROM replicas WHERE heartbeat_at < now() - interval '1 day'")
        self._beat_at = asyncio.get_running_loop().time()
        self._conn = conn
        self._wake.set()  # notifications may have been missed meanwhile: read

    def own(self, commit: Commit) -> None:
        """The writer's listener: this replica's commit, to `ordered` in its turn."""
        if commit.replicated or not commit.mark or commit.mark <= self.mark:
            return  # (the last: read back and handed over already, its writer being late)
        if commit.mark == self.mark + 1 and not self._own:
            self.mark = commit.mark  # next in line: no query needed
            self._hand(commit)
            return
        self._own[commit.mark] = commit
        self._wake.set()

    def _hand(self, commit: Commit) -> None:
        for listener in self.ordered:
            try:
                listener(commit)
            except Exception as exc:  # noqa: BLE001 - a listener must not break the feed
                log.error("commit_listener_failed", error=repr(exc))

    def _hint(self, _conn: Any, _pid: int, _channel: str, payload: str) -> None:
        try:
            if int(payload) <= self.mark:
                return  # read already
        except ValueError:
            pass  # a payload of an unknown form: read all the same
        self._wake.set()

    async def _run(self) -> None:
        while True:
            try:
                if self._conn is None or self._conn.is_closed():
                    self._conn = None
                    self.reconnects += 1
                    await self._connect()
                try:
                    async with asyncio.timeout(self.poll_s):
                        await self._wake.wait()
                except TimeoutError:
                    pass
                self._wake.clear()
                while await self.catch_up() >= PAGE:
                    pass
                if self._own_seen_at is not None:
                    self._wake.set()  # an own commit is awaited: look again soon
                    await asyncio.sleep(0.01)
                await self._beat()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - the feed outlives a lost server
                log.warning("replica_feed_failed", error=repr(exc))
                conn, self._conn = self._conn, None
                if conn is not None:
                    conn.terminate()
                await asyncio.sleep(self.poll_s)

    async def _beat(self) -> None:
        now = asyncio.get_running_loop().time()
        if now - self._beat_at < self.heartbeat_s:
            return
        self._beat_at = now
        await self._conn.execute(
            "UPDATE replicas SET heartbeat_at = now() WHERE id = $1", self.replica
        )

    async def catch_up(self) -> int:
        """Hand over the rows of ``changes`` after `mark`, in order (see the module's
        docstring); returns how many were handed over."""
        conn = self._conn
        rows = await conn.fetch(
            "SELECT mark, replica, seq_from, seq_to, data,"
            " extract(epoch FROM clock_timestamp() - at) FROM changes"
            " WHERE mark > $1 ORDER BY mark LIMIT $2",
            self.mark,
            PAGE,
        )
        done = 0
        while done < len(rows):
            row = rows[done]
            if int(row[0]) <= self.mark:  # handed over by `own` meanwhile
                done += 1
                continue
            if row[1] == self.replica:
                commit = self._own.pop(int(row[0]), None)
                if commit is None and not self._overdue():
                    break  # its writer has not handed it yet: wait for `own`
                self._own_seen_at = None
                if commit is None:
                    commit = await self._read(conn, [row])
                    if int(row[0]) <= self.mark:  # `own` handed it while it was read back
                        done += 1
                        continue
                self.mark = int(row[0])
                self._hand(commit)
                done += 1
                continue
            run = [row]
            while done + len(run) < len(rows) and rows[done + len(run)][1] != self.replica:
                # (another's row is never handed by `own`: no mark check needed here)
                run.append(rows[done + len(run)])
            commit = await self._read(conn, run)
            self._forget([*commit.tasks, *commit.pruned])
            for r in run:
                self.lag_s = max(0.0, float(r[5]))
                if self.on_lag is not None:
                    self.on_lag(self.lag_s)
            self.mark = int(run[-1][0])
            self._emit(commit)
            self._hand(commit)
            done += len(run)
        for mark in [m for m in self._own if m <= self.mark]:
            del self._own[mark]  # handed over already (read back when it was overdue)
        return done

    def _overdue(self) -> bool:
        now = asyncio.get_running_loop().time()
        if self._own_seen_at is None:
            self._own_seen_at = now
        return now - self._own_seen_at >= OWN_WAIT_S

    async def _read(self, conn: Any, rows: list[Any]) -> Commit:
        commit = Commit(replicated=True)
        ranges = [(int(r[2]), int(r[3])) for r in rows if int(r[3]) > int(r[2])]
        if ranges:
            found = await conn.fetch(_EVENTS, [lo for lo, _ in ranges], [hi for _, hi in ranges])
            commit.events = [event_from_row(e) for e in found]
        task_ids: dict[str, None] = {}
        logs: list[tuple[str, int, int]] = []
        pruned: dict[str, None] = {}
        for r in rows:
            data = json.loads(r[4])
            task_ids.update(dict.fromkeys(data["tasks"]))
            logs.extend((str(t), int(lo), int(hi)) for t, lo, hi in data["logs"])
            commit.logs_completed.extend(data["completed"])
            pruned.update(dict.fromkeys(data["pruned"]))
        task_ids.update(dict.fromkeys(e.task_id for e in commit.events))
        commit.pruned = list(pruned)
        want = [t for t in task_ids if t not in pruned]
        if want:
            found = await conn.fetch(
                f"SELECT {TASK_COLUMNS} FROM tasks WHERE id = ANY($1::text[])", want
            )
            commit.tasks = {t.id: t for t in map(task_from_row, found)}
        if logs:
            found = await conn.fetch(
                _LOGS,
                [t for t, _, _ in logs],
                [lo for _, lo, _ in logs],
                [hi for _, _, hi in logs],
                list(range(len(logs))),
            )
            commit.logs = [LogChunk(str(t), int(p), str(s), bytes(d)) for t, p, s, d in found]
        return commit


__all__ = ["PgFeed"]
