"""`CloudRunSimulator`: Cloud Run Admin v2 (jobs:run, executions, tasks, operations), Cloud Logging
``entries:list`` and an OAuth2 token endpoint, served by one aiohttp app over real HTTP.

Paths, bodies, status codes and error bodies follow tests/samples/cloudrun/ (copied to
tests/samples/cloudrun/): errors are AIP-193 ``{"error": {"code", "message", "status"}}`` with the
google.rpc.Code name of the HTTP status. See the package docstring for the scripting API.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import random
import re
import string
import time
import uuid
from collections import deque
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from egw.testing.cloudrun.filters import FilterError, compile_filter, instant_ns
from egw.testing.cloudrun.google import (
    GOOGLE_TOKEN_URL,
    STATUS_NAMES,
    UNAUTHENTICATED_MESSAGE,
    GoogleError,
    decode_token,
    encode_token,
    jwt_claims,
    known_fields,
    oauth_error,
)
from egw.testing.cloudrun.google import page as paged
from egw.testing.cloudrun.model import JobScript, SimExecution, SimJob

OPERATIONS = (
    "run",
    "get_execution",
    "list_executions",
    "cancel",
    "list_tasks",
    "get_task",
    "get_operation",
    "wait_operation",
    "list_entries",
    "token",
)
_SEG = r"[^/]+"
_JOB = rf"projects/{_SEG}/locations/{_SEG}/jobs/{_SEG}"
_EXEC = rf"{_JOB}/executions/{_SEG}"
_OP = rf"projects/{_SEG}/locations/{_SEG}/operations/{_SEG}"
# (method, path pattern after /v2/, operation) from the discovery documents' method paths
_ROUTES = [
    ("POST", re.compile(r"entries:list"), "list_entries"),
    ("POST", re.compile(rf"({_JOB}):run"), "run"),
    ("GET", re.compile(rf"({_JOB})/executions"), "list_executions"),
    ("POST", re.compile(rf"({_EXEC}):cancel"), "cancel"),
    ("GET", re.compile(rf"({_EXEC})/tasks"), "list_tasks"),
    ("GET", re.compile(rf"({_EXEC}/tasks/{_SEG})"), "get_task"),
    ("GET", re.compile(rf"({_EXEC})"), "get_execution"),
    ("POST", re.compile(rf"({_OP}):wait"), "wait_operation"),
    ("GET", re.compile(rf"({_OP})"), "get_operation"),
]
_RUN_KEYS = {
    "": {"overrides", "etag", "validateOnly"},
    "overrides": {"containerOverrides", "taskCount", "timeout"},
    "overrides.containerOverrides": {"name", "args", "env", "clearArgs"},
    "overrides.containerOverrides.env": {"name", "value", "valueSource"},
}
_LIST_KEYS = {"": {"resourceNames", "projectIds", "filter", "orderBy", "pageSize", "pageToken"}}
# The IAM permission each call needs: "Authorization requires the following IAM permission" on
# each method's page of the REST reference (https://cloud.google.com/run/docs/reference/rest/v2/,
# https://cloud.google.com/logging/docs/reference/v2/rest/v2/entries/list) and the permission
# list https://cloud.google.com/run/docs/reference/iam/permissions. jobs:run with ``overrides``
# needs run.jobs.runWithOverrides as well.
PERMISSIONS = {
    "run": "run.jobs.run",
    "get_execution": "run.executions.get",
    "list_executions": "run.executions.list",
    "cancel": "run.executions.cancel",
    "list_tasks": "run.tasks.list",
    "get_task": "run.tasks.get",
    "get_operation": "run.operations.get",
    "wait_operation": "run.operations.get",
    "list_entries": "logging.logEntries.list",
}
_RUN_ALL = frozenset(PERMISSIONS.values()) - {"logging.logEntries.list"}
# The predefined roles, cut to the permissions above (https://cloud.google.com/run/docs/
# reference/iam/roles; https://cloud.google.com/run/docs/execute/jobs, "Required roles": Invoker
# executes a job, Developer is needed "to override job configurations, or to cancel job
# executions"; roles/logging.viewer holds logging.logEntries.list).
ROLES: dict[str, frozenset[str]] = {
    "roles/run.invoker": frozenset({"run.jobs.run"}),
    "roles/run.developer": _RUN_ALL | {"run.jobs.runWithOverrides"},
    "roles/run.viewer": _RUN_ALL - {"run.jobs.run", "run.executions.cancel"},
    "roles/logging.viewer": frozenset({"logging.logEntries.list"}),
}


@dataclass
class _Fault:
    operation: str
    times: int
    skip: int = 0
    status: int | None = None
    delay_s: float = 0.0
    apply: bool = False
    message: str | None = None


@dataclass
class _Op:
    name: str
    execution: str


class CloudRunSimulator:
    """Both Google APIs on one base URL; see `egw.testing.cloudrun` for the scripting API."""

    def __init__(
        self,
        *,
        token: str | None = "sim-token",
        time_scale: float = 1.0,
        seed: int | None = None,
        clock: Callable[[], float] = time.time,
        token_lifetime_s: float = 3600.0,
        require_auth: bool = True,
    ) -> None:
        self.time_scale = time_scale
        #: every API call needs a good bearer token (a static one, or one issued by /token)
        self.require_auth = require_auth
        self.clock = clock
        self.token_lifetime_s = token_lifetime_s
        self.tokens: dict[str, float | None] = {token: None} if token else {}
        #: service-account public keys (PEM) by key id; when set, token requests must be signed
        self.trusted_keys: dict[str, str] = {}
        self.jobs: dict[str, SimJob] = {}
        self.executions: dict[str, SimExecution] = {}
        self.operations: dict[str, _Op] = {}
        #: every API call as (operation, path), in order
        self.requests: list[tuple[str, str]] = []
        #: the next N entries:list answers that would hold entries hold none (but a nextPageToken)
        self.empty_log_pages = 0
        #: Cloud Logging's quota of entries.list requests per project per (real) minute
        #: (https://cloud.google.com/logging/quotas, "Read requests per minute"); set by the tests
        #: and egw's ``logging_reads_per_minute`` to the same figure. None: unlimited
        self.logging_quota_per_minute: int | None = None
        #: the order of ``executions.list``: "newest_first", "oldest_first" or "shuffled". Nothing
        #: documents an order (run-v2-jobs.md; ListExecutionsRequest in googleapis
        #: google/cloud/run/v2/execution.proto names none), so clients must not rely on one.
        self.list_order = "newest_first"
        #: what ``executions:cancel`` of a finished execution answers: an HTTP status (an error in
        #: Google's shape) or None (an operation, done, whose response is the execution). No
        #: source says which Cloud Run does; the default is the simulator's own guess.
        self.cancel_finished_status: int | None = 400
        #: the next jobs:run calls answer an operation that is done with ``error`` (code,
        #: message) and start nothing: what the Operation's ``result`` oneof allows
        #: (googleapis google/longrunning/operations.proto), not an observed Cloud Run answer
        self.run_operation_errors: list[tuple[int, str]] = []
        #: tokens granted roles (`grant`) have only those roles' permissions (see `ROLES`);
        #: other tokens have every permission
        self.token_roles: dict[str, frozenset[str]] = {}
        self._reads: dict[str, deque[float]] = {}
        self._faults: list[_Fault] = []
        self._rng = random.Random(seed)
        self.app = web.Application()
        self.app.router.add_route("*", "/v2/{path:.*}", self._dispatch)
        self.app.router.add_post("/token", self._token)
        self._runner: web.AppRunner | None = None
        self.url: str | None = None

    # --- scripting ------------------------------------------------------------------------

    def add_job(
        self,
        project: str,
        region: str,
        name: str,
        *,
        script: JobScript | None = None,
        args: list[str] | None = None,
        env: Mapping[str, str] | None = None,
        task_count: int = 1,
        container: str = "job-1",
    ) -> SimJob:
        job = SimJob(
            project,
            region,
            name,
            args=list(args or []),
            env=dict(env or {}),
            task_count=task_count,
            container=container,
            script=script or JobScript(),
        )
        self.jobs[job.resource] = job
        return job

    def fail(
        self,
        operation: str,
        status: int = 503,
        *,
        times: int = 1,
        skip: int = 0,
        apply: bool = False,
        message: str | None = None,
    ) -> _Fault:
        """Answer the next ``times`` calls of ``operation`` (one of OPERATIONS, or ``*``) with an
        error, after letting ``skip`` calls through; with ``apply`` the call takes effect first
        (an execution is started, then 500). Returns the fault: setting its ``times`` to 0
        ends an outage early."""
        self._check_op(operation)
        fault = _Fault(operation, times, skip=skip, status=status, apply=apply, message=message)
        self._faults.append(fault)
        return fault

    def delay(self, operation: str, seconds: float, *, times: int = 1) -> None:
        """Answer the next ``times`` calls of ``operation`` ``seconds`` (real) late, after they
        took effect: a client that times out has lost the answer, not the effect."""
        self._check_op(operation)
        self._faults.append(_Fault(operation, times, delay_s=seconds))

    def grant(self, token: str, *roles: str) -> None:
        """A bearer token that holds only ``roles`` (keys of `ROLES`): a call it lacks the
        permission for answers 403 ``PERMISSION_DENIED``, as Google's IAM does."""
        unknown = [r for r in roles if r not in ROLES]
        if unknown:
            raise ValueError(f"unknown roles {unknown}; one of {sorted(ROLES)}")
        self.tokens.setdefault(token, None)
        self.token_roles[token] = frozenset(roles)

    def count(self, operation: str) -> int:
        return sum(1 for op, _ in self.requests if op == operation)

    def executions_of(self, project: str, region: str, job: str) -> list[SimExecution]:
        prefix = f"projects/{project}/locations/{region}/jobs/{job}/executions/"
        return [e for n, e in self.executions.items() if n.startswith(prefix)]

    def issue_token(self, lifetime_s: float | None = None) -> str:
        token = "ya29.sim-" + "".join(self._rng.choices(string.ascii_letters + string.digits, k=32))
        self.tokens[token] = None if lifetime_s is None else self.clock() + lifetime_s
        return token

    def now_ns(self) -> int:
        return int(self.clock() * 1_000_000_000)

    @staticmethod
    def _check_op(operation: str) -> None:
        if operation != "*" and operation not in OPERATIONS:
            raise ValueError(f"unknown operation {operation!r}; one of {OPERATIONS}")

    # --- serving ---------------------------------------------------------------------------

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> str:
        self._runner = web.AppRunner(self.app)
        await self._runner.setup()
        site = web.TCPSite(self._runner, host, port)
        await site.start()
        sock = site._server.sockets[0]  # type: ignore[union-attr]
        self.url = f"http://{host}:{sock.getsockname()[1]}"
        return self.url

    async def close(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def _dispatch(self, request: web.Request) -> web.StreamResponse:
        path = request.rel_url.raw_path.removeprefix("/v2/")
        for method, pattern, operation in _ROUTES:  # noqa: B007 (used after the loop)
            m = pattern.fullmatch(path)
            if m and request.method == method:
                break
        else:
            return GoogleError(
                404, f"The requested URL /v2/{path} was not found on this server."
            ).response()
        self.requests.append((operation, path))
        try:
            self._authenticate(request)
            arg = m.group(1) if m.groups() else None
            self._authorize(request, PERMISSIONS[operation], arg or "projects/-")
            fault = self._take_fault(operation)
            handler: Callable[..., Awaitable[Any]] = getattr(self, f"_{operation}")
            if fault is not None and fault.status is not None and not fault.apply:
                raise self._fault_error(fault, operation)
            body = await handler(request, arg) if arg is not None else await handler(request)
            if fault is not None and fault.status is not None:
                raise self._fault_error(fault, operation)
            if fault is not None and fault.delay_s:
                await asyncio.sleep(fault.delay_s)
            return web.json_response(body)
        except GoogleError as err:
            return err.response()

    def _authenticate(self, request: web.Request) -> None:
        if not self.require_auth:
            return
        header = request.headers.get("Authorization", "")
        token = header[7:] if header.startswith("Bearer ") else None
        if token is None or token not in self.tokens:
            raise GoogleError(401, UNAUTHENTICATED_MESSAGE)
        expiry = self.tokens[token]
        if expiry is not None and self.clock() >= expiry:
            raise GoogleError(401, UNAUTHENTICATED_MESSAGE)

    def _authorize(self, request: web.Request, permission: str, resource: str) -> None:
        """403 unless the caller's token holds ``permission``. The body is AIP-193's
        (aip-dev/google.aip.dev aip/general/0193.md: an ErrorInfo in ``details``); the message
        and the ErrorInfo's reason, domain and metadata are as Google's IAM denials read in public
        error reports (no spec pins the words)."""
        header = request.headers.get("Authorization", "")
        roles = self.token_roles.get(header.removeprefix("Bearer "))
        if roles is None or any(permission in ROLES[role] for role in roles):
            return
        raise GoogleError(
            403,
            f"Permission '{permission}' denied on resource '{resource}' (or it may not exist).",
            [
                {
                    "@type": "type.googleapis.com/google.rpc.ErrorInfo",
                    "reason": "IAM_PERMISSION_DENIED",
                    "domain": "iam.googleapis.com",
                    "metadata": {"permission": permission, "resource": resource},
                }
            ],
        )

    def _take_fault(self, operation: str) -> _Fault | None:
        for fault in self._faults:
            if fault.times > 0 and fault.operation in (operation, "*"):
                if fault.skip > 0:
                    fault.skip -= 1
                    continue
                fault.times -= 1
                return fault
        return None

    def _fault_error(self, fault: _Fault, operation: str) -> GoogleError:
        status = fault.status or 503
        if fault.message:
            return GoogleError(status, fault.message)
        if status == 429:
            logging = operation == "list_entries"
            service = "logging.googleapis.com" if logging else "run.googleapis.com"
            metric = (
                "Read requests"
                if logging or operation.startswith(("get", "list", "wait"))
                else "Write requests"
            )
            return GoogleError(
                429,
                f"Quota exceeded for quota metric '{metric}' and limit '{metric} per"
                f" minute' of service '{service}'.",
                [
                    {
                        "@type": "type.googleapis.com/google.rpc.ErrorInfo",
                        "reason": "RATE_LIMIT_EXCEEDED",
                        "domain": "googleapis.com",
                        "metadata": {"service": service},
                    }
                ],
            )
        if status == 503:
            return GoogleError(503, "The service is currently unavailable.")
        return GoogleError(status, f"Simulated {STATUS_NAMES.get(status, 'error')} ({status}).")

    @staticmethod
    async def _json(request: web.Request, allowed: Mapping[str, set[str]]) -> dict[str, Any]:
        raw = await request.read()
        try:
            body = json.loads(raw) if raw.strip() else {}
        except ValueError as exc:
            raise GoogleError(400, f"Invalid JSON payload received. {exc}") from None
        if not isinstance(body, dict):
            raise GoogleError(400, "Invalid JSON payload received. Expected an object.")
        known_fields(body, allowed, "")
        return body

    # --- Cloud Run Admin v2 ------------------------------------------------------------------

    def _job(self, name: str) -> SimJob:
        job = self.jobs.get(name)
        if job is None:
            parts = name.split("/")
            raise GoogleError(
                404,
                f"Resource '{parts[-1]}' of kind 'JOB' in region '{parts[3]}'"
                f" in project '{parts[1]}' does not exist.",
            )
        return job

    def _execution(self, name: str) -> SimExecution:
        ex = self.executions.get(name)
        if ex is None:
            raise GoogleError(
                404,
                f"Resource '{name.rsplit('/', 1)[-1]}' of kind 'EXECUTION' in"
                f" region '{name.split('/')[3]}' in project"
                f" '{name.split('/')[1]}' does not exist.",
            )
        return ex

    async def _run(self, request: web.Request, job_name: str) -> dict[str, Any]:
        body = await self._json(request, _RUN_KEYS)
        overrides = body.get("overrides") or {}
        if overrides:  # the override needs its own permission (run.jobs.run REST reference)
            self._authorize(request, "run.jobs.runWithOverrides", job_name)
        job = self._job(job_name)
        if self.run_operation_errors:
            code, message = self.run_operation_errors.pop(0)
            op = f"projects/{job.project}/locations/{job.region}/operations/{uuid.uuid4()}"
            return {"name": op, "done": True, "error": {"code": code, "message": message}}
        containers = overrides.get("containerOverrides") or []
        if len(containers) > 1:
            raise GoogleError(400, "Only one container override is supported by this simulator.")
        for c in containers:
            if c.get("name") and c["name"] != job.container:
                raise GoogleError(
                    400,
                    f"Container override name '{c['name']}' does not match any"
                    f" container of job '{job.name}'.",
                )
        count = overrides.get("taskCount")
        if count is not None and (not isinstance(count, int) or count < 1):
            raise GoogleError(400, "overrides.task_count must be greater than 0.")
        timeout = overrides.get("timeout")
        if timeout is not None and not re.fullmatch(r"\d+(\.\d{1,9})?s", str(timeout)):
            raise GoogleError(
                400,
                "Invalid value at 'overrides.timeout' (type.googleapis.com/"
                "google.protobuf.Duration), Field 'timeout', Illegal duration"
                " format; duration must end with 's'",
            )
        short = f"{job.name[:57]}-" + "".join(
            self._rng.choices(string.ascii_lowercase + string.digits, k=5)
        )
        now = self.now_ns()  # the answer shows the execution as it was created
        ex = SimExecution(
            job,
            short_id=short,
            now_ns=now,
            scale=self.time_scale,
            overrides=overrides,
            rng=self._rng,
        )
        if body.get("validateOnly"):
            return {
                "name": self._new_op(job, ex, store=False),
                "done": True,
                "metadata": ex.to_json(now, typed=True),
            }
        self.executions[ex.name] = ex
        return self._op_json(self._new_op(job, ex), now)

    def _new_op(self, job: SimJob, ex: SimExecution, *, store: bool = True) -> str:
        name = f"projects/{job.project}/locations/{job.region}/operations/{uuid.uuid4()}"
        if store:
            self.operations[name] = _Op(name, ex.name)
        return name

    def _op_json(self, name: str, now: int | None = None) -> dict[str, Any]:
        """A finished Operation has ``error`` OR ``response`` (the ``result`` oneof of
        googleapis google/longrunning/operations.proto). A failed execution's run operation ends
        with ``error``, a succeeded or cancelled one's with ``response`` (what Airflow's Cloud Run
        trigger had to learn: apache/airflow#38028 and #67050). The error's code is not sourced:
        the simulator uses FAILED_PRECONDITION (9) with the Completed condition's message."""
        op = self.operations[name]
        ex = self.executions[op.execution]
        now = self.now_ns() if now is None else now
        body: dict[str, Any] = {"name": name, "metadata": ex.to_json(now, typed=True)}
        if ex.done(now):
            body["done"] = True
            completed = ex.to_json(now)["conditions"][-1]
            if completed["state"] == "CONDITION_FAILED" and ex.cut_ns() is None:
                body["error"] = {"code": 9, "message": completed.get("message", "failed")}
            else:
                body["response"] = ex.to_json(now, typed=True)
        return body

    async def _get_execution(self, request: web.Request, name: str) -> dict[str, Any]:
        return self._execution(name).to_json(self.now_ns())

    async def _list_executions(self, request: web.Request, parent: str) -> dict[str, Any]:
        self._job(parent)
        found = sorted(
            self.executions_of(*_job_parts(parent)),
            key=lambda e: (e.created_ns, e.name),
            reverse=self.list_order == "newest_first",
        )
        if self.list_order == "shuffled":  # the same order for every page of one listing
            random.Random(parent).shuffle(found)
        now = self.now_ns()
        page, token = paged(request, found, parent)  # only the page's executions are rendered
        listed = [e.to_json(now) for e in page]
        return {"executions": listed, "nextPageToken": token} if token else {"executions": listed}

    async def _cancel(self, request: web.Request, name: str) -> dict[str, Any]:
        await self._json(request, {"": {"etag", "validateOnly"}})
        ex = self._execution(name)
        now = self.now_ns()
        if ex.done(now) and self.cancel_finished_status is not None:
            status = self.cancel_finished_status
            raise GoogleError(
                status,
                f"Execution {ex.short_id} has already completed.",
                name="FAILED_PRECONDITION" if status == 400 else None,
            )
        if ex.cancelled_ns is None and not ex.done(now):
            ex.cancelled_ns = now
        return self._op_json(self._new_op(ex.job, ex))

    async def _list_tasks(self, request: web.Request, parent: str) -> dict[str, Any]:
        ex = self._execution(parent)
        now = self.now_ns()
        page, token = paged(request, [ex.task_json(t, now) for t in ex.tasks], parent)
        return {"tasks": page, "nextPageToken": token} if token else {"tasks": page}

    async def _get_task(self, request: web.Request, name: str) -> dict[str, Any]:
        ex = self._execution(name.rsplit("/tasks/", 1)[0])
        for task in ex.tasks:
            body = ex.task_json(task, self.now_ns())
            if body["name"] == name:
                return body
        raise GoogleError(
            404, f"Resource '{name.rsplit('/', 1)[-1]}' of kind 'TASK' does not exist."
        )

    async def _get_operation(self, request: web.Request, name: str) -> dict[str, Any]:
        if name not in self.operations:
            raise GoogleError(404, f"Operation {name} not found.")
        return self._op_json(name)

    async def _wait_operation(self, request: web.Request, name: str) -> dict[str, Any]:
        body = await self._json(request, {"": {"timeout"}})
        if name not in self.operations:
            raise GoogleError(404, f"Operation {name} not found.")
        m = re.fullmatch(r"(\d+(?:\.\d+)?)s", str(body.get("timeout") or "30s"))
        if not m:
            raise GoogleError(400, "Illegal duration format; duration must end with 's'")
        deadline = asyncio.get_running_loop().time() + min(float(m.group(1)) * self.time_scale, 60)
        ex = self.executions[self.operations[name].execution]
        while not ex.done(self.now_ns()) and asyncio.get_running_loop().time() < deadline:
            await asyncio.sleep(0.01)
        return self._op_json(name)

    # --- Cloud Logging v2 --------------------------------------------------------------------

    async def _list_entries(self, request: web.Request) -> dict[str, Any]:
        body = await self._json(request, _LIST_KEYS)
        resources = list(body.get("resourceNames") or []) + [
            f"projects/{p}" for p in body.get("projectIds") or []
        ]
        if not resources:
            raise GoogleError(400, "resource_names: at least one resource name is required.")
        projects = set()
        for res in resources:
            m = re.fullmatch(r"projects/([^/]+)", str(res))
            if not m:
                raise GoogleError(400, f"Invalid resource name: {res}")
            projects.add(m.group(1))
        order = body.get("orderBy") or "timestamp asc"
        if order not in ("timestamp asc", "timestamp desc"):
            raise GoogleError(400, f"Invalid order_by: {order}")
        size = body.get("pageSize", 50)
        if not isinstance(size, int) or size < 0:
            raise GoogleError(400, "page_size must not be negative.")
        size = min(size or 50, 1000)
        try:
            pred = compile_filter(str(body.get("filter") or ""))
        except FilterError as exc:
            raise GoogleError(400, f"Invalid filter: {exc}") from None
        for project in projects:
            self._spend_read(project)
        now = self.now_ns()
        entries = [
            e
            for ex in self.executions.values()
            if ex.job.project in projects
            for e in ex.visible_entries(now)
            if pred(e)
        ]

        def key(e: Mapping[str, Any]) -> tuple[int, str, str]:
            # by timestamp; "the insert_id is also used to order log entries that have the same
            # log_name and timestamp values" (LogEntry.insertId, logging-entries-list.md): ties
            # across logs have no documented order, so the simulator groups them by logName
            # rather than sorting every tie by insertId
            return instant_ns(e["timestamp"]), str(e["logName"]), str(e["insertId"])

        entries.sort(key=key, reverse=order == "timestamp desc")
        digest = hashlib.sha256(
            json.dumps([body.get("filter"), order, sorted(resources)]).encode()
        ).hexdigest()[:16]
        after = decode_token(body.get("pageToken"), digest)
        if after is not None:
            desc = order == "timestamp desc"
            entries = [e for e in entries if (key(e) < after if desc else key(e) > after)]
        if entries and self.empty_log_pages > 0:
            self.empty_log_pages -= 1
            token = body.get("pageToken") or encode_token(None, digest)
            return {"nextPageToken": token}
        page = entries[:size]
        result: dict[str, Any] = {"entries": page} if page else {}
        if len(entries) > size:
            result["nextPageToken"] = encode_token(key(page[-1]), digest)
        return result

    def reads_last_minute(self, project: str) -> int:
        """``entries:list`` reads of ``project`` in the last (real) minute, as the quota counts."""
        reads = self._reads.setdefault(project, deque())
        now = time.monotonic()
        while reads and reads[0] <= now - 60:
            reads.popleft()
        return len(reads)

    def _spend_read(self, project: str) -> None:
        used = self.reads_last_minute(project)
        reads = self._reads[project]
        now = time.monotonic()
        if self.logging_quota_per_minute is None:
            reads.append(now)
            return
        if used >= self.logging_quota_per_minute:
            raise GoogleError(
                429,
                f"Quota exceeded for quota metric 'Read requests' and limit"
                f" 'Read requests per minute' of service"
                f" 'logging.googleapis.com' for consumer 'project:{project}'.",
            )
        reads.append(now)

    # --- OAuth2 token endpoint (what a service-account key's token_uri points at) -------------

    async def _token(self, request: web.Request) -> web.Response:
        self.requests.append(("token", "/token"))
        fault = self._take_fault("token")
        if fault is not None and fault.status is not None:
            return web.json_response({"error": "temporarily_unavailable"}, status=fault.status)
        form = await request.post()
        if form.get("grant_type") != "urn:ietf:params:oauth:grant-type:jwt-bearer":
            return oauth_error("unsupported_grant_type", "Only the JWT bearer grant is simulated.")
        assertion = str(form.get("assertion") or "")
        try:
            claims = jwt_claims(assertion)
        except (ValueError, TypeError):
            return oauth_error("invalid_grant", "Invalid JWT assertion.")
        # google-auth always signs for Google's endpoint, whatever the key file's token_uri says
        if claims.get("aud") not in (GOOGLE_TOKEN_URL, str(request.url.with_query(None))):
            return oauth_error("invalid_grant", "Invalid JWT: audience does not match token URL.")
        if "cloud-platform" not in str(claims.get("scope", "")):
            return oauth_error("invalid_scope", "The cloud-platform scope is required.")
        if self.trusted_keys:
            from google.auth import exceptions as gexc
            from google.auth import jwt

            try:
                jwt.decode(
                    assertion,
                    certs=self.trusted_keys,  # type: ignore[no-untyped-call]
                    audience=claims["aud"],
                )
            except (gexc.GoogleAuthError, ValueError):
                return oauth_error("invalid_grant", "Invalid JWT Signature.")
        token = self.issue_token(self.token_lifetime_s)
        return web.json_response(
            {
                "access_token": token,
                "expires_in": int(self.token_lifetime_s),
                "token_type": "Bearer",
            }
        )


def _job_parts(parent: str) -> tuple[str, str, str]:
    parts = parent.split("/")
    return parts[1], parts[3], parts[5]
