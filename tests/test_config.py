"""Config: strict loading, ${VAR} substitution, secrets kept out of reprs and errors, exit 2."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest
import yaml
from support import free_port

from egw.cli import main
from egw.config import Config, ConfigError, TokenConfig, load_config, parse_config

SHIPPED = Path(__file__).resolve().parents[1] / "config.yaml"

# long enough to pass validation, distinctive enough to find in any text
AUTH_SECRET = "AuthQ7vX2Lm9Rt4Kp8ZwYc3N"
NOMAD_SECRET = "NomdB5hJ1sD6fG0aWe7Ur2Ty"
GH_TOKEN = "GhtkM3nP8qV4xC9zL1kJ6hFd"
GH_HOOK = "GhhkT2yU7iO5pA0sD3fG8hJk"
CR_TOKEN = "CrunZ9xC4vB1nM6qW2eR7tYu"
SECRETS = (AUTH_SECRET, NOMAD_SECRET, GH_TOKEN, GH_HOOK, CR_TOKEN)


def _error(data: Any, environ: dict[str, str] | None = None) -> ConfigError:
    with pytest.raises(ConfigError) as info:
        parse_config(data, environ or {})
    return info.value


def _leaks(text: str) -> list[str]:
    # also a partial leak: any 6-character piece of a secret (they share none)
    return [s for s in SECRETS if any(s[i : i + 6] in text for i in range(len(s) - 5))]


# --- defaults --------------------------------------------------------------------------------


def test_defaults() -> None:
    cfg = parse_config({}, {})
    assert cfg == Config()
    assert load_config(None, {}) == cfg
    assert (cfg.server.host, cfg.server.port) == ("127.0.0.1", 8080)
    assert cfg.server.max_body_bytes == 1024 * 1024
    assert cfg.server.max_wait_s == 300
    assert cfg.tls.enabled is False and cfg.tls.client_ca_file is None
    assert cfg.auth.tokens == []
    assert (cfg.logging.level, cfg.logging.format, cfg.logging.file) == ("info", "json", None)
    assert cfg.retry.attempts >= 1 and cfg.retry.initial_backoff_s <= cfg.retry.max_backoff_s
    assert cfg.providers.local.enabled is True
    assert not (
        cfg.providers.nomad.enabled
        or cfg.providers.github_actions.enabled
        or cfg.providers.cloud_run.enabled
    )


def test_an_empty_file_gives_the_defaults(tmp_path: Path) -> None:
    path = tmp_path / "empty.yaml"
    path.write_text("# nothing\n")
    assert load_config(path, {}) == Config()


def test_the_shipped_config_parses() -> None:
    cfg = load_config(SHIPPED, {})
    assert (cfg.server.host, cfg.server.port) == ("127.0.0.1", 8080)
    assert cfg.providers.local.enabled
    # EGW_TOKEN unset: the entry is there but skipped
    assert [t.configured for t in cfg.auth.tokens] == [False]
    token = "x" * 32
    cfg = load_config(SHIPPED, {"EGW_TOKEN": token})
    (entry,) = cfg.auth.tokens
    assert entry.configured and entry.token == token
    assert set(entry.scopes) == {"tasks:read", "tasks:write", "admin"}


def test_the_shipped_config_holds_no_literal_token() -> None:
    for entry in yaml.safe_load(SHIPPED.read_text())["auth"]["tokens"]:
        assert str(entry.get("token", "")).startswith("${"), entry


# --- unknown keys, wrong types, bad values ---------------------------------------------------


@pytest.mark.parametrize(
    ("data", "path"),
    [
        ({"providers": {"local": {"max_concurent": 3}}}, "providers.local.max_concurent"),
        ({"sever": {}}, "sever"),
        ({"server": {"prot": 1}}, "server.prot"),
        ({"auth": {"tokens": [{"name": "a", "tokn": "x" * 20}]}}, "auth.tokens[0].tokn"),
        ({"tls": {"enabeld": True}}, "tls.enabeld"),
        ({"providers": {"nomad": {"adress": "http://x"}}}, "providers.nomad.adress"),
    ],
)
def test_unknown_key_names_the_exact_path(data: dict[str, Any], path: str) -> None:
    exc = _error(data)
    assert exc.path == path
    assert f"{path}: unknown key" in str(exc)


@pytest.mark.parametrize(
    ("data", "path"),
    [
        ({"server": {"port": "http"}}, "server.port"),
        ({"server": {"port": True}}, "server.port"),
        ({"server": {"port": 80.5}}, "server.port"),
        ({"server": "127.0.0.1:8080"}, "server"),
        ({"tls": {"enabled": "yes please"}}, "tls.enabled"),
        (
            {"auth": {"tokens": [{"name": "a", "token": "x" * 20, "scopes": "admin"}]}},
            "auth.tokens[0].scopes",
        ),
        ({"retry": {"deadline_s": "soon"}}, "retry.deadline_s"),
        (
            {"providers": {"local": {"allowed_commands": "echo"}}},
            "providers.local.allowed_commands",
        ),
        ({"storage": {"retention_days": [7]}}, "storage.retention_days"),
    ],
)
def test_wrong_type_names_the_path(data: dict[str, Any], path: str) -> None:
    exc = _error(data)
    assert exc.path == path
    assert "must be" in exc.problem


@pytest.mark.parametrize(
    ("data", "path"),
    [
        ({"server": {"port": 70000}}, "server.port"),
        ({"server": {"port": -1}}, "server.port"),
        ({"server": {"max_body_bytes": 10}}, "server.max_body_bytes"),
        (
            {"auth": {"tokens": [{"name": "a", "token": "x" * 20, "scopes": ["tasks:admin"]}]}},
            "auth.tokens[0].scopes[0]",
        ),
        (
            {
                "auth": {
                    "tokens": [{"name": "a", "token": "x" * 20, "scopes": ["tasks:read", "root"]}]
                }
            },
            "auth.tokens[0].scopes[1]",
        ),
        ({"auth": {"tokens": [{"name": "bad name!", "token": "x" * 20}]}}, "auth.tokens[0].name"),
        ({"auth": {"tokens": [{"name": "a", "token": "short"}]}}, "auth.tokens[0].token"),
        ({"auth": {"tokens": [{"name": "a", "sha256": "XYZ"}]}}, "auth.tokens[0].sha256"),
        (
            {
                "auth": {
                    "tokens": [{"name": "a", "token": "x" * 20}, {"name": "a", "token": "y" * 20}]
                }
            },
            "auth.tokens[1].name",
        ),
        ({"logging": {"format": "xml"}}, "logging.format"),
        ({"logging": {"level": "verbose"}}, "logging.level"),
        ({"retry": {"attempts": 0}}, "retry.attempts"),
        ({"retry": {"initial_backoff_s": -1}}, "retry.initial_backoff_s"),
        ({"retry": {"initial_backoff_s": 5, "max_backoff_s": 1}}, "retry.max_backoff_s"),
        ({"retry": {"deadline_s": 0}}, "retry.deadline_s"),
        ({"providers": {"local": {"max_concurrent": 0}}}, "providers.local.max_concurrent"),
        (
            {"providers": {"local": {"allowed_commands": ["true", "no-such-program-x"]}}},
            "providers.local.allowed_commands[1]",
        ),
        (
            {"providers": {"local": {"allowed_commands": ["./no-such-script.sh"]}}},
            "providers.local.allowed_commands[0]",
        ),
        (
            {"providers": {"local": {"allowed_cwd": ["/no/such/dir"]}}},
            "providers.local.allowed_cwd[0]",
        ),
        ({"providers": {"local": {"allowed_env": ["A=B"]}}}, "providers.local.allowed_env[0]"),
        ({"providers": {"nomad": {"address": "ftp://nomad"}}}, "providers.nomad.address"),
        ({"tls": {"enabled": True}}, "tls.cert_file"),
    ],
)
def test_bad_value_names_the_path(data: dict[str, Any], path: str) -> None:
    exc = _error(data)
    assert exc.path == path, str(exc)
    assert str(exc).startswith(f"config: {path}: ")


def test_tls_with_a_missing_cert_file_names_tls_cert_file(tmp_path: Path) -> None:
    key = tmp_path / "key.pem"
    key.write_text("not really a key")
    missing = tmp_path / "nope" / "cert.pem"
    exc = _error({"tls": {"enabled": True, "cert_file": str(missing), "key_file": str(key)}})
    assert exc.path == "tls.cert_file"
    assert str(missing) in exc.problem


def test_tls_with_a_missing_client_ca_names_it(tmp_path: Path) -> None:
    for name in ("cert.pem", "key.pem"):
        (tmp_path / name).write_text("x")
    exc = _error(
        {
            "tls": {
                "enabled": True,
                "cert_file": str(tmp_path / "cert.pem"),
                "key_file": str(tmp_path / "key.pem"),
                "client_ca_file": str(tmp_path / "ca.pem"),
            }
        }
    )
    assert exc.path == "tls.client_ca_file"


def test_disabled_tls_does_not_check_files() -> None:
    cfg = parse_config({"tls": {"enabled": False, "cert_file": "/nonexistent/cert.pem"}}, {})
    assert cfg.tls.enabled is False


# --- ${VAR} substitution -----------------------------------------------------------------------


def test_var_substitution_uses_the_injected_environ(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EGW_TEST_DIR", "/from/os/environ")
    data = {
        "storage": {"path": "${EGW_TEST_DIR}/egw.db"},
        "server": {"host": "${EGW_TEST_HOST:-127.0.0.2}", "port": "${EGW_TEST_PORT:-9000}"},
        "logging": {"level": "${EGW_TEST_LEVEL:-info}"},
    }
    cfg = parse_config(data, {"EGW_TEST_DIR": "/injected", "EGW_TEST_LEVEL": "debug"})
    assert cfg.storage.path == "/injected/egw.db"
    assert cfg.server.host == "127.0.0.2"  # the default
    assert cfg.server.port == 9000  # the default, converted to int
    assert cfg.logging.level == "debug"  # set, so the default is not used


def test_var_substitution_in_load_config(tmp_path: Path) -> None:
    path = tmp_path / "egw.yaml"
    path.write_text(
        "server:\n  port: ${PORT}\nauth:\n  tokens:\n    - name: ci\n      token: ${CI_TOKEN}\n"
    )
    cfg = load_config(path, {"PORT": "8181", "CI_TOKEN": "t" * 24})
    assert cfg.server.port == 8181
    assert cfg.auth.tokens[0].token == "t" * 24


def test_a_substituted_value_is_still_validated() -> None:
    exc = _error({"server": {"port": "${PORT}"}}, {"PORT": "99999"})
    assert exc.path == "server.port"


def test_a_token_whose_var_is_unset_is_skipped() -> None:
    data = {
        "auth": {
            "tokens": [
                {"name": "from-env", "token": "${EGW_NOT_SET_ANYWHERE}"},
                {"name": "fixed", "token": "${SET_TOKEN}"},
            ]
        }
    }
    cfg = parse_config(data, {"SET_TOKEN": "s" * 20})
    unset, fixed = cfg.auth.tokens
    assert isinstance(unset, TokenConfig)
    assert unset.configured is False and not unset.token
    assert fixed.configured is True


# --- secrets ---------------------------------------------------------------------------------


def _secret_config() -> Config:
    return parse_config(
        {
            "auth": {"tokens": [{"name": "ci", "token": "${AUTH}"}]},
            "providers": {
                "nomad": {"token": NOMAD_SECRET},
                "github_actions": {"token": GH_TOKEN, "webhook_secret": "${HOOK}"},
                "cloud_run": {"access_token": CR_TOKEN},
            },
        },
        {"AUTH": AUTH_SECRET, "HOOK": GH_HOOK},
    )


def test_secrets_are_loaded_but_never_in_repr() -> None:
    cfg = _secret_config()
    assert cfg.auth.tokens[0].token == AUTH_SECRET
    assert cfg.providers.github_actions.webhook_secret == GH_HOOK
    for text in (
        repr(cfg),
        str(cfg),
        repr(cfg.auth),
        repr(cfg.auth.tokens[0]),
        repr(cfg.providers),
        repr(cfg.providers.nomad),
        repr(cfg.providers.github_actions),
        repr(cfg.providers.cloud_run),
    ):
        assert _leaks(text) == [], text


def test_a_sha256_token_is_not_in_repr() -> None:
    digest = "ab" * 32
    cfg = parse_config({"auth": {"tokens": [{"name": "ci", "sha256": digest}]}}, {})
    assert cfg.auth.tokens[0].configured
    assert digest not in repr(cfg)


@pytest.mark.parametrize(
    "data",
    [
        # a wrong type on the secret field itself
        {"auth": {"tokens": [{"name": "ci", "token": [AUTH_SECRET]}]}},
        {"auth": {"tokens": [{"name": "ci", "token": {AUTH_SECRET: AUTH_SECRET}}]}},
        {"providers": {"nomad": {"token": {"value": NOMAD_SECRET}}}},
        {"providers": {"nomad": {"token": 12345678901234567890}}},
        {"providers": {"github_actions": {"token": [GH_TOKEN]}}},
        {"providers": {"github_actions": {"webhook_secret": {"s": GH_HOOK}}}},
        {"providers": {"cloud_run": {"access_token": [CR_TOKEN]}}},
        # a bad value on it, or beside it
        {"auth": {"tokens": [{"name": "ci", "token": AUTH_SECRET, "sha256": "ab" * 32}]}},
        {"auth": {"tokens": [{"name": "ci", "token": AUTH_SECRET, "scopes": ["root"]}]}},
        {"auth": {"tokens": [{"name": "ci", "token": AUTH_SECRET, "bogus": 1}]}},
        {"providers": {"nomad": {"token": NOMAD_SECRET, "address": "nomad:4646"}}},
    ],
    ids=[
        "token-list",
        "token-map",
        "nomad-map",
        "nomad-int",
        "gh-list",
        "hook-map",
        "cr-list",
        "token-and-sha",
        "token-bad-scope",
        "token-unknown-key",
        "nomad-bad-address",
    ],
)
def test_no_secret_in_an_error_about_a_secret_field(data: dict[str, Any]) -> None:
    exc = _error(data)
    assert _leaks(str(exc)) == [], str(exc)
    assert _leaks(repr(exc)) == []


@pytest.mark.parametrize(
    ("data", "path"),
    [
        # the secret's *container* has the wrong type: its repr must not be quoted either
        ({"auth": {"tokens": {"name": "ci", "token": AUTH_SECRET}}}, "auth.tokens"),
        ({"auth": {"tokens": [["ci", AUTH_SECRET]]}}, "auth.tokens[0]"),
        ({"auth": [{"name": "ci", "token": AUTH_SECRET}]}, "auth"),
        ({"providers": {"nomad": [{"token": NOMAD_SECRET}]}}, "providers.nomad"),
        ({"providers": {"github_actions": [GH_HOOK]}}, "providers.github_actions"),
        ({"providers": {"cloud_run": [CR_TOKEN]}}, "providers.cloud_run"),
    ],
    ids=[
        "tokens-as-map",
        "token-as-list",
        "auth-as-list",
        "nomad-as-list",
        "github-as-list",
        "cloudrun-as-list",
    ],
)
def test_no_secret_in_an_error_about_the_secrets_container(data: dict[str, Any], path: str) -> None:
    exc = _error(data)
    assert exc.path == path
    assert _leaks(str(exc)) == [], str(exc)


# --- YAML --------------------------------------------------------------------------------------


def test_invalid_yaml(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text("server:\n  port: [8080\n  host: x\n")
    with pytest.raises(ConfigError) as info:
        load_config(path, {})
    assert "not valid YAML" in str(info.value)
    assert "line" in str(info.value)


def test_yaml_that_is_not_a_mapping(tmp_path: Path) -> None:
    path = tmp_path / "list.yaml"
    path.write_text("- server\n- tls\n")
    with pytest.raises(ConfigError, match="mapping"):
        load_config(path, {})


def test_yaml_is_loaded_safely(tmp_path: Path) -> None:
    path = tmp_path / "evil.yaml"
    path.write_text("server: !!python/object/apply:os.system ['echo pwned']\n")
    with pytest.raises(ConfigError):
        load_config(path, {})


def test_a_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read"):
        load_config(tmp_path / "absent.yaml", {})


# --- `egw serve` stops with exit code 2 and one line -------------------------------------------


def _one_line(err: str) -> str:
    lines = err.splitlines()
    assert len(lines) == 1, err
    return lines[0]


def test_serve_with_a_bad_config_exits_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(
        f"storage:\n  path: {tmp_path / 'egw.db'}\nproviders:\n  local:\n    max_concurent: 3\n"
    )
    assert main(["serve", "--config", str(path)]) == 2
    out, err = capsys.readouterr()
    line = _one_line(err)
    assert "providers.local.max_concurent" in line and "unknown key" in line
    assert out == ""
    assert not (tmp_path / "egw.db").exists()


def test_serve_with_tls_and_no_cert_exits_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "tls.yaml"
    path.write_text(
        f"tls:\n  enabled: true\n  cert_file: {tmp_path / 'cert.pem'}\n"
        f"  key_file: {tmp_path / 'key.pem'}\n"
    )
    assert main(["serve", "--config", str(path)]) == 2
    assert "tls.cert_file" in _one_line(capsys.readouterr().err)


def test_serve_with_a_secret_in_a_bad_value_does_not_print_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("EGW_TEST_SECRET", AUTH_SECRET)
    path = tmp_path / "bad.yaml"
    path.write_text(
        "auth:\n  tokens:\n    - name: ci\n      token: ${EGW_TEST_SECRET}\n"
        "      scopes: [everything]\n"
    )
    assert main(["serve", "--config", str(path)]) == 2
    out, err = capsys.readouterr()
    assert "auth.tokens[0].scopes[0]" in _one_line(err)
    assert _leaks(out + err) == []


def test_serve_on_a_public_address_without_a_token_exits_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("EGW_TOKEN", raising=False)
    path = tmp_path / "egw.yaml"
    path.write_text(
        f"server:\n  port: 0\nstorage:\n  path: {tmp_path / 'egw.db'}\n"
        "auth:\n  tokens:\n    - name: default\n      token: ${EGW_TOKEN}\n"
    )
    assert main(["serve", "--config", str(path), "--host", "0.0.0.0"]) == 2
    out, err = capsys.readouterr()
    line = _one_line(err)
    assert "auth.tokens" in line and "0.0.0.0" in line
    assert out == ""


def test_serve_on_a_public_address_from_the_file_without_a_token_exits_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("EGW_TOKEN", raising=False)
    path = tmp_path / "egw.yaml"
    path.write_text(f"server:\n  host: '::'\n  port: 0\nstorage:\n  path: {tmp_path / 'egw.db'}\n")
    assert main(["serve", "--config", str(path)]) == 2
    assert "auth.tokens" in _one_line(capsys.readouterr().err)


def test_serve_does_not_print_a_token_from_a_mis_indented_list(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A forgotten ``-`` makes ``auth.tokens`` a mapping; the error must not quote the token."""
    monkeypatch.setenv("EGW_TEST_SECRET", AUTH_SECRET)
    path = tmp_path / "egw.yaml"
    path.write_text("auth:\n  tokens:\n    name: ci\n    token: ${EGW_TEST_SECRET}\n")
    assert main(["serve", "--config", str(path)]) == 2
    out, err = capsys.readouterr()
    assert "auth.tokens" in _one_line(err)
    assert _leaks(out + err) == [], err


