"""The simulator's HTTP API: Nomad's endpoints over `Cluster`, with ACLs, blocking queries,
streams and fault injection.

Wire rules followed (tests/samples/nomad/common.md): every error is ``text/plain`` with Nomad's
message; reads answer ``X-Nomad-Index`` and block on ``?index=&wait=``; the event stream is
NDJSON starting with ``{}`` and resuming per Nomad's ``StartAtClosest`` (event-stream.md);
logs are back-to-back JSON frames or raw bytes with ``plain=true`` (client-fs-logs.md).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import copy
import json
import random
import re
import ssl
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from egw.testing.nomad.cluster import Cluster
from egw.testing.nomad.logs import DELETE_EVENT, TaskLog
from egw.testing.nomad.script import Script, SimError, new_uuid, public

FRAME_SIZE = 64 * 1024  # streamFrameSize (client-fs-logs.md)
_DURATION = re.compile(r"(\d+(?:\.\d+)?)(ns|us|µs|ms|s|m|h)")
_UNIT_S = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}
_READ_JOB_TOPICS = frozenset({"Job", "Allocation", "Evaluation", "Deployment", "Service"})


@dataclass
class Token:
    """An ACL token: management, or capabilities per namespace (``"*"``: every namespace)."""

    secret: str
    name: str = "token"
    management: bool = False
    namespaces: dict[str, set[str]] = field(default_factory=dict)
    accessor: str = field(default_factory=new_uuid)

    def allows(self, namespace: str, capability: str) -> bool:
        if self.management:
            return True
        caps = self.namespaces.get(namespace, set()) | self.namespaces.get("*", set())
        return capability in caps


@dataclass
class Fault:
    pattern: re.Pattern[str]
    method: str | None = None
    status: int | None = 500
    body: str = "rpc error: simulated failure"
    times: int = 1
    delay_s: float = 0.0
    #: do the work, then answer the error (a lost answer)
    after_commit: bool = False
    #: hold the request until this is set (see `NomadSimulator.hold`)
    gate: asyncio.Event | None = None


@dataclass(frozen=True)
class Seen:
    method: str
    path: str
    query: tuple[tuple[str, str], ...]
    token: str | None


#: the log streams of a task
KINDS = ("stderr", "stdout")


def _error(status: int, text: str) -> web.Response:
    return web.Response(status=status, body=text.encode(), headers={"Content-Type": "text/plain"})


def _json(body: Any, index: int | None = None) -> web.Response:
    headers = {"Content-Type": "application/json"}
    if index is not None:
        headers.update(
            {
                "X-Nomad-Index": str(max(1, index)),
                "X-Nomad-KnownLeader": "true",
                "X-Nomad-LastContact": "0",
            }
        )
    return web.Response(body=json.dumps(body).encode(), headers=headers)


#: the fields of an ``AllocListStub`` (nomad/structs/structs.go ``Allocation.Stub``) that the
#: simulator keeps; the full allocation adds ``Job``, ``Resources``, ``Metrics``...
_STUB_FIELDS = (
    "ID",
    "EvalID",
    "Name",
    "Namespace",
    "NodeID",
    "NodeName",
    "JobID",
    "JobType",
    "JobVersion",
    "TaskGroup",
    "DesiredStatus",
    "DesiredDescription",
    "ClientStatus",
    "ClientDescription",
    "DesiredTransition",
    "TaskStates",
    "DeploymentStatus",
    "FollowupEvalID",
    "NextAllocation",
    "PreviousAllocation",
    "RescheduleTracker",
    "PreemptedAllocations",
    "PreemptedByAllocation",
    "CreateIndex",
    "ModifyIndex",
    "CreateTime",
    "ModifyTime",
)


def alloc_stub(alloc: dict[str, Any]) -> dict[str, Any]:
    """An allocation as lists show it (an ``AllocListStub``)."""
    full = public(alloc)
    return {k: full[k] for k in _STUB_FIELDS if k in full}


def parse_duration(text: str) -> float:
    """A Go duration ("30s", "5m", "1500ms") in seconds; ValueError if it is not one."""
    pos, total = 0, 0.0
    for m in _DURATION.finditer(text):
        if m.start() != pos:
            raise ValueError(text)
        total += float(m.group(1)) * _UNIT_S[m.group(2)]
        pos = m.end()
    if pos != len(text) or not text:
        raise ValueError(text)
    return total


def parse_version(text: str) -> tuple[int, int, int]:
    """``"1.11.2"`` (a ``v`` prefix and a ``-suffix`` allowed) as a comparable tuple."""
    core = text.removeprefix("v").split("-", 1)[0].split("+", 1)[0]
    parts = core.split(".")
    if len(parts) != 3 or not all(p.isdigit() for p in parts):
        raise ValueError(f"not a Nomad version: {text!r}")
    return int(parts[0]), int(parts[1]), int(parts[2])


def _bool(value: str | None, name: str) -> bool:
    if value is None or value == "":
        return False
    if value in ("1", "t", "T", "TRUE", "true", "True"):
        return True
    if value in ("0", "f", "F", "FALSE", "false", "False"):
        return False
    raise SimError(400, f"Failed to parse value of {name!r} ({value!r}) as a boolean")


class NomadSimulator:
    """See the package docstring (`egw.testing.nomad`) for the scripting API."""

    def __init__(
        self,
        *,
        time_scale: float = 1.0,
        acl: bool = False,
        buffer_size: int = 100,
        heartbeat_s: float = 30.0,
        log_heartbeat_s: float = 1.0,
        version: str = "2.0.5",
    ) -> None:
        #: the Nomad version modelled, where behaviour changed between v1.6.0 and v2.0.5
        self.version = parse_version(version)
        self.cluster = Cluster(time_scale=time_scale, buffer_size=buffer_size)
        self.cluster.max_run_duration = self.version >= (2, 0, 3)
        self.acl = acl
        self.tokens: dict[str, Token] = {}
        self.heartbeat_s = heartbeat_s
        self.log_heartbeat_s = log_heartbeat_s
        self.faults: list[Fault] = []
        #: refuse every event-stream subscription as an ACL denial, the way `version` does
        #: (403, or 200 then a close) while other reads work: a test knob, not a Nomad state
        self.event_stream_denied = False
        self.requests: list[Seen] = []
        self._drops: dict[str, set[asyncio.Event]] = {"events": set(), "logs": set()}
        self._closing = asyncio.Event()
        self._runner: web.AppRunner | None = None
        self._site: web.TCPSite | None = None
        self._listen: tuple[str, int, ssl.SSLContext | None] | None = None
        #: see `go_down`
        self.down = False
        #: the base URL once `start` has run
        self.url: str | None = None
        self.app = web.Application(middlewares=[self._middleware])
        self.app.on_shutdown.append(self._on_shutdown)
        r = self.app.router
        # every route and method of Nomad's HTTP API that a client library uses to run batch
        # work (hashicorp/nomad command/agent/http.go registerHandlers, and the handlers'
        # method switches: job_endpoint.go JobsRequest/jobCRUD take PUT and POST alike);
        # ROUTES lists them, and any other method on these paths is Nomad's 405
        for method, path, handler in (
            ("GET", "/v1/jobs", self._list_jobs),
            ("PUT", "/v1/jobs", self._register),
            ("POST", "/v1/jobs", self._register),
            ("GET", "/v1/job/{job_id}", self._read_job),
            ("PUT", "/v1/job/{job_id}", self._register),
            ("POST", "/v1/job/{job_id}", self._register),
            ("DELETE", "/v1/job/{job_id}", self._stop_job),
            ("GET", "/v1/job/{job_id}/allocations", self._job_allocs),
            ("GET", "/v1/job/{job_id}/evaluations", self._job_evals),
            ("GET", "/v1/job/{job_id}/summary", self._job_summary),
            ("GET", "/v1/allocations", self._list_allocs),
            ("GET", "/v1/allocation/{alloc_id}", self._read_alloc),
            ("GET", "/v1/evaluations", self._list_evals),
            ("GET", "/v1/evaluation/{eval_id}", self._read_eval),
            ("GET", "/v1/evaluation/{eval_id}/allocations", self._eval_allocs),
            ("GET", "/v1/client/fs/logs/{alloc_id}", self._logs),
            ("GET", "/v1/client/fs/ls/{alloc_id}", self._fs_ls),
            ("GET", "/v1/event/stream", self._event_stream),
            ("GET", "/v1/acl/token/self", self._token_self),
        ):
            r.add_route(method, path, handler)

    @property
    def stream_answers_before_auth(self) -> bool:
        """Whether ``/v1/event/stream`` answers 200 before authenticating (v1.11.2+, 2.x)."""
        return self.version >= (2, 0, 0) or (1, 11, 2) <= self.version < (1, 12, 0)

    # --- lifecycle -------------------------------------------------------------------------

    async def start(
        self, host: str = "127.0.0.1", port: int = 0, ssl_context: ssl.SSLContext | None = None
    ) -> str:
        """Serve on ``host:port`` (0: any free port); returns the base URL."""
        self._runner = web.AppRunner(self.app, shutdown_timeout=1.0)
        await self._runner.setup()
        site = web.TCPSite(self._runner, host, port, ssl_context=ssl_context)
        await site.start()
        port = self._runner.addresses[0][1]
        self._site, self._listen = site, (host, port, ssl_context)
        scheme = "https" if ssl_context else "http"
        self.url = f"{scheme}://{host}:{port}"
        return self.url

    async def close(self) -> None:
        await self._on_shutdown(self.app)
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
        await self.cluster.close()

    async def _on_shutdown(self, app: web.Application) -> None:
        self._closing.set()
        await self.cluster.notify()

    # --- scripting and faults ------------------------------------------------------------------

    def script(self, job_id: str, **fields: Any) -> Script:
        """Script what the job with this ID does (fields of `Script`)."""
        script = Script(**fields)
        self.cluster.scripts[job_id] = script
        return script

    def add_token(
        self,
        secret: str,
        *,
        management: bool = False,
        namespaces: dict[str, set[str]] | None = None,
        name: str = "token",
    ) -> Token:
        token = Token(
            secret=secret, name=name, management=management, namespaces=dict(namespaces or {})
        )
        self.tokens[secret] = token
        return token

    def fail(
        self,
        path: str,
        *,
        method: str | None = None,
        status: int = 500,
        body: str = "rpc error: simulated failure",
        times: int = 1,
        after_commit: bool = False,
        delay_s: float = 0.0,
    ) -> Fault:
        """Answer the next ``times`` requests whose path matches the regex ``path`` with
        ``status`` and a plain-text ``body`` (``after_commit``: do the work first)."""
        fault = Fault(re.compile(path), method, status, body, times, delay_s, after_commit)
        self.faults.append(fault)
        return fault

    def slow(
        self, path: str, delay_s: float, *, method: str | None = None, times: int = 1
    ) -> Fault:
        """Delay the next ``times`` matching requests by ``delay_s`` wall-clock seconds."""
        fault = Fault(re.compile(path), method, None, "", times, delay_s)
        self.faults.append(fault)
        return fault

    def hold(self, path: str, *, method: str | None = None, times: int = 1) -> asyncio.Event:
        """Hold the next ``times`` matching requests until the returned event is set (then
        they are served as usual): a deterministic "slow answer"."""
        gate = asyncio.Event()
        self.faults.append(Fault(re.compile(path), method, None, "", times, gate=gate))
        return gate

    async def go_down(self) -> None:
        """The agent stops: a new connection is refused (nothing listens on the port), a
        request on a connection already open is cut without an answer, open streams end.
        Not Nomad's behaviour but the network's; `come_back` listens again on the same port."""
        self.down = True
        if self._site is not None:
            await self._site.stop()
            self._site = None
        self._drop("events")
        self._drop("logs")

    async def come_back(self) -> None:
        assert self._runner is not None and self._listen is not None
        host, port, ssl_context = self._listen
        self._site = web.TCPSite(self._runner, host, port, ssl_context=ssl_context)
        await self._site.start()
        self.down = False

    def drop_event_streams(self) -> int:
        """End every open event stream at once (the connection is cut); returns how many."""
        return self._drop("events")

    def drop_log_streams(self) -> int:
        return self._drop("logs")

    def age_out_events(self, keep: int = 0) -> None:
        """Drop buffered events: a resume from an older index starts at the oldest kept one."""
        self.cluster.age_out(keep)

    def garbage_collect(self, job_id: str, namespace: str = "default") -> None:
        """The job, its evaluations and allocations are garbage-collected (see
        `Cluster.garbage_collect`): reads answer 404, a stop answers 200 with no evaluation."""
        self.cluster.garbage_collect(namespace, job_id)

    def _drop(self, kind: str) -> int:
        drops = list(self._drops[kind])
        for ev in drops:
            ev.set()
        self.cluster.spawn(self.cluster.notify())
        return len(drops)

    def count(self, method: str, path: str) -> int:
        """How many requests matched ``method`` and the path regex ``path``."""
        rx = re.compile(path)
        return sum(1 for s in self.requests if s.method == method and rx.search(s.path))

    # --- middleware: request log, faults, plain-text errors ------------------------------------

    @web.middleware
    async def _middleware(
        self, request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
    ) -> web.StreamResponse:
        if self.down:  # a connection opened before `go_down`: cut, no answer, not counted
            assert request.transport is not None
            request.transport.close()
            return web.Response(status=500)
        self.requests.append(
            Seen(request.method, request.path, tuple(request.query.items()), self._secret(request))
        )
        fault = next(
            (
                f
                for f in self.faults
                if f.times > 0
                and f.pattern.search(request.path)
                and f.method in (None, request.method)
            ),
            None,
        )
        if fault is not None:
            fault.times -= 1
            if fault.delay_s:
                await asyncio.sleep(fault.delay_s)
            if fault.gate is not None:
                await fault.gate.wait()
            if fault.status is not None and not fault.after_commit:
                return _error(fault.status, fault.body)
        try:
            resp = await handler(request)
        except SimError as exc:
            return _error(exc.status, exc.text)
        except web.HTTPMethodNotAllowed:
            # command/agent/http.go: CodedError(405, ErrInvalidMethod)
            return _error(405, "Invalid method")
        if fault is not None and fault.status is not None and fault.after_commit:
            return _error(fault.status, fault.body)
        return resp

    @staticmethod
    def _secret(request: web.Request) -> str | None:
        # command/agent/http.go parseToken: X-Nomad-Token first, then "Authorization: Bearer"
        token = request.headers.get("X-Nomad-Token")
        if token:
            return token
        auth = request.headers.get("Authorization", "")
        scheme, _, value = auth.partition(" ")
        return value.strip() if scheme.lower() == "bearer" and value.strip() else None

    def _token(self, request: web.Request) -> Token | None:
        if not self.acl:
            return None
        secret = self._secret(request)
        if secret is None:
            return Token(secret="", name="anonymous")
        token = self.tokens.get(secret)
        if token is None:
            raise SimError(403, "ACL token not found")
        return token

    def _require(self, request: web.Request, namespace: str, *capabilities: str) -> None:
        token = self._token(request)
        if token is not None and not any(token.allows(namespace, c) for c in capabilities):
            raise SimError(403, "Permission denied")

    @staticmethod
    def _ns(request: web.Request) -> str:
        return request.query.get("namespace") or "default"

    # --- blocking queries (common.md "Blocking Queries") -----------------------------------------

    async def _blocking(
        self, request: web.Request, compute: Callable[[], tuple[int, Any]]
    ) -> web.Response:
        try:
            index = int(request.query.get("index", "0") or 0)
            if index < 0:
                raise ValueError
        except ValueError:
            raise SimError(400, "Invalid index") from None
        try:
            wait = parse_duration(request.query["wait"]) if "wait" in request.query else 300.0
        except ValueError:
            raise SimError(400, "Invalid wait time") from None
        wait = min(wait, 600.0)
        current, body = compute()
        if index and current <= index:

            def moved() -> bool:
                if self._closing.is_set():
                    return True
                try:
                    return compute()[0] > index
                except SimError:
                    return True

            timeout = (wait + random.uniform(0, wait / 16)) * self.cluster.time_scale
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(timeout):
                    async with self.cluster.changed:
                        await self.cluster.changed.wait_for(moved)
            current, body = compute()
        return _json(body, current)

    # --- jobs ----------------------------------------------------------------------------------

    async def _register(self, request: web.Request) -> web.Response:
        try:
            body = await request.json()
        except ValueError:
            raise SimError(400, "Failed to decode request body: invalid JSON") from None
        if not isinstance(body, dict):
            raise SimError(400, "Failed to decode request body: not an object")
        job = body.get("Job")
        path_id = request.match_info.get("job_id")
        if path_id is not None and isinstance(job, dict):
            # command/agent/job_endpoint.go jobUpdate: the path names the job
            if job.get("ID") is None:
                raise SimError(400, "Job ID hasn't been provided")
            if job["ID"] != path_id:
                raise SimError(400, "Job ID does not match name")
        ns = (job.get("Namespace") if isinstance(job, dict) else None) or self._ns(request)
        self._require(request, ns, "submit-job")
        return _json(await self.cluster.register(ns, body))

    async def _read_job(self, request: web.Request) -> web.Response:
        ns, job_id = self._ns(request), request.match_info["job_id"]
        self._require(request, ns, "read-job")

        def compute() -> tuple[int, Any]:
            job = self.cluster.job(ns, job_id)
            return job["ModifyIndex"], public(job)

        return await self._blocking(request, compute)

    async def _stop_job(self, request: web.Request) -> web.Response:
        ns, job_id = self._ns(request), request.match_info["job_id"]
        self._require(request, ns, "submit-job")
        purge = _bool(request.query.get("purge"), "purge")
        return _json(await self.cluster.deregister(ns, job_id, purge=purge))

    async def _job_allocs(self, request: web.Request) -> web.Response:
        ns, job_id = self._ns(request), request.match_info["job_id"]
        self._require(request, ns, "read-job")

        # hashicorp/nomad nomad/job_endpoint.go Allocations: the answer is AllocListStubs and
        # its index is the allocations table's (``state.Index("allocs")``), so a blocking
        # query wakes for any allocation change, not only this job's
        def compute() -> tuple[int, Any]:
            allocs = self.cluster.job_allocs(ns, job_id)
            return self.cluster.allocs_index(), [alloc_stub(a) for a in allocs]

        return await self._blocking(request, compute)

    def _prefixed(
        self, request: web.Request, table: dict[Any, dict[str, Any]]
    ) -> list[dict[str, Any]]:
        """A list's rows this token may read, filtered on ``namespace`` (``*``: all) and an
        ID ``prefix``, in ID order (nomad/state: the tables' ``id`` indexes)."""
        ns, prefix = self._ns(request), request.query.get("prefix", "")
        token = self._token(request)
        return sorted(
            (
                row
                for row in table.values()
                if (ns == "*" or row["Namespace"] == ns)
                and str(row["ID"]).startswith(prefix)
                and (token is None or token.allows(row["Namespace"], "read-job"))
            ),
            key=lambda row: (row["Namespace"], row["ID"]),
        )

    def _summary(self, job: dict[str, Any]) -> dict[str, Any]:
        """nomad/structs JobSummary: allocations counted per group by client status."""
        column = {
            "pending": "Starting",
            "running": "Running",
            "complete": "Complete",
            "failed": "Failed",
            "lost": "Lost",
            "unknown": "Unknown",
        }
        groups = {
            g["Name"]: dict.fromkeys(
                ("Queued", "Complete", "Failed", "Running", "Starting", "Lost", "Unknown"), 0
            )
            for g in job["TaskGroups"]
        }
        for alloc in self.cluster.job_allocs(job["Namespace"], job["ID"]):
            group = groups.get(alloc["TaskGroup"])
            if group is not None:
                group[column.get(alloc["ClientStatus"], "Unknown")] += 1
        return {
            "JobID": job["ID"],
            "Namespace": job["Namespace"],
            "Summary": groups,
            "Children": {"Pending": 0, "Running": 0, "Dead": 0},
            "CreateIndex": job["CreateIndex"],
            "ModifyIndex": max(job["ModifyIndex"], self.cluster.allocs_index()),
        }

    async def _list_jobs(self, request: web.Request) -> web.Response:
        """``GET /v1/jobs``: JobListStubs (nomad/structs ``Job.Stub``), ``Meta`` only with
        ``meta=true`` (command/agent/job_endpoint.go jobListRequest)."""
        meta = _bool(request.query.get("meta"), "meta")
        fields = (
            "ID", "ParentID", "Name", "Namespace", "Datacenters", "NodePool", "Multiregion",
            "Type", "Priority", "Periodic", "ParameterizedJob", "Stop", "Status",
            "StatusDescription", "CreateIndex", "ModifyIndex", "JobModifyIndex", "SubmitTime",
        )  # fmt: skip

        def compute() -> tuple[int, Any]:
            stubs = []
            for job in self._prefixed(request, self.cluster.jobs):
                stub = {k: copy.deepcopy(job.get(k)) for k in fields}
                stub["JobSummary"] = self._summary(job)
                if meta:
                    stub["Meta"] = copy.deepcopy(job.get("Meta"))
                stubs.append(stub)
            return self.cluster.table_index.get("jobs", 1), stubs

        return await self._blocking(request, compute)

    async def _job_summary(self, request: web.Request) -> web.Response:
        ns, job_id = self._ns(request), request.match_info["job_id"]
        self._require(request, ns, "read-job")

        def compute() -> tuple[int, Any]:
            summary = self._summary(self.cluster.job(ns, job_id))
            return summary["ModifyIndex"], summary

        return await self._blocking(request, compute)

    async def _job_evals(self, request: web.Request) -> web.Response:
        """``GET /v1/job/:id/evaluations``: the job's evaluations, ``[]`` (not a 404) for a
        job that does not exist (nomad/job_endpoint.go ``Evaluations``: EvalsByJob)."""
        ns, job_id = self._ns(request), request.match_info["job_id"]
        self._require(request, ns, "read-job")

        def compute() -> tuple[int, Any]:
            evals = [
                public(e)
                for e in self.cluster.evals.values()
                if e["Namespace"] == ns and e["JobID"] == job_id
            ]
            evals.sort(key=lambda e: e["CreateIndex"])
            return self.cluster.table_index.get("evals", 1), evals

        return await self._blocking(request, compute)

    async def _list_evals(self, request: web.Request) -> web.Response:
        def compute() -> tuple[int, Any]:
            evals = [public(e) for e in self._prefixed(request, self.cluster.evals)]
            return self.cluster.table_index.get("evals", 1), evals

        return await self._blocking(request, compute)

    async def _list_allocs(self, request: web.Request) -> web.Response:
        def compute() -> tuple[int, Any]:
            stubs = [alloc_stub(a) for a in self._prefixed(request, self.cluster.allocs)]
            return self.cluster.allocs_index(), stubs

        return await self._blocking(request, compute)

    def _alloc(self, request: web.Request) -> dict[str, Any]:
        alloc = self.cluster.allocs.get(request.match_info["alloc_id"])
        if alloc is None:
            raise SimError(404, "alloc not found")
        self._require(request, alloc["Namespace"], "read-job")
        return alloc

    async def _read_alloc(self, request: web.Request) -> web.Response:
        alloc = self._alloc(request)

        def compute() -> tuple[int, Any]:
            job = self.cluster.jobs.get((alloc["Namespace"], alloc["JobID"]))
            return alloc["ModifyIndex"], {
                **public(alloc),
                **alloc["_resources"],
                "Job": public(job) if job else None,
            }

        return await self._blocking(request, compute)

    def _eval(self, request: web.Request) -> dict[str, Any]:
        ev = self.cluster.evals.get(request.match_info["eval_id"])
        if ev is None:
            raise SimError(404, "eval not found")
        self._require(request, ev["Namespace"], "read-job")
        return ev

    async def _read_eval(self, request: web.Request) -> web.Response:
        ev = self._eval(request)
        return await self._blocking(request, lambda: (ev["ModifyIndex"], public(ev)))

    async def _eval_allocs(self, request: web.Request) -> web.Response:
        ev = self._eval(request)

        def compute() -> tuple[int, Any]:
            allocs = [a for a in self.cluster.allocs.values() if a["EvalID"] == ev["ID"]]
            return max(self.cluster.allocs_index(), ev["ModifyIndex"]), [
                alloc_stub(a) for a in allocs
            ]

        return await self._blocking(request, compute)

    async def _token_self(self, request: web.Request) -> web.Response:
        token = self._token(request)
        if token is None:
            raise SimError(400, "ACL support disabled")
        if not token.secret:
            raise SimError(403, "Permission denied")
        return _json(
            {
                "AccessorID": token.accessor,
                "SecretID": token.secret,
                "Name": token.name,
                "Type": "management" if token.management else "client",
                "Policies": [] if token.management else ["sim"],
                "Global": False,
                "CreateTime": self.cluster.now_rfc3339(),
                "CreateIndex": 1,
                "ModifyIndex": 1,
            }
        )

    # --- streams -------------------------------------------------------------------------------

    def _stream_open(self, request: web.Request, drop: asyncio.Event) -> bool:
        transport = request.transport
        return not (
            drop.is_set() or self._closing.is_set() or transport is None or transport.is_closing()
        )

    async def _event_stream(self, request: web.Request) -> web.StreamResponse:
        q = request.query
        try:
            index = int(q.get("index", "0") or 0)
        except ValueError as exc:
            raise SimError(400, f"Unable to parse index: {exc}") from None
        ns = self._ns(request)
        topics: dict[str, set[str]] = {}
        for raw in q.getall("topic", []):
            topic, _, key = raw.partition(":")
            if not topic or raw.count(":") > 1:
                raise SimError(400, f"Invalid topic query: {raw!r}")
            topics.setdefault(topic, set()).add(key or "*")
        headers = {"Content-Type": "application/json", "Cache-Control": "no-cache"}
        try:
            if self.event_stream_denied:
                raise SimError(403, "Permission denied")
            if not topics or "*" in topics:
                self._require(request, ns, "management")
            for topic in topics:
                need = "read-job" if topic in _READ_JOB_TOPICS else "management"
                self._require(request, ns, need)
        except SimError:
            if not self.stream_answers_before_auth:
                raise
            # v1.11.2 and v2.0.0 on: the agent hijacks the connection and writes 200 before
            # the stream's RPC authenticates (hashicorp/nomad command/agent/event_endpoint.go,
            # as the issue reviewing these versions describes it: the stored copy of that file
            # we could read predates the change); a refused token then gets the connection
            # closed, with no body and no heartbeat
            resp = web.StreamResponse(headers=headers)
            resp.force_close()
            await resp.prepare(request)
            await resp.write_eof()
            return resp
        resp = web.StreamResponse(headers=headers)
        await resp.prepare(request)
        await resp.write(b"{}\n")
        drop = asyncio.Event()
        self._drops["events"].add(drop)
        cluster = self.cluster
        try:
            # nomad/stream/event_buffer.go StartAtClosest: the exact index, else the next one,
            # else (asked beyond the newest) the newest item again
            items = list(cluster.buffer)
            if index and items:
                later = [i for i, (idx, _) in enumerate(items) if idx >= index]
                start = later[0] if later else len(items) - 1
                items = items[start:]
            last = items[0][0] - 1 if items else (index - 1 if index else cluster.index)
            loop = asyncio.get_running_loop()
            beat = self.heartbeat_s * cluster.time_scale
            next_beat = loop.time() + beat
            while self._stream_open(request, drop):
                for idx, events in items:
                    matching = [e for e in events if self._matches(e, ns, topics)]
                    if matching:
                        await resp.write(
                            json.dumps(
                                {"Index": idx, "Events": matching}, separators=(",", ":")
                            ).encode()
                            + b"\n"
                        )
                    last = idx
                behind = cluster.buffer and cluster.buffer[0][0] > last + 1
                if cluster.dropped_upto > last and behind:
                    break  # "event dropped from buffer": this subscriber fell behind

                def news(last: int = last) -> bool:
                    return not self._stream_open(request, drop) or (
                        bool(cluster.buffer) and cluster.buffer[-1][0] > last
                    )

                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout_at(next_beat):
                        async with cluster.changed:
                            await cluster.changed.wait_for(news)
                if loop.time() >= next_beat:
                    # a ticker, not an idle timer: `{}` every 30 s whatever the traffic
                    # (hashicorp/nomad nomad/stream/ndjson.go, heartbeatTick time.NewTicker)
                    await resp.write(b"{}\n")
                    next_beat = loop.time() + beat
                items = [(i, e) for i, e in cluster.buffer if i > last]
            if drop.is_set() and request.transport is not None:
                request.transport.close()  # a cut connection, not a clean end
        except ConnectionResetError:
            pass
        finally:
            self._drops["events"].discard(drop)
        return resp

    @staticmethod
    def _matches(event: dict[str, Any], ns: str, topics: dict[str, set[str]]) -> bool:
        if event["Namespace"] not in ("", ns) and ns != "*":
            return False
        keys = topics.get(event["Topic"], set()) | topics.get("*", set())
        if not topics:
            return True
        return (
            "*" in keys
            or event["Key"] in keys
            or any(k in keys for k in event.get("FilterKeys") or [])
        )

    def _task_log(
        self, request: web.Request, alloc: dict[str, Any], task: str, kind: str
    ) -> TaskLog:
        if task not in alloc["TaskStates"]:
            raise SimError(400, f'unknown task name "{task}"')
        log = self.cluster.logs.get((alloc["ID"], task, kind))
        if log is None:
            raise SimError(404, f'task "{task}" not started yet. No logs available')
        return log

    async def _logs(self, request: web.Request) -> web.StreamResponse:
        """hashicorp/nomad client/fs_endpoint.go ``logsImpl``: find the file an offset lands
        on (`TaskLog.closest`, over the files still on disk), stream it to its end, then the
        next file on disk; frames carry the file's own offset and path."""
        alloc = self.cluster.allocs.get(request.match_info["alloc_id"])
        if alloc is None:
            raise SimError(404, f'Unknown allocation "{request.match_info["alloc_id"]}"')
        self._require(request, alloc["Namespace"], "read-logs", "read-fs")
        q = request.query
        task = q.get("task")
        if not task:
            raise SimError(400, "must provide task name")
        kind = q.get("type")
        if kind not in ("stdout", "stderr"):
            raise SimError(400, "must provide log type (stdout/stderr)")
        origin = q.get("origin") or "start"
        if origin not in ("start", "end"):
            raise SimError(400, "origin must be start or end")
        follow, plain = _bool(q.get("follow"), "follow"), _bool(q.get("plain"), "plain")
        try:
            offset = int(q.get("offset") or 0)
        except ValueError as exc:
            raise SimError(400, f"failed to parse offset field to integer: {exc}") from None
        log = self._task_log(request, alloc, task, kind)
        resp = web.StreamResponse(
            headers={"Content-Type": "text/plain" if plain else "application/json"}
        )
        await resp.prepare(request)
        drop = asyncio.Event()
        self._drops["logs"].add(drop)

        async def send(name: str, pos: int, chunk: bytes, event: str = "") -> None:
            if plain:
                await resp.write(chunk)
                return
            frame: dict[str, Any] = {"Offset": pos}
            if chunk:
                frame["Data"] = base64.b64encode(chunk).decode()
            frame["File"] = name
            if event:
                frame["FileEvent"] = event
            await resp.write(json.dumps(frame, separators=(",", ":")).encode())

        desired: int | None = 0 if origin == "start" else None
        offset = offset if origin == "start" else -offset
        max_index = log.current
        try:
            while self._stream_open(request, drop):
                index, pos = log.closest(desired, offset)
                if not follow and index > max_index:
                    break
                last = not follow and index == max_index
                buf = log.files[index]  # held open: readable after a rotation deletes it
                name = log.path(index)
                while self._stream_open(request, drop):
                    while pos < len(buf):
                        chunk = bytes(buf[pos : pos + FRAME_SIZE])
                        pos += len(chunk)
                        await send(name, pos, chunk)
                    if last:
                        break
                    if log.files.get(index) is not buf:
                        # streamFile: the watched file was deleted at its end
                        await send(name, pos, b"", DELETE_EVENT)
                        break
                    if log.current > index:
                        break  # blockUntilNextLog: a later file exists and this one is read
                    if not follow:
                        break
                    start = pos

                    def moved(start: int = start, index: int = index, buf: bytearray = buf) -> bool:
                        return (
                            not self._stream_open(request, drop)
                            or len(buf) > start
                            or log.current > index
                        )

                    try:
                        async with asyncio.timeout(self.log_heartbeat_s * self.cluster.time_scale):
                            async with self.cluster.changed:
                                await self.cluster.changed.wait_for(moved)
                    except TimeoutError:
                        if not plain:
                            await resp.write(b"{}")
                if last or (not follow and index >= log.current):
                    break
                desired, offset = index + 1, 0
            if drop.is_set() and request.transport is not None:
                request.transport.close()
        except ConnectionResetError:
            pass
        finally:
            self._drops["logs"].discard(drop)
        return resp

    async def _fs_ls(self, request: web.Request) -> web.Response:
        """``GET /v1/client/fs/ls/:alloc?path=`` (hashicorp/nomad command/agent/fs_endpoint.go
        ``DirectoryListRequest``; the entries are cstructs.AllocFileInfo): the simulator's
        allocation directory holds only ``alloc/logs``."""
        alloc = self.cluster.allocs.get(request.match_info["alloc_id"])
        if alloc is None:
            raise SimError(404, f'Unknown allocation "{request.match_info["alloc_id"]}"')
        self._require(request, alloc["Namespace"], "read-fs")
        path = (request.query.get("path") or "/").strip("/")
        # the allocation's own logs, looked up by key (not a scan of every allocation's)
        keys = sorted((alloc["ID"], task, kind) for task in alloc["TaskStates"] for kind in KINDS)
        logs = [
            (log.name(i), len(b))
            for log in (self.cluster.logs.get(key) for key in keys)
            if log is not None
            for i, b in sorted(log.files.items())
        ]
        mtime = self.cluster.now_rfc3339()
        if path in ("", "alloc"):
            names = [("alloc", True, 0)] if path == "" else [("logs", True, 0)]
        elif path == "alloc/logs":
            names = [(n, False, size) for n, size in logs]
        else:
            raise SimError(500, f"open {path}: no such file or directory")
        return _json(
            [
                {
                    "Name": n,
                    "IsDir": is_dir,
                    "Size": size,
                    "FileMode": "drwxrwxrwx" if is_dir else "-rw-r--r--",
                    "ModTime": mtime,
                    "ContentType": "" if is_dir else "text/plain; charset=utf-8",
                }
                for n, is_dir, size in names
            ]
        )
