"""`egw.core.access`: grants, scopes, the default namespace of a submit, and each provider's
limits checked on stored specs (pure)."""

from __future__ import annotations

import pytest

from egw.config import TokenConfig
from egw.config.namespaces import NAMESPACE as CONFIG_NAMESPACE
from egw.config.namespaces import NamespaceGrant
from egw.core import fields
from egw.core.access import ALL, DEFAULT_ONLY, Access, Grant, Limits, Scope
from egw.errors import Forbidden, InvalidRequest
from egw.service.namespaces import access_of

READ = frozenset({"read"})


def test_the_namespace_pattern_is_one_rule() -> None:
    assert fields.NAMESPACE.pattern == CONFIG_NAMESPACE.pattern
    for good in ("default", "team-a", "a", "0", "a" * 63):
        assert fields.namespace(good) == good
    for bad in ("", "Team", "-a", "a-", "a_b", "a" * 64, "a.b", "*", 3):
        with pytest.raises(InvalidRequest):
            fields.namespace(bad)


def test_scopes() -> None:
    assert Scope(None).allows("x") and ALL.allows("anything")
    only = Scope(frozenset({"a"}))
    assert only.allows("a") and not only.allows("b")
    assert only.narrow("a") == only and only.narrow("b").namespaces == frozenset()
    assert ALL.narrow("b").namespaces == frozenset({"b"}) and only.narrow(None) is only


def test_grants() -> None:
    access = Access({"a": Grant(), "b": Grant(READ)})
    assert access.scope("read") == Scope(frozenset({"a", "b"}))
    assert access.scope("cancel") == Scope(frozenset({"a"}))
    assert access.scope("read", "cancel") == Scope(frozenset({"a", "b"}))
    assert access.may("write", "a") and not access.may("write", "b") and not access.may("read", "c")
    access.check("cancel", "a", "t_x")
    with pytest.raises(Forbidden) as info:
        access.check("cancel", "b", "t_x")
    assert info.value.details == {"task_id": "t_x", "namespace": "b"}
    star = Access({"*": Grant(READ)})
    assert star.scope("read") is ALL and star.scope("write") == Scope(frozenset())


def test_default_namespace_of_a_submit() -> None:
    assert Access({"a": Grant()}).default_namespace() == "a"
    assert Access({"a": Grant(), "b": Grant(READ)}).default_namespace() == "a"
    assert Access({"a": Grant(), "b": Grant()}).default_namespace() == "default"
    assert Access({"*": Grant()}).default_namespace() == "default"
    assert DEFAULT_ONLY.default_namespace() == "default"


def test_check_submit() -> None:
    access = Access({"a": Grant(providers=frozenset({"nomad"})), "b": Grant(READ)})
    access.check_submit("a", "nomad")
    for ns, provider in (("a", "local"), ("b", "nomad"), ("c", "nomad")):
        with pytest.raises(Forbidden):
            access.check_submit(ns, provider)


def test_access_of_tokens() -> None:
    assert access_of(TokenConfig(name="old", token="x" * 16)) == DEFAULT_ONLY
    reader = TokenConfig(
        name="r", token="x" * 16, scopes=["tasks:read"], namespaces=[NamespaceGrant(name="*")]
    )
    # the scopes bound the grant: a read-only token reads everywhere, acts nowhere
    assert access_of(reader).scope("read") is ALL
    assert access_of(reader).scope("write", "cancel") == Scope(frozenset())


SPECS = {
    "local": {"command": "sh", "args": []},
    "nomad": {"namespace": "team-a", "job": {"Namespace": "team-a"}},
    "github_actions": {"owner": "Org", "repo": "App", "workflow_id": "deploy.yml"},
    "cloud_run": {"project": "p", "region": "r", "job": "j"},
}


def test_limits() -> None:
    limits = Limits(
        {
            "local": {"allowed_commands": frozenset({"sh"})},
            "nomad": {"namespaces": frozenset({"team-a"})},
            "github_actions": {
                "owners": frozenset({"org"}),
                "repositories": frozenset({"org/app"}),
                "workflows": None,
            },
            "cloud_run": {"projects": frozenset({"p"}), "regions": None, "jobs": frozenset({"j"})},
        }
    )
    for provider, spec in SPECS.items():
        assert limits.denial(provider, spec) is None, provider
    assert Limits().denial("local", {"command": "rm"}) is None  # unlimited
    refused = [
        ("local", {"command": "rm"}),
        ("nomad", {"namespace": "team-b", "job": {"Namespace": "team-b"}}),
        # a spec whose job names another namespace than the spec's own is refused too
        ("nomad", {"namespace": "team-a", "job": {"Namespace": "team-b"}}),
        ("github_actions", {**SPECS["github_actions"], "repo": "other"}),
        ("github_actions", {**SPECS["github_actions"], "owner": "evil"}),
        ("cloud_run", {**SPECS["cloud_run"], "job": "k"}),
        ("cloud_run", {**SPECS["cloud_run"], "project": "q"}),
    ]
    for provider, spec in refused:
        assert limits.denial(provider, spec) is not None, spec
    assert "not allowed" in (Limits({"local": {}}).denial("nomad", SPECS["nomad"]) or "")
