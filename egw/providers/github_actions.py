"""GitHub Actions provider: dispatch workflow runs, follow them by webhooks (with a
polling reconciler), fetch job logs when jobs complete, cancel.

Theory of operation
-------------------
* **Submit.** ``POST .../dispatches`` with ``return_run_details`` (2022-11-28) or
  plainly (2026-03-10, always 200): the run id is recorded at once. An older
  Enterprise Server refuses the field (400/422 naming it): egw dispatches once
  without it and the task stays ``pending`` (no upstream id) while a correlator
  lists ``event=workflow_dispatch`` runs created since the dispatch and matches
  the correlation id echoed into the run-name (the run-name marker of actions such as lasith-kg/dispatch-workflow; without a
  ``correlation_input`` the oldest unclaimed run of the window is taken, a
  heuristic GitHub does not specify). A dispatch is
  not idempotent: after an ambiguous failure (timeout, reset, 5xx) the next
  attempt first looks for the run the lost request may have created.
* **Webhooks.** `handle_webhook` verifies ``X-Hub-Signature-256``, stores the
  delivery (``sink.progress`` keyed on ``X-GitHub-Delivery``: a redelivery is a
  duplicate) and answers at once (a delivery that beats the dispatch's own answer
  is held and replayed once the run is known); a background task applies it under the
  task's lock. Run reports pass `wire.github.is_newer` (attempt, updated_at, a tie
  prefers the terminal state) before ``sink.observe``; job reports become
  ``github.job`` events and progress lines in the log (GitHub has no live log
  stream); a completed job's log is fetched (302 to a plain-text URL) into the log
  store; once the run is completed and every job's log is in, ``logs_complete``.
* **Reconciler.** One loop polls each non-terminal run with ``If-None-Match`` (a
  304 costs no rate limit) at an interval that doubles while nothing changes
  (``poll_min_s`` .. ``poll_max_s``) and stretches to the maximum while webhooks
  arrive. Rate-limited answers (403/429) pause all calls as GitHub's rate-limit docs describe (tests/samples/github/NOTES.md);
  `health` shows the remaining budget.

Size: over the 500-line budget (the project's module budget) because this backend has one provider
module; submit/correlation, webhooks, logs and the reconciler are its split points.
"""

from __future__ import annotations

import asyncio
import functools
import random
import time
from collections.abc import Awaitable, Callable, Coroutine, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, ClassVar, TypeVar

import aiohttp
import structlog

from egw.config import GitHubActionsConfig, RetryConfig
from egw.core.model import Observation, Task, TaskState, format_time, parse_time, utcnow
from egw.errors import Conflict, EgwError, ProviderError, ProviderUnavailable, Unauthorized
from egw.background import cancel_and_wait
from egw.providers.base import ProviderSink, Submission, WebhookResult
from egw.providers.http import HTTPResponse, http_request
from egw.providers.retry import retrying, with_retries
from egw.wire import github as gh

log = structlog.get_logger("egw.providers.github_actions")
T = TypeVar("T")

#: runs are listed from this long before the dispatch (clock skew between egw and GitHub)
CLOCK_SKEW = timedelta(seconds=120)
#: listing pages read when looking for a dispatched run
MAX_LIST_PAGES = 3
#: deliveries for a run not known yet (its dispatch answer is still on the way) are held
#: this long, at most this many, and replayed once the run is known
ORPHAN_TTL_S = 120.0
MAX_ORPHANS = 1000
#: a completed run whose jobs or logs cannot be read this many times ends its log anyway
MAX_FINISH_TRIES = 5
#: below this share of the rate limit left, runs are polled at the longest interval
LOW_BUDGET = 0.1


@dataclass
class Tracked:
    """A run egw follows: what was applied last, and when to poll it next."""

    task_id: str
    spec: Mapping[str, Any]
    run_id: int
    interval: float
    next_poll: float
    last: gh.Run | None = None
    #: the latest run attempt seen (a re-run is attempt + 1)
    attempt: int = 1
    etag: str | None = None
    jobs: dict[int, gh.Job] = field(default_factory=dict)
    fetched: set[int] = field(default_factory=set)
    finish_tries: int = 0
    completed: bool = False
    logs_done: bool = False


@dataclass
class Pending:
    """A dispatched run not yet identified (no run details)."""

    task_id: str
    spec: Mapping[str, Any]
    correlation: str | None
    since: datetime
    deadline: float
    next_poll: float
    cancelled: bool = False


