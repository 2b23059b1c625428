"""Ship the top-level migrations/ inside the wheel as egw/migrations.

The design keeps numbered SQL files at the repository's top level; an
installed gateway must still find them, so the build copies them into the
package. A source checkout (and an editable install) reads them in place.
"""

import shutil
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py


class BuildWithMigrations(build_py):
    def run(self) -> None:
        super().run()
        target = Path(self.build_lib) / "egw" / "migrations"
        target.mkdir(parents=True, exist_ok=True)
        source = Path(__file__).parent.joinpath("migrations")
        for sql in sorted(source.glob("*.sql")):
            shutil.copy2(sql, target / sql.name)
        # PostgreSQL's twins of the same migrations (egw/store/postgres/migrate.py)
        (target / "postgresql").mkdir(exist_ok=True)
        for sql in sorted(source.joinpath("postgresql").glob("*.sql")):
            shutil.copy2(sql, target / "postgresql" / sql.name)


setup(cmdclass={"build_py": BuildWithMigrations})
