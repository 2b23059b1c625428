"""A SQLite batch is written in one call on the write connection's thread
(``egw/store/sqlite_writes.py``): a statement failing in the middle, after others of the
batch wrote rows, leaves nothing of the batch, whether SQLite keeps the transaction open
(a constraint) or ends it by itself (a full disk); and the write connection is never used
from another thread."""

from __future__ import annotations

import dataclasses
import sqlite3
import subprocess
import sys
import threading
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest

from egw.core.model import Task, TaskState, new_task_id, utcnow
from egw.store import Store, statements
from egw.store.batch import Batch


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[Store]:
    s = Store(str(tmp_path / "egw.db"))
    await s.open()
    yield s
    await s.close()


def draft() -> Task:
    now = utcnow()
    return Task(
        id=new_task_id(), provider="local", spec={"command": "x"}, created_at=now, updated_at=now
    )


def conflicting_output(task_id: str) -> Callable[[sqlite3.Connection], None]:
    """A chunk already stored at offset 0: the batch's own chunk there breaks the key."""

    def run(conn: sqlite3.Connection) -> None:
        conn.execute(
            "INSERT INTO log_chunks (task_id, pos, stream, data) VALUES (?, 0, 'stdout', x'00')",
            (task_id,),
        )

    return run


def little_room(conn: sqlite3.Connection) -> None:
    """Room for a few small rows, not for a megabyte: SQLITE_FULL midway."""
    (pages,) = conn.execute("PRAGMA page_count").fetchone()
    conn.execute(f"PRAGMA max_page_count = {int(pages) + 8}")


@pytest.mark.parametrize("failure", ["constraint", "disk full"])
async def test_a_statement_failing_midway_leaves_nothing_of_the_batch(
    store: Store, failure: str
) -> None:
    thread = store._wthread
    assert thread is not None
    task, _ = await store.writer.create_task(draft())
    seq = await store.reader.max_seq()
    if failure == "constraint":
        await thread.run(conflicting_output(task.id))
        chunk = b"a"
    else:
        await thread.run(little_room)
        chunk = b"z" * (1 << 20)
    b = Batch({task.id: task}, seq, 1)
    running = dataclasses.replace(task, status=TaskState.RUNNING)
    # the event and the task are written first (statements.write), then the output fails;
    # the cursor and gateway rows after it must not be written either, as autocommits
    b.event(task, running, kind="observed", source="test", applied=True, now=utcnow(), seq=seq + 1)
    b.log_rows.append((task.id, 0, "stdout", chunk))
    b.cursor_rows.append(("after.the.failure", "1"))
    b.gateway_rows.append(("after_the_failure", None, None, "2026-01-01T00:00:00.000Z", "{}"))
    with pytest.raises(sqlite3.Error) as raised:
        await thread.run(statements.write, b)
    if failure == "constraint":
        assert isinstance(raised.value, sqlite3.IntegrityError)
    else:
        assert statements.refused(raised.value), raised.value
        assert "full" in str(raised.value)
    assert not await thread.run(lambda conn: conn.in_transaction)

    assert await store.reader.max_seq() == seq
    stored = await store.reader.task(task.id)
    assert stored is not None and stored.status is TaskState.PENDING
    assert await store.reader.cursor("after.the.failure") is None
    assert await store.reader.gateway_events(after=0, limit=10) == []
    logs = await store.reader.logs(task.id)
    assert [c.data for c in logs] == ([b"\x00"] if failure == "constraint" else [])

    # and the writer goes on, on the same connection
    if failure == "disk full":
        await thread.run(lambda conn: conn.execute("PRAGMA max_page_count = 1073741823").close())
    await store.writer.progress(task.id, "tick", {}, source="test")
    assert await store.reader.max_seq() == seq + 1


async def test_the_write_connection_is_used_on_its_own_thread_only(store: Store) -> None:
    thread = store._wthread
    assert thread is not None
    seen: set[int] = set()

    def trace(_: str) -> None:
        seen.add(threading.get_ident())

    await thread.run(sqlite3.Connection.set_trace_callback, trace)
    task, _ = await store.writer.create_task(draft())
    await store.writer.append_log(task.id, "stdout", b"out")
    await store.writer.progress(task.id, "tick", {}, source="test", delivery_id="d-1")
    assert seen and threading.get_ident() not in seen and len(seen) == 1


def test_a_write_connection_left_open_does_not_keep_the_process_alive(tmp_path: Path) -> None:
    """A gateway that ends without closing its store still ends: the write connection's
    thread is not one the interpreter waits for forever."""
    code = (
        "import asyncio, sys\n"
        "from egw.store.db import connect_writer\n"
        "from egw.store.migrate import apply_migrations\n"
        "async def main() -> None:\n"
        "    thread = await connect_writer(sys.argv[1])\n"
        "    await thread.run(apply_migrations)\n"
        "asyncio.run(main())\n"
        "print('ended')\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code, str(tmp_path / "egw.db")],
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    )
    assert done.stdout.strip().endswith("ended")
