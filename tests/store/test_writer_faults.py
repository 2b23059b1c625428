"""The writer when SQLite refuses writes (a full disk, reproduced with ``max_page_count`` on
the write connection), and the output cap of a task (head and tail, offsets unchanged)."""

from __future__ import annotations

import asyncio
import itertools
import sqlite3
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from egw.core.model import Observation, Task, TaskState, new_task_id, utcnow
from egw.errors import StoreError
from egw.store import Store
from egw.store.batch import LogCaps

CHUNK = b"x" * 65536


def draft() -> Task:
    now = utcnow()
    return Task(
        id=new_task_id(), provider="local", spec={"command": "x"}, created_at=now, updated_at=now
    )


async def fill_disk(store: Store) -> None:
    """No page more for the write connection, and no room left in the pages it has: the
    next write is refused as SQLite refuses it on a full disk ("database or disk is full")."""
    await on_writer(store, fill)


async def on_writer(store: Store, fn: Callable[[sqlite3.Connection], None]) -> None:
    """``fn`` on the write connection, on its thread (the only one that may use it)."""
    assert store._wthread is not None
    await store._wthread.run(fn)


def execute(sql: str, params: tuple[Any, ...] = ()) -> Callable[[sqlite3.Connection], None]:
    return lambda conn: conn.execute(sql, params).close()


def fill(conn: sqlite3.Connection) -> None:
    row = conn.execute("PRAGMA page_count").fetchone()
    assert row is not None
    conn.execute(f"PRAGMA max_page_count = {int(row[0])}")
    n = 0
    for size in (4096, 512, 64, 1):
        while True:
            n += 1
            try:
                conn.execute(
                    "INSERT INTO cursors (key, value) VALUES (?, zeroblob(?))", (f"fill-{n}", size)
                )
            except sqlite3.OperationalError:
                break


async def free_disk(store: Store) -> None:
    await on_writer(store, execute("PRAGMA max_page_count = 1073741823"))


async def refuse_writes(store: Store, refuse: bool = True) -> None:
    """The database refuses every write, small ones too ("attempt to write a readonly
    database"), as a read-only file or a disk with no room even for the WAL does; on
    PostgreSQL, a session whose transactions are read-only ("cannot execute INSERT in a
    read-only transaction"), as a hot standby's are."""
    if store.dialect == "postgresql":
        conn = store.writer._db.conn  # type: ignore[attr-defined]
        await conn.execute(f"SET default_transaction_read_only = {'on' if refuse else 'off'}")
        return
    await on_writer(store, execute(f"PRAGMA query_only = {'ON' if refuse else 'OFF'}"))


async def until_writable(store: Store) -> None:
    for _ in range(100):
        if store.writer.failure is None:
            return
        await asyncio.sleep(0.02)
    raise AssertionError(f"still refused: {store.writer.failure}")


@pytest.fixture
async def store(tmp_path: Path):  # type: ignore[no-untyped-def]
    s = Store(str(tmp_path / "egw.db"))
    await s.open()
    s.writer.retry_s, s.writer.retry_first_s, s.writer.retry_max_s = 0.3, 0.02, 0.1
    s.writer.probe_s = 0.05
    yield s
    await s.close()


async def stored(store: Store, task_id: str) -> bytes:
    out, position = b"", 0
    while chunks := await store.reader.logs(task_id, offset=position):
        chunks = [c for c in chunks if c.end > position]
        if not chunks:
            break
        out += b"".join(c.data for c in chunks)
        position = chunks[-1].end
    return out


async def test_a_refused_write_is_retried_then_fails_with_the_reason(store: Store) -> None:
    task, _ = await store.writer.create_task(draft())
    await store.writer.append_log(task.id, "stdout", b"kept\n")
    await fill_disk(store)
    started = asyncio.get_running_loop().time()
    with pytest.raises(StoreError) as info:
        await store.writer.append_log(task.id, "stdout", CHUNK)
    assert asyncio.get_running_loop().time() - started >= 0.2  # retried for retry_s first
    assert "database or disk is full" in info.value.message
    assert info.value.details == {"cause": "database or disk is full"}
    assert store.writer.failure == "database or disk is full" and store.writer.refusals > 1
    assert store.writer.running  # the loop outlives it
    # reads still answer, and what was committed is all there
    assert await stored(store, task.id) == b"kept\n"
    await free_disk(store)
    # nothing else is written: the probe finds the store writable again by itself
    await until_writable(store)
    assert await store.writer.append_log(task.id, "stdout", b"more\n") == 10
    assert await stored(store, task.id) == b"kept\nmore\n"


