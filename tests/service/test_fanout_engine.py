"""The read service and the fan-out engine without HTTP: `TaskReads` on a running gateway,
and a `LogChannel` driving plain streams (the engine needs no socket, only a `Stream`)."""

from __future__ import annotations

from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient
from support import WRITER, submit_local

from egw.core.access import ALL
from egw.core.model import Task, TaskState, utcnow
from egw.core.records import LogChunk
from egw.errors import NotFound
from egw.service.channels import LogChannel
from egw.service.fanout import Hub
from egw.service.ticker import LIVE, Ticker
from egw.web.keys import reads_key, service_key
from egw.web.sse import SSEFraming, end_frame, http_chunk, log_frame, status_frame

Client = TestClient[web.Request, web.Application]


async def test_reads_answer_tasks_and_log_chunks_from_an_offset(api: Client) -> None:
    reads = api.app[reads_key]
    with pytest.raises(NotFound):
        await reads.task("t_nope", scope=ALL)
    task = await submit_local(api, "sleep", "30")
    service = api.app[service_key]
    await service.append_log(task["id"], "stdout", b"hello ")
    await service.append_log(task["id"], "stderr", b"world\n")
    assert (await reads.task(task["id"], scope=ALL)).log_size == 12
    # the first chunk is cut at the offset; past the end there is nothing
    chunks = await reads.log_chunks(task["id"], 3, scope=ALL)
    assert [(c.offset, c.stream, c.data) for c in chunks] == [
        (3, "stdout", b"lo "),
        (6, "stderr", b"world\n"),
    ]
    assert await reads.log_chunks(task["id"], 12, scope=ALL) == []
    # a page of tasks holds each as the writer's cache has it (the newest projection)
    (listed,) = await reads.tasks(limit=10, scope=ALL)
    assert listed == await reads.task(task["id"], scope=ALL)
    assert (await reads.counts_by_status()) == {"local": {str(listed.status): 1}}
    assert await reads.max_seq() >= 1 and await reads.pruned_seq() == 0
    assert (await api.post(f"/v1/tasks/{task['id']}/cancel", headers=WRITER)).status == 202


class Recorder:
    """A `Stream` that keeps what it is sent."""

    def __init__(self) -> None:
        self.backlog: list[Any] | tuple[()] = []
        self.sent: list[bytes] = []
        self.ended: str | None = None

    def hold(self, item: Any, size: int) -> None:
        assert isinstance(self.backlog, list)
        self.backlog.append(item)

    def push(self, frames: bytes, chunk: bytes) -> bool:
        assert chunk == http_chunk(frames)  # both framings of the same bytes
        self.sent.append(chunk)
        return True

    def finish(self, why: str) -> None:
        self.ended = why


def _task(status: TaskState, index: int, *, logs_complete: bool = False) -> Task:
    now = utcnow()
    return Task(
        id="t_e",
        provider="local",
        spec={},
        created_at=now,
        updated_at=now,
        status=status,
        index=index,
        logs_complete=logs_complete,
    )


async def test_a_stream_goes_live_with_its_backlog_past_the_replay_then_ends() -> None:
    closed: list[LogChannel] = []
    ticker = Ticker(SSEFraming(), flush_s=1, keepalive_s=1)
    # no window is loaded here, so the channel needs no reads
    channel = LogChannel(ticker, "t_e", reads=None, on_empty=closed.append)  # type: ignore[arg-type]
    stream = Recorder()
    channel.add(stream, "stdout")
    a, b = LogChunk("t_e", 0, "stdout", b"abcd"), LogChunk("t_e", 4, "stderr", b"ef")
    channel.on_log(a)
    channel.on_log(b)
    running = _task(TaskState.RUNNING, 2)
    # the replay read up to byte 2: the backlog sends the rest of a, not b (stderr)
    channel.go_live(stream, 2, running, [b"replayed"])
    assert stream.backlog is LIVE and stream.ended is None
    assert stream.sent == [
        http_chunk(
            b"replayed" + status_frame(running) + log_frame(LogChunk("t_e", 2, "stdout", b"cd"))
        )
    ]
    # live now: the next tick frames once for the group, with the end once the task ended
    done = _task(TaskState.SUCCEEDED, 3, logs_complete=True)
    channel.on_log(LogChunk("t_e", 6, "stdout", b"g"))
    channel.on_logs_complete("t_e")
    channel.task = done
    ticker.flush_now()
    assert stream.sent[-1] == http_chunk(
        log_frame(LogChunk("t_e", 6, "stdout", b"g")) + end_frame(done)
    )
    assert stream.ended == "end" and channel.ended
    channel.remove(stream)
    assert closed == [channel]


def test_the_hub_says_when_a_task_gets_its_first_tailer_and_loses_its_last() -> None:
    hub = Hub()
    heard: list[tuple[str, bool]] = []
    hub.attention.append(lambda task_id, tailed: heard.append((task_id, tailed)))

    class Tailer:
        def on_log(self, chunk: LogChunk) -> None: ...

        def on_event(self, event: Any, task: Task | None) -> None: ...

        def on_logs_complete(self, task_id: str) -> None: ...

    one, two = Tailer(), Tailer()
    hub.subscribe("t_1", one)
    hub.subscribe("t_1", two)
    hub.unsubscribe("t_1", one)
    assert heard == [("t_1", True)]  # the second tailer and the first leaving change nothing
    hub.unsubscribe("t_1", two)
    hub.unsubscribe("t_1", two)  # twice: said once
    hub.subscribe("t_2", one)
    assert heard == [("t_1", True), ("t_1", False), ("t_2", True)]
