"""The spec egw stores for a Nomad task, and the register body made from it at submit time."""

# A stored spec that is not of this shape raises ValueError (callers catch one type).

from __future__ import annotations

import copy
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from egw.errors import InvalidRequest

#: the Meta key egw marks its jobs with (the egw task id)
META_TASK_ID = "egw_task_id"
#: the prefix of Nomad's answer to a failed ``EnforceIndex`` check (an HTTP 500)
ENFORCE_INDEX_ERROR = "Enforcing job modify index"
NS_PER_S = 1_000_000_000

# A job ID goes into URL paths: a URL-safe subset of Nomad's rule (which only forbids empty
# IDs, spaces and NUL)
_JOB_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")


def check_job_id(value: Any, field: str = "task.job_id") -> str:
    if not isinstance(value, str) or not value:
        raise InvalidRequest("a Nomad job id is required (a string)", field=field)
    if not _JOB_ID.fullmatch(value):
        raise InvalidRequest(
            f"invalid Nomad job id {value[:80]!r}: use 1-128 letters, digits, '.', '_' or '-',"
            " starting with a letter or digit",
            field=field,
        )
    return value


@dataclass(frozen=True, slots=True, kw_only=True)
class NomadSpec:
    """A validated Nomad task: the job (Nomad JSON, without egw's marks) and what the provider
    needs later. ``tasks`` are the job's ``(group, task)`` pairs, ``expected`` the number of
    allocations it places."""

    job_id: str
    namespace: str
    region: str | None
    job: Mapping[str, Any]
    tasks: tuple[tuple[str, str], ...]
    expected: int
    timeout_s: float | None

    def to_json(self) -> dict[str, Any]:
        return {
            "job_id": self.job_id,
            "namespace": self.namespace,
            "region": self.region,
            "job": dict(self.job),
            "tasks": [list(pair) for pair in self.tasks],
            "expected": self.expected,
            "timeout_s": self.timeout_s,
        }

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> NomadSpec:
        """A stored spec, checked again (the store is input too); ValueError if malformed."""
        try:
            job_id = check_job_id(d.get("job_id"), "spec.job_id")
        except InvalidRequest as exc:
            raise ValueError(f"stored Nomad spec: {exc.message}") from None
        namespace, region, job = d.get("namespace"), d.get("region"), d.get("job")
        tasks, expected, timeout_s = d.get("tasks"), d.get("expected", 1), d.get("timeout_s")
        if not isinstance(namespace, str) or not (region is None or isinstance(region, str)):
            raise ValueError("stored Nomad spec: namespace and region must be strings")
        if not isinstance(job, Mapping) or not isinstance(job.get("TaskGroups"), list):
            raise ValueError("stored Nomad spec: job must be a Nomad job with TaskGroups")
        if not isinstance(tasks, list) or not all(
            isinstance(p, list | tuple) and len(p) == 2 and all(isinstance(n, str) for n in p)
            for p in tasks
        ):
            raise ValueError("stored Nomad spec: tasks must be [group, task] pairs")
        if isinstance(expected, bool) or not isinstance(expected, int) or expected < 0:
            raise ValueError("stored Nomad spec: expected must be a whole number >= 0")
        if timeout_s is not None and (
            isinstance(timeout_s, bool) or not isinstance(timeout_s, int | float)
        ):
            raise ValueError("stored Nomad spec: timeout_s must be a number")
        return cls(
            job_id=job_id,
            namespace=namespace,
            region=region,
            job=job,
            tasks=tuple((str(g), str(t)) for g, t in tasks),
            expected=expected,
            timeout_s=float(timeout_s) if timeout_s is not None else None,
        )


def register_body(
    spec: NomadSpec, *, task_id: str, timeout_s: float | None, enforce_index: int
) -> dict[str, Any]:
    """The body of ``POST /v1/jobs`` (jobs.md "Create Job"), check-and-set on ``enforce_index``
    (0: only if the job is new). ``timeout_s`` becomes each group's ``MaxRunDuration`` (Nomad
    >= 2.0.2; older servers ignore the unknown field). The spec's job is not changed."""
    job = copy.deepcopy(dict(spec.job))
    job["Meta"] = {**(job.get("Meta") or {}), META_TASK_ID: task_id}
    if timeout_s is not None:
        for group in job["TaskGroups"]:
            group["MaxRunDuration"] = int(timeout_s * NS_PER_S)
    return {"Job": job, "EnforceIndex": True, "JobModifyIndex": enforce_index}
