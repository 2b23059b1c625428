"""A submit is recorded (one commit), then accepted (one commit): what each crash point
leaves behind is finished by the next gateway, and a replayed Idempotency-Key is answered
from the record whatever the acceptance did. A submit the provider only queues (the local
runner with every slot taken) is recorded with its answer in one commit."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from support import WRITER, make_config, submit_local, wait_terminal

from egw.core.model import Observation, Task, TaskState, new_task_id, utcnow
from egw.providers.base import Submission
from egw.providers.local import LocalProvider
from egw.service.accept import answer_op
from egw.store import Store
from egw.web.app import create_app
from egw.web.keys import service_key


async def test_a_task_recorded_but_not_accepted_is_launched_by_the_next_gateway(
    tmp_path: Path, aiohttp_client: Callable[..., Any]
) -> None:
    # the gateway died after the record's commit, before the provider's answer was recorded
    store = Store(make_config(tmp_path).storage.address)  # the gateway's database below
    await store.open()
    now = utcnow()
    draft = Task(
        id=new_task_id(),
        provider="local",
        spec={"command": "echo", "args": ["recovered"]},
        created_at=now,
        updated_at=now,
    )
    task, created = await store.writer.create_task(draft, ("writer", "key-1", "hash"))
    assert created and task.upstream_id is None
    await store.close()

    api = await aiohttp_client(create_app(make_config(tmp_path)))
    done = await wait_terminal(api, task.id)
    assert done["status"] == "succeeded"
    resp = await api.get(f"/v1/tasks/{task.id}/events", headers=WRITER)
    kinds = [e["kind"] for e in (await resp.json())["events"]]
    assert kinds.count("submitted") == 1 and "upstream" in kinds


async def test_a_replayed_key_gets_the_accepted_task_and_starts_nothing(
    tmp_path: Path, aiohttp_client: Callable[..., Any]
) -> None:
    cfg = make_config(tmp_path, {"providers": {"local": {"max_concurrent": 1}}})
    api = await aiohttp_client(create_app(cfg))
    held = await submit_local(api, "sleep", "30")
    headers = {**WRITER, "Idempotency-Key": "once"}
    body = {"provider": "local", "task": {"command": "true", "args": []}}
    first = await api.post("/v1/tasks", json=body, headers=headers)
    assert first.status == 202
    queued = await first.json()
    assert queued["status"] == "queued"  # the answer says what the provider did
    again = await api.post("/v1/tasks", json=body, headers=headers)
    assert again.status == 202 and again.headers["Idempotent-Replayed"] == "true"
    assert (await again.json())["id"] == queued["id"]
    resp = await api.get("/v1/tasks?limit=10", headers=WRITER)
    assert len((await resp.json())["tasks"]) == 2  # the held one and this one, nothing more
    await api.post(f"/v1/tasks/{held['id']}/cancel", headers=WRITER)


async def test_a_queued_submit_is_one_commit_and_runs_once_a_slot_frees(
    tmp_path: Path, aiohttp_client: Callable[..., Any]
) -> None:
    app = create_app(make_config(tmp_path, {"providers": {"local": {"max_concurrent": 1}}}))
    api = await aiohttp_client(app)
    held = await submit_local(api, "sleep", "30")
    batches: list[int] = []
    app[service_key].store.writer.batch_listeners.append(batches.append)
    queued = await submit_local(api, "echo", "later")
    assert queued["status"] == "queued" and batches == [1]  # the task and its answer, at once
    resp = await api.get(f"/v1/tasks/{queued['id']}/events", headers=WRITER)
    events = (await resp.json())["events"]
    # no "upstream" event: the answer names nothing upstream, its observation says it all
    assert [(e["kind"], e["status"], e["source"]) for e in events] == [
        ("submitted", "pending", "api"),
        ("observed", "queued", "local"),
    ]
    assert queued["reason"] == "waiting for a free slot (1 running)"
    await api.post(f"/v1/tasks/{held['id']}/cancel?force=true", headers=WRITER)
    done = await wait_terminal(api, queued["id"])
    assert done["status"] == "succeeded"
    log = await api.get(f"/v1/tasks/{queued['id']}/logs", headers=WRITER)
    assert await log.text() == "later\n"


async def test_a_slot_freed_while_the_queued_task_was_recorded_starts_it(
    tmp_path: Path, aiohttp_client: Callable[..., Any]
) -> None:
    """The provider answered "queued" before the commit; by the time it takes the task a
    slot is free: the task starts then, rather than waiting for another task to end."""
    app = create_app(make_config(tmp_path, {"providers": {"local": {"max_concurrent": 1}}}))
    api = await aiohttp_client(app)
    service = app[service_key]
    local = service.providers["local"]
    assert isinstance(local, LocalProvider)
    now = utcnow()
    draft = Task(
        id=new_task_id(),
        provider="local",
        spec={"command": "echo", "args": ["ran"]},
        created_at=now,
        updated_at=now,
    )
    assert local.answer_queued(draft) is None  # a free slot: submit would start it
    queued = Submission(upstream_id=None, observation=Observation(state=TaskState.QUEUED))
    task, _ = await service.store.writer.create_task(
        draft, None, answer_op(draft.id, queued, "local")
    )
    assert task.status is TaskState.QUEUED and task.upstream.get("submitted") is True
    local.enqueue(task)
    done = await wait_terminal(api, task.id)
    assert done["status"] == "succeeded"
