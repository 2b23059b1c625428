"""The OpenAPI document (`egw/web/openapi.json`) is valid, complete, and true of the server.

* The document: a valid OpenAPI 3.1 document (openapi-spec-validator), every schema a valid
  JSON Schema 2020-12 whose patterns compile, every ``$ref`` resolving, every component used,
  every example valid against its own schema (SSE examples parsed event by event).
* No drift: the routes the app registers are exactly the documented operations (aiohttp's
  implicit HEAD twin of each GET aside); the documented security is what the edge
  does; a method a path lacks is a 405 whose ``Allow`` lists the documented methods.
* The truth: real responses of the app (every route, every status the tests can provoke)
  are checked against the documented response for that status: the status is documented,
  each documented header is there when required and matches its schema, the content type is
  documented, and the body validates (JSON, or each SSE event and its JSON ``data``).

A failing test here means the server and the document disagree: fix the one that is wrong.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import io
import json
import re
from collections.abc import Awaitable, Callable, Iterator
from importlib import resources
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
from aiohttp import ClientResponse, web
from aiohttp.test_utils import TestClient
from jsonschema import Draft202012Validator
from openapi_spec_validator import validate as validate_openapi
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT202012
from support import (
    ADMIN,
    READER,
    WRITER,
    config_dict,
    free_port,
    make_config,
    submit_local,
    wait_terminal,
)

from egw.config import Config
from egw.web.app import create_app
from egw.web.edge import NO_ROUTE

Client = TestClient[web.Request, web.Application]
MakeClient = Callable[..., Awaitable[Client]]

DOC_BYTES = resources.files("egw.web").joinpath("openapi.json").read_bytes()
DOC: dict[str, Any] = json.loads(DOC_BYTES)
URI = "urn:egw:openapi"
REGISTRY: Registry[Any] = Registry().with_resource(
    URI, Resource.from_contents(DOC, default_specification=DRAFT202012)
)
HTTP_METHODS = ("get", "put", "post", "delete", "patch", "head", "options", "trace")
PUSHER_TOKEN = "pusher-token-0123456789"
PUSHER = {"Authorization": f"Bearer {PUSHER_TOKEN}"}  # tasks:write only
NOBODY = {"Authorization": "Bearer not-a-token-0123456789"}
JSON_CT = {"Content-Type": "application/json"}
MAX_INT = 2**62
ALLOWED = ["echo", "true", "sleep", "sh"]


# --- the document as data -----------------------------------------------------------------------


def escape(part: str) -> str:
    return part.replace("~", "~0").replace("/", "~1")


def pointer(*parts: str) -> str:
    return "".join("/" + escape(p) for p in parts)


def at(ptr: str) -> Any:
    node: Any = DOC
    for raw in ptr.split("/")[1:]:
        part = raw.replace("~1", "/").replace("~0", "~")
        node = node[int(part)] if isinstance(node, list) else node[part]
    return node


def follow(ptr: str) -> str:
    """The pointer of what ``ptr`` is, after any chain of local ``$ref``."""
    for _ in range(20):
        node = at(ptr)
        if not (isinstance(node, dict) and "$ref" in node):
            return ptr
        ref = node["$ref"]
        assert ref.startswith("#/"), f"non-local $ref {ref} at {ptr}"
        ptr = ref[1:]
    raise AssertionError(f"$ref loop at {ptr}")


def validator(ptr: str) -> Draft202012Validator:
    return Draft202012Validator(
        {"$ref": f"{URI}#{ptr}"},
        registry=REGISTRY,
        format_checker=Draft202012Validator.FORMAT_CHECKER,
    )


def assert_valid(ptr: str, instance: Any, what: str) -> None:
    errors = sorted(validator(ptr).iter_errors(instance), key=lambda e: str(list(e.absolute_path)))
    assert not errors, f"{what} does not match {ptr}:\n" + "\n".join(
        f"  at {list(e.absolute_path)}: {e.message[:300]}" for e in errors[:5]
    )


def operations() -> Iterator[tuple[str, str, dict[str, Any]]]:
    for path, item in DOC["paths"].items():
        for method in HTTP_METHODS:
            if method in item:
                yield path, method, item[method]


def walk(node: Any, ptr: str = "") -> Iterator[tuple[str, Any]]:
    yield ptr, node
    if isinstance(node, dict):
        for key, value in node.items():
            yield from walk(value, f"{ptr}/{escape(key)}")
    elif isinstance(node, list):
        for i, value in enumerate(node):
            yield from walk(value, f"{ptr}/{i}")


def schema_pointers() -> Iterator[str]:
    """Every place that holds a JSON Schema: components, parameters, headers, media types."""
    for name in DOC["components"]["schemas"]:
        yield pointer("components", "schemas", name)
    for ptr, node in walk(DOC):
        if ptr.startswith("/components/schemas"):
            continue
        if isinstance(node, dict) and isinstance(node.get("schema"), dict):
            yield f"{ptr}/schema"


# --- SSE ------------------------------------------------------------------------------------------


def parse_sse(raw: bytes) -> list[dict[str, Any]]:
    """Events as an EventSource reads them (WHATWG): ``event``, ``data``, the last ``id`` seen."""
    events: list[dict[str, Any]] = []
    last_id: str | None = None
    current: dict[str, str] = {}
    data: list[str] = []
    for line in re.split(r"\r\n|\r|\n", raw.decode("utf-8")):
        if line == "":
            if data:
                event: dict[str, Any] = {
                    "event": current.get("event") or "message",
                    "data": "\n".join(data),
                }
                if last_id is not None:
                    event["id"] = last_id
                events.append(event)
            current, data = {}, []
        elif line.startswith(":"):
            continue
        else:
            field, _, value = line.partition(":")
            value = value.removeprefix(" ")
            if field == "data":
                data.append(value)
            elif field == "event":
                current["event"] = value
            elif field == "id":
                last_id = value
            elif field == "retry":
                assert value.isdigit(), line
            else:
                raise AssertionError(f"unknown SSE field in {line!r}")
    return events


def check_sse_events(schema_ptr: str, events: list[dict[str, Any]]) -> list[tuple[str, Any]]:
    """Each event against the media type's event schema, and its ``data`` against its
    ``contentSchema``; returns (event name, decoded data) pairs."""
    decoded = []
    event_ptr = follow(schema_ptr)
    for event in events:
        assert_valid(event_ptr, event, f"SSE event {event['event']!r}")
        branches = [
            f"{event_ptr}/oneOf/{i}" for i in range(len(at(event_ptr).get("oneOf", [])))
        ] or [event_ptr]
        matching = [
            b for b in branches if at(f"{b}/properties/event").get("const") == event["event"]
        ]
        assert len(matching) == 1, f"no one schema for event {event['event']!r}"
        data = json.loads(event["data"])
        assert_valid(
            f"{matching[0]}/properties/data/contentSchema",
            data,
            f"data of event {event['event']!r}",
        )
        decoded.append((event["event"], data))
    return decoded


# --- checking a real response against the document ------------------------------------------------


def media_key(content: dict[str, Any], content_type: str) -> str:
    if content_type in content:
        return content_type
    main = content_type.split(";")[0].strip().lower()
    for key in content:
        if key.split(";")[0].strip().lower() == main and ";" not in key:
            return key
    raise AssertionError(
        f"Content-Type {content_type!r} is not documented (documented: {list(content)})"
    )


def check(method: str, template: str, status: int, headers: Any, body: bytes) -> Any:
    """Hold one response to the document; returns the decoded body (JSON, SSE events, or text)."""
    op_ptr = pointer("paths", template, method.lower())
    responses = at(op_ptr)["responses"]
    assert str(status) in responses, (
        f"{method} {template} answered {status}, which is not documented "
        f"(documented: {sorted(responses)}): {body[:300]!r}"
    )
    resp_ptr = follow(f"{op_ptr}/responses/{status}")
    documented = at(resp_ptr)
    for name in documented.get("headers", {}):
        header_ptr = follow(f"{resp_ptr}/headers/{escape(name)}")
        header = at(header_ptr)
        value = headers.get(name)
        if value is None:
            assert not header.get("required"), f"{method} {template} {status}: no {name} header"
            continue
        if header.get("schema", {}).get("type") == "integer" and value.isdigit():
            value = int(value)  # a header is text: an integer one is held to its schema as one
        assert_valid(f"{header_ptr}/schema", value, f"{method} {template} {status} header {name}")
    content = documented.get("content")
    if not content:
        assert body == b"", f"{method} {template} {status} documents no body, got {body[:200]!r}"
        return None
    content_type = headers.get("Content-Type", "")
    key = media_key(content, content_type)
    schema_ptr = f"{resp_ptr}/content/{escape(key)}/schema"
    main = key.split(";")[0].strip()
    if main == "application/json":
        value = json.loads(body)
        assert_valid(schema_ptr, value, f"{method} {template} {status} body")
        return value
    if main == "text/event-stream":
        return check_sse_events(schema_ptr, parse_sse(body))
    # text: the logs' output, the console's files (HTML, scripts, the stylesheet, an SVG icon)
    assert main.startswith("text/") or main == "image/svg+xml", key
    text = body.decode("utf-8")
    assert_valid(schema_ptr, text, f"{method} {template} {status} body")
    return text


async def call(
    api: Client,
    method: str,
    template: str,
    url: str | None = None,
    *,
    status: int | None = None,
    sse_frames: int | None = None,
    timeout: float = 10,
    **kwargs: Any,
) -> Any:
    """Send a request, check the response against the document, return the decoded body."""
    resp = await api.request(method, url or template, **kwargs)
    try:
        if sse_frames is not None:
            body = await read_sse(resp, frames=sse_frames, timeout=timeout)
        else:
            body = await asyncio.wait_for(resp.read(), timeout)
    finally:
        resp.close()
    if status is not None:
        assert resp.status == status, f"{method} {url or template}: {resp.status} {body[:500]!r}"
    return check(method, template, resp.status, resp.headers, body)


async def read_sse(resp: ClientResponse, *, frames: int, timeout: float) -> bytes:
    """Read an event stream until it ends, it holds ``frames`` events with data, or ``timeout``."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    buf = b""
    while len(parse_sse(buf.rpartition(b"\n\n")[0] + b"\n\n")) < frames:
        left = deadline - loop.time()
        if left <= 0:
            break
        try:
            chunk = await asyncio.wait_for(resp.content.readany(), left)
        except TimeoutError:
            break
        if not chunk:
            break
        buf += chunk
    return buf.rpartition(b"\n\n")[0] + b"\n\n" if b"\n\n" in buf else b""


