"""Configuration: frozen dataclasses loaded once from YAML, strictly.

`load_config(path, environ)` is the only YAML reader. ``${VAR}`` (or
``${VAR:-default}``) in a string value is replaced from ``environ``, so secrets
stay out of the file. An unknown key, a wrong type or a bad value raises
`ConfigError` naming the key path (``providers.nomad.adress: unknown key``).
Secret fields are ``repr=False`` and never appear in an error message.

The sections live in `egw.config.sections` (the gateway's own) and
`egw.config.providers`; `egw.config.loader` builds them; everything is
importable from ``egw.config``.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from egw.config.checks import SCOPES
from egw.config.loader import build
from egw.config.namespaces import NamespaceConfig, NamespaceGrant, check_namespaces
from egw.config.providers import (
    CloudRunConfig,
    GitHubActionsConfig,
    GitHubAppConfig,
    LocalConfig,
    NomadConfig,
)
from egw.config.sections import (
    AuthConfig,
    CircuitConfig,
    LoggingConfig,
    MetricsConfig,
    RetryConfig,
    ServerConfig,
    StorageConfig,
    TLSConfig,
    TokenConfig,
)
from egw.errors import ConfigError


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
    #: what may run in each namespace (``default`` exists without being declared)
    namespaces: dict[str, NamespaceConfig] = field(default_factory=dict)

    def validate(self, path: str) -> None:
        check_namespaces(self)


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
    return build(Config, data, "", environ)


__all__ = [
    "SCOPES",
    "AuthConfig",
    "CircuitConfig",
    "CloudRunConfig",
    "Config",
    "GitHubActionsConfig",
    "GitHubAppConfig",
    "LocalConfig",
    "LoggingConfig",
    "MetricsConfig",
    "NamespaceConfig",
    "NamespaceGrant",
    "NomadConfig",
    "ProvidersConfig",
    "RetryConfig",
    "ServerConfig",
    "StorageConfig",
    "TLSConfig",
    "TokenConfig",
    "load_config",
    "parse_config",
]
