"""Configuration: frozen dataclasses loaded once from YAML, strictly.

`load_config(path, environ)` is the only YAML reader. ``${VAR}`` (or
``${VAR:-default}``) in a string value is replaced from ``environ``, so secrets
stay out of the file. An unknown key, a wrong type or a bad value raises
`ConfigError` naming the key path (``providers.nomad.adress: unknown key``).
Secret fields are ``repr=False`` and never appear in an error message.
"""

from __future__ import annotations

import os
import re
import shutil
import types
from collections.abc import Mapping
from dataclasses import MISSING, dataclass, field, fields, is_dataclass
from pathlib import Path
from typing import Any, TypeVar, Union, get_args, get_origin, get_type_hints

import yaml

from egw.errors import ConfigError

SCOPES = frozenset({"tasks:read", "tasks:write", "admin"})
MIB = 1 << 20
#: the bounds of ``max_log_bytes`` and ``storage.max_bytes`` (2**53: exact as a float too)
MIN_LOG_BYTES = 1024
MAX_BYTES = 1 << 53


def secret(default: Any = None) -> Any:
    """A field whose value never shows in a repr or an error."""
    return field(default=default, repr=False, metadata={"secret": True})


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
        _positive(self.sse_keepalive_s, f"{path}.sse_keepalive_s")


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
            _positive(getattr(self, name), f"{path}.{name}")
        if self.max_backoff_s < self.initial_backoff_s:
            raise ConfigError(f"{path}.max_backoff_s", "must be at least initial_backoff_s")


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

    def validate(self, path: str) -> None:
        _positive(self.retention_days, f"{path}.retention_days")
        _positive(self.prune_interval_s, f"{path}.prune_interval_s")
        _between(self.max_log_bytes, f"{path}.max_log_bytes", MIN_LOG_BYTES, MAX_BYTES)
        if self.max_bytes is not None:
            _between(self.max_bytes, f"{path}.max_bytes", MIB, MAX_BYTES)


@dataclass(frozen=True, slots=True)
class MetricsConfig:
    #: serve Prometheus metrics at GET /metrics
    enabled: bool = True
    #: ask for a bearer token (any scope) on /metrics
    require_token: bool = False


@dataclass(frozen=True, slots=True)
class LocalConfig:
    enabled: bool = True
    #: tasks running at once; the rest wait as ``queued``
    max_concurrent: int = 4
    #: if set, only these commands (argv[0]) may run, each pinned to the absolute path it
    #: resolves to when the config is loaded (see `LocalConfig.commands`)
    allowed_commands: list[str] | None = None
    #: with ``allowed_commands``: the directories (and everything under them) a task's
    #: ``cwd`` may name; unset, a task may not choose its ``cwd`` at all
    allowed_cwd: list[str] | None = None
    #: with ``allowed_commands``: if set, the only ``env`` names a task may set (the deny
    #: list of `egw.providers.local.spec` applies on top)
    allowed_env: list[str] | None = None
    #: seconds between SIGTERM and SIGKILL on cancel, and how long a task's leftover
    #: processes may outlive its command before they are killed
    kill_grace_s: float = 5.0
    #: output a task of this provider keeps (unset: storage.max_log_bytes)
    max_log_bytes: int | None = None

    def validate(self, path: str) -> None:
        if self.max_concurrent < 1:
            raise ConfigError(f"{path}.max_concurrent", "must be at least 1")
        _positive(self.kill_grace_s, f"{path}.kill_grace_s")
        _log_bytes(self.max_log_bytes, path)
        self.commands(path)
        self.cwd_roots(path)
        for i, name in enumerate(self.allowed_env or ()):
            if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", name):
                raise ConfigError(f"{path}.allowed_env[{i}]", "not an environment variable name")

    def commands(self, path: str = "providers.local") -> dict[str, str] | None:
        """``allowed_commands`` pinned: each name to the absolute path that runs for it.

        A bare name is looked up on the gateway's own ``PATH`` (never a task's); a name
        with a ``/`` is taken relative to the gateway's working directory (never a task's
        ``cwd``). One that names no executable file is a `ConfigError`: an allowlist entry
        that silently runs nothing, or something else later, is worse than a refusal to start.
        """
        if self.allowed_commands is None:
            return None
        out: dict[str, str] = {}
        for i, name in enumerate(self.allowed_commands):
            if "/" in name:
                found = name if os.access(name, os.X_OK) and Path(name).is_file() else None
            else:
                found = shutil.which(name)
            if not name or found is None:
                where = "the gateway's PATH" if "/" not in name else "the gateway's directory"
                raise ConfigError(
                    f"{path}.allowed_commands[{i}]", f"{name!r} is no executable file on {where}"
                )
            out[name] = os.path.abspath(found)
        return out

    def cwd_roots(self, path: str = "providers.local") -> list[str] | None:
        """``allowed_cwd`` with every symlink and ``..`` resolved; each must be a directory."""
        if self.allowed_cwd is None:
            return None
        roots = []
        for i, root in enumerate(self.allowed_cwd):
            real = os.path.realpath(root)
            if not root or not Path(real).is_dir():
                raise ConfigError(f"{path}.allowed_cwd[{i}]", f"no such directory: {root}")
            roots.append(real)
        return roots