# --- fixtures -------------------------------------------------------------------------------------


def tokens(tmp_path: Path) -> list[dict[str, Any]]:
    extra = {"name": "pusher", "token": PUSHER_TOKEN, "scopes": ["tasks:write"]}
    return [*config_dict(tmp_path)["auth"]["tokens"], extra]


@pytest.fixture
def cfg(tmp_path: Path) -> Config:
    """The shared `api` fixture's config, plus a write-only token and an allowlist (for 403s)."""
    return make_config(
        tmp_path,
        {
            "auth": {"tokens": tokens(tmp_path)},
            "providers": {"local": {"allowed_commands": ALLOWED}},
        },
    )


@pytest.fixture
def other_app(
    aiohttp_client: MakeClient, tmp_path: Path
) -> Callable[[str, dict[str, Any]], Awaitable[Client]]:
    """A client of an app on another config (its own database)."""

    async def make(name: str, overrides: dict[str, Any]) -> Client:
        where = tmp_path / name
        where.mkdir()
        return await aiohttp_client(create_app(make_config(where, overrides)))

    return make


# --- the document itself --------------------------------------------------------------------------


def test_the_document_is_valid_openapi_3_1() -> None:
    assert DOC["openapi"].startswith("3.1.")
    validate_openapi(DOC)  # the OpenAPI 3.1 meta-schema and its JSON Schema dialect