async def test_a_write_waits_for_space_that_returns_within_the_retries(store: Store) -> None:
    task, _ = await store.writer.create_task(draft())
    await fill_disk(store)
    pending = asyncio.ensure_future(store.writer.append_log(task.id, "stdout", CHUNK))
    await asyncio.sleep(0.08)
    assert not pending.done() and store.writer.failure is not None
    await free_disk(store)
    assert await pending == len(CHUNK)
    await until_writable(store)


async def test_settle_is_kept_until_the_store_takes_it_and_goes_first(store: Store) -> None:
    task, _ = await store.writer.create_task(draft())
    await store.writer.observe(task.id, Observation(state=TaskState.RUNNING), source="local")
    await refuse_writes(store)
    with pytest.raises(StoreError, match="readonly"):
        await store.writer.append_log(task.id, "stdout", CHUNK)
    failed = Observation(state=TaskState.FAILED, reason="the task's output could not be stored")
    settled = store.writer.settle(task.id, failed, source="gateway")
    await asyncio.sleep(0.5)  # longer than retry_s: kept, not failed
    assert not settled.done()
    # the provider's own outcome, later, fails (and is not applied before the settle)
    with pytest.raises(StoreError):
        await store.writer.observe(
            task.id, Observation(state=TaskState.CANCELLED, exit_code=-9), source="local"
        )
    await refuse_writes(store, False)
    after = await asyncio.wait_for(settled, 5)
    assert after.status is TaskState.FAILED and after.logs_complete
    assert after.reason == "the task's output could not be stored"
    late = await store.writer.observe(
        task.id, Observation(state=TaskState.CANCELLED, exit_code=-9), source="local"
    )
    assert late.status is TaskState.FAILED  # stale: recorded, not applied
    events = await store.reader.events(task_id=task.id)
    assert [(e.kind, e.applied) for e in events][-2:] == [("observed", True), ("observed", False)]
    reread = await store.reader.task(task.id)
    assert reread is not None and reread.status is TaskState.FAILED and reread.logs_complete


async def test_close_fails_what_is_kept(tmp_path: Path) -> None:
    s = Store(str(tmp_path / "egw.db"))
    await s.open()
    s.writer.retry_s, s.writer.probe_s = 0.05, 0.05
    task, _ = await s.writer.create_task(draft())
    await refuse_writes(s)
    settled = s.writer.settle(task.id, None, source="gateway")
    await asyncio.sleep(0.2)
    await s.close()
    assert isinstance(settled.exception(), StoreError)


async def test_small_writes_that_fit_do_not_make_the_store_writable(store: Store) -> None:
    task, _ = await store.writer.create_task(draft())
    await fill_disk(store)
    with pytest.raises(StoreError):
        await store.writer.append_log(task.id, "stdout", CHUNK)
    await store.writer.progress(task.id, "tick", {}, source="test")
    await asyncio.sleep(0.1)
    assert store.writer.failure == "database or disk is full"  # the probe says so still
    await free_disk(store)
    await until_writable(store)


async def test_a_batch_failing_for_its_own_reason_is_not_retried(store: Store) -> None:
    task, _ = await store.writer.create_task(draft())
    # a row at the offset the next append takes: the batch fails on its own (IntegrityError)
    await on_writer(
        store,
        execute(
            "INSERT INTO log_chunks (task_id, pos, stream, data) VALUES (?, 0, 'stdout', x'00')",
            (task.id,),
        ),
    )
    with pytest.raises(StoreError):
        await store.writer.append_log(task.id, "stdout", b"a")
    assert store.writer.failure is None and store.writer.refusals == 0


