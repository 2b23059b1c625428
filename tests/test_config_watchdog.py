"""The watchdog keys of the provider sections: defaults per provider, strict checks."""

from __future__ import annotations

from typing import Any

import pytest

from egw.config import ConfigError, parse_config

PROVIDERS = ("local", "nomad", "github_actions", "cloud_run")


def section(name: str, **keys: Any) -> dict[str, Any]:
    return {"providers": {name: keys}}


def test_defaults() -> None:
    p = parse_config({}, {}).providers
    assert p.local.cancel_timeout_s == 30.0  # SIGKILL after kill_grace_s: quick to confirm
    for cfg in (p.nomad, p.github_actions, p.cloud_run):
        assert cfg.cancel_timeout_s == 120.0
    for cfg in (p.local, p.nomad, p.github_actions, p.cloud_run):
        assert (cfg.pending_timeout_s, cfg.queued_timeout_s) == (None, None)
        assert (cfg.on_stuck, cfg.max_attempts) == ("flag", 2)
    assert p.local.silent_timeout_s is None and p.nomad.silent_timeout_s is None


def test_null_disables_the_cancel_deadline() -> None:
    cfg = parse_config(section("nomad", cancel_timeout_s=None), {})
    assert cfg.providers.nomad.cancel_timeout_s is None


@pytest.mark.parametrize("name", PROVIDERS)
@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("cancel_timeout_s", 0),
        ("pending_timeout_s", -1),
        ("queued_timeout_s", 0),
        ("on_stuck", "retry"),
        ("max_attempts", 0),
        ("max_attempts", 11),
        ("queued_timeout_s", "soon"),
    ],
)
def test_bad_values_name_the_key(name: str, key: str, value: Any) -> None:
    with pytest.raises(ConfigError) as info:
        parse_config(section(name, **{key: value}), {})
    assert info.value.path == f"providers.{name}.{key}"


@pytest.mark.parametrize("name", ["github_actions", "cloud_run"])
def test_silence_only_where_output_is_live(name: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_config(section(name, silent_timeout_s=5), {})
    assert info.value.path == f"providers.{name}.silent_timeout_s"
    assert "unknown key" in str(info.value)


@pytest.mark.parametrize("name", ["local", "nomad"])
def test_silence_is_checked(name: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_config(section(name, silent_timeout_s=0), {})
    assert info.value.path == f"providers.{name}.silent_timeout_s"


@pytest.mark.parametrize("name", ["local", "nomad", "github_actions", "cloud_run"])
def test_resubmit_on_every_provider(name: str) -> None:
    cfg = parse_config(section(name, on_stuck="resubmit", max_attempts=3), {})
    assert getattr(cfg.providers, name).on_stuck == "resubmit"
    assert getattr(cfg.providers, name).max_attempts == 3