@dataclass(frozen=True, slots=True)
class NomadConfig:
    enabled: bool = False
    address: str = "http://127.0.0.1:4646"
    #: ACL token, sent as X-Nomad-Token
    token: str | None = secret()
    namespace: str = "default"
    region: str | None = None
    datacenters: list[str] = field(default_factory=lambda: ["*"])
    ca_file: str | None = None
    client_cert_file: str | None = None
    client_key_file: str | None = None
    #: TLS server name to check instead of the address's host
    server_name: str | None = None
    connect_timeout_s: float = 5.0
    request_timeout_s: float = 30.0
    #: reconnect the event stream when nothing (not even the 30 s heartbeat) came for this long
    stream_idle_timeout_s: float = 75.0
    #: while the event stream is refused (ACL, network), long-poll allocations with this ``wait``
    blocking_wait_s: float = 60.0
    #: while long-polling, try the event stream again this often
    stream_retry_s: float = 300.0
    #: keep tailing an allocation's logs this long after egw ended its task (then drain and stop)
    log_grace_s: float = 30.0
    #: output a task of this provider keeps (unset: storage.max_log_bytes)
    max_log_bytes: int | None = None

    def validate(self, path: str) -> None:
        _url(self.address, f"{path}.address")
        for name in ("ca_file", "client_cert_file", "client_key_file"):
            value = getattr(self, name)
            if value and not Path(value).is_file():
                raise ConfigError(f"{path}.{name}", f"no such file: {value}")
        if bool(self.client_cert_file) != bool(self.client_key_file):
            raise ConfigError(
                f"{path}.client_key_file", "give client_cert_file and client_key_file together"
            )
        for name in (
            "connect_timeout_s",
            "request_timeout_s",
            "stream_idle_timeout_s",
            "blocking_wait_s",
            "stream_retry_s",
            "log_grace_s",
        ):
            _positive(getattr(self, name), f"{path}.{name}")
        if self.blocking_wait_s > 600:
            raise ConfigError(f"{path}.blocking_wait_s", "Nomad caps wait at 600 s (10m)")
        _log_bytes(self.max_log_bytes, path)


