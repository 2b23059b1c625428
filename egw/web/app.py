"""`create_app(config)`: the composition root; `ssl_context` for HTTPS; `serve`, which
runs it as `egw serve` (lock, bind, start, serve: in that order).

Each resource is made in a ``cleanup_ctx`` generator, in order, and torn down
in reverse: the database, one shared HTTP client session, the providers and
the task service, the SSE ticker.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import signal
import socket
import ssl
from collections.abc import AsyncIterator, Callable

import aiohttp
from aiohttp import web

from egw import __version__
from egw.config import Config
from egw.metrics import Metrics
from egw.providers.circuit import Circuits
from egw.providers.http import add_observer, remove_observer
from egw.providers.registry import build_providers
from egw.service.channels import EventChannel, LogChannels
from egw.service.database import Database, claim
from egw.service.fanout import Hub
from egw.service.namespaces import Namespaces, limits_of
from egw.service.ticker import Ticker
from egw.web import docs, events, gateway, health, hooks, logs, metrics, tasks, ui
from egw.web.auth import Authenticator
from egw.web.edge import Edge
from egw.web.keys import (
    auth_key,
    circuits_key,
    config_key,
    database_key,
    event_channel_key,
    gateway_key,
    log_channels_key,
    metrics_key,
    reads_key,
    service_key,
    session_key,
    ticker_key,
)
from egw.web.protocol import EdgeRunner
from egw.web.sse import SSEFraming


def create_app(config: Config) -> web.Application:
    auth = Authenticator(config.auth.tokens)
    # no aiohttp middleware: the edge wraps each route's handler (see egw.web.edge)
    app = web.Application(client_max_size=config.server.max_body_bytes)
    app[config_key] = config
    app[auth_key] = auth
    app[tasks.body_cache_key] = tasks.BodyCache()
    observer = Metrics() if config.metrics.enabled else None
    edge = Edge(auth.authenticate, observer.requests if observer else None)
    tables = [tasks.routes, logs.routes, events.routes, hooks.routes, health.routes, docs.routes]
    tables.append(gateway.routes)
    tables.append(ui.routes)
    if observer is not None:
        app[metrics_key] = observer
        tables.append(metrics.routes)
    for table in tables:
        app.add_routes(edge.routes(table))
    edge.add_catch_all(app)
    app.cleanup_ctx.append(_store_ctx)
    app.cleanup_ctx.append(_session_ctx)
    app.cleanup_ctx.append(_service_ctx)
    app.on_shutdown.append(_close_streams)
    return app


async def _store_ctx(app: web.Application) -> AsyncIterator[None]:
    database = Database(app[config_key].storage)
    await database.open()
    app[database_key] = database
    app[reads_key] = database.reads
    observer = app.get(metrics_key)
    if observer is not None:
        database.listen(observer.on_commit, observer.on_batch)
        database.on_feed_lag(observer.feed_lag.observe)
        add_observer(observer)
    yield
    if observer is not None:
        remove_observer(observer)
    await database.close()


async def _session_ctx(app: web.Application) -> AsyncIterator[None]:
    timeout = aiohttp.ClientTimeout(total=None, sock_connect=10)
    async with aiohttp.ClientSession(
        timeout=timeout, headers={"User-Agent": f"egw/{__version__}"}
    ) as session:
        app[session_key] = session
        yield


async def _service_ctx(app: web.Application) -> AsyncIterator[None]:
    cfg = app[config_key]
    hub = Hub()
    ticker = Ticker(
        SSEFraming(), flush_s=cfg.server.sse_flush_ms / 1000, keepalive_s=cfg.server.sse_keepalive_s
    )
    channel = EventChannel(ticker)
    hub.subscribe_all(channel)
    # set before the app starts, breakers on another clock (tests drive time by hand)
    circuits = app[circuits_key] if circuits_key in app else Circuits()
    providers = build_providers(cfg, app[session_key], circuits)
    glog = app[database_key].gateway_log()
    circuits.listeners.append(lambda c: glog.circuit_moved(c.provider, c.target, c.transition))
    app[circuits_key] = circuits
    app[gateway_key] = glog
    service = app[database_key].task_service(providers, hub)
    service.limit_storage(cfg)  # storage.max_bytes and each provider's max_log_bytes
    service.namespaces = Namespaces(limits_of(cfg))  # what may run in each namespace
    service.watchdog.configure(cfg)  # each provider's cancel_timeout_s and stuck deadlines
    app[ticker_key] = ticker
    app[event_channel_key] = channel
    app[log_channels_key] = LogChannels(ticker, hub, app[reads_key])
    app[service_key] = service
    ticker.start()
    try:
        await service.start()
    except BaseException:
        await service.close()
        await glog.close()
        await ticker.close()
        raise
    yield
    await service.close()
    await glog.close()
    await ticker.close()


async def _close_streams(app: web.Application) -> None:
    """on_shutdown: end open SSE streams so that a stop does not wait for clients."""
    if ticker_key in app:
        await app[ticker_key].close()


def ssl_context(config: Config) -> ssl.SSLContext | None:
    """The server's TLS context: TLS 1.2 at least; client certificates when a CA is set."""
    tls = config.tls
    if not tls.enabled:
        return None
    assert tls.cert_file and tls.key_file
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.load_cert_chain(tls.cert_file, tls.key_file)
    if tls.client_ca_file:
        ctx.load_verify_locations(tls.client_ca_file)
        ctx.verify_mode = ssl.CERT_REQUIRED
    return ctx