def test_every_schema_is_valid_json_schema_and_every_pattern_compiles() -> None:
    for ptr in schema_pointers():
        Draft202012Validator.check_schema(at(ptr))
    for ptr, node in walk(DOC):
        if ptr.endswith("/pattern") and isinstance(node, str):
            re.compile(node)  # the server's own regex engine must read it too


def test_every_ref_resolves_and_every_component_is_used() -> None:
    refs = {
        node["$ref"]
        for _, node in walk(DOC)
        if isinstance(node, dict) and isinstance(node.get("$ref"), str)
    }
    for ref in refs:
        assert ref.startswith("#/"), ref
        at(ref[1:])  # raises if it does not resolve
    # MethodNotAllowed and RouteNotFound describe answers of no one operation (a method or a path
    # the server lacks): the tests below hold real 405s and 404s to them
    path_level = {"#/components/responses/MethodNotAllowed", "#/components/responses/RouteNotFound"}
    for kind in ("schemas", "parameters", "headers", "responses"):
        for name in DOC["components"][kind]:
            ref = f"#/components/{kind}/{name}"
            assert ref in refs or ref in path_level, f"{ref} is not used"
    for ref in path_level:
        at(ref[1:])


SUBSCHEMA_MAPS = ("properties", "patternProperties", "$defs")
SUBSCHEMA_LISTS = ("oneOf", "anyOf", "allOf", "prefixItems")
SUBSCHEMA_ONE = (
    "items",
    "additionalProperties",
    "propertyNames",
    "contentSchema",
    "not",
    "if",
    "then",
    "else",
)


def subschemas(ptr: str) -> Iterator[str]:
    """``ptr`` and every schema inside it, by the JSON Schema keywords that hold schemas."""
    yield ptr
    node = at(ptr)
    if not isinstance(node, dict):
        return
    for key in SUBSCHEMA_MAPS:
        for name in node.get(key, {}):
            yield from subschemas(f"{ptr}/{key}/{escape(name)}")
    for key in SUBSCHEMA_LISTS:
        for i in range(len(node.get(key, []))):
            yield from subschemas(f"{ptr}/{key}/{i}")
    for key in SUBSCHEMA_ONE:
        if isinstance(node.get(key), dict):
            yield from subschemas(f"{ptr}/{key}")


def test_every_example_matches_its_schema() -> None:
    checked = 0
    # the JSON Schema keyword: a list of instances
    for root in schema_pointers():
        for ptr in subschemas(root):
            for example in at(ptr).get("examples", []):
                assert_valid(ptr, example, f"example at {ptr}")
                checked += 1
    # OpenAPI's example / examples of parameters, headers and media types (what holds a schema)
    for ptr, node in walk(DOC):
        if not (isinstance(node, dict) and isinstance(node.get("schema"), dict)):
            continue
        samples = [node["example"]] if "example" in node else []
        samples += [
            at(follow(f"{ptr}/examples/{escape(name)}"))["value"]
            for name in node.get("examples", {})
        ]
        for sample in samples:
            if ptr.endswith("/text~1event-stream"):
                assert check_sse_events(f"{ptr}/schema", parse_sse(sample.encode())), ptr
            else:
                assert_valid(f"{ptr}/schema", sample, f"example at {ptr}")
            checked += 1
    assert checked > 40, checked


def test_operation_ids_are_unique_and_every_error_has_the_one_shape() -> None:
    ids = [op["operationId"] for _, _, op in operations()]
    assert len(ids) == len(set(ids)), ids
    for path, method, op in operations():
        assert op.get("summary") and op.get("responses"), (method, path)
        for status in op["responses"]:
            resp_ptr = follow(pointer("paths", path, method, "responses", status))
            assert at(resp_ptr).get("headers", {}).get("X-Request-ID"), (method, path, status)
            # /readyz answers 503 with its own report (the same body as its 200): not an error
            if int(status) >= 400 and (path, status) != ("/readyz", "503"):
                content = at(resp_ptr)["content"]
                assert list(content) == ["application/json"], (method, path, status)
                assert content["application/json"]["schema"] == {
                    "$ref": "#/components/schemas/Error"
                }


async def test_the_served_document_is_the_packaged_file(api: Client) -> None:
    resp = await api.get("/v1/openapi.json")
    body = await resp.read()
    assert resp.status == 200 and body == DOC_BYTES
    check("GET", "/v1/openapi.json", resp.status, resp.headers, body)


