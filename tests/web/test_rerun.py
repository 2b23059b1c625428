"""`POST /v1/tasks/{id}/rerun`: a new task with the same provider, spec, name, labels and
timeout, linked to the old one by a `rerun` event on each; tasks:write; 404 unknown."""

from __future__ import annotations

from aiohttp import web
from aiohttp.test_utils import TestClient
from support import READER, WRITER, submit_local, wait_terminal


async def test_rerun(api: TestClient[web.Request, web.Application]) -> None:
    old = await submit_local(
        api, "sh", "-c", "echo $0", "x", name="n", labels={"a": "b"}, timeout_s=30
    )
    await wait_terminal(api, old["id"])
    resp = await api.post(f"/v1/tasks/{old['id']}/rerun", headers=WRITER)
    assert resp.status == 202, await resp.text()
    new = await resp.json()
    assert resp.headers["Location"] == f"/v1/tasks/{new['id']}"
    assert new["id"] != old["id"]
    assert (new["name"], new["labels"], new["timeout_s"]) == ("n", {"a": "b"}, 30)
    await wait_terminal(api, new["id"])
    out = await (await api.get(f"/v1/tasks/{new['id']}/logs", headers=WRITER)).text()
    assert out == "x\n"
    for task_id in (old["id"], new["id"]):
        events = await (await api.get(f"/v1/tasks/{task_id}/events", headers=WRITER)).json()
        links = [e["data"] for e in events["events"] if e["kind"] == "rerun"]
        assert links == [{"from": old["id"], "to": new["id"]}]


async def test_rerun_needs_write_and_a_known_task(
    api: TestClient[web.Request, web.Application],
) -> None:
    old = await submit_local(api, "true")
    denied = await api.post(f"/v1/tasks/{old['id']}/rerun", headers=READER)
    assert denied.status == 403
    missing = await api.post("/v1/tasks/t_missing/rerun", headers=WRITER)
    assert missing.status == 404
    assert (await missing.json())["error"]["code"] == "not_found"
