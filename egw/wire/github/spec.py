"""A GitHub Actions task: its validation into a typed `GitHubSpec`, and the API paths it names.

``owner``/``repo``/``workflow_id`` go into a URL path, so they are checked
against GitHub's name rules and may never hold ``/``, ``..``, ``%`` or ``?``; a
``ref`` follows git's ref-name rules; at most 25 ``inputs``
(``rest-actions.openapi.json``: ``maxProperties: 25``). The checks every
provider shares (an object, known keys, required fields, NUL in strings) are
`egw.core.fields`; the patterns here are GitHub's own.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Final
from urllib.parse import quote

from egw.core import fields
from egw.errors import InvalidRequest

#: rest-actions.openapi.json, create-workflow-dispatch: ``inputs.maxProperties``
MAX_INPUTS: Final = 25
#: docs.github.com "workflow_dispatch": the inputs payload is at most 65,535 characters
MAX_INPUTS_CHARS: Final = 65535
TASK_KEYS: Final = frozenset({"owner", "repo", "workflow_id", "ref", "inputs", "correlation_input"})

# GitHub account names: letters, digits and single inner hyphens, at most 39 characters;
# Enterprise Managed Users add an ``_shortcode`` suffix.
_OWNER = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,37}[A-Za-z0-9])?(?:_[A-Za-z0-9]{1,20})?")
# repository names: letters, digits, ``.``, ``-`` and ``_``, at most 100 characters
_REPO = re.compile(r"[A-Za-z0-9._-]{1,100}")
# a workflow is its numeric id or its file name in .github/workflows (e.g. ``deploy.yml``)
_WORKFLOW_FILE = re.compile(r"[A-Za-z0-9_][A-Za-z0-9._-]{0,250}\.ya?ml")
# workflow_dispatch input ids: start with a letter or ``_``; letters, digits, ``-``, ``_``
_INPUT_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_-]{0,99}")
_INPUT_RULE = (
    "an input name starts with a letter or '_' and holds only letters, digits, '-' and '_'"
)
_REF_BAD = re.compile(r"[\x00-\x20\x7f~^:?*\[\\]|\.\.|@\{|//")


@dataclass(frozen=True, slots=True, kw_only=True)
class GitHubSpec:
    """A validated task: the workflow to dispatch, on which ref, with which inputs."""

    owner: str
    repo: str
    workflow_id: str
    ref: str
    inputs: Mapping[str, str] = field(default_factory=dict)
    #: the workflow input egw puts its correlation id in (None: match runs by heuristic)
    correlation_input: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "owner": self.owner,
            "repo": self.repo,
            "workflow_id": self.workflow_id,
            "ref": self.ref,
            "inputs": dict(self.inputs),
            "correlation_input": self.correlation_input,
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> GitHubSpec:
        """A stored spec, checked again (it is input too)."""
        return validate_task(
            data, default_owner=None, default_repo=None, default_correlation_input=None
        )


def validate_owner(value: Any, field_path: str = "task.owner") -> str:
    if not isinstance(value, str) or not _OWNER.fullmatch(value):
        raise InvalidRequest(
            f"{field_path} must be a GitHub account name (letters, digits, inner hyphens, "
            "at most 39 characters)",
            field=field_path,
        )
    return value


def validate_repo(value: Any, field_path: str = "task.repo") -> str:
    if not isinstance(value, str) or not _REPO.fullmatch(value) or value in (".", ".."):
        raise InvalidRequest(
            f"{field_path} must be a repository name (letters, digits, '.', '-', '_', "
            "at most 100 characters)",
            field=field_path,
        )
    if value.lower().endswith(".git"):
        raise InvalidRequest(f"{field_path}: give the name without '.git'", field=field_path)
    return value


def validate_workflow_id(value: Any, field_path: str = "task.workflow_id") -> str:
    """The workflow's numeric id or its file name (``deploy.yml``), as a string."""
    if isinstance(value, bool):
        value = None
    if isinstance(value, int) and value > 0:
        return str(value)
    if isinstance(value, str) and (
        (value.isdigit() and value.isascii() and int(value) > 0 and len(value) <= 20)
        or _WORKFLOW_FILE.fullmatch(value)
    ):
        return value
    raise InvalidRequest(
        f"{field_path} must be a workflow id or a workflow file name such as 'deploy.yml'",
        field=field_path,
    )


