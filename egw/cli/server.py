"""`egw serve` and `egw migrate`: what stops them is one line on stderr, exit code 1
(2 for bad usage or configuration), as the README's "Operating" says."""

from __future__ import annotations

import argparse
import asyncio
import ipaddress
import secrets
import sys
from collections.abc import Callable
from dataclasses import replace

from egw.cli.tokens import with_token_file
from egw.config import Config, NamespaceGrant, TokenConfig, load_config
from egw.errors import ConfigError, EgwError


def serve_command(args: argparse.Namespace) -> int:
    from egw.logconfig import configure_logging
    from egw.web.app import serve

    cfg = load_config(args.config)
    server = replace(
        cfg.server,
        host=args.host or cfg.server.host,
        port=cfg.server.port if args.port is None else args.port,
    )
    cfg = with_token_file(replace(cfg, server=server))
    if not any(t.configured for t in cfg.auth.tokens):
        cfg = _generated_token(cfg)
    configure_logging(level=cfg.logging.level, fmt=cfg.logging.format, file=cfg.logging.file)

    def listening(url: str) -> None:
        print(f"egw: listening on {url}", file=sys.stderr, flush=True)

    return _one_line(lambda: serve(cfg, listening=listening), f"{server.host}:{server.port}")


def _generated_token(cfg: Config) -> Config:
    host = cfg.server.host
    if not _is_loopback(host):
        raise ConfigError(
            "auth.tokens",
            f"no token is configured: refusing to listen on {host}, which is not "
            "loopback (set EGW_TOKEN, configure auth.tokens or run egw token create)",
        )
    token = secrets.token_urlsafe(32)
    # the operator's own token for this run: every namespace, as every scope
    generated = TokenConfig(
        name="generated",
        token=token,
        scopes=["tasks:read", "tasks:write", "admin"],
        namespaces=[NamespaceGrant(name="*")],
    )
    print(
        f"egw: no token configured; this run's token is: {token}\n"
        "egw: it changes at every start: `egw token create NAME` makes one that lasts "
        "(kept hashed in auth.token_file)",
        file=sys.stderr,
        flush=True,
    )
    return replace(cfg, auth=replace(cfg.auth, tokens=[generated]))


def migrate_command(args: argparse.Namespace) -> int:
    from egw.store.backend import redact
    from egw.store.db import copy_database, migrate_address

    if args.source or args.target:
        if not (args.source and args.target):
            raise ConfigError("--from", "--from and --to go together")
        source, target = args.source, args.target

        def copy() -> None:
            counts = asyncio.run(copy_database(source, target))
            rows = ", ".join(f"{table} {n}" for table, n in counts.items())
            print(f"{redact(target)}: copied from {source} ({rows})")

        return _one_line(copy, redact(target))
    cfg = load_config(args.config)
    address = cfg.storage.address

    def migrate() -> None:
        applied = asyncio.run(migrate_address(address))
        done = f"applied {', '.join(applied)}" if applied else "up to date"
        print(f"{redact(address)}: {done}")

    return _one_line(migrate, redact(address))


def _one_line(run: Callable[[], None], address: str) -> int:
    """Run `serve` or `migrate`; what stops them before they work is one line and exit
    code 1 (a `ConfigError` goes up to `main`: exit code 2)."""
    try:
        run()
    except ConfigError:
        raise
    except EgwError as exc:
        print(f"egw: {exc.message}", file=sys.stderr, flush=True)
        return 1
    except OSError as exc:  # the port (EADDRINUSE, EACCES), a TLS file...
        where = exc.filename or address
        print(f"egw: {where}: {exc.strerror or exc}", file=sys.stderr, flush=True)
        return 1
    return 0


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
