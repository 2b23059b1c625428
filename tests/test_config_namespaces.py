"""Config of namespaces: the ``namespaces`` section and each token's grants are strict; an
unknown namespace, a rule given twice, two rules that contradict each other and two
namespaces claiming one upstream target are each an error naming the key path, and
``egw serve`` exits 2 on them."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
import yaml

from egw.cli import main
from egw.config import ConfigError, parse_config

TOKEN = "team-token-0123456789"


def base() -> dict[str, Any]:
    return {
        "providers": {
            "local": {"allowed_commands": ["sh", "true"]},
            "nomad": {"enabled": True},
            "github_actions": {"enabled": True, "token": "ghp_test"},
        },
        "namespaces": {
            "team-a": {
                "providers": {
                    "nomad": {"namespaces": ["team-a"]},
                    "github_actions": {"owners": ["org"], "workflows": ["deploy.yml"]},
                }
            },
            "team-b": {"providers": {"local": {"allowed_commands": ["true"]}}},
            "ops": {},
        },
        "auth": {
            "tokens": [
                {"name": "a", "token": TOKEN, "namespaces": ["team-a"]},
                {"name": "everything", "token": TOKEN + "x", "namespaces": "*"},
                {
                    "name": "b",
                    "token": TOKEN + "y",
                    "namespaces": [
                        {"name": "team-b", "actions": ["read", "write"], "providers": ["local"]},
                        {"name": "default", "actions": ["read"]},
                    ],
                },
                {"name": "old", "token": TOKEN + "z"},
            ]
        },
    }


def error(change: Any) -> str:
    data = base()
    change(data)
    with pytest.raises(ConfigError) as info:
        parse_config(data, {})
    return str(info.value)


def test_a_valid_two_team_config() -> None:
    cfg = parse_config(base(), {})
    assert sorted(cfg.namespaces) == ["ops", "team-a", "team-b"]
    a, everything, b, old = cfg.auth.tokens
    assert [g.name for g in a.namespaces or []] == ["team-a"]
    assert (a.namespaces or [])[0].actions is None  # what the token's scopes allow
    assert [g.name for g in everything.namespaces or []] == ["*"]
    assert (b.namespaces or [])[0].providers == ["local"]
    assert old.namespaces is None  # the default namespace only (egw.core.access)


def _tokens(d: dict[str, Any]) -> list[dict[str, Any]]:
    tokens: list[dict[str, Any]] = d["auth"]["tokens"]
    return tokens


@pytest.mark.parametrize(
    ("change", "path", "words"),
    [
        # unknown namespaces
        (
            lambda d: _tokens(d)[0].update(namespaces=["team-c"]),
            "auth.tokens[0].namespaces[0].name",
            "unknown namespace 'team-c'",
        ),
        (lambda d: d["namespaces"].update({"Team_C": {}}), "namespaces.Team_C", "DNS label"),
        (
            lambda d: d["namespaces"]["ops"].update(provider={}),
            "namespaces.ops.provider",
            "unknown key",
        ),
        (
            lambda d: d["namespaces"]["ops"].update(providers={"docker": {}}),
            "namespaces.ops.providers.docker",
            "unknown key",
        ),
        # rules given twice (overlaps)
        (
            lambda d: _tokens(d)[0].update(namespaces=["team-a", "team-a"]),
            "auth.tokens[0].namespaces[1].name",
            "granted twice",
        ),
        (
            lambda d: _tokens(d)[0].update(namespaces=["*", "team-a"]),
            "auth.tokens[0].namespaces[0].name",
            "list it alone",
        ),
        (
            lambda d: _tokens(d)[0].update(
                namespaces=[{"name": "team-a", "actions": ["read"] * 2}]
            ),
            "auth.tokens[0].namespaces[0].actions[1]",
            "listed twice",
        ),
        (
            lambda d: d["namespaces"]["team-b"]["providers"].update(
                nomad={"namespaces": ["team-a"]}
            ),
            "namespaces.team-b.providers.nomad.namespaces[0]",
            "overlaps namespaces.team-a",
        ),
        (
            lambda d: d["namespaces"]["team-b"]["providers"].update(
                github_actions={"repositories": ["ORG/app"]}
            ),
            "namespaces.team-b.providers.github_actions.repositories[0]",
            "overlaps namespaces.team-a",
        ),
        (
            lambda d: d["namespaces"]["team-a"]["providers"]["nomad"].update(namespaces=["x", "x"]),
            "namespaces.team-a.providers.nomad.namespaces[1]",
            "listed twice",
        ),
        # contradictions
        (
            lambda d: _tokens(d)[0].update(namespaces=[{"name": "team-a", "providers": ["local"]}]),
            "auth.tokens[0].namespaces[0].providers[0]",
            "not allowed there",
        ),
        (
            lambda d: _tokens(d)[0].update(
                scopes=["tasks:read"],
                namespaces=[{"name": "team-a", "actions": ["read", "cancel"]}],
            ),
            "auth.tokens[0].namespaces[0].actions[1]",
            "needs the scope tasks:write",
        ),
        (
            lambda d: _tokens(d)[0].update(
                namespaces=[{"name": "team-a", "actions": ["read"], "providers": ["nomad"]}]
            ),
            "auth.tokens[0].namespaces[0].providers",
            "providers need write",
        ),
        (
            lambda d: d["namespaces"]["team-b"]["providers"]["local"].update(
                allowed_commands=["ls"]
            ),
            "namespaces.team-b.providers.local.allowed_commands[0]",
            "not in providers.local.allowed_commands",
        ),
        (
            lambda d: d["namespaces"]["team-a"]["providers"]["github_actions"].update(
                repositories=["other/app"]
            ),
            "namespaces.team-a.providers.github_actions.repositories[0]",
            "contradicts owners",
        ),
        (
            lambda d: d["namespaces"]["ops"].update(providers={"cloud_run": {}}),
            "namespaces.ops.providers.cloud_run",
            "not enabled",
        ),
        (
            lambda d: d["namespaces"]["ops"].update(providers={"nomad": {"namespaces": []}}),
            "namespaces.ops.providers.nomad.namespaces",
            "allow nothing",
        ),
        (
            lambda d: d["namespaces"]["ops"].update(providers={"local": {}}),
            "namespaces.ops.providers.local.allowed_commands",
            "is required",
        ),
        # shapes
        (lambda d: _tokens(d)[0].update(namespaces="team-a"), "auth.tokens[0].namespaces", "list"),
        (lambda d: _tokens(d)[0].update(namespaces=[]), "auth.tokens[0].namespaces", "empty"),
        (
            lambda d: _tokens(d)[0].update(namespaces=[{"name": "team-a", "actions": ["run"]}]),
            "auth.tokens[0].namespaces[0].actions[0]",
            "unknown action",
        ),
    ],
)
def test_errors_name_the_key_path(change: Any, path: str, words: str) -> None:
    message = error(change)
    assert f"{path}:" in message and words in message, message


def test_no_namespaces_is_the_old_config() -> None:
    data = copy.deepcopy(base())
    del data["namespaces"]
    for token in _tokens(data):
        token.pop("namespaces", None)
    cfg = parse_config(data, {})
    assert cfg.namespaces == {} and all(t.namespaces is None for t in cfg.auth.tokens)


def test_serve_exits_2_on_an_unknown_namespace(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = base()
    data["storage"] = {"path": str(tmp_path / "egw.db")}
    _tokens(data)[0]["namespaces"] = ["team-z"]
    path = tmp_path / "egw.yaml"
    path.write_text(yaml.safe_dump(data))
    assert main(["serve", "--config", str(path)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "auth.tokens[0].namespaces[0].name" in err[0], err
    assert TOKEN not in err[0]
    assert not (tmp_path / "egw.db").exists()
