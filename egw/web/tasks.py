"""Task routes: submit, rerun, list, read (with ETag and blocking queries), cancel."""

from __future__ import annotations

import orjson
from aiohttp import web

from egw.core import fields
from egw.core.access import Scope
from egw.core.model import Task, TaskState
from egw.errors import InvalidRequest
from egw.web import schemas
from egw.web.edge import principal
from egw.web.keys import config_key, reads_key, service_key

routes = web.RouteTableDef()

_IDEMPOTENCY_KEY_MAX = 255
_BODY_CACHE_SIZE = 4096


class BodyCache:
    """Encoded task JSON and ETag by (task id, index): a task's projection changes only
    with its index, so a chat-ops bot polling one task costs one encoding per change."""

    def __init__(self) -> None:
        self._bodies: dict[str, tuple[int, bytes, str]] = {}

    def get(self, task: Task) -> tuple[bytes, str]:
        hit = self._bodies.get(task.id)
        if hit is not None and hit[0] == task.index:
            return hit[1], hit[2]
        # orjson: several times faster than json for a task, and each submit's answer is a
        # fresh one (bench part "submits"); a task holds no integer past 64 bits
        encoded = orjson.dumps(task.to_json())
        if len(self._bodies) >= _BODY_CACHE_SIZE:
            self._bodies.clear()
        etag = f'"{task.index}"'
        self._bodies[task.id] = (task.index, encoded, etag)
        return encoded, etag

    def body(self, task: Task) -> bytes:
        return self.get(task)[0]


body_cache_key = web.AppKey("body_cache", BodyCache)


def _task_response(request: web.Request, task: Task, *, status: int = 200) -> web.Response:
    return web.Response(
        body=request.app[body_cache_key].body(task),
        status=status,
        content_type="application/json",
    )


# First in the file, so first among the /v1/tasks routes aiohttp tries: a poll of
# one task is the most frequent request there is, and each route tried before
# the right one is a regular expression and a coroutine more.
@routes.get("/v1/tasks/{id}/status")
@routes.get("/v1/tasks/{id}")
async def get_task(request: web.Request) -> web.Response:
    scope = principal(request).reads()
    task_id = request.match_info["id"]
    task = await request.app[reads_key].task(task_id, scope=scope)
    if request.query_string:  # plain polls skip query parsing altogether
        max_wait = request.app[config_key].server.max_wait_s
        wait_s = schemas.duration_query(
            request, "wait", default_s=min(30.0, max_wait), max_s=max_wait
        )
        if "index" in request.query:
            index = schemas.int_query(request, "index", default=0, lo=0, hi=schemas.MAX_CURSOR)
            task = await request.app[service_key].wait(
                task_id, index=index, wait_s=wait_s, scope=scope
            )
    body, etag = request.app[body_cache_key].get(task)
    headers = {"ETag": etag, "X-Egw-Index": etag[1:-1], "Cache-Control": "no-cache"}
    if_none_match = request.headers.get("If-None-Match")
    if if_none_match and _matches(if_none_match, etag):
        return web.Response(status=304, headers=headers)
    headers["Content-Type"] = "application/json"
    return web.Response(body=body, headers=headers)


def _idempotency_key(request: web.Request) -> str | None:
    key = request.headers.get("Idempotency-Key")
    if key is not None and not 0 < len(key) <= _IDEMPOTENCY_KEY_MAX:
        raise InvalidRequest(
            f"Idempotency-Key must be 1 to {_IDEMPOTENCY_KEY_MAX} characters",
            field="Idempotency-Key",
        )
    return key


@routes.post("/v1/tasks")
@routes.post("/v1/tasks/submit")
async def submit(request: web.Request) -> web.Response:
    who = principal(request)
    who.require("tasks:write")
    key = _idempotency_key(request)
    req = schemas.submit_request(await schemas.read_json(request))
    task, created = await request.app[service_key].submit(
        req, actor=who.name, idempotency_key=key, access=who.access
    )
    return _accepted(request, task, created)


@routes.post("/v1/tasks/{id}/rerun")
async def rerun(request: web.Request) -> web.Response:
    """A new task with the old one's provider, spec, name, labels and timeout."""
    who = principal(request)
    who.require("tasks:write")
    key = _idempotency_key(request)
    task, created = await request.app[service_key].rerun(
        request.match_info["id"], actor=who.name, idempotency_key=key, access=who.access
    )
    return _accepted(request, task, created)


def _accepted(request: web.Request, task: Task, created: bool) -> web.Response:
    resp = _task_response(request, task, status=202)
    resp.headers["Location"] = f"/v1/tasks/{task.id}"
    resp.headers["ETag"] = f'"{task.index}"'
    if not created:
        resp.headers["Idempotent-Replayed"] = "true"
    return resp


@routes.get("/v1/tasks")
async def list_tasks(request: web.Request) -> web.Response:
    scope = principal(request).reads()
    limit = schemas.int_query(request, "limit", default=50, lo=1, hi=500)
    statuses = request.query.getall("status", [])
    for s in statuses:
        if s not in TaskState.__members__.values():
            raise InvalidRequest(f"unknown status {s!r}", field="status")
    labels: dict[str, str] = {}
    for item in request.query.getall("label", []):
        k, sep, v = item.partition("=")
        if not sep or not k:
            raise InvalidRequest("label filters are written name=value", field="label")
        labels[k] = v
    namespace = request.query.get("namespace")
    if namespace is not None:
        scope = scope.narrow(fields.namespace(namespace))
    if not all(schemas.LABEL_KEY.fullmatch(k) for k in labels):
        # a name no task's label can have (SQLite would refuse it in a JSON path): no match
        scope, labels = Scope(frozenset()), {}
    cursor = request.query.get("cursor")
    before = schemas.decode_cursor(cursor) if cursor else None
    tasks = await request.app[reads_key].tasks(
        provider=request.query.get("provider") or None,
        status=statuses or None,
        labels=labels or None,
        stuck=schemas.bool_query(request, "stuck") if "stuck" in request.query else None,
        name=request.query.get("name") or None,
        before=before,
        limit=limit + 1,
        scope=scope,
    )
    more = len(tasks) > limit
    tasks = tasks[:limit]
    body = {
        "tasks": [t.to_json() for t in tasks],
        "next_cursor": schemas.encode_cursor(tasks[-1].submit_seq) if more else None,
    }
    return web.json_response(body)


def _matches(if_none_match: str, etag: str) -> bool:
    """Whether ``If-None-Match`` names ``etag`` (weak comparison), or is ``*``: any current
    representation, and the task exists (RFC 9110 §13.1.2)."""
    tags = {t.strip().removeprefix("W/") for t in if_none_match.split(",")}
    return etag in tags or "*" in tags


@routes.delete("/v1/tasks/{id}")
@routes.post("/v1/tasks/{id}/cancel")
async def cancel(request: web.Request) -> web.Response:
    who = principal(request)
    who.require("tasks:write")
    force = schemas.bool_query(request, "force")
    task = await request.app[service_key].cancel(
        request.match_info["id"], actor=who.name, force=force, access=who.access
    )
    return _task_response(request, task, status=202)
