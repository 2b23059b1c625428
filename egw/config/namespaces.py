"""The ``namespaces`` section (what may run in each namespace) and each token's grants, with the
checks that span sections: an unknown namespace, a rule given twice, two rules that
contradict each other or two namespaces that claim the same upstream target are each a
`ConfigError` naming the key path (``egw serve`` exits 2).

The rules themselves are applied by `egw.core.access`; this module only reads and checks
them. ``NAMESPACE`` is the pattern of `egw.core.fields.NAMESPACE` (config may not import
core; a test holds the two equal).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from egw.errors import ConfigError

if TYPE_CHECKING:
    from egw.config import Config

NAMESPACE = re.compile(r"[a-z0-9](?:[-a-z0-9]{0,61}[a-z0-9])?")
ACTIONS = ("read", "write", "cancel")
#: the scope each action needs besides the grant (``admin`` holds them all)
ACTION_SCOPES = {"read": "tasks:read", "write": "tasks:write", "cancel": "tasks:write"}
PROVIDERS = ("local", "nomad", "github_actions", "cloud_run")
_REPOSITORY = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,38})/[A-Za-z0-9._-]{1,100}")


@dataclass(frozen=True, slots=True)
class NamespaceGrant:
    """One namespace a token may use (``*``: every namespace), what it may do there (unset:
    whatever the token's scopes allow) and with which providers (unset: every provider the
    namespace allows)."""

    name: str
    actions: list[str] | None = None
    providers: list[str] | None = None


def grants_shorthand(value: Any) -> Any:
    """``"*"`` and bare names in the list stand for grants of every action."""
    if value == "*":
        return [{"name": "*"}]
    if isinstance(value, list):
        return [{"name": v} if isinstance(v, str) else v for v in value]
    return value


@dataclass(frozen=True, slots=True)
class LocalLimits:
    #: the commands of ``providers.local.allowed_commands`` tasks here may run
    allowed_commands: list[str]


@dataclass(frozen=True, slots=True)
class NomadLimits:
    #: the Nomad namespaces tasks here may run jobs in (unset: any)
    namespaces: list[str] | None = None


@dataclass(frozen=True, slots=True)
class GitHubLimits:
    #: the accounts whose repositories' workflows tasks here may dispatch (unset: any)
    owners: list[str] | None = None
    #: ``owner/repo`` names (unset: any of ``owners``)
    repositories: list[str] | None = None
    #: workflow file names or ids (unset: any)
    workflows: list[str] | None = None


@dataclass(frozen=True, slots=True)
class CloudRunLimits:
    projects: list[str] | None = None
    regions: list[str] | None = None
    jobs: list[str] | None = None


@dataclass(frozen=True, slots=True)
class NamespaceProviders:
    """The providers tasks of a namespace may use; one left out may not be used (``{}``
    allows a provider without limits)."""

    local: LocalLimits | None = None
    nomad: NomadLimits | None = None
    github_actions: GitHubLimits | None = None
    cloud_run: CloudRunLimits | None = None

    def allowed(self) -> dict[str, Mapping[str, list[str] | None]]:
        out: dict[str, Mapping[str, list[str] | None]] = {}
        for name in PROVIDERS:
            limits = getattr(self, name)
            if limits is not None:
                out[name] = {k: getattr(limits, k) for k in limits.__dataclass_fields__}
        return out


@dataclass(frozen=True, slots=True)
class NamespaceConfig:
    #: unset: every enabled provider, without limits
    providers: NamespaceProviders | None = None


def check_namespaces(cfg: Config) -> None:
    """The checks that span sections (run once the whole config is read)."""
    declared = {"default", *cfg.namespaces}
    for name, ns in cfg.namespaces.items():
        where = f"namespaces.{name}"
        if not NAMESPACE.fullmatch(name):
            raise ConfigError(where, "not a DNS label (1-63 lowercase letters, digits, hyphens)")
        if ns.providers is not None:
            _check_providers(cfg, ns.providers, f"{where}.providers")
    _check_overlaps(cfg)
    for i, token in enumerate(cfg.auth.tokens):
        if token.namespaces is not None:
            _check_grants(cfg, token.namespaces, token.scopes, declared, f"auth.tokens[{i}]")


def _enabled(cfg: Config) -> set[str]:
    return {p for p in PROVIDERS if getattr(cfg.providers, p).enabled}


def _check_providers(cfg: Config, providers: NamespaceProviders, where: str) -> None:
    enabled = _enabled(cfg)
    for name, limits in providers.allowed().items():
        at = f"{where}.{name}"
        if name not in enabled:
            raise ConfigError(at, f"provider {name} is not enabled (providers.{name}.enabled)")
        for key, values in limits.items():
            if values is None:
                continue
            if not values:
                raise ConfigError(f"{at}.{key}", f"is empty: it would allow nothing (drop {name})")
            _no_duplicates(values, f"{at}.{key}", lower=name == "github_actions")
            for j, value in enumerate(values):
                if not isinstance(value, str) or not value.strip():
                    raise ConfigError(f"{at}.{key}[{j}]", "must be a non-empty string")
    if providers.local is not None:
        pinned = cfg.providers.local.allowed_commands
        for j, command in enumerate(providers.local.allowed_commands):
            if pinned is None or command not in pinned:
                raise ConfigError(
                    f"{where}.local.allowed_commands[{j}]",
                    f"{command!r} is not in providers.local.allowed_commands (a namespace "
                    "narrows the gateway's allowlist, which must list it)",
                )
    github = providers.github_actions
    if github is not None:
        owners = {o.lower() for o in github.owners or ()}
        for j, repo in enumerate(github.repositories or ()):
            if not _REPOSITORY.fullmatch(repo):
                raise ConfigError(f"{where}.github_actions.repositories[{j}]", "must be owner/repo")
            if owners and repo.split("/")[0].lower() not in owners:
                raise ConfigError(
                    f"{where}.github_actions.repositories[{j}]",
                    f"{repo!r} contradicts owners: its owner is not one of them",
                )


def _no_duplicates(values: Iterable[Any], where: str, *, lower: bool = False) -> None:
    seen: set[Any] = set()
    for j, value in enumerate(values):
        key = value.lower() if lower and isinstance(value, str) else value
        if key in seen:
            raise ConfigError(f"{where}[{j}]", f"{value!r} is listed twice")
        seen.add(key)


def _check_overlaps(cfg: Config) -> None:
    """Two namespaces may not claim the same Nomad namespace or GitHub repository (an owner
    claims all of its repositories): either team could then run the other's jobs."""
    claims: list[tuple[str, str, str, str]] = []  # (namespace, kind, value, key path)
    for name, ns in cfg.namespaces.items():
        nomad = ns.providers.nomad if ns.providers else None
        github = ns.providers.github_actions if ns.providers else None
        at = f"namespaces.{name}.providers"
        for j, value in enumerate(nomad.namespaces or [] if nomad else []):
            claims.append((name, "nomad namespace", value, f"{at}.nomad.namespaces[{j}]"))
        for j, value in enumerate(github.owners or [] if github else []):
            claims.append((name, "owner", value.lower(), f"{at}.github_actions.owners[{j}]"))
        for j, value in enumerate(github.repositories or [] if github else []):
            claims.append(
                (name, "repository", value.lower(), f"{at}.github_actions.repositories[{j}]")
            )
    for i, (name, kind, value, at) in enumerate(claims):
        for other, other_kind, other_value, _ in claims[:i]:
            if other != name and _overlap(kind, value, other_kind, other_value):
                raise ConfigError(
                    at, f"overlaps namespaces.{other}: {kind} {value!r} is claimed by both"
                )


