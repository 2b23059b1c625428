"""GitHub Actions wire format (pure): task validation, dispatch bodies, webhook
signatures and payloads, run state mapping, delivery ordering, rate limits.

Theory of operation
-------------------
Everything here is a function of its arguments: no I/O, no clock (callers pass
``now``). The provider (`egw.providers.github_actions`) does the talking.

* A task names ``owner``/``repo``/``workflow_id`` (all go into a URL path, so
  they are checked against GitHub's name rules and may never hold ``/``, ``..``,
  ``%`` or ``?``), a ``ref`` (git's ref-name rules) and at most 25 ``inputs``
  (``rest-actions.openapi.json``: ``maxProperties: 25``).
* Deliveries are parsed *tolerantly* (tests/samples/github/NOTES.md, "Schema caveats"): older
  payloads lack ``run_attempt`` or ``display_title``, newer ones carry fields no
  schema lists; only the ids we key on are required.
* Deliveries arrive late, twice and out of order (google/go-github#2706, runs-on/runs-on#539). A run
  report is applied only if `is_newer` than the last one applied: ordered by
  ``run_attempt``, then ``updated_at`` (second resolution), and on a tie the
  further state wins (``completed`` over ``in_progress`` over queued), so a late
  ``in_progress`` never overrides ``completed``.
* ``neutral`` and ``skipped`` conclusions map to ``succeeded`` (see `CONCLUSIONS`).

Size: over the 500-line budget (the project's module budget) because this backend has one wire
module; its sections (names, dispatch, signatures, payloads, states, rate limits)
are the split points if it grows.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Final
from urllib.parse import quote

from egw.core.model import Observation, TaskState
from egw.errors import InvalidRequest, ProviderError

PROVIDER: Final = "github_actions"
API_VERSIONS: Final = ("2022-11-28", "2026-03-10")
#: rest-actions.openapi.json, create-workflow-dispatch: ``inputs.maxProperties``
MAX_INPUTS: Final = 25
#: docs.github.com "workflow_dispatch": the inputs payload is at most 65,535 characters
MAX_INPUTS_CHARS: Final = 65535
TASK_KEYS: Final = frozenset({"owner", "repo", "workflow_id", "ref", "inputs", "correlation_input"})

# --- names that go into a URL path ----------------------------------------------------------

# GitHub account names: letters, digits and single inner hyphens, at most 39 characters;
# Enterprise Managed Users add an ``_shortcode`` suffix.
_OWNER = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,37}[A-Za-z0-9])?(?:_[A-Za-z0-9]{1,20})?")
# repository names: letters, digits, ``.``, ``-`` and ``_``, at most 100 characters
_REPO = re.compile(r"[A-Za-z0-9._-]{1,100}")
# a workflow is its numeric id or its file name in .github/workflows (e.g. ``deploy.yml``)
_WORKFLOW_FILE = re.compile(r"[A-Za-z0-9_][A-Za-z0-9._-]{0,250}\.ya?ml")
# workflow_dispatch input ids: start with a letter or ``_``; letters, digits, ``-``, ``_``
_INPUT_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_-]{0,99}")
_REF_BAD = re.compile(r"[\x00-\x20\x7f~^:?*\[\\]|\.\.|@\{|//")


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


def validate_input_name(value: Any, field_path: str) -> str:
    if not isinstance(value, str) or not _INPUT_NAME.fullmatch(value):
        raise InvalidRequest(
            f"{field_path}: an input name starts with a letter or '_' and holds only "
            "letters, digits, '-' and '_'",
            field=field_path,
        )
    return value


def validate_inputs(
    value: Any, field_path: str = "task.inputs", *, reserved: str | None = None
) -> dict[str, str]:
    """At most 25 inputs with scalar values, sent as strings (workflow_dispatch inputs
    reach the workflow as strings; booleans become ``true``/``false``)."""
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise InvalidRequest(f"{field_path} must be an object", field=field_path)
    limit = MAX_INPUTS - (1 if reserved else 0)
    if len(value) > limit:
        raise InvalidRequest(
            f"{field_path}: at most {limit} inputs"
            + (f" ({reserved!r} is egw's correlation input)" if reserved else ""),
            field=field_path,
        )
    out: dict[str, str] = {}
    for name, item in value.items():
        validate_input_name(name, f"{field_path}")
        if reserved and name == reserved:
            raise InvalidRequest(
                f"{field_path}.{name} is reserved for egw's correlation id",
                field=f"{field_path}.{name}",
            )
        if isinstance(item, bool):
            out[name] = "true" if item else "false"
        elif isinstance(item, (str, int, float)):
            out[name] = str(item)
        else:
            raise InvalidRequest(
                f"{field_path}.{name} must be a string, number or boolean",
                field=f"{field_path}.{name}",
            )
    if len(json.dumps(out)) > MAX_INPUTS_CHARS:
        raise InvalidRequest(
            f"{field_path}: at most {MAX_INPUTS_CHARS} characters in all", field=field_path
        )
    return out


def validate_task(
    task: Mapping[str, Any],
    *,
    default_owner: str | None,
    default_repo: str | None,
    default_correlation_input: str | None,
) -> dict[str, Any]:
    """Check and normalise a submit's ``task`` object into the spec egw stores."""
    if not isinstance(task, Mapping):
        raise InvalidRequest("task must be an object", field="task")
    unknown = sorted(set(task) - TASK_KEYS)
    if unknown:
        raise InvalidRequest(
            f"task: unknown field {unknown[0]!r} (known: {', '.join(sorted(TASK_KEYS))})",
            field=f"task.{unknown[0]}",
        )
    owner = task.get("owner", default_owner)
    repo = task.get("repo", default_repo)
    if owner is None or repo is None:
        missing = "owner" if owner is None else "repo"
        raise InvalidRequest(
            f"task.{missing} is required (no default repository in config)",
            field=f"task.{missing}",
        )
    if "workflow_id" not in task:
        raise InvalidRequest("task.workflow_id is required", field="task.workflow_id")
    if "ref" not in task:
        raise InvalidRequest("task.ref is required", field="task.ref")
    corr = task.get("correlation_input", default_correlation_input)
    if corr is not None:
        validate_input_name(corr, "task.correlation_input")
    return {
        "owner": validate_owner(owner),
        "repo": validate_repo(repo),
        "workflow_id": validate_workflow_id(task["workflow_id"]),
        "ref": validate_ref(task["ref"]),
        "inputs": validate_inputs(task.get("inputs"), reserved=corr),
        "correlation_input": corr,
    }


