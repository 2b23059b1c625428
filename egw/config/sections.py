"""The gateway's own config sections: server, TLS, auth, retries, logging, storage, metrics."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

from egw.config.checks import (
    MAX_BYTES,
    MIB,
    MIN_LOG_BYTES,
    SCOPES,
    between,
    positive,
    secret,
)
from egw.config.namespaces import NamespaceGrant, grants_shorthand
from egw.errors import ConfigError


@dataclass(frozen=True, slots=True)
class ServerConfig:
    host: str = "127.0.0.1"
    port: int = 8080
    #: largest request body accepted (413 above it)
    max_body_bytes: int = 1024 * 1024
    #: idle keep-alive connections are closed after this
    keepalive_timeout_s: float = 75.0
    #: how long `egw serve` waits for open requests on shutdown
    shutdown_timeout_s: float = 10.0
    #: SSE comment line every so often, so proxies keep the connection
    sse_keepalive_s: float = 15.0
    #: live log output is sent to tailers in one write per tick of this length
    sse_flush_ms: int = 25
    #: the longest ``wait`` a blocking status query may ask for
    max_wait_s: float = 300.0

    def validate(self, path: str) -> None:
        if not 0 <= self.port <= 65535:
            raise ConfigError(f"{path}.port", "must be between 0 and 65535")
        if self.max_body_bytes < 1024:
            raise ConfigError(f"{path}.max_body_bytes", "must be at least 1024")
        if not 1 <= self.sse_flush_ms <= 1000:
            raise ConfigError(f"{path}.sse_flush_ms", "must be between 1 and 1000")
        positive(self.sse_keepalive_s, f"{path}.sse_keepalive_s")


@dataclass(frozen=True, slots=True)
class TLSConfig:
    enabled: bool = False
    cert_file: str | None = None
    key_file: str | None = None
    #: when set, clients must present a certificate signed by this CA (mutual TLS)
    client_ca_file: str | None = None

    def validate(self, path: str) -> None:
        if not self.enabled:
            return
        for name in ("cert_file", "key_file"):
            if not getattr(self, name):
                raise ConfigError(f"{path}.{name}", "is required when tls.enabled is true")
        for name in ("cert_file", "key_file", "client_ca_file"):
            value = getattr(self, name)
            if value and not Path(value).is_file():
                raise ConfigError(f"{path}.{name}", f"no such file: {value}")


@dataclass(frozen=True, slots=True)
class TokenConfig:
    name: str
    #: the token itself (use ${ENV_VAR}); or give sha256 instead
    token: str | None = secret()
    #: lowercase hex sha256 of the token, so the file holds no secret
    sha256: str | None = secret()
    scopes: list[str] = field(default_factory=lambda: ["tasks:read", "tasks:write"])
    #: the namespaces the token may use: ``"*"``, a list of names, or of grants (name,
    #: actions, providers). Unset: the ``default`` namespace only (see egw.core.access)
    namespaces: list[NamespaceGrant] | None = field(
        default=None, metadata={"shorthand": grants_shorthand}
    )

    def validate(self, path: str) -> None:
        if not re.fullmatch(r"[A-Za-z0-9_.@:-]{1,64}", self.name):
            raise ConfigError(f"{path}.name", "use 1-64 letters, digits or _.@:-")
        if self.token and self.sha256:
            raise ConfigError(path, "give token or sha256, not both")
        if self.sha256 is not None and not re.fullmatch(r"[0-9a-f]{64}", self.sha256):
            raise ConfigError(f"{path}.sha256", "must be 64 lowercase hex digits")
        if self.token is not None and self.token and len(self.token) < 16:
            raise ConfigError(f"{path}.token", "must be at least 16 characters")
        for i, scope in enumerate(self.scopes):
            if scope not in SCOPES:
                raise ConfigError(f"{path}.scopes[{i}]", f"unknown scope (one of {sorted(SCOPES)})")

    @property
    def configured(self) -> bool:
        """False for an entry whose ``${VAR}`` was unset: it is skipped, not an error."""
        return bool(self.token or self.sha256)


@dataclass(frozen=True, slots=True)
class AuthConfig:
    tokens: list[TokenConfig] = field(default_factory=list)
    #: more tokens, kept by `egw token` as name, sha256 and scopes (read at start; a
    #: missing file has none)
    token_file: str | None = None

    def validate(self, path: str) -> None:
        names = [t.name for t in self.tokens]
        for i, name in enumerate(names):
            if name in names[:i]:
                raise ConfigError(f"{path}.tokens[{i}].name", f"duplicate token name {name!r}")


@dataclass(frozen=True, slots=True)
class RetryConfig:
    #: attempts in all, the first one included
    attempts: int = 5
    initial_backoff_s: float = 0.5
    max_backoff_s: float = 10.0
    #: no retry starts after this long since the first attempt
    deadline_s: float = 60.0

    def validate(self, path: str) -> None:
        if self.attempts < 1:
            raise ConfigError(f"{path}.attempts", "must be at least 1")
        for name in ("initial_backoff_s", "max_backoff_s", "deadline_s"):
            positive(getattr(self, name), f"{path}.{name}")
        if self.max_backoff_s < self.initial_backoff_s:
            raise ConfigError(f"{path}.max_backoff_s", "must be at least initial_backoff_s")


@dataclass(frozen=True, slots=True)
class CircuitConfig:
    """A provider's breakers, one per upstream target (see ``egw/core/circuit.py``)."""

    #: consecutive failures (connection errors, timeouts, 5xx) that open a breaker
    failures: int = 5
    #: how long it stays open before one probe goes through
    open_s: float = 30.0
    #: each failed probe doubles the open time, up to this
    max_open_s: float = 300.0

    def validate(self, path: str) -> None:
        between(self.failures, f"{path}.failures", 1, 1000)
        positive(self.open_s, f"{path}.open_s")
        if self.max_open_s < self.open_s:
            raise ConfigError(f"{path}.max_open_s", "must be at least open_s")
        if self.max_open_s > 86400:
            raise ConfigError(f"{path}.max_open_s", "must be at most 86400 (a day)")


