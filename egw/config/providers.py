"""The providers' config sections: the local runner, Nomad, GitHub Actions, Cloud Run."""

from __future__ import annotations

import os
import re
import shutil
from dataclasses import dataclass, field
from pathlib import Path

from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.rsa import RSAPrivateKey

from egw.config.checks import between, log_bytes, positive, secret, url
from egw.config.sections import CircuitConfig
from egw.config.watchdog import LiveWatchdogConfig, WatchdogConfig
from egw.errors import ConfigError


@dataclass(frozen=True, slots=True)
class LocalConfig(LiveWatchdogConfig):
    #: SIGTERM, then SIGKILL after kill_grace_s: confirmed well within this
    cancel_timeout_s: float | None = 30.0
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
        positive(self.kill_grace_s, f"{path}.kill_grace_s")
        log_bytes(self.max_log_bytes, path)
        self.check_watchdog(path)
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
class NomadConfig(LiveWatchdogConfig):
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
    #: log streams (two per allocation) followed live at once, over a pool of their own;
    #: the others are caught up by non-follow reads (providers/nomad/slots.py)
    log_max_followers: int = 200
    #: a stream without a live slot is read again this often...
    log_poll_s: float = 10.0
    #: ...or less often, so that all such reads together stay under this rate
    log_reads_per_s: float = 20.0
    #: the breakers toward this provider's upstream (one per target)
    circuit: CircuitConfig = field(default_factory=CircuitConfig)

    def validate(self, path: str) -> None:
        url(self.address, f"{path}.address")
        between(self.log_max_followers, f"{path}.log_max_followers", 1, 100_000)
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
            "log_poll_s",
            "log_reads_per_s",
        ):
            positive(getattr(self, name), f"{path}.{name}")
        if self.blocking_wait_s > 600:
            raise ConfigError(f"{path}.blocking_wait_s", "Nomad caps wait at 600 s (10m)")
        log_bytes(self.max_log_bytes, path)
        self.check_watchdog(path)


@dataclass(frozen=True, slots=True)
class GitHubAppConfig:
    """A GitHub App installation: egw signs a JWT with the app's private key and exchanges
    it for installation tokens (`egw.providers.github_actions.appauth`)."""

    #: the App ID (or its client ID) from the app's settings page: the JWT's ``iss``
    app_id: str
    #: the installation of the app on the account that owns the repositories
    installation_id: int
    #: the private key (PEM) downloaded from the app's settings page...
    private_key_file: str | None = None
    #: ...or the PEM itself, usually ``${VAR}``
    private_key: str | None = secret()

    def validate(self, path: str) -> None:
        if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9.]{0,99}", self.app_id):
            raise ConfigError(f"{path}.app_id", "the App ID (digits) or its client ID")
        if self.installation_id < 1:
            raise ConfigError(f"{path}.installation_id", "must be at least 1")
        if bool(self.private_key_file) == bool(self.private_key):
            raise ConfigError(f"{path}.private_key_file", "give private_key_file or private_key")
        self.load_private_key(path)

    def load_private_key(self, path: str = "providers.github_actions.app") -> RSAPrivateKey:
        """The app's RSA private key; a `ConfigError` naming the key's path if it cannot be
        read or is no PEM RSA private key (the JWT is RS256: GitHub accepts nothing else)."""
        if self.private_key_file:
            where = f"{path}.private_key_file"
            try:
                pem = Path(self.private_key_file).read_bytes()
            except OSError as exc:
                raise ConfigError(
                    where, f"cannot read {self.private_key_file}: {exc.strerror}"
                ) from None
            name = self.private_key_file
        else:
            # a PEM kept on one line of an environment variable has its newlines as "\\n"
            pem = (self.private_key or "").replace("\\n", "\n").encode()
            where, name = f"{path}.private_key", "the value"
        try:
            key = serialization.load_pem_private_key(pem, password=None)
        except (ValueError, TypeError, UnsupportedAlgorithm):
            key = None
        if not isinstance(key, RSAPrivateKey):
            raise ConfigError(where, f"{name} is not a PEM RSA private key without a passphrase")
        return key


@dataclass(frozen=True, slots=True)
class GitHubActionsConfig(WatchdogConfig):
    enabled: bool = False
    api_url: str = "https://api.github.com"
    #: a PAT or installation token, sent as Authorization: Bearer (or ``app`` instead)
    token: str | None = secret()
    #: a GitHub App installation instead of ``token``: egw mints its own installation tokens
    app: GitHubAppConfig | None = None
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
    #: how long a completed job's log is asked for again until its upload lands (GitHub
    #: answers BlobNotFound until then and documents no delay)
    log_wait_s: float = 300.0
    #: output a task of this provider keeps (unset: storage.max_log_bytes)
    max_log_bytes: int | None = None
    #: the breakers toward this provider's upstream (one per target)
    circuit: CircuitConfig = field(default_factory=CircuitConfig)

    def validate(self, path: str) -> None:
        url(self.api_url, f"{path}.api_url")
        if self.token and self.app is not None:
            raise ConfigError(f"{path}.app", "give token or app, not both")
        if self.enabled and not self.token and self.app is None:
            raise ConfigError(f"{path}.token", "give token or app (a GitHub App installation)")
        if not 0 < self.log_wait_s <= 3600:
            raise ConfigError(f"{path}.log_wait_s", "must be greater than 0 and at most 3600")
        if self.api_version not in ("2022-11-28", "2026-03-10"):
            raise ConfigError(f"{path}.api_version", "one of 2022-11-28, 2026-03-10")
        for name in ("poll_min_s", "poll_max_s", "correlation_timeout_s", "request_timeout_s"):
            positive(getattr(self, name), f"{path}.{name}")
        if self.poll_max_s < self.poll_min_s:
            raise ConfigError(f"{path}.poll_max_s", "must be at least poll_min_s")
        if self.correlation_input is not None and not re.fullmatch(
            r"[A-Za-z_][A-Za-z0-9_-]{0,99}", self.correlation_input
        ):
            raise ConfigError(
                f"{path}.correlation_input", "a GitHub input name ([A-Za-z_][A-Za-z0-9_-]*)"
            )
        log_bytes(self.max_log_bytes, path)
        self.check_watchdog(path)


@dataclass(frozen=True, slots=True)
class CloudRunConfig(WatchdogConfig):
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
    #: the breakers toward this provider's upstream (one per target)
    circuit: CircuitConfig = field(default_factory=CircuitConfig)

    def validate(self, path: str) -> None:
        url(self.run_api_url, f"{path}.run_api_url")
        url(self.logging_api_url, f"{path}.logging_api_url")
        if self.credentials_file and not Path(self.credentials_file).is_file():
            raise ConfigError(f"{path}.credentials_file", f"no such file: {self.credentials_file}")
        if self.logging_reads_per_minute < 1:
            raise ConfigError(f"{path}.logging_reads_per_minute", "must be at least 1")
        positive(self.poll_min_s, f"{path}.poll_min_s")
        if self.poll_max_s < self.poll_min_s:
            raise ConfigError(f"{path}.poll_max_s", "must be at least poll_min_s")
        if self.logging_settle_s < 0:
            raise ConfigError(f"{path}.logging_settle_s", "must be 0 or more")
        positive(self.request_timeout_s, f"{path}.request_timeout_s")
        log_bytes(self.max_log_bytes, path)
        self.check_watchdog(path)
