"""TLS toward Nomad: CA file, client certificate, and the name its certificate must carry."""

from __future__ import annotations

import ssl

from egw.config import NomadConfig


class _ServerNameContext(ssl.SSLContext):
    """Checks Nomad's certificate against ``server_name`` instead of the address's host
    (like ``NOMAD_TLS_SERVER_NAME``); asyncio's TLS goes through `wrap_bio`."""

    server_name: str = ""

    def wrap_bio(
        self,
        incoming: ssl.MemoryBIO,
        outgoing: ssl.MemoryBIO,
        server_side: bool = False,
        server_hostname: str | bytes | None = None,
        session: ssl.SSLSession | None = None,
    ) -> ssl.SSLObject:
        return super().wrap_bio(
            incoming,
            outgoing,
            server_side=server_side,
            server_hostname=self.server_name or server_hostname,
            session=session,
        )


def tls_context(cfg: NomadConfig) -> ssl.SSLContext | None:
    """The TLS context for an ``https://`` address: CA file, client certificate, server name."""
    if not cfg.address.startswith("https://"):
        return None
    ctx: ssl.SSLContext
    if cfg.server_name:
        named = _ServerNameContext(ssl.PROTOCOL_TLS_CLIENT)
        named.server_name = cfg.server_name
        ctx = named
    else:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    if cfg.ca_file:
        ctx.load_verify_locations(cafile=cfg.ca_file)
    else:
        ctx.load_default_certs()
    if cfg.client_cert_file and cfg.client_key_file:
        ctx.load_cert_chain(cfg.client_cert_file, cfg.client_key_file)
    return ctx
