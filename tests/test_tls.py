"""HTTPS for real: certificates made by trustme, the app on 127.0.0.1 behind `ssl_context(cfg)`.

Covers the issue's TLS items: HTTPS when ``tls.enabled``, TLS 1.2 minimum, and
mutual TLS when ``tls.client_ca_file`` is set.
"""

from __future__ import annotations

import ssl
import warnings
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import trustme
from aiohttp import web
from support import READER, WRITER, make_config

from egw.config import Config
from egw.web.app import create_app, ssl_context

# what a refused TLS handshake (or a connection the server drops because of it) looks like
REFUSED = (aiohttp.ClientError, ssl.SSLError, ConnectionError)


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    return trustme.CA()


def tls_config(tmp_path: Path, ca: trustme.CA, *, mutual: bool = False) -> Config:
    server = ca.issue_cert("127.0.0.1", "localhost")
    cert, key = tmp_path / "server.pem", tmp_path / "server.key"
    for i, blob in enumerate(server.cert_chain_pems):
        blob.write_to_path(str(cert), append=i > 0)
    server.private_key_pem.write_to_path(str(key))
    tls: dict[str, Any] = {"enabled": True, "cert_file": str(cert), "key_file": str(key)}
    if mutual:
        ca_file = tmp_path / "client-ca.pem"
        ca.cert_pem.write_to_path(str(ca_file))
        tls["client_ca_file"] = str(ca_file)
    return make_config(tmp_path, {"tls": tls})


@asynccontextmanager
async def https_server(cfg: Config) -> AsyncIterator[str]:
    ctx = ssl_context(cfg)
    assert ctx is not None
    runner = web.AppRunner(create_app(cfg))
    await runner.setup()
    try:
        site = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=ctx)
        await site.start()
        host, port = runner.addresses[0][:2]
        yield f"https://{host}:{port}"
    finally:
        await runner.cleanup()


def client_context(ca: trustme.CA, *, max_version: ssl.TLSVersion | None = None) -> ssl.SSLContext:
    ctx = ssl.create_default_context()
    ca.configure_trust(ctx)
    if max_version is not None:
        ctx.maximum_version = max_version
    return ctx


async def get(
    url: str, ctx: ssl.SSLContext | bool, headers: dict[str, str] | None = None
) -> tuple[int, str]:
    timeout = aiohttp.ClientTimeout(total=10)
    async with (
        aiohttp.ClientSession(timeout=timeout) as session,
        session.get(url, ssl=ctx, headers=headers) as resp,
    ):
        return resp.status, await resp.text()


def test_no_context_without_tls(tmp_path: Path) -> None:
    assert ssl_context(make_config(tmp_path)) is None


def test_the_server_context_requires_tls_1_2(tmp_path: Path, ca: trustme.CA) -> None:
    ctx = ssl_context(tls_config(tmp_path, ca))
    assert ctx is not None
    assert ctx.minimum_version >= ssl.TLSVersion.TLSv1_2
    assert ctx.verify_mode == ssl.CERT_NONE
    mutual = ssl_context(tls_config(tmp_path, ca, mutual=True))
    assert mutual is not None and mutual.verify_mode == ssl.CERT_REQUIRED


async def test_https_health_and_authenticated_api(tmp_path: Path, ca: trustme.CA) -> None:
    async with https_server(tls_config(tmp_path, ca)) as base:
        ctx = client_context(ca)
        status, body = await get(f"{base}/healthz", ctx)
        assert status == 200, body
        status, body = await get(f"{base}/v1/tasks", ctx, READER)
        assert status == 200, body
        assert '"tasks"' in body
        status, _ = await get(f"{base}/v1/tasks", ctx)
        assert status == 401
        # TLS 1.2 (the minimum) is accepted too
        status, _ = await get(
            f"{base}/healthz", client_context(ca, max_version=ssl.TLSVersion.TLSv1_2)
        )
        assert status == 200


async def test_a_submit_over_https(tmp_path: Path, ca: trustme.CA) -> None:
    async with https_server(tls_config(tmp_path, ca)) as base:
        connector = aiohttp.TCPConnector(ssl=client_context(ca))
        async with aiohttp.ClientSession(connector=connector) as session:
            body = {"provider": "local", "task": {"command": "true"}}
            async with session.post(f"{base}/v1/tasks", json=body, headers=WRITER) as resp:
                assert resp.status == 202, await resp.text()
                task = await resp.json()
            async with session.get(f"{base}/v1/tasks/{task['id']}", headers=READER) as resp:
                assert resp.status == 200