# --- the output cap -------------------------------------------------------------------------


async def test_output_past_the_cap_keeps_head_and_tail_exactly(store: Store) -> None:
    store.writer.log_caps = LogCaps(default=1 << 20, by_provider={"local": 4096})
    task, _ = await store.writer.create_task(draft())
    written = bytes(range(256)) * 100  # 25,600 bytes in chunks of odd sizes
    sizes = [100, 1000, 3000, 1, 5000, 999, 7000]
    position, pieces = 0, []
    while position < len(written):
        n = sizes[len(pieces) % len(sizes)]
        pieces.append(written[position : position + n])
        position += n
    for i, piece in enumerate(pieces):
        stream = "stdout" if i % 2 == 0 else "stderr"
        assert await store.writer.append_log(task.id, stream, piece) == sum(
            map(len, pieces[: i + 1])
        )
    reread = await store.reader.task(task.id)
    assert reread is not None and reread.log_size == len(written)  # offsets count every byte
    assert await stored(store, task.id) == written[:2048] + written[-2048:]
    chunks = await store.reader.logs(task.id)
    offsets = [(c.offset, c.end) for c in chunks]
    assert offsets == sorted(offsets) and all(a[1] <= b[0] for a, b in itertools.pairwise(offsets))
    assert offsets[0][0] == 0 and offsets[-1][1] == len(written)
    # a reader inside the hole continues at the first byte of the tail, never before
    hole = await store.reader.logs(task.id, offset=5000)
    after = [c for c in hole if c.end > 5000]
    assert after[0].offset == len(written) - 2048
    events = [e for e in await store.reader.events(task_id=task.id) if e.kind == "log_truncated"]
    assert len(events) == 1
    assert events[0].data == {
        "max_log_bytes": 4096, "head_bytes": 2048, "tail_bytes": 2048, "dropped_from": 2048
    }  # fmt: skip


async def test_a_chunk_stored_whole_across_the_head_is_cut_when_the_cap_is_passed(
    store: Store,
) -> None:
    store.writer.log_caps = LogCaps(default=4096)
    task, _ = await store.writer.create_task(draft())
    written = bytes(i % 253 for i in range(9000))
    for piece in (written[:1500], written[1500:3500], written[3500:4000], written[4000:]):
        await store.writer.append_log(task.id, "stdout", piece)  # 1500..3500 spans 2048
    assert await stored(store, task.id) == written[:2048] + written[-2048:]


async def test_a_chunk_larger_than_the_cap_keeps_its_head_and_tail(store: Store) -> None:
    store.writer.log_caps = LogCaps(default=2048)
    task, _ = await store.writer.create_task(draft())
    big = bytes(i % 251 for i in range(10000))
    assert await store.writer.append_log(task.id, "stdout", big) == 10000
    assert await stored(store, task.id) == big[:1024] + big[-1024:]
    await store.writer.append_log(task.id, "stdout", b"z" * 10)
    assert await stored(store, task.id) == big[:1024] + (big + b"z" * 10)[-1024:]
    kinds = [e.kind for e in await store.reader.events(task_id=task.id)]
    assert kinds.count("log_truncated") == 1


async def test_output_under_the_cap_is_all_kept(store: Store) -> None:
    store.writer.log_caps = LogCaps(default=4096)
    task, _ = await store.writer.create_task(draft())
    for _ in range(4):
        await store.writer.append_log(task.id, "stdout", b"y" * 1024)
    assert await stored(store, task.id) == b"y" * 4096
    assert "log_truncated" not in [e.kind for e in await store.reader.events(task_id=task.id)]


def test_sqlite_says_full_as_the_writer_expects(tmp_path: Path) -> None:
    """The classification the writer relies on: a full disk is an OperationalError."""
    conn = sqlite3.connect(tmp_path / "x.db")
    conn.execute("CREATE TABLE t (b BLOB)")
    conn.execute("PRAGMA max_page_count = 3")
    with pytest.raises(sqlite3.OperationalError, match="database or disk is full"):
        conn.execute("INSERT INTO t VALUES (zeroblob(100000))")
    conn.close()
