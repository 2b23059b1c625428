"""The REST handlers of the GitHub simulator (a mixin of `GitHubSimulator`): dispatch,
runs, jobs, log redirects and downloads, cancel and force-cancel, per the operations
of rest-actions.openapi.json."""

from __future__ import annotations

import hashlib
import io
import json
import re
import secrets
import time
import zipfile
from collections.abc import Callable, Coroutine
from datetime import timedelta
from typing import Any

from aiohttp import web

from egw.testing.github.rest import blob_not_found, conditional, created_range, error, page
from egw.testing.github.runs import ACTOR, RunScript, SimClock, SimJob, SimRun
from egw.testing.github.shapes import SimWorkflow, iso

VERSIONS = ("2022-11-28", "2026-03-10")


_CAPPED_BY = ("actor", "branch", "check_suite_id", "created", "event", "head_sha", "status")


class ApiHandlers:
    """State the handlers use is set up by `GitHubSimulator.__init__`."""

    clock: SimClock
    enterprise: bool
    enterprise_status: int
    run_creation_delay_s: float
    runs: dict[int, SimRun]
    jobs: dict[int, SimJob]
    scripts: list[RunScript]
    base_url: str
    _ids: dict[str, int]
    _downloads: dict[str, tuple[float, str, Callable[[], bytes | None]]]

    # provided by GitHubSimulator
    _workflow: Callable[[str, str, str], SimWorkflow | None]
    _spawn: Callable[[Coroutine[Any, Any, None]], None]
    _new_jobs: Callable[[SimRun], None]
    _play: Callable[..., Coroutine[Any, Any, None]]

    # --- handlers -------------------------------------------------------------------------

    async def _dispatch(self, request: web.Request) -> web.Response:
        m = request.match_info
        wf = self._workflow(m["owner"], m["repo"], m["workflow_id"])
        if wf is None:
            return error(404, "Not Found")
        try:
            body = await request.json()
        except ValueError:
            return error(400, "Problems parsing JSON")
        version = request.headers.get("X-GitHub-Api-Version", VERSIONS[0])
        allowed = {"ref", "inputs"} | (
            {"return_run_details"} if version == VERSIONS[0] and not self.enterprise else set()
        )
        if not isinstance(body, dict):
            return error(400, "Problems parsing JSON")
        extra = sorted(set(body) - allowed)
        if extra:
            status = self.enterprise_status if self.enterprise else 422
            return error(status, f'Invalid request.\n\n"{extra[0]}" is not a permitted key.')
        if not isinstance(body.get("ref"), str):
            return error(422, 'Invalid request.\n\n"ref" wasn\'t supplied.')
        inputs = body.get("inputs") or {}
        if not isinstance(inputs, dict) or len(inputs) > 25:
            return error(
                422,
                "Invalid request.\n\nFor 'properties/inputs', it must be an "
                "object with at most 25 properties.",
            )
        if wf.inputs is not None:
            unexpected = sorted(set(inputs) - set(wf.inputs))
            if unexpected:
                return error(422, f"Unexpected inputs provided: {json.dumps(unexpected)}")
        run = self._create_run(wf, body["ref"], {k: str(v) for k, v in inputs.items()})
        if version == VERSIONS[1] or body.get("return_run_details") is True:
            self._spawn(self._play(run))
            repo = wf.repo.full_name
            return web.json_response(
                {
                    "workflow_run_id": run.id,
                    "run_url": f"{self.base_url}/repos/{repo}/actions/runs/{run.id}",
                    "html_url": f"https://github.com/{repo}/actions/runs/{run.id}",
                }
            )
        self._spawn(self._play(run, self.run_creation_delay_s))
        return web.Response(status=204)

    def _create_run(self, wf: SimWorkflow, ref: str, inputs: dict[str, str]) -> SimRun:
        self._ids["run"] += 1
        title = wf.name
        if wf.run_name:
            title = re.sub(
                r"\$\{\{\s*(?:github\.event\.)?inputs\.([A-Za-z0-9_-]+)\s*\}\}",
                lambda mt: inputs.get(mt.group(1), ""),
                wf.run_name,
            )
        number = 1 + sum(1 for r in self.runs.values() if r.workflow is wf)
        now = self.clock.now().replace(microsecond=0)  # GitHub's times have whole seconds
        run = SimRun(
            id=self._ids["run"],
            workflow=wf,
            run_number=number,
            ref=ref,
            inputs=inputs,
            display_title=title,
            script=self.scripts.pop(0) if self.scripts else RunScript(),
            created_at=now,
            updated_at=now,
            run_started_at=now,
            head_sha=hashlib.sha1(f"{ref}".encode()).hexdigest(),
        )
        self.runs[run.id] = run
        self._new_jobs(run)
        return run

    def _find_run(self, request: web.Request) -> SimRun | None:
        raw = request.match_info["run_id"]
        run = self.runs.get(int(raw)) if raw.isdigit() else None
        repo = f"{request.match_info['owner']}/{request.match_info['repo']}".lower()
        if run is None or not run.visible or run.repo.full_name.lower() != repo:
            return None
        return run

    def _find_job(self, request: web.Request) -> SimJob | None:
        raw = request.match_info["job_id"]
        job = self.jobs.get(int(raw)) if raw.isdigit() else None
        repo = f"{request.match_info['owner']}/{request.match_info['repo']}".lower()
        if job is None or not job.run.visible or job.run.repo.full_name.lower() != repo:
            return None
        return job

    async def _list_runs(self, request: web.Request) -> web.Response:
        m, q = request.match_info, request.query
        repo = f"{m['owner']}/{m['repo']}".lower()
        wf = None
        if "workflow_id" in m:
            wf = self._workflow(m["owner"], m["repo"], m["workflow_id"])
            if wf is None:
                return error(404, "Not Found")
        try:
            created = created_range(q.get("created"))
        except ValueError:
            return error(422, "Invalid request.\n\nInvalid created range.")
        runs = []
        for run in sorted(self.runs.values(), key=lambda r: r.id, reverse=True):
            if not run.visible or run.repo.full_name.lower() != repo:
                continue
            if wf is not None and run.workflow is not wf:
                continue
            if q.get("event") not in (None, "workflow_dispatch"):
                continue
            if q.get("branch") not in (None, run.ref) or q.get("actor") not in (None, ACTOR[0]):
                continue
            if q.get("status") not in (None, run.status, run.conclusion):
                continue
            if q.get("head_sha") not in (None, run.head_sha):
                continue
            if q.get("check_suite_id") not in (None, str(run.id + 1000)):
                continue
            if created is not None and not (created[0] <= run.created_at < created[1]):
                continue
            runs.append(run.to_json())
        if any(q.get(f) is not None for f in _CAPPED_BY):
            # "up to 1,000 results for each search when using the following parameters:
            # `actor`, `branch`, `check_suite_id`, `created`, `event`, `head_sha`, `status`."
            # (actions/list-workflow-runs-for-repo, rest-actions.openapi.json)
            runs = runs[:1000]
        return page(request, runs, "workflow_runs")

    async def _get_run(self, request: web.Request) -> web.Response:
        run = self._find_run(request)
        return conditional(request, run.to_json()) if run else error(404, "Not Found")

    async def _list_jobs(self, request: web.Request) -> web.Response:
        run = self._find_run(request)
        if run is None:
            return error(404, "Not Found")
        which = request.query.get("filter", "latest")
        if which not in ("latest", "all"):
            return error(422, "Invalid request.\n\nfilter must be latest or all.")
        jobs = (run.old_jobs if which == "all" else []) + run.jobs
        return page(request, [j.to_json() for j in jobs], "jobs")

    async def _get_job(self, request: web.Request) -> web.Response:
        job = self._find_job(request)
        return conditional(request, job.to_json()) if job else error(404, "Not Found")

    def _redirect(self, data: Callable[[], bytes | None], content_type: str) -> web.Response:
        """A 302 to a signed download URL; ``data()`` is read when the URL is fetched
        (None: the blob does not exist, yet)."""
        token = secrets.token_urlsafe(16)
        # GitHub's download links expire after one minute (rest-actions.openapi.json)
        expires = time.monotonic() + self.clock.real(60.0)
        self._downloads[token] = (expires, content_type, data)
        stamp = iso(self.clock.now() + timedelta(seconds=60))
        location = (
            f"{self.base_url}/_sim/download/{token}?urlExpires={stamp}&urlSigningMethod=HMACV1"
        )
        return web.Response(status=302, headers={"Location": location})

    async def _job_logs(self, request: web.Request) -> web.Response:
        """302 whatever the job's state; the blob answers 404 ``BlobNotFound`` until the
        runner's upload lands (egw.wire.github.logs has the sources)."""
        job = self._find_job(request)
        if job is None:
            return error(404, "Not Found")

        def blob(job: SimJob = job) -> bytes | None:
            return job.log_text().encode() if job.log_ready(self.clock.now()) else None

        return self._redirect(blob, "text/plain")

    async def _run_logs(self, request: web.Request) -> web.Response:
        run = self._find_run(request)
        if run is None or run.status != "completed":
            return error(404, "Not Found")
        buf = io.BytesIO()
        with zipfile.ZipFile(buf, "w") as archive:
            for i, job in enumerate(run.jobs):
                archive.writestr(f"{i}_{job.script.name}.txt", job.log_text())
        data = buf.getvalue()
        return self._redirect(lambda: data, "application/zip")

    async def _download(self, request: web.Request) -> web.Response:
        item = self._downloads.get(request.match_info["token"])
        body = item[2]() if item is not None and time.monotonic() <= item[0] else None
        if item is None or body is None:
            # an expired link is not modelled apart: Azure would answer 403
            # AuthenticationFailed; no source says what GitHub's links answer then
            return blob_not_found()
        return web.Response(body=body, content_type=item[1])

    async def _cancel(self, request: web.Request) -> web.Response:
        run = self._find_run(request)
        if run is None:
            return error(404, "Not Found")
        if run.status == "completed":
            return error(409, "Cannot cancel a workflow run that is completed.")
        if run.script.cancel_conflict:
            return error(409, run.script.cancel_conflict)
        run.cancel_requested = True
        run.cancel_event.set()
        if request.path.endswith("/force-cancel"):
            run.force = True
            run.force_event.set()
        return web.json_response({}, status=202)