def validate_run_id(value: Any) -> int:
    """An upstream run or job id (int64) before it goes into a URL path."""
    text = str(value)
    if not (text.isdigit() and text.isascii() and 0 < len(text) <= 19):
        raise InvalidRequest(f"not a GitHub run id: {text[:40]!r}", field="upstream_id")
    return int(text)


# --- paths ----------------------------------------------------------------------------------


def repo_path(owner: str, repo: str) -> str:
    return f"/repos/{quote(owner, safe='')}/{quote(repo, safe='')}"


def dispatch_path(spec: Mapping[str, Any]) -> str:
    wf = quote(str(spec["workflow_id"]), safe="")
    return f"{repo_path(spec['owner'], spec['repo'])}/actions/workflows/{wf}/dispatches"


def workflow_runs_path(spec: Mapping[str, Any]) -> str:
    wf = quote(str(spec["workflow_id"]), safe="")
    return f"{repo_path(spec['owner'], spec['repo'])}/actions/workflows/{wf}/runs"


def run_path(spec: Mapping[str, Any], run_id: Any) -> str:
    return f"{repo_path(spec['owner'], spec['repo'])}/actions/runs/{validate_run_id(run_id)}"


def job_path(spec: Mapping[str, Any], job_id: Any) -> str:
    return f"{repo_path(spec['owner'], spec['repo'])}/actions/jobs/{validate_run_id(job_id)}"


# --- dispatch -------------------------------------------------------------------------------


def correlation_id(idempotency_key: str) -> str:
    """The unique id egw passes in the correlation input (and looks for in run-name)."""
    safe = re.sub(r"[^A-Za-z0-9_-]", "-", idempotency_key)[:80]
    return f"egw-{safe}"


def dispatch_body(
    spec: Mapping[str, Any],
    *,
    api_version: str,
    return_run_details: bool,
    correlation: str | None,
) -> dict[str, Any]:
    """The create-workflow-dispatch body. ``return_run_details`` exists only in
    2022-11-28; under 2026-03-10 the answer is always 200 with the run details
    (breaking-changes-2026-03-10.json removes the field)."""
    inputs = dict(spec.get("inputs") or {})
    name = spec.get("correlation_input")
    if name and correlation:
        inputs[name] = correlation
    body: dict[str, Any] = {"ref": spec["ref"]}
    if inputs:
        body["inputs"] = inputs
    if return_run_details and api_version == "2022-11-28":
        body["return_run_details"] = True
    return body