# --- no drift between the app's routes, its auth, and the document --------------------------------


def documented() -> set[tuple[str, str]]:
    return {(method.upper(), path) for path, method, _ in operations()}


def registered(app: web.Application) -> set[tuple[str, str]]:
    """The app's routes, but the catch-all that answers 404 and 405 for the others."""
    return {
        (r.method, r.resource.canonical)
        for r in app.router.routes()
        if r.resource is not None and r.resource.name != NO_ROUTE
    }


def test_every_route_of_the_app_is_documented_and_every_documented_route_exists(
    cfg: Config,
) -> None:
    routes = registered(create_app(cfg))
    # aiohttp gives every GET a HEAD twin (same handler): documented once, in info.description
    heads = {path for method, path in routes if method == "HEAD"}
    gets = {path for method, path in routes if method == "GET"}
    assert heads == gets
    routes = {(method, path) for method, path in routes if method != "HEAD"}
    assert routes - documented() == set(), "routes the document lacks"
    assert documented() - routes == set(), "documented routes the app lacks"


def example_url(template: str) -> str:
    """The template with each path parameter set to its documented example."""
    examples: dict[str, str] = {}
    for path, _, op in operations():
        if path != template:
            continue
        for param in op.get("parameters", []):
            param = at(follow(param["$ref"][1:])) if "$ref" in param else param
            if param["in"] == "path":
                examples[param["name"]] = quote(str(param["example"]), safe="")
    return re.sub(r"\{(\w+)\}", lambda m: examples[m.group(1)], template)


def requires_token(op: dict[str, Any]) -> bool:
    security = op.get("security", DOC["security"])
    return bool(security) and all(requirement for requirement in security)


async def test_the_documented_security_is_what_the_server_does(api: Client) -> None:
    """Without a token, every operation that requires one is a 401 (with WWW-Authenticate), and
    no other is; a wrong token is a 401 too."""
    for template, method, op in operations():
        url = example_url(template)
        kwargs: dict[str, Any] = {"json": {}} if "requestBody" in op else {}
        for headers in ({}, NOBODY):
            resp = await api.request(method.upper(), url, headers=headers, **kwargs)
            body = (
                await read_sse(resp, frames=1, timeout=0.5)
                if resp.content_type == "text/event-stream"
                else await resp.read()
            )
            resp.close()
            if requires_token(op):
                assert resp.status == 401, (method, url, resp.status, body[:200])
                check(method, template, resp.status, resp.headers, body)
            else:
                assert resp.status != 401, (method, url, body[:200])


def paths_matching(url: str) -> list[str]:
    return [
        t for t in DOC["paths"] if re.fullmatch(re.sub(r"\\\{\w+\\\}", "[^/]+", re.escape(t)), url)
    ]


async def test_a_method_a_path_lacks_is_a_405_with_the_documented_methods(api: Client) -> None:
    for template in DOC["paths"]:
        url = example_url(template)
        allowed: set[str] = set()
        for t in paths_matching(url):
            allowed |= {m.upper() for m in HTTP_METHODS if m in DOC["paths"][t]}
        if "GET" in allowed:
            allowed.add("HEAD")
        resp = await api.request("PATCH", url, headers=ADMIN)
        body = await resp.read()
        assert resp.status == 405, (url, resp.status, body)
        assert set(resp.headers["Allow"].split(",")) == allowed, (url, resp.headers["Allow"])
        check_component("MethodNotAllowed", resp, body)


async def test_an_unknown_path_is_a_404_in_the_error_shape(api: Client) -> None:
    for url, headers in (("/v1/nothing-here", ADMIN), ("/nothing-here", {})):
        resp = await api.get(url, headers=headers)
        body = await resp.read()
        assert resp.status == 404
        check_component("RouteNotFound", resp, body)


def check_component(name: str, resp: ClientResponse, body: bytes) -> None:
    """A path-level answer (404, 405) against components.responses.NAME."""
    ptr = pointer("components", "responses", name)
    for header in at(ptr).get("headers", {}):
        header_ptr = follow(f"{ptr}/headers/{escape(header)}")
        assert header in resp.headers, header
        assert_valid(f"{header_ptr}/schema", resp.headers[header], header)
    assert resp.content_type == "application/json"
    assert_valid(f"{ptr}/content/application~1json/schema", json.loads(body), name)


# --- real responses, route by route ---------------------------------------------------------------