def validate_ref(value: Any, field_path: str = "task.ref") -> str:
    """A branch or tag name, checked against git's ref-name rules (git check-ref-format)."""
    ok = (
        isinstance(value, str)
        and 0 < len(value) <= 255
        and value != "@"
        and not _REF_BAD.search(value)
        and not value.startswith(("/", "-"))
        and not value.endswith(("/", ".", ".lock"))
        and not any(part.startswith(".") for part in value.split("/"))
    )
    if not ok:
        raise InvalidRequest(f"{field_path} must be a branch or tag name", field=field_path)
    return str(value)


def validate_inputs(
    value: Any, field_path: str = "task.inputs", *, reserved: str | None = None
) -> dict[str, str]:
    """At most 25 inputs with scalar values, sent as strings (workflow_dispatch inputs
    reach the workflow as strings; booleans become ``true``/``false``)."""
    if value is None:
        return {}
    fields.mapping(value, field_path)
    limit = MAX_INPUTS - (1 if reserved else 0)
    if len(value) > limit:
        raise InvalidRequest(
            f"{field_path}: at most {limit} inputs"
            + (f" ({reserved!r} is egw's correlation input)" if reserved else ""),
            field=field_path,
        )
    out: dict[str, str] = {}
    for key, item in value.items():
        at = f"{field_path}.{key}"
        fields.name(key, at, _INPUT_NAME, _INPUT_RULE)
        if reserved and key == reserved:
            raise InvalidRequest(f"{at} is reserved for egw's correlation id", field=at)
        if isinstance(item, bool):
            out[key] = "true" if item else "false"
        elif isinstance(item, (int, float)):
            out[key] = str(item)
        elif isinstance(item, str):
            # the size that counts is the payload's, checked below; here: no NUL
            out[key] = fields.text(item, at, max_bytes=4 * MAX_INPUTS_CHARS)
        else:
            raise InvalidRequest(f"{at} must be a string, number or boolean", field=at)
    if len(json.dumps(out)) > MAX_INPUTS_CHARS:
        raise InvalidRequest(
            f"{field_path}: at most {MAX_INPUTS_CHARS} characters in all", field=field_path
        )
    return out


def validate_task(
    task: Any,
    *,
    default_owner: str | None,
    default_repo: str | None,
    default_correlation_input: str | None,
) -> GitHubSpec:
    """Check and normalise a submit's ``task`` object into the spec egw stores."""
    fields.known_keys(fields.mapping(task), TASK_KEYS)
    given = {
        "owner": default_owner,
        "repo": default_repo,
        "correlation_input": default_correlation_input,
        **task,
    }
    no_default = " (no default repository in config)"
    owner = fields.required(given, "owner", hint=no_default)
    repo = fields.required(given, "repo", hint=no_default)
    workflow_id = fields.required(given, "workflow_id")
    ref = fields.required(given, "ref")
    corr = given["correlation_input"]
    if corr is not None:
        fields.name(corr, "task.correlation_input", _INPUT_NAME, _INPUT_RULE)
    return GitHubSpec(
        owner=validate_owner(owner),
        repo=validate_repo(repo),
        workflow_id=validate_workflow_id(workflow_id),
        ref=validate_ref(ref),
        inputs=validate_inputs(given.get("inputs"), reserved=corr),
        correlation_input=corr,
    )


def validate_run_id(value: Any) -> int:
    """An upstream run or job id (int64) before it goes into a URL path."""
    text = str(value)
    if not (text.isdigit() and text.isascii() and 0 < len(text) <= 19):
        raise InvalidRequest(f"not a GitHub run id: {text[:40]!r}", field="upstream_id")
    return int(text)


# --- paths ----------------------------------------------------------------------------------


def repo_path(owner: str, repo: str) -> str:
    return f"/repos/{quote(owner, safe='')}/{quote(repo, safe='')}"


def dispatch_path(spec: GitHubSpec) -> str:
    wf = quote(spec.workflow_id, safe="")
    return f"{repo_path(spec.owner, spec.repo)}/actions/workflows/{wf}/dispatches"


def workflow_runs_path(spec: GitHubSpec) -> str:
    wf = quote(spec.workflow_id, safe="")
    return f"{repo_path(spec.owner, spec.repo)}/actions/workflows/{wf}/runs"


def run_path(spec: GitHubSpec, run_id: Any) -> str:
    return f"{repo_path(spec.owner, spec.repo)}/actions/runs/{validate_run_id(run_id)}"


def job_path(spec: GitHubSpec, job_id: Any) -> str:
    return f"{repo_path(spec.owner, spec.repo)}/actions/jobs/{validate_run_id(job_id)}"
