"""The migrations ship inside the wheel and are found from an installed package."""

from __future__ import annotations

import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_installed_wheel_migrates_a_database(tmp_path: Path) -> None:
    wheels = tmp_path / "wheels"
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--quiet",
            "--no-deps",
            "--no-build-isolation",
            "--wheel-dir",
            str(wheels),
            str(ROOT),
        ],
        check=True,
        capture_output=True,
        timeout=180,
    )
    (wheel,) = wheels.glob("egw-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    shipped = sorted(n for n in names if n.startswith("egw/migrations/"))
    # both dialects' migrations: SQLite's at the top, PostgreSQL's twins in postgresql/
    assert shipped == sorted(
        f"egw/migrations/{p.relative_to(ROOT / 'migrations')}"
        for p in (ROOT / "migrations").glob("**/*.sql")
    )
    assert any(n.startswith("egw/migrations/postgresql/0001_") for n in shipped)
    # the OpenAPI document served at /v1/openapi.json, and the simulators `egw dev` runs
    assert "egw/web/openapi.json" in names
    # the web console's files, every one of them
    console = sorted(p.name for p in (ROOT / "egw" / "web" / "console").iterdir())
    assert console and all(f"egw/web/console/{name}" in names for name in console)
    for sim in ("nomad", "github", "cloudrun"):
        assert f"egw/testing/{sim}/__init__.py" in names

    site = tmp_path / "site"
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "--quiet",
            "--no-deps",
            "--target",
            str(site),
            str(wheel),
        ],
        check=True,
        capture_output=True,
        timeout=180,
    )
    # run from an empty folder with only the installed copy of egw importable: -I ignores
    # PYTHONPATH and the current folder, -S skips .pth files (an editable install's finder);
    # the dependencies come from this interpreter's site-packages, after the installed copy
    deps = sysconfig.get_paths()["purelib"]
    prelude = "import sys; sys.path[:0] = sys.argv[1:3];"
    found = subprocess.run(
        [
            sys.executable,
            "-I",
            "-S",
            "-c",
            prelude
            + "import egw, egw.store.migrate as m; print(egw.__file__); print(m.migrations_dir())",
            str(site),
            deps,
        ],
        capture_output=True,
        text=True,
        cwd=tmp_path,
    )
    assert found.returncode == 0, found.stderr
    egw_file, folder = found.stdout.split()
    assert egw_file.startswith(str(site)) and folder == str(site / "egw" / "migrations")
    migrate = subprocess.run(
        [
            sys.executable,
            "-I",
            "-S",
            "-c",
            prelude + "from egw.cli import main; raise SystemExit(main(['migrate']))",
            str(site),
            deps,
        ],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=60,
    )
    assert migrate.returncode == 0, migrate.stderr
    assert "applied 0001_init.sql" in migrate.stdout
    assert (tmp_path / "data" / "egw.db").exists()