def serve(config: Config, *, listening: Callable[[str], None] | None = None) -> None:
    """Run the gateway until SIGINT or SIGTERM (`egw serve`); ``listening`` is told the URL
    once requests are answered. Errors that stop it before then (`StoreError`,
    `ConfigError`, an `OSError` such as EADDRINUSE) are raised, after everything it
    started is stopped again."""
    asyncio.run(_serve(config, listening))


async def _serve(config: Config, listening: Callable[[str], None] | None) -> None:
    """The order is the point (see the README's "Operating"):

    1. the database's lock: a second gateway on the same file stops here, before it
       has touched the database, the port or any task;
    2. the listening sockets, bound and listening: a port in use stops it here, still
       before anything was started (connections that arrive during 3 wait in the
       backlog);
    3. the application's start-up: the database, the providers (which adopt or end the
       unfinished tasks), the task service;
    4. serving on the sockets of 2, until a signal.

    SIGINT and SIGTERM are handled from the start: during 3 they cancel the start-up,
    which then stops what it had started; afterwards they stop the server gracefully,
    waiting at most ``server.shutdown_timeout_s`` for requests in flight.
    """
    tls = ssl_context(config)  # a bad certificate file stops it before anything starts
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    try:
        with claim(config.storage.address):
            sockets = _bind(config.server.host, config.server.port)
            try:
                await _run(config, tls, sockets, stop, listening)
            finally:
                for sock in sockets:
                    sock.close()
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)


async def _run(
    config: Config,
    tls: ssl.SSLContext | None,
    sockets: list[socket.socket],
    stop: asyncio.Event,
    listening: Callable[[str], None] | None,
) -> None:
    server = config.server
    # EdgeRunner: requests aiohttp's parser refuses are answered as JSON too (web/protocol.py)
    runner = EdgeRunner(
        create_app(config),
        shutdown_timeout=server.shutdown_timeout_s,
        keepalive_timeout=server.keepalive_timeout_s,
        access_log=None,
    )
    try:
        setup = asyncio.ensure_future(runner.setup())
        stopped = asyncio.ensure_future(stop.wait())
        await asyncio.wait([setup, stopped], return_when=asyncio.FIRST_COMPLETED)
        stopped.cancel()
        if not setup.done():  # a signal during the start-up: stop starting
            setup.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await setup
            return
        setup.result()  # the start-up's error, if any
        freeze_startup_heap()
        for sock in sockets:
            await web.SockSite(runner, sock, ssl_context=tls).start()
        if listening is not None:
            scheme = "https" if tls else "http"
            host = f"[{server.host}]" if ":" in server.host else server.host
            listening(f"{scheme}://{host}:{sockets[0].getsockname()[1]}")
        await stop.wait()
    finally:
        await runner.cleanup()


def freeze_startup_heap() -> None:
    """Take what the start-up made out of the garbage collector's sight (`gc.freeze`).

    Those objects (modules, the application, the providers, the tasks adopted) live as long
    as the gateway, and each full collection walked them all again: 27 ms at p50, every few
    seconds under a webhook storm, the tail of an acknowledgement (bench "webhooks": full
    collections 27 ms at p50 before, 1 ms after; egw's own deliveries' p99 52-54 ms before,
    20-21 ms after). What is made later is collected as before. A frozen object that becomes
    garbage is still freed by its reference count; only a cycle among them would stay. Called
    by `egw serve` only: a test process that builds many applications must not keep them.
    """
    gc.freeze()


def _bind(host: str, port: int) -> list[socket.socket]:
    """Listening sockets on every address of ``host``, as `loop.create_server` would make
    them (SO_REUSEADDR; IPv6 sockets IPv6-only); raises `OSError` (EADDRINUSE...).
    With port 0, every address gets the port the kernel chose for the first."""
    infos = socket.getaddrinfo(host or None, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    sockets: list[socket.socket] = []
    try:
        for family, kind, proto, _, address in dict.fromkeys(infos):
            sock = socket.socket(family, kind, proto)
            sockets.append(sock)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if family == socket.AF_INET6:
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            sock.bind((address[0], port, *address[2:]))
            sock.listen(128)
            port = sock.getsockname()[1]
    except BaseException:
        for sock in sockets:
            sock.close()
        raise
    return sockets