@pytest.mark.parametrize("path", ["/v1/tasks", "/v1/tasks/submit"])
async def test_submit(api: Client, path: str) -> None:
    body = {
        "provider": "local",
        "task": {"command": "echo", "args": ["hi"]},
        "name": "n",
        "labels": {"a": "b"},
        "timeout_s": 30,
    }
    key = {"Idempotency-Key": f"k-{path}"}
    task = await call(api, "POST", path, json=body, headers={**WRITER, **key}, status=202)
    again = await api.post(path, json=body, headers={**WRITER, **key})
    assert again.headers["Idempotent-Replayed"] == "true"
    check("POST", path, again.status, again.headers, await again.read())
    assert (await again.json())["id"] == task["id"]
    await call(
        api, "POST", path, json={**body, "name": "other"}, headers={**WRITER, **key}, status=409
    )
    await call(
        api, "POST", path, json={"provider": "local", "task": {}}, headers=WRITER, status=400
    )
    await call(api, "POST", path, json={"provider": "nope", "task": {}}, headers=WRITER, status=400)
    await call(api, "POST", path, data=b"{", headers={**WRITER, **JSON_CT}, status=400)
    await call(
        api, "POST", path, json=body, headers={**WRITER, "Idempotency-Key": "x" * 256}, status=400
    )
    await call(
        api, "POST", path, data=b"{}", headers={**WRITER, "Content-Type": "text/plain"}, status=415
    )
    await call(
        api,
        "POST",
        path,
        data=io.BytesIO(b" " * (1024 * 1024 + 1)),
        headers={**WRITER, **JSON_CT},
        status=413,
    )
    await call(api, "POST", path, json=body, status=401)
    await call(api, "POST", path, json=body, headers=READER, status=403)
    await call(
        api,
        "POST",
        path,
        json={"provider": "local", "task": {"command": "ls"}},
        headers=WRITER,
        status=403,
    )
    await wait_terminal(api, task["id"])


async def test_submit_upstream_unavailable_is_a_503(
    other_app: Callable[..., Awaitable[Client]],
) -> None:
    dead = f"http://127.0.0.1:{free_port()}"
    client = await other_app("nomad", {"providers": {"nomad": {"enabled": True, "address": dead}}})
    task = {"provider": "nomad", "task": {"job_id": "openapi", "image": "alpine:3.20"}}
    await call(client, "POST", "/v1/tasks", json=task, headers=WRITER, status=503)
    # the failures have opened the breaker toward Nomad: /readyz and the gateway's events
    # show it in their documented shapes
    ready = await call(client, "GET", "/readyz", status=200)
    assert ready["providers"]["nomad"]["circuit"]["state"] == "open"
    for _ in range(200):
        page = await call(client, "GET", "/v1/gateway/events", headers=READER, status=200)
        if page["events"]:
            break
        await asyncio.sleep(0.01)
    assert page["events"][0]["kind"] == "circuit_open"
    path = "/v1/gateway/events?limit=0"
    await call(client, "GET", "/v1/gateway/events", path, headers=READER, status=400)


async def test_list(api: Client) -> None:
    for i in range(3):
        await submit_local(api, "true", labels={"n": str(i)})
    page = await call(
        api,
        "GET",
        "/v1/tasks",
        "/v1/tasks?limit=2&status=succeeded&status=running"
        "&status=pending&status=queued&status=failed&provider=local&label=n=1",
        headers=READER,
        status=200,
    )
    page = await call(api, "GET", "/v1/tasks", "/v1/tasks?limit=2", headers=READER, status=200)
    assert len(page["tasks"]) == 2 and page["next_cursor"]
    rest = await call(
        api,
        "GET",
        "/v1/tasks",
        f"/v1/tasks?limit=2&cursor={page['next_cursor']}",
        headers=READER,
        status=200,
    )
    assert len(rest["tasks"]) == 1 and rest["next_cursor"] is None
    for bad in ("limit=0", "limit=501", "status=done", "label=novalue", "cursor=!!"):
        await call(api, "GET", "/v1/tasks", f"/v1/tasks?{bad}", headers=READER, status=400)
    await call(api, "GET", "/v1/tasks", status=401)
    await call(api, "GET", "/v1/tasks", headers=PUSHER, status=403)


@pytest.mark.parametrize("suffix", ["", "/status"])
async def test_get_task(api: Client, suffix: str) -> None:
    template = "/v1/tasks/{id}" + suffix
    task = await submit_local(api, "echo", "x")
    done = await wait_terminal(api, task["id"])
    url = f"/v1/tasks/{task['id']}{suffix}"
    got = await call(api, "GET", template, url, headers=READER, status=200)
    assert got == done
    etag = f'"{done["index"]}"'
    await call(
        api, "GET", template, url, headers={**READER, "If-None-Match": f'W/"0", {etag}'}, status=304
    )
    await call(
        api, "GET", template, f"{url}?index={done['index']}&wait=50ms", headers=READER, status=200
    )
    await call(api, "GET", template, f"{url}?index=0&wait=1.5s", headers=READER, status=200)
    for bad in ("index=x", "index=-1", f"index={MAX_INT + 1}", "index=0&wait=soon"):
        await call(api, "GET", template, f"{url}?{bad}", headers=READER, status=400)
    await call(api, "GET", template, f"/v1/tasks/t_missing{suffix}", headers=READER, status=404)
    await call(api, "GET", template, url, status=401)
    await call(api, "GET", template, url, headers=PUSHER, status=403)


@pytest.mark.parametrize(
    ("method", "template"), [("POST", "/v1/tasks/{id}/cancel"), ("DELETE", "/v1/tasks/{id}")]
)
async def test_cancel(api: Client, method: str, template: str) -> None:
    sleeper = await submit_local(api, "sleep", "30")
    url = template.replace("{id}", sleeper["id"])
    cancelling = await call(api, method, template, url, headers=WRITER, status=202)
    assert cancelling["status"] in ("cancelling", "cancelled")
    again = await call(api, method, template, f"{url}?force=TRUE", headers=WRITER, status=202)
    assert again["status"] in ("cancelling", "cancelled")
    await call(api, method, template, f"{url}?force=maybe", headers=WRITER, status=400)
    finished = await submit_local(api, "true")
    await wait_terminal(api, finished["id"])
    await call(
        api, method, template, template.replace("{id}", finished["id"]), headers=WRITER, status=409
    )
    await call(
        api, method, template, template.replace("{id}", "t_missing"), headers=WRITER, status=404
    )
    await call(api, method, template, url, status=401)
    await call(api, method, template, url, headers=READER, status=403)
    await wait_terminal(api, sleeper["id"])


