"""Apply numbered SQL migrations (``NNNN_name.sql``) in order, tracked by ``PRAGMA user_version``.

The files live at the repository's top level (``migrations/``) and are copied
into the wheel as ``egw/migrations`` by the build, so an installed gateway
finds them too.
"""

from __future__ import annotations

import re
import sqlite3
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import structlog

from egw.errors import ConfigError

log = structlog.get_logger("egw.store")

_NAME = re.compile(r"^(\d{4})_[a-z0-9_]+\.sql$")


@dataclass(frozen=True, slots=True)
class Migration:
    version: int
    name: str
    sql: str


def migrations_dir() -> Path:
    packaged = resources.files("egw").joinpath("migrations")
    if packaged.is_dir():
        return Path(str(packaged))
    # source checkout or editable install: the top-level folder
    return Path(__file__).resolve().parents[2] / "migrations"


def load_migrations(folder: Path | None = None) -> list[Migration]:
    folder = folder or migrations_dir()
    found: list[Migration] = []
    for path in sorted(folder.glob("*.sql")):
        m = _NAME.match(path.name)
        if not m:
            raise ConfigError("", f"migration file {path.name} is not named NNNN_name.sql")
        found.append(Migration(int(m.group(1)), path.name, path.read_text(encoding="utf-8")))
    versions = [m.version for m in found]
    if versions != list(range(1, len(found) + 1)):
        raise ConfigError("", f"migrations must be numbered 1..N without gaps, found {versions}")
    return found


def current_version(conn: sqlite3.Connection) -> int:
    row = conn.execute("PRAGMA user_version").fetchone()
    return int(row[0]) if row else 0


def apply_migrations(conn: sqlite3.Connection, folder: Path | None = None) -> list[str]:
    """Apply what is missing, each migration in its own transaction; returns the names applied."""
    applied: list[str] = []
    version = current_version(conn)
    known = load_migrations(folder)
    if version > len(known):
        raise ConfigError(
            "storage.path",
            f"the database is at schema version {version}, "
            f"newer than this egw knows ({len(known)})",
        )
    for m in known[version:]:
        # executescript commits first; run the file and the version bump as one transaction
        try:
            conn.executescript(
                f"BEGIN IMMEDIATE;\n{m.sql}\n;PRAGMA user_version = {m.version};\nCOMMIT;"
            )
        except Exception:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise
        applied.append(m.name)
        log.info("migration_applied", migration=m.name)
    return applied