@dataclass(frozen=True, slots=True)
class DispatchResult:
    """``run_id`` is None for a 204 (no run details)."""

    run_id: int | None
    run_url: str | None = None
    html_url: str | None = None


def parse_dispatch_response(status: int, body: bytes) -> DispatchResult:
    if status == 204:
        return DispatchResult(None)
    if status == 200:
        try:
            data = json.loads(body) if body else {}
        except ValueError:
            data = None
        if isinstance(data, Mapping):
            run_id = _int(data.get("workflow_run_id"))
            if run_id is not None:
                return DispatchResult(run_id, _str(data.get("run_url")), _str(data.get("html_url")))
        if not body:
            return DispatchResult(None)
        raise ProviderError(
            "GitHub answered the dispatch with 200 but no workflow_run_id",
            provider=PROVIDER,
            upstream_status=status,
        )
    raise ProviderError(
        f"unexpected dispatch answer {status}", provider=PROVIDER, upstream_status=status
    )


def rejects_run_details(status: int, message: str) -> bool:
    """An older Enterprise Server refusing ``return_run_details`` (400 or 422 naming it;
    cli/cli#12672, github/gh-aw#19414)."""
    return status in (400, 422) and "return_run_details" in message


def error_message(body: bytes, status: int) -> str:
    """GitHub's own message from a ``basic-error`` body (or the start of the raw text)."""
    try:
        data = json.loads(body)
    except ValueError:
        data = None
    if isinstance(data, Mapping) and isinstance(data.get("message"), str):
        message = str(data["message"])
        errors = data.get("errors")
        if isinstance(errors, list) and errors:
            message += " " + json.dumps(errors)[:500]
        return message
    text = body.decode("utf-8", "replace").strip()[:500]
    return text or f"HTTP {status}"


# --- signatures -----------------------------------------------------------------------------


def sign(secret: str | bytes, body: bytes) -> str:
    """``X-Hub-Signature-256`` for ``body``: ``sha256=`` + hex HMAC-SHA256
    (docs: content/webhooks/using-webhooks/validating-webhook-deliveries.md)."""
    key = secret.encode() if isinstance(secret, str) else secret
    return "sha256=" + hmac.new(key, body, hashlib.sha256).hexdigest()


def verify_signature(secret: str | bytes, body: bytes, header: str | None) -> bool:
    """Constant-time check of the raw body against the signature header."""
    if not header or not secret:
        return False
    return hmac.compare_digest(sign(secret, body).encode(), header.strip().encode())


# --- payloads -------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class Run:
    id: int
    attempt: int = 1
    status: str | None = None
    conclusion: str | None = None
    name: str | None = None
    display_title: str | None = None
    event: str | None = None
    head_branch: str | None = None
    workflow_id: int | None = None
    path: str | None = None
    run_number: int | None = None
    url: str | None = None
    html_url: str | None = None
    created_at: datetime | None = None
    updated_at: datetime | None = None
    run_started_at: datetime | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class Step:
    number: int
    name: str
    status: str | None = None
    conclusion: str | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class Job:
    id: int
    run_id: int
    run_attempt: int = 1
    name: str = ""
    status: str | None = None
    conclusion: str | None = None
    html_url: str | None = None
    runner_name: str | None = None
    started_at: datetime | None = None
    completed_at: datetime | None = None
    steps: tuple[Step, ...] = ()

    def to_json(self) -> dict[str, Any]:
        return {
            "job_id": self.id,
            "run_id": self.run_id,
            "run_attempt": self.run_attempt,
            "name": self.name,
            "status": self.status,
            "conclusion": self.conclusion,
            "html_url": self.html_url,
            "runner_name": self.runner_name,
            "steps": [
                {"number": s.number, "name": s.name, "status": s.status, "conclusion": s.conclusion}
                for s in self.steps
            ],
        }


@dataclass(frozen=True, slots=True, kw_only=True)
class Delivery:
    """One webhook delivery; ``run``/``job`` are set for workflow_run/workflow_job."""

    event: str
    delivery_id: str
    hook_id: str | None
    action: str | None
    payload: Mapping[str, Any] = field(default_factory=dict)
    run: Run | None = None
    job: Job | None = None
    zen: str | None = None


