"""Shared fixtures: a config on a temporary database, and the app in-process (see support.py)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient
from support import make_config

from egw.config import Config
from egw.web.app import create_app


@pytest.fixture
def cfg(tmp_path: Path) -> Config:
    return make_config(tmp_path)


@pytest.fixture
async def api(
    aiohttp_client: Callable[..., Any], cfg: Config
) -> AsyncIterator[TestClient[web.Request, web.Application]]:
    client = await aiohttp_client(create_app(cfg))
    yield client
