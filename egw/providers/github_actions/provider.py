"""The GitHub Actions provider: the class that ties dispatch, webhooks, polling and logs.

It dispatches workflow runs, follows them by webhooks (with a polling
reconciler), fetches job logs when jobs complete, and cancels.

Theory of operation
-------------------
The provider ties its parts, which share one `Follow` (the runs followed, the
dispatches still looking for their run) and one `GitHubAPI` (the rate limit):

* `Dispatcher` (``dispatch.py``): submit, with or without run details; the run a
  dispatch created is found by its correlation id after an ambiguous failure or
  when the server gives no run details.
* `WebhookIntake` (``intake.py``): verifies, stores and answers each delivery
  at once; a background task applies it under the task's lock.
* `Reports` (``reports.py``): run reports pass `wire.github.is_newer` (attempt,
  updated_at, a tie prefers the terminal state) before ``sink.observe``; job
  reports become ``github.job`` events and progress lines in the log (GitHub has
  no live log stream).
* `JobLogs` (``logs.py``): a completed job's log is fetched into the log store, asked
  for again until its upload lands (or ``log_wait_s`` passed); once the run is
  completed and every job's log is in, ``logs_complete``.
* `Reconciler` (``reconciler.py``): polls each non-terminal run with
  ``If-None-Match``, matches pending dispatches, resumes after a restart;
  `health` shows the remaining rate-limit budget.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any, ClassVar

import aiohttp

from egw.background import BackgroundTasks
from egw.config import GitHubActionsConfig, RetryConfig
from egw.core.model import Observation, Task, TaskState
from egw.errors import Conflict, ProviderError
from egw.providers.base import ProviderSink, SinkSlot, Submission, WebhookOutcome
from egw.providers.circuit import Breakers
from egw.providers.github_actions.api import PROVIDER, GitHubAPI
from egw.providers.github_actions.dispatch import Dispatcher
from egw.providers.github_actions.intake import WebhookIntake
from egw.providers.github_actions.logs import JobLogs
from egw.providers.github_actions.reconciler import Reconciler
from egw.providers.github_actions.reports import Reports
from egw.providers.github_actions.state import Follow
from egw.wire import github as gh


class GitHubActionsProvider:
    name: ClassVar[str] = PROVIDER
    webhook_source: ClassVar[str] = "github"

    def __init__(
        self,
        cfg: GitHubActionsConfig,
        *,
        session: aiohttp.ClientSession,
        retry: RetryConfig,
        circuit: Breakers | None = None,
    ) -> None:
        self.cfg = cfg
        self.session = session
        self.retry = retry
        self.sink = SinkSlot(self.name)
        self.circuit = circuit or Breakers(PROVIDER, cfg.circuit)
        self.api = GitHubAPI(cfg, session=session, retry=retry, circuit=self.circuit)
        self.follow = Follow(cfg)
        self.background = BackgroundTasks(self.name)
        self.logs = JobLogs(self.api, self.follow, self.sink, self.background)
        self.reports = Reports(self.sink, self.logs)
        self.dispatcher = Dispatcher(
            cfg, self.api, self.follow, self.sink, self.reports, replay=self._replay
        )
        self.intake = WebhookIntake(
            cfg, self.follow, self.sink, self.reports, self.logs, self.dispatcher, self.background
        )
        self.reconciler = Reconciler(
            cfg, self.api, self.follow, self.sink, self.reports, self.logs, self.dispatcher
        )

    async def _replay(self, run_id: int) -> None:
        await self.intake.replay(run_id)

    # --- Provider protocol ----------------------------------------------------------------

    def validate(self, task: Mapping[str, Any]) -> gh.GitHubSpec:
        return gh.validate_task(
            task,
            default_owner=self.cfg.owner,
            default_repo=self.cfg.repo,
            default_correlation_input=self.cfg.correlation_input,
        )

    async def start(self, sink: ProviderSink) -> None:
        """Resume every unfinished task and start the reconciler (standing by: only once
        this replica holds the reconciler's lease, `lead`)."""
        self.sink.attach(sink)
        if not self.follow.standby:
            await self.lead()

    async def close(self) -> None:
        await self.background.close()

    # --- one replica at a time follows (PostgreSQL: egw/service/replicas.py) ---------------------
    # Webhook deliveries land on any replica: each stores what it receives (deduplicated by
    # X-GitHub-Delivery, as on one gateway); only the holder applies them, its own at once
    # and the others' when it hears their commits (`heard`), and only the holder polls,
    # matches dispatches and fetches job logs. One lease for the whole provider, not one
    # per repository: the rate limit it spends is the token's, across repositories.

    @property
    def stream_lease(self) -> str:
        return "github-reconciler"

    #: the events of other replicas the holder acts on (`Hearing`)
    heard_kinds: ClassVar[frozenset[str]] = frozenset({"github.delivery"})

    def stand_by(self) -> None:
        self.follow.standby = self.follow.shared = True

    async def lead(self) -> None:
        self.follow.standby = False
        for task in await self.sink().active_tasks(self.name):
            await self.reconciler.resume(task)
        _ = self.background.spawn(self.reconciler.run(), name="github_reconciler")

    async def follow_new(self) -> None:
        """Follow the runs and dispatches other replicas recorded since the last look; a
        task resubmitted elsewhere has a new run: its old one is forgotten here."""
        sink = self.sink()
        by_task = {t.task_id: t for t in self.follow.runs.values()}
        for task in await sink.active_tasks(self.name):
            if self.follow.followed(task.id, task.upstream_id):
                continue
            fresh = await sink.get_task(task.id)  # as it is now: it may have ended here
            if fresh is None or self.follow.standby:
                return
            if self.follow.followed(fresh.id, fresh.upstream_id):
                continue
            old = by_task.get(fresh.id)
            if old is not None and str(old.run_id) != fresh.upstream_id:
                self.follow.forget(old)  # the replaced attempt's run
            await self.reconciler.resume(fresh)

    async def step_down(self) -> None:
        """Stop polling, applying and fetching now and forget every run: the next holder
        loads them from the store (each job's log is written once: ``logged_jobs``)."""
        self.follow.standby = True
        await self.background.close()
        self.follow.clear()

    def heard_task(self, task: Task) -> None:
        """Another replica recorded a task's run: take the deliveries held for it here."""
        run = task.upstream_id
        if run is not None and run.isdigit() and self.intake.holds(int(run)):
            _ = self.background.spawn(self.intake.replay(int(run)), name=f"github_held:{run}")

    def heard(self, task_id: str, kind: str, data: Mapping[str, Any]) -> None:
        """Another replica stored a delivery for one of the runs: the holder applies it."""
        if not self.follow.standby and kind == "github.delivery":
            _ = self.background.spawn(
                self.intake.apply_stored(task_id, data), name=f"github_heard:{task_id}"
            )

    def health(self) -> Mapping[str, Any]:
        blocked_until = self.api.blocked_until
        blocked = blocked_until > time.time()
        return {
            "rate_limit": self.api.rate.to_json() if self.api.rate else None,
            "rate_limited_until": int(blocked_until) if blocked else None,
            "tracked_runs": sum(1 for t in self.follow.runs.values() if not t.logs_done),
            "correlating": len(self.follow.pending),
            "run_details": self.dispatcher.run_details is not False,
            "webhook_secret": bool(self.cfg.webhook_secret),
            # a GitHub App's installation token: when the one in use expires
            "app_token_expires_at": self.api.app.expires_at if self.api.app else None,
        }

    async def submit(self, task: Task, *, idempotency_key: str) -> Submission:
        return await self.dispatcher.submit(task, idempotency_key=idempotency_key)

    async def cancel(self, task: Task, *, force: bool = False) -> Observation | None:
        if task.upstream_id is None:
            pending = self.follow.pending.get(task.id)
            if pending is not None:
                pending.cancelled = True  # cancel the run upstream once it is found
            return Observation(
                state=TaskState.CANCELLED, reason="cancelled before GitHub reported the run"
            )
        spec = gh.GitHubSpec.from_json(task.spec)
        path = gh.run_path(spec, task.upstream_id) + ("/force-cancel" if force else "/cancel")
        resp = await self.api.retried(lambda: self.api.request("POST", path), "cancel")
        tracked = self.follow.runs.get(int(task.upstream_id))
        if resp.status == 202:
            if tracked is not None:
                tracked.interval = self.cfg.poll_min_s
                self.follow.schedule(tracked, self.cfg.poll_min_s)
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

    async def retire(self, task: Task) -> None:
        """Resubmit (`Resubmittable`): forget the attempt's run (its later deliveries find no
        task: the task's upstream id is the new attempt's), then ask GitHub to cancel it."""
        self.follow.pending.pop(task.id, None)  # still correlating: look no more
        if task.upstream_id is None:
            return
        run_id = int(task.upstream_id)
        tracked = self.follow.runs.get(run_id)
        if tracked is not None:
            self.follow.forget(tracked)
        self.follow.done.add(run_id)
        spec = gh.GitHubSpec.from_json(task.spec)
        path = gh.run_path(spec, task.upstream_id) + "/cancel"
        resp = await self.api.retried(lambda: self.api.request("POST", path), "cancel")
        if resp.status != 202:
            message = gh.error_message(resp.body, resp.status)
            raise ProviderError(
                f"GitHub refused to cancel run {run_id} of the replaced attempt: {message}",
                provider=self.name,
                upstream_status=resp.status,
            )

    async def status(self, task: Task) -> Observation:
        if task.upstream_id is None:
            return Observation(
                state=TaskState.PENDING, reason="waiting for GitHub to report the run"
            )
        path = gh.run_path(gh.GitHubSpec.from_json(task.spec), task.upstream_id)
        resp = await self.api.retried(lambda: self.api.request("GET", path), "status")
        self.api.raise_for(resp)
        return gh.run_observation(gh.parse_run(resp.json()), source="poll")

    async def handle_webhook(self, headers: Mapping[str, str], body: bytes) -> WebhookOutcome:
        """Verify and take one delivery (see `WebhookIntake.handle`); raises to refuse it."""
        return await self.intake.handle(headers, body)
