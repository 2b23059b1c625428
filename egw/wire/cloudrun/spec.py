"""The Cloud Run task spec: a submit's ``task`` checked into `CloudRunSpec`, and its RunJobRequest.

Cloud Run has no request id on ``jobs:run``. egw sets an override env var ``EGW_TASK_ID=<task id>``
on every execution it starts (`run_job_request`), so an execution can be matched to its task when
an answer is lost (`egw.wire.cloudrun.executions.execution_task_id`).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from egw.core import fields
from egw.wire.cloudrun.names import (
    JobRef,
    check_container,
    check_job,
    check_project,
    check_region,
)

#: the override env var that ties an execution to its egw task
CORRELATION_ENV = "EGW_TASK_ID"
# Environment variable names (Kubernetes' rule, which Cloud Run follows).
_ENV_NAME = re.compile(r"[-._a-zA-Z][-._a-zA-Z0-9]{0,255}")
# Set by Cloud Run itself in a job's container (container contract): not overridable; egw's own.
_RESERVED_ENV = (
    CORRELATION_ENV,
    "CLOUD_RUN_JOB",
    "CLOUD_RUN_EXECUTION",
    "CLOUD_RUN_TASK_INDEX",
    "CLOUD_RUN_TASK_ATTEMPT",
    "CLOUD_RUN_TASK_COUNT",
)
_TASK_KEYS = frozenset(
    {"project", "region", "job", "args", "env", "container", "task_count", "timeout_s"}
)
MAX_ARGS = 1000
MAX_ARG_BYTES = 32 * 1024
MAX_ENV_VALUE_BYTES = 32 * 1024
MAX_TASK_COUNT = 10000
#: Cloud Run's longest task timeout (168 h, `gcloud run jobs execute --task-timeout`)
MAX_TIMEOUT_S = 168 * 3600


@dataclass(frozen=True, slots=True, kw_only=True)
class CloudRunSpec:
    """A checked Cloud Run task: the job, and the per-execution overrides of
    ``gcloud run jobs execute`` (None: the job's own value)."""

    project: str
    region: str
    job: str
    #: ``()`` clears the job's args
    args: tuple[str, ...] | None = None
    env: Mapping[str, str] = field(default_factory=dict)
    container: str | None = None
    task_count: int | None = None
    timeout_s: int | None = None

    @property
    def job_ref(self) -> JobRef:
        return JobRef(self.project, self.region, self.job)

    def to_json(self) -> dict[str, Any]:
        return {
            "project": self.project,
            "region": self.region,
            "job": self.job,
            "args": None if self.args is None else list(self.args),
            "env": dict(self.env),
            "container": self.container,
            "task_count": self.task_count,
            "timeout_s": self.timeout_s,
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> CloudRunSpec:
        """A stored spec, checked again (a stored spec is input too: its names go into URLs)."""
        return validate_task(data)


def validate_task(
    task: Mapping[str, Any],
    *,
    default_project: str | None = None,
    default_region: str | None = None,
) -> CloudRunSpec:
    """Check a submit's ``task`` object and return the spec.

    ``{"project", "region", "job"}`` name the job (project and region default from config);
    the per-execution overrides are those of ``gcloud run jobs execute``: ``args`` (a list of
    strings; ``[]`` clears the job's args), ``env`` (an object of name -> value), ``container``
    (which container to override), ``task_count`` and ``timeout_s`` (the task timeout).
    Raises `InvalidRequest` naming the field.
    """
    fields.known_keys(fields.mapping(task), _TASK_KEYS)
    named = {"project": default_project, "region": default_region, **task}
    project = fields.required(named, "project", hint=" (no default project is configured)")
    region = fields.required(named, "region", hint=" (no default region is configured)")
    job = fields.required(task, "job")
    project, region, job = check_project(project), check_region(region), check_job(job)
    overrides: dict[str, Any] = {}
    if (args := task.get("args")) is not None:
        overrides["args"] = tuple(
            fields.argv(args, "task.args", max_items=MAX_ARGS, max_bytes=MAX_ARG_BYTES)
        )
    if (env := task.get("env")) is not None:
        overrides["env"] = fields.env(
            env,
            names=_ENV_NAME,
            rule="letters, digits, '-', '.' and '_', not starting with a digit",
            reserved=_RESERVED_ENV,
            max_bytes=MAX_ENV_VALUE_BYTES,
        )
    if (container := task.get("container")) is not None:
        overrides["container"] = check_container(container)
    if (count := task.get("task_count")) is not None:
        overrides["task_count"] = fields.integer(count, "task.task_count", 1, MAX_TASK_COUNT)
    if (timeout := task.get("timeout_s")) is not None:
        overrides["timeout_s"] = fields.integer(timeout, "task.timeout_s", 1, MAX_TIMEOUT_S)
    return CloudRunSpec(project=project, region=region, job=job, **overrides)


def run_job_request(spec: CloudRunSpec, task_id: str) -> dict[str, Any]:
    """The ``RunJobRequest`` body for a spec, with ``EGW_TASK_ID=<task_id>`` added."""
    override: dict[str, Any] = {}
    if spec.container:
        override["name"] = spec.container
    if spec.args is not None:
        if spec.args:
            override["args"] = list(spec.args)
        else:
            override["clearArgs"] = True
    env = [{"name": k, "value": v} for k, v in spec.env.items()]
    env.append({"name": CORRELATION_ENV, "value": task_id})
    override["env"] = env
    overrides: dict[str, Any] = {"containerOverrides": [override]}
    if spec.task_count is not None:
        overrides["taskCount"] = spec.task_count
    if spec.timeout_s is not None:
        overrides["timeout"] = f"{spec.timeout_s}s"
    return {"overrides": overrides}
