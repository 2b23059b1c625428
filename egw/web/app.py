"""`create_app(config)`: the composition root, and `ssl_context` for HTTPS.

Each resource is made in a ``cleanup_ctx`` generator, in order, and torn down
in reverse: the database, one shared HTTP client session, the providers and
the task service, the SSE ticker.
"""

from __future__ import annotations

import ssl
from collections.abc import AsyncIterator

import aiohttp
from aiohttp import web

from egw import __version__
from egw.config import Config
from egw.metrics import Metrics
from egw.providers.http import add_observer, remove_observer
from egw.providers.registry import build_providers
from egw.service.channels import EventChannel, LogChannels
from egw.service.database import Database
from egw.service.fanout import Hub
from egw.service.ticker import Ticker
from egw.web import docs, events, health, hooks, logs, metrics, tasks
from egw.web.auth import Authenticator
from egw.web.edge import Edge
from egw.web.keys import (
    auth_key,
    config_key,
    database_key,
    event_channel_key,
    log_channels_key,
    metrics_key,
    reads_key,
    service_key,
    session_key,
    ticker_key,
)
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
    providers = build_providers(cfg, app[session_key])
    service = app[database_key].task_service(providers, hub)
    app[ticker_key] = ticker
    app[event_channel_key] = channel
    app[log_channels_key] = LogChannels(ticker, hub, app[reads_key])
    app[service_key] = service
    ticker.start()
    try:
        await service.start()
    except BaseException:
        await service.close()
        await ticker.close()
        raise
    yield
    await service.close()
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


def serve(config: Config) -> None:
    """Run the gateway until SIGINT or SIGTERM (`egw serve`)."""
    server = config.server
    web.run_app(
        create_app(config),
        host=server.host,
        port=server.port,
        ssl_context=ssl_context(config),
        shutdown_timeout=server.shutdown_timeout_s,
        keepalive_timeout=server.keepalive_timeout_s,
        print=None,
        access_log=None,
    )