@dataclass(frozen=True, slots=True)
class LoggingConfig:
    level: str = "info"
    #: json, or console (coloured, for a terminal)
    format: str = "json"
    #: also append JSON lines to this file
    file: str | None = None

    def validate(self, path: str) -> None:
        if self.level.lower() not in ("debug", "info", "warning", "error", "critical"):
            raise ConfigError(f"{path}.level", "one of debug, info, warning, error, critical")
        if self.format not in ("json", "console"):
            raise ConfigError(f"{path}.format", "one of json, console")


@dataclass(frozen=True, slots=True)
class StorageConfig:
    #: the SQLite file (created with its folder)
    path: str = "data/egw.db"
    #: the database as a URL, instead of ``path``: ``postgresql://user:${PGPASSWORD}@host/db``
    #: (PostgreSQL; the password is never logged) or ``sqlite:///path`` (SQLite, as ``path``)
    url: str | None = None
    #: PostgreSQL: connections of the readers' pool (the writer has one of its own)
    pool_size: int = 4
    #: PostgreSQL replicas: work that runs on one replica at a time (the watchdog, the
    #: prune) moves to another within this long after its holder dies (`egw/store/leases.py`)
    lease_s: float = 15.0
    #: events and logs of tasks finished longer ago than this are pruned
    retention_days: float = 7.0
    prune_interval_s: float = 3600.0
    #: task projections kept in memory for fast reads
    cache_size: int = 10000
    #: output a task keeps: its first and its last half of this (a provider's own
    #: ``max_log_bytes`` overrides it); the bytes between are dropped, once, with an event
    max_log_bytes: int = 100 * MIB
    #: new tasks are refused (503 ``storage_full``) while the database's data (its pages
    #: in use) is larger than this (unset: no limit)
    max_bytes: int | None = None

    @property
    def address(self) -> str:
        """The database: ``url`` if set, else the SQLite file at ``path``."""
        return self.url or self.path

    def validate(self, path: str) -> None:
        if self.url is not None:
            scheme, sep, rest = self.url.partition("://")
            if not sep or scheme.lower() not in ("postgresql", "postgres", "sqlite"):
                raise ConfigError(
                    f"{path}.url", "a postgresql://... or sqlite:///path URL (or use storage.path)"
                )
            if scheme.lower() == "sqlite" and (not rest.startswith("/") or rest == "/"):
                raise ConfigError(f"{path}.url", "sqlite:///path: three slashes, then the file")
        between(self.pool_size, f"{path}.pool_size", 1, 100)
        if not 0.3 <= self.lease_s <= 3600:
            raise ConfigError(f"{path}.lease_s", "must be between 0.3 and 3600")
        positive(self.retention_days, f"{path}.retention_days")
        positive(self.prune_interval_s, f"{path}.prune_interval_s")
        between(self.max_log_bytes, f"{path}.max_log_bytes", MIN_LOG_BYTES, MAX_BYTES)
        if self.max_bytes is not None:
            between(self.max_bytes, f"{path}.max_bytes", MIB, MAX_BYTES)


@dataclass(frozen=True, slots=True)
class MetricsConfig:
    #: serve Prometheus metrics at GET /metrics
    enabled: bool = True
    #: ask for a bearer token (any scope) on /metrics
    require_token: bool = False
    #: also export ``egw_namespace_tasks{namespace,status}``; the label takes only the
    #: declared namespaces and ``default`` (any other as ``other``), so it stays bounded.
    #: Metrics show every namespace: with this on, set require_token too
    namespace_label: bool = False