def test_serve_on_loopback_without_a_token_makes_one_and_prints_it_once(tmp_path: Path) -> None:
    """A real `egw serve` process; ``--port`` overrides the file's port."""
    port = free_port()
    path = tmp_path / "egw.yaml"
    path.write_text(
        f"server:\n  host: 127.0.0.1\n  port: 1\nstorage:\n  path: {tmp_path / 'egw.db'}\n"
        "auth:\n  tokens:\n    - name: default\n      token: ${EGW_TOKEN}\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "EGW_TOKEN"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "egw", "serve", "--config", str(path), "--port", str(port)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=env,
        cwd=tmp_path,
        text=True,
    )
    try:
        lines: list[str] = []
        deadline = time.monotonic() + 20
        assert proc.stderr is not None
        while not any("listening on" in line for line in lines):
            assert time.monotonic() < deadline, lines
            line = proc.stderr.readline()
            assert line, f"egw serve exited: {lines}"
            lines.append(line)
        token_lines = [line for line in lines if "this run's token" in line]
        assert len(token_lines) == 1, lines
        token = token_lines[0].rsplit(":", 1)[1].strip()
        assert len(token) >= 32
        assert f"127.0.0.1:{port}" in lines[-1]
        base = f"http://127.0.0.1:{port}"
        for _ in range(100):  # the socket is bound right after the line is printed
            try:
                urllib.request.urlopen(f"{base}/healthz", timeout=5).close()
                break
            except OSError:
                time.sleep(0.05)
        req = urllib.request.Request(
            f"{base}/v1/tasks", headers={"Authorization": f"Bearer {token}"}
        )
        with urllib.request.urlopen(req, timeout=5) as resp:
            assert resp.status == 200
        with pytest.raises(urllib.error.HTTPError) as info:
            urllib.request.urlopen(f"{base}/v1/tasks", timeout=5)
        assert info.value.code == 401
        info.value.close()
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            out, err = proc.communicate(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            out, err = proc.communicate()
    assert token not in out  # the log lines (stdout) never carry it
    assert token not in err  # printed once, before; never again


@pytest.mark.parametrize("value", ["9" * 5000, "\u0661\u0662", "1" * 20])
def test_an_integer_given_as_text_is_bounded_before_int(value: str) -> None:
    """``${PORT}`` substitutes text: a 5,000-digit or non-ASCII number is a config error
    naming the key, never Python's ValueError from int()."""
    with pytest.raises(ConfigError) as info:
        parse_config({"server": {"port": value}}, {})
    assert info.value.path == "server.port"


@pytest.mark.parametrize("value", [0, -1, 3601])
def test_github_log_wait_is_bounded(value: float) -> None:
    with pytest.raises(ConfigError) as info:
        parse_config({"providers": {"github_actions": {"log_wait_s": value}}}, {})
    assert info.value.path == "providers.github_actions.log_wait_s"


@pytest.mark.parametrize("provider", ["nomad", "github_actions", "cloud_run"])
def test_each_upstream_provider_has_its_breakers_config(provider: str) -> None:
    cfg = parse_config(
        {"providers": {provider: {"circuit": {"failures": 2, "open_s": 5, "max_open_s": 60}}}}, {}
    )
    circuit = getattr(cfg.providers, provider).circuit
    assert (circuit.failures, circuit.open_s, circuit.max_open_s) == (2, 5.0, 60.0)
    default = getattr(Config().providers, provider).circuit
    assert (default.failures, default.open_s, default.max_open_s) == (5, 30.0, 300.0)


@pytest.mark.parametrize(
    ("circuit", "path", "problem"),
    [
        ({"failure": 3}, "circuit.failure", "unknown key"),
        ({"failures": 0}, "circuit.failures", "between 1 and 1000"),
        ({"failures": "many"}, "circuit.failures", "must be int"),
        ({"open_s": 0}, "circuit.open_s", "greater than 0"),
        ({"open_s": 60, "max_open_s": 30}, "circuit.max_open_s", "at least open_s"),
        ({"max_open_s": 100000}, "circuit.max_open_s", "at most 86400"),
    ],
)
def test_breakers_config_is_strict(circuit: dict[str, Any], path: str, problem: str) -> None:
    with pytest.raises(ConfigError) as err:
        parse_config({"providers": {"nomad": {"circuit": circuit}}}, {})
    assert err.value.path == f"providers.nomad.{path}"
    assert problem in err.value.problem


def test_the_local_runner_has_no_breaker() -> None:
    with pytest.raises(ConfigError) as err:
        parse_config({"providers": {"local": {"circuit": {"failures": 3}}}}, {})
    assert err.value.path == "providers.local.circuit"
