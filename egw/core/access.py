"""Namespaces: who may do what where, and what may run in each namespace (pure).

Theory of operation
-------------------
Every task belongs to one namespace (a DNS label; ``default`` unless the submit
names one). A token's `Access` maps namespaces to a `Grant`: the actions it may
take there (``read``, ``write``, ``cancel``) and the providers it may submit to.
The key ``*`` grants every namespace. A token configured without namespaces gets
`DEFAULT_ONLY`: the ``default`` namespace, which is where every task of a gateway
without namespaces lives, so old configurations keep working exactly, and adding a
team's namespace never widens an old token.

Reads are filtered with a `Scope` (the namespaces a token may read, or all): the
service's reads take one on every call, so a read route cannot forget it. A task
outside the caller's scope is *not found* (404), never *forbidden* (403), so task
ids cannot be probed; a 403 is only for what the caller can already see (a task it
may read but not cancel) or names itself (a namespace, a provider, a repository
in its own submit).

What may run in a namespace is its `Limits`: the providers its tasks may use and,
per provider, the upstream targets (Nomad namespaces, GitHub owners, repositories
and workflows, Cloud Run projects, regions and jobs, local commands). `denial`
checks a validated spec against them before anything is recorded or sent upstream.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from egw.errors import Forbidden

ACTIONS: frozenset[str] = frozenset({"read", "write", "cancel"})
DEFAULT = "default"
ANY = "*"


@dataclass(frozen=True, slots=True)
class Scope:
    """The namespaces a read may see; ``None``: every namespace."""

    namespaces: frozenset[str] | None = None

    def allows(self, namespace: str) -> bool:
        return self.namespaces is None or namespace in self.namespaces

    def narrow(self, namespace: str | None) -> Scope:
        """This scope cut to one namespace (a list filter); ``None`` leaves it as it is."""
        if namespace is None:
            return self
        return Scope(frozenset({namespace}) if self.allows(namespace) else frozenset())


#: the scope of the gateway's own reads (fan-out, timeouts, providers): every namespace
ALL = Scope(None)


@dataclass(frozen=True, slots=True)
class Grant:
    """What a token may do in one namespace; ``providers`` None: every provider there."""

    actions: frozenset[str] = ACTIONS
    providers: frozenset[str] | None = None


@dataclass(frozen=True, slots=True)
class Access:
    """A token's namespaces: a `Grant` per namespace name (``*``: every namespace)."""

    grants: Mapping[str, Grant] = field(default_factory=dict)

    def grant(self, namespace: str) -> Grant | None:
        return self.grants.get(namespace) or self.grants.get(ANY)

    def may(self, action: str, namespace: str) -> bool:
        grant = self.grant(namespace)
        return grant is not None and action in grant.actions

    def scope(self, *actions: str) -> Scope:
        """The namespaces where the token may take any of ``actions``."""
        star = self.grants.get(ANY)
        if star is not None and star.actions.intersection(actions):
            return ALL
        return Scope(
            frozenset(n for n, g in self.grants.items() if g.actions.intersection(actions))
        )

    def default_namespace(self) -> str:
        """A submit's namespace when it names none: the token's only namespace, else ``default``."""
        named = [n for n, g in self.grants.items() if n != ANY and "write" in g.actions]
        return named[0] if len(named) == 1 and ANY not in self.grants else DEFAULT

    def check(self, action: str, namespace: str, task_id: str) -> None:
        """For a task found with ``scope("read", action)``: `Forbidden` unless the token may
        take ``action`` in its namespace (it can see the task: a 403 tells it nothing new)."""
        if not self.may(action, namespace):
            raise Forbidden(
                f"this token may not {action} tasks of namespace {namespace!r}",
                details={"task_id": task_id, "namespace": namespace},
            )

    def check_submit(self, namespace: str, provider: str) -> None:
        """`Forbidden` unless the token may submit to ``provider`` in ``namespace``. The same
        answer whether or not the namespace exists: the caller named it, nothing is probed."""
        grant = self.grant(namespace)
        if grant is None or "write" not in grant.actions:
            raise Forbidden(
                f"this token may not submit to namespace {namespace!r}",
                details={"namespace": namespace},
            )
        if grant.providers is not None and provider not in grant.providers:
            raise Forbidden(
                f"this token may not use provider {provider!r} in namespace {namespace!r}",
                details={"namespace": namespace, "provider": provider},
            )


#: the gateway's own actions (the watchdog's cancels): every namespace, every action
GATEWAY = Access({ANY: Grant()})
#: the ``default`` namespace only: a token configured without ``namespaces``
DEFAULT_ONLY = Access({DEFAULT: Grant()})


# --- what may run in a namespace ---------------------------------------------------------------


def _text(key: str) -> Callable[[Mapping[str, Any]], str]:
    return lambda spec: str(spec.get(key))


def _lower(key: str) -> Callable[[Mapping[str, Any]], str]:
    return lambda spec: str(spec.get(key)).lower()


def _repository(spec: Mapping[str, Any]) -> str:
    return f"{spec.get('owner')}/{spec.get('repo')}".lower()


def _nomad_namespace(spec: Mapping[str, Any]) -> str:
    # the register body's Job.Namespace is what Nomad runs it in; the spec keeps it twice
    job = spec.get("job")
    inner = job.get("Namespace") if isinstance(job, Mapping) else None
    ns = spec.get("namespace")
    return str(ns) if inner in (None, ns) else f"{ns}|{inner}"


#: each limit a namespace may set, by provider: the stored spec's value it is checked against.
#: GitHub account and repository names are case-insensitive (so compared lowercased)
TARGETS: Mapping[str, Mapping[str, Callable[[Mapping[str, Any]], str]]] = {
    "local": {"allowed_commands": _text("command")},
    "nomad": {"namespaces": _nomad_namespace},
    "github_actions": {
        "owners": _lower("owner"),
        "repositories": _repository,
        "workflows": _text("workflow_id"),
    },
    "cloud_run": {"projects": _text("project"), "regions": _text("region"), "jobs": _text("job")},
}
#: the limits compared lowercased (the config's values are lowercased to match)
CASE_INSENSITIVE = frozenset({("github_actions", "owners"), ("github_actions", "repositories")})


@dataclass(frozen=True, slots=True)
class Limits:
    """What may run in one namespace. ``providers`` None: every enabled provider, unlimited;
    else the providers allowed, each with its limits (a limit absent or None: any value)."""

    providers: Mapping[str, Mapping[str, frozenset[str] | None]] | None = None

    def denial(self, provider: str, spec: Mapping[str, Any]) -> str | None:
        """Why a validated ``spec`` of ``provider`` may not run here, or None if it may."""
        if self.providers is None:
            return None
        limits = self.providers.get(provider)
        if limits is None:
            return f"provider {provider!r} is not allowed in this namespace"
        for name, allowed in limits.items():
            if allowed is None:
                continue
            value = TARGETS[provider][name](spec)
            if value not in allowed:
                return f"{name} of this namespace do not include {value!r}"
        return None


#: a namespace no configuration limits (``default`` unless the config declares it)
UNLIMITED = Limits()


def check_limits(limits: Limits, namespace: str, provider: str, spec: Mapping[str, Any]) -> None:
    """`Forbidden` (403) when ``spec`` may not run in ``namespace``: raised before the task is
    recorded, so nothing is sent upstream."""
    why = limits.denial(provider, spec)
    if why is not None:
        raise Forbidden(
            f"namespace {namespace!r}: {why}",
            details={"namespace": namespace, "provider": provider},
        )