def parse_time(value: Any) -> datetime | None:
    if not isinstance(value, str) or not value:
        return None
    try:
        when = datetime.fromisoformat(value)
    except ValueError:
        return None
    return when if when.tzinfo else when.replace(tzinfo=UTC)


def parse_run(obj: Any) -> Run:
    """A ``workflow-run`` (REST) or ``workflow_run`` (webhook) object, tolerantly."""
    if not isinstance(obj, Mapping) or _int(obj.get("id")) is None:
        raise InvalidRequest("workflow_run must be an object with an integer id")
    return Run(
        id=int(obj["id"]),
        attempt=_int(obj.get("run_attempt")) or 1,
        status=_str(obj.get("status")),
        conclusion=_str(obj.get("conclusion")),
        name=_str(obj.get("name")),
        display_title=_str(obj.get("display_title")),
        event=_str(obj.get("event")),
        head_branch=_str(obj.get("head_branch")),
        workflow_id=_int(obj.get("workflow_id")),
        path=_str(obj.get("path")),
        run_number=_int(obj.get("run_number")),
        url=_str(obj.get("url")),
        html_url=_str(obj.get("html_url")),
        created_at=parse_time(obj.get("created_at")),
        updated_at=parse_time(obj.get("updated_at")),
        run_started_at=parse_time(obj.get("run_started_at")),
    )


def parse_job(obj: Any) -> Job:
    """A ``job`` (REST) or ``workflow_job`` (webhook) object, tolerantly."""
    if not isinstance(obj, Mapping) or _int(obj.get("id")) is None:
        raise InvalidRequest("workflow_job must be an object with an integer id")
    run_id = _int(obj.get("run_id"))
    if run_id is None:
        raise InvalidRequest("workflow_job must carry an integer run_id")
    steps = []
    raw_steps = obj.get("steps")
    for i, raw in enumerate(raw_steps if isinstance(raw_steps, list) else []):
        if isinstance(raw, Mapping):
            steps.append(
                Step(
                    number=_int(raw.get("number")) or i + 1,
                    name=_str(raw.get("name")) or f"step {i + 1}",
                    status=_str(raw.get("status")),
                    conclusion=_str(raw.get("conclusion")),
                )
            )
    return Job(
        id=int(obj["id"]),
        run_id=run_id,
        run_attempt=_int(obj.get("run_attempt")) or 1,
        name=_str(obj.get("name")) or "",
        status=_str(obj.get("status")),
        conclusion=_str(obj.get("conclusion")),
        html_url=_str(obj.get("html_url")),
        runner_name=_str(obj.get("runner_name")),
        started_at=parse_time(obj.get("started_at")),
        completed_at=parse_time(obj.get("completed_at")),
        steps=tuple(steps),
    )


def header(headers: Mapping[str, str], name: str) -> str | None:
    """A header by case-insensitive name (works on plain dicts and multidicts)."""
    value = headers.get(name)
    if value is not None:
        return value
    lower = name.lower()
    for key, item in headers.items():
        if key.lower() == lower:
            return item
    return None


def parse_delivery(headers: Mapping[str, str], body: bytes) -> Delivery:
    """Parse a *verified* delivery; raises `InvalidRequest` (400) when malformed.

    Events other than workflow_run/workflow_job/ping are returned with only the
    event name, for the caller to ignore.
    """
    event = header(headers, "X-GitHub-Event")
    if not event:
        raise InvalidRequest("missing X-GitHub-Event header", field="X-GitHub-Event")
    # GitHub always sends a delivery GUID; a hash of the body keeps dedupe working without one
    delivery_id = header(headers, "X-GitHub-Delivery") or (
        "sha256:" + hashlib.sha256(body).hexdigest()
    )
    hook_id = header(headers, "X-GitHub-Hook-ID")
    try:
        payload = json.loads(body)
    except (ValueError, UnicodeDecodeError) as exc:
        raise InvalidRequest(f"body is not JSON: {exc}") from exc
    if not isinstance(payload, dict):
        raise InvalidRequest("body must be a JSON object")
    run = parse_run(payload.get("workflow_run")) if event == "workflow_run" else None
    job = parse_job(payload.get("workflow_job")) if event == "workflow_job" else None
    return Delivery(
        event=event,
        delivery_id=delivery_id,
        hook_id=hook_id,
        action=_str(payload.get("action")),
        payload=payload,
        run=run,
        job=job,
        zen=_str(payload.get("zen")) if event == "ping" else None,
    )


