"""A submit's ``task`` object for Nomad, checked and turned into a `NomadSpec` (pure).

The object is either egw's short form (``job_id``, ``image``, ``command``...), which becomes
a batch job of one group and one task, or ``{"job": {...}}``, a Nomad JSON job passed
through. The generic checks (argv, environment, meta, numbers) are `egw.core.fields`; the
names follow Nomad's own rules.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from typing import Any

from egw.core import fields
from egw.errors import InvalidRequest
from egw.wire.nomad.spec import META_TASK_ID, NS_PER_S, NomadSpec, check_job_id

#: group and task name of a short-form job
GROUP = "main"
TASK = "main"
DRIVERS = ("docker", "exec", "raw_exec")

_SHORT_KEYS = frozenset(
    {
        "job_id",
        "image",
        "command",
        "args",
        "env",
        "datacenters",
        "namespace",
        "region",
        "driver",
        "resources",
        "meta",
        "timeout_s",
    }
)
# Nomad's own namespace rule (structs.validNamespaceName)
_NAMESPACE = re.compile(r"[A-Za-z0-9-]{1,128}")
_NAMESPACE_RULE = "1-128 letters, digits or '-'"
_REGION = re.compile(r"[A-Za-z0-9._-]{1,128}")
_DATACENTER = re.compile(r"[A-Za-z0-9._*-]{1,128}")
_NAME = re.compile(r"[A-Za-z0-9._-]{1,128}")
_NAME_RULE = "1-128 letters, digits, '.', '_' or '-'"
_ENV_KEY = re.compile(r"[A-Za-z_][A-Za-z0-9_.]{0,255}")
_META_KEY = re.compile(r"[A-Za-z0-9_.-]{1,128}")
#: resources egw passes on: (Nomad's key, least, most); CPU in MHz, memory in MB
_RESOURCES = {"cpu": ("CPU", 1, 1_000_000), "memory_mb": ("MemoryMB", 10, 1 << 30)}
_MAX_TIMEOUT_S = 31 * 86400
_MAX_COUNT = 100_000


def validate_task(
    task: Any, *, namespace: str, region: str | None, datacenters: Sequence[str]
) -> NomadSpec:
    """Check a submit's ``task`` object; the defaults come from the provider's configuration.

    Raises `InvalidRequest` naming the field."""
    task = fields.mapping(task)
    if "job" in task:
        return _passthrough(task, namespace=namespace, region=region, datacenters=datacenters)
    fields.known_keys(task, _SHORT_KEYS)
    job_id = check_job_id(task.get("job_id"))
    driver = task.get("driver", "docker")
    if driver not in DRIVERS:
        raise InvalidRequest(f"driver must be one of {', '.join(DRIVERS)}", field="task.driver")
    config: dict[str, Any] = {}
    image = task.get("image")
    if driver == "docker":
        if image is None or any(
            c.isspace() for c in fields.text(image, "task.image", allow_empty=False)
        ):
            raise InvalidRequest(
                "the docker driver needs an image (a string without spaces)", field="task.image"
            )
        config["image"] = image
    elif image is not None:
        raise InvalidRequest(
            f"image is only for the docker driver, not {driver}", field="task.image"
        )
    command = task.get("command")
    if command is None and driver != "docker":
        raise InvalidRequest(f"the {driver} driver needs a command", field="task.command")
    if command is not None:
        config["command"] = fields.text(command, "task.command", allow_empty=False)
    args = fields.argv(task.get("args", []), "task.args")
    if args:
        config["args"] = args
    ns = fields.name(
        task.get("namespace", namespace), "task.namespace", _NAMESPACE, _NAMESPACE_RULE
    )
    reg = task.get("region", region)
    if reg is not None:
        reg = fields.name(reg, "task.region", _REGION, _NAME_RULE)
    nomad_task: dict[str, Any] = {"Name": TASK, "Driver": driver, "Config": config}
    env = fields.env(
        task.get("env", {}),
        "task.env",
        names=_ENV_KEY,
        rule="letters, digits, '_' and '.', not starting with a digit",
    )
    if env:
        nomad_task["Env"] = env
    resources = _resources(task.get("resources"))
    if resources:
        nomad_task["Resources"] = resources
    job: dict[str, Any] = {
        "ID": job_id,
        "Name": job_id,
        "Type": "batch",
        "Namespace": ns,
        "Datacenters": _datacenters(task.get("datacenters", list(datacenters))),
        "Meta": _meta(task.get("meta", {}), "task.meta"),
        "TaskGroups": [
            {
                "Name": GROUP,
                "Count": 1,
                # egw reports an exit as it is: no restart, no reschedule (a passed-through
                # job keeps its own policies)
                "RestartPolicy": {
                    "Attempts": 0,
                    "Mode": "fail",
                    "Interval": 1800 * NS_PER_S,
                    "Delay": 15 * NS_PER_S,
                },
                "ReschedulePolicy": {"Attempts": 0, "Unlimited": False},
                "Tasks": [nomad_task],
            }
        ],
    }
    if reg is not None:
        job["Region"] = reg
    return NomadSpec(
        job_id=job_id,
        namespace=ns,
        region=reg,
        job=job,
        tasks=((GROUP, TASK),),
        expected=1,
        timeout_s=_timeout(task.get("timeout_s")),
    )


def _passthrough(
    task: Mapping[str, Any], *, namespace: str, region: str | None, datacenters: Sequence[str]
) -> NomadSpec:
    fields.known_keys(task, ("job", "timeout_s"))
    raw = task["job"]
    if not isinstance(raw, Mapping):
        raise InvalidRequest("job must be a Nomad JSON job object", field="task.job")
    try:
        job: dict[str, Any] = json.loads(json.dumps(raw))
    except (TypeError, ValueError):
        raise InvalidRequest("job must be plain JSON", field="task.job") from None
    job_id = check_job_id(job.get("ID"), "task.job.ID")
    job.setdefault("Name", job_id)
    if (job.get("Type") or "batch") != "batch":
        raise InvalidRequest("egw runs batch jobs only (a task must end)", field="task.job.Type")
    job["Type"] = "batch"
    job["Namespace"] = fields.name(
        job.get("Namespace") or namespace, "task.job.Namespace", _NAMESPACE, _NAMESPACE_RULE
    )
    reg = job.get("Region") or region
    if reg is not None:
        job["Region"] = fields.name(reg, "task.job.Region", _REGION, _NAME_RULE)
    if not job.get("Datacenters"):
        job["Datacenters"] = list(datacenters)
    job["Meta"] = _meta(job.get("Meta") or {}, "task.job.Meta")
    for key in ("Periodic", "ParameterizedJob"):
        if job.get(key):
            raise InvalidRequest(
                f"{key} jobs are not run by egw (they start no evaluation)", field=f"task.job.{key}"
            )
    groups = job.get("TaskGroups")
    if not isinstance(groups, list) or not groups:
        raise InvalidRequest("a job needs at least one task group", field="task.job.TaskGroups")
    pairs: list[tuple[str, str]] = []
    expected = 0
    for gi, group in enumerate(groups):
        where = f"task.job.TaskGroups[{gi}]"
        if not isinstance(group, dict):
            raise InvalidRequest("a task group must be an object", field=where)
        gname = fields.name(group.get("Name"), f"{where}.Name", _NAME, _NAME_RULE)
        count = group.get("Count")
        if count is not None:
            count = group["Count"] = fields.integer(count, f"{where}.Count", 0, _MAX_COUNT)
        expected += 1 if count is None else count  # Nomad's default is 1
        tasks = group.get("Tasks")
        if not isinstance(tasks, list) or not tasks:
            raise InvalidRequest("a task group needs at least one task", field=f"{where}.Tasks")
        for ti, t in enumerate(tasks):
            tw = f"{where}.Tasks[{ti}]"
            if not isinstance(t, dict):
                raise InvalidRequest("a task must be an object", field=tw)
            tname = fields.name(t.get("Name"), f"{tw}.Name", _NAME, _NAME_RULE)
            if not isinstance(t.get("Driver"), str) or not t["Driver"]:
                raise InvalidRequest("a task needs a Driver", field=f"{tw}.Driver")
            pairs.append((gname, tname))
    return NomadSpec(
        job_id=job_id,
        namespace=job["Namespace"],
        region=job.get("Region"),
        job=job,
        tasks=tuple(pairs),
        expected=expected,
        timeout_s=_timeout(task.get("timeout_s")),
    )


def _datacenters(value: Any) -> list[str]:
    dcs = fields.argv(value, "task.datacenters")
    if not dcs:
        raise InvalidRequest(
            "task.datacenters must name at least one datacenter", field="task.datacenters"
        )
    for i, dc in enumerate(dcs):
        fields.name(
            dc, f"task.datacenters[{i}]", _DATACENTER, "1-128 letters, digits, '.', '_', '-' or '*'"
        )
    return dcs


def _meta(value: Any, where: str) -> dict[str, str]:
    meta = fields.string_map(value, where)
    for key in meta:
        fields.name(key, f"{where}.{key}", _META_KEY, _NAME_RULE)
    if META_TASK_ID in meta:
        raise InvalidRequest(f"{META_TASK_ID} is set by egw", field=f"{where}.{META_TASK_ID}")
    return meta


def _resources(value: Any) -> dict[str, int]:
    if value is None:
        return {}
    fields.known_keys(fields.mapping(value, "task.resources"), _RESOURCES, "task.resources")
    return {
        nomad_key: fields.integer(value[key], f"task.resources.{key}", least, most)
        for key, (nomad_key, least, most) in _RESOURCES.items()
        if key in value
    }


def _timeout(value: Any) -> float | None:
    if value is None:
        return None
    seconds = fields.number(value, "task.timeout_s", 0, _MAX_TIMEOUT_S)
    if seconds <= 0:
        raise InvalidRequest("task.timeout_s must be more than 0 seconds", field="task.timeout_s")
    return seconds
