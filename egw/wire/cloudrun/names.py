"""Google resource names (projects, regions, jobs, executions, operations), checked before use.

User input (project, region, job, container) is checked against Google's resource-name rules
*before* it is put into a URL path, so ``/``, ``..``, ``:``, ``%2F`` or a newline can never steer
a request to another resource. Names that come back from upstream (execution and operation names)
are parsed with the same rules before egw uses them as a path.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from egw.core import fields
from egw.errors import ProviderError

# Project ids: 6-30 lowercase letters, digits, hyphens, starting with a letter, not ending with a
# hyphen; a project number is all digits. (Legacy domain-scoped ids "example.com:p" contain ':'
# and are refused on purpose.)
PROJECT = re.compile(r"[a-z][a-z0-9-]{4,28}[a-z0-9]|[0-9]{1,20}")
# Regions: asia-east1, us-central1, northamerica-northeast2, europe-west10 ...
REGION = re.compile(r"[a-z]{2,}(?:-[a-z]+)+[0-9]{1,2}")
# Cloud Run job (and execution) names: lowercase letters, digits and hyphens, starting with a
# letter, not ending with a hyphen, at most 63 characters.
JOB = re.compile(r"[a-z](?:[a-z0-9-]{0,61}[a-z0-9])?")
# Container names are DNS labels.
CONTAINER = re.compile(r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?")
_OPERATION_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,127}")


def check_project(value: Any, where: str = "task.project") -> str:
    return fields.name(
        value,
        where,
        PROJECT,
        "a project id is 6-30 lowercase letters, digits or hyphens starting with a letter"
        " (or a project number)",
    )


def check_region(value: Any, where: str = "task.region") -> str:
    return fields.name(value, where, REGION, "a region looks like us-central1")


def check_job(value: Any, where: str = "task.job") -> str:
    return fields.name(
        value,
        where,
        JOB,
        "use at most 63 lowercase letters, digits or hyphens, starting with a letter and"
        " not ending with a hyphen",
    )


def check_container(value: Any, where: str = "task.container") -> str:
    return fields.name(
        value, where, CONTAINER, "a container name is a DNS label (lowercase letters, digits, '-')"
    )


@dataclass(frozen=True, slots=True)
class JobRef:
    project: str
    region: str
    job: str

    @property
    def name(self) -> str:
        """The job's resource name, ``projects/P/locations/R/jobs/J``."""
        return f"projects/{self.project}/locations/{self.region}/jobs/{self.job}"


@dataclass(frozen=True, slots=True)
class ExecutionRef:
    project: str
    region: str
    job: str
    execution: str

    @property
    def job_name(self) -> str:
        """The resource name of the execution's job."""
        return JobRef(self.project, self.region, self.job).name

    @property
    def name(self) -> str:
        return f"{self.job_name}/executions/{self.execution}"


def parse_execution_name(name: Any) -> ExecutionRef:
    """Check an execution's resource name from upstream before it is used as a URL path."""
    if not isinstance(name, str):
        raise ProviderError(
            f"Cloud Run returned an execution name that is not a string: {name!r}",
            provider="cloud_run",
        )
    parts = name.split("/")
    if (
        len(parts) != 8
        or parts[0] != "projects"
        or parts[2] != "locations"
        or parts[4] != "jobs"
        or parts[6] != "executions"
        or not PROJECT.fullmatch(parts[1])
        or not REGION.fullmatch(parts[3])
        or not JOB.fullmatch(parts[5])
        or not JOB.fullmatch(parts[7])
    ):
        raise ProviderError(
            f"Cloud Run returned an unexpected execution name {name[:200]!r}", provider="cloud_run"
        )
    return ExecutionRef(parts[1], parts[3], parts[5], parts[7])


def check_operation_name(name: Any) -> str:
    """An operation's resource name, ``projects/P/locations/R/operations/ID``, checked."""
    parts = name.split("/") if isinstance(name, str) else []
    if (
        len(parts) != 6
        or parts[0] != "projects"
        or parts[2] != "locations"
        or parts[4] != "operations"
        or not PROJECT.fullmatch(parts[1])
        or not REGION.fullmatch(parts[3])
        or not _OPERATION_ID.fullmatch(parts[5])
    ):
        raise ProviderError(
            f"Cloud Run returned an unexpected operation name {str(name)[:200]!r}",
            provider="cloud_run",
        )
    return str(name)