async def test_logs_text_and_sse(api: Client) -> None:
    template = "/v1/tasks/{id}/logs"
    task = await submit_local(api, "sh", "-c", "echo out; echo err >&2")
    await wait_terminal(api, task["id"])
    url = f"/v1/tasks/{task['id']}/logs"
    text = await call(api, "GET", template, url, headers=READER, status=200)
    assert sorted(text.splitlines()) == ["err", "out"]
    assert (
        await call(
            api, "GET", template, f"{url}?stream=stderr&offset=0", headers=READER, status=200
        )
        == "err\n"
    )
    events = await call(
        api,
        "GET",
        template,
        url,
        headers={**READER, "Accept": "text/event-stream"},
        sse_frames=100,
        status=200,
    )
    assert [name for name, _ in events] == ["log", "log", "status", "end"]
    resumed = await call(
        api,
        "GET",
        template,
        f"{url}?follow=1&stream=stdout",
        headers={**READER, "Last-Event-ID": "4"},
        sse_frames=100,
        status=200,
    )
    assert [name for name, _ in resumed][-2:] == ["status", "end"]
    for bad in ("stream=both", "offset=-1", "offset=x", "follow=perhaps"):
        await call(api, "GET", template, f"{url}?{bad}", headers=READER, status=400)
    await call(
        api,
        "GET",
        template,
        url,
        headers={**READER, "Accept": "text/event-stream", "Last-Event-ID": "x"},
        status=400,
    )
    await call(api, "GET", template, "/v1/tasks/t_missing/logs", headers=READER, status=404)
    await call(api, "GET", template, url, status=401)
    await call(api, "GET", template, url, headers=PUSHER, status=403)


async def test_log_windows_cut_exactly_at_byte_offsets(api: Client) -> None:
    template = "/v1/tasks/{id}/logs"
    script = "echo aaaa; sleep 0.1; echo bbbb >&2; sleep 0.1; echo cccc"  # in this order
    task = await submit_local(api, "sh", "-c", script)
    await wait_terminal(api, task["id"])
    url = f"/v1/tasks/{task['id']}/logs"
    resp = await api.get(f"{url}?offset=2&limit=6", headers=READER)
    assert await resp.text() == "aa\nbbb"
    assert (resp.headers["X-Egw-Offset"], resp.headers["X-Egw-Size"]) == ("8", "15")
    check("GET", template, resp.status, resp.headers, b"")
    # one stream: the same window of the whole output, only that stream's bytes in it
    assert await call(api, "GET", template, f"{url}?offset=2&limit=6&stream=stdout",
                      headers=READER, status=200) == "aa\n"  # fmt: skip
    past = await api.get(f"{url}?offset=100&limit=6", headers=READER)
    assert await past.text() == "" and past.headers["X-Egw-Offset"] == "15"
    whole = await api.get(url, headers=READER)
    assert whole.headers["X-Egw-Offset"] == whole.headers["X-Egw-Size"] == "15"
    for bad in ("limit=0", "limit=x", "limit=-3"):
        await call(api, "GET", template, f"{url}?{bad}", headers=READER, status=400)


async def test_list_by_part_of_the_name(api: Client) -> None:
    first = await submit_local(api, "true", name="nightly-build")
    await submit_local(api, "true", name="deploy")
    await submit_local(api, "true")
    found = await call(api, "GET", "/v1/tasks", "/v1/tasks?name=build", headers=READER, status=200)
    assert [t["id"] for t in found["tasks"]] == [first["id"]]
    everyone = await call(api, "GET", "/v1/tasks", "/v1/tasks?name=", headers=READER, status=200)
    assert len(everyone["tasks"]) == 3


async def test_whoami_and_the_console(api: Client) -> None:
    me = await call(api, "GET", "/v1/whoami", headers=READER, status=200)
    assert me == {"name": "reader", "scopes": ["tasks:read"], "namespaces": {"default": ["read"]}}
    await call(api, "GET", "/v1/whoami", status=401)
    await call(api, "GET", "/", status=302, allow_redirects=False)
    await call(api, "GET", "/ui/", status=200)
    await call(api, "GET", "/ui/{file}", "/ui/app.js", status=200)
    await call(api, "GET", "/ui/{file}", "/ui/nothing.js", status=404)


async def test_task_events_json_and_sse(api: Client) -> None:
    template = "/v1/tasks/{id}/events"
    task = await submit_local(api, "true")
    await wait_terminal(api, task["id"])
    url = f"/v1/tasks/{task['id']}/events"
    listed = await call(api, "GET", template, url, headers=READER, status=200)
    assert listed["events"] and listed["last_seq"] == listed["events"][-1]["seq"]
    page = await call(api, "GET", template, f"{url}?after=1&limit=1", headers=READER, status=200)
    assert len(page["events"]) == 1
    streamed = await call(
        api,
        "GET",
        template,
        url,
        headers={**READER, "Accept": "text/event-stream"},
        sse_frames=len(listed["events"]),
        status=200,
    )
    assert [data for _, data in streamed] == listed["events"]
    for bad in ("after=-1", "limit=0", "limit=5001", "after=x"):
        await call(api, "GET", template, f"{url}?{bad}", headers=READER, status=400)
    await call(api, "GET", template, "/v1/tasks/t_missing/events", headers=READER, status=404)
    await call(api, "GET", template, url, status=401)
    await call(api, "GET", template, url, headers=PUSHER, status=403)


