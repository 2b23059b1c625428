"""The import table of STYLE.md §3.2, enforced by parsing every module under egw/ with ast.

Every import counts, wherever it is written (module level, inside a function,
under ``if TYPE_CHECKING:``): a layer that needs another one only lazily still
depends on it. A failure prints one line per broken rule::

    egw/cli.py:113 (egw.cli) imports aiohttp.web: aiohttp.web is imported only under egw/web ...
"""

from __future__ import annotations

import ast
import functools
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "egw"


@dataclass(frozen=True)
class Import:
    module: str  # the importing module, e.g. "egw.web.app"
    path: str  # its file, relative to the repository
    line: int
    name: str  # the imported module (or module.attribute for `from x import y`)


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _modules() -> dict[str, Path]:
    return {_module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def _resolve_from(node: ast.ImportFrom, module: str, is_package: bool) -> str:
    if not node.level:
        return node.module or ""
    parts = module.split(".")
    base = parts if is_package else parts[:-1]
    if node.level > 1:
        base = base[: len(base) - (node.level - 1)]
    return ".".join([*base, *([node.module] if node.module else [])])


def imports_of(module: str, path: Path) -> Iterator[Import]:
    """Every module name this file imports; ``from a import b`` yields both ``a`` and ``a.b``."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    rel = str(path.relative_to(ROOT))
    is_package = path.name == "__init__.py"
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield Import(module, rel, node.lineno, alias.name)
        elif isinstance(node, ast.ImportFrom):
            base = _resolve_from(node, module, is_package)
            if base == "__future__":
                continue
            yield Import(module, rel, node.lineno, base)
            for alias in node.names:
                if alias.name != "*":
                    yield Import(module, rel, node.lineno, f"{base}.{alias.name}")


@functools.cache
def _all_imports() -> list[Import]:
    return [imp for name, path in _modules().items() for imp in imports_of(name, path)]


def within(name: str, *prefixes: str) -> bool:
    return any(name == p or name.startswith(p + ".") for p in prefixes)


def is_stdlib(name: str) -> bool:
    return name.split(".")[0] in sys.stdlib_module_names


def is_aiohttp_web(name: str) -> bool:
    # aiohttp.web and its private server modules (aiohttp.web_request, aiohttp.web_app, ...)
    return within(name, "aiohttp.web") or name.startswith("aiohttp.web_")


def in_tree(module: str, *folders: str) -> bool:
    return within(module, *folders)


@dataclass(frozen=True)
class Rule:
    id: str
    text: str
    applies: Callable[[str], bool]  # to the importing module
    forbidden: Callable[[str], bool]  # the imported name


RULES = [
    Rule(
        "core-pure",
        "egw.core imports only the stdlib (never asyncio), egw.core and egw.errors",
        lambda m: within(m, "egw.core"),
        lambda n: within(n, "asyncio") or not (is_stdlib(n) or within(n, "egw.core", "egw.errors")),
    ),
    Rule(
        "wire-pure",
        "egw.wire imports no asyncio/aiohttp/aiosqlite/structlog and no "
        "egw.providers/store/service/web",
        lambda m: within(m, "egw.wire"),
        lambda n: within(
            n,
            "asyncio",
            "aiohttp",
            "aiosqlite",
            "asyncpg",
            "structlog",
            "egw.providers",
            "egw.store",
            "egw.service",
            "egw.web",
            "egw.cli",
            "egw.client",
        ),
    ),
    Rule(
        "store-below",
        "egw.store never imports egw.wire/providers/service/web",
        lambda m: within(m, "egw.store"),
        lambda n: within(n, "egw.wire", "egw.providers", "egw.service", "egw.web", "egw.cli"),
    ),
    Rule(
        "service-no-web",
        "egw.service never imports egw.web, aiohttp or a concrete provider "
        "(egw.providers.base is allowed)",
        lambda m: within(m, "egw.service"),
        lambda n: (
            within(n, "egw.web", "egw.cli", "aiohttp")
            or (
                within(n, "egw.providers")
                and n != "egw.providers"
                and not within(n, "egw.providers.base")
            )
        ),
    ),
    Rule(
        "aiohttp-web-edge",
        "aiohttp.web is imported only under egw/web and egw/testing (and egw/devserver.py)",
        lambda m: not in_tree(m, "egw.web", "egw.testing", "egw.devserver"),
        is_aiohttp_web,
    ),
    Rule(
        "aiosqlite-store",
        "aiosqlite is imported only under egw/store",
        lambda m: not in_tree(m, "egw.store"),
        lambda n: within(n, "aiosqlite"),
    ),
    Rule(
        "asyncpg-store",
        "asyncpg is imported only under egw/store/postgres",
        lambda m: not in_tree(m, "egw.store.postgres"),
        lambda n: within(n, "asyncpg"),
    ),
    Rule(
        "yaml-config",
        "yaml is imported only by the egw.config package",
        lambda m: not within(m, "egw.config"),
        lambda n: within(n, "yaml"),
    ),
    # the rest of the table, as it applies to the modules that exist
    Rule(
        "errors-leaf",
        "egw.errors imports nothing from egw",
        lambda m: m == "egw.errors",
        lambda n: within(n, "egw"),
    ),
    Rule(
        "config-leaf",
        "egw.config imports only egw.errors (and its own modules) from egw",
        lambda m: within(m, "egw.config"),
        lambda n: within(n, "egw") and not within(n, "egw.errors", "egw.config") and n != "egw",
    ),
    Rule(
        "logconfig-leaf",
        "egw.logconfig imports nothing from egw",
        lambda m: m == "egw.logconfig",
        lambda n: within(n, "egw"),
    ),
    Rule(
        "providers-below-service",
        "egw.providers never imports egw.store/service/web",
        lambda m: within(m, "egw.providers"),
        lambda n: within(n, "egw.store", "egw.service", "egw.web", "egw.cli"),
    ),
    Rule(
        "web-no-store",
        "egw.web never imports egw.store: routes ask the services (TaskReads, TaskService), "
        "and the database is opened through egw.service.database",
        lambda m: within(m, "egw.web"),
        lambda n: within(n, "egw.store"),
    ),
    Rule(
        "wire-no-background",
        "egw.core and egw.wire never import egw.background (it runs asyncio tasks)",
        lambda m: within(m, "egw.core", "egw.wire"),
        lambda n: within(n, "egw.background"),
    ),
    Rule(
        "web-no-cli",
        "egw.web never imports egw.cli",
        lambda m: within(m, "egw.web"),
        lambda n: within(n, "egw.cli"),
    ),
    Rule(
        "client-api-only",
        "egw.client never imports egw.web/store/service",
        lambda m: m == "egw.client",
        lambda n: within(n, "egw.web", "egw.store", "egw.service"),
    ),
    Rule(
        "cli-no-internals",
        "egw.cli never imports egw.service or egw.providers",
        lambda m: within(m, "egw.cli"),
        lambda n: within(n, "egw.service", "egw.providers"),
    ),
]


def violations(rule: Rule, imports: list[Import]) -> list[str]:
    seen: set[tuple[str, int, str]] = set()
    out: list[str] = []
    for imp in imports:
        if not rule.applies(imp.module) or not rule.forbidden(imp.name):
            continue
        key = (imp.path, imp.line, imp.name.split(".")[0])
        if key in seen:
            continue
        seen.add(key)
        out.append(
            f"{imp.path}:{imp.line} ({imp.module}) imports {imp.name}: breaks "
            f"[{rule.id}] {rule.text}"
        )
    return out


@pytest.mark.parametrize("rule", RULES, ids=[r.id for r in RULES])
def test_import_rule(rule: Rule) -> None:
    broken = violations(rule, _all_imports())
    for line in broken:
        print(line)
    assert not broken, "\n" + "\n".join(broken)


def test_the_scan_sees_the_tree() -> None:
    """Guards against a vacuous pass: the scanner finds imports that are known to exist."""
    modules = _modules()
    assert {"egw.config", "egw.errors", "egw.web.app", "egw.core.model"} <= set(modules)
    found = {(i.module, i.name) for i in _all_imports()}
    assert ("egw.config", "yaml") in found
    assert ("egw.web.app", "aiohttp.web") in found
    assert any(m.startswith("egw.store") and n == "aiosqlite" for m, n in found)
    assert any(m.startswith("egw.store.postgres") and n == "asyncpg" for m, n in found)
    assert any(m == "egw.web.app" and n.startswith("egw.service") for m, n in found)


def test_resolver_handles_relative_and_nested_imports() -> None:
    src = (
        "from __future__ import annotations\nfrom . import sibling\nfrom ..errors import EgwError\n"
    )
    tree = ast.parse(src)
    froms = [n for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)]
    assert _resolve_from(froms[1], "egw.core.mod", False) == "egw.core"
    assert _resolve_from(froms[2], "egw.core.mod", False) == "egw.errors"
    assert _resolve_from(froms[1], "egw.core", True) == "egw.core"
    core = RULES[0]
    assert (
        core.forbidden("asyncio") and core.forbidden("aiohttp.web") and core.forbidden("egw.store")
    )
    assert not core.forbidden("dataclasses") and not core.forbidden("egw.errors")
    assert is_aiohttp_web("aiohttp.web") and is_aiohttp_web("aiohttp.web_request")
    assert not is_aiohttp_web("aiohttp.ClientSession")


def _package(module: str) -> str:
    """``egw.providers.nomad.client`` -> ``egw.providers``; top-level modules stay whole."""
    return ".".join(module.split(".")[:2])


def test_architecture_md_table_is_the_real_import_graph() -> None:
    """ARCHITECTURE.md's "imports from egw" column is exactly what the code imports."""
    text = (ROOT / "ARCHITECTURE.md").read_text(encoding="utf-8")
    table = text.split("<!-- imports:begin -->", 1)[1].split("<!-- imports:end -->", 1)[0]
    documented: dict[str, set[str]] = {}
    for row in table.strip().splitlines():
        cells = [c.strip() for c in row.strip().strip("|").split("|")]
        names = set() if cells[2] == "(nothing)" else {c.strip("` ") for c in cells[2].split(",")}
        documented[cells[0].strip("`")] = names
    actual: dict[str, set[str]] = {pkg: set() for pkg in documented}
    for imp in _all_imports():
        if not within(imp.name, "egw") or imp.name in ("egw", "egw.__version__"):
            continue
        src, dst = _package(imp.module), _package(imp.name)
        if src != dst and src in actual:
            actual[src].add(dst)
    undocumented = {_package(m) for m in _modules()} - set(documented) - {"egw", "egw.__main__"}
    assert not undocumented, f"packages missing from ARCHITECTURE.md: {sorted(undocumented)}"
    assert documented == actual