def _overlap(kind: str, value: str, other_kind: str, other_value: str) -> bool:
    if kind == other_kind:
        return value == other_value
    pair = {kind: value, other_kind: other_value}
    if set(pair) == {"owner", "repository"}:
        return pair["repository"].split("/")[0] == pair["owner"]
    return False


def _check_grants(
    cfg: Config, grants: list[NamespaceGrant], scopes: list[str], declared: set[str], where: str
) -> None:
    enabled = _enabled(cfg)
    names = [g.name for g in grants]
    if not grants:
        raise ConfigError(f"{where}.namespaces", "is empty: the token could do nothing")
    for j, grant in enumerate(grants):
        at = f"{where}.namespaces[{j}]"
        if grant.name != "*" and grant.name not in declared:
            raise ConfigError(
                f"{at}.name", f"unknown namespace {grant.name!r} (declared: {sorted(declared)})"
            )
        if grant.name in names[:j]:
            raise ConfigError(f"{at}.name", f"namespace {grant.name!r} is granted twice")
        if grant.name == "*" and len(grants) > 1:
            raise ConfigError(f"{at}.name", "'*' already grants every namespace: list it alone")
        if grant.actions is not None and not grant.actions:
            raise ConfigError(f"{at}.actions", "is empty: the grant would allow nothing")
        _no_duplicates(grant.actions or (), f"{at}.actions")
        for k, action in enumerate(grant.actions or ()):
            if action not in ACTIONS:
                raise ConfigError(f"{at}.actions[{k}]", f"unknown action (one of {list(ACTIONS)})")
            needed = ACTION_SCOPES[action]
            if needed not in scopes and "admin" not in scopes:
                raise ConfigError(
                    f"{at}.actions[{k}]",
                    f"contradicts the token's scopes: {action} needs the scope {needed}",
                )
        if grant.providers is None:
            continue
        _no_duplicates(grant.providers, f"{at}.providers")
        ns = cfg.namespaces.get(grant.name)
        allowed = enabled
        if ns is not None and ns.providers is not None:
            allowed = set(ns.providers.allowed())
        for k, provider in enumerate(grant.providers):
            if provider not in allowed:
                raise ConfigError(
                    f"{at}.providers[{k}]",
                    f"contradicts the namespace: provider {provider!r} is not allowed there "
                    f"(allowed: {sorted(allowed)})",
                )
        if grant.actions is not None and "write" not in grant.actions:
            raise ConfigError(f"{at}.providers", "contradicts actions: providers need write")
