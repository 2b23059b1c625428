"""Event-log routes: a task's events (JSON or SSE), and all events: the audit query (JSON,
`egw.web.audit`) or the live stream (SSE)."""

from __future__ import annotations

from aiohttp import web

from egw.service.channels import EventFilter
from egw.web import schemas
from egw.web.audit import audit_page, instant_query, kinds_query
from egw.web.edge import principal, stream_response
from egw.web.keys import event_channel_key, reads_key
from egw.web.sse import SSEResponse, SSEStream, encode, event_frame, serve_stream, sse_headers

routes = web.RouteTableDef()


@routes.get("/v1/tasks/{id}/events")
async def task_events(request: web.Request) -> web.StreamResponse:
    scope = principal(request).reads()
    reads = request.app[reads_key]
    task = await reads.task(request.match_info["id"], scope=scope)
    after = schemas.last_event_id(request, query="after") or 0
    limit = schemas.int_query(request, "limit", default=500, lo=1, hi=5000)  # checked either way
    if schemas.wants_sse(request):
        return await _stream(request, after=after, key=(None, task.id, scope))
    events = await reads.events(after=after, task_id=task.id, limit=limit, scope=scope)
    return web.json_response(
        {"events": [e.to_json() for e in events], "last_seq": events[-1].seq if events else after}
    )


@routes.get("/v1/events")
async def all_events(request: web.Request) -> web.StreamResponse:
    """The audit query as JSON; with ``Accept: text/event-stream`` (or ``follow``) the SSE
    of every event of the namespaces the token may read: without a cursor it starts now,
    with ``Last-Event-ID`` (or ``?after=``) it replays from the log first."""
    scope = principal(request).reads()
    if not schemas.wants_sse(request):
        return await audit_page(request)
    # the audit query's parameters do not filter the stream, but they are checked alike: a
    # malformed one is a 400 in both modes, as the one schema of the route says
    kinds_query(request)
    instant_query(request, "since")
    instant_query(request, "until")
    schemas.int_query(request, "limit", default=50, lo=1, hi=500)
    provider = request.query.get("provider") or None
    task_id = request.query.get("task_id") or None
    after = schemas.last_event_id(request, query="after")
    if after is None:
        after = await request.app[reads_key].max_seq()
    return await _stream(request, after=after, key=(provider, task_id, scope))


async def _stream(request: web.Request, *, after: int, key: EventFilter) -> web.StreamResponse:
    if request.method == "HEAD":
        return web.Response(headers=sse_headers())
    app = request.app
    reads, channel = app[reads_key], app[event_channel_key]
    resp = stream_response(request, sse_headers(), SSEResponse)
    await resp.prepare(request)
    stream = SSEStream(request, resp)
    channel.add(stream, key)
    provider, task_id, scope = key

    async def replay() -> None:
        await stream.write(b"retry: 1000\n\n")
        pruned = await reads.pruned_seq()
        if 0 < after < pruned:
            # events after the cursor were pruned by retention: say so, never skip silently
            await stream.write(
                encode(
                    "reset",
                    {
                        "reason": "retention",
                        "pruned_seq": pruned,
                        "message": (
                            "events after your cursor were pruned; re-read the current state"
                        ),
                    },
                    pruned,
                )
            )
        position = after
        while True:
            events = await reads.events(
                after=position, task_id=task_id, provider=provider, limit=1000, scope=scope
            )
            if not events:
                break
            position = events[-1].seq
            await stream.write(b"".join(event_frame(e) for e in events))
        channel.go_live(stream, position)

    return await serve_stream(resp, stream, replay, channel)
