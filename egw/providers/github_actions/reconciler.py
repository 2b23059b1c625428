"""The reconciler: one loop polling followed runs and pending dispatches; resume on restart.

It polls the followed runs, looks for the runs of pending dispatches, and picks
up every unfinished task after a restart.

The non-terminal runs of a repository are polled together: when one of them is
due, the repository's runs are listed in ETag-cached pages (`RunListing`: one
request covers 100 runs, an unchanged page is a free 304) and each listed run is
routed to its followed run by id; a run the listing did not show is read alone
with ``If-None-Match``. Each run's interval doubles while nothing changes
(``poll_min_s`` .. ``poll_max_s``) and stretches to the maximum while webhooks
arrive or the rate limit runs low. A rate-limited answer pauses every call until
its reset, as GitHub's rate-limit docs describe (tests/samples/github/NOTES.md).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable

import structlog

from egw.config import GitHubActionsConfig
from egw.core.model import Observation, Task, TaskState, parse_time
from egw.errors import EgwError
from egw.providers.base import SinkSlot
from egw.providers.github_actions.api import GitHubAPI
from egw.providers.github_actions.dispatch import Dispatcher
from egw.providers.github_actions.listing import RunListing
from egw.providers.github_actions.logs import JobLogs
from egw.providers.github_actions.reports import Reports
from egw.providers.github_actions.state import CLOCK_SKEW, Follow, Pending, Tracked
from egw.wire import github as gh

log = structlog.get_logger("egw.providers.github_actions")

#: a completed run whose jobs or logs cannot be read this many times ends its log anyway
MAX_FINISH_TRIES = 5


class Reconciler:
    def __init__(
        self,
        cfg: GitHubActionsConfig,
        api: GitHubAPI,
        follow: Follow,
        sink: SinkSlot,
        reports: Reports,
        logs: JobLogs,
        dispatcher: Dispatcher,
    ) -> None:
        self.cfg = cfg
        self.api = api
        self.follow = follow
        self.sink = sink
        self.reports = reports
        self.logs = logs
        self.dispatcher = dispatcher
        self.listing = RunListing(api)

    async def run(self) -> None:
        """Poll what is due, then sleep until the next is due or something new is followed."""
        follow = self.follow
        while True:
            now = time.monotonic()
            # a rate limit, or the breaker toward the API host open: no poll until either ends
            wait = max(0.0, self.api.blocked_until - time.time(), self.api.circuit_wait_s())
            if wait == 0.0:
                repos: set[tuple[str, str]] = set()
                for tracked in [t for t in follow.runs.values() if not t.logs_done]:
                    if tracked.next_poll > now:
                        continue
                    if tracked.completed:  # its jobs and logs are left to read
                        await self._guard(self._poll(tracked), tracked.task_id)
                    else:
                        repos.add(_repo(tracked))
                for owner, repo in sorted(repos):
                    await self._guard(self._poll_repo(owner, repo), f"{owner}/{repo}")
                for pending in list(follow.pending.values()):
                    if pending.next_poll <= now:
                        await self._guard(self._poll_pending(pending), pending.task_id)
                times = [t.next_poll for t in follow.runs.values() if not t.logs_done]
                times += [p.next_poll for p in follow.pending.values()]
                wait = max(0.01, min(times, default=now + 60.0) - time.monotonic())
            follow.wake.clear()
            try:
                # asyncio.timeout, not wait_for: 3.11's wait_for can swallow a cancel
                # that races with the event being set, and close() would wait forever
                async with asyncio.timeout(wait):
                    await follow.wake.wait()
            except TimeoutError:
                pass

    async def _guard(self, work: Awaitable[None], subject: str) -> None:
        """Run one poll (``subject``: its task id or repository, for the log)."""
        try:
            await work
        except EgwError as exc:
            log.warning("github_reconcile_failed", subject=subject, error=str(exc))
        except Exception:  # the loop must outlive any one bad answer
            log.exception("github_reconcile_failed", subject=subject)

    async def _poll_repo(self, owner: str, repo: str) -> None:
        """List the repository's runs once for all its unfinished followed runs."""
        follow = self.follow
        members = [
            t
            for t in follow.runs.values()
            if not t.logs_done and not t.completed and _repo(t) == (owner, repo)
        ]
        for tracked in members:  # the next try if this one fails
            follow.schedule(tracked, min(self.cfg.poll_max_s, tracked.interval * 2))
        created = [t.last.created_at for t in members if t.last and t.last.created_at]
        since = min(created) - CLOCK_SKEW if created and len(created) == len(members) else None
        first = members[0].spec
        listing = await self.listing.list_repo(
            first.owner, first.repo, since, {t.run_id for t in members}
        )
        for tracked in members:
            run = listing.runs.get(tracked.run_id)
            if run is None:  # not in the list (past its 1,000 runs, or moved): read it alone
                await self._guard(self._poll(tracked), tracked.task_id)
                continue
            changed = False
            if gh.is_newer(run, tracked.last):
                async with follow.lock(tracked.task_id):
                    key = gh.order_key(run)
                    changed = await self.reports.apply_run(
                        tracked, run, f"poll:{run.id}:{key[0]}:{run.status}:{run.conclusion}"
                    )
            grow = min(self.cfg.poll_max_s, tracked.interval * 2)
            tracked.interval = self.cfg.poll_min_s if changed else grow
            if self.api.budget_low():  # save what is left of the rate limit for what matters
                tracked.interval = self.cfg.poll_max_s
            follow.schedule(tracked, tracked.interval)
            if tracked.completed and not tracked.logs_done:
                await self._guard(self.logs.finish(tracked), tracked.task_id)

    async def _poll(self, tracked: Tracked) -> None:
        """One conditional GET of a run (304: free, and the interval grows)."""
        follow = self.follow
        if tracked.completed:
            follow.schedule(tracked, self.cfg.poll_max_s)  # a later try if finish failed
            tracked.finish_tries += 1
            try:
                await self.logs.finish(tracked)
            except EgwError as exc:
                if tracked.finish_tries < MAX_FINISH_TRIES:
                    raise
                await self.logs.give_up(tracked, exc.message)
            return
        headers = {"If-None-Match": tracked.etag} if tracked.etag else None
        grow = min(self.cfg.poll_max_s, tracked.interval * 2)
        follow.schedule(tracked, grow)  # the next try if this one fails
        resp = await self.api.request(
            "GET", gh.run_path(tracked.spec, tracked.run_id), headers=headers
        )
        if resp.status == 304:
            tracked.interval = grow
        else:
            self.api.raise_for(resp)
            tracked.etag = resp.headers.get("etag")
            run = gh.parse_run(resp.json())
            async with follow.lock(tracked.task_id):
                key = gh.order_key(run)
                changed = await self.reports.apply_run(
                    tracked, run, f"poll:{run.id}:{key[0]}:{run.status}:{run.conclusion}"
                )
            tracked.interval = self.cfg.poll_min_s if changed else grow
        if self.api.budget_low():  # save what is left of the rate limit for what matters
            tracked.interval = self.cfg.poll_max_s
        follow.schedule(tracked, tracked.interval)
        if tracked.completed and not tracked.logs_done:
            await self.logs.finish(tracked)

    async def _poll_pending(self, pending: Pending) -> None:
        sink = self.sink()
        task = await sink.get_task(pending.task_id)
        if task is None or task.status.terminal:
            # cancelled (or timed out) by egw while unmatched: a found run is cancelled
            pending.cancelled = True
        if time.monotonic() > pending.deadline:
            self.follow.pending.pop(pending.task_id, None)
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
        runs = await self.dispatcher.list_runs(pending.spec, pending.since)
        claimed = await self.dispatcher.claimed(runs, set(self.follow.runs))
        found = gh.pick_run(
            runs,
            correlation=pending.correlation,
            ref=pending.spec.ref,
            since=pending.since,
            claimed=claimed,
        )
        if found is not None and pending.task_id in self.follow.pending:
            await self.dispatcher.matched(pending, found)

    async def resume(self, task: Task) -> None:
        """Follow again a task left unfinished by the previous process."""
        sink = self.sink()
        if task.upstream_id is not None:
            try:
                run_id = gh.validate_run_id(task.upstream_id)
                tracked = self.follow.track_stored(task, run_id)
            except EgwError as exc:
                log.warning("github_resume_skipped", task_id=task.id, error=exc.message)
                return
            tracked.next_poll = time.monotonic()
            return
        since = parse_time(task.upstream.get("dispatch_started_at"))
        if task.upstream.get("dispatched") and since is not None:
            spec = gh.GitHubSpec.from_json(task.spec)
            self.follow.correlate(task.id, spec, gh.correlation_id(task.id), since)
            if task.status.terminal:  # ended while unmatched: cancel the run once found
                self.follow.pending[task.id].cancelled = True
        if task.status.terminal:
            await sink.logs_complete(task.id)  # no run known: no output


def _repo(tracked: Tracked) -> tuple[str, str]:
    """The repository of a followed run (GitHub's names are case-insensitive)."""
    return tracked.spec.owner.lower(), tracked.spec.repo.lower()
