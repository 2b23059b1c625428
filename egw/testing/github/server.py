"""`GitHubSimulator`: the GitHub Actions REST API and webhooks over real HTTP.

Theory of operation
-------------------
One aiohttp app serves the ten Actions operations of ``rest-actions.openapi.json``
under the API root, plus two unauthenticated download URLs (``/_sim/logs/...``,
``/_sim/archives/...``) that the ``.../logs`` operations redirect to with a 302,
as GitHub redirects to short-lived blob URLs. A middleware does what every API
response shares: fault injection, the bearer token (or an installation token of the
GitHub App, whose ``POST /app/installations/{id}/access_tokens`` is in
`egw.testing.github.apps`), ``X-GitHub-Api-Version``, the primary rate limit and
its ``x-ratelimit-*`` headers (a 304 costs nothing, tests/samples/github/NOTES.md,
"Rate limits"). Runs live in memory and play their scripts on the
simulated clock (`egw.testing.github.runs`); their webhooks go out through the
`Deliverer` (`egw.testing.github.hooks`).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Coroutine, Sequence
from typing import Any

from aiohttp import web

from egw.testing.github.apps import SimApp
from egw.testing.github.handlers import VERSIONS, ApiHandlers
from egw.testing.github.hooks import Deliverer, Rule, SentDelivery
from egw.testing.github.rest import Fault, error
from egw.testing.github.runs import (
    ACTOR,
    RunScript,
    SimClock,
    SimJob,
    SimRun,
    default_jobs,
    drive,
)
from egw.testing.github.shapes import (
    SimRepo,
    SimWorkflow,
    deployment,
    iso,
    repository_full,
    user,
    workflow,
)

SECONDARY = (
    "You have exceeded a secondary rate limit. Please wait a few minutes before you try again."
)
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class GitHubSimulator(ApiHandlers):
    """See the package docstring (`egw.testing.github`) for the scripting API."""

    def __init__(
        self,
        *,
        webhook_url: str | None = None,
        webhook_secret: str | None = None,
        token: str | None = None,
        time_scale: float = 1.0,
        enterprise: bool = False,
        enterprise_status: int = 422,
        run_creation_delay_s: float = 1.0,
        strict_workflows: bool = False,
        rate_limit: int = 5000,
        webhook_content_type: str = "json",
        github_app: SimApp | None = None,
    ) -> None:
        self.clock = SimClock(time_scale)
        self.token = token
        #: a GitHub App whose installation tokens are accepted besides ``token``
        self.github_app = github_app
        self.enterprise = enterprise
        self.enterprise_status = enterprise_status
        self.run_creation_delay_s = run_creation_delay_s
        self.strict_workflows = strict_workflows
        self.hook_id = 109948940
        self.hooks = Deliverer(
            secret=webhook_secret,
            hook_id=self.hook_id,
            target_id=186853261,
            time_scale=time_scale,
            content_type=webhook_content_type,
        )
        self.hooks.url = webhook_url
        self.repos: dict[str, SimRepo] = {}
        self.workflows: dict[tuple[str, str], SimWorkflow] = {}
        self.runs: dict[int, SimRun] = {}
        self.jobs: dict[int, SimJob] = {}
        self.scripts: list[RunScript] = []
        self.faults: list[Fault] = []
        #: (method, path with query, headers) of every API request, in order
        self.requests: list[tuple[str, str, dict[str, str]]] = []
        self.rate = {
            "limit": rate_limit,
            "remaining": rate_limit,
            "used": 0,
            "reset": int(time.time()) + 3600,
        }
        self._ids = {
            "repo": 186853261,
            "workflow": 161335,
            "run": 30433642,
            "job": 399444496,
            "deployment": 875096709,
        }
        self._downloads: dict[str, tuple[float, str, Callable[[], bytes | None]]] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._changed = asyncio.Event()
        self._runner: web.AppRunner | None = None
        self.base_url = ""
        self.app = web.Application(middlewares=[self._middleware])
        self._routes()

    # --- lifecycle ------------------------------------------------------------------------

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> str:
        await self.hooks.start()
        self._runner = web.AppRunner(self.app)
        await self._runner.setup()
        site = web.TCPSite(self._runner, host, port)
        await site.start()
        bound = self._runner.addresses[0]
        self.base_url = f"http://{bound[0]}:{bound[1]}"
        return self.base_url

    async def close(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        for task in list(self._tasks):
            try:
                await task
            except asyncio.CancelledError:
                pass
        await self.hooks.close()
        if self._runner is not None:
            await self._runner.cleanup()

    # --- scripting ------------------------------------------------------------------------

    @property
    def webhook_url(self) -> str | None:
        return self.hooks.url

    @webhook_url.setter
    def webhook_url(self, url: str | None) -> None:
        self.hooks.url = url

    @property
    def deliveries(self) -> list[SentDelivery]:
        return self.hooks.deliveries

    def add_workflow(
        self,
        owner: str,
        repo: str,
        file: str,
        *,
        name: str | None = None,
        inputs: list[str] | None = None,
        run_name: str | None = None,
    ) -> SimWorkflow:
        sim_repo = self._repo(owner, repo)
        self._ids["workflow"] += 1
        wf = SimWorkflow(
            sim_repo, self._ids["workflow"], file, name or file.rsplit(".", 1)[0], inputs, run_name
        )
        self.workflows[(sim_repo.full_name.lower(), file)] = wf
        return wf

    def script(self, *scripts: RunScript) -> None:
        """Queue scripts for the next dispatches (FIFO); then the default job."""
        self.scripts.extend(scripts)

    def fail_next(
        self,
        status: int,
        *,
        match: str | None = None,
        method: str | None = None,
        count: int = 1,
        message: str | None = None,
        retry_after: float | None = None,
    ) -> None:
        """The next ``count`` matching API requests get ``status`` with a basic-error body;
        403/429 without ``message`` are secondary rate limits."""
        self.faults.append(Fault("status", match, method, count, status, message, retry_after))

    def drop_connection_next(
        self,
        *,
        match: str | None = None,
        method: str | None = None,
        after_effect: bool = True,
        count: int = 1,
    ) -> None:
        """Close the connection without an answer; ``after_effect``: after doing the work
        (an ambiguous failure: the dispatch created its run, the client never heard)."""
        kind = "reset_after" if after_effect else "reset_before"
        self.faults.append(Fault(kind, match, method, count))

    def slow_next(
        self, seconds: float, *, match: str | None = None, method: str | None = None, count: int = 1
    ) -> None:
        """Answer the next matching requests ``seconds`` (real time) late."""
        self.faults.append(Fault("slow", match, method, count, seconds=seconds))

    def set_rate_limit(
        self,
        *,
        limit: int | None = None,
        remaining: int | None = None,
        reset_in_s: float | None = None,
    ) -> None:
        if limit is not None:
            self.rate["limit"] = limit
        if remaining is not None:
            self.rate["remaining"] = remaining
        if reset_in_s is not None:
            self.rate["reset"] = int(time.time() + reset_in_s)

    def drop(self, *, event: str | None = None, action: str | None = None, count: int = 1) -> None:
        self.hooks.rules.append(Rule("drop", event, action, count))

    def delay(
        self, seconds: float, *, event: str | None = None, action: str | None = None, count: int = 1
    ) -> None:
        """Send matching deliveries ``seconds`` (simulated) late: later ones overtake them."""
        self.hooks.rules.append(Rule("delay", event, action, count, seconds))

    def hold(self) -> None:
        """Keep deliveries back until `release`."""
        self.hooks.hold()

    def release(self, order: str | Sequence[str] | None = None) -> None:
        self.hooks.release(order)

    def redeliver(self, guid: str) -> None:
        """Send a recorded delivery again (same GUID, same body, same signature)."""
        self.hooks.resend(next(d for d in self.hooks.deliveries if d.guid == guid))

    async def deliveries_idle(self) -> None:
        await self.hooks.idle()

    async def ping(self) -> SentDelivery:
        repo = self._repo("octo-org", "octo-repo")
        now = self.clock.now()
        hook_url = f"https://api.github.com/repos/{repo.full_name}/hooks/{self.hook_id}"
        payload = {
            "zen": "Anything added dilutes everything else.",
            "hook_id": self.hook_id,
            "hook": {
                "type": "Repository",
                "id": self.hook_id,
                "name": "web",
                "active": True,
                "events": ["workflow_job", "workflow_run"],
                "config": {
                    "content_type": self.hooks.content_type,
                    "insecure_ssl": "0",
                    "url": self.hooks.url or "https://example.invalid/",
                },
                "updated_at": iso(now),
                "created_at": iso(now),
                "url": hook_url,
                "test_url": f"{hook_url}/test",
                "ping_url": f"{hook_url}/pings",
                "deliveries_url": f"{hook_url}/deliveries",
                "last_response": {"code": None, "status": "unused", "message": None},
            },
            "repository": repository_full(repo, now),
            "sender": user(*ACTOR),
        }
        delivery = self.hooks.build("ping", payload, None)
        self.hooks.submit(delivery)
        return delivery

    async def rerun(self, run_id: int) -> SimRun:
        """Re-run a completed run: ``run_attempt`` + 1, new jobs, new webhooks."""
        run = self.runs[run_id]
        if run.status != "completed":
            raise ValueError("only a completed run can be re-run")
        run.old_jobs.extend(run.jobs)
        run.attempt += 1
        run.status, run.conclusion = "queued", None
        run.cancel_requested = run.force = False
        run.cancel_event, run.force_event = asyncio.Event(), asyncio.Event()
        run.approved = asyncio.Event()
        run.run_started_at = run.updated_at = self.clock.now()
        self._new_jobs(run)
        self._spawn(self._play(run))
        return run

    def approve(self, run_id: int) -> None:
        """Approve the environments a run's jobs wait for (a reviewer's approval)."""
        self.runs[run_id].approved.set()

    async def wait_run(
        self, run_id: int, status: str = "completed", timeout_s: float = 10
    ) -> SimRun:
        async with asyncio.timeout(timeout_s):
            while not (run_id in self.runs and self.runs[run_id].status == status):
                await self._changed.wait()
        return self.runs[run_id]

    # --- internals ------------------------------------------------------------------------

    def _repo(self, owner: str, name: str) -> SimRepo:
        key = f"{owner}/{name}".lower()
        if key not in self.repos:
            self._ids["repo"] += 1
            self.repos[key] = SimRepo(owner, name, self._ids["repo"], 9919, self.clock.now())
        return self.repos[key]

    def _workflow(self, owner: str, repo: str, wf_id: str) -> SimWorkflow | None:
        full = f"{owner}/{repo}".lower()
        for (key, file), wf in self.workflows.items():
            if key == full and (file == wf_id or str(wf.id) == wf_id):
                return wf
        if self.strict_workflows or wf_id.isdigit():
            return None
        return self.add_workflow(owner, repo, wf_id)

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _notify(self) -> None:
        # wake every waiter; later waiters wait on a fresh event
        changed, self._changed = self._changed, asyncio.Event()
        changed.set()

    def _new_jobs(self, run: SimRun) -> None:
        scripts = (
            run.script.jobs
            if run.script.jobs is not None
            else default_jobs(run.workflow.name, run.inputs)
        )
        run.jobs = []
        for script in scripts:
            self._ids["job"] += 1
            job = SimJob(self._ids["job"], run, run.attempt, script, self.clock.now())
            run.jobs.append(job)
            self.jobs[job.id] = job

    async def _emit(self, event: str, action: str, obj: Any) -> None:
        run: SimRun = obj if isinstance(obj, SimRun) else obj.run
        now = self.clock.now()
        payload: dict[str, Any] = {"action": action}
        if event == "workflow_run":
            payload["workflow_run"] = run.to_json()
            payload["workflow"] = workflow(run.workflow)
        else:
            payload["workflow_job"] = obj.to_json()
            if obj.script.environment and action in ("queued", "waiting"):
                if obj.deployment_id is None:
                    self._ids["deployment"] += 1
                    obj.deployment_id = self._ids["deployment"]
                payload["deployment"] = deployment(
                    run.repo, obj.deployment_id, obj.script.environment, run.head_sha, run.ref, now
                )
        payload["repository"] = repository_full(run.repo, now)
        payload["sender"] = user(*ACTOR)
        self.hooks.submit(self.hooks.build(event, payload, run.id))
        self._notify()

    async def _play(self, run: SimRun, delay_s: float = 0.0) -> None:
        if delay_s:
            await self.clock.sleep(delay_s)
        run.visible = True
        script = run.script
        if script.action_required:  # waits for an approval egw cannot give: done here
            run.status, run.conclusion, run.jobs = "completed", "action_required", []
            await self._emit("workflow_run", "requested", run)
            return
        if script.pending_s > 0:
            run.status = "pending"
            await self._emit("workflow_run", "requested", run)
            try:
                async with asyncio.timeout(self.clock.real(script.pending_s)):
                    await run.cancel_event.wait()
            except TimeoutError:
                run.status = "queued"
                run.updated_at = self.clock.now()
                self._notify()
            else:  # cancelled while pending: it never ran
                run.status, run.conclusion, run.jobs = "completed", "cancelled", []
                run.updated_at = self.clock.now()
                await self._emit("workflow_run", "completed", run)
                return
        else:
            await self._emit("workflow_run", "requested", run)
        await drive(run, self.clock, self._emit, self._notify)

    def _count(self, resp: web.StreamResponse) -> None:
        if time.time() >= self.rate["reset"]:
            self.rate.update(remaining=self.rate["limit"], used=0, reset=int(time.time()) + 3600)
        if resp.status != 304:
            self.rate["remaining"] = max(0, self.rate["remaining"] - 1)
            self.rate["used"] += 1
        self._rate_headers(resp)

    def _rate_headers(self, resp: web.StreamResponse) -> None:
        for key in ("limit", "remaining", "used", "reset"):
            resp.headers[f"x-ratelimit-{key}"] = str(self.rate[key])
        resp.headers["x-ratelimit-resource"] = "core"

    @web.middleware
    async def _middleware(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        if request.path.startswith("/_sim/"):
            return await handler(request)
        self.requests.append((request.method, request.path_qs, dict(request.headers)))
        fault = next((f for f in self.faults if f.matches(request)), None)
        if fault is not None:
            fault.count -= 1
            if fault.kind == "slow":
                await asyncio.sleep(fault.seconds)
            elif fault.kind == "reset_before":
                assert request.transport is not None
                request.transport.close()
                return web.Response(status=500)
            elif fault.kind == "status":
                resp = error(
                    fault.status,
                    fault.message or (SECONDARY if fault.status in (403, 429) else "Server Error"),
                )
                if fault.retry_after is not None:
                    resp.headers["retry-after"] = f"{fault.retry_after:g}"
                self._rate_headers(resp)
                return resp
        # the app's own endpoint is authenticated by its JWT, in its handler
        if not request.path.startswith("/app/") and not self._authorized(
            request.headers.get("Authorization", "")
        ):
            return error(401, "Bad credentials")
        version = request.headers.get("X-GitHub-Api-Version", VERSIONS[0])
        if version not in VERSIONS or (self.enterprise and version != VERSIONS[0]):
            return error(400, f"Unsupported 'X-GitHub-Api-Version' header: {version!r}")
        if time.time() < self.rate["reset"] and self.rate["remaining"] <= 0:
            resp = error(403, "API rate limit exceeded for user ID 1.")
            self._rate_headers(resp)
            return resp
        answer = await handler(request)
        self._count(answer)
        if fault is not None and fault.kind == "reset_after":
            assert request.transport is not None
            request.transport.close()
        return answer

    def _authorized(self, auth: str) -> bool:
        """``Authorization: Bearer|token <token>``: the configured token or a live
        installation token of the app (GitHub accepts both schemes for either)."""
        if self.token is None and self.github_app is None:
            return True
        scheme, _, token = auth.partition(" ")
        if scheme not in ("Bearer", "token") or not token:
            return False
        return token == self.token or (self.github_app is not None and self.github_app.valid(token))

    async def _access_tokens(self, request: web.Request) -> web.Response:
        if self.github_app is None:
            return error(404, "Not Found")
        return await self.github_app.access_tokens(request)

    def _routes(self) -> None:
        repo = "/repos/{owner}/{repo}/actions"
        r = self.app.router
        r.add_post(repo + "/workflows/{workflow_id}/dispatches", self._dispatch)
        r.add_get(repo + "/workflows/{workflow_id}/runs", self._list_runs)
        r.add_get(repo + "/runs", self._list_runs)
        r.add_get(repo + "/runs/{run_id}", self._get_run)
        r.add_get(repo + "/runs/{run_id}/jobs", self._list_jobs)
        r.add_get(repo + "/runs/{run_id}/logs", self._run_logs)
        r.add_post(repo + "/runs/{run_id}/cancel", self._cancel)
        r.add_post(repo + "/runs/{run_id}/force-cancel", self._cancel)
        r.add_get(repo + "/jobs/{job_id}", self._get_job)
        r.add_get(repo + "/jobs/{job_id}/logs", self._job_logs)
        r.add_get("/_sim/download/{token}", self._download)
        r.add_post("/app/installations/{installation_id}/access_tokens", self._access_tokens)