# --- states ---------------------------------------------------------------------------------

S = TaskState

#: run ``status`` values before completion (tests/samples/github/NOTES.md, "Status values")
_WAITING_STATUSES: Final = frozenset({"requested", "queued", "pending", "waiting"})
#: ``conclusion`` of a completed run -> egw state. ``neutral`` and ``skipped`` count as
#: success, as GitHub itself counts them for required checks ("A job that is skipped will
#: report its status as Success"); the conclusion stays visible as the reason.
CONCLUSIONS: Final[Mapping[str, TaskState]] = {
    "success": S.SUCCEEDED,
    "neutral": S.SUCCEEDED,
    "skipped": S.SUCCEEDED,
    "cancelled": S.CANCELLED,
    "failure": S.FAILED,
    "timed_out": S.FAILED,
    "startup_failure": S.FAILED,
    "action_required": S.FAILED,
    "stale": S.FAILED,
}


def run_state(status: str | None, conclusion: str | None) -> tuple[TaskState, str | None]:
    """Map a run's (or job's) ``status``/``conclusion`` to an egw state and reason.

    A conclusion decides (some payloads carry one with a non-``completed`` status,
    e.g. ``requested.with-conclusion``); an unknown conclusion fails the task with
    the conclusion as reason; ``completed`` without one is a failure too.
    """
    if conclusion:
        state = CONCLUSIONS.get(conclusion, S.FAILED)
        return state, (None if conclusion == "success" else conclusion)
    if status == "completed":
        return S.FAILED, "completed without a conclusion"
    if status == "in_progress":
        return S.RUNNING, None
    if status in _WAITING_STATUSES or status is None:
        return S.QUEUED, status
    return S.QUEUED, status


def run_observation(run: Run, *, source: str = "webhook") -> Observation:
    state, reason = run_state(run.status, run.conclusion)
    return Observation(
        state=state,
        reason=reason,
        at=run.updated_at,
        detail={
            "run_id": run.id,
            "run_attempt": run.attempt,
            "status": run.status,
            "conclusion": run.conclusion,
            "html_url": run.html_url,
            "via": source,
        },
    )


_RANK: Final = {"completed": 2, "in_progress": 1}
_EPOCH: Final = datetime(1970, 1, 1, tzinfo=UTC)


def order_key(run: Run) -> tuple[int, datetime, int]:
    """(attempt, updated_at, stage): larger is newer; a tie prefers the terminal state."""
    stage = 2 if run.conclusion else _RANK.get(run.status or "", 0)
    return (run.attempt, run.updated_at or _EPOCH, stage)


def is_newer(candidate: Run, current: Run | None) -> bool:
    """Whether ``candidate`` should be applied after ``current`` was."""
    return current is None or order_key(candidate) > order_key(current)


_JOB_RANK: Final = {"completed": 2, "in_progress": 1}


def job_is_newer(candidate: Job, current: Job | None) -> bool:
    """Whether a job report is news: by attempt, stage, then finished steps."""
    if current is None:
        return True

    def key(job: Job) -> tuple[int, int, int]:
        done = sum(1 for s in job.steps if s.status == "completed")
        stage = 2 if job.conclusion else _JOB_RANK.get(job.status or "", 0)
        return (job.run_attempt, stage, done)

    return key(candidate) > key(current)


def matches_correlation(run: Run, correlation: str) -> bool:
    """The workflow echoed the correlation id into its run-name (``display_title``)."""
    return any(correlation in (text or "") for text in (run.display_title, run.name))


def pick_run(
    runs: list[Run],
    *,
    correlation: str | None,
    ref: str,
    since: datetime,
    claimed: set[int] | frozenset[int] = frozenset(),
) -> Run | None:
    """The run a dispatch created, among listed runs.

    With a correlation input the run whose run-name carries the id (exact). Without
    one, a heuristic (GitHub specifies no matching: tests/samples/github/NOTES.md): the oldest unclaimed
    ``workflow_dispatch`` run on the ref created since the dispatch.
    """
    if correlation is not None:
        return next((r for r in runs if matches_correlation(r, correlation)), None)
    branch = re.sub(r"^refs/(heads|tags)/", "", ref)
    candidates = [
        r
        for r in runs
        if r.id not in claimed
        and r.event in (None, "workflow_dispatch")
        and r.head_branch in (None, branch)
        and (r.created_at is None or r.created_at >= since)
    ]
    candidates.sort(key=lambda r: (r.created_at or _EPOCH, r.id))
    return candidates[0] if candidates else None