async def test_event_stream(api: Client) -> None:
    template = "/v1/events"
    task = await submit_local(api, "true")
    await wait_terminal(api, task["id"])
    events = await call(
        api,
        "GET",
        template,
        f"/v1/events?after=0&task_id={task['id']}&provider=local",
        headers={**READER, "Accept": "text/event-stream"},
        sse_frames=3,
        status=200,
    )
    assert [data["seq"] for _, data in events] == sorted(data["seq"] for _, data in events)
    live = await call(
        api,
        "GET",
        template,
        "/v1/events?follow=1",
        headers={**READER, "Last-Event-ID": "1"},
        sse_frames=2,
        status=200,
    )
    assert live
    # without text/event-stream: the audit query, as JSON
    page = await call(api, "GET", template, "/v1/events?limit=1", headers=ADMIN, status=200)
    assert [e["kind"] for e in page["events"]] == ["submitted"] and page["next_after"] == 1
    await call(api, "GET", template, "/v1/events?actor=admin", headers=READER, status=403)
    await call(api, "GET", template, "/v1/events?since=soon", headers=READER, status=400)
    await call(api, "GET", template, "/v1/events?after=-1", headers=READER, status=400)
    await call(api, "GET", template, headers={**READER, "Last-Event-ID": "x"}, status=400)
    await call(api, "GET", template, status=401)
    await call(api, "GET", template, headers=PUSHER, status=403)


async def test_reset_event_when_the_cursor_is_older_than_retention(
    other_app: Callable[..., Awaitable[Client]],
) -> None:
    client = await other_app("retention", {"storage": {"retention_days": 1e-9}})
    task = await submit_local(client, "true")
    await wait_terminal(client, task["id"])
    await asyncio.sleep(0.05)
    await call(client, "POST", "/v1/admin/prune", headers=ADMIN, status=200)
    events = await call(
        client,
        "GET",
        "/v1/events",
        "/v1/events?after=1",
        headers={**READER, "Accept": "text/event-stream"},
        sse_frames=1,
        timeout=2,
        status=200,
    )
    assert events and events[0][0] == "reset"


async def test_webhooks(other_app: Callable[..., Awaitable[Client]], api: Client) -> None:
    template = "/v1/webhooks/{source}"
    await call(api, "POST", template, "/v1/webhooks/github", json={}, status=404)
    dead = f"http://127.0.0.1:{free_port()}"
    secret = "webhook-secret"
    client = await other_app(
        "github",
        {
            "providers": {
                "github_actions": {
                    "enabled": True,
                    "api_url": dead,
                    "token": "t" * 20,
                    "webhook_secret": secret,
                    "owner": "o",
                    "repo": "r",
                }
            }
        },
    )

    def signed(event: str, body: bytes, delivery: str) -> dict[str, str]:
        digest = hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()
        return {
            "X-GitHub-Event": event,
            "X-GitHub-Delivery": delivery,
            "X-Hub-Signature-256": f"sha256={digest}",
            **JSON_CT,
        }

    ping = json.dumps({"zen": "Design for failure.", "hook_id": 1}).encode()
    await call(
        client,
        "POST",
        template,
        "/v1/webhooks/github",
        data=ping,
        headers=signed("ping", ping, "d1"),
        status=200,
    )
    other = json.dumps({"action": "opened"}).encode()
    await call(
        client,
        "POST",
        template,
        "/v1/webhooks/github",
        data=other,
        headers=signed("issues", other, "d2"),
        status=202,
    )
    await call(
        client,
        "POST",
        template,
        "/v1/webhooks/github",
        data=b"{",
        headers=signed("workflow_run", b"{", "d3"),
        status=400,
    )
    await call(
        client,
        "POST",
        template,
        "/v1/webhooks/github",
        data=ping,
        headers={**signed("ping", ping, "d4"), "X-Hub-Signature-256": "sha256=00"},
        status=401,
    )
    await call(
        client,
        "POST",
        template,
        "/v1/webhooks/github",
        data=io.BytesIO(b"x" * (1024 * 1024 + 1)),
        headers=signed("ping", b"", "d5"),
        status=413,
    )
    await call(client, "POST", template, "/v1/webhooks/gitlab", json={}, status=404)


async def test_prune(api: Client) -> None:
    assert await call(api, "POST", "/v1/admin/prune", headers=ADMIN, status=200) == {
        "status": "pruned"
    }
    await call(api, "POST", "/v1/admin/prune", headers=WRITER, status=403)
    await call(api, "POST", "/v1/admin/prune", status=401)


async def test_health_readiness_and_metrics(
    api: Client, other_app: Callable[..., Awaitable[Client]]
) -> None:
    await call(api, "GET", "/healthz", status=200)
    await call(api, "GET", "/readyz", status=200)
    text = await call(api, "GET", "/metrics", status=200)
    assert "egw_" in text
    nothing = await other_app("noproviders", {"providers": {"local": {"enabled": False}}})
    assert (await call(nothing, "GET", "/readyz", status=503))["status"] == "not_ready"
    locked = await other_app("metricstoken", {"metrics": {"require_token": True}})
    await call(locked, "GET", "/metrics", status=401)
    await call(locked, "GET", "/metrics", headers=READER, status=200)
    off = await other_app("nometrics", {"metrics": {"enabled": False}})
    await call(off, "GET", "/metrics", status=404)


