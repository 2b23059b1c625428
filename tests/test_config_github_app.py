"""Config of GitHub App authentication: exactly one of token and app, the private key
checked at start (readable, PEM, RSA, no passphrase), ``egw serve`` exits 2 naming it."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from egw.cli import main
from egw.config import ConfigError, parse_config

KEY = rsa.generate_private_key(public_exponent=65537, key_size=2048)
PEM = KEY.private_bytes(
    serialization.Encoding.PEM,
    serialization.PrivateFormat.PKCS8,
    serialization.NoEncryption(),
).decode()


def _github(**section: Any) -> dict[str, Any]:
    return {"providers": {"github_actions": {"enabled": True, **section}}}


def _error(data: Any, environ: dict[str, str] | None = None) -> ConfigError:
    with pytest.raises(ConfigError) as info:
        parse_config(data, environ or {})
    return info.value


def test_an_app_with_a_key_file_or_a_key_in_a_variable(tmp_path: Path) -> None:
    key_file = tmp_path / "app.pem"
    key_file.write_text(PEM)
    app = {"app_id": 424242, "installation_id": "31337", "private_key_file": str(key_file)}
    cfg = parse_config(_github(app=app), {}).providers.github_actions
    assert cfg.app is not None and (cfg.app.app_id, cfg.app.installation_id) == ("424242", 31337)
    assert cfg.app.load_private_key().public_key().public_numbers() == (
        KEY.public_key().public_numbers()
    )
    # a PEM on one line, its newlines written as \n, as many secret stores keep it
    one_line = PEM.replace("\n", "\\n")
    app = {"app_id": "Iv23liXYZ", "installation_id": 1, "private_key": "${APP_KEY}"}
    cfg = parse_config(_github(app=app), {"APP_KEY": one_line}).providers.github_actions
    assert cfg.app is not None and cfg.app.load_private_key().key_size == 2048
    assert "PRIVATE KEY" not in repr(cfg) and one_line[40:60] not in repr(cfg)


def test_exactly_one_of_token_and_app(tmp_path: Path) -> None:
    app = {"app_id": "1", "installation_id": 1, "private_key": PEM}
    assert _error(_github(token="ghp_x", app=app)).path == "providers.github_actions.app"
    assert _error(_github()).path == "providers.github_actions.token"
    # disabled, nothing is asked for
    assert parse_config({"providers": {"github_actions": {}}}, {}).providers.github_actions


@pytest.mark.parametrize(
    ("app", "path", "problem"),
    [
        ({"installation_id": 1, "private_key": PEM}, "app.app_id", "is required"),
        ({"app_id": "1", "private_key": PEM}, "app.installation_id", "is required"),
        ({"app_id": "1 2", "installation_id": 1, "private_key": PEM}, "app.app_id", "App ID"),
        ({"app_id": "1", "installation_id": 0, "private_key": PEM}, "app.installation_id", "1"),
        ({"app_id": "1", "installation_id": 1}, "app.private_key_file", "give"),
        (
            {"app_id": "1", "installation_id": 1, "private_key": PEM, "private_key_file": "k"},
            "app.private_key_file",
            "give",
        ),
        ({"app_id": "1", "installation_id": 1, "private_key": "nope"}, "app.private_key", "PEM"),
        ({"app_id": "1", "installation_id": 1, "pem": PEM}, "app.pem", "unknown key"),
    ],
)
def test_bad_app_sections(app: dict[str, Any], path: str, problem: str) -> None:
    err = _error(_github(app=app))
    assert err.path == f"providers.github_actions.{path}" and problem in err.problem
    assert "BEGIN" not in str(err)  # the key never shows in an error


def _write(path: Path, key: Any, password: bytes | None = None) -> Path:
    encryption = (
        serialization.BestAvailableEncryption(password)
        if password
        else serialization.NoEncryption()
    )
    path.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, encryption)
    )
    return path


def test_key_files_that_cannot_sign_are_refused(tmp_path: Path) -> None:
    def problem(key_file: Path) -> ConfigError:
        app = {"app_id": "1", "installation_id": 1, "private_key_file": str(key_file)}
        return _error(_github(app=app))

    missing = problem(tmp_path / "absent.pem")
    assert missing.path == "providers.github_actions.app.private_key_file"
    assert "cannot read" in missing.problem and "absent.pem" in missing.problem
    ec_key = problem(_write(tmp_path / "ec.pem", ec.generate_private_key(ec.SECP256R1())))
    assert "not a PEM RSA private key" in ec_key.problem  # RS256 needs RSA
    locked = problem(_write(tmp_path / "locked.pem", KEY, b"passphrase"))
    assert "without a passphrase" in locked.problem
    (tmp_path / "cert.pem").write_text(
        "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n"
    )
    assert "cert.pem" in problem(tmp_path / "cert.pem").problem


def test_serve_exits_2_naming_the_key(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    key_file = tmp_path / "unreadable.pem"
    key_file.write_text("garbage")
    path = tmp_path / "app.yaml"
    path.write_text(
        f"storage:\n  path: {tmp_path / 'egw.db'}\n"
        "providers:\n  github_actions:\n    enabled: true\n    app:\n"
        f"      app_id: 1\n      installation_id: 2\n      private_key_file: {key_file}\n"
    )
    assert main(["serve", "--config", str(path)]) == 2
    out, err = capsys.readouterr()
    (line,) = err.splitlines()
    assert "providers.github_actions.app.private_key_file" in line and str(key_file) in line
    assert out == "" and not (tmp_path / "egw.db").exists()
