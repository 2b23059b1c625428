"""Cloud Run executions and their operations (pure): an Execution read as an egw observation.

`execution_observation` is THE mapping of an Execution to an egw state; it is an interpretation of
the contract (tests/samples/cloudrun/run-v2-jobs.md: the ``Completed`` condition,
``executionReason``, the task counts, ``startTime``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from egw.core.model import Observation, TaskState, parse_time
from egw.errors import ProviderError
from egw.wire.cloudrun.google import code_name
from egw.wire.cloudrun.spec import CORRELATION_ENV


@dataclass(frozen=True, slots=True)
class RunOperation:
    """What a ``jobs:run`` (or ``executions:cancel``) operation says."""

    name: str | None
    done: bool
    #: the Execution from ``metadata`` (or ``response`` once done), without ``@type``
    execution: Mapping[str, Any] | None
    error: str | None = None


def parse_operation(op: Any) -> RunOperation:
    """Read a GoogleLongrunningOperation whose metadata/response is an Execution."""
    if not isinstance(op, Mapping):
        raise ProviderError(
            "Cloud Run answered with something that is not an operation", provider="cloud_run"
        )
    execution: Mapping[str, Any] | None = None
    for key in ("response", "metadata"):
        value = op.get(key)
        if isinstance(value, Mapping) and value.get("name"):
            execution = {k: v for k, v in value.items() if k != "@type"}
            break
    error = None
    if isinstance(op.get("error"), Mapping):
        err = op["error"]
        error = f"{code_name(err.get('code'))}: {err.get('message') or 'operation failed'}"
    name = op.get("name")
    return RunOperation(
        name=name if isinstance(name, str) else None,
        done=bool(op.get("done")),
        execution=execution,
        error=error,
    )


def execution_task_id(execution: Mapping[str, Any]) -> str | None:
    """The ``EGW_TASK_ID`` egw set on the execution's containers, if any."""
    template = execution.get("template") or {}
    for container in template.get("containers") or ():
        for env in container.get("env") or ():
            if env.get("name") == CORRELATION_ENV and isinstance(env.get("value"), str):
                return str(env["value"])
    return None


def _completed(execution: Mapping[str, Any]) -> Mapping[str, Any]:
    for cond in execution.get("conditions") or ():
        if cond.get("type") == "Completed":
            return cond  # type: ignore[no-any-return]
    return {}


def execution_observation(
    execution: Mapping[str, Any], tasks: Sequence[Mapping[str, Any]] | None = None
) -> Observation:
    """Map an Execution (and, if read, its Tasks) to an egw observation.

    The interpretation (run-v2-jobs.md, "Execution state"):

    * ``Completed`` ``CONDITION_SUCCEEDED``             -> succeeded (exit code 0)
    * ``Completed`` ``CONDITION_FAILED`` + ``CANCELLED`` -> cancelled
    * ``Completed`` ``CONDITION_FAILED`` otherwise      -> failed, with executionReason and message
      (exit code from the first failed Task's ``lastAttemptResult``, when the tasks are given)
    * not completed, ``executionReason`` ``CANCELLING`` -> cancelling
    * not completed, ``startTime`` set or ``runningCount`` > 0 -> running
    * otherwise                                         -> queued
    """
    cond = _completed(execution)
    cstate = cond.get("state")
    exec_reason = cond.get("executionReason")
    message = cond.get("message") or ""
    count = _counts(execution)
    detail: dict[str, Any] = {"execution": execution.get("name"), **count}
    if exec_reason:
        detail["execution_reason"] = exec_reason
    if cond.get("reason"):
        detail["condition_reason"] = cond["reason"]
    finished = parse_time(execution.get("completionTime"))
    if cstate == "CONDITION_SUCCEEDED":
        return Observation(
            state=TaskState.SUCCEEDED,
            exit_code=0,
            at=finished,
            detail=detail,
            reason=f"{count['succeeded']}/{count['task_count']} tasks succeeded",
        )
    if cstate == "CONDITION_FAILED":
        if exec_reason == "CANCELLED":
            return Observation(
                state=TaskState.CANCELLED,
                at=finished,
                detail=detail,
                reason=_join_reason("cancelled", message),
            )
        why = exec_reason or cond.get("reason") or "FAILED"
        return Observation(
            state=TaskState.FAILED,
            at=finished,
            detail=detail,
            exit_code=_failed_exit_code(tasks),
            reason=_join_reason(why, message),
        )
    if exec_reason == "CANCELLING":
        return Observation(
            state=TaskState.CANCELLING, detail=detail, reason=_join_reason("cancelling", message)
        )
    started = parse_time(execution.get("startTime"))
    if started is not None or count["running"] > 0:
        return Observation(
            state=TaskState.RUNNING,
            at=started,
            detail=detail,
            reason=f"{count['running']}/{count['task_count']} tasks running",
        )
    return Observation(
        state=TaskState.QUEUED,
        at=parse_time(execution.get("createTime")),
        detail=detail,
        reason="execution created, not started yet",
    )


def _counts(execution: Mapping[str, Any]) -> dict[str, int]:
    def n(key: str) -> int:
        value = execution.get(key)
        return int(value) if isinstance(value, int | str) and str(value).isdigit() else 0

    return {
        "task_count": n("taskCount"),
        "running": n("runningCount"),
        "succeeded": n("succeededCount"),
        "failed": n("failedCount"),
        "cancelled": n("cancelledCount"),
        "retried": n("retriedCount"),
    }


def _join_reason(head: str, message: str) -> str:
    return f"{head}: {message}" if message else head


def _failed_exit_code(tasks: Sequence[Mapping[str, Any]] | None) -> int | None:
    for task in sorted(tasks or (), key=lambda t: int(t.get("index") or 0)):
        result = task.get("lastAttemptResult") or {}
        code = result.get("exitCode")
        if isinstance(code, int) and code != 0:
            return code
    return None