@dataclass(frozen=True, slots=True)
class GitHubActionsConfig:
    enabled: bool = False
    api_url: str = "https://api.github.com"
    #: a PAT or installation token, sent as Authorization: Bearer
    token: str | None = secret()
    #: the secret GitHub signs webhook deliveries with (X-Hub-Signature-256)
    webhook_secret: str | None = secret()
    owner: str | None = None
    repo: str | None = None
    api_version: str = "2022-11-28"
    #: reconciler interval bounds for runs whose webhooks may have been missed
    poll_min_s: float = 15.0
    poll_max_s: float = 300.0
    #: a workflow_dispatch input that the dispatched workflows declare and echo into their
    #: run-name; egw sends a unique id in it so a run is found exactly without run details
    #: (older Enterprise Server) or after an ambiguous failure. Unset: match by time window.
    correlation_input: str | None = None
    #: a dispatched run not identified after this long fails the task
    correlation_timeout_s: float = 300.0
    request_timeout_s: float = 30.0
    #: output a task of this provider keeps (unset: storage.max_log_bytes)
    max_log_bytes: int | None = None

    def validate(self, path: str) -> None:
        _url(self.api_url, f"{path}.api_url")
        if self.api_version not in ("2022-11-28", "2026-03-10"):
            raise ConfigError(f"{path}.api_version", "one of 2022-11-28, 2026-03-10")
        for name in ("poll_min_s", "poll_max_s", "correlation_timeout_s", "request_timeout_s"):
            _positive(getattr(self, name), f"{path}.{name}")
        if self.poll_max_s < self.poll_min_s:
            raise ConfigError(f"{path}.poll_max_s", "must be at least poll_min_s")
        if self.correlation_input is not None and not re.fullmatch(
            r"[A-Za-z_][A-Za-z0-9_-]{0,99}", self.correlation_input
        ):
            raise ConfigError(
                f"{path}.correlation_input", "a GitHub input name ([A-Za-z_][A-Za-z0-9_-]*)"
            )
        _log_bytes(self.max_log_bytes, path)


@dataclass(frozen=True, slots=True)
class CloudRunConfig:
    enabled: bool = False
    run_api_url: str = "https://run.googleapis.com"
    logging_api_url: str = "https://logging.googleapis.com"
    project: str | None = None
    region: str | None = None
    #: a service-account key file; without it, Application Default Credentials
    credentials_file: str | None = None
    #: a static bearer token (tests, simulators); skips google-auth
    access_token: str | None = secret()
    #: Cloud Logging read requests per minute per project that egw may spend
    logging_reads_per_minute: int = 30
    poll_min_s: float = 2.0
    poll_max_s: float = 30.0
    #: Cloud Logging ingests late: a running execution's log lines are read only once
    #: they are this old, so a late entry is not skipped (0 reads up to now)
    logging_settle_s: float = 5.0
    #: one upstream HTTP request (Run Admin or Logging) gives up after this
    request_timeout_s: float = 30.0
    #: output a task of this provider keeps (unset: storage.max_log_bytes)
    max_log_bytes: int | None = None

    def validate(self, path: str) -> None:
        _url(self.run_api_url, f"{path}.run_api_url")
        _url(self.logging_api_url, f"{path}.logging_api_url")
        if self.credentials_file and not Path(self.credentials_file).is_file():
            raise ConfigError(f"{path}.credentials_file", f"no such file: {self.credentials_file}")
        if self.logging_reads_per_minute < 1:
            raise ConfigError(f"{path}.logging_reads_per_minute", "must be at least 1")
        _positive(self.poll_min_s, f"{path}.poll_min_s")
        if self.poll_max_s < self.poll_min_s:
            raise ConfigError(f"{path}.poll_max_s", "must be at least poll_min_s")
        if self.logging_settle_s < 0:
            raise ConfigError(f"{path}.logging_settle_s", "must be 0 or more")
        _positive(self.request_timeout_s, f"{path}.request_timeout_s")
        _log_bytes(self.max_log_bytes, path)


@dataclass(frozen=True, slots=True)
class ProvidersConfig:
    local: LocalConfig = field(default_factory=LocalConfig)
    nomad: NomadConfig = field(default_factory=NomadConfig)
    github_actions: GitHubActionsConfig = field(default_factory=GitHubActionsConfig)
    cloud_run: CloudRunConfig = field(default_factory=CloudRunConfig)


@dataclass(frozen=True, slots=True)
class Config:
    server: ServerConfig = field(default_factory=ServerConfig)
    tls: TLSConfig = field(default_factory=TLSConfig)
    auth: AuthConfig = field(default_factory=AuthConfig)
    retry: RetryConfig = field(default_factory=RetryConfig)
    logging: LoggingConfig = field(default_factory=LoggingConfig)
    storage: StorageConfig = field(default_factory=StorageConfig)
    metrics: MetricsConfig = field(default_factory=MetricsConfig)
    providers: ProvidersConfig = field(default_factory=ProvidersConfig)