def text_chunks(text: str, size: int = 16384) -> list[bytes]:
    """UTF-8 chunks that never split a character (for the log store)."""
    return [text[i : i + size].encode() for i in range(0, len(text), size)]


def created_filter(since: datetime) -> str:
    """The ``created`` query of list-workflow-runs (GitHub search date syntax)."""
    return ">=" + since.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def job_progress_lines(previous: Job | None, job: Job) -> list[str]:
    """Progress lines for the task's log: the job's and its steps' changes since
    ``previous`` (GitHub has no live log stream; these stand in while it runs)."""
    lines: list[str] = []
    label = f"job {job.name or job.id}"
    if job.run_attempt > 1:
        label += f" (attempt {job.run_attempt})"
    if previous is None or (previous.status, previous.conclusion) != (job.status, job.conclusion):
        text = f"[github] {label}: {job.status or 'unknown'}"
        if job.conclusion:
            text += f" ({job.conclusion})"
        lines.append(text)
    before = {s.number: (s.status, s.conclusion) for s in (previous.steps if previous else ())}
    for step in job.steps:
        if step.status in (None, "queued", "pending", "waiting"):
            continue
        if before.get(step.number) == (step.status, step.conclusion):
            continue
        text = f"[github]   step {step.number} {step.name}: {step.status}"
        if step.conclusion:
            text += f" ({step.conclusion})"
        lines.append(text)
    return lines


# --- rate limits ----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class RateLimit:
    """The ``x-ratelimit-*`` headers of one response (reset is UTC epoch seconds)."""

    limit: int | None
    remaining: int | None
    used: int | None
    reset: int | None
    resource: str | None

    def to_json(self) -> dict[str, Any]:
        return {
            "limit": self.limit,
            "remaining": self.remaining,
            "used": self.used,
            "reset": self.reset,
            "resource": self.resource,
        }


def parse_rate_limit(headers: Mapping[str, str]) -> RateLimit | None:
    values = {
        name: header(headers, f"x-ratelimit-{name}")
        for name in ("limit", "remaining", "used", "reset", "resource")
    }
    if all(v is None for v in values.values()):
        return None
    return RateLimit(
        _int(values["limit"]),
        _int(values["remaining"]),
        _int(values["used"]),
        _int(values["reset"]),
        values["resource"],
    )


#: a secondary limit without hints: wait at least a minute, then back off exponentially
SECONDARY_WAIT_S: Final = 60.0
MAX_WAIT_S: Final = 3600.0


def rate_limit_wait(
    status: int, headers: Mapping[str, str], message: str, *, now: float, attempt: int = 1
) -> float | None:
    """Seconds to wait after a rate-limited response, or None if it is not one.

    tests/samples/github/NOTES.md (from GitHub's rate-limits-for-the-rest-api.md): primary limit = 403/429 with
    ``x-ratelimit-remaining: 0``, wait until ``x-ratelimit-reset``; secondary limit =
    403/429 with a message: honour ``retry-after``, else the reset if remaining is 0,
    else at least one minute, growing exponentially with ``attempt``.
    A 403 that is neither (a permission error) is not a rate limit.
    """
    if status not in (403, 429):
        return None
    retry_after = header(headers, "retry-after")
    if retry_after is not None:
        try:
            return min(MAX_WAIT_S, max(0.0, float(retry_after)))
        except ValueError:
            pass
    limits = parse_rate_limit(headers)
    if limits is not None and limits.remaining == 0 and limits.reset is not None:
        return min(MAX_WAIT_S, max(1.0, limits.reset - now + 1.0))
    if status == 429 or "rate limit" in message.lower():
        return min(MAX_WAIT_S, SECONDARY_WAIT_S * float(2 ** max(0, attempt - 1)))
    return None


def next_link(link: str | None) -> str | None:
    """The ``rel="next"`` URL of a ``Link`` header (using-pagination-in-the-rest-api.md)."""
    for part in (link or "").split(","):
        match = re.match(r'\s*<([^>]*)>\s*;\s*rel="?next"?', part)
        if match:
            return match.group(1)
    return None


def _int(value: Any) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, str) and value.strip().lstrip("-").isdigit():
        return int(value.strip())
    return None


def _str(value: Any) -> str | None:
    return value if isinstance(value, str) else None
