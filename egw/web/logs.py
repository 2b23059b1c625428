"""``GET /v1/tasks/{id}/logs``: the output so far as text, or a live SSE tail that resumes exactly."""

from __future__ import annotations

import asyncio

import structlog
from aiohttp import web

from egw.errors import InvalidRequest
from egw.service.tasks import TaskService
from egw.core.records import LogChunk
from egw.web import schemas
from egw.web.edge import principal, stream_response
from egw.web.keys import hub_key, log_channels_key, service_key, ticker_key
from egw.web.sse import (
    WINDOW_BYTES,
    LogChannel,
    SSEResponse,
    SSEStream,
    _http_chunk,
    _tail,
    end_frame,
    log_frame,
    serve_stream,
    sse_headers,
    status_frame,
)

log = structlog.get_logger("egw.web.logs")

routes = web.RouteTableDef()


@routes.get("/v1/tasks/{id}/logs")
async def logs(request: web.Request) -> web.StreamResponse:
    principal(request).require("tasks:read")
    service = request.app[service_key]
    task = await service.get(request.match_info["id"])
    group = request.query.get("stream") or None
    if group not in (None, "stdout", "stderr"):
        raise InvalidRequest("stream must be stdout or stderr", field="stream")
    cursor = schemas.last_event_id(request, query="offset")
    if schemas.wants_sse(request):
        start = cursor or 0
        if request.method == "HEAD":
            return web.Response(headers=sse_headers())
        return await _tail_sse(request, task.id, start, group)
    return await _plain(request, task.id, cursor or 0, group)


async def _plain(request: web.Request, task_id: str, start: int, group: str | None) -> web.StreamResponse:
    service = request.app[service_key]
    task = await service.get(task_id)
    resp: web.StreamResponse = stream_response(
        request,
        {
            "Content-Type": "text/plain; charset=utf-8",
            # the offset to ask for next time (?offset=), and whether more can come
            "X-Egw-Offset": str(task.log_size),
            "X-Egw-Complete": "true" if task.status.terminal and task.logs_complete else "false",
        }
    )
    await resp.prepare(request)
    position, end = start, task.log_size
    while position < end:
        chunks = [c for c in await service.store.reader.logs(task_id, offset=position) if c.end > position]
        if not chunks:
            break
        parts = [_tail(c, position).data for c in chunks if c.offset < end and group in (None, c.stream)]
        position = chunks[-1].end
        await resp.write(b"".join(parts))
    await resp.write_eof()
    return resp


async def _tail_sse(request: web.Request, task_id: str, start: int, group: str | None) -> web.StreamResponse:
    app = request.app
    service, ticker, channels = app[service_key], app[ticker_key], app[log_channels_key]
    resp = stream_response(request, sse_headers(), SSEResponse)
    await resp.prepare(request)
    stream = SSEStream(request, resp)
    channel = channels.get(task_id)
    if channel is None or channel.ended:
        channel = channels[task_id] = LogChannel(ticker, task_id, lambda ch: _drop(app, ch))
        app[hub_key].subscribe(task_id, channel)
    channel.add(stream, group)

    async def replay() -> None:
        await stream.write(b"retry: 1000\n\n")
        position = start
        frames: list[bytes] = []
        await _window(channel, service)
        from_memory = channel.covers(position)
        if from_memory:  # no query, and usually no wait at all
            frames = channel.window_frames(position, group)
            position = max(position, channel.window_end)
        while not from_memory:
            chunks: list[LogChunk] = [
                c for c in await service.store.reader.logs(task_id, offset=position) if c.end > position
            ]
            if not chunks:
                break
            replayed = [log_frame(_tail(c, position)) for c in chunks if group in (None, c.stream)]
            position = chunks[-1].end
            await stream.write(b"".join(replayed))
        task = await service.get(task_id)
        # no await from here on until the stream is live: nothing can slip between
        # (and what arrived during an await above is in the stream's backlog)
        frames += [status_frame(task), *channel.go_live(stream, position, task)]
        if channel.task is None or channel.task.index < task.index:
            channel.task = task
        channel.logs_complete = channel.logs_complete or task.logs_complete
        current = channel.task
        if current.status.terminal and channel.logs_complete:
            frames.append(end_frame(current))
            stream.push(_http_chunk(b"".join(frames)))
            stream.finish("end")
        else:
            stream.push(_http_chunk(b"".join(frames)))

    return await serve_stream(resp, stream, replay, channel)


async def _window(channel: LogChannel, service: TaskService) -> None:
    """Until the channel's window is loaded: one read for all the clients joining at once."""
    if channel.window_start is not None:
        return
    if channel.loading is None or channel.loading.done():
        channel.loading = asyncio.create_task(_load_window(channel, service))
        channel.loading.add_done_callback(_loaded)
    try:
        await asyncio.shield(channel.loading)
    except Exception:  # noqa: BLE001 - logged by _loaded; this client replays from the database
        pass


async def _load_window(channel: LogChannel, service: TaskService) -> None:
    task_id = channel.task_id
    task = await service.get(task_id)
    start = max(0, task.log_size - WINDOW_BYTES)
    chunks: list[LogChunk] = []
    position = start
    while True:
        got = [c for c in await service.store.reader.logs(task_id, offset=position) if c.end > position]
        if not got:
            break
        chunks += got
        position = got[-1].end
    channel.anchor(start, chunks)


def _loaded(load: asyncio.Task[None]) -> None:
    if not load.cancelled() and load.exception() is not None:
        log.warning("log_window_load_failed", error=repr(load.exception()))


def _drop(app: web.Application, channel: LogChannel) -> None:
    if app[log_channels_key].get(channel.task_id) is channel:
        del app[log_channels_key][channel.task_id]
    app[hub_key].unsubscribe(channel.task_id, channel)
    app[ticker_key].channels.discard(channel)
