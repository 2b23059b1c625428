"""Dispatch and correlation: start a workflow run, and learn which run it started.

``POST .../dispatches`` with ``return_run_details`` (2022-11-28) or plainly
(2026-03-10, always 200): the run id is recorded at once. An older Enterprise
Server refuses the field (400/422 naming it): egw dispatches once without it and
the task stays ``pending`` (no upstream id) while the reconciler lists
``event=workflow_dispatch`` runs created since the dispatch and matches the
correlation id echoed into the run-name (the run-name marker of actions such as
lasith-kg/dispatch-workflow; without a ``correlation_input`` the oldest unclaimed
run of the window is taken, a heuristic GitHub does not specify). A dispatch is
not idempotent: after an ambiguous failure (timeout, reset, 5xx) the next attempt
first looks for the run the lost request may have created.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Mapping
from datetime import datetime
from typing import Any

import structlog

from egw.config import GitHubActionsConfig
from egw.core.model import Task, format_time, parse_time, utcnow
from egw.errors import ProviderError, ProviderUnavailable
from egw.providers.base import SinkSlot, Submission
from egw.providers.github_actions.api import PROVIDER, GitHubAPI
from egw.providers.github_actions.reports import Reports
from egw.providers.github_actions.state import CLOCK_SKEW, Follow, Pending
from egw.providers.http import HTTPResponse
from egw.providers.retry import retrying
from egw.wire import github as gh

log = structlog.get_logger("egw.providers.github_actions")

#: listing pages read when looking for a dispatched run
MAX_LIST_PAGES = 3


class Dispatcher:
    def __init__(
        self,
        cfg: GitHubActionsConfig,
        api: GitHubAPI,
        follow: Follow,
        sink: SinkSlot,
        reports: Reports,
        replay: Callable[[int], Awaitable[None]],
    ) -> None:
        self.cfg = cfg
        self.api = api
        self.follow = follow
        self.sink = sink
        self.reports = reports
        #: takes the webhook deliveries held for a run that is now known
        self.replay = replay
        #: None until an Enterprise Server refuses ``return_run_details``
        self.run_details: bool | None = None

    async def submit(self, task: Task, *, idempotency_key: str) -> Submission:
        sink = self.sink()
        if task.upstream_id:
            return Submission(upstream_id=task.upstream_id, upstream_url=task.upstream_url)
        spec = gh.GitHubSpec.from_json(task.spec)
        corr = gh.correlation_id(idempotency_key)
        prior = parse_time(task.upstream.get("dispatch_started_at"))
        # runs of attempts a resubmit replaced (egw/core/states.py) are never this attempt's
        self.follow.done.update(
            int(r) for r in task.upstream.get("retired", ()) if str(r).isdigit()
        )
        # until the run is known (adopt tracks it), a delivery for a run egw does not know
        # may be this one's: it is held, then replayed (`WebhookIntake.take`)
        self.follow.dispatching += 1
        try:
            if prior is not None:
                # a submit before a restart may have created the run: look before dispatching
                found = await self.find_run(spec, corr, prior - CLOCK_SKEW)
                if found is not None:
                    return await self.adopt(task.id, spec, found)
                if task.upstream.get("dispatched"):
                    return self.correlate(task.id, spec, corr, prior)
            started = utcnow()
            await sink.set_upstream(
                task.id,
                data={"correlation_id": corr, "dispatch_started_at": format_time(started)},
            )
            return await self._dispatch(task.id, spec, corr, started)
        finally:
            self.follow.dispatching -= 1

    async def _dispatch(
        self, task_id: str, spec: gh.GitHubSpec, corr: str, started: datetime
    ) -> Submission:
        ambiguous = False
        details = self.cfg.api_version == "2022-11-28" and self.run_details is not False
        path = gh.dispatch_path(spec)

        async def post(body: Mapping[str, Any]) -> HTTPResponse:
            nonlocal ambiguous
            try:
                return await self.api.request("POST", path, json_body=body)
            except ProviderUnavailable as exc:
                ambiguous = bool(exc.details.get("ambiguous"))
                raise

        retry = self.api.retry
        policy = retrying(
            retry, provider=PROVIDER, operation="dispatch", max_retry_after_s=retry.deadline_s
        )
        async for attempt in policy:
            with attempt:
                if ambiguous:
                    # the lost request may have created the run: never dispatch twice blindly
                    found = await self.find_run(spec, corr, started - CLOCK_SKEW, settle=True)
                    if found is not None:
                        return await self.adopt(task_id, spec, found)
                body = gh.dispatch_body(
                    spec,
                    api_version=self.cfg.api_version,
                    return_run_details=details,
                    correlation=corr,
                )
                resp = await post(body)
                message = gh.error_message(resp.body, resp.status)
                if resp.status >= 400 and details and gh.rejects_run_details(resp.status, message):
                    log.info("github_no_run_details", status=resp.status, message=message)
                    self.run_details, details = False, False
                    body.pop("return_run_details", None)
                    resp = await post(body)
                    message = gh.error_message(resp.body, resp.status)
                if resp.status >= 400:
                    raise ProviderError(
                        f"GitHub refused the dispatch: {message}",
                        provider=PROVIDER,
                        upstream_status=resp.status,
                    )
                result = gh.parse_dispatch_response(resp.status, resp.body)
                if result.run_id is None:
                    await self.sink().set_upstream(task_id, data={"dispatched": True})
                    return self.correlate(task_id, spec, corr, started)
                if details:
                    self.run_details = True
                run = gh.Run(id=result.run_id, html_url=result.html_url, url=result.run_url)
                return await self.adopt(task_id, spec, run, fresh=True)
        raise AssertionError("unreachable: tenacity reraises")  # pragma: no cover

    async def adopt(
        self, task_id: str, spec: gh.GitHubSpec, run: gh.Run, *, fresh: bool = False
    ) -> Submission:
        """Record the run as the task's upstream at once, and follow it."""
        url = run.html_url or run.url
        await self.sink().set_upstream(task_id, upstream_id=str(run.id), upstream_url=url)
        if not self.follow.standby:  # else the holder of the lease follows it (its look)
            self.follow.track(task_id, spec, run.id)
        await self.replay(run.id)
        obs = None if fresh else gh.run_observation(run, source="poll")
        return Submission(upstream_id=str(run.id), upstream_url=url, observation=obs)

    def correlate(
        self, task_id: str, spec: gh.GitHubSpec, corr: str, since: datetime
    ) -> Submission:
        """No run details: the task stays ``pending`` while the reconciler looks for its run
        (the lease holder's, from the stored ``dispatched``, when this replica stands by)."""
        if not self.follow.standby:
            self.follow.correlate(task_id, spec, corr, since)
        return Submission(
            upstream_id=None,
            upstream={
                "correlation_id": corr,
                "dispatched": True,
                "dispatch_started_at": format_time(since),
            },
        )

    async def find_run(
        self, spec: gh.GitHubSpec, corr: str, since: datetime, *, settle: bool = False
    ) -> gh.Run | None:
        """The run a dispatch created, if it is listed yet; ``settle`` looks a few times
        (GitHub creates runs asynchronously)."""
        use = corr if spec.correlation_input else None
        for i in range(3 if settle else 1):
            if i:
                await asyncio.sleep(min(1.0, self.cfg.poll_min_s))
            runs = await self.list_runs(spec, since)
            ours = self.follow.runs.keys() | self.follow.done
            claimed = await self.claimed(runs, {r.id for r in runs if r.id in ours})
            found = gh.pick_run(runs, correlation=use, ref=spec.ref, since=since, claimed=claimed)
            if found is not None:
                return found
        return None

    async def claimed(self, runs: list[gh.Run], known: set[int]) -> set[int]:
        """``known`` and the listed runs another task already has as its upstream."""
        for run in runs:
            if run.id not in known and await self.sink().find_task(PROVIDER, str(run.id)):
                known.add(run.id)
        return known

    async def list_runs(self, spec: gh.GitHubSpec, since: datetime) -> list[gh.Run]:
        runs: list[gh.Run] = []
        url: str | None = gh.workflow_runs_path(spec)
        params: Mapping[str, str] | None = {
            "event": "workflow_dispatch",
            "created": gh.created_filter(since),
            "per_page": "100",
        }
        for _ in range(MAX_LIST_PAGES):
            if url is None:
                break
            resp = await self.api.request("GET", url, params=params)
            self.api.raise_for(resp)
            items = resp.json().get("workflow_runs") or []
            runs.extend(gh.parse_run(item) for item in items if isinstance(item, Mapping))
            url, params = gh.next_link(resp.headers.get("link")), None
        return runs

    async def matched(self, pending: Pending, run: gh.Run) -> None:
        """A correlating task found its run: record it, observe it, follow it."""
        self.follow.pending.pop(pending.task_id, None)
        sink = self.sink()
        await sink.set_upstream(
            pending.task_id, upstream_id=str(run.id), upstream_url=run.html_url or run.url
        )
        await sink.progress(
            pending.task_id,
            "github.correlated",
            {"run_id": run.id, "display_title": run.display_title},
            source="github",
        )
        task = await sink.get_task(pending.task_id)
        if pending.cancelled or task is None or task.status.terminal:
            # the task ended (cancelled, timed out) while its run was unknown: stop the run
            self.follow.done.add(run.id)
            path = gh.run_path(pending.spec, run.id) + "/cancel"
            resp = await self.api.request("POST", path)
            log.info("github_cancel_after_match", run_id=run.id, status=resp.status)
            if task is not None and not task.logs_complete:
                await sink.logs_complete(task.id)
            return
        tracked = self.follow.track(pending.task_id, pending.spec, run.id)
        async with self.follow.lock(pending.task_id):
            await self.reports.apply_run(tracked, run, f"poll:{run.id}:matched")
        await self.replay(run.id)
