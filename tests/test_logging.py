"""structlog as `egw serve` configures it: one canonical JSON line per request, to stdout and to
a file, and no Authorization header or token anywhere in the output.

`configure_logging` changes process-wide state (structlog's configuration, the
root logger's handlers); the ``json_logging`` fixture puts all of it back, so
tests that run later are unaffected.
"""

from __future__ import annotations

import asyncio
import contextvars
import gc
import json
import logging
from collections.abc import Callable, Iterator
from functools import partial
from pathlib import Path
from typing import Any

import pytest
import structlog
from aiohttp import web
from support import ADMIN_TOKEN, READER, READER_TOKEN, WRITER, WRITER_TOKEN, make_config

from egw.logconfig import configure_logging, log_request, request_id_var
from egw.metrics import HttpRequests
from egw.web.app import create_app
from egw.web.auth import Principal
from egw.web.edge import CLIENT_GONE, Edge

WRONG_TOKEN = "wrong-token-Zq81mXv02LpN"
TOKENS = (WRITER_TOKEN, READER_TOKEN, ADMIN_TOKEN, WRONG_TOKEN)


def _uncache_lazy_loggers() -> None:
    """Module-level ``structlog.get_logger()`` proxies that were used while
    ``cache_logger_on_first_use`` was on keep the configuration of that moment
    (a ``bind`` attribute on the instance); drop it so they follow the current one."""
    for obj in gc.get_objects():
        if isinstance(obj, structlog._config.BoundLoggerLazyProxy) and "bind" in vars(obj):
            del obj.bind


@pytest.fixture
def json_logging(tmp_path: Path) -> Iterator[Callable[[], Path]]:
    """Gives ``configure()``; call it in the test body, where the stdout handler binds
    to the ``sys.stdout`` that capsys reads (a fixture's own stdout is closed after setup)."""
    root = logging.getLogger()
    saved_handlers, saved_level = list(root.handlers), root.level
    access = logging.getLogger("aiohttp.access")
    saved_access = access.level
    log_file = tmp_path / "egw.log"

    def configure() -> Path:
        configure_logging(level="info", fmt="json", file=str(log_file))
        return log_file

    try:
        yield configure
    finally:
        structlog.reset_defaults()
        structlog.contextvars.clear_contextvars()
        _uncache_lazy_loggers()
        for handler in list(root.handlers):
            root.removeHandler(handler)
            if handler not in saved_handlers:
                handler.close()
        for handler in saved_handlers:
            root.addHandler(handler)
        root.setLevel(saved_level)
        access.setLevel(saved_access)


def json_lines(text: str) -> list[dict[str, Any]]:
    out = []
    for line in text.split(
        "\n"
    ):  # JSON lines end at \n only (str.splitlines also splits at U+2028)
        if line.strip():
            out.append(json.loads(line))  # every line is one JSON object
    return out


