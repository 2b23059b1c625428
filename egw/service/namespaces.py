"""Namespaces at the service: the config's rules as `egw.core.access` values, and the checks a
submit passes before anything is recorded or sent upstream (see `egw.core.access`)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from egw.config import Config, NamespaceGrant, TokenConfig
from egw.config.namespaces import ACTION_SCOPES
from egw.core.access import (
    ACTIONS,
    CASE_INSENSITIVE,
    DEFAULT,
    UNLIMITED,
    Access,
    Grant,
    Limits,
    check_limits,
)
from egw.errors import Forbidden
from egw.providers.base import Provider


def access_of(token: TokenConfig) -> Access:
    """A token's grants; without ``namespaces``, the ``default`` namespace only (a token of
    ``auth.token_file`` has none). A grant without ``actions`` has those the token's scopes
    allow (config refuses an action they do not)."""
    if token.namespaces is None:
        grants: list[NamespaceGrant] = [NamespaceGrant(name=DEFAULT)]
    else:
        grants = token.namespaces
    scopes = set(token.scopes)
    out: dict[str, Grant] = {}
    for g in grants:
        given = ACTIONS if g.actions is None else frozenset(g.actions)
        actions = frozenset(a for a in given if "admin" in scopes or ACTION_SCOPES[a] in scopes)
        providers = None if g.providers is None else frozenset(g.providers)
        out[g.name] = Grant(actions, providers)
    return Access(out)


def limits_of(cfg: Config) -> dict[str, Limits]:
    """Each declared namespace's `Limits` (``default`` unlimited unless declared)."""
    out = {DEFAULT: UNLIMITED}
    for name, ns in cfg.namespaces.items():
        if ns.providers is None:
            out[name] = UNLIMITED
            continue
        providers: dict[str, Mapping[str, frozenset[str] | None]] = {}
        for provider, limits in ns.providers.allowed().items():
            providers[provider] = {
                key: None
                if values is None
                else frozenset(
                    v.lower() if (provider, key) in CASE_INSENSITIVE else v for v in values
                )
                for key, values in limits.items()
            }
        out[name] = Limits(providers)
    return out


class Namespaces:
    """The declared namespaces and their limits; checks a submit against them."""

    def __init__(self, limits: Mapping[str, Limits] | None = None) -> None:
        self.limits = dict(limits) if limits is not None else {DEFAULT: UNLIMITED}

    def admit(self, namespace: str | None, provider: str, access: Access) -> str:
        """The namespace a submit goes to (the token's default when it names none), once the
        token may submit to ``provider`` there; `Forbidden` otherwise."""
        ns = namespace or access.default_namespace()
        access.check_submit(ns, provider)
        if ns not in self.limits:
            raise Forbidden(
                f"no namespace {ns!r} is declared on this gateway", details={"namespace": ns}
            )
        return ns

    def spec(self, namespace: str, provider: Provider, task: Mapping[str, Any]) -> dict[str, Any]:
        """The provider's validated spec of ``task`` (its JSON), once the namespace's limits
        allow it (`Forbidden` otherwise)."""
        spec = provider.validate(task).to_json()
        check_limits(self.limits[namespace], namespace, provider.name, spec)
        return spec