async def test_every_get_answers_head_with_the_headers_and_no_body(api: Client) -> None:
    task = await submit_local(api, "true")
    await wait_terminal(api, task["id"])
    for url, headers in (
        ("/healthz", {}),
        ("/v1/tasks", READER),
        (f"/v1/tasks/{task['id']}", READER),
        (f"/v1/tasks/{task['id']}/logs", READER),
        ("/v1/events", ADMIN),
    ):
        get = await api.get(url, headers=headers)
        await get.read()
        head = await api.head(url, headers=headers)
        assert head.status == get.status == 200 and await head.read() == b""
        assert head.headers["Content-Type"] == get.headers["Content-Type"]


# --- edges the document pins down (each was once a disagreement) ---------------------------------


@pytest.mark.parametrize(
    ("url", "headers"),
    [
        ("/v1/events?after={big}", {}),
        ("/v1/events", {"Last-Event-ID": "{big}"}),
        ("/v1/tasks/{id}/logs?follow=1&offset={big}", {}),
        ("/v1/tasks/{id}/events?follow=1&after={big}", {}),
    ],
)
async def test_an_sse_cursor_beyond_the_documented_maximum_is_a_400(
    api: Client, url: str, headers: dict[str, str]
) -> None:
    """The document bounds every cursor at 2**62, in SSE mode too (unbounded, SQLite overflowed
    after the 200 was sent, and the client was left with a broken stream)."""
    task = await submit_local(api, "true")
    big = str(10**30)
    url = url.format(big=big, id=task["id"])
    headers = {k: v.format(big=big) for k, v in headers.items()}
    resp = await api.get(url, headers={**READER, **headers})
    try:
        body = (
            await read_sse(resp, frames=1, timeout=1)
            if resp.content_type == "text/event-stream"
            else await resp.read()
        )
    finally:
        resp.close()
    assert resp.status == 400, f"{url}: {resp.status} {body[:200]!r}"
    await wait_terminal(api, task["id"])


@pytest.mark.parametrize(
    "body",
    [
        {"provider": "local", "task": {"command": "true"}, "labels": {"team\n": "x"}},
        {"provider": "local", "task": {"command": "true", "env": {"CI\n": "1"}}},
    ],
    ids=["label-name", "env-name"],
)
async def test_a_name_with_a_trailing_newline_is_a_400(api: Client, body: dict[str, Any]) -> None:
    """The document's name patterns match whole strings (``re.match`` with ``$`` would also take
    a trailing newline)."""
    resp = await api.post("/v1/tasks", json=body, headers=WRITER)
    assert resp.status == 400, await resp.text()


async def test_a_malformed_wait_is_a_400_without_index_too(api: Client) -> None:
    """``wait`` is documented as a duration, with or without ``index``."""
    task = await submit_local(api, "true")
    resp = await api.get(f"/v1/tasks/{task['id']}?wait=soon", headers=READER)
    assert resp.status == 400, await resp.text()


@pytest.mark.parametrize("url", ["/v1/events?follow=1", "/v1/tasks/{id}/logs?follow=1"])
async def test_head_of_an_event_stream_sends_no_body(api: Client, url: str) -> None:
    """HEAD answers like GET without a body (RFC 9110): frames written after the head would be
    read by a keep-alive client as the next response's status line."""
    task = await submit_local(api, "true")
    await wait_terminal(api, task["id"])
    reader, writer = await asyncio.open_connection(api.host, api.port)
    try:
        target = url.format(id=task["id"])
        writer.write(
            f"HEAD {target} HTTP/1.1\r\nHost: x\r\n"
            f"Authorization: {READER['Authorization']}\r\n\r\n".encode()
        )
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
        assert head.startswith(b"HTTP/1.1 200"), head
        try:
            extra = await asyncio.wait_for(reader.read(1024), 0.5)
        except TimeoutError:
            extra = b""
        assert extra == b"", f"HEAD {target} sent a body: {extra[:100]!r}"
    finally:
        writer.close()
        await writer.wait_closed()


@pytest.mark.parametrize(
    ("url", "headers"),
    [
        ("/v1/events?after=-1", {"Last-Event-ID": "1"}),
        ("/v1/tasks/{id}/events?follow=1&after=x", {"Last-Event-ID": "1"}),
        ("/v1/tasks/{id}/logs?follow=1&offset=-1", {"Last-Event-ID": "1"}),
        ("/v1/tasks/{id}/logs", {"Last-Event-ID": "x"}),
        ("/v1/tasks/{id}/events", {"Last-Event-ID": "x"}),
    ],
)
async def test_every_cursor_given_is_checked(
    api: Client, url: str, headers: dict[str, str]
) -> None:
    """A malformed cursor is a 400 even where another wins (the header over the query) or where
    the mode does not use it (``Last-Event-ID`` of a plain read): the document gives each one a
    schema, so the server must hold each one to it."""
    task = await submit_local(api, "true")
    await wait_terminal(api, task["id"])
    url = url.format(id=task["id"])
    resp = await api.get(url, headers={**READER, **headers})
    try:
        if resp.content_type == "text/event-stream":
            body = await read_sse(resp, frames=1, timeout=0.5)
        else:
            body = await resp.read()
    finally:
        resp.close()
    assert resp.status == 400, f"{url} {headers}: {resp.status} {body[:200]!r}"
