"""Issue point 11: a client that leaves mid-request is no server error.

A real `egw serve` process and real sockets that go away early: during the body's read,
while a large text log is being written (the server waiting on a full socket), during an
SSE replay, and before a slow (blocking) answer is ready; each by a reset (``SO_LINGER``
0) and by an orderly close. Afterwards the gateway's log holds no ``unhandled_error``, no
traceback, and ``/metrics`` no 5xx; the requests the client left are counted as 499.
"""

from __future__ import annotations

import json
import re
import socket
import struct
import time
import urllib.request
from collections.abc import Iterator
from typing import Any

import pytest
from support import READER_TOKEN, WRITER_TOKEN, GatewayProcess

LOG_BYTES = 8_000_000  # far more than loopback socket buffers hold


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatewayProcess]:
    gw = GatewayProcess(tmp_path_factory.mktemp("disconnect"))
    gw.start()
    yield gw
    gw.stop()


def call(gw: GatewayProcess, method: str, path: str, body: Any = None) -> Any:
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(
        gw.url + path,
        data=data,
        method=method,
        headers={"Authorization": f"Bearer {WRITER_TOKEN}", "Content-Type": "application/json"},
    )
    with urllib.request.urlopen(req, timeout=10) as resp:
        return json.loads(resp.read())


@pytest.fixture(scope="module")
def big_task(gateway: GatewayProcess) -> str:
    """A finished task with an 8 MB log."""
    script = f"head -c {LOG_BYTES} /dev/zero | tr '\\0' a"
    task = call(
        gateway,
        "POST",
        "/v1/tasks",
        {"provider": "local", "task": {"command": "sh", "args": ["-c", script]}},
    )
    for _ in range(100):
        task = call(gateway, "GET", f"/v1/tasks/{task['id']}?index={task['index']}&wait=5s")
        if task["status"] == "succeeded":
            break
    assert task["status"] == "succeeded", task
    return str(task["id"])


def connect(gw: GatewayProcess) -> socket.socket:
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # before connect: a small window
    sock.settimeout(10)
    sock.connect(("127.0.0.1", gw.port))
    return sock


def leave(sock: socket.socket, how: str) -> None:
    if how == "reset":
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    sock.close()


def get(path: str, token: str = READER_TOKEN, extra: str = "") -> bytes:
    return (
        f"GET {path} HTTP/1.1\r\nHost: t\r\nAuthorization: Bearer {token}\r\n{extra}\r\n"
    ).encode()


def counts(gw: GatewayProcess) -> dict[tuple[str, str, str], float]:
    with urllib.request.urlopen(gw.url + "/metrics", timeout=10) as resp:
        text = resp.read().decode()
    out = {}
    pattern = r'egw_http_requests_total\{method="([^"]+)",route="([^"]+)",status="(\d+)"\} (\S+)'
    for m in re.finditer(pattern, text):
        out[(m[1], m[2], m[3])] = float(m[4])
    return out


def wait_count(gw: GatewayProcess, key: tuple[str, str, str], above: float) -> None:
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        if counts(gw).get(key, 0) > above:
            return
        time.sleep(0.05)
    raise AssertionError(f"no {key} counted: {counts(gw)}\n{gw.tail()}")


def assert_no_server_error(gw: GatewayProcess) -> None:
    log = gw.log.read_text(errors="replace")
    for needle in ("unhandled_error", "Traceback", "Error handling request", '"level":"error"'):
        assert needle not in log, log[-4000:]
    fives = {k: v for k, v in counts(gw).items() if k[2].startswith("5")}
    assert not fives, fives


@pytest.mark.parametrize("how", ["reset", "close"])
def test_client_leaves_during_the_body(gateway: GatewayProcess, how: str) -> None:
    key = ("POST", "/v1/tasks", "499")
    before = counts(gateway).get(key, 0)
    sock = connect(gateway)
    sock.sendall(
        b"POST /v1/tasks HTTP/1.1\r\nHost: t\r\n"
        + f"Authorization: Bearer {WRITER_TOKEN}\r\n".encode()
        + b"Content-Type: application/json\r\nContent-Length: 100000\r\n\r\n"
        + b'{"provider": "local", "task": {"command": "true"}, "name": "'
        + b"x" * 4000
    )
    time.sleep(0.2)  # the handler is waiting for the rest of the body
    leave(sock, how)
    wait_count(gateway, key, before)
    assert_no_server_error(gateway)


@pytest.mark.parametrize("how", ["reset", "close"])
def test_client_leaves_during_a_large_text_log(
    gateway: GatewayProcess, big_task: str, how: str
) -> None:
    key = ("GET", "/v1/tasks/{id}/logs", "499")
    before = counts(gateway).get(key, 0)
    sock = connect(gateway)
    sock.sendall(get(f"/v1/tasks/{big_task}/logs"))
    assert sock.recv(1024).startswith(b"HTTP/1.1 200")
    time.sleep(0.3)  # the server fills the socket and waits for it to drain
    leave(sock, how)
    wait_count(gateway, key, before)
    assert_no_server_error(gateway)


@pytest.mark.parametrize("how", ["reset", "close"])
def test_client_leaves_during_an_sse_replay(
    gateway: GatewayProcess, big_task: str, how: str
) -> None:
    sock = connect(gateway)
    sock.sendall(get(f"/v1/tasks/{big_task}/logs", extra="Accept: text/event-stream\r\n"))
    assert sock.recv(1024).startswith(b"HTTP/1.1 200")
    time.sleep(0.3)
    leave(sock, how)
    time.sleep(0.5)
    assert_no_server_error(gateway)


@pytest.mark.parametrize("how", ["reset", "close"])
def test_client_leaves_before_a_slow_answer(
    gateway: GatewayProcess, big_task: str, how: str
) -> None:
    task = call(gateway, "GET", f"/v1/tasks/{big_task}")
    key = ("GET", "/v1/tasks/{id}", "200")
    before = counts(gateway).get(key, 0)
    sock = connect(gateway)
    sock.sendall(get(f"/v1/tasks/{big_task}?index={task['index']}&wait=1s"))
    time.sleep(0.2)
    leave(sock, how)
    wait_count(gateway, key, before)  # the blocking query ends; its answer finds no one
    assert_no_server_error(gateway)


def test_pipelined_requests_then_a_reset(gateway: GatewayProcess, big_task: str) -> None:
    sock = connect(gateway)
    sock.sendall(get("/healthz") + get(f"/v1/tasks/{big_task}/logs") + get("/healthz"))
    time.sleep(0.3)
    leave(sock, "reset")
    time.sleep(0.5)
    assert_no_server_error(gateway)
