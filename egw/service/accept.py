"""A provider's answer to a submit, recorded as one writer operation (`egw.store.Accept`)."""

from __future__ import annotations

from egw.core.model import TERMINAL, Observation, Task, TaskState
from egw.errors import StoreError
from egw.providers.base import Submission
from egw.store import Accept, Store


def answer_op(task_id: str, sub: Submission, source: str) -> Accept:
    """The operation recording ``sub``: the upstream id, URL and data, and what it says
    happened (its observation, else ``queued`` once the upstream holds the work)."""
    obs = sub.observation
    if obs is None and sub.upstream_id is not None:
        obs = Observation(state=TaskState.QUEUED)
    data = {**sub.upstream, "submitted": True}
    return Accept(task_id, sub.upstream_id, sub.upstream_url, data, obs, source)


async def record_answer(store: Store, task_id: str, sub: Submission, source: str) -> Task:
    """Record ``sub`` (`answer_op`) in one commit, where it was two (bench part
    "submits"); returns the task after it.

    While the store refuses writes, an outcome that ends the task is kept by the writer
    (``Writer.settle``) and recorded once it can, as ``TaskService.observe`` does."""
    accept = answer_op(task_id, sub, source)
    try:
        return await store.writer.accept(accept)
    except StoreError:
        if accept.obs is not None and accept.obs.state in TERMINAL:
            _ = store.writer.settle(task_id, accept.obs, source=source)
        raise