def load_config(path: str | Path | None, environ: Mapping[str, str] | None = None) -> Config:
    """Read, substitute and check a config file; None gives the embedded defaults."""
    env = os.environ if environ is None else environ
    if path is None:
        return parse_config({}, env)
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError("", f"cannot read {path}: {exc.strerror}") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark is not None else ""
        raise ConfigError("", f"{path} is not valid YAML{where}") from None
    return parse_config({} if data is None else data, env)


def parse_config(data: Any, environ: Mapping[str, str]) -> Config:
    if not isinstance(data, dict):
        raise ConfigError("", "the top level must be a mapping")
    return _build(Config, data, "", environ)


T = TypeVar("T")
_VAR = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")


def _substitute(value: str, environ: Mapping[str, str]) -> str:
    return _VAR.sub(lambda m: environ.get(m.group(1)) or (m.group(2) or ""), value)


def _build(cls: type[T], data: Mapping[str, Any], path: str, environ: Mapping[str, str]) -> T:
    hints = get_type_hints(cls)
    known = {f.name: f for f in fields(cls)}  # type: ignore[arg-type]
    for key in data:
        if key not in known:
            raise ConfigError(_join(path, str(key)), "unknown key")
    kwargs: dict[str, Any] = {}
    for name, f in known.items():
        key_path = _join(path, name)
        if name not in data:
            if f.default is MISSING and f.default_factory is MISSING:
                raise ConfigError(key_path, "is required")
            continue
        kwargs[name] = _convert(
            hints[name], data[name], key_path, environ, bool(f.metadata.get("secret"))
        )
    obj = cls(**kwargs)
    validate = getattr(obj, "validate", None)
    if validate is not None:
        validate(path or cls.__name__.lower())
    return obj


def _convert(tp: Any, value: Any, path: str, environ: Mapping[str, str], is_secret: bool) -> Any:
    if isinstance(value, str):
        value = _substitute(value, environ)
    origin = get_origin(tp)
    if origin in (Union, types.UnionType):
        args = [a for a in get_args(tp) if a is not type(None)]
        if value is None or value == "":
            return None
        return _convert(args[0], value, path, environ, is_secret)
    if origin is list:
        if not isinstance(value, list):
            raise ConfigError(path, f"must be a list, not {_kind(value, is_secret)}")
        (item,) = get_args(tp)
        return [_convert(item, v, f"{path}[{i}]", environ, is_secret) for i, v in enumerate(value)]
    if is_dataclass(tp):
        if not isinstance(value, dict):
            raise ConfigError(path, f"must be a mapping, not {_kind(value, is_secret)}")
        return _build(tp, value, path, environ)  # type: ignore[arg-type]
    if tp is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "false"):
            return value.lower() == "true"
    elif tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, str) and re.fullmatch(r"-?\d+", value):
            return int(value)
    elif tp is float:
        if isinstance(value, int | float) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str):
            try:
                return float(value)
            except ValueError:
                pass
    elif tp is str:
        if isinstance(value, str):
            return value
        if isinstance(value, int | float) and not isinstance(value, bool) and not is_secret:
            return str(value)
    raise ConfigError(path, f"must be {getattr(tp, '__name__', tp)}, not {_kind(value, is_secret)}")


def _kind(value: Any, is_secret: bool) -> str:
    # only a scalar is quoted: a list or mapping may hold secrets written in the file
    if is_secret or not isinstance(value, str | int | float | bool | None):
        return type(value).__name__
    text = repr(value)
    return f"{type(value).__name__} {text[:40]}"


def _join(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


def _positive(value: float, path: str) -> None:
    if value <= 0:
        raise ConfigError(path, "must be greater than 0")


def _between(value: int, path: str, low: int, high: int) -> None:
    if not low <= value <= high:
        raise ConfigError(path, f"must be between {low} and {high}")


def _log_bytes(value: int | None, section: str) -> None:
    if value is not None:
        _between(value, f"{section}.max_log_bytes", MIN_LOG_BYTES, MAX_BYTES)


def _url(value: str, path: str) -> None:
    if not re.match(r"https?://[^/\s]+", value):
        raise ConfigError(path, "must be an http:// or https:// URL")
