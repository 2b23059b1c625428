"""Shared fixtures: a config on a temporary database, and the app in-process (see support.py)."""

from __future__ import annotations

import signal
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import db_support
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient
from support import make_config

from egw.config import Config
from egw.web.app import create_app

# A shell that starts the suite in the background (`cmd &` without job control) starts it
# with SIGINT ignored, and an ignored signal stays ignored in every child: the tests that
# press Ctrl-C on an `egw` command would then wait for an interrupt that never comes.
if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)


@pytest.fixture
def cfg(tmp_path: Path) -> Config:
    return make_config(tmp_path)


@pytest.fixture
async def api(
    aiohttp_client: Callable[..., Any], cfg: Config
) -> AsyncIterator[TestClient[web.Request, web.Application]]:
    client = await aiohttp_client(create_app(cfg))
    yield client


@pytest.fixture(autouse=True)
def _gateway_databases() -> Iterator[None]:
    """With ``EGW_TEST_STORE=postgresql``: drop the databases a test's gateways used."""
    if db_support.STORE != "postgresql":
        yield
        return
    before = db_support.created()
    yield
    db_support.drop_new(before)


@pytest.fixture(scope="module")
def pg_database() -> Iterator[str]:
    """A PostgreSQL database of this test module's own (`db_support`), dropped after it;
    the test is skipped, saying why, where no server answers."""
    reason = db_support.skip_reason()
    if reason is not None:
        pytest.skip(reason)
    url = db_support.create_database()
    yield url
    db_support.drop_database(url)


@pytest.fixture
def pg_url(pg_database: str) -> str:
    """The module's PostgreSQL database, its tables emptied for this test."""
    db_support.clean(pg_database)
    return pg_database


@pytest.fixture(params=["sqlite", "postgresql"])
def db_address(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A store's address, once on each dialect: a SQLite file, a clean PostgreSQL database."""
    if request.param == "sqlite":
        return str(tmp_path / "egw.db")
    url: str = request.getfixturevalue("pg_url")
    return url


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """With ``EGW_TEST_STORE=postgresql``, skip the tests about SQLite itself, saying why."""
    if db_support.STORE != "postgresql":
        return
    for item in items:
        marker = item.get_closest_marker("sqlite_only")
        if marker is not None:
            why = marker.kwargs.get("reason") or (marker.args[0] if marker.args else "")
            item.add_marker(pytest.mark.skip(reason=f"SQLite only: {why}"))