class GitHubActionsProvider:
    name: ClassVar[str] = "github_actions"
    webhook_source: ClassVar[str | None] = "github"

    def __init__(
        self, cfg: GitHubActionsConfig, *, session: aiohttp.ClientSession, retry: RetryConfig
    ) -> None:
        self.cfg = cfg
        self.session = session
        self.retry = retry
        self._sink: ProviderSink | None = None
        self._runs: dict[int, Tracked] = {}
        #: runs whose logs this process completed (late deliveries must not reopen them)
        self._done: set[int] = set()
        self._pending: dict[str, Pending] = {}
        self._orphans: dict[int, list[tuple[float, gh.Delivery]]] = {}
        self._dispatching = 0
        self._locks: dict[str, asyncio.Lock] = {}
        self._background: set[asyncio.Task[None]] = set()
        self._loop_task: asyncio.Task[None] | None = None
        self._wake = asyncio.Event()
        self.rate: gh.RateLimit | None = None
        self._blocked_until = 0.0
        self._rate_strikes = 0
        #: None until an Enterprise Server refuses ``return_run_details``
        self._run_details: bool | None = None

    # --- Provider protocol ----------------------------------------------------------------

    def validate(self, task: Mapping[str, Any]) -> dict[str, Any]:
        return gh.validate_task(
            task,
            default_owner=self.cfg.owner,
            default_repo=self.cfg.repo,
            default_correlation_input=self.cfg.correlation_input,
        )

    async def start(self, sink: ProviderSink) -> None:
        self._sink = sink
        for task in await sink.active_tasks(self.name):
            await self._resume(task)
        self._loop_task = asyncio.create_task(self._loop())

    async def close(self) -> None:
        await cancel_and_wait(self._loop_task)
        for task in list(self._background):
            await cancel_and_wait(task)

    def health(self) -> Mapping[str, Any]:
        blocked = self._blocked_until > time.time()
        return {
            "rate_limit": self.rate.to_json() if self.rate else None,
            "rate_limited_until": int(self._blocked_until) if blocked else None,
            "tracked_runs": sum(1 for t in self._runs.values() if not t.logs_done),
            "correlating": len(self._pending),
            "run_details": self._run_details is not False,
            "webhook_secret": bool(self.cfg.webhook_secret),
        }

    async def submit(self, task: Task, *, idempotency_key: str) -> Submission:
        sink = self._require_sink()
        spec = task.spec
        if task.upstream_id:
            return Submission(upstream_id=task.upstream_id, upstream_url=task.upstream_url)
        corr = gh.correlation_id(idempotency_key)
        prior = parse_time(task.upstream.get("dispatch_started_at"))
        if prior is not None:
            # a submit before a restart may have created the run: look before dispatching
            found = await self._find_run(spec, corr, prior - CLOCK_SKEW)
            if found is not None:
                return await self._adopt(task.id, spec, found)
            if task.upstream.get("dispatched"):
                return self._correlate(task.id, spec, corr, prior)
        started = utcnow()
        await sink.set_upstream(
            task.id, data={"correlation_id": corr, "dispatch_started_at": format_time(started)}
        )
        self._dispatching += 1
        try:
            return await self._dispatch(task.id, spec, corr, started)
        finally:
            self._dispatching -= 1

    async def cancel(self, task: Task, *, force: bool = False) -> Observation | None:
        if task.upstream_id is None:
            pending = self._pending.get(task.id)
            if pending is not None:
                pending.cancelled = True  # cancel the run upstream once it is found
            return Observation(
                state=TaskState.CANCELLED, reason="cancelled before GitHub reported the run"
            )
        path = gh.run_path(task.spec, task.upstream_id) + ("/force-cancel" if force else "/cancel")
        resp = await self._retried(lambda: self._request("POST", path), "cancel")
        tracked = self._runs.get(int(task.upstream_id))
        if resp.status == 202:
            if tracked is not None:
                tracked.interval = self.cfg.poll_min_s
                self._schedule(tracked, self.cfg.poll_min_s)
            return None
        message = gh.error_message(resp.body, resp.status)
        if resp.status == 409:
            # an earlier, lost cancel may have done it already: then say so, not 409
            now = await self.status(task)
            if now.state is TaskState.CANCELLED:
                return now
            raise Conflict(
                f"GitHub refused to cancel run {task.upstream_id}: {message}",
                details={"provider": self.name, "upstream_status": 409, "force": force},
            )
        raise ProviderError(message, provider=self.name, upstream_status=resp.status)

    async def status(self, task: Task) -> Observation:
        if task.upstream_id is None:
            return Observation(
                state=TaskState.PENDING, reason="waiting for GitHub to report the run"
            )
        path = gh.run_path(task.spec, task.upstream_id)
        resp = await self._retried(lambda: self._request("GET", path), "status")
        self._raise_for(resp)
        return gh.run_observation(gh.parse_run(resp.json()), source="poll")

    async def handle_webhook(self, headers: Mapping[str, str], body: bytes) -> WebhookResult:
        secret = self.cfg.webhook_secret
        if not secret or not gh.verify_signature(
            secret, body, gh.header(headers, "X-Hub-Signature-256")
        ):
            err = Unauthorized("missing or bad X-Hub-Signature-256")
            return WebhookResult(status=401, body=err.to_json())
        try:
            delivery = gh.parse_delivery(headers, body)
        except EgwError as exc:
            return WebhookResult(status=400, body=exc.to_json())
        if delivery.event == "ping":
            return WebhookResult(status=200, body={"ok": True, "zen": delivery.zen})
        if delivery.run is None and delivery.job is None:
            return WebhookResult(status=202, body={"ignored": f"event {delivery.event}"})
        try:
            return await self._take(delivery)
        except EgwError as exc:
            return WebhookResult(status=exc.status, body=exc.to_json())
        except Exception as exc:  # the sink failed: say so without a 500 (GitHub gives up)
            log.exception("github_webhook_store_failed", delivery=delivery.delivery_id)
            busy = ProviderUnavailable(f"could not store the delivery: {exc}", provider=self.name)
            return WebhookResult(status=503, body=busy.to_json())

    # --- submit ---------------------------------------------------------------------------

    async def _dispatch(
        self, task_id: str, spec: Mapping[str, Any], corr: str, started: datetime
    ) -> Submission:
        ambiguous = False
        details = self.cfg.api_version == "2022-11-28" and self._run_details is not False
        path = gh.dispatch_path(spec)

        async def post(body: Mapping[str, Any]) -> HTTPResponse:
            nonlocal ambiguous
            try:
                return await self._request("POST", path, json_body=body)
            except ProviderUnavailable as exc:
                ambiguous = bool(exc.details.get("ambiguous"))
                raise

        policy = retrying(self.retry, provider=self.name, operation="dispatch",
                          max_retry_after_s=self.retry.deadline_s)
        async for attempt in policy:
            with attempt:
                if ambiguous:
                    # the lost request may have created the run: never dispatch twice blindly
                    found = await self._find_run(spec, corr, started - CLOCK_SKEW, settle=True)
                    if found is not None:
                        return await self._adopt(task_id, spec, found)
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
                    self._run_details, details = False, False
                    body.pop("return_run_details", None)
                    resp = await post(body)
                    message = gh.error_message(resp.body, resp.status)
                if resp.status >= 400:
                    raise ProviderError(
                        f"GitHub refused the dispatch: {message}",
                        provider=self.name,
                        upstream_status=resp.status,
                    )
                result = gh.parse_dispatch_response(resp.status, resp.body)
                if result.run_id is None:
                    await self._require_sink().set_upstream(task_id, data={"dispatched": True})
                    return self._correlate(task_id, spec, corr, started)
                if details:
                    self._run_details = True
                run = gh.Run(id=result.run_id, html_url=result.html_url, url=result.run_url)
                return await self._adopt(task_id, spec, run, fresh=True)
        raise AssertionError("unreachable: tenacity reraises")  # pragma: no cover

    async def _adopt(
        self, task_id: str, spec: Mapping[str, Any], run: gh.Run, *, fresh: bool = False
    ) -> Submission:
        """Record the run as the task's upstream at once, and follow it."""
        url = run.html_url or run.url
        await self._require_sink().set_upstream(task_id, upstream_id=str(run.id), upstream_url=url)
        self._track(task_id, spec, run.id)
        await self._replay(run.id)
        obs = None if fresh else gh.run_observation(run, source="poll")
        return Submission(upstream_id=str(run.id), upstream_url=url, observation=obs)

    def _correlate(
        self, task_id: str, spec: Mapping[str, Any], corr: str, since: datetime
    ) -> Submission:
        use = corr if spec.get("correlation_input") else None
        if task_id not in self._pending:
            self._pending[task_id] = Pending(
                task_id,
                spec,
                use,
                since - CLOCK_SKEW,
                deadline=time.monotonic() + self.cfg.correlation_timeout_s,
                next_poll=time.monotonic() + self.cfg.poll_min_s,
            )
            self._wake.set()
        return Submission(
            upstream_id=None,
            upstream={
                "correlation_id": corr,
                "dispatched": True,
                "dispatch_started_at": format_time(since),
            },
        )

    async def _find_run(
        self, spec: Mapping[str, Any], corr: str, since: datetime, *, settle: bool = False
    ) -> gh.Run | None:
        """The run a dispatch created, if it is listed yet; ``settle`` looks a few times
        (GitHub creates runs asynchronously)."""
        use = corr if spec.get("correlation_input") else None
        for i in range(3 if settle else 1):
            if i:
                await asyncio.sleep(min(1.0, self.cfg.poll_min_s))
            runs = await self._list_runs(spec, since)
            claimed = {r.id for r in runs if r.id in self._runs}
            for run in runs:
                if run.id not in claimed and await self._require_sink().find_task(
                    self.name, str(run.id)
                ):
                    claimed.add(run.id)
            found = gh.pick_run(
                runs, correlation=use, ref=spec["ref"], since=since, claimed=claimed
            )
            if found is not None:
                return found
        return None

    async def _list_runs(self, spec: Mapping[str, Any], since: datetime) -> list[gh.Run]:
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
            resp = await self._request("GET", url, params=params)
            self._raise_for(resp)
            items = resp.json().get("workflow_runs") or []
            runs.extend(gh.parse_run(item) for item in items if isinstance(item, Mapping))
            url, params = gh.next_link(resp.headers.get("link")), None
        return runs

    # --- webhooks -------------------------------------------------------------------------

    async def _take(self, delivery: gh.Delivery) -> WebhookResult:
        sink = self._require_sink()
        run_id = delivery.run.id if delivery.run else delivery.job.run_id  # type: ignore[union-attr]
        busy = bool(self._dispatching or self._pending)
        task_id = await self._task_for_run(run_id, delivery.run)
        if task_id is None and run_id in self._runs:  # adopted while we looked
            task_id = self._runs[run_id].task_id
        if task_id is None:
            if busy or self._dispatching or self._pending:
                # GitHub may deliver before egw has the dispatch's answer: hold it a while
                self._hold(run_id, delivery)
                return WebhookResult(
                    status=202, body={"ignored": "run not known yet", "held": True}
                )
            return WebhookResult(status=202, body={"ignored": "not a run egw started"})
        stored = await sink.progress(
            task_id,
            "github.delivery",
            {
                "event": delivery.event,
                "action": delivery.action,
                "run_id": run_id,
                "hook_id": delivery.hook_id,
                "payload": delivery.payload,
            },
            source="github",
            delivery_id=delivery.delivery_id,
        )
        if not stored:
            return WebhookResult(status=200, body={"ok": True, "duplicate": True})
        self._spawn(self._apply(task_id, delivery))
        return WebhookResult(status=200, body={"ok": True, "task_id": task_id})

    def _hold(self, run_id: int, delivery: gh.Delivery) -> None:
        now = time.monotonic()
        for old in [r for r, items in self._orphans.items() if items[0][0] < now - ORPHAN_TTL_S]:
            del self._orphans[old]
        if sum(len(items) for items in self._orphans.values()) < MAX_ORPHANS:
            self._orphans.setdefault(run_id, []).append((now, delivery))

    async def _replay(self, run_id: int) -> None:
        """Take the deliveries held for a run that is now known."""
        for _, delivery in self._orphans.pop(run_id, []):
            await self._take(delivery)

    async def _task_for_run(self, run_id: int, run: gh.Run | None) -> str | None:
        tracked = self._runs.get(run_id)
        if tracked is not None:
            return tracked.task_id
        task = await self._require_sink().find_task(self.name, str(run_id))
        if task is not None:
            tracked = self._track(
                task.id,
                task.spec,
                run_id,
                terminal=task.status.terminal,
                logs_done=task.logs_complete or run_id in self._done,
            )
            tracked.attempt = int(task.upstream.get("run_attempt") or 1)
            return task.id
        if run is not None:
            for pending in list(self._pending.values()):
                if pending.correlation and gh.matches_correlation(run, pending.correlation):
                    await self._matched(pending, run)
                    return pending.task_id
        return None

    async def _apply(self, task_id: str, delivery: gh.Delivery) -> None:
        async with self._lock(task_id):
            run_id = delivery.run.id if delivery.run else delivery.job.run_id  # type: ignore[union-attr]
            tracked = self._runs.get(run_id)
            if tracked is None:
                return
            self._schedule(tracked, self.cfg.poll_max_s)  # webhooks flow: poll rarely
            if delivery.run is not None:
                await self._apply_run(tracked, delivery.run, f"{delivery.delivery_id}:state")
            elif delivery.job is not None:
                await self._apply_job(tracked, delivery.job, delivery.delivery_id)
        if tracked.completed and not tracked.logs_done:
            await self._finish(tracked)

    async def _apply_run(self, tracked: Tracked, run: gh.Run, delivery_id: str) -> bool:
        """Apply a run report if it is newer than the last one; True if it was."""
        sink = self._require_sink()
        if not gh.is_newer(run, tracked.last):
            log.info("github_stale_run_report", run_id=run.id, status=run.status)
            return False
        if run.attempt > tracked.attempt:
            tracked.attempt = run.attempt
            await sink.progress(
                tracked.task_id,
                "github.attempt",
                {"run_id": run.id, "run_attempt": run.attempt},
                source="github",
                delivery_id=f"{delivery_id}:attempt",
            )
            await sink.set_upstream(tracked.task_id, data={"run_attempt": run.attempt})
            if not tracked.logs_done:
                line = f"[github] run attempt {run.attempt} started\n"
                await sink.append_log(tracked.task_id, "stdout", line.encode())
            tracked.completed = False
        tracked.last = run
        await sink.observe(
            tracked.task_id, gh.run_observation(run), source="github", delivery_id=delivery_id
        )
        if run.status == "completed" or run.conclusion:
            tracked.completed = True
        return True

    async def _apply_job(self, tracked: Tracked, job: gh.Job, delivery_id: str) -> None:
        sink = self._require_sink()
        previous = tracked.jobs.get(job.id)
        if not gh.job_is_newer(job, previous):
            return
        tracked.jobs[job.id] = job
        await sink.progress(
            tracked.task_id,
            "github.job",
            job.to_json(),
            source="github",
            delivery_id=f"{delivery_id}:job",
        )
        lines = gh.job_progress_lines(previous, job)
        if lines and not tracked.logs_done:
            await sink.append_log(tracked.task_id, "stdout", ("\n".join(lines) + "\n").encode())
        if job.status == "in_progress" and (
            tracked.last is None or tracked.last.attempt <= job.run_attempt
        ):
            await sink.observe(
                tracked.task_id,
                Observation(
                    state=TaskState.RUNNING,
                    at=job.started_at,
                    detail={"run_id": job.run_id, "job_id": job.id, "via": "job"},
                ),
                source="github",
                delivery_id=f"{delivery_id}:state",
            )
        if job.status == "completed":
            await self._fetch_log(tracked, job)

    # --- logs -----------------------------------------------------------------------------

    async def _fetch_log(self, tracked: Tracked, job: gh.Job) -> None:
        """Fetch a completed job's log (a 302 to a short-lived plain-text URL)."""
        if job.id in tracked.fetched or tracked.logs_done:
            return
        sink = self._require_sink()
        path = gh.job_path(tracked.spec, job.id) + "/logs"
        resp = await self._retried(
            lambda: self._request("GET", path, allow_redirects=False), "job_logs"
        )
        text: str | None = None
        if resp.status in (301, 302, 303, 307) and resp.headers.get("location"):
            location = resp.headers["location"]
            blob = await self._retried(lambda: self._get_blob(location), "job_logs_download")
            if blob.status == 200:
                text = blob.body.decode("utf-8", "replace")
        elif resp.status == 200:
            text = resp.body.decode("utf-8", "replace")
        tracked.fetched.add(job.id)
        head = f"[github] ----- log of job {job.name or job.id} (job {job.id}) -----\n"
        if text is None:
            head = f"[github] log of job {job.name or job.id} not available (HTTP {resp.status})\n"
            text = ""
        elif text and not text.endswith("\n"):
            text += "\n"
        for chunk in gh.text_chunks(head + text):
            await sink.append_log(tracked.task_id, "stdout", chunk)

    async def _get_blob(self, url: str) -> HTTPResponse:
        # the download URL is signed; it gets no token (it may be another host)
        resp = await http_request(
            self.session, "GET", url, provider=self.name, timeout_s=self.cfg.request_timeout_s
        )
        if resp.status >= 500:
            raise ProviderUnavailable(
                "log download failed", provider=self.name, upstream_status=resp.status
            )
        return resp

    async def _finish(self, tracked: Tracked) -> None:
        """The run completed: fetch every job's log not yet fetched, then logs_complete."""
        async with self._lock(tracked.task_id):
            if tracked.logs_done:
                return
            sink = self._require_sink()
            url: str | None = gh.run_path(tracked.spec, tracked.run_id) + "/jobs"
            params: Mapping[str, str] | None = {"filter": "latest", "per_page": "100"}
            jobs: list[gh.Job] = []
            while url is not None:
                resp = await self._retried(
                    functools.partial(self._request, "GET", url, params=params), "list_jobs"
                )
                self._raise_for(resp)
                jobs.extend(gh.parse_job(j) for j in resp.json().get("jobs") or [])
                url, params = gh.next_link(resp.headers.get("link")), None
            for job in jobs:
                if gh.job_is_newer(job, tracked.jobs.get(job.id)):
                    lines = gh.job_progress_lines(tracked.jobs.get(job.id), job)
                    tracked.jobs[job.id] = job
                    if lines:
                        await sink.append_log(
                            tracked.task_id, "stdout", ("\n".join(lines) + "\n").encode()
                        )
                if job.status == "completed":
                    await self._fetch_log(tracked, job)
            tracked.logs_done = True
            await sink.logs_complete(tracked.task_id)
        self._locks.pop(tracked.task_id, None)
        self._runs.pop(tracked.run_id, None)
        self._done.add(tracked.run_id)

    # --- reconciler and correlator --------------------------------------------------------

    async def _loop(self) -> None:
        while True:
            now = time.monotonic()
            wait = max(0.0, self._blocked_until - time.time())
            if wait == 0.0:
                for tracked in [t for t in self._runs.values() if not t.logs_done]:
                    if tracked.next_poll <= now:
                        await self._guard(self._poll(tracked), tracked.task_id)
                for pending in list(self._pending.values()):
                    if pending.next_poll <= now:
                        await self._guard(self._poll_pending(pending), pending.task_id)
                times = [t.next_poll for t in self._runs.values() if not t.logs_done]
                times += [p.next_poll for p in self._pending.values()]
                wait = max(0.01, min(times, default=now + 60.0) - time.monotonic())
            self._wake.clear()
            try:
                # asyncio.timeout, not wait_for: 3.11's wait_for can swallow a cancel
                # that races with the event being set, and close() would wait forever
                async with asyncio.timeout(wait):
                    await self._wake.wait()
            except TimeoutError:
                pass

    async def _guard(self, work: Awaitable[None], task_id: str) -> None:
        try:
            await work
        except EgwError as exc:
            log.warning("github_reconcile_failed", task_id=task_id, error=str(exc))
        except Exception:  # the loop must outlive any one bad answer
            log.exception("github_reconcile_failed", task_id=task_id)

    async def _poll(self, tracked: Tracked) -> None:
        """One conditional GET of a run (304: free, and the interval grows)."""
        if tracked.completed:
            self._schedule(tracked, self.cfg.poll_max_s)  # a later try if _finish failed
            tracked.finish_tries += 1
            try:
                await self._finish(tracked)
            except EgwError as exc:
                if tracked.finish_tries < MAX_FINISH_TRIES:
                    raise
                await self._give_up_logs(tracked, exc.message)
            return
        headers = {"If-None-Match": tracked.etag} if tracked.etag else None
        grow = min(self.cfg.poll_max_s, tracked.interval * 2)
        self._schedule(tracked, grow)  # the next try if this one fails
        resp = await self._request(
            "GET", gh.run_path(tracked.spec, tracked.run_id), headers=headers
        )
        if resp.status == 304:
            tracked.interval = grow
        else:
            self._raise_for(resp)
            tracked.etag = resp.headers.get("etag")
            run = gh.parse_run(resp.json())
            async with self._lock(tracked.task_id):
                key = gh.order_key(run)
                changed = await self._apply_run(
                    tracked, run, f"poll:{run.id}:{key[0]}:{run.status}:{run.conclusion}"
                )
            tracked.interval = self.cfg.poll_min_s if changed else grow
        if self._budget_low():  # save what is left of the rate limit for what matters
            tracked.interval = self.cfg.poll_max_s
        self._schedule(tracked, tracked.interval)
        if tracked.completed and not tracked.logs_done:
            await self._finish(tracked)

    async def _poll_pending(self, pending: Pending) -> None:
        sink = self._require_sink()
        task = await sink.get_task(pending.task_id)
        if task is None or task.status.terminal:
            # cancelled (or timed out) by egw while unmatched: a found run is cancelled
            pending.cancelled = True
        if time.monotonic() > pending.deadline:
            self._pending.pop(pending.task_id, None)
            if task is not None and not task.status.terminal:
                await sink.observe(
                    pending.task_id,
                    Observation(
                        state=TaskState.FAILED,
                        reason=f"no dispatched run was found within "
                        f"{self.cfg.correlation_timeout_s:g}s",
                    ),
                    source="github",
                )
            if task is not None and not task.logs_complete:
                await sink.logs_complete(pending.task_id)
            return
        pending.next_poll = time.monotonic() + self.cfg.poll_min_s
        runs = await self._list_runs(pending.spec, pending.since)
        claimed = set(self._runs)
        for run in runs:
            if run.id not in claimed and await self._require_sink().find_task(
                self.name, str(run.id)
            ):
                claimed.add(run.id)
        found = gh.pick_run(
            runs,
            correlation=pending.correlation,
            ref=pending.spec["ref"],
            since=pending.since,
            claimed=claimed,
        )
        if found is not None and pending.task_id in self._pending:
            await self._matched(pending, found)

    async def _matched(self, pending: Pending, run: gh.Run) -> None:
        """A correlating task found its run: record it, observe it, follow it."""
        self._pending.pop(pending.task_id, None)
        sink = self._require_sink()
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
            self._done.add(run.id)
            path = gh.run_path(pending.spec, run.id) + "/cancel"
            resp = await self._request("POST", path)
            log.info("github_cancel_after_match", run_id=run.id, status=resp.status)
            if task is not None and not task.logs_complete:
                await sink.logs_complete(task.id)
            return
        tracked = self._track(pending.task_id, pending.spec, run.id)
        async with self._lock(pending.task_id):
            await self._apply_run(tracked, run, f"poll:{run.id}:matched")
        await self._replay(run.id)

    # --- plumbing -------------------------------------------------------------------------

    async def _resume(self, task: Task) -> None:
        sink = self._require_sink()
        if task.upstream_id is not None:
            try:
                run_id = gh.validate_run_id(task.upstream_id)
            except EgwError:
                return
            tracked = self._track(
                task.id,
                task.spec,
                run_id,
                terminal=task.status.terminal,
                logs_done=task.logs_complete,
            )
            tracked.attempt = int(task.upstream.get("run_attempt") or 1)
            tracked.next_poll = time.monotonic()
            return
        since = parse_time(task.upstream.get("dispatch_started_at"))
        if task.upstream.get("dispatched") and since is not None:
            self._correlate(task.id, task.spec, gh.correlation_id(task.id), since)
            if task.status.terminal:  # ended while unmatched: cancel the run once found
                self._pending[task.id].cancelled = True
        if task.status.terminal:
            await sink.logs_complete(task.id)  # no run known: no output

    def _track(
        self,
        task_id: str,
        spec: Mapping[str, Any],
        run_id: int,
        *,
        terminal: bool = False,
        logs_done: bool = False,
    ) -> Tracked:
        tracked = self._runs.get(run_id)
        if tracked is None:
            tracked = Tracked(
                task_id,
                spec,
                run_id,
                interval=self.cfg.poll_min_s,
                next_poll=time.monotonic() + self.cfg.poll_min_s,
                completed=terminal,
                logs_done=logs_done,
            )
            self._runs[run_id] = tracked
            self._wake.set()
        return tracked

    def _budget_low(self) -> bool:
        rate = self.rate
        if rate is None or not rate.limit or rate.remaining is None:
            return False
        return rate.remaining < rate.limit * LOW_BUDGET

    def _schedule(self, tracked: Tracked, delay_s: float) -> None:
        # +-10% jitter, so runs started together are not polled together
        tracked.next_poll = time.monotonic() + delay_s * random.uniform(0.9, 1.1)
        self._wake.set()

    async def _give_up_logs(self, tracked: Tracked, why: str) -> None:
        async with self._lock(tracked.task_id):
            if tracked.logs_done:
                return
            sink = self._require_sink()
            note = f"[github] the run's logs could not be read: {why}\n"
            await sink.append_log(tracked.task_id, "stdout", note.encode())
            tracked.logs_done = True
            await sink.logs_complete(tracked.task_id)
        self._runs.pop(tracked.run_id, None)
        self._done.add(tracked.run_id)

    def _lock(self, task_id: str) -> asyncio.Lock:
        return self._locks.setdefault(task_id, asyncio.Lock())

    def _spawn(self, work: Coroutine[Any, Any, None]) -> None:
        def done(task: asyncio.Task[None]) -> None:
            self._background.discard(task)
            if task.cancelled():
                return
            exc = task.exception()
            if isinstance(exc, EgwError):
                log.warning("github_apply_failed", error=str(exc))
            elif exc is not None:  # a background apply must not vanish silently
                log.error("github_apply_failed", error=repr(exc), exc_info=exc)

        task = asyncio.create_task(work)
        self._background.add(task)
        task.add_done_callback(done)

    async def _retried(self, fn: Callable[[], Awaitable[T]], operation: str) -> T:
        """The shared retry policy, which also gives up at once when GitHub's rate limit
        asks for a longer wait than the retry deadline (the caller gets a 503 with it)."""
        return await with_retries(self.retry, fn, provider=self.name, operation=operation,
                                  max_retry_after_s=self.retry.deadline_s)

    def _require_sink(self) -> ProviderSink:
        if self._sink is None:
            raise ProviderUnavailable("github_actions provider not started", provider=self.name)
        return self._sink

    def _raise_for(self, resp: HTTPResponse) -> None:
        if resp.status >= 400:
            raise ProviderError(
                gh.error_message(resp.body, resp.status),
                provider=self.name,
                upstream_status=resp.status,
            )

    async def _request(
        self,
        method: str,
        path: str,
        *,
        headers: Mapping[str, str] | None = None,
        json_body: Any = None,
        params: Mapping[str, str] | None = None,
        allow_redirects: bool = True,
    ) -> HTTPResponse:
        """One API call: auth and version headers, rate-limit bookkeeping; 5xx and
        transport failures raise `ProviderUnavailable` marked ``ambiguous``; rate
        limits raise it with ``retry_after_s``. Other statuses are returned."""
        now = time.time()
        if now < self._blocked_until:
            raise ProviderUnavailable(
                "GitHub rate limit: waiting for the reset",
                provider=self.name,
                retry_after_s=self._blocked_until - now,
            )
        url = path if path.startswith("http") else self.cfg.api_url.rstrip("/") + path
        send = {
            "Accept": "application/vnd.github+json",
            "X-GitHub-Api-Version": self.cfg.api_version,
            "User-Agent": "egw",
        }
        if self.cfg.token:
            send["Authorization"] = f"Bearer {self.cfg.token}"
        send.update(headers or {})
        try:
            resp = await http_request(
                self.session,
                method,
                url,
                provider=self.name,
                headers=send,
                json_body=json_body,
                params=params,
                timeout_s=self.cfg.request_timeout_s,
                allow_redirects=allow_redirects,
            )
        except ProviderUnavailable as exc:
            exc.details["ambiguous"] = True
            raise
        self.rate = gh.parse_rate_limit(resp.headers) or self.rate
        message = gh.error_message(resp.body, resp.status) if resp.status >= 400 else ""
        wait = gh.rate_limit_wait(
            resp.status, resp.headers, message, now=time.time(), attempt=self._rate_strikes + 1
        )
        if wait is not None:
            self._rate_strikes += 1
            self._blocked_until = time.time() + wait
            log.warning("github_rate_limited", status=resp.status, wait_s=wait, message=message)
            raise ProviderUnavailable(
                f"GitHub rate limit: {message}",
                provider=self.name,
                upstream_status=resp.status,
                retry_after_s=wait,
            )
        if resp.status < 400:
            self._rate_strikes = 0
        if resp.status >= 500:
            raise ProviderUnavailable(
                message,
                provider=self.name,
                upstream_status=resp.status,
                details={"ambiguous": True},
            )
        return resp
