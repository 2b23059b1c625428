"""``GET /v1/tasks/{id}/logs``: output so far as text, or a live SSE tail that resumes exactly.

The text is the bytes the task wrote, exactly as stored (never re-encoded: bytes
that are not UTF-8 pass unchanged), read and sent 1 MiB at a time. The SSE tail
replays in reads of ``REPLAY_BYTES``, so a client that is slow to take them holds
at most one read while it waits (see `egw.web.sse` for the budget that cuts it off).
"""

from __future__ import annotations

from aiohttp import web

from egw.core.access import Scope
from egw.errors import InvalidRequest
from egw.web import schemas
from egw.web.edge import principal, stream_response
from egw.web.keys import log_channels_key, reads_key
from egw.web.sse import SSEResponse, SSEStream, log_frame, serve_stream, sse_headers

routes = web.RouteTableDef()

REPLAY_BYTES = 256 << 10  # the output one step of a replay reads and frames


@routes.get("/v1/tasks/{id}/logs")
async def logs(request: web.Request) -> web.StreamResponse:
    scope = principal(request).reads()
    task = await request.app[reads_key].task(request.match_info["id"], scope=scope)
    group = request.query.get("stream") or None
    if group not in (None, "stdout", "stderr"):
        raise InvalidRequest("stream must be stdout or stderr", field="stream")
    cursor = schemas.last_event_id(request, query="offset")
    if schemas.wants_sse(request):
        start = cursor or 0
        if request.method == "HEAD":
            return web.Response(headers=sse_headers())
        return await _tail_sse(request, task.id, start, group, scope)
    limit = None
    if "limit" in request.query:
        limit = schemas.int_query(request, "limit", default=0, lo=1, hi=schemas.MAX_CURSOR)
    return await _plain(request, task.id, cursor or 0, group, limit, scope)


async def _plain(
    request: web.Request,
    task_id: str,
    start: int,
    group: str | None,
    limit: int | None,
    scope: Scope,
) -> web.StreamResponse:
    """The output in [start, start + limit) (to its end without a limit), cut exactly at
    those byte offsets: a reader of a large log (the console) asks for one window at a time."""
    reads = request.app[reads_key]
    task = await reads.task(task_id, scope=scope)
    end = task.log_size if limit is None else min(task.log_size, start + limit)
    resp: web.StreamResponse = stream_response(
        request,
        {
            "Content-Type": "text/plain; charset=utf-8",
            # the offset to ask for next time (?offset=), the whole size, whether more can come
            "X-Egw-Offset": str(end),
            "X-Egw-Size": str(task.log_size),
            "X-Egw-Complete": "true" if task.status.terminal and task.logs_complete else "false",
        },
    )
    await resp.prepare(request)
    position = start
    while position < end:
        chunks = await reads.log_chunks(task_id, position, scope=scope)
        if not chunks:
            break
        # the first chunk starts at ``position``; the last is cut at ``end``
        parts = [
            c.data[: end - c.offset] for c in chunks if c.offset < end and group in (None, c.stream)
        ]
        position = chunks[-1].end
        await resp.write(b"".join(parts))
    await resp.write_eof()
    return resp


async def _tail_sse(
    request: web.Request, task_id: str, start: int, group: str | None, scope: Scope
) -> web.StreamResponse:
    reads = request.app[reads_key]
    resp = stream_response(request, sse_headers(), SSEResponse)
    await resp.prepare(request)
    stream = SSEStream(request, resp)
    channel = request.app[log_channels_key].join(task_id)
    channel.add(stream, group)

    async def replay() -> None:
        await stream.write(b"retry: 1000\n\n")
        position = start
        frames: list[bytes] = []
        await channel.fill_window()
        from_memory = channel.window.covers(position)
        if from_memory:  # no query, and usually no wait at all
            frames = channel.window_frames(position, group)
            position = max(position, channel.window.end)
        while not from_memory:
            chunks = await reads.log_chunks(
                task_id, position, limit_bytes=REPLAY_BYTES, scope=scope
            )
            if not chunks:
                break
            replayed = [log_frame(c) for c in chunks if group in (None, c.stream)]
            position = chunks[-1].end
            await stream.write(b"".join(replayed))
        task = await reads.task(task_id, scope=scope)
        # no await from here on until the stream is live: nothing can slip between
        # (and what arrived during an await above is in the stream's backlog)
        channel.go_live(stream, position, task, frames)

    return await serve_stream(resp, stream, replay, channel)
