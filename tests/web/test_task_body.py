"""The encoded task of ``GET /v1/tasks/{id}`` and of a submit's answer (`BodyCache`)."""

from __future__ import annotations

import json

from egw.core.model import Task, utcnow
from egw.web.tasks import BodyCache


def _task() -> Task:
    now = utcnow()
    labels = {"team": "café"}
    return Task(
        id="t_1", provider="local", spec={}, labels=labels, created_at=now, updated_at=now, index=3
    )


def test_a_task_is_encoded_once_per_index_as_compact_json() -> None:
    cache = BodyCache()
    task = _task()
    body, etag = cache.get(task)
    assert json.loads(body) == json.loads(json.dumps(task.to_json())) and etag == '"3"'
    assert b'"status":"pending"' in body  # compact
    assert cache.get(task)[0] is body
    assert cache.get(task.evolve(index=4))[0] is not body