def request_lines(lines: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [entry for entry in lines if entry.get("event") == "request"]


def assert_no_secret(text: str, *, header_names: bool = True) -> None:
    for token in TOKENS:
        assert token not in text
        assert token[:12] not in text
    assert "Bearer" not in text and "bearer" not in text
    if header_names:  # not even the header's name: requests are logged without headers
        assert "Authorization" not in text and "authorization" not in text


async def test_one_json_line_per_request_to_stdout_and_file(
    json_logging: Callable[[], Path],
    aiohttp_client: Callable[..., Any],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    log_file = json_logging()
    api = await aiohttp_client(create_app(make_config(tmp_path)))
    capsys.readouterr()  # startup lines are not requests
    calls = [
        ("GET", "/healthz", {}, None, 200, None),
        ("GET", "/v1/tasks", READER, None, 200, "reader"),
        (
            "POST",
            "/v1/tasks",
            WRITER,
            {"provider": "local", "task": {"command": "true"}},
            202,
            "writer",
        ),
        (
            "POST",
            "/v1/tasks",
            READER,
            {"provider": "local", "task": {"command": "true"}},
            403,
            "reader",
        ),
        (
            "GET",
            "/v1/tasks/t_nope",
            {**READER, "X-Request-ID": "trace-me-123"},
            None,
            404,
            "reader",
        ),
        ("GET", "/v1/tasks", {"Authorization": f"Bearer {WRONG_TOKEN}"}, None, 401, None),
        ("GET", "/v1/tasks", {"Authorization": WRONG_TOKEN}, None, 401, None),
        ("GET", "/v1/tasks", {}, None, 401, None),
    ]
    expected: dict[str, tuple[str, str, int, str | None]] = {}
    for method, path, headers, body, status, actor in calls:
        resp = await api.request(method, path, headers=headers, json=body)
        assert resp.status == status, await resp.text()
        await resp.read()
        expected[resp.headers["X-Request-ID"]] = (method, path, status, actor)
    assert "trace-me-123" in expected
    await api.close()

    out = capsys.readouterr()
    stdout = json_lines(out.out)
    from_file = json_lines(log_file.read_text(encoding="utf-8"))
    for lines in (request_lines(stdout), request_lines(from_file)):
        by_id: dict[str, dict[str, Any]] = {}
        for entry in lines:
            assert entry["request_id"] not in by_id, f"two lines for one request: {entry}"
            by_id[entry["request_id"]] = entry
        assert set(by_id) == set(expected)
        for rid, (method, path, status, actor) in expected.items():
            entry = by_id[rid]
            assert (entry["method"], entry["path"], entry["status"], entry["actor"]) == (
                method,
                path,
                status,
                actor,
            ), entry
            assert isinstance(entry["duration_ms"], int | float) and entry["duration_ms"] >= 0
            assert entry["level"] == "info"
            assert "timestamp" in entry
    # the file holds the same request lines as stdout
    assert {e["request_id"] for e in request_lines(stdout)} == {
        e["request_id"] for e in request_lines(from_file)
    }
    assert_no_secret(out.out + out.err)
    assert_no_secret(log_file.read_text(encoding="utf-8"))


async def test_a_wrong_token_is_never_logged(
    json_logging: Callable[[], Path],
    aiohttp_client: Callable[..., Any],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    log_file = json_logging()
    api = await aiohttp_client(create_app(make_config(tmp_path)))
    for header in (
        f"Bearer {WRONG_TOKEN}",
        f"bearer {WRONG_TOKEN}",
        f"Basic {WRONG_TOKEN}",
        f"Bearer {WRITER_TOKEN}x",
        f"Token {WRONG_TOKEN}",
    ):
        for method, path in (
            ("GET", "/v1/tasks"),
            ("POST", "/v1/tasks"),
            ("GET", "/v1/events"),
            ("GET", "/v1/tasks/t_x/logs"),
            ("DELETE", "/v1/tasks/t_x"),
        ):
            resp = await api.request(method, path, headers={"Authorization": header})
            assert resp.status == 401
            await resp.read()
    await api.close()
    out = capsys.readouterr()
    lines = request_lines(json_lines(out.out))
    assert len(lines) == 25
    assert all(entry["status"] == 401 and entry["actor"] is None for entry in lines)
    assert_no_secret(out.out + out.err)
    assert_no_secret(log_file.read_text(encoding="utf-8"))


def test_secret_fields_are_redacted(
    json_logging: Callable[[], Path], capsys: pytest.CaptureFixture[str]
) -> None:
    log_file = json_logging()
    log = structlog.get_logger("egw.test")
    log.info(
        "careless",
        token=WRITER_TOKEN,
        authorization=f"Bearer {READER_TOKEN}",
        github_token=ADMIN_TOKEN,
        webhook_secret=WRONG_TOKEN,
        access_token=WRONG_TOKEN,
        task_id="t_1",
    )
    logging.getLogger("some.stdlib.logger").warning("stdlib lines are JSON too")
    out = capsys.readouterr().out
    lines = json_lines(out)
    careless = next(e for e in lines if e["event"] == "careless")
    assert careless["task_id"] == "t_1"
    assert careless["token"] == careless["authorization"] == "[redacted]"
    assert any(e["event"] == "stdlib lines are JSON too" and e["level"] == "warning" for e in lines)
    assert_no_secret(out + log_file.read_text(encoding="utf-8"), header_names=False)


def _in_request(request_id: str, fn: Callable[[], None]) -> None:
    """Run ``fn`` with ``request_id_var`` set, as while answering a request, without leaking it."""

    def run() -> None:
        request_id_var.set(request_id)
        fn()

    contextvars.copy_context().run(run)


def test_the_request_line_is_the_line_structlog_would_write(
    json_logging: Callable[[], Path], capsys: pytest.CaptureFixture[str]
) -> None:
    """``log_request`` formats the canonical line itself (it is the hottest line there is);
    it must stay the very line the configured processor renders, field for field, in order."""
    log_file = json_logging()
    odd_path = '/v1/tasks/t_"quoted"\\back\u00e9\u2028'
    for method, path, status, duration_ms, actor in (
        ("GET", "/v1/tasks/t_1", 200, 0.12, "reader"),
        ("POST", odd_path, 401, 12.5, None),
        ("DELETE", "/v1/tasks/t_2", 202, 0.0, 'na"me'),
    ):
        capsys.readouterr()
        fields = {
            "method": method,
            "path": path,
            "status": status,
            "duration_ms": duration_ms,
            "actor": actor,
        }
        _in_request("rid-1", partial(log_request, method, path, status, duration_ms, actor))
        _in_request("rid-1", partial(structlog.get_logger("egw.http").info, "request", **fields))
        fast, slow = json_lines(capsys.readouterr().out)
        assert fast.pop("timestamp")[:10] == slow.pop("timestamp")[:10]
        assert list(fast.items()) == list(slow.items())
        assert fast["path"] == path and fast["request_id"] == "rid-1"
    assert len(request_lines(json_lines(log_file.read_text(encoding="utf-8")))) == 6


def test_the_request_line_in_console_format_and_above_info(
    capsys: pytest.CaptureFixture[str], json_logging: Callable[[], Path]
) -> None:
    configure_logging(level="info", fmt="console")
    capsys.readouterr()
    _in_request("rid-2", lambda: log_request("GET", "/healthz", 200, 0.5, None))
    out = capsys.readouterr().out
    assert "request" in out and "/healthz" in out and "rid-2" in out
    assert not out.lstrip().startswith("{")
    configure_logging(level="warning", fmt="json")
    _in_request("rid-3", lambda: log_request("GET", "/healthz", 200, 0.5, None))
    assert capsys.readouterr().out == ""


def test_bound_context_variables_are_in_every_line(
    json_logging: Callable[[], Path], capsys: pytest.CaptureFixture[str]
) -> None:
    """structlog's documented ``bind_contextvars`` works: its keys are in structlog's lines,
    in stdlib records' lines and in the request line (which then goes through the chain)."""
    json_logging()
    capsys.readouterr()

    def in_a_bound_context() -> None:
        structlog.contextvars.bind_contextvars(foo=1, tenant="acme")
        structlog.get_logger("egw.test").info("bound")
        logging.getLogger("some.stdlib.logger").warning("foreign")
        request_id_var.set("rid-4")
        log_request("GET", "/v1/tasks/t_1", 200, 0.5, "reader")

    contextvars.copy_context().run(in_a_bound_context)
    lines = {e["event"]: e for e in json_lines(capsys.readouterr().out)}
    for event in ("bound", "foreign", "request"):
        assert (lines[event]["foo"], lines[event]["tenant"]) == (1, "acme"), lines[event]
    assert lines["request"]["request_id"] == "rid-4" and lines["request"]["status"] == 200
    # nothing leaks out of the context it was bound in
    structlog.get_logger("egw.test").info("unbound")
    _in_request("rid-5", partial(log_request, "GET", "/healthz", 200, 0.5, None))
    after = json_lines(capsys.readouterr().out)
    assert [e["event"] for e in after] == ["unbound", "request"]
    assert all("foo" not in e for e in after)


async def test_lines_logged_on_the_loop_are_written_by_the_next_iteration(
    json_logging: Callable[[], Path],
) -> None:
    """Info lines on the event loop are written together once per loop iteration; a warning
    is written at once, after what is held, so the order is kept."""
    log_file = json_logging()
    log = structlog.get_logger("egw.test")
    log.info("first")
    log.info("second")
    assert log_file.read_text(encoding="utf-8") == ""  # held for this iteration
    log.warning("third")
    assert [e["event"] for e in json_lines(log_file.read_text(encoding="utf-8"))] == [
        "first",
        "second",
        "third",
    ]
    log.info("fourth")
    await asyncio.sleep(0)
    assert json_lines(log_file.read_text(encoding="utf-8"))[-1]["event"] == "fourth"


# --- every way out of a request: one line, one count ---------------------------------------------


class _Gone(Exception):
    """Stands for a failure no handler expects."""


def _edge_app(requests: HttpRequests, stream_started: asyncio.Event) -> web.Application:
    """An app of the edge alone, with handlers that leave by each door there is."""

    async def boom(request: web.Request) -> web.StreamResponse:
        raise _Gone("not an EgwError")

    async def not_modified(request: web.Request) -> web.StreamResponse:
        raise web.HTTPNotModified()

    async def wait(request: web.Request) -> web.StreamResponse:
        stream_started.set()
        await asyncio.Event().wait()  # until the client leaves and aiohttp cancels the handler
        raise AssertionError("unreachable")

    async def stream(request: web.Request) -> web.StreamResponse:
        resp = web.StreamResponse()
        await resp.prepare(request)
        stream_started.set()
        while True:  # until a write finds the client gone
            await resp.write(b"x" * 65536)
            await asyncio.sleep(0.01)

    edge = Edge(lambda header: Principal("someone", frozenset()), requests)
    app = web.Application()
    table = [
        web.get("/boom", boom),
        web.get("/not-modified", not_modified),
        web.get("/wait", wait),
        web.get("/stream", stream),
    ]
    app.add_routes(edge.routes(table))
    edge.add_catch_all(app)
    return app


def _counts(requests: HttpRequests) -> dict[tuple[str, str, str], float]:
    family = next(iter(requests.collect()))
    return {
        (s.labels["method"], s.labels["route"], s.labels["status"]): s.value
        for s in family.samples
        if s.name == "egw_http_requests_total"
    }


async def test_every_way_out_of_a_request_writes_one_line_and_counts_once(
    json_logging: Callable[[], Path],
    aiohttp_client: Callable[..., Any],
    capsys: pytest.CaptureFixture[str],
) -> None:
    """A handler that raises something unexpected, that loses its client, that raises a 304,
    or is cancelled: each request still gets exactly one request line and one count, and
    leaves no request id behind."""
    json_logging()
    requests = HttpRequests()
    started = asyncio.Event()
    api = await aiohttp_client(
        _edge_app(requests, started), server_kwargs={"handler_cancellation": True}
    )
    capsys.readouterr()

    for path, status in (("/boom", 500), ("/not-modified", 304)):
        resp = await api.get(path)
        assert resp.status == status, path
        await resp.read()

    for path in ("/wait", "/stream"):  # the client leaves while the handler is at work
        started.clear()
        _, writer = await asyncio.open_connection(api.server.host, api.server.port)
        writer.write(f"GET {path} HTTP/1.1\r\nHost: t\r\n\r\n".encode())
        await writer.drain()
        await asyncio.wait_for(started.wait(), 5)
        writer.close()
        await writer.wait_closed()
    deadline = asyncio.get_running_loop().time() + 5
    while len(_counts(requests)) < 4 and asyncio.get_running_loop().time() < deadline:
        await asyncio.sleep(0.02)
    await api.close()

    assert _counts(requests) == {
        ("GET", "/boom", "500"): 1,
        ("GET", "/not-modified", "304"): 1,
        ("GET", "/wait", str(CLIENT_GONE)): 1,
        ("GET", "/stream", str(CLIENT_GONE)): 1,
    }
    lines = request_lines(json_lines(capsys.readouterr().out))
    assert sorted((e["path"], e["status"]) for e in lines) == [
        ("/boom", 500),
        ("/not-modified", 304),
        ("/stream", CLIENT_GONE),
        ("/wait", CLIENT_GONE),
    ]
    assert len({e["request_id"] for e in lines}) == 4
    assert request_id_var.get() is None
