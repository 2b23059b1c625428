"""The house rules a reader can rely on, checked like the types are (`tests/test_types.py`):

* ``ruff check`` with the rules chosen in pyproject's ``[tool.ruff.lint]`` (each ignore
  says why), and ``ruff format --check``: one formatting, no debate;
* ``vulture``: no dead code in ``egw/`` (names used only by a framework or by name are
  listed in ``tests/vulture_allowlist.py``, each with the reason);
* the size budget: no module over 500 lines in ``egw/`` outside the simulators, and a
  median under 200, so that no module grows back into a god-class unnoticed.
"""

from __future__ import annotations

import statistics
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
MAX_MODULE_LINES = 500
MAX_MEDIAN_LINES = 200


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", *args], cwd=ROOT, capture_output=True, text=True, timeout=300
    )


def test_ruff_check() -> None:
    result = _run("ruff", "check", "--no-cache", "egw", "tests", "bench")
    assert result.returncode == 0, result.stdout + result.stderr


def test_ruff_format() -> None:
    result = _run("ruff", "format", "--check", "--no-cache", "egw", "tests", "bench")
    assert result.returncode == 0, result.stdout + result.stderr


def test_no_dead_code() -> None:
    result = _run("vulture", "egw", "tests/vulture_allowlist.py")
    assert result.returncode == 0, result.stdout + result.stderr


def _sizes() -> dict[str, int]:
    package = ROOT / "egw"
    return {
        str(p.relative_to(ROOT)): len(p.read_text(encoding="utf-8").splitlines())
        for p in package.rglob("*.py")
        if "testing" not in p.relative_to(package).parts
    }


def test_module_size_budget() -> None:
    sizes = _sizes()
    assert len(sizes) > 40  # the scan sees the package
    too_big = {path: n for path, n in sizes.items() if n > MAX_MODULE_LINES}
    assert not too_big, f"split these modules (over {MAX_MODULE_LINES} lines): {too_big}"
    assert statistics.median(sizes.values()) < MAX_MEDIAN_LINES


def test_no_merge_conflict_markers() -> None:
    """A merge left half-resolved fails here, whatever file type it hit."""
    listed = subprocess.run(
        ["git", "ls-files"], cwd=ROOT, capture_output=True, text=True, check=False
    ).stdout.split()
    if not listed:  # not a git checkout (an unpacked sdist): nothing to compare against
        return
    markers = ("<<<<<<< ", ">>>>>>> ")
    found = []
    for name in listed:
        path = ROOT / name
        if path.suffix in {".png", ".ico"} or not path.is_file():
            continue
        text = path.read_text(encoding="utf-8", errors="replace")
        found += [
            f"{name}:{n}"
            for n, line in enumerate(text.splitlines(), 1)
            if line.startswith(markers) or line == "======="
        ]
    assert not found, found
