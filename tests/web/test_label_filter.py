"""``GET /v1/tasks?label=name=value`` with any characters in the name: matched exactly, never
a 500 (the filter once built a JSON path from the name, which a NUL or a quote broke)."""

from __future__ import annotations

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient
from support import WRITER, submit_local


@pytest.mark.parametrize("name", ['a"b', "a\x00b", "a.b", "$", "ü[0]"])
async def test_a_label_filter_takes_any_name(
    api: TestClient[web.Request, web.Application], name: str
) -> None:
    task = await submit_local(api, "true", labels={"team": "x"})
    resp = await api.get("/v1/tasks", params={"label": f"{name}=x"}, headers=WRITER)
    assert resp.status == 200
    assert (await resp.json())["tasks"] == []
    resp = await api.get("/v1/tasks", params={"label": "team=x"}, headers=WRITER)
    assert [t["id"] for t in (await resp.json())["tasks"]] == [task["id"]]