async def test_a_client_that_does_not_trust_the_ca_is_refused(
    tmp_path: Path, ca: trustme.CA
) -> None:
    async with https_server(tls_config(tmp_path, ca)) as base:
        with pytest.raises(aiohttp.ClientConnectorCertificateError):
            await get(f"{base}/healthz", ssl.create_default_context())


async def test_plain_http_to_the_https_port_gets_nothing(tmp_path: Path, ca: trustme.CA) -> None:
    async with https_server(tls_config(tmp_path, ca)) as base:
        try:
            status, _ = await get(base.replace("https://", "http://") + "/healthz", False)
        except REFUSED:
            return
        assert status != 200


def tls_1_1_client(ca: trustme.CA) -> ssl.SSLContext:
    """A client that offers TLS 1.0-1.1 only (OpenSSL 3 disables them at the default
    security level, so lower it: the refusal must come from the server)."""
    with warnings.catch_warnings():
        warnings.simplefilter(
            "ignore", DeprecationWarning
        )  # TLS 1.1 is deprecated: that's the point
        ctx = client_context(ca, max_version=ssl.TLSVersion.TLSv1_1)
        ctx.minimum_version = ssl.TLSVersion.TLSv1
    ctx.set_ciphers("DEFAULT:@SECLEVEL=0")
    return ctx


async def test_tls_1_1_is_refused(tmp_path: Path, ca: trustme.CA) -> None:
    cfg = tls_config(tmp_path, ca)
    async with https_server(cfg) as base:
        with pytest.raises(REFUSED):
            await get(f"{base}/healthz", tls_1_1_client(ca))
        # the same server still serves a TLS 1.2+ client
        assert (await get(f"{base}/healthz", client_context(ca)))[0] == 200


async def test_the_tls_1_1_client_works_against_a_permissive_server(
    tmp_path: Path, ca: trustme.CA
) -> None:
    """Control for the test above: this client can do TLS 1.1, so egw's refusal is egw's doing."""
    cfg = tls_config(tmp_path, ca)
    permissive = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        permissive.minimum_version = ssl.TLSVersion.TLSv1
    permissive.set_ciphers("DEFAULT:@SECLEVEL=0")
    assert cfg.tls.cert_file and cfg.tls.key_file
    permissive.load_cert_chain(cfg.tls.cert_file, cfg.tls.key_file)
    app = web.Application()

    async def ok(request: web.Request) -> web.Response:
        return web.Response(text="ok")

    app.router.add_get("/", ok)
    runner = web.AppRunner(app)
    await runner.setup()
    try:
        await web.TCPSite(runner, "127.0.0.1", 0, ssl_context=permissive).start()
        host, port = runner.addresses[0][:2]
        # if this fails, this OpenSSL cannot speak TLS 1.1 at all, and the refusal test above
        # would prove nothing: a failure here says so instead of passing silently
        status, _ = await get(f"https://{host}:{port}/", tls_1_1_client(ca))
        assert status == 200
    finally:
        await runner.cleanup()


async def test_mutual_tls_refuses_a_client_without_a_certificate(
    tmp_path: Path, ca: trustme.CA
) -> None:
    async with https_server(tls_config(tmp_path, ca, mutual=True)) as base:
        with pytest.raises(REFUSED):
            await get(f"{base}/healthz", client_context(ca))
        with pytest.raises(REFUSED):
            await get(f"{base}/v1/tasks", client_context(ca), READER)


async def test_mutual_tls_refuses_a_certificate_from_another_ca(
    tmp_path: Path, ca: trustme.CA
) -> None:
    other = trustme.CA()
    async with https_server(tls_config(tmp_path, ca, mutual=True)) as base:
        ctx = client_context(ca)
        other.issue_cert("intruder@example.com").configure_cert(ctx)
        with pytest.raises(REFUSED):
            await get(f"{base}/healthz", ctx)


async def test_mutual_tls_accepts_a_client_certificate(tmp_path: Path, ca: trustme.CA) -> None:
    async with https_server(tls_config(tmp_path, ca, mutual=True)) as base:
        ctx = client_context(ca)
        ca.issue_cert("ci-bot@example.com").configure_cert(ctx)
        status, body = await get(f"{base}/healthz", ctx)
        assert status == 200, body
        status, body = await get(f"{base}/v1/tasks", ctx, READER)
        assert status == 200, body
        # the certificate is not a bearer token: /v1 still needs one
        status, _ = await get(f"{base}/v1/tasks", ctx)
        assert status == 401
