"""Browser test support: where Chromium is and how it is launched, a TCP proxy whose
connections a test can cut (a dropped connection, for real), and a recorder of what a page
asked for and said (no token in any URL, no CSP violation or uncaught error)."""

from __future__ import annotations

import os
import socket
import threading
from pathlib import Path
from typing import Any

CHROMIUM = os.environ.get("EGW_CHROMIUM", "/usr/bin/chromium")
FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
#: the screenshots the browser tests write, shown in the README
DOCS = Path(__file__).resolve().parents[1] / "docs"


class Proxy:
    """A TCP proxy to ``port`` on a loopback port of its own; `drop` cuts every connection
    open through it (both sides reset), as a network failure would."""

    def __init__(self, port: int) -> None:
        self.target = port
        self.server = socket.create_server(("127.0.0.1", 0))
        self.port = self.server.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self.lock = threading.Lock()
        self.open: set[socket.socket] = set()
        self.drops = 0
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.server.accept()
            except OSError:
                return
            try:
                upstream = socket.create_connection(("127.0.0.1", self.target))
            except OSError:
                client.close()
                continue
            with self.lock:
                self.open |= {client, upstream}
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(a, b), daemon=True).start()

    def _pump(self, src: socket.socket, dst: socket.socket) -> None:
        try:
            while data := src.recv(65536):
                dst.sendall(data)
        except OSError:
            pass
        for s in (src, dst):
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def drop(self) -> None:
        with self.lock:
            cut, self.open = self.open, set()
        for s in cut:
            # shutdown wakes the pump blocked in recv on it (a close alone would wait for it)
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            s.close()
        self.drops += 1

    def close(self) -> None:
        self.server.close()
        self.drop()


class Recorder:
    """What one page asked for and said: every request's URL, console errors, page errors."""

    def __init__(self, page: Any) -> None:
        self.urls: list[str] = []
        self.resumes: list[tuple[str, str | None]] = []  # (URL, Last-Event-ID) of each SSE call
        self.console: list[str] = []
        self.server_errors: list[str] = []
        page.on("request", self._request)
        page.on("response", lambda r: r.status >= 500 and self.server_errors.append(r.url))
        page.on("console", lambda m: m.type == "error" and self.console.append(m.text))
        page.on("pageerror", lambda e: self.console.append(f"uncaught: {e}"))

    def _request(self, request: Any) -> None:
        self.urls.append(request.url)
        if request.headers.get("accept") == "text/event-stream":
            self.resumes.append((request.url, request.headers.get("last-event-id")))

    def check(self, tokens: tuple[str, ...]) -> None:
        """No token in any URL; no answer of 500 or more; no console error but the 4xx the
        tests provoke ("Failed to load resource"): a CSP violation or an uncaught error fails."""
        for url in self.urls:
            for token in tokens:
                assert token not in url, url
        bad = [m for m in self.console if not m.startswith("Failed to load resource")]
        assert bad == [], bad
        assert self.server_errors == []
