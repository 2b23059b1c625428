"""`Reader.logs` over stored output with a hole (a task past its max_log_bytes keeps its
head and its tail): every read resumes exactly, a read inside the hole continues at the
tail, and no read returns more than its byte budget."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from db_support import execute_many

from egw.store import Store

# head: bytes 0..29 in chunks of 10; hole: 30..69; tail: 70..99 in chunks of 10
HEAD = [(0, b"a" * 10), (10, b"b" * 10), (20, b"c" * 10)]
TAIL = [(70, b"x" * 10), (80, b"y" * 10), (90, b"z" * 10)]
STORED = {pos + i: data[i : i + 1] for pos, data in HEAD + TAIL for i in range(len(data))}


@pytest.fixture
async def store(db_address: str) -> AsyncIterator[Store]:
    s = Store(db_address)
    await s.open()
    await execute_many(
        db_address,
        "INSERT INTO log_chunks (task_id, pos, stream, data) VALUES ('t', ?, 'stdout', ?)",
        HEAD + TAIL,
    )
    yield s
    await s.close()


@pytest.mark.parametrize("offset", [0, 5, 10, 29, 30, 50, 69, 70, 75, 99, 100, 500])
@pytest.mark.parametrize("limit", [1, 7, 10, 25, 1000])
async def test_reads_resume_exactly_across_the_hole(store: Store, offset: int, limit: int) -> None:
    chunks = await store.reader.logs("t", offset=offset, limit_bytes=limit)
    got = b"".join(c.data for c in chunks)
    assert len(got) <= limit
    expected_start = next((p for p in sorted(STORED) if p >= offset), None)
    if expected_start is None:
        assert chunks == []
        return
    assert chunks and chunks[0].offset == expected_start
    for chunk in chunks:  # every byte is the stored byte at its offset
        assert all(
            STORED[chunk.offset + i] == chunk.data[i : i + 1] for i in range(len(chunk.data))
        )
    # reading on from each answer's end walks the whole stored output once
    if limit == 7 and offset == 0:
        seen, at = b"", 0
        while part := await store.reader.logs("t", offset=at, limit_bytes=limit):
            seen += b"".join(c.data for c in part)
            at = part[-1].end
        assert seen == b"".join(data for _, data in HEAD + TAIL)
